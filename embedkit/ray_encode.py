"""Distributed encoding with Ray Data: corpus → actor pool of encoders → Parquet shards of (id, vector).

* Input: ``.txt`` / ``.jsonl`` / ``.tsv`` files (each file parsed by :func:`embedkit.corpus.iter_corpus`,
  so ids, empty-line skipping and UTF-8 checks are exactly those of a single-process run; the files
  must be readable at the same path on every node) or Parquet (a file or a directory of them, with
  ``id`` and ``text`` columns; read by Ray's Parquet reader, so object stores work too).
* Encoding: ``map_batches`` over an actor pool; each actor loads the model once (a GPU per actor when
  the cluster has GPUs) and, with ``index_dir``, applies that index's fitted reducer and metric — the
  index's own query path. A dead actor is restarted and its batch retried by Ray
  (``max_restarts``/``max_task_retries``); a block enters the output only once, when its task succeeds.
* Output: a new directory of Parquet shards (``id`` string, ``vector`` fixed-size list of float32, and
  ``text``/``metadata`` with ``keep_text``) plus ``_embedkit.json`` (count, dim, encoder, reducer).
  It is written beside the target and renamed into place only when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from .constants import CORPUS_FORMATS as TEXT_FORMATS
from .errors import EmbedkitError, InputError
from .ray_shards import FORMAT, SHARD_MANIFEST, read_shard_manifest, shard_batches

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = float(os.environ.get("EMBEDKIT_RAY_TIMEOUT", "10"))
LIGHT_TASK_CPUS = 0.25  # logical CPUs asked by the parse and write tasks
ROWS_PER_BLOCK_IN_BATCHES = 4  # rows per block handed to an actor, in batches


class RayError(EmbedkitError):
    """Ray could not be reached, or a distributed job failed (message names the address / input)."""


# ------------------------------------------------------------------------------------------------
# connecting
# ------------------------------------------------------------------------------------------------
def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayError("distributed encoding needs Ray Data: pip install 'embedkit[ray]'") from None
    return ray


def _probe(address: str, timeout: float) -> None:
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"Ray address {address!r} must be 'auto', 'local', host:port or ray://host:port")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise RayError(f"cannot reach Ray at {address!r} ({host}:{port}: {e.strerror or e}); start the cluster "
                       "(`ray start --head`) or pass --address local for a one-machine run") from None


def init_ray(address: str | None = None, *, num_cpus: int | None = None, timeout: float | None = None) -> bool:
    """Connect to (or start) Ray. Returns True when this call started it (the caller shuts it down).

    ``None``/``"local"``: a private local instance; ``"auto"``: the cluster this node belongs to;
    ``host:port`` / ``ray://host:port``: that cluster — probed first so a wrong address fails within
    ``timeout`` seconds instead of hanging."""
    ray = _ray()
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    if address not in (None, "", "local", "auto"):
        _probe(address, timeout)
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address in (None, "", "local"):
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except EmbedkitError:
        raise
    except Exception as e:
        raise RayError(f"cannot connect to Ray at {address!r}: {str(e).strip().splitlines()[0][:300]}") from None
    return True


# ------------------------------------------------------------------------------------------------
# the encoding actor
# ------------------------------------------------------------------------------------------------
class EncodeActor:
    """One per pool slot: loads the encoder (and reducer) once, then encodes batches."""

    def __init__(self, cfg: dict):
        import torch

        from .encoder import Encoder

        if cfg.get("threads"):
            torch.set_num_threads(int(cfg["threads"]))
        self.cfg = cfg
        self.encoder = Encoder(cfg["model"], pooling=cfg["pooling"], max_length=cfg["max_length"],
                               batch_size=cfg["batch_size"], device=cfg.get("device"))
        self.reducer = None
        if cfg.get("reducer_files"):
            from .reducers import Reducer

            with tempfile.TemporaryDirectory() as d:
                for name, data in cfg["reducer_files"].items():
                    Path(d, name).write_bytes(data)
                self.reducer = Reducer.load(d)

    def __call__(self, batch):
        import pyarrow as pa

        texts = batch.column("text").to_pylist()
        if self.reducer is not None:
            from .querypath import QueryPath

            vecs = QueryPath(self.encoder, self.reducer, self.cfg["metric"]).embed(
                texts, batch_size=self.cfg["batch_size"], show_progress_bar=False)
        else:
            vecs = self.encoder.encode(texts, normalize=self.cfg["normalize"], show_progress_bar=False)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        cols = {"id": batch.column("id"),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1])}
        if self.cfg.get("keep_text"):
            cols["text"] = batch.column("text")
            cols["metadata"] = batch.column("metadata")
        return pa.table(cols)


def _parse_file(row: dict, *, fmt, text_field, id_field, column, id_column, prefix: bool) -> list[dict]:
    from .corpus import iter_corpus

    path = row["path"]
    pre = f"{Path(path).name}:" if prefix else ""
    return [{"id": pre + d.id, "text": d.text,
             "metadata": None if d.metadata is None else json.dumps(d.metadata, ensure_ascii=False)}
            for d in iter_corpus(path, fmt=fmt, text_field=text_field, id_field=id_field, column=column,
                                 id_column=id_column)]


# ------------------------------------------------------------------------------------------------
# reading the corpus
# ------------------------------------------------------------------------------------------------
def detect_input(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in TEXT_FORMATS + ("parquet",):
            raise InputError(f"format {fmt!r} is not one of {', '.join(TEXT_FORMATS + ('parquet',))}")
        return fmt
    if path.is_dir() or path.suffix.lower() == ".parquet":
        return "parquet"
    from .corpus import detect_format

    return detect_format(path)


def read_corpus(path, *, fmt=None, text_field="text", id_field="id", column=None, id_column=None):
    """A Ray Dataset of rows {id, text, metadata (JSON string or null)}."""
    ray = _ray()
    path = Path(path)
    if not path.exists():
        raise InputError(f"corpus path {str(path)!r} does not exist")
    fmt = detect_input(path, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        first = path if path.is_file() else next(iter(sorted(path.rglob("*.parquet"))), None)
        if first is None:
            raise InputError(f"directory {str(path)!r} holds no .parquet files")
        names = pq.read_schema(first).names
        for f in (id_field, text_field):
            if f not in names:
                raise InputError(f"Parquet input {str(first)!r} has no column {f!r} (columns: {names}); choose "
                                 "them with --id-field / --text-field")
        ds = ray.data.read_parquet(str(path), num_cpus=LIGHT_TASK_CPUS).select_columns(
            [c for c in (id_field, text_field, "metadata") if c in names])

        def norm(batch, _has_meta="metadata" in names):
            import pyarrow as pa
            import pyarrow.compute as pc

            ids = pc.cast(batch.column(id_field), pa.string())
            meta = batch.column("metadata") if _has_meta else pa.nulls(batch.num_rows, pa.string())
            return pa.table({"id": ids, "text": batch.column(text_field), "metadata": pc.cast(meta, pa.string())})

        return ds.map_batches(norm, batch_format="pyarrow", num_cpus=LIGHT_TASK_CPUS)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file()
                                                  and p.suffix.lower().lstrip(".") in (fmt, "text", "ndjson"))
    if not files:
        raise InputError(f"directory {str(path)!r} holds no .{fmt} files")
    items = [{"path": str(f.resolve())} for f in files]
    return ray.data.from_items(items).flat_map(
        _parse_file, fn_kwargs={"fmt": fmt, "text_field": text_field, "id_field": id_field, "column": column,
                                "id_column": id_column, "prefix": len(files) > 1}, num_cpus=LIGHT_TASK_CPUS)


# ------------------------------------------------------------------------------------------------
# the job
# ------------------------------------------------------------------------------------------------
def encoder_config(*, model=None, pooling="model", max_length=64, batch_size=32, index_dir=None,
                   normalize=True, device=None) -> dict:
    """What every actor needs to rebuild the encode path (small, no model weights)."""
    from .models import resolve_model

    cfg = {"model": resolve_model(model), "pooling": pooling, "max_length": max_length,
           "batch_size": batch_size, "normalize": normalize, "device": device, "metric": None,
           "reducer_files": None, "reducer": None}
    if index_dir is not None:
        from .index import current_generation, read_manifest

        gen = current_generation(Path(index_dir))
        m = read_manifest(gen)
        enc = m["encoder"]
        cfg.update(model=model and resolve_model(model) or enc["model"], pooling=enc["pooling"],
                   max_length=enc["max_length"], metric=m["metric"], reducer=m["reducer"]["spec"],
                   reducer_files={p.name: p.read_bytes() for p in gen.iterdir() if p.name.startswith("reducer.")})
    return cfg


def encode_dataset(ds, cfg: dict, *, num_workers: int, batch_size: int, max_retries: int = 3):
    """``map_batches`` over an actor pool; GPUs are used when the cluster has them."""
    ray = _ray()
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    cpus = float(res.get("CPU", 1))
    workers = min(num_workers, gpus) if gpus else num_workers
    if gpus:
        per_actor = {"num_gpus": 1}
    else:  # leave a little CPU to the light parse/write tasks, or they could never be scheduled
        # Logical CPUs only schedule: actors get (cpus - 1) / workers so that one CPU stays free for
        # the read / list / write tasks (which ask for a whole CPU), else the pipeline could deadlock.
        per_actor = {"num_cpus": max(LIGHT_TASK_CPUS, (cpus - 1) / max(1, workers))}
        cfg = dict(cfg, threads=max(1, round(cpus / max(1, workers))), device=cfg.get("device") or "cpu")
    return ds.map_batches(EncodeActor, fn_constructor_kwargs={"cfg": cfg}, batch_size=batch_size,
                          batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
                          max_restarts=max_retries, max_task_retries=max_retries, **per_actor)


def encode_to_parquet(input, output, *, fmt=None, text_field="text", id_field="id", column=None, id_column=None,
                      model=None, pooling="model", max_length=64, batch_size=32, index_dir=None, normalize=True,
                      device=None, num_workers: int | None = None, address: str | None = None,
                      keep_text: bool = False, rows_per_file: int | None = None) -> dict:
    """Encode a corpus on Ray into a new directory of Parquet shards; returns the summary written to
    ``OUTPUT/_embedkit.json``."""
    output = Path(output)
    if output.exists():
        raise InputError(f"output {str(output)!r} already exists; choose a new directory for the shards")
    if num_workers is not None and num_workers <= 0:
        raise InputError(f"--num-workers must be positive, got {num_workers}")
    cfg = encoder_config(model=model, pooling=pooling, max_length=max_length, batch_size=batch_size,
                         index_dir=index_dir, normalize=normalize, device=device)
    cfg["keep_text"] = keep_text
    t0 = time.perf_counter()
    started = init_ray(address, num_cpus=num_workers if address in (None, "", "local") and num_workers else None)
    ray = _ray()
    t_ray = time.perf_counter() - t0
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        workers = num_workers or max(1, int(ray.cluster_resources().get("GPU", 0))
                                     or int(ray.cluster_resources().get("CPU", 1)))
        ds = read_corpus(input, fmt=fmt, text_field=text_field, id_field=id_field, column=column,
                         id_column=id_column)
        # one text file is parsed into one block: split it so that every actor gets work
        ds = ds.repartition(target_num_rows_per_block=batch_size * ROWS_PER_BLOCK_IN_BATCHES)
        ds = encode_dataset(ds, cfg, num_workers=workers, batch_size=batch_size)
        kw = {"min_rows_per_file": rows_per_file} if rows_per_file else {}
        try:
            ds.write_parquet(str(tmp / "shards"), ray_remote_args={"num_cpus": LIGHT_TASK_CPUS}, **kw)
        except EmbedkitError:
            raise
        except Exception as e:
            raise _job_error(e, input) from None
        files = sorted((tmp / "shards").glob("*.parquet"))
        count, dim = _count_rows(files)
        for f in files:  # flatten: OUTPUT/part-*.parquet
            os.replace(f, tmp / f.name)
        shutil.rmtree(tmp / "shards", ignore_errors=True)
        summary = {"format": FORMAT, "count": count, "dim": dim, "shards": len(files), "input": str(input),
                   "encoder": {"model": cfg["model"], "pooling": cfg["pooling"], "max_length": cfg["max_length"],
                               "dim": dim, "backend": "torch"},
                   "reducer": cfg["reducer"], "metric": cfg["metric"], "index": str(index_dir) if index_dir else None,
                   "normalized": bool(cfg["normalize"] or cfg["reducer_files"]), "with_text": keep_text,
                   "num_workers": workers, "seconds": round(time.perf_counter() - t0, 3),
                   "ray_start_seconds": round(t_ray, 3)}
        (tmp / SHARD_MANIFEST).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, output)
        summary["output"] = str(output)
        return summary
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if started:
            ray.shutdown()


def _job_error(e: Exception, input) -> EmbedkitError:
    """Ray wraps a worker's exception; surface an embedkit error from inside it as itself."""
    cause = e
    while cause is not None:
        if isinstance(cause, EmbedkitError):
            return cause
        cause = cause.__cause__ or getattr(cause, "cause", None)
    text = str(e)
    for cls in (InputError,):
        marker = f"{cls.__name__}: "
        if marker in text:
            return cls(text.split(marker, 1)[1].strip().splitlines()[0])
    return RayError(f"Ray encoding of {str(input)!r} failed: {text.strip().splitlines()[-1][:300]}")


def _count_rows(files) -> tuple[int, int | None]:
    import pyarrow.parquet as pq

    count, dim = 0, None
    for f in files:
        count += pq.read_metadata(f).num_rows
        if dim is None:
            t = pq.read_schema(f).field("vector").type
            dim = int(t.list_size)
    return count, dim


def build_index_with_ray(corpus, output, *, address=None, num_workers=None, batch_size=32, model=None,
                         pooling="model", max_length=64, device=None, corpus_kwargs=None, **build_kwargs):
    """``embedkit index build --engine ray``: raw vectors on Ray, then the usual streaming build
    (reducer fit, FAISS or Milvus) from the shards, which are removed afterwards. Returns the manifest."""
    from .index import EmbedIndex
    from .querypath import QueryPath
    from .reducers import make_reducer

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.ray-", dir=output.parent))
    try:
        shards = work / "vectors"
        encode_to_parquet(corpus, shards, model=model, pooling=pooling, max_length=max_length,
                          batch_size=batch_size, normalize=False, device=device, num_workers=num_workers,
                          address=address, keep_text=True, **(corpus_kwargs or {}))
        chunk = int(build_kwargs.pop("chunk_size", 4096))
        qp = QueryPath(None, make_reducer(build_kwargs.pop("reduce", "none")), build_kwargs.pop("metric", "cosine"),
                       encoder_config=read_shard_manifest(shards)["encoder"])
        idx = EmbedIndex.build_from_vectors(output, shard_batches(shards, chunk), query_path=qp, **build_kwargs)
        return dict(idx.manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
