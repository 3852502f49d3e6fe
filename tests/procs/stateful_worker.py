"""A second writer process for the stateful index test: reads one JSON command per line on stdin, runs
it on its own EmbedIndex object (kept across commands, so it must follow the other process's commits
by itself) and answers one JSON line: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ...}``.

Commands: ``{"dir", "build_id", "op": "add", "docs": [[id, text, metadata], ...]}``, ``"op": "delete",
"ids": [...]``, ``"op": "compact"``, ``"op": "warm"`` (encode one text). A command for another directory
or build id loads the index again (an object holding a fake encoder cannot rebuild the query path of a
rebuilt index by itself). ``"real": true`` loads the index with the model its manifest names (the
server-backed soak, tests/_server_machine.py); otherwise with a fake encoder of dimension ``dim``."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from embedkit.corpus import Doc  # noqa: E402
from embedkit.errors import EmbedkitError  # noqa: E402
from embedkit.index import EmbedIndex  # noqa: E402
from tests.conftest import FakeEncoder  # noqa: E402


def main() -> None:
    idx, where = None, None
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if idx is None or where != (cmd["dir"], cmd["build_id"]):
                fake = None if cmd.get("real") else FakeEncoder(int(cmd.get("dim", 16)))
                idx = EmbedIndex.load(cmd["dir"], encoder=fake)
                where = (cmd["dir"], cmd["build_id"])
            if cmd["op"] == "add":
                result = idx.add([Doc(i, t, m) for i, t, m in cmd["docs"]])
            elif cmd["op"] == "delete":
                result = idx.delete(cmd["ids"])
            elif cmd["op"] == "compact":
                result = idx.compact()
            elif cmd["op"] == "warm":  # load the model now (it loads on first use)
                result = len(idx.embed(["预热"]))
            else:
                raise ValueError(f"unknown op {cmd['op']!r}")
            answer = {"ok": True, "result": result}
        except EmbedkitError as e:
            answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
