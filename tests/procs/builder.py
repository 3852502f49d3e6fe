"""A build process for the racing-overwrite test: builds NAME's corpus into INDEX_DIR with --overwrite."""

import sys

from embedkit.corpus import Doc
from embedkit.index import EmbedIndex

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from crash_writer import Vectors  # noqa: E402


def main(index_dir: str, name: str, n: int) -> None:
    docs = [Doc(f"{name}-{i}", f"{name} 文档 {i}") for i in range(n)]
    EmbedIndex.build(index_dir, docs, encoder=Vectors(16), overwrite=True, chunk_size=50)
    print("built", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
