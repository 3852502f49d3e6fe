"""Reader for the senteval_cn layout used by the BERT-whitening paper's Chinese evaluation.

``<root>/<TASK>/<TASK>.<split>.data``: UTF-8, one pair per line, ``sentence1<TAB>sentence2<TAB>label``.

Parsing follows the reference reader (split each line on tabs, keep the text as written): fields that
the files wrap CSV-style because they contain ``"`` -- e.g. ``"免费领取""饿了么""红包"`` -- are kept
verbatim, outer quotes and doubled quotes included, so scores are comparable with published numbers.
Unlike the reference, rows that cannot be scored are skipped *and counted* instead of crashing or being
dropped silently: a wrong number of fields, an empty sentence, or a label that is not a finite number.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

KNOWN_TASKS = ("ATEC", "BQ", "LCQMC", "PAWSX", "STS-B")
SPLITS = ("train", "valid", "test")
DEFAULT_MAX_LENGTH = 64
TASK_MAX_LENGTH = {"PAWSX": 128}  # as in the paper's evaluation script
SKIP_REASONS = ("malformed", "empty_sentence", "bad_label")


def task_max_length(task: str) -> int:
    """The paper's ``max_length`` for a task: 128 for PAWSX, 64 otherwise."""
    return TASK_MAX_LENGTH.get(task, DEFAULT_MAX_LENGTH)


@dataclass
class PairSet:
    """The scorable pairs of one split file, plus what was skipped and the file's sha256."""

    task: str
    split: str
    path: str
    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray  # float64, one per pair
    sha256: str = ""
    n_rows: int = 0  # non-blank lines read (before ``limit``)
    skipped: dict = field(default_factory=dict)  # reason -> count
    skipped_examples: list = field(default_factory=list)  # a few (line number, reason) pairs
    truncated: bool = False  # ``limit`` cut the file short

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def unique_sentences(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Distinct sentences in first-seen order and, per pair, the index of each side in that list."""
        index: dict[str, int] = {}
        ia = np.fromiter((index.setdefault(s, len(index)) for s in self.sentences1), dtype=np.int64,
                         count=len(self.sentences1))
        ib = np.fromiter((index.setdefault(s, len(index)) for s in self.sentences2), dtype=np.int64,
                         count=len(self.sentences2))
        return list(index), ia, ib

    def summary(self) -> dict:
        return {"task": self.task, "split": self.split, "path": self.path, "sha256": self.sha256,
                "n_pairs": len(self), "n_rows": self.n_rows, "skipped": dict(self.skipped),
                "truncated": self.truncated}


def split_path(root: str | os.PathLike, task: str, split: str) -> Path:
    return Path(root) / task / f"{task}.{split}.data"


def read_pair_text(path: Path) -> tuple[bytes, str]:
    """The bytes and the UTF-8 text of a pair file; errors name the file (and the line of a bad byte)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"pair file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"pair file {str(path)!r} is a directory") from None
    except OSError as e:
        raise InputError(f"pair file {str(path)!r} cannot be read: {e.strerror}") from None
    try:
        return raw, raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError(f"{str(path)!r} is not UTF-8 (bad byte at line {line}, offset {e.start})") from None


def read_pairs(path: str | os.PathLike, *, task: str = "", split: str = "",
               limit: int | None = None) -> PairSet:
    """Read one pair file. ``limit`` keeps the first ``limit`` scorable pairs (the sha256 is always
    that of the whole file, so a report names exactly what was read)."""
    path = Path(path)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
        raise InputError(f"limit must be a positive integer, got {limit!r}")
    raw, text = read_pair_text(path)
    s1: list[str] = []
    s2: list[str] = []
    labels: list[float] = []
    skipped = {r: 0 for r in SKIP_REASONS}
    examples: list = []
    n_rows = 0
    truncated = False

    def skip(reason: str, lineno: int) -> None:
        skipped[reason] += 1
        if len(examples) < 5:
            examples.append((lineno, reason))

    # split on "\n" only: str.splitlines() would also break on U+2028, \x1c, ... inside a sentence
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if limit is not None and len(labels) >= limit:
            truncated = True
            break
        n_rows += 1
        fields = line.split("\t")
        if len(fields) != 3:
            skip("malformed", lineno)
            continue
        a, b, lab = fields[0].strip(), fields[1].strip(), fields[2].strip()
        if not a or not b:
            skip("empty_sentence", lineno)
            continue
        try:
            y = float(lab)
        except ValueError:
            y = math.nan
        if not math.isfinite(y):
            skip("bad_label", lineno)
            continue
        s1.append(a)
        s2.append(b)
        labels.append(y)
    skipped = {k: v for k, v in skipped.items() if v}
    ps = PairSet(task=task or path.parent.name, split=split, path=str(path), sentences1=s1,
                 sentences2=s2, scores=np.asarray(labels, dtype=np.float64),
                 sha256=hashlib.sha256(raw).hexdigest(), n_rows=n_rows, skipped=skipped,
                 skipped_examples=examples, truncated=truncated)
    if skipped:
        log.warning("%s: skipped %d of %d rows (%s; first at line %d)", path, ps.n_skipped, n_rows,
                    ", ".join(f"{k}: {v}" for k, v in skipped.items()), examples[0][0])
    return ps


def check_data_dir(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.exists():
        raise InputError(f"data directory {str(root)!r} does not exist; pass --data DIR holding "
                         "<DIR>/<TASK>/<TASK>.<split>.data files (e.g. ../shared/data/sts-zh)")
    if not root.is_dir():
        raise InputError(f"data directory {str(root)!r} is not a directory")
    return root


def available_splits(root: str | os.PathLike, task: str) -> list[str]:
    return [s for s in SPLITS if split_path(root, task, s).is_file()]


def list_tasks(root: str | os.PathLike) -> list[str]:
    """Task folders under ``root`` that hold at least one ``<TASK>.<split>.data`` file (sorted)."""
    root = check_data_dir(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and available_splits(root, p.name))


def resolve_tasks(root: str | os.PathLike, tasks=None) -> list[str]:
    """Validate task names against the folders present (``None`` / empty = every task found)."""
    found = list_tasks(root)
    if not tasks:
        if not found:
            raise InputError(f"no task folders in {str(root)!r}: expected <TASK>/<TASK>.<split>.data "
                             f"files (splits {', '.join(SPLITS)})")
        return found
    out = []
    for t in tasks:
        if t not in found:
            hint = " (a known task, but its files are not in this directory)" if t in KNOWN_TASKS else ""
            raise InputError(f"unknown task {t!r}{hint}: tasks in {str(root)!r} are "
                             f"{', '.join(found) or 'none'}")
        if t not in out:
            out.append(t)
    return out


def check_splits(splits) -> list[str]:
    out = []
    for s in splits:
        if s not in SPLITS:
            raise InputError(f"split {s!r} is not one of {', '.join(SPLITS)}")
        if s not in out:
            out.append(s)
    return out


def load_task(root: str | os.PathLike, task: str, splits=SPLITS, *, limit: int | None = None) -> dict:
    """``{split: PairSet}`` for the requested splits that exist (a missing split is simply absent)."""
    out = {}
    for s in check_splits(splits):
        p = split_path(root, task, s)
        if p.is_file():
            out[s] = read_pairs(p, task=task, split=s, limit=limit)
    return out
