"""Training pairs: reading, checking and the held-back split, all before any model is loaded.

Two kinds of data, one per loss:

* ``cosent`` -- labelled pairs, the TSV layout used everywhere in embedkit
  (``sentence1<TAB>sentence2<TAB>label``, read by :func:`embedkit.evaluation.data.read_pairs`), labels
  on a stated scale (``label_scale``, default ``(0, 1)``; STS-B's is ``(0, 5)``);
* ``mnrl`` / ``cmnrl`` -- (query, relevant text) pairs for in-batch negatives (``cmnrl``: the cached
  variant, large batches in little memory): a 2-column TSV, a JSONL file with
  ``query`` and ``positive`` fields, or a labelled 3-column TSV of which only the pairs labelled at the
  top of the scale are kept.

Unlike evaluation, which skips and counts rows it cannot score, training refuses them: a malformed row,
an empty sentence or a bad label is an :class:`~embedkit.errors.InputError` naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evaluation.data import read_pairs

LOSSES = ("cosent", "mnrl", "cmnrl")
DEFAULT_LABEL_SCALE = (0.0, 1.0)


@dataclass
class TrainingPairs:
    """Pairs ready for training or held-back evaluation. ``labels`` is ``None`` for query/positive pairs."""

    sentences1: list[str]
    sentences2: list[str]
    labels: np.ndarray | None
    source: str = "<memory>"
    sha256: str = ""
    extra: dict = field(default_factory=dict)
    negatives: list[str] | None = None   # one hard negative per pair (embedkit.training.negatives), or none

    def __len__(self) -> int:
        return len(self.sentences1)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def subset(self, idx) -> TrainingPairs:
        idx = [int(i) for i in idx]
        return TrainingPairs([self.sentences1[i] for i in idx], [self.sentences2[i] for i in idx],
                             None if self.labels is None else self.labels[idx], self.source, self.sha256,
                             negatives=None if self.negatives is None else [self.negatives[i] for i in idx])

    def summary(self) -> dict:
        out = {"source": self.source, "sha256": self.sha256, "n_pairs": len(self)}
        if self.source != "<memory>":
            out["path"] = str(Path(self.source).resolve())
        if self.labels is not None and len(self):
            out["label_min"] = float(self.labels.min())
            out["label_max"] = float(self.labels.max())
            out["n_distinct_labels"] = int(np.unique(self.labels).size)
        out.update(self.extra)
        return out


def parse_label_scale(spec) -> tuple[float, float]:
    """``"0:1"`` / ``"0:5"`` / ``(0, 5)`` -> ``(lo, hi)`` with ``lo < hi``."""
    if isinstance(spec, str):
        parts = spec.split(":")
        try:
            lo, hi = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
        except ValueError:
            lo = hi = math.nan
    else:
        try:
            lo, hi = (float(v) for v in spec)
        except (TypeError, ValueError):
            lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"label scale {spec!r} is not LOW:HIGH with LOW < HIGH (e.g. 0:1, or 0:5 for STS-B)")
    return lo, hi


def _sha256_of_pairs(s1, s2, labels) -> str:
    h = hashlib.sha256()
    for i, (a, b) in enumerate(zip(s1, s2)):
        lab = "" if labels is None else repr(float(labels[i]))
        h.update(f"{a}\t{b}\t{lab}\n".encode())
    return h.hexdigest()


def _check_texts(s1, s2, where) -> None:
    for i, (a, b) in enumerate(zip(s1, s2)):
        for t in (a, b):
            if not isinstance(t, str):
                raise InputError(f"{where(i)}: sentences must be strings, got {type(t).__name__} ({t!r:.40})")
            if not t.strip():
                raise InputError(f"{where(i)}: empty sentence; every pair needs two non-empty sentences")


def _read_labelled_file(path: Path) -> TrainingPairs:
    ps = read_pairs(path)
    if ps.n_skipped:
        lineno, reason = ps.skipped_examples[0]
        what = {"malformed": "not sentence1<TAB>sentence2<TAB>label (wrong number of tab-separated fields)",
                "empty_sentence": "empty sentence",
                "bad_label": "the label is not a finite number"}.get(reason, reason)
        raise InputError(f"{path}:{lineno}: {what} ({ps.n_skipped} such rows in {ps.n_rows}; "
                         "training needs every row clean)")
    return TrainingPairs(ps.sentences1, ps.sentences2, ps.scores, str(path), ps.sha256)


def _decode(path: Path) -> tuple[str, str]:
    """The UTF-8 text of a pair file and the sha256 of its bytes."""
    from ..evaluation.data import read_pair_text

    raw, text = read_pair_text(path)
    return text, hashlib.sha256(raw).hexdigest()


def _read_query_file(path: Path, label_scale) -> TrainingPairs:
    """Query/positive pairs: JSONL (``query``, ``positive``), a 2-column TSV, or a labelled 3-column TSV
    (pairs labelled at the scale's top are kept)."""
    text, sha = _decode(path)
    rows = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not rows:
        raise InputError(f"pair file {str(path)!r} holds no pairs")
    s1: list[str] = []
    s2: list[str] = []
    if rows[0][1].lstrip().startswith("{"):
        for n, line in rows:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not a JSON object ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("query"), str) \
                    or not isinstance(obj.get("positive"), str):
                raise InputError(f"{path}:{n}: expected a JSON object with string fields 'query' and 'positive'")
            s1.append(obj["query"].strip())
            s2.append(obj["positive"].strip())
        _check_texts(s1, s2, lambda i: f"{path}:{rows[i][0]}")
        return TrainingPairs(s1, s2, None, str(path), sha, {"format": "jsonl"})
    n_fields = len(rows[0][1].split("\t"))
    if n_fields == 3:
        lab = _read_labelled_file(path)
        check_labels(lab, label_scale)
        keep = np.flatnonzero(lab.labels >= label_scale[1])
        if keep.size == 0:
            raise InputError(f"{path}: no pair is labelled {label_scale[1]:g} (the top of the label scale), "
                             "so there are no (query, relevant text) pairs for --loss mnrl")
        out = lab.subset(keep)
        out.labels = None
        out.extra = {"format": "tsv3", "n_rows": len(lab), "kept_label": label_scale[1]}
        return out
    for n, line in rows:
        fields = line.split("\t")
        if len(fields) != 2:
            raise InputError(f"{path}:{n}: expected query<TAB>relevant text (2 fields), got {len(fields)}")
        s1.append(fields[0].strip())
        s2.append(fields[1].strip())
    _check_texts(s1, s2, lambda i: f"{path}:{rows[i][0]}")
    return TrainingPairs(s1, s2, None, str(path), sha, {"format": "tsv2"})


def load_pairs(data, *, loss: str = "cosent", label_scale=DEFAULT_LABEL_SCALE, what: str = "training") -> TrainingPairs:
    """Read ``data`` (a file path, a :class:`TrainingPairs`, or a sequence of ``(s1, s2, label)`` /
    ``(query, positive)`` tuples) into :class:`TrainingPairs`, checked for the loss."""
    if loss not in LOSSES:
        raise InputError(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
    scale = parse_label_scale(label_scale)
    if isinstance(data, TrainingPairs):
        pairs = data
    elif isinstance(data, (str, os.PathLike)):
        path = Path(data)
        pairs = _read_labelled_file(path) if loss == "cosent" else _read_query_file(path, scale)
    else:
        try:
            rows = [tuple(r) for r in data]
        except TypeError:
            raise InputError(f"{what} pairs must be a file path or a sequence of tuples, "
                             f"not {type(data).__name__}") from None
        width = {len(r) for r in rows}
        want = 3 if loss == "cosent" else 2
        if rows and width != {want}:
            raise InputError(f"{what} pairs for loss {loss!r} must be {want}-tuples "
                             f"({'(s1, s2, label)' if want == 3 else '(query, positive)'}), got lengths {sorted(width)}")
        s1 = [r[0] for r in rows]
        s2 = [r[1] for r in rows]
        _check_texts(s1, s2, lambda i: f"{what} pair {i}")
        s1 = [t.strip() for t in s1]
        s2 = [t.strip() for t in s2]
        labels = None
        if want == 3:
            try:
                labels = np.asarray([float(r[2]) for r in rows], dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"{what} pair labels must be numbers") from None
        pairs = TrainingPairs(s1, s2, labels, "<memory>", _sha256_of_pairs(s1, s2, labels))
    if not len(pairs):
        raise InputError(f"{what} data {pairs.source!r} holds no pairs")
    if loss == "cosent":
        if not pairs.labelled:
            raise InputError(f"{what} data {pairs.source!r} has no labels; loss 'cosent' needs "
                             "sentence1<TAB>sentence2<TAB>label rows (use --loss mnrl for query/positive pairs)")
        check_labels(pairs, scale, what=what)
    return pairs


def check_labels(pairs: TrainingPairs, scale, *, what: str = "training") -> None:
    """Labels finite, inside ``scale`` and of at least two values."""
    lo, hi = scale
    y = pairs.labels
    bad = np.flatnonzero(~np.isfinite(y) | (y < lo) | (y > hi))
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in np.unique(y[bad])[:5])
        raise InputError(f"{what} data {pairs.source!r}: {bad.size} labels outside the scale {lo:g}:{hi:g} "
                         f"(e.g. {shown}, first at pair {int(bad[0]) + 1}); pass --label-scale LOW:HIGH "
                         "(0:1 for 0/1 labels, 0:5 for STS-B)")
    if np.unique(y).size < 2:
        raise InputError(f"{what} data {pairs.source!r}: every pair has the label {y[0]:g} (one class only); "
                         "CoSENT learns from the order of labels, it needs at least two different labels")


def split_valid(pairs: TrainingPairs, fraction: float, seed: int) -> tuple[TrainingPairs, TrainingPairs]:
    """A seeded split: ``(train, valid)`` with ``round(fraction * n)`` pairs (at least 2) held back."""
    if not (0.0 < fraction < 1.0):
        raise InputError(f"valid fraction must be between 0 and 1, got {fraction!r}")
    n = len(pairs)
    n_valid = max(2, int(round(fraction * n)))
    if n_valid >= n - 1:
        raise InputError(f"{n} pairs are too few to hold back {fraction:.0%} for validation; "
                         "give more pairs or a separate valid file (--valid)")
    perm = np.random.default_rng(seed).permutation(n)
    valid = pairs.subset(np.sort(perm[:n_valid]))
    train = pairs.subset(np.sort(perm[n_valid:]))
    valid.extra = {"split_from": pairs.source, "fraction": fraction, "seed": seed}
    return train, valid


def check_valid(valid: TrainingPairs) -> None:
    """A held-back set must be scorable: 2+ pairs, and for Spearman two label values."""
    if len(valid) < 2:
        raise InputError(f"the valid set {valid.source!r} has {len(valid)} pairs; at least 2 are needed")
    if valid.labelled and np.unique(valid.labels).size < 2:
        raise InputError(f"the valid set {valid.source!r} has one label value only ({valid.labels[0]:g}): "
                         "Spearman is undefined; give a valid file with both classes")


def check_batch(train: TrainingPairs, batch_size: int) -> None:
    if len(train) < batch_size:
        raise InputError(f"{len(train)} training pairs are fewer than one batch ({batch_size}); "
                         "give more pairs or a smaller --batch-size")
