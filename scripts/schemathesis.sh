#!/usr/bin/env bash
# Run schemathesis (all checks, a bounded number of examples) against a running embedkit server.
#
#   scripts/schemathesis.sh http://127.0.0.1:8000 [extra `st run` options...]
#
# schemathesis is a test tool, never an embedkit dependency: it lives in its own virtual environment
# (default .venv-schemathesis at the repository root, created on first use; EMBEDKIT_SCHEMATHESIS_VENV
# moves it). Exit status: schemathesis's own (0 = no failures). Only talks to the URL it is given.
set -euo pipefail
VERSION=4.32.5
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${EMBEDKIT_SCHEMATHESIS_VENV:-$ROOT/.venv-schemathesis}
PY=${PYTHON:-python3}
if [ $# -lt 1 ]; then
  echo "usage: $0 BASE_URL [st run options...]" >&2
  exit 2
fi
URL=${1%/}
shift
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$VERSION"; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$VERSION" >&2
fi
# run from a scratch directory: schemathesis keeps its example database in the working directory
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
export NO_COLOR=1
"$VENV/bin/st" run "$URL/openapi.json" \
  --url "$URL" \
  --checks all \
  --max-examples "${EMBEDKIT_SCHEMATHESIS_EXAMPLES:-25}" \
  --seed "${EMBEDKIT_SCHEMATHESIS_SEED:-1}" \
  --workers 1 \
  --request-timeout 60 \
  --no-color \
  "$@"
