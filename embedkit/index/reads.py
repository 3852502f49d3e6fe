"""The read side of :class:`embedkit.index.EmbedIndex`: searches (dense, lexical, hybrid; documents
or passages), ``get`` and pair similarity. Every read refreshes to the latest committed generation
first and then works on that immutable snapshot (see the concurrency contract in :mod:`.core`)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..filters import Filter
from . import directory as dirs
from .results import Hit, check_k, check_unit, lexical_documents


class IndexReads:
    """Mixed into EmbedIndex, which provides ``store``, ``manifest``, ``query_path``, ``dim``,
    ``has_passages``, ``directory``, ``refresh`` and ``embed``."""

    # -- reads ------------------------------------------------------------------------------------
    def check_k(self, k) -> int:
        """The library's k rule (the CLI and the API use it too): k must be a positive integer; a k
        larger than the number of documents returns every document (ranked)."""
        return check_k(k)

    def search(self, queries, k: int = 10, *, filter: dict | None = None, min_score: float | None = None,
               mode: str = "dense", min_probability: float | None = None, unit: str = "documents") -> list[list[Hit]]:
        """Top-k hits for a query string or a list of them (a list of hit lists, one per query).

        ``mode``: ``dense`` (vectors), ``lexical`` (BM25) or ``hybrid`` (both, fused as the manifest's
        ``fusion`` says); lexical and hybrid need the index's lexical part. ``unit``: ``documents``
        (each document once, ranked by its best passage, which :attr:`Hit.passage` names) or
        ``passages`` (dense only: the top-k passages, several may come from one document)."""
        qs = [queries] if isinstance(queries, str) else list(queries)
        for i, q in enumerate(qs):
            if not isinstance(q, str) or not q.strip():
                raise InputError(f"query {i} is {q!r}; queries must be non-empty strings")
        check_k(k)
        return self.search_embedded(qs, None if mode == "lexical" else self.embed(qs), k, filter=filter,
                                    min_score=min_score, mode=mode, min_probability=min_probability, unit=unit)

    def search_embedded(self, queries: list[str], vectors, k: int, *, filter=None, min_score: float | None = None,
                        mode: str = "dense", min_probability: float | None = None,
                        unit: str = "documents") -> list[list[Hit]]:
        """:meth:`search` for queries whose vectors were already computed with :meth:`embed` (``None`` for
        lexical mode) — what a server that batches the encoder calls."""
        from . import hybrid

        hybrid.check_mode(mode)
        flt = Filter.parse(filter)
        if mode == "dense":
            return self.search_vectors(vectors, k, filter=flt, min_score=min_score, min_probability=min_probability,
                                       unit=unit)
        check_k(k)
        check_unit(unit, self)
        if unit != "documents":
            raise InputError(f"unit {unit!r} needs mode 'dense' (lexical and hybrid scores are per document), "
                             f"not mode {mode!r}")
        if min_probability is not None:
            raise InputError(f"min_probability applies to dense scores (the calibrated ones), not mode {mode!r}")
        self.refresh()
        if mode == "lexical":
            rows = [lexical_documents(r) for r in hybrid.lexical_hits(self, queries, k, flt)]
        else:
            hybrid.require_lexical(self)
            dense = self._dense_rows(vectors, max(k, hybrid.DEPTH), flt, "documents")
            rows = hybrid.hybrid_hits(self, queries, dense, k, flt)
        return self._hits(rows, min_score, None, calibrated=False)

    def similarity(self, pairs, *, batch_size: int | None = None) -> list[dict]:
        """Score, P(similar) and match for each ``(a, b)`` pair, through the index's query path."""
        return self.query_path.similarity(pairs, batch_size=batch_size)

    def calibrate(self, pairs_path, *, method: str = "isotonic", objective: str = "f1",
                  positive_label: float | None = None) -> dict:
        """Fit the score → P(similar) map and the decision threshold on labelled pairs and commit them
        with the query path (``calibration.json``); returns its summary."""
        from .calibrate import calibrate_index

        return calibrate_index(self, pairs_path, method=method, objective=objective, positive_label=positive_label)

    def search_vectors(self, vectors: np.ndarray, k: int, *, filter=None, min_score: float | None = None,
                       min_probability: float | None = None, unit: str = "documents") -> list[list[Hit]]:
        from ..stores.faiss_backend import as_f32

        vectors = as_f32(vectors, self.dim, "query vectors")
        k = check_k(k)
        flt = Filter.parse(filter)
        self.refresh()
        return self._hits(self._dense_rows(vectors, k, flt, unit), min_score, min_probability)

    def _dense_rows(self, vectors: np.ndarray, k: int, flt, unit: str) -> list[list[tuple]]:
        """Per query ``(score, id, text, metadata[, passage])`` rows: documents ranked by their best
        passage, or passages (see :mod:`embedkit.index.passages`)."""
        from . import passages as ps

        check_unit(unit, self)
        if not self.has_passages:
            return self.store.search(vectors, k, flt)
        texts = ps.DocTexts(self.store)
        if unit == "passages":
            return [ps.to_passages(r, texts) for r in self.store.search(vectors, k, flt)]
        rows = ps.search_documents(lambda depth: self.store.search(vectors, depth, flt), self.store.count(), k)
        return [ps.to_documents(r, k, texts) for r in rows]

    def _hits(self, rows, min_score, min_probability, calibrated: bool = True) -> list[list[Hit]]:
        out = []
        for row in rows:
            row = [r for r in row if min_score is None or r[0] >= min_score]
            probs, matches = self.query_path.calibrated([r[0] for r in row]) if calibrated else \
                ([None] * len(row), [None] * len(row))
            hits = [Hit(r[1], r[2], r[0], r[3], p, mt, r[4] if len(r) > 4 else None)
                    for r, p, mt in zip(row, probs, matches)]
            if min_probability is not None:
                if self.query_path.calibration is None:
                    raise InputError("min_probability needs a calibrated index: run "
                                     f"`embedkit calibrate {self.directory} --pairs FILE` first")
                hits = [h for h in hits if h.probability is not None and h.probability >= min_probability]
            out.append(hits)
        return out

    def get(self, doc_id: str) -> Hit | None:
        """A document by id (score 1.0), with its whole text, or None."""
        from .passages import is_document_row, user_metadata

        self.refresh()
        d = self.store.get(doc_id) if isinstance(doc_id, str) and is_document_row(doc_id) else None
        return None if d is None else Hit(d[0], d[1], 1.0, user_metadata(d[2]))

    def info(self) -> dict:
        """The manifest plus the live counts: ``count`` documents, ``rows`` vectors (passages)."""
        self.refresh()
        m = dict(self.manifest)
        m["directory"] = str(self.directory)
        m["generation"] = self.generation.name
        m["rows"] = self.store.count()
        m["count"] = m["documents"] = len(self)
        m["passages"] = dict(m.get("passages") or {"mode": "truncate"},
                             per_document=round(m["rows"] / m["count"], 3) if m["count"] else 0.0)
        m["size_bytes"] = dirs.dir_size(self.generation) + int(getattr(self.store, "external_bytes", lambda: 0)())
        return m
