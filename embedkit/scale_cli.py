"""CLI pieces for scaling out: ``--engine ray`` options, ``--milvus-*`` options, ``index migrate``.

Only click is imported here; Ray, pymilvus and torch load inside the command bodies."""

from __future__ import annotations

import json
from pathlib import Path

import click


def engine_options(f):
    f = click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="ray: encode on a Ray cluster (Ray Data actor pool; output is Parquet shards).")(f)
    f = click.option("--address", default=None, envvar="RAY_ADDRESS",
                     help="ray: 'auto' (this node's cluster), host:port, ray://host:port; default: a local "
                          "Ray started for this job.")(f)
    f = click.option("--num-workers", type=click.IntRange(min=1), default=None,
                     help="ray: encoder actors (default: one per GPU, else one per CPU).")(f)
    return f


def milvus_options(f):
    f = click.option("--milvus-uri", default=None, envvar="EMBEDKIT_MILVUS_URI",
                     help="--index milvus[:TYPE]: a Milvus Lite file (*.db, default OUTPUT/milvus.db) or "
                          "http://host:19530. Credentials: MILVUS_TOKEN or MILVUS_USER/MILVUS_PASSWORD.")(f)
    f = click.option("--milvus-collection", default=None,
                     help="Milvus collection name (default: embedkit_<output dir name>).")(f)
    return f


def milvus_params(params: dict, uri, collection) -> dict:
    out = dict(params)
    if uri:
        out["uri"] = uri
    if collection:
        out["collection"] = collection
    return out


def ray_encode(input, output, index_dir, no_normalize, fmt, text_field, id_field, column, id_column, model,
               pooling, max_length, batch_size, device, backend, address, num_workers) -> None:
    """``embedkit encode --engine ray``: OUTPUT is a new directory of Parquet shards."""
    from .ray_encode import encode_to_parquet

    if backend != "torch":
        raise click.BadParameter("--engine ray encodes with the torch backend", param_hint="--backend")
    summary = encode_to_parquet(input, output, fmt=fmt, text_field=text_field, id_field=id_field, column=column,
                                id_column=id_column, model=model, pooling=pooling, max_length=max_length,
                                batch_size=batch_size, index_dir=index_dir, normalize=not no_normalize,
                                device=device, num_workers=num_workers, address=address)
    click.echo(json.dumps(summary, ensure_ascii=False))


def ray_build(corpus, output, *, address, num_workers, batch_size, model, pooling, max_length, device,
              corpus_kwargs, **build_kwargs) -> None:
    """``embedkit index build --engine ray``: vectors on Ray, streamed from the shards into the index."""
    from .ray_encode import build_index_with_ray

    m = build_index_with_ray(corpus, output, address=address, num_workers=num_workers, batch_size=batch_size,
                             model=model, pooling=pooling, max_length=max_length, device=device,
                             corpus_kwargs=corpus_kwargs, **build_kwargs)
    click.echo(json.dumps({"index": str(output), "count": m["count"], "dim": m["dim"],
                           "reducer": m["reducer"]["spec"], "factory": m["index"]["factory"],
                           "metric": m["metric"], "engine": "ray"}, ensure_ascii=False))


@click.command("migrate")
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("--index", "index_type", default="milvus", show_default=True,
              help="milvus | milvus:ivf-flat | milvus:hnsw | milvus:autoindex")
@milvus_options
@click.option("--overwrite", is_flag=True, help="Replace an existing index at DST (and its collection).")
def migrate_cmd(src, dst, index_type, milvus_uri, milvus_collection, overwrite):
    """Copy the FAISS index SRC into a new Milvus-backed index directory DST.

    Model, reducer and metric are kept; vectors are read back from FAISS (flat, HNSW, IVF-flat) or
    re-encoded from the stored texts (PQ/SQ codes are lossy)."""
    from .milvus_backend import is_milvus_kind
    from .milvus_index import migrate

    if not is_milvus_kind(index_type):
        raise click.BadParameter(f"{index_type!r} is not a Milvus index type", param_hint="--index")
    idx = migrate(src, dst, index=index_type, index_params=milvus_params({}, milvus_uri, milvus_collection),
                  overwrite=overwrite)
    m = idx.manifest
    click.echo(json.dumps({"index": str(dst), "count": m["count"], "collection": m["index"]["collection"],
                           "uri": m["index"]["uri"], "factory": m["index"]["factory"],
                           "vectors": m["migrated_from"]["vectors"]}, ensure_ascii=False))
