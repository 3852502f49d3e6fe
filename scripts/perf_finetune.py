"""The README tables of ``scripts/bench_finetune.py`` (fine-tuning m3e-small), for perf_table.py."""

from __future__ import annotations


def _model(res: dict) -> str:
    return str(res["settings"].get("model", "?")).rstrip("/").rsplit("/", 1)[-1]


def _settings(res: dict) -> str:
    s, f, c = res["settings"], res["finetune"], res.get("card", {})
    hp = c.get("hyperparameters", {})
    stop = " (stopped by the time budget)" if c.get("stopped_by_time_budget") else ""
    return (f"{c.get('loss', '?')}, lr {hp.get('lr', s.get('lr'))}, batch {hp.get('batch_size', s.get('batch_size'))}, "
            f"max length {hp.get('max_length', s.get('max_length'))}, warm-up {hp.get('warmup_ratio', s.get('warmup_ratio'))}, "
            f"{f['steps']} steps in {res['times']['finetune_s']:.0f} s{stop}; time budget {s.get('time_budget')} s, "
            f"seed {s.get('seed')}. Guard (valid {f['metric']}): base {f['base']:.2f} → best {f['best']:.2f} at step "
            f"{f['best_step']}: {'accepted' if f['accepted'] else '**refused** (kept for this measurement only)'}")


def _targets(res: dict) -> list[str]:
    if not res.get("targets"):
        return []
    def value(t):
        return f"{t['value']:+.2f}" if " test " in t["target"] else f"{t['value']}"

    def target(t):  # "X test drop <= 1.0" (older results) reads as the change it bounds
        return t["target"].replace("test drop <= ", "test change ≥ −")

    return ["Targets (issue 18): " + "; ".join(f"{target(t)}: {value(t)} (**{'met' if t['met'] else 'missed'}**)"
                                               for t in res["targets"]) + ".", ""]


def render_finetune(res: dict, table, machine_line) -> list[str]:
    d = res["data"]
    intro = (f"{_model(res)} fine-tuned on the first {d['train_pairs']:,} {res['task']} train pairs; the guard scored on "
             f"the first {d['valid_pairs']:,} valid pairs; Spearman × 100 of cosine, test split, first "
             f"{d['test_limit']:,} pairs of each task, base and tuned in one `embedkit eval` grid. {_settings(res)}.")
    rows = [[r["task"] + (" (trained on)" if r["task"] == res["task"] else ""), f"{r['base']:.2f}", f"{r['tuned']:.2f}",
             f"{r['delta']:+.2f}"] for r in res["rows"]]
    return [f"### Fine-tuning: {_model(res)} on {res['task']} (CoSENT)", "", intro, "",
            *table(["task", "base", "tuned", "Δ"], rows, "lrrr"), "", *_targets(res), machine_line(res)]


def render_finetune_cmrc(res: dict, table, machine_line) -> list[str]:
    d = res["data"]
    intro = (f"{_model(res)} fine-tuned with in-batch negatives on {d['train_pairs']:,} CMRC 2018 trial (question, passage) "
             f"pairs (10% held back for the guard); CMRC 2018 dev, {d['dev']['queries']:,} questions over "
             f"{d['dev']['documents']:,} passages, read as `{d['setting']}`, a real flat index, metrics × 100. "
             f"{_settings(res)}.")
    rows = [[r["model"], f"{r['mrr@10']:.2f}", f"{r['recall@1']:.2f}", f"{r['recall@10']:.2f}", f"{r['ndcg@10']:.2f}"]
            for r in res["rows"]]
    return ["### Fine-tuning: in-batch negatives on CMRC 2018 (retrieval)", "", intro, "",
            *table(["model", "MRR@10", "R@1", "R@10", "nDCG@10"], rows, "lrrrr"), "", *_targets(res), machine_line(res)]


def render_finetune_grid(res: dict, table, machine_line) -> list[str]:
    d, s, ch = res["data"], res["settings"], res["chosen"]
    lrs = sorted({c["lr"] for c in res["cells"]})
    batches = sorted({c["batch_size"] for c in res["cells"]})
    by = {(c["lr"], c["batch_size"]): c for c in res["cells"]}
    rows = []
    for bs in batches:
        row = [f"batch {bs} ({-(-s['pairs_budget'] // bs)} steps)"]
        for lr in lrs:
            c = by.get((lr, bs))
            mark = "**" if c is not None and (lr, bs) == (ch["lr"], ch["batch_size"]) else ""
            row.append("—" if c is None else f"{mark}{c['delta']:+.2f}{mark}")
        rows.append(row)
    base = res["cells"][0]["valid_base"]
    intro = (f"How the defaults were chosen: {_model(res)} fine-tuned with CoSENT on {res['task']} train pairs, every "
             f"cell on the same {s['pairs_budget']:,} training pairs (equal compute; warm-up and linear decay run to "
             f"the end), seed {s['seed']}; gain in Spearman × 100 on the first {d['valid_pairs']:,} pairs of the "
             f"*valid* split (base {base:.2f}; the test split is not looked at). Chosen: lr {ch['lr']:g}, batch "
             f"{ch['batch_size']} ({ch['delta']:+.2f}), by the rule: {ch.get('rule', 'the best valid gain')} (best cell "
             f"{ch.get('best_delta', ch['delta']):+.2f}); the library's defaults when it ran: lr "
             f"{res['defaults_before']['lr']:g}, batch {res['defaults_before']['batch_size']}.")
    return [f"### Fine-tuning defaults: learning rate × batch on {res['task']}", "", intro, "",
            *table(["", *(f"lr {lr:g}" for lr in lrs)], rows, "l" + "r" * len(lrs)), "", machine_line(res)]
