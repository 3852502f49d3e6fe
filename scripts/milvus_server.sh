#!/usr/bin/env bash
# Install the real standalone Milvus server that the tests run the Milvus store against.
#
#   scripts/milvus_server.sh                          # install (idempotent; scripts/setup.sh runs it)
#   scripts/milvus_server.sh --data DIR --port PORT   # install if needed, then serve (exec)
#
# The `milvus` package on PyPI bundles a Milvus 2.3.5 standalone server (its Go binary and libraries,
# about 250 MB unpacked). It is a test peer, never an embedkit dependency: it lives in its own virtual
# environment (default .venv-milvus at the repository root; EMBEDKIT_MILVUS_VENV moves it), so that
# embedkit's .venv holds exactly what `pip install -e .[dev]` resolves (pymilvus + Milvus Lite) and the
# server's version is pinned independently of the client's. scripts/milvus_standalone.py starts it.
set -euo pipefail
VERSION=2.3.5
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${EMBEDKIT_MILVUS_VENV:-$ROOT/.venv-milvus}
PY=${PYTHON:-python3}
if ! "$VENV/bin/python" -c "import milvus,sys; sys.exit(milvus.__version__ != '$VERSION')" 2>/dev/null; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "milvus==$VERSION" >&2
fi
if [ $# -eq 0 ]; then
  # unpack the binaries now, once, rather than inside the first test run
  "$VENV/bin/python" "$ROOT/scripts/milvus_standalone.py" --prepare >/dev/null
  echo "Milvus $VERSION standalone server installed in $VENV" >&2
  exit 0
fi
exec "$VENV/bin/python" "$ROOT/scripts/milvus_standalone.py" "$@"
