"""Hard negatives for in-batch-negative losses, mined with an existing embedkit index.

For each (query, positive) pair the index is searched with the query through its own query path (its
model, pooling, reducer: what serves the queries today), passages as the unit, and the best-ranked text
that is neither the positive nor the query itself becomes the pair's negative: the text the current
model confuses with the right answer. sentence-transformers' MultipleNegativesRankingLoss (and its
cached variant) take it as a third column, beside the other pairs' positives.

A pair whose top ``k`` hits hold nothing but its own positive gets no negative and is left out of
training (counted in the training card). A mined negative can be a false negative (another text that
also answers the query); ``skip`` leaves the top ``skip`` candidates aside, the usual guard against that.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ..errors import InputError
from .data import TrainingPairs

log = logging.getLogger(__name__)

DEFAULT_K = 10
SEARCH_BATCH = 256


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def mine_hard_negatives(pairs: TrainingPairs, index_dir, *, k: int = DEFAULT_K, skip: int = 0) -> TrainingPairs:
    """``pairs`` with a ``negatives`` column mined from the index at ``index_dir`` (see the module doc)."""
    if pairs.labelled:
        raise InputError("hard negatives are for (query, relevant text) pairs (--loss mnrl or cmnrl), "
                         "not labelled pairs")
    for name, value, low in (("k", k, 1), ("skip", skip, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"hard negatives: {name} must be an integer >= {low}, got {value!r}")
    if skip >= k:
        raise InputError(f"hard negatives: skip ({skip}) must be below k ({k})")
    from ..index import EmbedIndex

    index_dir = Path(index_dir).expanduser()
    idx = EmbedIndex.load(index_dir)
    keep, negatives = [], []
    for start in range(0, len(pairs), SEARCH_BATCH):
        queries = pairs.sentences1[start:start + SEARCH_BATCH]
        for j, hits in enumerate(idx.search(queries, k, unit="passages")):
            i = start + j
            texts = [h.passage["text"] if h.passage else h.text for h in hits]
            found = [t for t in texts if not _same(t, pairs.sentences2[i]) and not _same(t, pairs.sentences1[i])]
            if len(found) > skip:
                keep.append(i)
                negatives.append(found[skip])
    if not keep:
        raise InputError(f"hard negatives: the index at {str(index_dir)!r} gave no text other than the positive "
                         f"for any of the {len(pairs)} queries in its top {k}")
    out = pairs.subset(keep)
    out.negatives = negatives
    digest = hashlib.sha256("\n".join(negatives).encode("utf-8", "surrogatepass")).hexdigest()
    out.extra = {**pairs.extra, "hard_negatives": {
        "index": str(index_dir.resolve()), "index_build_id": idx.manifest.get("build_id"),
        "index_model": (idx.manifest.get("encoder") or {}).get("model"), "k": k, "skip": skip,
        "pairs_with_negative": len(keep), "pairs_left_out": len(pairs) - len(keep), "sha256": digest}}
    log.info("hard negatives: %d of %d pairs got one from %s (top %d, skip %d)", len(keep), len(pairs),
             index_dir, k, skip)
    return out
