"""The README table of ``scripts/bench_reembed.py`` (re-embedding a live index), for perf_table.py."""

from __future__ import annotations


def render_reembed(res: dict, table, machine_line) -> list[str]:
    met, lat = res["met"], res.get("latency_ms_during") or {}
    head = ["what", "measured", "target", ""]
    rows = [["failed requests (searches + adds)", f"{res['failed_requests']} of {res['requests']:,}", "0",
             "met" if met["failed_requests"] else "**missed**"],
            ["lost writes (adds during the re-embed, looked up after)", f"{res['lost_writes']} of {res['adds']:,}", "0",
             "met" if met["lost_writes"] else "**missed**"],
            ["switch (writer lock held: last writes + commit)", f"{res['switch_s']:.2f} s", f"< {res['targets']['switch_s']} s",
             "met" if met["switch_s"] else "**missed**"],
            ["server on the new model afterwards (`/info`)", res["server_model_after"].rsplit("/", 1)[-1], res["new_model"],
             "met" if met["server_follows"] else "**missed**"]]
    return [f"### Re-embedding a live {res['n']:,}-document index ({res['old_model']} → {res['new_model']})", "",
            f"`embedkit index reembed` in one process while `embedkit serve --backend torch` answers {res['clients']} "
            f"closed-loop clients (searches, and an add every few requests) in another: re-embed "
            f"{res['reembed_s']:.0f} s, {res['writes_caught_up']} writes caught up; request latency during it p50 "
            f"{lat.get('p50', float('nan')):.0f} ms, p99 {lat.get('p99', float('nan')):.0f} ms, max "
            f"{lat.get('max', float('nan')):.0f} ms.", "",
            *table(head, rows, "lrrl"), "", machine_line(res)]
