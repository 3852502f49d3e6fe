"""The README table of ``scripts/bench_reader_lock.py`` (searches while a writer holds the lock), for perf_table.py."""

from __future__ import annotations

LABELS = {"idle": "idle (no writer)", "locked": "another process holds the writer lock",
          "locked_queued": "… and this object's own writer is queued on it"}


def render_reader_lock(res: dict, table, machine_line) -> list[str]:
    target = res["targets"]["p99_locked_over_idle"]
    idle = res["phases"]["idle"]["p99_ms"]
    head = ["phase", "searches", "p50 ms", "p99 ms", "max ms", "p99 / idle"]
    rows = [[LABELS.get(name, name), f"{p['searches']:,}", f"{p['p50_ms']:.2f}", f"{p['p99_ms']:.2f}",
             f"{p['max_ms']:.2f}", f"{p['p99_ms'] / idle:.2f}×"] for name, p in res["phases"].items()]
    waited = (res.get("writer") or {}).get("waited_s")
    return [f"### Searches while a writer holds the lock ({res['n']:,} documents, {res['index']}, d = {res['dim']})", "",
            f"Single-query searches (k = {res['k']}, each refreshing against the directory first) on one `EmbedIndex` "
            f"while another process holds the directory's writer lock for {res['hold_s']:g} s"
            + (f"; the queued writer waited {waited:.1f} s, the searches did not" if waited is not None else "") + ".", "",
            *table(head, rows, "lrrrrr"), "",
            f"Target: p99 while locked {target['target']} the idle p99 — measured {target['measured']:.2f}× — "
            f"**{'met' if target['met'] else 'missed'}**.", "", machine_line(res)]
