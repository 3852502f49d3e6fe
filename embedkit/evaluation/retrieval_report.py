"""``results.json``, ``report.md`` and ``report.html`` for a retrieval evaluation (the same files and
page layout as the STS report), and :func:`retrieval_eval`, the logic of ``embedkit eval --retrieval``."""

from __future__ import annotations

import base64
import html
import json
import os
import time
from pathlib import Path

from ..fsutil import atomic_write_bytes
from .plots import _png
from .report import _CSS, _JS, _html_table
from .tables import fmt, jsonable
from .tables import md_table as _md_table

HEADER = ["task", "reducer", "index", "mode", "w", "MRR@10", "R@1", "R@10", "nDCG@10", "bytes/vec",
          "ANN R@10", "p50 ms"]


def retrieval_table(results: dict, split: str) -> tuple[list[str], list[list[str]]]:
    """One row per grid row of ``split`` (metrics x 100)."""
    rows = []
    for r in results["rows"]:
        if r["split"] != split:
            continue
        if r.get("error"):
            rows.append([r["task"], r.get("reducer") or "—", r.get("index") or "—", r["mode"], "",
                         f"error: {r['error'][:60]}"] + [""] * 6)
            continue
        bpv = r.get("bytes_per_vector")
        ann = r.get("recall_vs_exact@10")
        rows.append([r["task"], r.get("reducer") or "—", r.get("index") or "—", r["mode"],
                     "" if r.get("weight") is None else f"{r['weight']:.1f}",
                     fmt(r["mrr@10"]), fmt(r["recall@1"]), fmt(r["recall@10"]), fmt(r["ndcg@10"]),
                     "—" if bpv is None else f"{bpv:.0f}", "—" if ann is None else f"{ann:.3f}",
                     f"{r['p50_ms']:.3f}"])
    return HEADER, rows


def _splits(results: dict) -> list[str]:
    return list(dict.fromkeys(r["split"] for r in results["rows"]))


def _intro(results: dict) -> list[str]:
    s = results["settings"]
    cap = f" Queries capped at the first {s['max_queries']} per split." if s.get("max_queries") else ""
    lim = f" Only the first {s['limit']} pairs of each split." if s.get("limit") else ""
    tune = f" Hybrid weight tuned by MRR@10 on the {s['tune_split']} split." if s.get("tune_split") else ""
    return [f"Protocol: {results['protocol']}.",
            (f"Tasks {', '.join(s['tasks'])}; splits {', '.join(s['splits'])}; reducers fitted on "
            f"{s['reducer_fit']}; {s['depth']} candidates per side before fusion (RRF k={s['rrf_k']}).{tune}"
            f"{cap}{lim}"),
            ("Metrics × 100 (ir-measures / trec_eval). bytes/vec: serialised FAISS index / vectors. "
            "ANN R@10: the index's top 10 against exact numpy search. p50: one query at a time, "
            "encoding excluded.")]


def render_markdown(results: dict) -> str:
    out = ["# embedkit retrieval evaluation", "", *_intro(results), ""]
    for split in _splits(results):
        h, rows = retrieval_table(results, split)
        out += [f"## {split} split", "", _md_table(h, rows), ""]
    if results.get("tuning"):
        out += ["## Hybrid weight tuning", "",
                _md_table(["task", "reducer", "on", "queries", "weight", "MRR@10"],
                          [[t["task"], t["reducer"], t["tuned_on"], str(t["n_queries"]), f"{t['weight']:.1f}",
                            fmt(t["score"])] for t in results["tuning"]]), ""]
    out += ["## Data", "", _md_table(["task", "split", "corpus", "queries", "positive pairs", "label >="],
                                     [[d["task"], d["split"], str(d["n_corpus"]), str(d["n_queries"]),
                                       str(d["n_positive_pairs"]), f"{d['positive_if_label_ge']:g}"]
                                      for d in results["sets"]]), ""]
    return "\n".join(out)


def plot_tradeoff(results: dict) -> bytes:
    """MRR@10 against bytes per vector for each dense row, one marker per task."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot(111)
    tasks = list(dict.fromkeys(r["task"] for r in results["rows"]))
    for task in tasks:
        pts = [(r["bytes_per_vector"], r["mrr@10"] * 100) for r in results["rows"]
               if r["task"] == task and r["mode"] == "dense" and r.get("bytes_per_vector")]
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, label=task)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per vector (index)")
    ax.set_ylabel("MRR@10 × 100 (dense)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def render_html(results: dict, plots: dict[str, bytes]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>embedkit retrieval evaluation</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>embedkit retrieval evaluation</h1>", *(f"<p>{e(p)}</p>" for p in _intro(results))]
    for split in _splits(results):
        h, rows = retrieval_table(results, split)
        parts += [f"<h2>{e(split)} split</h2>", _html_table(h, rows)]
    for name, png in plots.items():
        parts += [f"<h2>{e(name)}</h2>", (f"<img alt='{e(name)}' src='data:image/png;base64,"
                                         f"{base64.b64encode(png).decode('ascii')}'>")]
    parts += ["<p class='muted'>" + e(", ".join(f"{k} {v}" for k, v in results["versions"].items() if v)) + "</p>",
              "<p id='img-status' class='muted' data-loaded='0' data-total='?'></p>",
              f"<script>{_JS}</script></body></html>"]
    return "\n".join(parts)


def write_retrieval_report(results: dict, out_dir: str | os.PathLike, *, plots: bool = True) -> dict:
    """Write results.json, report.md and report.html into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = {"Quality against memory": plot_tradeoff(results)} if plots else {}
    paths = {"results": out / "results.json", "markdown": out / "report.md", "html": out / "report.html"}
    atomic_write_bytes(paths["markdown"], render_markdown(results).encode("utf-8"))
    atomic_write_bytes(paths["html"], render_html(results, figs).encode("utf-8"))
    atomic_write_bytes(paths["results"], (json.dumps(jsonable(results), ensure_ascii=False, indent=1,
                                                     allow_nan=False) + "\n").encode("utf-8"))
    return paths


def retrieval_eval(data_dir, *, out_dir, plots: bool = True, echo=print, **grid_kwargs) -> dict:
    """``embedkit eval --retrieval``: run :func:`run_retrieval_grid`, write the report, print the
    tables (``echo``, stdout in the CLI).  Returns ``{"results", "paths", "seconds"}``."""
    from .retrieval_grid import run_retrieval_grid

    t0 = time.perf_counter()
    results = run_retrieval_grid(data_dir, **grid_kwargs)
    paths = write_retrieval_report(results, out_dir, plots=plots)
    for split in _splits(results):
        h, rows = retrieval_table(results, split)
        echo(f"Retrieval, {split} split (metrics x 100):")
        echo(_md_table(h, rows))
        echo("")
    return {"results": results, "paths": paths, "seconds": time.perf_counter() - t0}
