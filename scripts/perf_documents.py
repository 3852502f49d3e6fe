"""The README table of ``scripts/bench_documents.py`` (long-document retrieval), for perf_table.py."""

from __future__ import annotations

SETTING_NOTE = {
    "truncate": "first 64 tokens (embedkit before passages; `--split truncate`)",
    "truncate:512": "first 512 tokens (the model's limit)",
    "passages": "passages, `index build`'s defaults",
}


def render_documents(res: dict, table, machine_line) -> list[str]:
    tasks = {t["task"]: t for t in res["tasks"]}
    intro = (f"{res['data'].rsplit('/', 1)[-1]}: " + "; ".join(
        f"`{name}` {t['documents']:,} documents (median {t['chars_median']:,} characters), {t['queries']:,} questions"
        for name, t in tasks.items()) + f". Model {res['model'].rsplit('/', 1)[-1]}, flat index, one real index per "
        f"setting, metrics ×100 by ir-measures. Hybrid = {res['hybrid']['weight']} · dense + "
        f"{round(1 - res['hybrid']['weight'], 2)} · BM25 (min-max per query), the weight tuned on "
        f"{res['hybrid'].get('tuned_on', '—')} (MRR@10 {res['hybrid'].get('mrr@10', '—')} there).")
    head = ["documents", "read as", "mode", "MRR@10", "R@1", "R@10", "nDCG@10", "vectors/doc", "index MB", "build s"]
    rows = []
    for r in res["rows"]:
        p = r.get("passages") or {}
        note = SETTING_NOTE.get(r["setting"], r["setting"])
        if r["setting"] == "passages" and p.get("max_tokens"):
            note += f" (≤ {p['max_tokens']} tokens, overlap {p['overlap']})"
        rows.append([r["task"], note, r["mode"], f"{r['mrr@10']:.2f}", f"{r['recall@1']:.2f}", f"{r['recall@10']:.2f}",
                     f"{r['ndcg@10']:.2f}", f"{r['vectors_per_doc']:.2f}", f"{r['index_bytes'] / 1e6:.1f}",
                     f"{r['build_seconds']:.1f}"])
    out = ["### Long documents: passages against truncation (CMRC 2018 dev)", "", intro, "",
           *table(head, rows, "lllrrrrrrr"), ""]
    if res.get("targets"):
        out += ["Targets (issue 17): " + "; ".join(
            f"{t['target']} {t['value']} (goal {'≤' if 'gap' in t['target'] or 'build' in t['target'] else '≥'} "
            f"{t['goal']}): **{'met' if t['met'] else 'missed'}**" for t in res["targets"]) + ".", ""]
    return out + [machine_line(res)]


def render_overlap(res: dict, table, machine_line) -> list[str]:
    rows = [[f"`{r['setting']}`", f"{r['mrr@10']:.2f}",
             "—" if r.get("vectors_per_doc") is None else f"{r['vectors_per_doc']:.2f}"] for r in res["rows"]]
    return ["### Long documents: passage size and overlap (CMRC 2018 trial, dense)", "",
            "How the default was chosen, on trial (the dev table above is the report). `passages:TOKENS:OVERLAP`; "
            f"{res['choice']}. Rows without vectors/doc were read from the log of an interrupted run.", "",
            *table(["setting", "MRR@10", "vectors/doc"], rows), "", machine_line(res)]
