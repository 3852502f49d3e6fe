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
    srv = res.get("server_stats") if res.get("server") else None
    met = res["steps"] >= 100_000 and res["divergences"] == 0 and srv is not None
    if srv is None:
        where = ", no server"
    else:
        by = res.get("steps_by_machine", {})
        where = (f", a running server ({by.get('server', 0):,} of the steps on the server machine, "
                 f"{res.get('rest_steps', 0):,} of them through REST; the server answered {srv['requests']:,} "
                 f"requests, {srv['5xx']} with a 5xx, and logged {srv['log_tracebacks']} tracebacks)")
    return ["### Stateful soak of the index and a running server against an in-memory model", "",
            f"{res['what']}: {res['steps']:,} steps in {res['runs']} runs, {res['writer_processes']} writer processes"
            f"{where}, {res['seconds']:.0f} s: **{res['divergences']} divergences**. Target (issue 19): ≥ 100,000 "
            f"steps with 2 writer processes and a server, 0 divergences: **{'met' if met else 'missed'}** (this run: "
            f"{res['steps']:,} steps{'' if srv else ', without a server'}). The CI tests run ≥ 2,000 steps "
            "(tests/test_index_stateful.py) and 200 with the server (tests/test_server_stateful.py).", "",
            machine_line(res)]
