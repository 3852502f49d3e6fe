"""README tables of ``scripts/fault_matrix.py`` (faults injected at every write step) and
``scripts/soak_index.py`` (the stateful soak), for perf_table.py."""

from __future__ import annotations

COUNTS = ("lost_commits", "phantom_commits", "torn_states", "check_failures", "next_write_failures", "stray_files")


def render_faults(res: dict, table, machine_line) -> list[str]:
    head = ["write", "mode", "faults injected", *[c.replace("_", " ") for c in COUNTS]]
    rows = []
    for op, modes in res["operations"].items():
        for mode, r in modes.items():
            rows.append([f"`{op}`", mode, f"{r['injected']:,}", *[str(r.get(c, 0)) for c in COUNTS]])
    t = res["totals"]
    bad = sum(t.get(c, 0) for c in COUNTS) + t.get("unexpected_errors", 0) + t.get("object_diverged", 0)
    return ["### Faults injected at every write step", "",
            f"{res['what']}. Modes: `once` (one ENOSPC), `sticky` (the disk stays full), `kill` (the writer process "
            f"gets SIGKILL before that step). {t['injected']:,} faults in {res['seconds']:.0f} s.", "",
            *table(head, rows, "ll" + "r" * (len(head) - 2)), "",
            f"Target (issue 19): 0 lost and 0 phantom commits, `check` clean after every fault: "
            f"**{'met' if bad == 0 else 'missed'}** ({bad} violations in all).", "", machine_line(res)]


def render_soak(res: dict, table, machine_line) -> list[str]:
    met = res["steps"] >= 100_000 and res["divergences"] == 0 and res.get("server")
    return ["### Stateful soak of the index against an in-memory model", "",
            f"{res['what']}: {res['steps']:,} steps in {res['runs']} runs, {res['writer_processes']} writer processes"
            f"{', a running server' if res.get('server') else ', no server'}, {res['seconds']:.0f} s: "
            f"**{res['divergences']} divergences**. Target (issue 19): ≥ 100,000 steps with 2 writer processes and a "
            f"server, 0 divergences: **{'met' if met else 'missed'}** (this run: {res['steps']:,} steps"
            f"{'' if res.get('server') else ', without a server'}). The CI test runs ≥ 2,000 steps "
            "(tests/test_index_stateful.py).", "", machine_line(res)]
