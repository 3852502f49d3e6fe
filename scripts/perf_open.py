"""The README table of ``scripts/bench_open.py`` (one-shot commands on a 1M-document index), for perf_table.py."""

from __future__ import annotations


def render_open(res: dict, table, machine_line) -> list[str]:
    runs, t = res["runs"], res["targets"]
    mib = res["files_bytes"] / 2**20
    names = [n for n in ("baseline", "this") if n in runs]
    label = {"this": "this code", "baseline": f"before (`{res.get('baseline', '?')}`)"}
    head = ["command", *[f"{label[n]}: s / peak RSS MiB" for n in names], "target"]
    target = {"info": f"≤ {t['info_s']} s", "add": f"≤ {t['add_s']} s, RSS ≤ {t['rss_vs_files']}× files",
              "search": f"≤ {t['search_s']} s, RSS ≤ {t['rss_vs_files']}× files"}
    what = {"info": "`index info`", "add": "`index add` (1 document)", "search": "`search` (1 query, k = 10)"}
    rows = [[what[c], *[f"{runs[n][c]['seconds']:.2f} / {runs[n][c]['peak_rss_mib']:,.0f}" for n in names], target[c]]
            for c in ("info", "add", "search")]
    floor = res.get("floor")
    met = res["met"]
    lines = [f"### Opening a {res['n']:,}-document index (flat, d = {res['dim']})", "",
             f"Each command is its own process on the same index ({mib:,.0f} MiB of files); best of "
             f"{res.get('repeats', '?')} runs. `add` and `search` load m3e-small (torch) to encode.", "",
             *table(head, rows, "l" + "r" * (len(head) - 1)), "",
             f"Targets: info **{'met' if met['info'] else 'missed'}**, add **{'met' if met['add'] else 'missed'}**, "
             f"search **{'met' if met['search'] else 'missed'}**, peak RSS of add and search ≤ 1.2× the files "
             f"**{'met' if met['rss'] else 'missed'}** (add {res['rss_vs_files']['add']:.2f}×, search "
             f"{res['rss_vs_files']['search']:.2f}×; a flat search reads every vector, and the mapped file's pages "
             "count in RSS)."]
    if floor:
        lines += ["", f"The floor under `add` and `search` on this machine: a process that only imports "
                      f"sentence-transformers, loads m3e-small and encodes one sentence takes "
                      f"{floor['seconds']:.2f} s and {floor['peak_rss_mib']:,.0f} MiB."]
    return lines + ["", machine_line(res)]
