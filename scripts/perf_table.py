#!/usr/bin/env python
"""Generate the README "Performance" section from the benchmark results in scripts/benchmarks/*.json.

    python scripts/perf_table.py            # rewrite the block between the perf markers in README.md
    python scripts/perf_table.py --stdout   # only print the generated Markdown
    python scripts/perf_table.py --check    # exit 1 if README.md's block is out of date

The block is everything between ``<!-- perf:begin -->`` and ``<!-- perf:end -->``; text outside it is
left alone. Without a README.md (or without the markers) the Markdown is printed to stdout.
Each result file names its benchmark (``"benchmark": "encode"`` ...); a file for which this script
has no renderer is listed by name so it is not silently dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "scripts" / "benchmarks"
BEGIN, END = "<!-- perf:begin -->", "<!-- perf:end -->"
ORDER = ("encode", "search", "demo", "build_memory", "serve", "eval_overhead", "ray", "calibration")  # known benchmarks first, in this order; others after, by file name


# -- formatting helpers ----------------------------------------------------------------------------
def _num(x, digits: int = 1) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and x != x:
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def _ratio(x) -> str:
    if x is None:
        return "—"
    return f"{x:.1f}×" if abs(x) >= 10 else f"{x:.2f}×"


def _delta(x) -> str:
    return "" if x is None else f" ({x:+.2f})"


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def machine_line(res: dict, command: str | None = None) -> str:
    m = res.get("machine", {})
    parts = [m.get("cpu", "?"), f"{m.get('cores', '?')} logical cores"]
    if m.get("ram_gib"):
        parts.append(f"{m['ram_gib']} GiB RAM")
    if m.get("cpu_flags"):
        parts.append(", ".join(m["cpu_flags"]))
    if m.get("os"):
        parts.append(m["os"])
    date = str(res.get("date", "?"))[:10]
    command = command or res.get("command") or res.get("config", {}).get("command", "?")
    return f"*Machine:* {', '.join(parts)}. *Measured:* {date}. *Command:* `{command}`"


# -- renderers -------------------------------------------------------------------------------------
SIDE_LABEL = {
    "sentence-transformers": "plain `SentenceTransformer.encode`",
    "embedkit-torch": "embedkit, default (torch)",
    "embedkit-onnx": "embedkit `--backend onnx`",
    "embedkit-onnx-int8": "embedkit `--backend onnx-int8`",
}
SIDE_BACKEND = {"embedkit-torch": "torch", "embedkit-onnx": "onnx", "embedkit-onnx-int8": "onnx-int8"}


def render_encode(res: dict) -> list[str]:
    c = res["config"]
    q = res.get("quality_spearman_x100") or {}
    tasks = sorted(q, key=lambda t: (t != "STS-B", t))
    head = ["encoder path", "sentences/s", "vs sentence-transformers"]
    for t in tasks:
        pairs = q[t]["pairs"]
        head.append(f"{t} Spearman ({'all ' if t == 'STS-B' or c.get('lcqmc_pairs') == 'all' else 'first '}{pairs} pairs)")
    rows = []
    sides = [s for s in SIDE_LABEL if s in res["speed"]] + [s for s in res["speed"] if s not in SIDE_LABEL]
    for side in sides:
        s = res["speed"][side]
        row = [SIDE_LABEL.get(side, side), _num(s["sentences_per_s"]), _ratio(s["ratio_vs_sentence_transformers"])]
        be = SIDE_BACKEND.get(side)
        for t in tasks:
            if be is None:
                row.append("same model as torch")
            else:
                row.append(_num(q[t].get(be), 2) + _delta(q[t].get(f"delta_{be}") if be != "torch" else None))
        rows.append(row)
    lines = [f"### Encoding: {c['model']} on CPU", "",
             f"{c['sentences']:,} test sentences, batch {c['batch_size']}, max_length {c['max_length']}, "
             f"{c['threads']} threads, {c['rounds']} rounds, sides interleaved every "
             f"{c.get('interleave_chunk', c['sentences']):,} sentences (medians over rounds). Spearman ×100 of cosine vs label; in brackets the change against the torch "
             "fp32 path.", ""]
    lines += _table(head, rows)
    t = res.get("targets", {})
    notes = []
    if "default_path_parity" in t:
        p = t["default_path_parity"]
        notes.append(f"default path at parity (≥ 1.0×): **{'met' if p['met'] else 'not met'}** ({p['measured']:.2f}×)")
    for side in ("embedkit-onnx", "embedkit-onnx-int8"):
        if side in t:
            x = t[side]
            sp = ("" if "spearman_met" not in x else
                  f"; Spearman within 0.5: **{'met' if x['spearman_met'] else 'not met'}** "
                  f"(worst {x['spearman_worst_delta']:+.2f})")
            notes.append(f"`{SIDE_BACKEND[side]}` ≥ 2×: **{'met' if x['speed_met'] else 'not met'}** "
                         f"({x['speed_measured']:.2f}×){sp}")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    lines += ["", machine_line(res)]
    return lines


def render_search(res: dict) -> list[str]:
    c = res["config"]
    k = c.get("k", 10)
    rk = f"recall_at_{k}"
    lines = [f"### Search: {c['n']:,} vectors", "",
             f"{c['data']}. Metric: {c['metric']}. Recall@{k} against exact search over {c['nq']:,} queries; "
             f"single-query latency is the p50 of one-query calls; batched = all {c['nq']:,} queries in one call; "
             f"speedup = single-query p50 of FAISS flat ÷ this. {c['threads']} threads. "
             "✓ = recall@10 ≥ 0.95 and ≥ 20× faster than flat.", ""]
    head = ["d", "index", "build s", "bytes/vector", "single p50 ms", "speedup", "batched QPS", f"recall@{k}", ""]
    rows = []
    dims = sorted(res["dims"], key=int, reverse=True)
    for d in dims:
        for r in res["dims"][d]["rows"]:
            ok = r["family"] not in ("exact", "flat") and r[rk] >= 0.95 and r["speedup_single_vs_flat"] >= 20
            rows.append([d, r["name"], _num(r["build_s"]), _num(r["bytes_per_vector"], 0),
                         _num(r["single_p50_ms"], 3), _ratio(r["speedup_single_vs_flat"]), _num(r["qps"], 0),
                         f"{r[rk]:.3f}", "✓" if ok else ""])
    lines += _table(head, rows, align="llrrrrrrl")
    rec = res.get("recommended_defaults")
    if rec:
        parts = []
        for fam, v in rec.items():
            if not isinstance(v, dict):
                continue
            for knob in ("efSearch", "nprobe"):
                if knob in v:
                    parts.append(f"`{fam}` {knob}={v[knob]}" if v[knob] is not None else f"`{fam}`: none qualifies")
        rule = rec.get("rule", "smallest setting reaching the recall target at every measured d")
        lines += ["", f"Defaults chosen from these figures ({rule}): " + (", ".join(parts) or "none") + "."]
    for d in dims:
        t = res["dims"][d].get("target", {})
        lines.append(f"- d={d}: target {'**met**' if t.get('met') else '**not met**'}"
                     + (f" — fastest qualifying: {t['fastest_meeting']}" if t.get("met") else ""))
    lines += ["", machine_line(res)]
    return lines


def render_demo(res: dict) -> list[str]:
    rows = [[r["reduce"], r["index"], str(r["dim"]), _num(r["build_s"], 2), _num(r["query_ms_p50"], 1),
             _num(r["search_only_ms_p50"], 3), f"{r['faiss_bytes'] / 1024:,.0f}", _ratio(r["faiss_vs_none"]),
             f"{r['size_bytes'] / 1024:,.0f}"] for r in res["rows"]]
    return [f"### Demo corpus: build, query, size ({res['rows'][0]['docs']} sentences, m3e-small)", "",
            "Query = encode + search, p50 over the demo queries; configurations interleaved. The whole "
            "directory grows with whitening on a corpus this small because it stores the 512×256 matrix.", "",
            *_table(["reduce", "index", "dim", "build s", "query ms", "search-only ms", "FAISS KiB",
                     "FAISS vs none", "directory KiB"], rows, "llrrrrrrr"), "",
            machine_line(res, "python scripts/bench_demo.py")]


def render_build_memory(res: dict) -> list[str]:
    rows = [[r["mode"], f"{r['n']:,}", r["reduce"], r["index"], _num(r["peak_rss_mib"], 0),
             _num(r["n"] * 512 * 4 / 2**20, 0), _num(r["index_bytes"] / 2**20, 0), _num(r["build_s"], 1)]
            for r in res["rows"]]
    return ["### Streaming index build: peak memory", "",
            "`real` encodes sentences from the shared train splits with m3e-small; `synthetic` feeds seeded "
            "vectors through the same build path. The corpus is streamed in chunks of 4,096 "
            "(encode → reduce → add); what remains is the model and the FAISS index itself.", "",
            *_table(["mode", "documents", "reducer", "index", "peak RSS MiB", "raw 512-d vectors MiB",
                     "index on disk MiB", "build s"], rows, "lrllrrrr"), "",
            machine_line(res, "python scripts/bench_build_memory.py --real 100000 --synthetic 1000000")]


def render_serve(res: dict) -> list[str]:
    by = {(r["endpoint"], r["clients"], r["batching"]): r for r in res["results"]}
    rows = []
    for (ep, clients, batching), on in sorted(by.items()):
        if batching != "on" or (ep, clients, "off") not in by:
            continue
        off = by[(ep, clients, "off")]
        rows.append([f"`{on['path']}`", str(clients), f"{on['rps']:.1f} / {off['rps']:.1f}",
                     _ratio(on["rps"] / off["rps"]), f"{on['p50_ms']:.0f} / {off['p50_ms']:.0f}",
                     f"{on['p99_ms']:.0f} / {off['p99_ms']:.0f}", f"{on['errors']} / {off['errors']}",
                     _num(on["mean_batch_texts"], 1)])
    c = res.get("config", {})
    return ["### Service: micro-batching on vs off", "",
            f"Closed-loop clients on 127.0.0.1, one text per request, {c.get('duration_s', '?')} s per phase, "
            f"{c.get('documents', '?')} documents, {c.get('index_type', '?')}; the two servers alternate phase "
            "by phase.", "",
            *_table(["endpoint", "clients", "req/s on / off", "ratio", "p50 ms on / off", "p99 ms on / off",
                     "errors", "mean batch"], rows, "lrrrrrrr"), "",
            machine_line(res)]


def render_eval_overhead(res: dict) -> list[str]:
    return ["### Evaluation overhead", "",
            f"{res['what']}: encoding {res['encode_s']:.0f} s for {res['n_sentences_encoded']:,} sentences, "
            f"everything else {res['overhead_s']:.1f} s = **{res['overhead_ratio']:.2%}** of encoding "
            f"(target < {res['target_ratio']:.0%}). With whitening, PCA and JL at 256 on cached vectors: "
            f"{res['with_3_reducers_cached']['overhead_ratio_vs_encode']:.1%}. "
            "*Command:* `python scripts/bench_eval.py`"]


def render_ray(res: dict) -> list[str]:
    sp, ray = res["single_process"], res["ray_local"]
    return ["### Ray encoding (local, one machine)", "",
            f"{res['sentences']:,} {res['corpus']}, {res['model']}, batch {res['batch_size']}, {res['machine']}.", "",
            *_table(["engine", "sentences/s", "overhead"], [
                ["single process", _num(sp["sentences_per_s"]), f"model load {sp['model_load_s']:.1f} s"],
                [f"Ray, {res['ray_workers']} actors", _num(ray["sentences_per_s_end_to_end"]),
                 f"ray.init {ray['ray_init_s']:.1f} s + {ray['per_job_overhead_s']:.1f} s per job"]], "lrl"), "",
            f"Vectors equal single-process output (max abs difference {res['max_abs_diff_vs_single_process']:.1e}). "
            "On one 2-core machine Ray only adds overhead; it pays off across a cluster. "
            "*Command:* `python scripts/bench_ray.py`"]


def render_calibration(res: dict) -> list[str]:
    st = res["settings"]
    out = ["### Auto reducer and calibrated similarity", "",
           f"Protocol {st['protocol']} (fit and choose on valid, score test); {st['cap_note']}. "
           "Test Spearman × 100; ECE of the isotonic probability; accuracy at the threshold fitted on "
           "valid vs the best threshold on test in hindsight.", "",
           "| model | task | none | auto (choice) | best fixed in hindsight | AUC | acc@fitted | acc best | ECE |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for m in res["models"]:
        for t, r in m["tasks"].items():
            k = r.get("auto_classification") or {}
            out.append(f"| {m['model']} | {t} | {_num(r['none'], 2)} | {_num(r['auto'], 2)} ({r['auto_choice']}) | "
                       f"{_num(r['best_fixed'], 2)} | {_num(k.get('auc'), 1)} | "
                       f"{_num(k.get('accuracy_at_fitted_threshold'), 1)} | "
                       f"{_num(k.get('accuracy_best_threshold_on_test'), 1)} | {_num(k.get('ece_isotonic'), 3)} |")
        a = m["avg"]
        out.append(f"| {m['model']} | **avg** | {_num(a['none'], 2)} | {_num(a['auto'], 2)} | "
                   f"{_num(a['best_fixed'], 2)} ({m['best_fixed_in_hindsight']}) | | | | |")
    tn = res.get("text_normalisation")
    if tn:
        out += ["", f"Text normalisation, {tn['model']} on {tn['task']} {tn['split']} (Spearman × 100, none / auto): "
                f"plain {_num(tn['plain']['none'], 2)} / {_num(tn['plain']['auto'], 2)}; "
                + "; ".join(f"{mode} {_num(tn[mode]['none'], 2)} / {_num(tn[mode]['auto'], 2)}" for mode in ("t2s", "s2t"))
                + ". " + tn.get("note", "")]
    return out + ["", f"*Command:* `{res['command']}`"]


RENDERERS = {"calibration": render_calibration, "encode": render_encode, "search": render_search, "demo": render_demo,
             "build_memory": render_build_memory, "serve": render_serve, "eval_overhead": render_eval_overhead,
             "ray": render_ray}


# -- assembly --------------------------------------------------------------------------------------
def load_results(folder: Path) -> list[tuple[str, dict, Path]]:
    found = []
    for p in sorted(folder.glob("*.json")):
        try:
            res = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(f"perf_table: skipping {p.name}: {e}", file=sys.stderr)
            continue
        if isinstance(res, dict):
            found.append((str(res.get("benchmark", p.stem)), res, p))
    rank = {name: i for i, name in enumerate(ORDER)}
    found.sort(key=lambda t: (rank.get(t[0], len(ORDER)), t[2].name))
    return found


def build_markdown(folder: Path) -> str:
    results = load_results(folder)
    rel = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
    lines = [f"_Generated by `python scripts/perf_table.py` from `{rel}/*.json`; edit those, not this table._", ""]
    if not results:
        lines.append("No benchmark results yet: run `scripts/bench_encode.py` / `scripts/bench_search.py`.")
    unknown = []
    for name, res, path in results:
        render = RENDERERS.get(name)
        if render is None:
            unknown.append(path.name)
            continue
        try:
            lines += render(res) + [""]
        except (KeyError, TypeError) as e:
            print(f"perf_table: cannot render {path.name} ({type(e).__name__}: {e})", file=sys.stderr)
            unknown.append(path.name)
    if unknown:
        lines.append("Other result files (no table renderer yet): " + ", ".join(f"`{u}`" for u in unknown))
    return "\n".join(lines).rstrip() + "\n"


def splice(readme: str, block: str) -> str | None:
    b, e = readme.find(BEGIN), readme.find(END)
    if b < 0 or e < 0 or e < b:
        return None
    return readme[:b + len(BEGIN)] + "\n" + block + readme[e:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readme", default=str(REPO / "README.md"))
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--stdout", action="store_true", help="print the Markdown instead of editing README.md")
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md's block differs from the results")
    args = ap.parse_args(argv)

    block = build_markdown(Path(args.results).resolve())
    readme = Path(args.readme)
    if args.stdout or not readme.is_file():
        if not args.stdout:
            print(f"perf_table: {readme} does not exist; printing the table", file=sys.stderr)
        sys.stdout.write(block)
        return 0
    old = readme.read_text(encoding="utf-8")
    new = splice(old, block)
    if new is None:
        print(f"perf_table: no {BEGIN} ... {END} markers in {readme}; printing the table", file=sys.stderr)
        sys.stdout.write(block)
        return 1 if args.check else 0
    if args.check:
        if new != old:
            print(f"perf_table: {readme} is out of date; run python scripts/perf_table.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        from embedkit.fsutil import atomic_write_bytes

        atomic_write_bytes(readme, new.encode("utf-8"))
        print(f"perf_table: updated {readme}", file=sys.stderr)
    else:
        print(f"perf_table: {readme} already up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
