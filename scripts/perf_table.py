#!/usr/bin/env python
"""Generate the README "Performance" section from the benchmark results in scripts/benchmarks/*.json.

    python scripts/perf_table.py            # rewrite the block between the perf markers in README.md
    python scripts/perf_table.py --stdout   # only print the generated Markdown
    python scripts/perf_table.py --check    # exit 1 if README.md's block is out of date, or a result
                                            # names no CPU, or mixes CPUs without a note saying so

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
ORDER = ("encode", "search", "writes", "demo", "build_memory", "serve", "eval_overhead", "ray", "retrieval",
         "lexical", "calibration", "compressed", "documents", "documents_overlap", "open", "reembed", "faults", "soak", "reader_lock")  # known benchmarks first, in this order; others after, by file name


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


def cpu_kind(machine: dict) -> str:
    """What decides the int8 / bf16 kernels, in words: AMX, AVX-512 VNNI, or AVX2 only."""
    flags = set(machine.get("cpu_flags") or ())
    if not flags:
        return "CPU flags not recorded"
    if {"amx_bf16", "amx_int8"} & flags:
        return "AMX" + (" + AVX512-BF16" if "avx512_bf16" in flags else "")
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "AVX-512 VNNI, no AMX or bf16" if "avx512_vnni" in flags else "AVX-VNNI, no AMX or bf16"
    return "AVX2 only: no AVX-512, VNNI or bf16" if "avx2" in flags else ", ".join(sorted(flags))


# -- renderers -------------------------------------------------------------------------------------
RUNTIME_NOTE = {
    "torch": "PyTorch (default)",
    "onnx": "ONNX Runtime, fp32, fused graph",
    "onnx-int8": "ONNX Runtime, dynamic int8",
    "onnx-int8-static": "ONNX Runtime, static int8 (calibrated QDQ)",
    "openvino": "OpenVINO, fp32",
    "openvino-int8": "OpenVINO, static int8 (calibrated QDQ)",
    "torch-bf16": "PyTorch under bf16 autocast, Linear weights in bf16 (native with AMX / AVX512-BF16)",
    "openvino-bf16": "OpenVINO, bf16 inference precision (native with AMX / AVX512-BF16)",
    "auto": "the runtime `auto` measured as fastest within 0.5 points here",
}


def _side_label(side: str, row: dict) -> str:
    be = row.get("backend")
    if be is None:
        return "plain `SentenceTransformer.encode`"
    label = f"`--backend {be}`: {RUNTIME_NOTE.get(be, be)}"
    if "@" in side:
        label += f", {row.get('threads')} thread{'s' if row.get('threads') != 1 else ''}"
    return label


def render_encode(res: dict) -> list[str]:
    c = res["config"]
    sides = res["sides"]
    tasks = []
    for row in sides.values():
        tasks += [t for t in row.get("spearman_x100", {}) if t not in tasks]
    tasks.sort(key=lambda t: (t != "STS-B", t))
    pairs = {"STS-B": "all", "LCQMC": c.get("lcqmc_pairs", "?")}
    head = ["encoder path", "sentences/s", "vs sentence-transformers", "min cosine vs ST"]
    head += [f"{t} Spearman ({'all' if pairs.get(t) == 'all' else 'first ' + str(pairs.get(t))} pairs)"
             for t in tasks]
    order = list(RUNTIME_NOTE)

    def rank(side):
        be = sides[side].get("backend")
        return (-1 if be is None else order.index(be) if be in order else len(order), "@" in side, side)

    rows = []
    for side in sorted(sides, key=rank):
        row = sides[side]
        r = [_side_label(side, row), _num(row["sentences_per_s"]), _ratio(row["ratio_vs_sentence_transformers"]),
             f"{row.get('min_cosine_vs_sentence_transformers', float('nan')):.4f}"]
        for t in tasks:
            d = row.get("delta_points_vs_sentence_transformers", {}).get(t)
            r.append(_num(row.get("spearman_x100", {}).get(t), 2) + ("" if row.get("backend") is None else _delta(d)))
        rows.append(r)
    intro = (f"{c['sentences']:,} test sentences, batch {c['batch_size']}, max_length {c['max_length']}, "
             f"{c['threads']} threads unless stated, {c['rounds']} rounds, all sides in one process, interleaved "
             f"every {c.get('interleave_chunk', c['sentences']):,} sentences (medians over rounds). Spearman ×100 "
             "of cosine vs label; in brackets the change in points against plain sentence-transformers.")
    m = res.get("machine", {})
    lines = [f"### Encoding: {c['model']} on {m.get('cpu', 'CPU')} ({cpu_kind(m)})", "", intro, ""]
    lines += _table(head, rows)
    t = res.get("targets", {})
    notes = []
    if "default_path_parity" in t:
        p = t["default_path_parity"]
        notes.append(f"default path at parity (≥ 1.0×): **{'met' if p['met'] else 'not met'}** ({_ratio(p['measured'])})")
    if "fast_path" in t:
        f = t["fast_path"]
        notes.append(f"fast path ≥ 2× within 0.5 Spearman points: **{'met' if f['met'] else 'not met'}** "
                     f"(best within 0.5 points: `{f['best_side']}`, {_ratio(f['measured'])}, "
                     f"worst change {_num(f['worst_delta'], 2)} points)")
    if "auto_choice" in t:
        a = t["auto_choice"]
        notes.append(f"`auto` chose `{a['choice']}`: {_ratio(a['measured'])} the speed of the fastest runtime within "
                     f"0.5 points here (`{a['fastest_within_bound']}`), target ≥ 0.95×: "
                     f"**{'met' if a['met'] else 'missed'}**"
                     + (" (the same runtime: the two rows differ by this one run's timing noise)"
                        if a["fastest_within_bound"] == f"embedkit-{a['choice']}" else ""))
    if "auto_first_use" in t:
        a = t["auto_first_use"]
        notes.append(f"`auto` first use on this machine (exporting every graph, then measuring): "
                     f"{a['measured']:.1f} s, target ≤ 15 s: **{'met' if a['met'] else 'missed'}**; measured again "
                     f"with the graphs exported: {a['graphs_exported_s']:.1f} s")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    note = res.get("machine", {}).get("note")
    lines += ["", machine_line(res) + (f" *Note:* {note}." if note else "")]
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


def render_serve_batching(res: dict) -> list[str]:
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


def render_serve(res: dict) -> list[str]:
    if isinstance(res.get("results"), list):  # an older result file: micro-batching on vs off
        return render_serve_batching(res)
    c = res.get("config", {})
    results = res["results"]
    names = [n for n in c.get("servers", list(results)) if n in results]
    loads = c.get("loads") or sorted({load for by in results.values() for load in by})
    head = ["load (clients × sentences)"]
    for n in names:
        head += [f"{n} req/s", f"{n} sentences/s", f"{n} p50 / p99 ms"]
    ratio_col = "embedkit" in results and "infinity" in results
    if ratio_col:
        head.append("embedkit / infinity")
    rows = []
    for load in loads:
        row = [load.replace("x", " × ")]
        for n in names:
            r = results[n].get(load)
            row += ([_num(r["rps"]), _num(r["sentences_per_s"]), f"{_num(r['p50_ms'], 0)} / {_num(r['p99_ms'], 0)}"]
                    if r else ["", "", ""])
        if ratio_col:
            row.append(_ratio((res.get("ratios", {}).get(load) or {}).get("rps_vs_infinity")))
        rows.append(row)
    ip = res.get("inprocess", {})
    extra = c.get("embedkit_args") or ""
    others = [n for n in names if n != "embedkit"]
    title = ("### Service: embedkit serve" + (f" vs {', '.join(others)}" if others else "") + ", /v1/embeddings"
             + (f" (`embedkit serve {extra}`)" if extra else ""))
    lines = [title, "",
             f"Closed-loop clients on 127.0.0.1 sending LCQMC sentences, {c.get('rounds', '?')} rounds × "
             f"{c.get('duration_s', '?')} s per phase, servers alternating phase by phase; {c.get('infinity', '')}. "
             f"In-process `Encoder.encode` (batch {c.get('inprocess_batch', '?')}, runtime "
             f"{ip.get('runtime', 'torch')}) in the same run: {_num(ip.get('sentences_per_s'))} sentences/s."
             + "".join(f" {n} ran runtime `{rt}`." for n, rt in (c.get("embedkit_runtime") or {}).items())
             + (f" Load generator: {c['client']}." if c.get("client") else ""), "",
             *_table(head, rows, "l" + "r" * (len(head) - 1)), ""]
    for name, tgt in res.get("targets", {}).items():
        lines.append(f"- {name.replace('_', ' ')}: {tgt['target']} → {tgt['value']} "
                     f"({'**met**' if tgt['met'] else '**missed**'})")
    return lines + ["", machine_line(res)]


def render_eval_overhead(res: dict) -> list[str]:
    return ["### Evaluation overhead", "",
            f"{res['what']}: encoding {res['encode_s']:.0f} s for {res['n_sentences_encoded']:,} sentences, "
            f"everything else {res['overhead_s']:.1f} s = **{res['overhead_ratio']:.2%}** of encoding "
            f"(target < {res['target_ratio']:.0%}). With whitening, PCA and JL at 256 on cached vectors: "
            f"{res['with_3_reducers_cached']['overhead_ratio_vs_encode']:.1%}.", "",
            machine_line(res, res.get("command", "python scripts/bench_eval.py"))]


def render_ray(res: dict) -> list[str]:
    sp, ray = res["single_process"], res["ray_local"]
    return ["### Ray encoding (local, one machine)", "",
            f"{res['sentences']:,} {res['corpus']}, {res['model']}, batch {res['batch_size']}.", "",
            *_table(["engine", "sentences/s", "overhead"], [
                ["single process", _num(sp["sentences_per_s"]), f"model load {sp['model_load_s']:.1f} s"],
                [f"Ray, {res['ray_workers']} actors", _num(ray["sentences_per_s_end_to_end"]),
                 f"ray.init {ray['ray_init_s']:.1f} s + {ray['per_job_overhead_s']:.1f} s per job"]], "lrl"), "",
            f"Vectors equal single-process output (max abs difference {res['max_abs_diff_vs_single_process']:.1e}). "
            "On one 2-core machine Ray only adds overhead; it pays off across a cluster.", "",
            machine_line(res, res.get("command", "python scripts/bench_ray.py"))]


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


def render_retrieval(res: dict) -> list[str]:
    caps = []
    if res.get("max_queries"):
        caps.append(f"first {res['max_queries']} queries per split")
    if res.get("pair_limit"):
        caps.append("first " + ", ".join(f"{n:,} pairs of {t}" for t, n in res["pair_limit"].items()))
    rows = []
    for task, t in res["table"].items():
        rows.append([task, f"{t['dense']:.2f}", f"{t['lexical']:.2f}", f"{t['rrf']:.2f}", f"{t['weighted:0.7']:.2f}",
                     f"{t['weighted:0.9']:.2f}", f"{t['hybrid_tuned']:.2f} (w {t['tuned_weight']:.1f})",
                     f"{t['n_queries']:,} / {t['n_corpus']:,}"])
    checks = "; ".join(f"{c['task']} {c['what']} {c['delta']:+.2f} ({'met' if c['met'] else 'missed'})"
                       for c in res["checks"])
    return ["### Hybrid retrieval (dense, BM25, fusion)", "",
            f"{res['what']}{' (' + '; '.join(caps) + ')' if caps else ''}.", "",
            *_table(["task", "dense", "BM25", "RRF", "weighted 0.7", "weighted 0.9", "weighted, tuned on valid",
                     "queries / corpus"], rows), "",
            f"Targets: {checks}. *Command:* `{res['command']}`"]


def render_lexical(res: dict) -> list[str]:
    rows = [[f"{r['n_docs']:,}", _num(r["fit_s"]), _num(r["refresh_s"]), _num(r["add_refresh_s"]),
             _num(r["delete_refresh_s"]), _num(r["save_s"]), _num(r["load_s"]), f"{r['disk_bytes'] / 2**20:.0f}",
             f"{r['query_p50_ms']:.2f}"] for r in res["rows"]]
    return ["### BM25 lexical index (build, re-index, load)", "",
            f"{res['source']}; tokenizer {res['tokenizer']} ({res['tokenize_sentences_per_s']:,} sentences/s).", "",
            *_table(["documents", "fit s", "re-index s", "add 1% + re-index s", "delete 1% + re-index s", "save s",
                     "load s", "disk MiB", "query p50 ms"], rows), "",
            f"{res['note']}. *Command:* `python scripts/bench_lexical.py`"]


def render_compressed(res: dict) -> list[str]:
    out = ["### Compressed indexes (int8, binary + exact rescoring)", ""]
    ret = res.get("retrieval")
    if ret:
        cols = [("none|flat", "float flat"), ("none|int8", "int8"), ("none|hnsw-int8", "hnsw-int8"),
                ("none|binary", "binary"), ("none|binary-hnsw", "binary-hnsw"), ("pca:256|flat", "pca:256 flat"),
                ("pca:256|int8", "pca:256 + int8"), ("pca:256|binary", "pca:256 + binary")]
        cols = [(k, name) for k, name in cols if all(k in t for t in ret["table"].values())]
        rows = []
        for task, t in ret["table"].items():
            flat = t["none|flat"]["mrr@10"]
            rows.append([task] + [f"{t[k]['mrr@10']:.2f}" + ("" if k == "none|flat" else
                                                             f" ({100 * t[k]['mrr@10'] / flat:.1f}%)")
                                  for k, _ in cols])
        first = next(iter(ret["table"].values()))
        rows.append(["code bytes / vector"] + [str(first[k]["code_bytes"]) for k, _ in cols])
        rows.append(["RAM bytes / vector"] + [_num(first[k]["ram_bytes"]) for k, _ in cols])
        met = [c for c in ret["checks"] if c["met"]]
        missed = [f"{c['task']} {c['what']} ({c.get('mrr_ratio', c.get('mrr_lost'))}, "
                  f"{c['bytes_ratio']}× {c['bytes']} bytes)" for c in ret["checks"] if not c["met"]]
        out += ["MRR@10 × 100 on the pairs → retrieval eval (test splits, m3e-small, max_length 64; in brackets: "
                "% of float flat). RAM bytes include graph links (HNSW) and, for binary, the row → id array; "
                "binary keeps its float32 vectors on disk, memory-mapped, and rescores the Hamming top k × 10 "
                "exactly.", "", *_table(["task"] + [name for _, name in cols], rows), "",
                f"Targets (int8 ≥ 99% at 4× fewer code bytes; binary ≥ 96% at ≥ 16× fewer RAM bytes; pca:256 + "
                f"int8 ≤ 0.5 points lost at ≥ 8× fewer code bytes): {len(met)} of {len(ret['checks'])} met"
                + (f"; missed: {'; '.join(missed)}" if missed else "") + ".", ""]
    syn = res.get("synthetic")
    if syn:
        rows = [[r["config"].replace("none|", "").replace("|", " + "), str(r["bytes_per_vector"]["code"]),
                 _num(r["bytes_per_vector"]["ram"]), _num(r["bytes_per_vector"]["disk"]),
                 _num(r["rss_anon_after_search_mib"], 0), _num(r["rss_file_after_search_mib"], 0),
                 f"{r['p50_ms']:.2f}", f"{r['recall@10']:.3f}", _num(r["build_s"], 0)] for r in syn["rows"]]
        out += [f"At {syn['n']:,} synthetic {syn['dim']}-d vectors through `EmbedIndex` (build, load, one query "
                f"per call, {syn['queries']} queries; recall@10 against exact float search in {syn['dim']}-d). "
                "RSS anon: the process's own memory after load and search. RSS file: page-cache pages of the "
                "memory-mapped vectors mapped into the process (shared and reclaimable; the build had just "
                "written the file, so all of it was cached and a page fault maps whole cached folios):", "",
                *_table(["index", "code B", "RAM B/vector", "disk B/vector", "RSS anon MiB", "RSS file MiB",
                         "p50 ms", "recall@10", "build s"], rows), ""]
    return out + [machine_line(res)]


def render_writes(res: dict) -> list[str]:
    out = ["### Writes: delta segments against the full rewrite", "",
           f"`{res['command']}` ({res['date'][:10]}; {res['notes']}).", "",
           "| index | N | add 1 doc: bytes / ms | add 1,000 docs: bytes / ms | full rewrite: bytes / s | "
           "search p50 ms, 0 / 10 / 50 segments | compacted (10 / 50) | ratio 10 seg | compaction s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        sp = r["search_p50_ms"]
        out.append(f"| {r['index']} | {r['n']:,} | {r['add_1']['bytes']:,} / {r['add_1']['seconds'] * 1000:.1f} | "
                   f"{r['add_1000']['bytes']:,} / {r['add_1000']['seconds'] * 1000:.0f} | "
                   f"{r['full_rewrite']['bytes']:,} / {r['full_rewrite']['seconds']:.2f} | "
                   f"{sp['0']:.2f} / {sp['10']:.2f} / {sp['50']:.2f} | "
                   f"{r['compacted_10_p50_ms']:.2f} / {r['compacted_50_p50_ms']:.2f} | "
                   f"{r['search_10_segments_ratio']:.2f}× | {r['compaction_50']['seconds']:.2f} |")
    t = res["targets"]
    a, b = t["one_doc_add_bytes"], t["search_10_segments"]
    out += ["", f"Targets at N = {a['n']:,}: a 1-document add writes {a['measured_bytes']:,} bytes against "
            f"{a['full_rewrite_bytes']:,} for the full rewrite — **{'met' if a['met'] else 'missed'}** "
            f"({a['target']}); search with 10 segments is {b['measured']:.2f}× the compacted index — "
            f"**{'met' if b['met'] else 'missed'}** ({b['target']})."]
    return out


def _elsewhere(target: str):
    """A renderer kept in its own ``scripts/perf_*.py`` module (``"module:function"``), which receives
    this module's table and machine-line helpers; imported when a result of its kind is rendered."""
    module, name = target.split(":")

    def render(res: dict) -> list[str]:
        import importlib

        return getattr(importlib.import_module(module), name)(res, _table, machine_line)

    return render


RENDERERS = {"compressed": render_compressed, "encode": render_encode, "search": render_search, "demo": render_demo,
             "build_memory": render_build_memory, "serve": render_serve, "eval_overhead": render_eval_overhead,
             "ray": render_ray, "retrieval": render_retrieval, "lexical": render_lexical, "writes": render_writes,
             "calibration": render_calibration}
RENDERERS.update({name: _elsewhere(target) for name, target in {
    "documents": "perf_documents:render_documents", "documents_overlap": "perf_documents:render_overlap",
    "finetune": "perf_finetune:render_finetune", "finetune_cmrc": "perf_finetune:render_finetune_cmrc",
    "finetune_grid": "perf_finetune:render_finetune_grid",
    "open": "perf_open:render_open", "reembed": "perf_reembed:render_reembed",
    "reader_lock": "perf_reader_lock:render_reader_lock", "faults": "perf_reliability:render_faults",
    "soak": "perf_reliability:render_soak"}.items()})


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


def _machines(obj, where: str = "") -> list[tuple[str, dict]]:
    """Every ``machine`` record in a result, with where it sits (a run merged from another machine
    carries its own)."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "machine" and isinstance(v, dict):
                out.append((where + "/machine", v))
            else:
                out += _machines(v, f"{where}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _machines(v, f"{where}[{i}]")
    return out


def cpu_problems(res: dict, name: str) -> list[str]:
    """Why a result cannot be shown as one CPU's numbers: it names no CPU, or it holds runs from more
    than one CPU (model or kernel flags) and no ``mixed_cpus`` note says so."""
    found = _machines(res)
    if not found or not any(m.get("cpu") for _, m in found):
        return [f"{name}: names no CPU (record machine_info() from scripts/benchlib.py)"]
    kinds = {(m.get("cpu"), tuple(m.get("cpu_flags") or ())) for _, m in found}
    if len(kinds) > 1 and not res.get("mixed_cpus"):
        where = ", ".join(f"{w} = {m.get('cpu')} [{' '.join(m.get('cpu_flags') or ())}]" for w, m in found)
        return [f"{name}: mixes CPUs without a 'mixed_cpus' note saying so ({where})"]
    return []


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
            block = render(res)
            if not any("*Machine:*" in line for line in block) and isinstance(res.get("machine"), dict):
                block += ["", machine_line(res)]  # every table names the CPU it was measured on
            if res.get("mixed_cpus"):
                block += ["", f"*Mixed CPUs:* {res['mixed_cpus']}"]
            lines += block + [""]
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
    problems = [p for name, res, path in load_results(Path(args.results).resolve()) for p in cpu_problems(res, path.name)]
    for problem in problems:
        print(f"perf_table: {problem}", file=sys.stderr)
    if args.check and problems:
        return 1
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
