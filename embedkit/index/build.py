"""Building an index directory: one entry over ``(documents, raw vectors)`` batches; building from
texts is a thin layer that encodes each chunk through the query path."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..corpus import Doc, chunked
from ..errors import InputError
from ..provenance import versions
from ..querypath import QueryPath
from ..reducers import Reducer, make_reducer
from ..stores import store_class, store_for_index
from . import directory as dirs
from .manifest import FORMAT, FORMAT_VERSION, now, write_manifest

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 4096          # documents encoded and added per step while streaming
DEFAULT_FIT_SAMPLE = 50_000   # documents the reducer is fitted on
METRICS = ("cosine", "ip", "l2")


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def check_docs(docs: list[Doc], seen: set[str], *, rows: bool = False) -> None:
    """Ids, texts and metadata of documents (``rows``: of store rows, where a later passage of a document
    has an empty text and an id with U+001F; see :mod:`embedkit.index.passages`)."""
    from .passages import check_user_docs, is_document_row
    from ..validate import check_metadata, check_utf8

    if not rows:
        check_user_docs(docs)
    for d in docs:
        if not isinstance(d.id, str) or not d.id:
            raise InputError(f"document id {_short(d.id)} must be a non-empty string")
        if not isinstance(d.text, str):
            raise InputError(f"the text of document {d.id!r} is a {type(d.text).__name__} ({_short(d.text)}); "
                             "texts are strings")
        if not d.text.strip() and not (rows and not is_document_row(d.id)):
            raise InputError(f"document {d.id!r} has empty text")
        check_utf8(f"document id {d.id!r}", d.id)
        check_utf8(f"the text of document {d.id!r}", d.text)
        check_metadata(d.id, d.metadata)
        if d.id in seen:
            raise InputError(f"duplicate id {d.id!r}; ids must be unique")
        seen.add(d.id)


def build_index(cls, directory, docs: Iterable[Doc], *, encoder=None, model: str | None = None,
                pooling: str = "model", max_length: int = 64, normalize: str = "none",
                chunk_size: int = DEFAULT_CHUNK, batch_size: int | None = None,
                show_progress_bar: bool | None = None, runtime: str = "torch", device: str | None = None,
                expected_size: int | None = None, split: str = "passages", passage_tokens: int | None = None,
                passage_overlap: int | None = None, **options):
    """Encode ``docs`` chunk by chunk and build. ``split``: ``passages`` (a document longer than the
    encoder's window becomes passages of at most ``passage_tokens`` tokens, ``passage_overlap`` of them
    shared with the previous one, by default half; see :mod:`embedkit.textsplit`) or ``truncate`` (read up to
    ``max_length`` tokens). ``options``: see :func:`build_from_batches`."""
    from ..encoder import Encoder
    from ..textsplit import PassageSplitter
    from .passages import expand

    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    _check_options(options)
    normalizer = None
    if normalize not in (None, "none"):
        from ..textnorm import TextNormalizer

        normalizer = TextNormalizer(normalize)
    encoder = encoder or Encoder(model, pooling=pooling, max_length=max_length, backend=runtime, device=device)
    splitter = PassageSplitter(split, passage_tokens, passage_overlap).validate()
    qp = QueryPath(encoder, make_reducer(options.pop("reduce", "none")), options.pop("metric", "cosine"),
                   normalizer=normalizer, splitter=splitter)
    bound = qp.passage_splitter()
    if expected_size is None and hasattr(docs, "__len__"):
        expected_size = len(docs)
    # recorded in the manifest, filled in while the build streams (the manifest is written after the last chunk)
    counts = dict(qp.describe_split(), split_documents=0, truncated_documents=0)

    def batches():
        for chunk in chunked(docs, chunk_size):
            check_docs(chunk, set())
            ex = expand(chunk, bound)
            counts["split_documents"] += ex.split
            counts["truncated_documents"] += ex.truncated
            yield ex.rows, qp.encode_raw(ex.texts, batch_size=batch_size, show_progress_bar=show_progress_bar)

    extra = dict(options.pop("extra_manifest", None) or {})
    extra["passages"] = counts
    idx = build_from_batches(cls, directory, batches(), query_path=qp, expected_size=expected_size,
                             extra_manifest=extra, passage_rows=True, **options)
    warn_truncated(counts["truncated_documents"], idx.manifest.get("documents"), bound)
    return idx


def warn_truncated(n: int, total, splitter) -> None:
    """The one warning for documents cut at the window (split mode ``truncate``)."""
    if n and splitter is not None:
        log.warning("%d of %s documents are longer than the encoder's window (%d tokens) and were cut: the text "
                    "beyond it is not searched; use --split passages to read them whole", n, total,
                    splitter.max_tokens_)


def _check_options(options: dict) -> None:
    metric = options.get("metric", "cosine")
    if metric not in METRICS:
        raise InputError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    fs = options.get("fit_sample", DEFAULT_FIT_SAMPLE)
    if not isinstance(fs, int) or fs <= 0:
        raise InputError(f"fit_sample must be a positive integer, got {fs!r}")


def build_from_batches(cls, directory, batches: Iterator, *, query_path: QueryPath | None = None,
                       encoder=None, reduce: str | Reducer = "none", metric: str = "cosine",
                       index: str = "flat", index_params: dict | None = None, fit_sample: int = DEFAULT_FIT_SAMPLE,
                       expected_size: int | None = None, overwrite: bool = False, final_vectors: bool = False,
                       extra_manifest: dict | None = None, lexical: bool = False, tune_pairs=None,
                       passage_rows: bool = False):
    """Build a new index directory from ``(documents, raw encoder vectors)`` batches.

    The reducer is fitted on the first ``fit_sample`` documents; an IVF quantizer is sized for
    ``expected_size`` documents (≈ 4·√N lists) and trained on enough leading documents for that
    (39 per list), falling back to what the stream provides. With ``final_vectors`` the vectors
    already went through the query path's (fitted) reducer: nothing is fitted or projected.
    ``passage_rows``: the batches hold store rows of documents split into passages
    (:mod:`embedkit.index.passages`)."""
    from .passages import is_document_row

    _check_options({"metric": metric, "fit_sample": fit_sample})
    if query_path is None:
        if encoder is None:
            raise InputError("build_from_vectors needs the query path (or the encoder) the vectors came from")
        query_path = QueryPath(encoder, make_reducer(reduce), metric)
    qp = query_path
    directory = Path(directory)
    store_name = store_for_index(index)
    store_cls = store_class(store_name)
    if hasattr(store_cls, "preflight"):
        store_cls.preflight(index, directory, index_params)
    if lexical and not getattr(store_cls, "LOCAL", False):
        raise InputError(f"lexical and hybrid search need a FAISS-backed index, not --index {index!r}")
    prepare_build_dir(directory, overwrite)
    from ..stores.faiss_backend import train_size_for

    want = max(fit_sample, train_size_for(index, expected_size or 0))
    t0 = time.perf_counter()
    tmp = dirs.new_tmp(directory)
    builder = None
    try:
        sample_docs, sample_raw, rest = _take_sample(batches, want, passage_rows)
        if final_vectors:
            sample_vecs = sample_raw
        else:
            if qp.reducer.kind == "auto":  # chooses itself on labelled pairs (an error says how to give them)
                qp.reducer.fit(sample_raw[:fit_sample], tune=_tuning_vectors(qp, tune_pairs))
            else:
                qp.reducer.fit(sample_raw[:fit_sample])
            sample_vecs = qp.project(sample_raw)
        del sample_raw
        project = (lambda x: np.asarray(x, dtype=np.float32)) if final_vectors else qp.project
        builder = store_cls.create(directory, tmp=tmp, index=index, dim=qp.reducer.output_dim, metric=qp.metric,
                                   n_train=len(sample_docs), expected_size=max(expected_size or 0, len(sample_docs)),
                                   params=index_params, overwrite=overwrite, **({"lexical": True} if lexical else {}))
        if builder.needs_training:
            log.info("training %s on %d vectors", index, len(sample_docs))
            builder.train(sample_vecs)
        builder.add(sample_docs, sample_vecs)
        n = len(sample_docs)
        n_docs = sum(map(is_document_row, seen := {d.id for d in sample_docs}))
        for chunk, raw in rest:
            check_docs(chunk, seen, rows=passage_rows)
            builder.add(chunk, project(raw))
            n += len(chunk)
            n_docs += sum(is_document_row(d.id) for d in chunk)
        desc = builder.finish()
        qp.reducer.save(tmp)
        enc_cfg = dict(qp.encoder_config)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "created_at": now(), "updated_at": now(),
            "build_id": uuid.uuid4().hex, "encoder": enc_cfg,
            "normalize": getattr(qp.normalizer, "spec", "none") if qp.normalizer is not None else "none",
            "reducer": {"spec": qp.reducer.spec, "dim_in": qp.reducer.n_features_in_,
                        "dim_out": qp.reducer.output_dim, "fitted_on": qp.reducer.n_samples_fit_,
                        **({"auto": qp.reducer.describe(), "tuned_on": str(tune_pairs)}
                           if qp.reducer.kind == "auto" else {})},
            "index": desc, "metric": qp.metric, "dim": qp.reducer.output_dim, "count": n, "documents": n_docs, "next_iid": n,
            "expected_size": expected_size, "versions": versions(store_name),
            "build_seconds": round(time.perf_counter() - t0, 3),
        }
        if lexical:
            from .hybrid import default_fusion, tune_fusion

            manifest["fusion"] = tune_fusion(qp, tune_pairs) if tune_pairs else default_fusion()
        manifest.update(extra_manifest or {})
        write_manifest(tmp, manifest)
        with dirs.writer_lock(directory):
            if not overwrite and (directory / dirs.CURRENT).exists():
                raise InputError(f"{str(directory)!r} already holds an index (another build finished first); use "
                                 "--overwrite to replace it")
            gen = dirs.publish(directory, tmp)
            key = dirs.current_key(directory)
        if hasattr(builder, "published"):
            builder.published()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if builder is not None:
            builder.abort()
        raise
    log.info("built %s: %d documents (%d rows), %s, %s, dim %d, %.1fs", directory, n_docs, n, qp.reducer.spec,
             desc.get("factory"), manifest["dim"], manifest["build_seconds"])
    from .opening import _open_store

    return cls(directory, manifest, qp, _open_store(directory, gen, manifest), gen, key)


def _tuning_vectors(qp: QueryPath, tune_pairs):
    """(raw vectors of sentence1, of sentence2, labels) of a labelled pairs file, for ``auto``."""
    if tune_pairs is None:
        return None
    from ..calibration import read_labelled_pairs

    pairs = read_labelled_pairs(tune_pairs)
    raw = qp.encode_raw(list(pairs.sentences1) + list(pairs.sentences2), show_progress_bar=False)
    n = len(pairs.sentences1)
    return raw[:n], raw[n:], np.asarray(pairs.scores, dtype=np.float64)


def _take_sample(batches: Iterator, want: int, rows: bool = False):
    """The leading ``want`` documents (at least one chunk) and their raw vectors, plus the rest."""
    batches = iter(batches)
    docs: list[Doc] = []
    raws: list[np.ndarray] = []
    seen: set[str] = set()
    for chunk, raw in batches:
        check_docs(chunk, seen, rows=rows)
        if len(chunk) != len(raw):
            raise InputError(f"got {len(chunk)} documents but {len(raw)} vectors")
        docs += chunk
        raws.append(np.asarray(raw, dtype=np.float32))
        if len(docs) >= want:
            break
    if not docs:
        raise InputError("no documents to index")
    return docs, np.concatenate(raws), batches


def prepare_build_dir(directory: Path, overwrite: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise InputError(f"output path {str(directory)!r} exists and is not a directory")
    if directory.is_dir():
        if (directory / dirs.CURRENT).exists():
            if not overwrite:
                raise InputError(f"{str(directory)!r} already holds an index; use --overwrite to replace "
                                 "it or `embedkit index add` to extend it")
        else:
            stray = [p.name for p in directory.iterdir() if not p.name.startswith((".tmp-gen-", f".{dirs.CURRENT}."))
                     and not dirs.GEN.match(p.name) and p.name not in (dirs.LOCK, "milvus.db")]  # (a crashed build's)
            if stray:
                raise InputError(f"output directory {str(directory)!r} is not empty and is not an embedkit "
                                 f"index (it contains {stray[:3]}); choose a new directory")
    directory.mkdir(parents=True, exist_ok=True)
