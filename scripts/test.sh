#!/usr/bin/env bash
# The one test command: install from nothing (idempotent), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE
.venv/bin/ruff check .   # lint first: a lint error fails the run before any test
exec .venv/bin/python -m pytest -q "$@"
