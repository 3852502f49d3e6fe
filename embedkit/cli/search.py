"""``embedkit search``: query an index directory; a table or JSON lines on stdout."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from ..constants import RESULT_UNITS, SEARCH_MODES
from .options import backend_option

log = logging.getLogger("embedkit")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("queries", nargs=-1)
@click.option("-k", "--top-k", "k", type=int, default=10, show_default=True, help="Hits per query.")
@click.option("--queries-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also read queries from this file, one a line (empty lines skipped).")
@click.option("--filter", "filters", multiple=True, metavar="FIELD=VALUE",
              help="Metadata equality filter (repeatable; VALUE parsed as JSON when it can be).")
@click.option("--min-score", type=float, default=None, help="Drop hits scoring below this.")
@click.option("--min-probability", type=click.FloatRange(0, 1), default=None,
              help="Drop hits whose calibrated P(similar) is below this (needs `embedkit calibrate`).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout: one object per query.")
@click.option("--mode", type=click.Choice(SEARCH_MODES), default="dense", show_default=True,
              help="dense (vectors), lexical (BM25 over Chinese words) or hybrid (both, fused).")
@click.option("--unit", type=click.Choice(RESULT_UNITS), default="documents", show_default=True,
              help="documents: each document once, ranked by its best passage (shown); passages: the top-k "
                   "passages themselves (dense mode, an index built with passages).")
@backend_option()
@click.option("--device", default=None)
def search(directory: Path, queries: tuple[str, ...], k: int, queries_file: Path | None, filters: tuple[str, ...],
           min_score: float | None, min_probability: float | None, as_json: bool, mode: str, unit: str, backend: str,
           device: str | None):
    """Search the index in DIRECTORY for QUERIES (and/or --queries-file)."""
    from ..corpus import iter_corpus
    from ..errors import InputError
    from ..index import EmbedIndex

    qs = list(queries)
    if queries_file is not None:
        qs += [d.text for d in iter_corpus(queries_file, fmt="txt")]
    if not qs:
        raise click.UsageError("give at least one query (argument or --queries-file)")
    for q in qs:
        if not q.strip():
            raise InputError(f"query {q!r} is empty; queries must contain text")
    where = parse_filters(filters)
    idx = EmbedIndex.load(directory, backend=backend, device=device)
    idx.check_k(k)
    t0 = time.perf_counter()
    results = idx.search(qs, k, filter=where, min_score=min_score, mode=mode, min_probability=min_probability,
                         unit=unit)
    log.info("%d queries in %.1f ms", len(qs), (time.perf_counter() - t0) * 1000)
    for q, hits in zip(qs, results):
        if as_json:
            click.echo(json.dumps({"query": q, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False))
        else:
            click.echo(format_hits(q, hits))


def parse_filters(filters) -> dict | None:
    """``FIELD=VALUE`` strings to an equality filter; VALUE is parsed as JSON when it can be."""
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


def format_hits(query: str, hits) -> str:
    """The human-readable table of one query's hits."""
    lines = [f"query: {query}"]
    if not hits:
        lines.append("  (no hits)")
    for rank, h in enumerate(hits, 1):
        meta = f"  {json.dumps(h.metadata, ensure_ascii=False)}" if h.metadata else ""
        prob = "" if getattr(h, "probability", None) is None else \
            f"  p={h.probability:.2f}{' match' if h.match else ''}"
        p = getattr(h, "passage", None)
        if p is not None:  # a document's best passage, or (--unit passages) the passage itself
            where = f"passage {p['index']} [{p['start']}:{p['end']}]" + \
                ("" if h.text == p["text"] else f" of {len(h.text)} chars")
            lines.append(f"  {rank:>2}. {h.score:.4f}{prob}  [{h.id}]  {p['text']}  ({where}){meta}")
        else:
            lines.append(f"  {rank:>2}. {h.score:.4f}{prob}  [{h.id}]  {h.text}{meta}")
    return "\n".join(lines)
