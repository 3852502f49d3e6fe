"""CLI commands: encode, index build/add/delete/info, search, demo.

Heavy libraries (torch, faiss) are imported inside the command bodies, never at module level."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from .scale_cli import engine_options, milvus_options, milvus_params, migrate_cmd

log = logging.getLogger("embedkit")

POOLING_CHOICES = ["model", "cls", "pooler", "last-avg", "first-last-avg"]
INDEX_HELP = ("flat | hnsw | ivf-flat | ivf-pq, or a FAISS factory string (e.g. 'IVF256,PQ32'); "
              "milvus[:flat|ivf-flat|hnsw|autoindex] for a Milvus collection (see --milvus-uri).")


def corpus_options(f):
    f = click.option("--format", "fmt", type=click.Choice(["txt", "jsonl", "tsv"]), default=None,
                     help="Input format (default: from the file extension; .txt otherwise).")(f)
    f = click.option("--text-field", default="text", show_default=True, help="jsonl: field holding the text.")(f)
    f = click.option("--id-field", default="id", show_default=True,
                     help="jsonl: field holding the id (default: the line number).")(f)
    f = click.option("--column", default=None, help="tsv: text column, a 0-based number or a header name.")(f)
    f = click.option("--id-column", default=None, help="tsv: id column (number or header name).")(f)
    return f


def encoder_options(f):
    f = click.option("--model", "-m", default=None, envvar="EMBEDKIT_MODEL", show_envvar=True,
                     help="Model directory or hub id (default: m3e-small, see README).")(f)
    f = click.option("--pooling", type=click.Choice(POOLING_CHOICES), default="model", show_default=True)(f)
    f = click.option("--max-length", type=click.IntRange(min=1), default=64, show_default=True)(f)
    f = click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)(f)
    f = click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available).")(f)
    f = click.option("--backend", type=click.Choice(["torch", "onnx", "onnx-int8"]), default="torch",
                     show_default=True, help="Execution backend (onnx: exported once, cached).")(f)
    return f


def _iter_docs(path, fmt, text_field, id_field, column, id_column, stats=None):
    from .corpus import iter_corpus

    return iter_corpus(path, fmt=fmt, text_field=text_field, id_field=id_field, column=column,
                       id_column=id_column, stats=stats)


def _make_encoder(model, pooling, max_length, batch_size, device, backend):
    from .encoder import Encoder

    return Encoder(model, pooling=pooling, max_length=max_length, batch_size=batch_size, device=device,
                   backend=backend)


# ------------------------------------------------------------------------------------------------
@click.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Output .npy (float32 vectors); ids go to OUTPUT with suffix .ids.json. "
                   "--engine ray: a new directory of Parquet shards (id, vector).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Encode through an index's query path (its model, pooling, reducer, metric).")
@click.option("--no-normalize", is_flag=True, help="Keep raw vectors (no L2 normalisation).")
@corpus_options
@encoder_options
@engine_options
def encode(input, output, index_dir, no_normalize, fmt, text_field, id_field, column, id_column,
           model, pooling, max_length, batch_size, device, backend, engine, address, num_workers):
    """Encode INPUT (.txt one sentence a line, .jsonl, .tsv) into OUTPUT.npy plus OUTPUT.ids.json."""
    import numpy as np

    if engine == "ray":  # also reads Parquet; see embedkit/ray_encode.py
        from .scale_cli import ray_encode

        return ray_encode(input, output, index_dir, no_normalize, fmt, text_field, id_field, column, id_column,
                          model, pooling, max_length, batch_size, device, backend, address, num_workers)

    from .corpus import CorpusStats
    from .fsutil import atomic_write, atomic_write_json

    if output.suffix != ".npy":
        raise click.BadParameter(f"{str(output)!r} must end in .npy", param_hint="--output")
    stats = CorpusStats()
    docs = list(_iter_docs(input, fmt, text_field, id_field, column, id_column, stats))
    t0 = time.perf_counter()
    texts = [d.text for d in docs]
    if index_dir is not None:
        from .index import EmbedIndex

        idx = EmbedIndex.load(index_dir, backend=backend, device=device)
        vecs = idx.embed(texts, batch_size=batch_size)
    else:
        enc = _make_encoder(model, pooling, max_length, batch_size, device, backend)
        vecs = enc.encode(texts, normalize=not no_normalize)
    dt = time.perf_counter() - t0
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda f: np.save(f, vecs, allow_pickle=False))
    ids_path = output.with_suffix(".ids.json")
    atomic_write_json(ids_path, [d.id for d in docs])
    log.info("%s; encoded in %.1fs (%.0f sentences/s)", stats.summary(), dt, len(docs) / max(dt, 1e-9))
    click.echo(json.dumps({"vectors": str(output), "ids": str(ids_path), "count": len(docs),
                           "dim": int(vecs.shape[1]), "skipped_empty": len(stats.skipped_empty)},
                          ensure_ascii=False))


# ------------------------------------------------------------------------------------------------
@click.group()
def index():
    """Build, extend, shrink and inspect index directories."""


@index.command("build")
@click.argument("corpus", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Index directory to create (e.g. indexes/my-index).")
@click.option("--reduce", default="none", show_default=True,
              help="none | whitening:K | pca:K | jl:K | jl:auto (fitted on the first --fit-sample docs).")
@click.option("--index", "index_type", default="flat", show_default=True, help=INDEX_HELP)
@click.option("--metric", type=click.Choice(["cosine", "ip", "l2"]), default="cosine", show_default=True)
@click.option("--ef-search", type=click.IntRange(min=1), default=None, help="hnsw: efSearch (default tuned).")
@click.option("--nprobe", type=click.IntRange(min=1), default=None, help="ivf-*: nprobe (default tuned).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Documents encoded and added per streaming step (bounds memory).")
@click.option("--fit-sample", type=click.IntRange(min=2), default=50000, show_default=True,
              help="Documents the reducer and IVF quantizer are fitted on.")
@click.option("--overwrite", is_flag=True, help="Replace an existing index at OUTPUT.")
@corpus_options
@encoder_options
@engine_options
@milvus_options
def index_build(corpus, output, reduce, index_type, metric, ef_search, nprobe, chunk_size, fit_sample,
                overwrite, fmt, text_field, id_field, column, id_column, model, pooling, max_length,
                batch_size, device, backend, engine, address, num_workers, milvus_uri, milvus_collection):
    """Build an index directory from CORPUS."""
    from .corpus import CorpusStats
    from .index import EmbedIndex
    from .reducers import make_reducer

    make_reducer(reduce)  # validate before loading the model
    params = {k: v for k, v in (("efSearch", ef_search), ("nprobe", nprobe)) if v is not None}
    if index_type == "milvus" or index_type.startswith("milvus:"):
        params = milvus_params(params, milvus_uri, milvus_collection)
        from .milvus_backend import preflight

        preflight(index_type, output, params)  # an unreachable server fails before the model loads
    elif milvus_uri or milvus_collection:
        raise click.BadParameter("--milvus-uri/--milvus-collection need --index milvus[:TYPE]",
                                 param_hint="--milvus-uri")
    if engine == "ray":
        from .scale_cli import ray_build

        return ray_build(corpus, output, address=address, num_workers=num_workers, batch_size=batch_size,
                         model=model, pooling=pooling, max_length=max_length, device=device,
                         corpus_kwargs={"fmt": fmt, "text_field": text_field, "id_field": id_field,
                                        "column": column, "id_column": id_column},
                         reduce=reduce, index=index_type, metric=metric, index_params=params,
                         chunk_size=chunk_size, fit_sample=fit_sample, overwrite=overwrite)
    stats = CorpusStats()
    enc = _make_encoder(model, pooling, max_length, batch_size, device, backend)
    idx = EmbedIndex.build(output, _iter_docs(corpus, fmt, text_field, id_field, column, id_column, stats),
                           encoder=enc, reduce=reduce, index=index_type, metric=metric, index_params=params,
                           chunk_size=chunk_size, fit_sample=fit_sample, overwrite=overwrite)
    log.info(stats.summary())
    click.echo(json.dumps(_summary(idx), ensure_ascii=False))


index.add_command(migrate_cmd)


@index.command("add")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("corpus", type=click.Path(dir_okay=False, path_type=Path))
@corpus_options
@click.option("--backend", type=click.Choice(["torch", "onnx", "onnx-int8"]), default="torch")
@click.option("--device", default=None)
def index_add(directory, corpus, fmt, text_field, id_field, column, id_column, backend, device):
    """Add the documents of CORPUS to the index in DIRECTORY (ids must be new)."""
    from .corpus import CorpusStats
    from .index import EmbedIndex

    stats = CorpusStats()
    idx = EmbedIndex.load(directory, backend=backend, device=device)
    n = idx.add(_iter_docs(corpus, fmt, text_field, id_field, column, id_column, stats))
    log.info("%s; added %d", stats.summary(), n)
    click.echo(json.dumps(dict(_summary(idx), added=n), ensure_ascii=False))


@index.command("delete")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("ids", nargs=-1, required=True)
def index_delete(directory, ids):
    """Delete documents by id (all or nothing: an unknown id deletes none)."""
    from .index import EmbedIndex

    idx = EmbedIndex.load(directory, encoder=_NoEncoder.for_index(directory))
    n = idx.delete(ids)
    click.echo(json.dumps(dict(_summary(idx), deleted=n), ensure_ascii=False))


@index.command("info")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def index_info(directory):
    """Print an index's manifest (model, pooling, reducer, metric, FAISS factory, count...) as JSON."""
    from .index import current_generation, dir_size, read_manifest

    gen = current_generation(Path(directory))
    info = dict(read_manifest(gen), directory=str(directory), generation=gen.name, size_bytes=dir_size(gen))
    click.echo(json.dumps(info, ensure_ascii=False, indent=2))


def _summary(idx) -> dict:
    m = idx.manifest
    return {"index": str(idx.directory), "count": m["count"], "dim": m["dim"], "reducer": m["reducer"]["spec"],
            "factory": m["index"]["factory"], "metric": m["metric"], "size_bytes": idx.info()["size_bytes"]}


class _NoEncoder:
    """Stands in for the encoder where a command needs no encoding (delete): skips loading the model."""

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def for_index(cls, directory):
        from .index import current_generation, read_manifest

        return cls(read_manifest(current_generation(Path(directory)))["encoder"])

    def describe(self):
        return dict(self.cfg)


# ------------------------------------------------------------------------------------------------
@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("queries", nargs=-1)
@click.option("-k", "--top-k", "k", type=int, default=10, show_default=True, help="Hits per query.")
@click.option("--queries-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also read queries from this file, one a line (empty lines skipped).")
@click.option("--filter", "filters", multiple=True, metavar="FIELD=VALUE",
              help="Metadata equality filter (repeatable; VALUE parsed as JSON when it can be).")
@click.option("--min-score", type=float, default=None, help="Drop hits scoring below this.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout: one object per query.")
@click.option("--backend", type=click.Choice(["torch", "onnx", "onnx-int8"]), default="torch")
@click.option("--device", default=None)
def search(directory, queries, k, queries_file, filters, min_score, as_json, backend, device):
    """Search the index in DIRECTORY for QUERIES (and/or --queries-file)."""
    from .corpus import iter_corpus
    from .errors import InputError
    from .index import EmbedIndex

    qs = list(queries)
    if queries_file is not None:
        qs += [d.text for d in iter_corpus(queries_file, fmt="txt")]
    if not qs:
        raise click.UsageError("give at least one query (argument or --queries-file)")
    for q in qs:
        if not q.strip():
            raise InputError(f"query {q!r} is empty; queries must contain text")
    where = _parse_filters(filters)
    idx = EmbedIndex.load(directory, backend=backend, device=device)
    idx.check_k(k)
    t0 = time.perf_counter()
    results = idx.search(qs, k, filter=where, min_score=min_score)
    log.info("%d queries in %.1f ms", len(qs), (time.perf_counter() - t0) * 1000)
    for q, hits in zip(qs, results):
        if as_json:
            click.echo(json.dumps({"query": q, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False))
        else:
            click.echo(_format_hits(q, hits))


def _parse_filters(filters) -> dict | None:
    where = {}
    for f in filters:
        field, eq, value = f.partition("=")
        if not eq or not field:
            raise click.BadParameter(f"{f!r} is not FIELD=VALUE", param_hint="--filter")
        try:
            where[field] = json.loads(value)
        except json.JSONDecodeError:
            where[field] = value
    return where or None


def _format_hits(query: str, hits) -> str:
    lines = [f"query: {query}"]
    if not hits:
        lines.append("  (no hits)")
    for rank, h in enumerate(hits, 1):
        meta = f"  {json.dumps(h.metadata, ensure_ascii=False)}" if h.metadata else ""
        lines.append(f"  {rank:>2}. {h.score:.4f}  [{h.id}]  {h.text}{meta}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
@click.command()
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("indexes/demo"),
              show_default=True)
@click.option("--reduce", default="none", show_default=True)
@click.option("--index", "index_type", default="hnsw", show_default=True, help=INDEX_HELP)
@click.option("-k", "--top-k", "k", type=int, default=3, show_default=True)
@click.option("--model", "-m", default=None, envvar="EMBEDKIT_MODEL")
def demo(output, reduce, index_type, k, model):
    """Build an index over the bundled Chinese demo corpus and run a few queries."""
    from importlib.resources import files

    from .corpus import iter_corpus
    from .index import EmbedIndex

    data = files("embedkit") / "data"
    corpus = Path(str(data / "demo_zh.jsonl"))
    t0 = time.perf_counter()
    idx = EmbedIndex.build(output, iter_corpus(corpus), model=model, reduce=reduce, index=index_type,
                           overwrite=True)
    build_s = time.perf_counter() - t0
    click.echo(f"built {output}: {len(idx)} documents, {idx.manifest['index']['factory']}, "
               f"reducer {idx.manifest['reducer']['spec']}, dim {idx.dim}, "
               f"{idx.info()['size_bytes'] / 1024:.0f} KiB, {build_s:.1f}s")
    queries = [q for q in Path(str(data / "demo_queries.txt")).read_text(encoding="utf-8").splitlines()
               if q.strip()][:5]
    t0 = time.perf_counter()
    results = idx.search(queries, k)
    ms = (time.perf_counter() - t0) * 1000 / len(queries)
    for q, hits in zip(queries, results):
        click.echo(_format_hits(q, hits))
    click.echo(f"{len(queries)} queries, {ms:.1f} ms per query (encode + search)")
    click.echo(f"next: embedkit search {output} \"你的问题\" -k 5")
