"""The report's figures (matplotlib, rendered to PNG bytes): Spearman against dimension, the grid as a
heat-map, and the reliability diagram of the calibrated probability on 0/1-label tasks."""

from __future__ import annotations

import io
import math
from collections import defaultdict

from .tables import grid_table, main_split


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def plot_dimension(results: dict) -> bytes:
    """Spearman against output dimension: one panel per task, one line per (model, pooling, reducer kind)."""
    from matplotlib.figure import Figure

    split = main_split(results)
    tasks = results["settings"]["tasks"]
    ncol = min(len(tasks), 3)
    nrow = math.ceil(len(tasks) / ncol)
    fig = Figure(figsize=(4.2 * ncol, 3.3 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    series: dict = defaultdict(dict)
    for c in results["cells"]:
        if c["split"] == split and c.get("dim") and math.isfinite(c["spearman"]):
            series[(c["task"], c["model_name"], c["pooling"], c["reducer_kind"])][c["dim"]] = c["spearman"] * 100
    kind_color = {"none": "0.45", "whitening": "C0", "pca": "C1", "jl": "C2"}
    configs = sorted({(m, p) for (_, m, p, _) in series})
    markers, styles = "os^Dv<>", ["-", "--", ":", "-."]
    for i, task in enumerate(tasks):
        ax = axes[i // ncol][i % ncol]
        for (t, m, p, kind), pts in sorted(series.items()):
            if t != task:
                continue
            ci = configs.index((m, p))
            xs = sorted(pts)
            label = f"{m} · {p} · {kind}"
            style = {"color": kind_color.get(kind, "C3"), "marker": markers[ci % len(markers)]}
            if kind == "none":
                ax.axhline(pts[xs[0]], ls=styles[ci % len(styles)], lw=1, color=style["color"])
                ax.plot(xs, [pts[x] for x in xs], ls="none", label=label, **style)
            else:
                ax.plot(xs, [pts[x] for x in xs], ls=styles[ci % len(styles)], label=label, **style)
        ax.set_title(f"{task} ({split})")
        ax.set_xlabel("dimension")
        ax.set_ylabel("Spearman × 100")
        ax.grid(alpha=0.3)
    for j in range(len(tasks), nrow * ncol):
        axes[j // ncol][j % ncol].set_visible(False)
    legend: dict = {}
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(lab, h)
    handles, labels = list(legend.values()), list(legend)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(labels) / 4)))
    fig.tight_layout()
    return _png(fig)


def plot_heatmap(results: dict) -> bytes:
    """The grid as a heat-map of Spearman × 100 (rows: model / pooling / reducer; columns: tasks)."""
    import numpy as np
    from matplotlib.figure import Figure

    split = main_split(results)
    header, rows = grid_table(results, split)
    cols = header[4:]
    vals = np.array([[float(v) if v != "—" else np.nan for v in r[4:]] for r in rows], dtype=float)
    labels = [f"{r[0]} · {r[1]} · {r[2]}" for r in rows]
    fig = Figure(figsize=(1.1 * len(cols) + 3.5, 0.42 * len(rows) + 1.6))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(vals), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    finite = vals[np.isfinite(vals)]
    mid = float(finite.mean()) if finite.size else 0.0
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            if np.isfinite(vals[i, j]):
                ax.text(j, i, f"{vals[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if vals[i, j] < mid else "black")
    ax.set_title(f"Spearman × 100 ({split} split, protocol {results['protocol']})")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return _png(fig)




def plot_reliability(results: dict, max_lines: int = 6) -> bytes | None:
    """Reliability diagram of the isotonic probability on the main split: one panel per 0/1 task,
    fraction similar against mean predicted probability per bin, the diagonal for reference.  Lines:
    ``none`` and ``auto`` cells when present (else the first reducer), at most ``max_lines`` a panel."""
    from matplotlib.figure import Figure

    split = main_split(results)
    cells = [c for c in results["cells"] if c["split"] == split and c.get("classification")
             and not c["classification"].get("error")]
    if not cells:
        return None
    prefer = [r for r in results["settings"]["reducers"] if r == "none" or r.startswith("auto")]
    keep = set(prefer or results["settings"]["reducers"][:1])
    tasks = [t for t in results["settings"]["tasks"] if any(c["task"] == t for c in cells)]
    ncol = min(len(tasks), 3)
    nrow = math.ceil(len(tasks) / ncol)
    fig = Figure(figsize=(4.0 * ncol, 3.6 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for i, task in enumerate(tasks):
        ax = axes[i // ncol][i % ncol]
        ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1)
        shown = [c for c in cells if c["task"] == task and c["reducer"] in keep][:max_lines]
        for j, c in enumerate(shown):
            k = c["classification"]
            pts = [(b["mean_prob"], b["frac_pos"]) for b in k["reliability"] if b["n"]]
            ax.plot([p for p, _ in pts], [f for _, f in pts], marker="os^Dv<"[j % 6], ms=4,
                    label=f"{c['model_name']} · {c['reducer']} (ECE {k['ece'] * 100:.1f})")
        ax.set_title(f"{task} ({split}; calibrated on {shown[0]['classification']['calibrated_on']})"
                     if shown else task, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted P(similar)")
        ax.set_ylabel("fraction similar")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for j in range(len(tasks), nrow * ncol):
        axes[j // ncol][j % ncol].set_visible(False)
    fig.tight_layout()
    return _png(fig)
