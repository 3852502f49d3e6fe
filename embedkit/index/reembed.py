"""Re-embed a live index with another model (``embedkit index reembed DIR --model NEW``).

The old index keeps serving throughout; the switch is one commit like any other:

1. **Snapshot.** The committed documents (ids, whole texts, metadata) are read from the live index.
2. **Build** (no lock held). A complete new index is built from them with the new encoder in a private
   temporary directory inside the index directory, with the same splitting rule, reducer kind, metric,
   FAISS index type, text normalisation and lexical part. Everything that depends on the model is
   fitted again: the reducer on the new vectors, the hybrid fusion weight on the pairs it was tuned on
   (or ``tune_pairs``), ``auto`` runtimes measure the new model.
3. **Catch up** (no lock held). Writes committed to the live index meanwhile (adds, deletions, a
   document replaced under the same id) are applied to the new index, a few rounds until none are left.
4. **Switch** (under the directory's writer lock, so no write can slip in between). The last writes
   are applied, and the new index's generation becomes the next generation of the live directory
   (hard links, a new ``build_id``, ``CURRENT`` replaced atomically). A running ``embedkit serve`` and
   every loaded :class:`EmbedIndex` switch to it on their next read, as for any commit; a writer that
   encoded with the old model is told the index was rebuilt (the service retries such an add once).
5. **Calibration** is never carried over (its scores came from the old model): it is fitted again on
   the pairs file it was fitted on when that file is still there, otherwise it is dropped and the
   result says how to redo it.

A kill at any point before the switch leaves the live index untouched (the temporary directory is
removed by the next writer); after it, the new generation is complete.

**Milvus.** The new vectors go into a new collection at the same URI while the old one keeps serving;
writes to a Milvus index hold the directory's lock shared, so the switch (which holds it exclusively)
sees every committed write. The committed manifest names the new collection under the same alias, the
alias is moved to it, and the old collection is dropped a grace period later; a failed re-embed drops
its collection, a killed one's is dropped by the next re-embed (:mod:`embedkit.stores.milvus_swap`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..constants import INDEX_TYPES
from ..corpus import Doc
from ..errors import IndexRebuiltError, InputError
from . import directory as dirs
from .manifest import now, write_manifest
from .passages import is_document_row, user_metadata

log = logging.getLogger(__name__)

CATCH_UP_ROUNDS = 3


def documents(store) -> dict[str, tuple[str, dict | None]]:
    """``id -> (whole text, user metadata)`` of every document of a store snapshot."""
    out = {}
    for batch in store.iterate():
        for _, did, text, meta, _ in batch:
            if is_document_row(did):
                out[did] = (text, user_metadata(meta))
    return out


def changes(before: dict, after: dict) -> tuple[list[str], list[Doc]]:
    """(ids to delete, documents to add) that turn ``before`` into ``after`` (a replaced document is both)."""
    gone = [i for i, v in before.items() if after.get(i) != v]
    new = [Doc(i, *v) for i, v in after.items() if before.get(i) != v]
    return gone, new


def _apply(index, before: dict, after: dict, **encode) -> int:
    gone, new = changes(before, after)
    if gone:
        index.delete(gone)
    if new:
        index.add(new, **encode)
    return len(gone) + len(new)


def reembed_index(cls, directory, *, encoder=None, model: str | None = None, pooling: str | None = None,
                  max_length: int | None = None, backend: str = "torch", device: str | None = None,
                  batch_size: int | None = None, tune_pairs=None, recalibrate: bool = True,
                  show_progress_bar: bool | None = None) -> tuple[object, dict]:
    """Re-embed the index in ``directory`` with ``encoder`` (or ``model``; pooling and max_length default
    to the index's) and switch to it atomically; returns ``(the index, a summary)``. See the module
    docstring for the protocol."""
    from ..encoder import Encoder

    t0 = time.perf_counter()
    directory = Path(directory)
    live = cls.load(directory)
    session = None  # a store that keeps its rows in a server re-embeds into a new collection there
    if not live.store.LOCAL:
        if not hasattr(live.store, "rebuild_session"):
            raise InputError(f"index reembed does not support the {live.store.name!r} store (FAISS and Milvus do)")
        with live._lock, dirs.writer_lock(directory):  # under the lock: never mistakes the live collection for
            live._reload_locked(None)                   # an older re-embed's leftover
            session = live.store.rebuild_session()
            session.drop_stale()
    m = live.manifest
    old_enc = m["encoder"]
    if encoder is None:
        if model is None:
            raise InputError("index reembed needs the new model (--model DIR)")
        encoder = Encoder(model, pooling=pooling or old_enc["pooling"], max_length=max_length or old_enc["max_length"],
                          backend=backend, device=device)
    reducer = m["reducer"]["spec"]
    fusion = m.get("fusion") or {}
    tune = tune_pairs or fusion.get("tuned_on") or m["reducer"].get("tuned_on")
    if tune and not Path(str(tune)).is_file():
        if tune_pairs:
            raise InputError(f"tune_pairs file {str(tune_pairs)!r} does not exist")
        log.warning("the pairs the index was tuned on (%s) are gone: using the default fusion weight", tune)
        tune = None
    if reducer.startswith("auto") and not tune:
        raise InputError(f"the index's reducer {reducer!r} chooses on labelled pairs: give them with --tune-pairs")
    split = dict(m.get("passages") or {"mode": "truncate"})
    same_window = int(old_enc["max_length"]) == int(encoder.max_length)
    desc = m["index"]
    if session is None:
        target = {"index": desc.get("type") if desc.get("type") in INDEX_TYPES else desc.get("factory"),
                  "index_params": desc.get("params")}
    else:
        target = session.build_options()
    build_id = m.get("build_id")

    snapshot = documents(live.store)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-gen-{os.getpid()}-reembed-", dir=directory))
    switched = False
    try:
        log.info("re-embedding %d documents of %s with %s", len(snapshot), directory, encoder.model_name)
        fresh = cls.build(work / "index", [Doc(i, t, md) for i, (t, md) in snapshot.items()], encoder=encoder,
                          reduce=reducer, metric=m["metric"], normalize=m.get("normalize", "none"), **target,
                          split=split.get("mode", "truncate"),
                          passage_tokens=split.get("max_tokens") if same_window and split.get("mode") == "passages" else None,
                          passage_overlap=split.get("overlap") if same_window and split.get("mode") == "passages" else None,
                          lexical="lexical" in desc, tune_pairs=tune, expected_size=max(len(snapshot), 1),
                          batch_size=batch_size, show_progress_bar=show_progress_bar)
        fresh.auto_compact = False
        built_s = time.perf_counter() - t0
        caught_up, base = 0, snapshot
        for _ in range(CATCH_UP_ROUNDS):  # writes committed to the live index meanwhile, without the lock
            live.refresh()
            if live.manifest.get("build_id") != build_id:
                raise IndexRebuiltError(f"the index in {str(directory)!r} was rebuilt by another writer during the re-embed; "
                                 "nothing was switched")
            latest = documents(live.store)
            n = _apply(fresh, base, latest, batch_size=batch_size)
            caught_up, base = caught_up + n, latest
            if n == 0:
                break
        with live._lock, dirs.writer_lock(directory):
            t_lock = time.perf_counter()
            live._reload_locked(build_id)
            latest = documents(live.store)
            last = _apply(fresh, base, latest, batch_size=batch_size)
            tmp = dirs.new_tmp(directory)
            try:
                dirs.link_files(fresh.generation, tmp)
                manifest = dict(fresh.manifest, created_at=m.get("created_at", now()), updated_at=now(),
                                reembedded={"from": {k: old_enc.get(k) for k in ("model", "pooling", "max_length")},
                                            "from_build_id": build_id, "at": now(), "documents": len(latest),
                                            "writes_caught_up": caught_up + last})
                if session is not None:  # rows in the server: the new collection under the same alias
                    manifest.update(index=session.manifest_index(fresh.store), count=fresh.store.count(),
                                    documents=len(latest))
                write_manifest(tmp, manifest)
                gen = dirs.publish(directory, tmp)
                switched = True
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if session is not None:
                session.switched()
            locked_s = time.perf_counter() - t_lock
    except BaseException:
        if session is not None and not switched:
            session.discard()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    idx = cls.load(directory, encoder=encoder)
    summary = {"directory": str(directory), "generation": gen.name, "documents": len(idx),
               "model": str(encoder.model_name), "previous_model": str(old_enc.get("model")),
               "writes_caught_up": caught_up + last, "writes_under_lock": last, "build_seconds": round(built_s, 2),
               "lock_held_seconds": round(locked_s, 3), "seconds": round(time.perf_counter() - t0, 2),
               "reducer": reducer, "fusion_tuned_on": str(tune) if tune and "lexical" in desc else None}
    cal = m.get("calibration")
    if cal:
        pairs = cal.get("pairs_file")
        if recalibrate and pairs and Path(pairs).is_file():
            summary["calibration"] = idx.calibrate(pairs, method=cal.get("method", "isotonic"),
                                                   objective=cal.get("objective", "probability"))
        else:
            summary["calibration"] = None
            summary["calibration_dropped"] = (f"the calibration was fitted on the old model's scores and was not carried "
                                              f"over; run `embedkit calibrate {directory} PAIRS.tsv` again")
    if session is not None:
        summary["milvus"] = session.retire()  # the old collection, once no reader can still be on it
    return idx, summary
