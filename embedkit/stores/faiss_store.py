"""The FAISS store: an immutable base (FAISS index + SQLite documents) plus delta segments.

A generation directory holds::

    index.faiss  docs.sqlite  [tombstones.npy]     the base (written by a build or a compaction)
    seg-00000002.npz  seg-00000003.npz ...           one delta segment per later commit

Files never change once a generation is committed (the next generation hard-links them), so a
one-document add writes one small segment file, not the whole index. Searches run the base through
FAISS (deleted ids excluded by an ``IDSelector``) and the segments exactly in numpy, and merge the
top-k; for the flat index this is exact, the same as after compaction. Compaction folds segments
and deletions into a new base.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError, InputError
from ..filters import Filter
from .docs_sqlite import DocStore
from .faiss_backend import FaissBackend, as_f32, nlist_for
from .faiss_build import FaissBuilder, _describe
from .segments import SEGMENT, Segment, new_segment_name, read_segment, write_segment


def _fresh(path: Path) -> Path:
    """Unlink a hard-linked file before writing a new one in its place (never write through a link)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return path


class FaissStore:
    """A snapshot of base + segments (see the module docstring)."""

    LOCAL = True
    name = "faiss"

    def __init__(self, *, be: FaissBackend, docs: DocStore, desc: dict, segments: tuple, metric: str, dim: int,
                 lexical=None):
        self.be, self.docs, self.desc = be, docs, desc
        self.segments = segments
        self.metric, self.dim = metric, dim
        self.deleted = np.unique(np.concatenate([s.deleted for s in segments])) if segments \
            else np.zeros(0, np.int64)
        live_rows = []
        self._seg_docs: dict[int, tuple] = {}
        for s in segments:
            for iid, doc in zip(s.iids.tolist(), s.docs):
                self._seg_docs[iid] = doc
        dead = self._dead = set(self.deleted.tolist())  # every deleted internal id, built once per snapshot
        for iid in list(self._seg_docs):
            if iid in dead:
                del self._seg_docs[iid]
        self._seg_ids = {doc[0]: iid for iid, doc in self._seg_docs.items()}
        if segments and any(s.added for s in segments):
            self._seg_iids = np.concatenate([s.iids for s in segments])
            self._seg_vecs = np.concatenate([s.vectors for s in segments]).reshape(-1, dim)
            live_rows = ~np.isin(self._seg_iids, self.deleted)
            self._seg_live = live_rows
        else:
            self._seg_iids = np.zeros(0, np.int64)
            self._seg_vecs = np.zeros((0, dim), np.float32)
            self._seg_live = np.zeros(0, bool)
        self._base_deleted = self.deleted[~np.isin(self.deleted, self._seg_iids)] if self.deleted.size \
            else self.deleted
        self._seg_flat = None  # FAISS flat index over the segment rows, built on first search
        self.lexical = lexical.follow(self._seg_docs) if lexical is not None else None
        self._count = int(desc["base_count"]) - int(self._base_deleted.size) + len(self._seg_docs)

    # -- creation / opening ----------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path, *, tmp: Path, index: str, dim: int, metric: str, n_train: int,
               expected_size: int, params: dict | None, overwrite: bool = False,
               lexical: bool = False) -> FaissBuilder:
        del directory, overwrite
        p = dict(params or {})
        if index in ("ivf-flat", "ivf-pq") and "nlist" not in p:
            p["nlist"] = nlist_for(max(expected_size, 1), n_train)
        be = FaissBackend.create(index, dim, metric, n_train, p)
        return FaissBuilder(be, DocStore(tmp / DocStore.FILE, create=True), tmp, 0, lexical=lexical)

    @classmethod
    def open(cls, directory: Path, generation: Path, desc: dict, dim: int, metric: str, *,
             expected_count: int | None = None, previous: "FaissStore | None" = None) -> "FaissStore":
        del directory
        if previous is not None and previous.desc.get("base_id") == desc.get("base_id") \
                and desc.get("base_id") is not None:
            be, docs, lexical = previous.be, previous.docs, previous.lexical
            known = {s.name: s for s in previous.segments}
        else:
            be = FaissBackend.load(generation, desc, metric, dim)
            docs = DocStore(generation / DocStore.FILE, readonly=True)
            known = {}
            lexical = None
            if "lexical" in desc:
                from .lexical_part import LexicalPart

                lexical = LexicalPart.load(generation)
                if lexical is None:
                    raise IndexFormatError(f"the manifest of {generation} names a lexical part, but "
                                           f"{generation / 'lexical'} is missing")
            n_docs = docs.count()
            if "base_count" in desc and (be.ntotal != desc["base_count"] or n_docs != desc["base_count"]):
                raise IndexFormatError(f"index {generation} is inconsistent: base count {desc['base_count']}, "
                                       f"FAISS holds {be.ntotal}, document store {n_docs}")
        segs = []
        for s in desc.get("segments", []):
            segs.append(known.get(s["name"]) or read_segment(generation / s["name"], dim, s.get("first_iid", -1)))
        desc = dict(desc)
        desc.setdefault("base_count", be.ntotal)
        store = cls(be=be, docs=docs, desc=desc, segments=tuple(segs), metric=metric, dim=dim, lexical=lexical)
        if expected_count is not None and store.count() != expected_count:
            raise IndexFormatError(f"index {generation} is inconsistent: manifest count {expected_count}, FAISS "
                                   f"holds {be.ntotal}, document store {docs.count()}, segments "
                                   f"{len(segs)} (count {store.count()})")
        return store

    def files(self) -> list[str]:
        """The files of this snapshot (hard-linked into the next generation)."""
        out = [FaissBackend.FILE, DocStore.FILE] + [s.name for s in self.segments]
        if self.be.tombstones:
            out.append(FaissBackend.TOMBSTONES)
        return out

    # -- reads ------------------------------------------------------------------------------------
    def count(self) -> int:
        return self._count

    def existing_ids(self, ids) -> set[str]:
        ids = list(ids)
        out = {i for i in ids if i in self._seg_ids}
        found = self.docs.iids_for([i for i in ids if i not in out])
        dead = self._dead
        out.update(i for i, iid in found.items() if iid not in dead)
        return out

    def iids_for(self, ids) -> dict[str, int]:
        ids = list(ids)
        out = {i: self._seg_ids[i] for i in ids if i in self._seg_ids}
        dead = self._dead
        for i, iid in self.docs.iids_for([i for i in ids if i not in out]).items():
            if iid not in dead:
                out[i] = iid
        return out

    def get(self, doc_id: str):
        iid = self._seg_ids.get(doc_id)
        if iid is not None:
            return self._seg_docs[iid]
        iid = self.docs.id_iid(doc_id)
        if iid is None or iid in self._dead:
            return None
        return self.docs.fetch([iid])[iid]

    def search(self, vectors: np.ndarray, k: int, flt: Filter | None) -> list[list[tuple]]:
        """Top-k ``(score, id, text, metadata)`` per query row, best first."""
        q = as_f32(vectors, self.dim, "query vectors")
        allowed = self.docs.filter_iids(flt) if flt is not None else None
        base = self.be.search(q, k, allowed, excluded=self._base_deleted) \
            if (allowed is None or allowed.size) else [[] for _ in range(q.shape[0])]
        seg = self._search_segments(q, k, flt)
        docs = self.docs.fetch({i for row in base for _, i in row})
        out = []
        for brow, srow in zip(base, seg):
            merged = [(s, *docs[i]) for s, i in brow if i in docs] + srow
            merged.sort(key=lambda h: -h[0])
            out.append(merged[:k])
        return out

    def _search_segments(self, q: np.ndarray, k: int, flt: Filter | None) -> list[list[tuple]]:
        """Exact search over the delta segments (a FAISS flat index over their rows, built once per
        snapshot; deleted and filtered-out rows excluded by a selector)."""
        if not self._seg_docs:
            return [[] for _ in range(q.shape[0])]
        mask = self._seg_live
        if flt is not None:
            mask = mask & np.fromiter((i in self._seg_docs and flt.matches(self._seg_docs[i][2])
                                       for i in self._seg_iids.tolist()), dtype=bool, count=len(self._seg_iids))
        n_ok = int(mask.sum())
        if n_ok == 0:
            return [[] for _ in range(q.shape[0])]
        import faiss

        if self._seg_flat is None:
            flat = faiss.IndexFlatL2(self.dim) if self.metric == "l2" else faiss.IndexFlatIP(self.dim)
            flat.add(self._seg_vecs)
            self._seg_flat = flat
        params, keep = None, None
        if n_ok < mask.shape[0]:
            keep = np.flatnonzero(mask).astype(np.int64)
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(keep))
        scores, rows = self._seg_flat.search(q, min(k, n_ok), params=params)
        if self.metric == "l2":
            scores = -scores
        out = []
        for srow, rrow in zip(scores, rows):
            out.append([(float(sc), *self._seg_docs[int(self._seg_iids[r])]) for sc, r in zip(srow, rrow) if r >= 0])
        return out

    def iterate(self, *, with_vectors: bool = False, batch: int = 1000):  # noqa: C901
        """Batches of ``(iid, id, text, metadata, vector-or-None)`` over live documents."""
        dead = self._dead
        recon = self.be.reconstructor() if with_vectors else None
        rows = []
        for iid, did, text, meta in self.docs.iter_all(batch):
            if iid in dead:
                continue
            rows.append((iid, did, text, meta))
            if len(rows) >= batch:
                yield self._with_vectors(rows, recon)
                rows = []
        if rows:
            yield self._with_vectors(rows, recon)
        seg_rows = [(iid, *doc) for iid, doc in self._seg_docs.items()]
        if seg_rows:
            pos = {int(i): n for n, i in enumerate(self._seg_iids.tolist())}
            yield [(iid, d, t, m, self._seg_vecs[pos[iid]] if with_vectors else None) for iid, d, t, m in seg_rows]

    @staticmethod
    def _with_vectors(rows, recon):
        if recon is None:
            return [(*r, None) for r in rows]
        vecs = recon(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
        return [(*r, v) for r, v in zip(rows, vecs)]

    def describe(self) -> dict:
        return dict(self.desc, segments=[s.describe() for s in self.segments])

    # -- writes (each returns the next snapshot) ---------------------------------------------------
    def stage(self, tmp: Path, docs: list, vectors: np.ndarray | None = None, deleted=()) -> Segment:
        """Write one segment file into ``tmp`` (no lock needed: it gets its ids at commit)."""
        vecs = np.zeros((0, self.dim), np.float32) if vectors is None else as_f32(vectors, self.dim,
                                                                                "document vectors")
        return write_segment(tmp / new_segment_name(), vecs, list(deleted), docs)

    def commit(self, segments: list[Segment]) -> "FaissStore":
        """The snapshot with ``segments`` (their ``first_iid`` assigned) appended."""
        segs = self.segments + tuple(segments)
        return FaissStore(be=self.be, docs=self.docs, desc=dict(self.desc, segments=[s.describe() for s in segs]),
                          segments=segs, metric=self.metric, dim=self.dim, lexical=self.lexical)

    def compact(self, commit: Path) -> "FaissStore":
        """Fold segments and deletions into a new base written into ``commit``."""
        be = self.be.copy()
        if self._base_deleted.size:
            be.remove(self._base_deleted.tolist())
        for name in os.listdir(commit):
            if SEGMENT.match(name) or name in (FaissBackend.FILE, FaissBackend.TOMBSTONES, DocStore.FILE):
                os.unlink(commit / name)
        docs = self.docs.copy_to(commit / DocStore.FILE)
        if self._base_deleted.size:
            docs.delete(self._base_deleted.tolist())
        if self._seg_docs:
            live = self._seg_live
            iids, vecs = self._seg_iids[live], self._seg_vecs[live]
            from ..corpus import Doc

            docs.add(iids, [Doc(*self._seg_docs[int(i)]) for i in iids.tolist()])
            be.add(vecs, iids)
        n = docs.count()
        if n != be.ntotal:  # pragma: no cover - internal invariant
            raise IndexFormatError(f"internal error: compaction gives {n} documents but {be.ntotal} vectors")
        docs.sync()
        be.save(commit)
        desc = _describe(be, commit, base_count=n, trained_on=int(self.desc.get("trained_on", 0)), segments=(),
                         base_id=uuid.uuid4().hex)
        lexical = None
        if self.lexical is not None:
            live = self._seg_iids[self._seg_live].tolist() if self._seg_docs else []
            lexical = self.lexical.compact(commit, self._base_deleted, live,
                                           [self.lexical.seg_tokens[i] for i in live])
            desc["lexical"] = lexical.describe()
        return FaissStore(be=be, docs=DocStore(commit / DocStore.FILE, readonly=True), desc=desc, segments=(),
                          metric=self.metric, dim=self.dim, lexical=lexical)

    # -- the lexical part ---------------------------------------------------------------------------
    def with_lexical(self, commit: Path) -> "FaissStore":
        """This (compacted) snapshot plus a lexical part over its base, written into ``commit``."""
        from ..lexical import tokenize_many
        from .lexical_part import LexicalPart

        if self.segments:
            raise IndexFormatError("internal error: the lexical part is built on a compacted base")
        iids, texts = [], []
        for iid, _did, text, _meta in self.docs.iter_all(5000):
            iids.append(iid)
            texts.append(text)
        part = LexicalPart.build(commit, np.asarray(iids, dtype=np.int64), tokenize_many(texts))
        desc = dict(self.desc, lexical=part.describe())
        return FaissStore(be=self.be, docs=self.docs, desc=desc, segments=(), metric=self.metric, dim=self.dim,
                          lexical=part)

    def search_lexical(self, queries: list[str], k: int, flt: Filter | None) -> list[list[tuple]]:
        """BM25 top-k ``(score, id, text, metadata)`` per query (no hits for a query without words)."""
        if self.lexical is None:
            raise InputError("this index has no lexical part")
        base_allowed = self.docs.filter_iids(flt) if flt is not None else None
        seg_allowed = None if flt is None else {i for i, d in self._seg_docs.items() if flt.matches(d[2])}
        rows = self.lexical.search(queries, k, base_excluded=self._base_deleted, base_allowed=base_allowed,
                                   seg_allowed=seg_allowed)
        base_ids = {i for row in rows for _, i in row if i not in self._seg_docs}
        docs = self.docs.fetch(base_ids)
        docs.update({i: self._seg_docs[i] for row in rows for _, i in row if i in self._seg_docs})
        return [[(s, *docs[i]) for s, i in row if i in docs] for row in rows]

    def needs_compaction(self, max_segments: int, max_fraction: float) -> bool:
        pending = sum(s.added + int(s.deleted.shape[0]) for s in self.segments)
        return len(self.segments) > max_segments or pending > max_fraction * max(1, int(self.desc["base_count"]))

    # -- verification -----------------------------------------------------------------------------
    def check(self, generation: Path) -> list[str]:
        """Problems found across base, segments and deletions (empty when consistent)."""
        problems = []
        seen: dict[str, int] = {}
        all_iids = set()
        for iid, did, _text, _meta in self.docs.iter_all():
            all_iids.add(iid)
            seen[did] = iid
        if len(all_iids) != self.be.ntotal:
            problems.append(f"{generation / type(self.be).FILE}: FAISS holds {self.be.ntotal} vectors, "
                            f"{generation / DocStore.FILE} holds {len(all_iids)} documents")
        for s in self.segments:
            path = generation / s.name
            for iid, doc in zip(s.iids.tolist(), s.docs):
                if iid in all_iids:
                    problems.append(f"{path}: internal id {iid} is used twice")
                all_iids.add(iid)
                if doc[0] in seen and seen[doc[0]] not in self._dead:
                    problems.append(f"{path}: id {doc[0]!r} is already in the index")
                seen[doc[0]] = iid
            if s.first_iid < 0:
                problems.append(f"{path}: the manifest gives the segment no first internal id")
            unknown = [int(i) for i in s.deleted.tolist() if i not in all_iids]
            if unknown:
                problems.append(f"{path}: deletes internal id {unknown[0]} that no earlier file holds")
        if self.lexical is not None:
            base_iids = {iid for iid, *_ in self.docs.iter_all()}
            problems += [f"{generation}/{p}" for p in self.lexical.check(base_iids)]
        return problems

    def close(self) -> None:
        self.docs.close()


def ensure_trained(builder: FaissBuilder, vectors: np.ndarray) -> None:
    if builder.needs_training:
        if vectors.shape[0] == 0:
            raise InputError("no vectors to train the index on")
        builder.train(vectors)
