"""The report's tables as plain data (header + rows of strings), shared by report.md, report.html, the
figures and the CLI: Spearman per split, the ``auto`` choices, and the 0/1-task classification metrics."""

from __future__ import annotations

import math


def jsonable(obj):
    """NaN / inf -> None recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def fmt(x, scale: float = 100.0, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x * scale:.{nd}f}"


def fit_note(results: dict) -> str:
    """What the reducers were fitted on, e.g. ``test (per task)``, from the cells' fit records."""
    ons = sorted({c["fit"]["on"] for c in results["cells"] if c.get("fit")})
    return ", ".join(ons) + " (per task)" if ons else "nothing (no reducer fitted)"


def configs(results: dict) -> list[tuple]:
    seen = []
    for c in results["cells"]:
        key = (c["model_name"], c["pooling"], c["reducer"])
        if key not in seen:
            seen.append(key)
    return seen


def splits(results: dict) -> list[str]:
    order = {"train": 0, "valid": 1, "test": 2}
    return sorted({c["split"] for c in results["cells"]}, key=lambda s: order.get(s, 9))


def grid_table(results: dict, split: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of Spearman x 100: one row per (model, pooling, reducer), tasks + averages."""
    tasks = results["settings"]["tasks"]
    cell = {(c["model_name"], c["pooling"], c["reducer"], c["task"]): c for c in results["cells"]
            if c["split"] == split}
    avg = {(a["model_name"], a["pooling"], a["reducer"]): a for a in results["averages"] if a["split"] == split}
    header = ["model", "pooling", "reducer", "dim"] + tasks + ["avg", "w-avg"]
    rows = []
    for m, p, r in configs(results):
        cs = [cell.get((m, p, r, t)) for t in tasks]
        dim = next((c["dim"] for c in cs if c and c.get("dim")), None)
        a = avg.get((m, p, r), {})
        rows.append([m, p, r, str(dim or "—")] + [fmt(c["spearman"]) if c else "—" for c in cs]
                    + [fmt(a.get("spearman_avg")), fmt(a.get("spearman_w_avg"))])
    return header, rows


def compare_table(results: dict, split: str) -> tuple[list[str], list[list[str]]]:
    """Models side by side: for each model after the first, Spearman × 100 minus the first model's on
    every task and average, same pooling and reducer (e.g. base vs fine-tuned). No rows for one model."""
    tasks = results["settings"]["tasks"]
    models = list(dict.fromkeys(c["model"] for c in results["cells"]))
    if len(models) < 2:
        return [], []
    names = {c["model"]: c["model_name"] for c in results["cells"]}
    cell = {(c["model"], c["pooling"], c["reducer"], c["task"]): c["spearman"] for c in results["cells"]
            if c["split"] == split}
    avg = {(a["model"], a["pooling"], a["reducer"]): a["spearman_avg"] for a in results["averages"]
           if a["split"] == split}
    first = models[0]
    combos = list(dict.fromkeys((c["pooling"], c["reducer"]) for c in results["cells"]))

    def delta(a, b) -> str:
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            return "—"
        return f"{(a - b) * 100:+.2f}"

    header = ["model", f"vs {names[first]}", "pooling", "reducer"] + tasks + ["avg"]
    rows = []
    for m in models[1:]:
        for p, r in combos:
            if (m, p, r) not in avg and not any((m, p, r, t) in cell for t in tasks):
                continue
            rows.append([names[m], names[first], p, r]
                        + [delta(cell.get((m, p, r, t)), cell.get((first, p, r, t))) for t in tasks]
                        + [delta(avg.get((m, p, r)), avg.get((first, p, r)))])
    return header, rows


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)




def main_split(results: dict) -> str:
    sp = splits(results)
    return "test" if "test" in sp else sp[-1]


def auto_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """One row per auto cell of the main split: the choice, its valid Spearman, the runner-up and the
    best candidate's valid Spearman, and the scored split's Spearman."""
    split = main_split(results)
    header = ["model", "pooling", "reducer", "task", "choice", "valid (choice)", "valid (runner-up)",
              f"{split} (choice)", "tune pairs"]
    rows = []
    for c in results["cells"]:
        a = c.get("auto")
        if c["split"] != split or not a:
            continue
        ranked = sorted((g for g in a["grid"] if g["spearman"] is not None and math.isfinite(g["spearman"])),
                        key=lambda g: -g["spearman"])
        chosen = next((g for g in a["grid"] if g["spec"] == a["choice"]), {})
        runner = next((g for g in ranked if g["spec"] != a["choice"]), {})
        rows.append([c["model_name"], c["pooling"], c["reducer"], c["task"], a["choice"],
                     fmt(chosen.get("spearman")),
                     f"{fmt(runner.get('spearman'))} ({runner.get('spec', '—')})", fmt(c["spearman"]),
                     str(a["n_tune_pairs"])])
    return header, rows


def auto_grid_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """The whole auto grid: valid Spearman × 100 of every candidate (rows) per model / task (columns)."""
    split = main_split(results)
    cols, grid = [], {}
    order: list[str] = []
    for c in results["cells"]:
        a = c.get("auto")
        if c["split"] != split or not a:
            continue
        col = f"{c['model_name']} {c['reducer']} {c['task']}"
        cols.append(col)
        for g in a["grid"]:
            if g["spec"] not in order:
                order.append(g["spec"])
            mark = " *" if g["spec"] == a["choice"] else ""
            grid[(g["spec"], col)] = fmt(g["spearman"]) + mark
    return ["candidate"] + cols, [[spec] + [grid.get((spec, col), "—") for col in cols] for spec in order]


def classification_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """0/1-label cells: AUC, accuracy at the fitted threshold vs the best threshold in hindsight, F1 at
    the fitted threshold, ECE of the isotonic and Platt probabilities (× 100), calibration split."""
    header = ["model", "pooling", "reducer", "task", "split", "AUC", "acc@fit", "acc best", "F1@fit",
              "ECE iso", "ECE platt", "calibrated on"]
    rows = []
    for c in results["cells"]:
        k = c.get("classification")
        if not k or k.get("error"):
            continue
        rows.append([c["model_name"], c["pooling"], c["reducer"], c["task"], c["split"], fmt(k["auc"]),
                     fmt(k["accuracy"]), fmt(k["accuracy_best_in_hindsight"]), fmt(k["f1"]), fmt(k["ece"]),
                     fmt(k["ece_platt"]), f"{k['calibrated_on']} ({k['n_calibration_pairs']})"])
    return header, rows


def markdown_tables(results: dict) -> str:
    """The report's result tables in markdown: Spearman per split, then auto and classification."""
    out = []
    for split in splits(results):
        h, rows = grid_table(results, split)
        out += [f"## Spearman × 100, {split} split", "", md_table(h, rows), ""]
        h, rows = compare_table(results, split)
        if rows:
            out += [f"## Models compared: Spearman × 100 difference from the first model, {split} split", "",
                    md_table(h, rows), ""]
    h, rows = auto_table(results)
    if rows:
        out += ["## Reducer chosen by auto (on the valid split's labels)", "", md_table(h, rows), ""]
    h, rows = classification_table(results)
    if rows:
        out += [("## Same / not the same (0/1 tasks; × 100; threshold and probability fitted on the "
                "calibration split)"), "", md_table(h, rows), ""]
    return "\n".join(out)
