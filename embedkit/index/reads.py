"""The read side of :class:`embedkit.index.EmbedIndex`: searches (dense, lexical, hybrid; documents
or passages), ``get`` and pair similarity. Every read refreshes to the latest committed generation
first and then works on that immutable snapshot (see the concurrency contract in :mod:`.core`)."""

from __future__ import annotations

import copy

import numpy as np

from ..errors import InputError
from ..filters import Filter
from ..validate import check_utf8
from . import directory as dirs
from .results import Hit, check_k, check_unit, lexical_documents
from .summary import info_dict


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
        if isinstance(queries, (bytes, bytearray, dict, set, frozenset)) or not (
                isinstance(queries, str) or hasattr(queries, "__iter__")):
            raise InputError(f"queries must be a string or a list of strings, got {type(queries).__name__}")
        qs = [queries] if isinstance(queries, str) else list(queries)
        for i, q in enumerate(qs):
            if not isinstance(q, str) or not q.strip():
                raise InputError(f"query {i} is {q!r}; queries must be non-empty strings")
            check_utf8(f"query {i}", q)
        check_k(k)
        for attempt in (1, 2):  # another writer re-embedded the index between encoding and searching: again, once
            self.refresh()
            build_id = self.manifest.get("build_id")
            try:
                hits = self.search_embedded(qs, None if mode == "lexical" else self.embed(qs), k, filter=filter,
                                            min_score=min_score, mode=mode, min_probability=min_probability, unit=unit)
            except InputError:
                if attempt == 2 or self.manifest.get("build_id") == build_id:
                    raise
                continue
            if attempt == 2 or self.manifest.get("build_id") == build_id:
                return hits
        raise AssertionError("unreachable")  # pragma: no cover

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

    def calibrate(self, pairs_path, *, method: str = "isotonic", objective: str = "probability",
                  positive_label: float | None = None) -> dict:
        """Fit the score → P(similar) map and the decision threshold on labelled pairs and commit them
        with the query path (``calibration.json``); returns its summary. ``match`` is P(similar) >= 0.5
        by default; ``objective="f1"`` or ``"accuracy"`` chooses the cut maximising that metric instead."""
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
            hits = [Hit(r[1], r[2], r[0], copy.deepcopy(r[3]), p, mt, r[4] if len(r) > 4 else None)
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

        if not isinstance(doc_id, str):
            raise InputError(f"id {doc_id!r} is a {type(doc_id).__name__}; ids are strings (use {str(doc_id)!r})")
        check_utf8("id", doc_id)
        self.refresh()
        d = self.store.get(doc_id) if is_document_row(doc_id) else None
        # a copy: the caller may change it without changing what this snapshot filters on
        return None if d is None else Hit(d[0], d[1], 1.0, copy.deepcopy(user_metadata(d[2])))

    def info(self) -> dict:
        """The manifest plus the live counts: ``count`` documents, ``rows`` vectors (passages)."""
        self.refresh()
        external = int(getattr(self.store, "external_bytes", lambda: 0)())
        return info_dict(self.directory, self.generation, self.manifest, rows=self.store.count(), documents=len(self),
                         size_bytes=dirs.dir_size(self.generation) + external)

    @classmethod
    def read_info(cls, directory) -> dict:
        """:meth:`info` of the committed generation from its manifest alone, without opening the vectors,
        the document store or the model (:func:`embedkit.index.summary.read_info`); an index whose rows
        live in a server (Milvus) is opened, since the server holds its counts."""
        from .summary import read_info

        return read_info(directory) or cls.load(directory).info()
