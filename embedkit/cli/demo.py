"""``embedkit demo``: build an index over the bundled Chinese corpus and run a few queries."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..constants import INDEX_HELP
from .search import format_hits


@click.command()
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("indexes/demo"),
              show_default=True)
@click.option("--reduce", default="none", show_default=True)
@click.option("--index", "index_type", default="hnsw", show_default=True, help=INDEX_HELP)
@click.option("-k", "--top-k", "k", type=int, default=3, show_default=True)
@click.option("--model", "-m", default=None, envvar="EMBEDKIT_MODEL")
def demo(output: Path, reduce: str, index_type: str, k: int, model: str | None):
    """Build an index over the bundled Chinese demo corpus and run a few queries."""
    from importlib.resources import files

    from ..corpus import iter_corpus
    from ..index import EmbedIndex

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
        click.echo(format_hits(q, hits))
    click.echo(f"{len(queries)} queries, {ms:.1f} ms per query (encode + search)")
    click.echo(f"next: embedkit search {output} \"你的问题\" -k 5")
