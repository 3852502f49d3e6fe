"""The STS evaluator (library API) and the grid runner behind ``embedkit eval``.

Protocols (named in every report):

* ``paper``     -- as in the BERT-whitening paper's Chinese evaluation: the reducer is fitted on the
  vectors of every split being evaluated for the task (both sides of every pair, as the reference
  does), then each split is scored.  Transductive: the test labels are never used, but its sentences are.
* ``fit-train`` -- the reducer is fitted on the task's train split (or on a corpus the user names) and
  the chosen splits (default: test) are scored.  The honest setting for a deployed system.
* ``fit-valid`` -- the reducer is fitted on the task's valid split and the chosen splits (default: test)
  are scored: fit-on-valid / score-on-test, the protocol of the ``auto`` reducer's targets.

``auto`` chooses its reducer on the valid split's labels under every protocol (see
:mod:`embedkit.evaluation.scoring`); 0/1-label tasks also get AUC, accuracy / F1 at a threshold fitted on
valid (else train) and the ECE of the calibrated probability.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..reducers import make_reducer
from . import PROTOCOLS
from .cache import EncodingCache, encoder_description
from .data import (
    SPLITS,
    PairSet,
    check_data_dir,
    check_splits,
    load_task,
    resolve_tasks,
    task_max_length,
)
from .metrics import task_averages
from .scoring import score_pairs, score_task

log = logging.getLogger(__name__)


def _encode_plain(model, texts: list[str], batch_size: int, show_progress_bar) -> np.ndarray:
    """Encode with an embedkit Encoder (raw vectors) or anything with a sentence-transformers encode()."""
    if hasattr(model, "describe"):
        return np.asarray(model.encode(texts, batch_size=batch_size, normalize=False,
                                       show_progress_bar=show_progress_bar), dtype=np.float32)
    return np.asarray(model.encode(texts, batch_size=batch_size, show_progress_bar=bool(show_progress_bar),
                                   convert_to_numpy=True), dtype=np.float32)


class STSEvaluator:
    """Pairs + gold scores in, a dict of metrics out (cf. sentence-transformers'
    ``EmbeddingSimilarityEvaluator``).

    >>> ev = STSEvaluator(["借呗怎么还款"], ["借呗如何还钱"], [1.0])   # doctest: +SKIP
    >>> ev(Encoder())                                                  # doctest: +SKIP
    {'spearman': ..., 'pearson': ..., 'n_pairs': ...}

    ``reducer``: a spec (``"whitening:256"``) or a reducer object; an unfitted one is fitted on this
    set's vectors (both sides of every pair: the ``paper`` protocol), a fitted one is only applied.
    Each distinct sentence is encoded once; ``cache`` (an :class:`EncodingCache`) reuses encodings."""

    primary_metric = "spearman"

    def __init__(self, sentences1, sentences2, scores, *, name: str = "", reducer=None,
                 batch_size: int = 32, show_progress_bar: bool | None = None,
                 cache: EncodingCache | None = None):
        self.sentences1 = sentences1
        self.sentences2 = sentences2
        self.scores = scores
        self.name = name
        self.reducer = reducer
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.cache = cache

    @classmethod
    def from_pairset(cls, pairs: PairSet, **kwargs) -> STSEvaluator:
        kwargs.setdefault("name", f"{pairs.task}-{pairs.split}")
        return cls(pairs.sentences1, pairs.sentences2, pairs.scores, **kwargs)

    def _validate(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        s1, s2 = list(self.sentences1), list(self.sentences2)
        y = np.asarray(self.scores, dtype=np.float64).ravel()
        if not (len(s1) == len(s2) == len(y)):
            raise InputError(f"sentences1, sentences2 and scores must have the same length, got "
                             f"{len(s1)}, {len(s2)} and {len(y)}")
        if len(y) < 2:
            raise InputError(f"an STS evaluation needs at least 2 pairs, got {len(y)}")
        for side in (s1, s2):
            for i, t in enumerate(side):
                if not isinstance(t, str):
                    raise InputError(f"sentence {i} is {type(t).__name__} ({t!r:.40}); sentences must be str")
        index: dict[str, int] = {}
        ia = np.array([index.setdefault(t, len(index)) for t in s1], dtype=np.int64)
        ib = np.array([index.setdefault(t, len(index)) for t in s2], dtype=np.int64)
        return list(index), ia, ib, y

    def __call__(self, model) -> dict:
        texts, ia, ib, y = self._validate()
        if self.cache is not None and hasattr(model, "describe"):
            vecs = self.cache.get_many(model, [texts], batch_size=self.batch_size,
                                       show_progress_bar=self.show_progress_bar)[0]
        else:
            vecs = _encode_plain(model, texts, self.batch_size, self.show_progress_bar)
        return self.evaluate_vectors(vecs, ia, ib, y)

    def evaluate_vectors(self, vectors: np.ndarray, ia: np.ndarray, ib: np.ndarray, labels) -> dict:
        """Score already-encoded distinct sentences (apply / fit the reducer first)."""
        if self.reducer is not None:
            red = make_reducer(self.reducer)
            if not hasattr(red, "n_features_in_"):
                red.fit(np.concatenate([vectors[ia], vectors[ib]]))
            vectors = red.transform(vectors)
        return score_pairs(vectors, ia, ib, labels)


# --------------------------------------------------------------------------------------------
# grid
# --------------------------------------------------------------------------------------------
def expand_reducers(specs, dims=()) -> list[str]:
    """Validate reducer specs; a kind given without a dimension (``pca``) is expanded over ``dims``."""
    out: list[str] = []
    dims = [int(d) for d in dims or ()]
    for d in dims:
        if d <= 0:
            raise InputError(f"dimension {d!r} in --dims must be a positive integer")
    for spec in specs:
        spec = str(spec).strip()
        kind, _, arg = spec.partition(":")
        if kind.lower() not in ("none", "auto") and not arg and dims:
            expanded = [f"{kind.lower()}:{d}" for d in dims]
        else:
            expanded = [spec]
        for s in expanded:
            make_reducer(s)  # raises InputError naming the bad spec
            if s not in out:
                out.append(s)
    if not out:
        raise InputError("no reducers given; use e.g. none,whitening:256")
    return out


def _versions() -> dict:
    from ..provenance import versions

    return versions("eval")


def _default_encoder_factory(model, *, pooling, max_length, batch_size, device):
    from ..encoder import Encoder

    return Encoder(model, pooling=pooling, max_length=max_length, batch_size=batch_size, device=device)


def _read_corpus(path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"fit corpus {str(p)!r} does not exist (expected a UTF-8 file, one sentence a line)")
    try:
        lines = p.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError:
        raise InputError(f"fit corpus {str(p)!r} is not UTF-8") from None
    texts = list(dict.fromkeys(t.strip() for t in lines if t.strip()))
    if len(texts) < 2:
        raise InputError(f"fit corpus {str(p)!r} has {len(texts)} distinct sentences; need at least 2")
    return texts


class _TaskData:
    """One task's pairs per split, with the distinct sentences and index arrays of each split."""

    def __init__(self, task: str, pairsets: dict):
        self.task = task
        self.pairsets = pairsets
        self.unique = {s: ps.unique_sentences() for s, ps in pairsets.items()}


def run_grid(data_dir, *, tasks=None, models=(None,), poolings=("model",), reducers=("none",),
             dims=(), protocol: str = "paper", splits=None, limit: int | None = None,
             fit_corpus=None, fit_limit: int | None = None, max_length: int | None = None,
             batch_size: int = 32, cache_dir=None, device: str | None = None,
             progress: bool | None = None, encoder_factory=None, normalize: str = "none") -> dict:
    """Evaluate models x poolings x reducers on the tasks; return the JSON-ready results dict.

    ``splits``: the splits scored (default: every available split for ``paper``, ``test`` for
    ``fit-train``).  ``limit``: first N pairs of each scored split.  ``fit_limit``: first N pairs of
    the train split used for fitting in ``fit-train``.  ``max_length``: override the paper's 64 (128 for
    PAWSX).  ``encoder_factory(model, pooling=, max_length=, batch_size=, device=)`` builds encoders
    (default :class:`embedkit.encoder.Encoder`).  ``normalize``: a :class:`~embedkit.textnorm.TextNormalizer`
    mode applied to every sentence before encoding."""
    from ..textnorm import TextNormalizer

    t_start = time.perf_counter()
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if max_length is not None and (not isinstance(max_length, int) or max_length <= 0):
        raise InputError(f"max_length must be a positive integer, got {max_length!r}")
    if fit_corpus is not None and protocol != "fit-train":
        raise InputError("a fit corpus is only used by the fit-train protocol (use --protocol fit-train)")
    reducer_specs = expand_reducers(reducers, dims)
    needs_fit = any(make_reducer(s).kind != "none" for s in reducer_specs)
    needs_valid = protocol == "fit-valid" or any(make_reducer(s).kind == "auto" for s in reducer_specs)
    normalizer = TextNormalizer(normalize)
    root = check_data_dir(data_dir)
    task_names = resolve_tasks(root, tasks)
    if splits:
        splits = check_splits(splits)
    elif protocol in ("fit-train", "fit-valid"):
        splits = ["test"]
    else:
        splits = list(SPLITS)
    models = list(models) or [None]
    poolings = list(poolings) or ["model"]
    factory = encoder_factory or _default_encoder_factory
    cache = EncodingCache(cache_dir)

    # -- data ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    data: dict[str, _TaskData] = {}
    fit_sets: dict[str, PairSet] = {}
    tune_sets: dict[str, PairSet] = {}
    corpus_texts = _read_corpus(fit_corpus) if fit_corpus is not None else None
    for task in task_names:
        pairsets = load_task(root, task, splits, limit=limit)
        if not pairsets:
            log.warning("%s: none of the splits %s exist; skipping the task", task, ",".join(splits))
            continue
        for s, ps in list(pairsets.items()):
            if len(ps) < 2:
                log.warning("%s-%s has %d scorable pairs; leaving it out", task, s, len(ps))
                del pairsets[s]
        if not pairsets:
            continue
        data[task] = _TaskData(task, pairsets)
        if protocol == "fit-train" and needs_fit and corpus_texts is None:
            tr = load_task(root, task, ["train"], limit=fit_limit).get("train")
            if tr is None or len(tr) < 2:
                raise InputError(f"task {task!r} has no train split in {str(root)!r}; the fit-train "
                                 "protocol fits reducers on it (name a corpus with --fit-corpus FILE, "
                                 "or use --protocol paper)")
            fit_sets[task] = tr
        if needs_valid and "valid" not in pairsets:
            va = load_task(root, task, ["valid"], limit=limit).get("valid")
            if va is not None and len(va) >= 2:
                tune_sets[task] = va
            elif protocol == "fit-valid" and needs_fit:
                raise InputError(f"task {task!r} has no valid split in {str(root)!r}; the fit-valid "
                                 "protocol fits reducers on it (use --protocol paper or fit-train)")
    if not data:
        raise InputError(f"nothing to evaluate: no scorable pairs for tasks {', '.join(task_names)} "
                         f"and splits {', '.join(splits)} in {str(root)!r}")
    load_s = time.perf_counter() - t0

    # -- encode + score -----------------------------------------------------------------------
    cells: list[dict] = []
    model_info: list[dict] = []
    model_load_s = 0.0
    score_s = 0.0
    for model in models:
        for pooling in poolings:
            by_len: dict[int, list[str]] = defaultdict(list)
            for task in data:
                by_len[max_length or task_max_length(task)].append(task)
            for mlen, tasks_here in sorted(by_len.items()):
                t0 = time.perf_counter()
                enc = factory(model, pooling=pooling, max_length=mlen, batch_size=batch_size, device=device)
                desc = encoder_description(enc)
                model_load_s += time.perf_counter() - t0
                info = {"model": desc.get("model"), "name": Path(str(desc.get("model"))).name,
                        "pooling": pooling, "max_length": mlen, "dim": desc.get("dim"),
                        "backend": desc.get("backend"), "fingerprint": desc.get("model_fingerprint"),
                        "tasks": tasks_here}
                model_info.append(info)
                log.info("encoding %s tasks with %s (pooling %s, max_length %d)",
                         ",".join(tasks_here), info["name"], pooling, mlen)
                # every text list this encoder needs, encoded in one pooled call
                lists: list[list[str]] = []
                slots: dict = {}
                for task in tasks_here:
                    for s, (texts, _, _) in data[task].unique.items():
                        slots[(task, s)] = len(lists)
                        lists.append(texts)
                    for name, aux in (("#fit", fit_sets), ("#tune", tune_sets)):
                        if task in aux:
                            texts, _, _ = aux[task].unique_sentences()
                            slots[(task, name)] = len(lists)
                            lists.append(texts)
                if corpus_texts is not None and needs_fit:
                    slots[("#corpus",)] = len(lists)
                    lists.append(corpus_texts)
                if normalizer.mode != "none":
                    lists = [normalizer(t) for t in lists]
                vectors = cache.get_many(enc, lists, description=desc, batch_size=batch_size,
                                         show_progress_bar=progress)
                del enc
                t0 = time.perf_counter()
                for task in tasks_here:
                    cells.extend(score_task(data[task], vectors, slots, reducer_specs, protocol,
                                            fit_sets.get(task), corpus_texts is not None, info,
                                            tune_sets.get(task)))
                score_s += time.perf_counter() - t0

    averages = _averages(cells, list(data))
    total_s = time.perf_counter() - t_start
    return {
        "format": "embedkit-eval-results", "version": 1,
        "protocol": protocol,
        "settings": {"data_dir": str(root), "tasks": list(data), "splits": splits, "limit": limit,
                     "fit_limit": fit_limit, "fit_corpus": None if fit_corpus is None else str(fit_corpus),
                     "models": [None if m is None else str(m) for m in models], "poolings": poolings,
                     "reducers": reducer_specs, "max_length": max_length, "batch_size": batch_size,
                     "similarity": "cosine", "normalize": normalizer.describe()},
        "models": model_info,
        "data": [ps.summary() for td in data.values() for ps in td.pairsets.values()]
                + [dict(ps.summary(), role="fit") for ps in fit_sets.values()]
                + [dict(ps.summary(), role="tune") for ps in tune_sets.values()],
        "cells": cells,
        "averages": averages,
        "cache": cache.stats(),
        "timings": {"load_data_s": round(load_s, 3), "model_load_s": round(model_load_s, 3),
                    "encode_s": round(cache.encode_s, 3), "cache_io_s": round(cache.io_s, 3),
                    "reduce_score_s": round(score_s, 3), "grid_total_s": round(total_s, 3)},
        "versions": _versions(),
    }


def _averages(cells: list[dict], tasks: list[str]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in cells:
        groups[(c["model"], c["pooling"], c["reducer"], c["split"])].append(c)
    out = []
    for (model, pooling, reducer, split), cs in groups.items():
        w = [c["n_pairs"] for c in cs]
        sp = task_averages([c["spearman"] for c in cs], w)
        pe = task_averages([c["pearson"] for c in cs], w)
        out.append({"model": model, "model_name": cs[0]["model_name"], "pooling": pooling,
                    "reducer": reducer, "split": split, "tasks": [c["task"] for c in cs],
                    "complete": sorted(c["task"] for c in cs if math.isfinite(c["spearman"])) == sorted(tasks),
                    "spearman_avg": sp["avg"], "spearman_w_avg": sp["w_avg"],
                    "pearson_avg": pe["avg"], "pearson_w_avg": pe["w_avg"]})
    return out
