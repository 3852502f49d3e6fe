"""The query path: everything that turns a text into the vector an index stores or searches with.

Documents and queries always pass through the same object, rebuilt from the index manifest:

    text --normalise--> encoder (model, pooling, max_length) --raw--> reducer --> L2 (cosine) --> vector

It has two halves so a server can batch the expensive one: :meth:`encode_raw` (text stage + model,
un-normalised float32) and :meth:`project` (reducer + normalisation; cheap, thread-safe). The
encoder is loaded lazily, so commands that never encode (``index delete``, ``index info``) never load
a model. Later stages (calibration of scores) hang off the same object.
"""

from __future__ import annotations

import hashlib
import json
import threading

import numpy as np

from .errors import EmbedkitError, IndexFormatError
from .reducers import Reducer


def finish_vectors(vecs: np.ndarray, metric: str) -> np.ndarray:
    """L2-normalise for cosine; otherwise just contiguous float32."""
    if metric == "cosine":
        from .encoder import l2_normalize

        return l2_normalize(vecs)
    return np.ascontiguousarray(vecs, dtype=np.float32)


class QueryPath:
    """Encoder + text stage + reducer + metric (+ optional calibration).

    ``encoder`` is an encoder object or ``None``; with ``None`` it is built on first use from
    ``encoder_config`` (``model``, ``pooling``, ``max_length``) plus ``runtime``/``device``."""

    def __init__(self, encoder, reducer: Reducer, metric: str, *, encoder_config: dict | None = None,
                 normalizer=None, calibration=None, runtime: str = "torch", device: str | None = None,
                 splitter=None):
        self._encoder = encoder
        self.reducer = reducer
        self.metric = metric
        self.encoder_config = dict(encoder_config or (encoder.describe() if encoder is not None else {}))
        self.encoder_config.pop("backend", None)
        self.normalizer = normalizer
        self.calibration = calibration
        self.runtime = runtime
        self.device = device
        self.splitter = splitter  # embedkit.textsplit.PassageSplitter: how documents are read (None: whole, cut)
        self._bound = None
        self._lock = threading.Lock()

    # -- the encoder, loaded on demand ----------------------------------------------------------
    @property
    def encoder_loaded(self) -> bool:
        return self._encoder is not None

    @property
    def encoder(self):
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = self._load_encoder()
        return self._encoder

    def _load_encoder(self):
        from .encoder import Encoder

        cfg = self.encoder_config
        try:
            enc = Encoder(cfg["model"], pooling=cfg["pooling"], max_length=cfg["max_length"],
                          backend=self.runtime, device=self.device)
        except EmbedkitError as e:
            raise type(e)(f"cannot load the index's model {cfg['model']!r}: {e}") from None
        check_encoder(enc, cfg)
        return enc

    def passage_splitter(self):
        """:attr:`splitter` bound to the encoder's tokenizer and window, or None when documents are read
        whole (no splitter, or an encoder object that exposes no Hugging Face tokenizer at ``.st``)."""
        if self.splitter is None:
            return None
        if self._bound is None:
            tok = getattr(getattr(self.encoder, "st", None), "tokenizer", None)
            if tok is None:
                return None
            self._bound = self.splitter.bind(tok, int(self.encoder_config.get("max_length") or 64))
        return self._bound

    def describe_split(self) -> dict:
        """The splitting rule as the manifest records it."""
        sp = self.passage_splitter()
        if sp is None:
            return {"mode": "truncate", "max_tokens": None, "overlap": 0}
        return sp.describe()

    # -- the two halves ---------------------------------------------------------------------------
    def prepare(self, texts: list[str]) -> list[str]:
        """The text stage (normalisation) alone."""
        return list(texts) if self.normalizer is None else self.normalizer(list(texts))

    def encode_raw(self, texts, *, batch_size: int | None = None, show_progress_bar: bool | None = None):
        """Texts → the encoder's un-normalised float32 rows (text stage applied)."""
        single = isinstance(texts, str)
        batch = self.prepare([texts] if single else list(texts))
        raw = self.encoder.encode(batch, normalize=False, batch_size=batch_size,
                                  show_progress_bar=show_progress_bar)
        return raw[0] if single else raw

    def encode_raw_with_usage(self, texts: list[str], *, batch_size: int | None = None,
                              show_progress_bar: bool | None = None):
        """:meth:`encode_raw` plus the tokens the model read for each text (one tokenisation, this
        thread); the counts are None for an encoder that cannot report them."""
        batch = self.prepare(list(texts))
        enc = self.encoder
        if hasattr(enc, "encode_with_usage"):
            raw, n = enc.encode_with_usage(batch, normalize=False, batch_size=batch_size,
                                           show_progress_bar=show_progress_bar)
            return raw, np.asarray(n, dtype=np.int64)
        return enc.encode(batch, normalize=False, batch_size=batch_size, show_progress_bar=show_progress_bar), None

    def project(self, raw: np.ndarray) -> np.ndarray:
        """Raw encoder rows → stored/searched vectors: reducer, then L2 for cosine."""
        raw = np.asarray(raw, dtype=np.float32)
        single = raw.ndim == 1
        out = finish_vectors(self.reducer.transform(raw[None, :] if single else raw), self.metric)
        return out[0] if single else out

    def embed(self, texts, *, batch_size: int | None = None, show_progress_bar: bool | None = None):
        return self.project(self.encode_raw(texts, batch_size=batch_size, show_progress_bar=show_progress_bar))

    # -- identity ---------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.reducer.output_dim)

    def describe(self) -> dict:
        """What determines the vectors (recorded in the manifest, compared by calibration files)."""
        cfg = self.encoder_config
        return {"model": str(cfg.get("model")), "pooling": cfg.get("pooling"), "max_length": cfg.get("max_length"),
                "encoder_dim": cfg.get("dim"), "reducer": self.reducer.spec, "metric": self.metric,
                "normalize": getattr(self.normalizer, "spec", "none") if self.normalizer is not None else "none"}

    def identity(self) -> dict:
        """``describe()`` with the model named by its directory name: what a calibration file is
        checked against (an index moved to another machine keeps its calibration)."""
        from pathlib import Path

        d = self.describe()
        d["model"] = Path(str(d["model"])).name
        return d

    # -- pair scores and calibrated similarity -------------------------------------------------------
    def score_vectors(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The index's score for aligned rows: cosine / inner product, or minus the squared L2 distance."""
        if self.metric == "l2":
            return -np.sum((a - b) ** 2, axis=1)
        return np.sum(a * b, axis=1)

    def score_pairs(self, a_texts, b_texts, *, batch_size: int | None = None) -> np.ndarray:
        if len(a_texts) != len(b_texts):
            from .errors import InputError

            raise InputError(f"got {len(a_texts)} first and {len(b_texts)} second sentences; pairs must align")
        both = self.embed(list(a_texts) + list(b_texts), batch_size=batch_size)
        return self.score_vectors(both[:len(a_texts)], both[len(a_texts):])

    def calibrated(self, scores) -> tuple[list, list]:
        """(probabilities, matches) for scores, or (Nones, Nones) without a calibration."""
        scores = np.atleast_1d(np.asarray(scores, dtype=np.float64))
        if self.calibration is None or scores.size == 0:
            return [None] * scores.size, [None] * scores.size
        return ([round(float(p), 6) for p in self.calibration.predict_proba(scores)],
                [bool(m) for m in self.calibration.match(scores)])

    def similarity(self, pairs, *, batch_size: int | None = None) -> list[dict]:
        """``[{"score", "probability", "match"}, ...]`` for ``[(a, b), ...]`` (probability and match are
        None when the index has no calibration)."""
        from .errors import InputError

        pairs = list(pairs)
        for i, p in enumerate(pairs):
            if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(t, str) and t.strip() for t in p)):
                raise InputError(f"pair {i} is {p!r}; each pair must be two non-empty strings")
        if not pairs:
            raise InputError("no pairs to score")
        scores = self.score_pairs([a for a, _ in pairs], [b for _, b in pairs], batch_size=batch_size)
        probs, matches = self.calibrated(scores)
        return [{"score": float(s), "probability": p, "match": m} for s, p, m in zip(scores, probs, matches)]

    def fingerprint(self) -> str:
        blob = json.dumps(self.describe(), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def check_encoder(encoder, cfg: dict) -> None:
    """An encoder may replace the recorded one only if it produces the same kind of vectors."""
    got = encoder.describe()
    for key in ("pooling", "max_length", "dim"):
        if key in cfg and got[key] != cfg[key]:
            raise IndexFormatError(f"the encoder's {key} is {got[key]!r} but the index was built with "
                                   f"{cfg[key]!r}; documents and queries must go through the same path")
