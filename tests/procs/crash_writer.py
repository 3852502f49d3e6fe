"""A writer that never stops on its own (the crash test SIGKILLs it): MODE=add commits small adds
and deletes in a loop; MODE=compact adds a batch and compacts, again and again. Prints "ready" once
its first commit is durable."""

import sys

import numpy as np

from embedkit.corpus import Doc
from embedkit.index import EmbedIndex


class Vectors:
    """Deterministic raw vectors (this process tests the storage layer, not encoding)."""

    def __init__(self, dim):
        self.dim = dim

    def describe(self):
        return {"model": "fake", "pooling": "model", "max_length": 64, "backend": "torch", "dim": self.dim}

    def encode(self, texts, *, normalize=None, batch_size=None, show_progress_bar=None):
        rng = np.random.default_rng(abs(hash(tuple(texts))) % 2**32)
        return rng.standard_normal((len(texts), self.dim)).astype(np.float32)


def main(index_dir: str, mode: str, dim: int) -> None:
    idx = EmbedIndex.load(index_dir, encoder=Vectors(dim))
    idx.auto_compact = False
    i = 0
    while True:
        docs = [Doc(f"{mode}-{i}-{j}", f"{mode} {i} {j}") for j in range(50 if mode == "compact" else 3)]
        idx.add(docs)
        if mode == "add" and i % 2:
            idx.delete([f"{mode}-{i - 1}-0"])
        if mode == "compact":
            idx.compact()
        if i == 0:
            print("ready", flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
