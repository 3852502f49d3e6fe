"""A writer process for the concurrency test: ADDS adds and DELETES deletes through the real CLI
(``embedkit index add`` / ``index delete``), each one a full command invocation with its own index load.

Usage: python cli_writer.py INDEX_DIR NAME ADDS LOG_FILE. Appends "add ID" / "del ID" to LOG_FILE
after each command that exited 0 (what was committed)."""

import sys
import tempfile
from pathlib import Path

from embedkit.cli import main


def run(argv) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def writer(index_dir: str, name: str, adds: int, log_file: str) -> None:
    work = Path(tempfile.mkdtemp())
    mine = []
    with open(log_file, "a", encoding="utf-8") as log:
        for i in range(adds):
            doc_id = f"{name}-{i}"
            f = work / f"{doc_id}.tsv"
            f.write_text(f"id\ttext\n{doc_id}\t{name} 写入的第 {i} 条文档\n", encoding="utf-8")
            rc = run(["-q", "index", "add", index_dir, str(f), "--column", "text", "--id-column", "id"])
            if rc == 0:
                mine.append(doc_id)
                log.write(f"add {doc_id}\n")
                log.flush()
            if i % 3 == 2 and mine:  # delete one of our own earlier documents
                victim = mine.pop(0)
                if run(["-q", "index", "delete", index_dir, victim]) == 0:
                    log.write(f"del {victim}\n")
                    log.flush()


if __name__ == "__main__":
    writer(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
