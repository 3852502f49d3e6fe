"""``embedkit runtimes``: measure the installed encoder runtimes on this machine and show what
``--backend auto`` runs (the table on stdout, logs on stderr)."""

from __future__ import annotations

import json

import click

from ..constants import POOLINGS, RUNTIMES


@click.command()
@click.option("--model", "-m", default=None, envvar="EMBEDKIT_MODEL", show_envvar=True,
              help="Model directory or hub id (default: m3e-small, see README).")
@click.option("--pooling", type=click.Choice(POOLINGS), default="model", show_default=True)
@click.option("--max-length", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default=None, help="cpu, cuda ... (default: CUDA if available).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads (default: the library's).")
@click.option("--bound", type=click.FloatRange(0, 100, max_open=True), default=0.5, show_default=True,
              help="Spearman points (x100) a runtime may lose against fp32 on the labelled sample and still be chosen.")
@click.option("--only", "only", multiple=True, type=click.Choice(RUNTIMES),
              help="Measure only these runtimes (repeatable; torch, the reference, always runs).")
@click.option("--remeasure", is_flag=True, help="Measure again even when a decision is cached (and cache the new one).")
@click.option("--json", "as_json", is_flag=True, help="The decision as one JSON object.")
def runtimes(model, pooling, max_length, batch_size, device, threads, bound, only, remeasure, as_json):
    """Time every installed runtime on this machine, check it against fp32, and show the choice of
    --backend auto (cached per CPU, threads, model and library versions)."""
    from ..encoder import Encoder
    from ..runtimes.measure import auto_runtime, cache_key, cache_path, candidates_for

    enc = Encoder(model, pooling=pooling, max_length=max_length, batch_size=batch_size, device=device,
                  threads=threads)  # torch: the reference; auto_runtime measures from it
    names = list(only) or candidates_for(enc.device)
    if remeasure:
        cache_path(cache_key(enc, names, bound)).unlink(missing_ok=True)
    _, decision = auto_runtime(enc, bound=bound, candidates=names)
    if as_json:
        click.echo(json.dumps(decision.to_dict(), ensure_ascii=False))
        return
    key = decision.key
    click.echo(f"machine: {key.get('cpu')} [{', '.join(key.get('cpu_flags', []))}], {key.get('threads')} threads")
    click.echo(f"model:   {enc.model_name} (pooling {pooling}, max length {max_length}, batch {batch_size})")
    click.echo(f"{'runtime':<18}{'sentences/s':>12}{'vs torch':>10}{'min cos':>9}{'Δ Spearman':>12}  note")
    ref = next(m.sentences_per_s for m in decision.measurements if m.name == "torch")
    for m in decision.measurements:
        speed = "-" if m.sentences_per_s is None else f"{m.sentences_per_s:.1f}"
        ratio = "-" if m.sentences_per_s is None else f"{m.sentences_per_s / ref:.2f}x"
        cos = "-" if m.min_cosine is None else f"{m.min_cosine:.4f}"
        delta = "-" if m.delta is None else f"{m.delta:+.2f}"
        note = m.skipped or ("" if m.qualifies(decision.bound) else f"outside the {decision.bound:g}-point bound")
        mark = "*" if m.name == decision.choice else " "
        click.echo(f"{mark}{m.name:<17}{speed:>12}{ratio:>10}{cos:>9}{delta:>12}  {note}")
    how = "cached" if decision.cached else f"measured in {decision.seconds:.1f} s"
    click.echo(f"auto -> {decision.choice} ({how}; {decision.path or 'not cached'})")
