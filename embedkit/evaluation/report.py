"""Write an evaluation's ``results.json``, ``report.md`` and a self-contained ``report.html`` (matplotlib
PNGs embedded as base64 data URIs), with published numbers side by side where the setting matches."""

from __future__ import annotations

import base64
import html
import json
import math
import os
import time
from importlib import resources
from pathlib import Path

from ..fsutil import atomic_write_bytes
from .tables import (
    auto_grid_table,
    auto_table,
    classification_table,
    compare_table,
    fit_note,
    fmt,
    grid_table,
    jsonable,
    markdown_tables,
    md_table,
    splits,
)

PUBLISHED_FILE = "published_bert_whitening_zh.json"
PROTOCOL_TEXT = {
    "paper": "reducer fitted on the vectors of every evaluated split of the task (both sides of "
             "each pair), as in BERT-whitening's chn/eval.py; max_length 64 (128 for PAWSX)",
    "fit-train": "reducer fitted on the task's train split (or a named corpus), the chosen "
                 "splits scored; nothing of the scored split is seen when fitting",
    "fit-valid": "reducer fitted on the task's valid split, the chosen splits (default test) scored; "
                 "auto chooses on the valid split's labels; nothing of the scored split is seen when fitting",
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def load_published(path: str | os.PathLike | None = None) -> dict:
    if path is not None:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    return json.loads(resources.files("embedkit.data").joinpath(PUBLISHED_FILE).read_text(encoding="utf-8"))


def match_published(results: dict, published: dict | None) -> list[dict]:
    """Rows (our cell, published figure, delta) for cells whose model / pooling / reducer kind / task
    match a published entry.  Our model matches if its name contains one of the aliases."""
    if not published:
        return []
    aliases = [a.lower() for a in published.get("model_aliases", [])]
    split_pref = "test"
    rows = []
    for c in results["cells"]:
        name = str(c.get("model_name", "")).lower()
        if c["split"] != split_pref or not any(a in name for a in aliases):
            continue
        for e in published.get("entries", []):
            if (e["pooling"], e["reducer"], e["task"]) == (c["pooling"], c["reducer_kind"], c["task"]):
                ours = c["spearman"]
                delta = None if ours is None or not math.isfinite(ours) else ours * 100 - e["spearman"]
                rows.append({"model_name": c["model_name"], "pooling": c["pooling"], "reducer": c["reducer"],
                             "task": c["task"], "split": c["split"], "ours": ours,
                             "published": e["spearman"], "delta": delta, "note": e.get("note")})
    return rows


def _data_rows(results: dict) -> list[list[str]]:
    rows = []
    for d in results["data"]:
        sk = ", ".join(f"{k} {v}" for k, v in d["skipped"].items()) or "0"
        rows.append([d["task"], d["split"] + (" (fit)" if d.get("role") == "fit" else ""), str(d["n_pairs"]),
                     sk, d["sha256"][:16] + "…"])
    return rows


# --------------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------------
def render_markdown(results: dict, published_rows: list[dict]) -> str:
    s = results["settings"]
    lines = ["# embedkit STS evaluation", "",
             f"- protocol: **{results['protocol']}** — {PROTOCOL_TEXT[results['protocol']]}",
             f"- data: `{s['data_dir']}`; tasks {', '.join(s['tasks'])}; splits {', '.join(s['splits'])}"
             + (f"; first {s['limit']} pairs per split" if s.get("limit") else ""),
             "- models: " + "; ".join(f"`{m['name']}` ({m['pooling']}, max_length {m['max_length']}, "
                                      f"dim {m['dim']})" for m in results["models"]),
             "- metric: Spearman × 100 of cosine similarity against the label (Pearson in results.json)",
             f"- reducers fitted on: {fit_note(results)}",
             ""]
    lines += [markdown_tables(results)]
    h, rows = auto_grid_table(results)
    if rows:
        lines += ["## The auto grid: valid Spearman × 100 of every candidate (* = chosen)", "",
                  md_table(h, rows), ""]
    errors = [c for c in results["cells"] if c.get("error")]
    if errors:
        lines += ["Cells that could not be computed:", ""]
        lines += [f"- {c['model_name']} {c['pooling']} {c['reducer']} {c['task']}-{c['split']}: {c['error']}"
                  for c in errors[:20]]
        lines.append("")
    if published_rows:
        lines += ["## Against published numbers (BERT-whitening paper, Chinese)", "",
                  md_table(["model", "pooling", "reducer", "task", "ours", "published", "delta"],
                            [[r["model_name"], r["pooling"], r["reducer"], r["task"], fmt(r["ours"]),
                              f"{r['published']:.2f}", "—" if r["delta"] is None else f"{r['delta']:+.2f}"]
                             for r in published_rows]), ""]
    lines += ["## Data", "", md_table(["task", "split", "pairs", "skipped rows", "sha256"], _data_rows(results)),
              "", "## Timings (seconds)", "",
              md_table(["stage", "s"], [[k, f"{v:.2f}"] for k, v in results["timings"].items()]), "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# html
# --------------------------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,-apple-system,"Noto Sans CJK SC",sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.9rem}
td,th{border:1px solid #ccc;padding:.25rem .55rem;text-align:right}td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}
th{background:#f3f3f3}img{max-width:100%;display:block;margin:.5rem 0 1.5rem}.muted{color:#777;font-size:.85rem}
code{background:#f5f5f5;padding:0 .2rem}"""

_JS = """window.addEventListener('load',function(){var imgs=document.images,ok=0;
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
var s=document.getElementById('img-status');s.setAttribute('data-loaded',ok);
s.setAttribute('data-total',imgs.length);s.textContent=ok+' of '+imgs.length+' figures rendered';});"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return ("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>" for r in rows)
            + "</tbody></table>")


def render_html(results: dict, published_rows: list[dict], plots: dict[str, bytes]) -> str:
    e = html.escape
    s = results["settings"]
    limit_note = f"; first {s['limit']} pairs per split" if s.get("limit") else ""
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>embedkit STS evaluation</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>embedkit STS evaluation</h1>",
             f"<p><b>Protocol {e(results['protocol'])}</b>: {e(PROTOCOL_TEXT[results['protocol']])}.</p>",
             (f"<p>Data <code>{e(s['data_dir'])}</code>; tasks {e(', '.join(s['tasks']))}; splits "
             f"{e(', '.join(s['splits']))}{e(limit_note)}."
             " Metric: Spearman × 100 of cosine similarity against the label. Reducers fitted on: "
             f"{e(fit_note(results))}.</p>")]
    for split in splits(results):
        h, rows = grid_table(results, split)
        parts += [f"<h2>Spearman × 100, {e(split)} split</h2>", _html_table(h, rows)]
        h, rows = compare_table(results, split)
        if rows:
            parts += [f"<h2>Models compared: Spearman × 100 difference from the first model, {e(split)} split</h2>",
                      _html_table(h, rows)]
    for title, (h, rows) in (("Reducer chosen by auto (on the valid split's labels)", auto_table(results)),
                             ("The auto grid: valid Spearman × 100 of every candidate (* = chosen)",
                              auto_grid_table(results)),
                             (("Same / not the same (0/1 tasks; × 100; threshold and probability fitted on "
                              "the calibration split)"), classification_table(results))):
        if rows:
            parts += [f"<h2>{e(title)}</h2>", _html_table(h, rows)]
    captions = {"dimension": "Spearman against output dimension, per task and reducer",
                "heatmap": "The grid at a glance",
                "reliability": "Reliability of the calibrated probability (isotonic, 10 bins)"}
    for name, png in plots.items():
        parts += [f"<h2>{e(captions.get(name, name))}</h2>",
                  (f"<img alt='{e(captions.get(name, name))}' src='data:image/png;base64,"
                  f"{base64.b64encode(png).decode('ascii')}'>")]
    if published_rows:
        parts += ["<h2>Against published numbers (BERT-whitening paper, Chinese)</h2>",
                  _html_table(["model", "pooling", "reducer", "task", "ours", "published", "delta"],
                              [[r["model_name"], r["pooling"], r["reducer"], r["task"], fmt(r["ours"]),
                                f"{r['published']:.2f}", "—" if r["delta"] is None else f"{r['delta']:+.2f}"]
                               for r in published_rows])]
    parts += ["<h2>Data</h2>", _html_table(["task", "split", "pairs", "skipped rows", "sha256"], _data_rows(results)),
              "<h2>Models</h2>", _html_table(["model", "pooling", "max_length", "dim", "path"],
                                             [[m["name"], m["pooling"], m["max_length"], m["dim"], m["model"]]
                                              for m in results["models"]]),
              "<h2>Timings (s)</h2>", _html_table(["stage", "s"], [[k, f"{v:.2f}"] for k, v in results["timings"].items()]),
              "<p class='muted'>" + e(", ".join(f"{k} {v}" for k, v in results["versions"].items() if v)) + "</p>",
              "<p id='img-status' class='muted' data-loaded='0' data-total='?'></p>",
              f"<script>{_JS}</script></body></html>"]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# write
# --------------------------------------------------------------------------------------------
def write_report(results: dict, out_dir: str | os.PathLike, *, published: dict | None | bool = True,
                 plots: bool = True) -> dict:
    """Write results.json, report.md and report.html into ``out_dir``; return their paths.
    ``published=True`` uses the bundled BERT-whitening table; pass a dict, or None to leave it out."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pub = load_published() if published is True else (published or None)
    pub_rows = match_published(results, pub)
    results["published"] = {"source": pub.get("source"), "provenance": pub.get("provenance"),
                            "rows": pub_rows} if pub else None
    figs = {}
    if plots:
        from .plots import plot_dimension, plot_heatmap, plot_reliability

        figs = {"dimension": plot_dimension(results), "heatmap": plot_heatmap(results)}
        rel = plot_reliability(results)
        if rel is not None:
            figs["reliability"] = rel
    md = render_markdown(results, pub_rows)
    page = render_html(results, pub_rows, figs)
    results["timings"]["report_s"] = round(time.perf_counter() - t0, 3)
    paths = {"results": out / "results.json", "markdown": out / "report.md", "html": out / "report.html"}
    atomic_write_bytes(paths["markdown"], md.encode("utf-8"))
    atomic_write_bytes(paths["html"], page.encode("utf-8"))
    atomic_write_bytes(paths["results"], (json.dumps(jsonable(results), ensure_ascii=False, indent=1,
                                                     allow_nan=False) + "\n").encode("utf-8"))
    return paths
