"""``embedkit eval``: evaluate encoders x poolings x reducers on Chinese STS tasks and write a report.

Imports nothing heavy at module level (torch, matplotlib and scipy load when the command runs)."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import click

from ..constants import EVAL_PROTOCOLS, POOLINGS, TEXT_NORMALIZATIONS

log = logging.getLogger("embedkit.evaluation")

DEFAULT_REDUCERS = "none,whitening:256,pca:256,jl:256"


def _default_data_dir() -> str:
    env = os.environ.get("EMBEDKIT_STS_DATA")
    if env:
        return env
    here = Path(__file__).resolve().parents[2]  # the checkout root for an editable install (embedkit/cli/..)
    for cand in (Path.cwd().parent / "shared" / "data" / "sts-zh", here.parent / "shared" / "data" / "sts-zh"):
        if cand.is_dir():
            return str(cand)
    return "../shared/data/sts-zh"


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _int_list(value: str | None, what: str) -> list[int]:
    out = []
    for v in _csv(value):
        try:
            out.append(int(v))
        except ValueError:
            raise click.BadParameter(f"{v!r} is not an integer", param_hint=what) from None
    return out


def expand_reducers_cli(reducers: str | None, dims: str | None) -> list[str]:
    from ..evaluation.evaluator import expand_reducers

    return expand_reducers(_csv(reducers), _int_list(dims, "--dims"))


@click.command("eval")
@click.option("--data", "data_dir", default=None, metavar="DIR",
              help="senteval_cn root: DIR/<TASK>/<TASK>.<split>.data [default: $EMBEDKIT_STS_DATA or "
                   "../shared/data/sts-zh].")
@click.option("--tasks", default=None, metavar="A,B", help="Tasks to run [default: every task folder in DIR].")
@click.option("--models", default=None, metavar="M1,M2",
              help="Model directories or hub ids [default: the default encoder, m3e-small].")
@click.option("--poolings", default="model", show_default=True, metavar="P1,P2",
              help=f"Poolings: {', '.join(POOLINGS)}.")
@click.option("--reducers", default=DEFAULT_REDUCERS, show_default=True, metavar="R1,R2",
              help="Reducers: none, whitening[:k][:beta=B,gamma=G], pca[:k], jl:k, auto[:k] (chosen on "
                   "each task's valid split). A kind without k, except auto, is expanded over --dims.")
@click.option("--dims", default=None, metavar="K1,K2", help="Dimensions for reducers given without one.")
@click.option("--protocol", type=click.Choice(EVAL_PROTOCOLS), default="paper", show_default=True,
              help="paper: fit on the evaluated splits (BERT-whitening's chn/eval.py); fit-train: fit on train; "
                   "fit-valid: fit on valid, score test.")
@click.option("--normalize", type=click.Choice(TEXT_NORMALIZATIONS), default="none", show_default=True,
              help="Text normalisation before encoding (t2s/s2t: OpenCC Traditional<->Simplified).")
@click.option("--split", "splits", default=None, metavar="S1,S2",
              help="Splits to score: train, valid, test [default: all for paper, test for fit-train].")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N pairs of each split.")
@click.option("--fit-corpus", type=click.Path(dir_okay=False), default=None,
              help="fit-train: fit reducers on this file (one sentence a line) instead of the train split.")
@click.option("--fit-limit", type=click.IntRange(min=2), default=None,
              help="fit-train: only the first N train pairs are used for fitting.")
@click.option("--max-length", type=click.IntRange(min=1), default=None,
              help="Token limit [default: the paper's 64, 128 for PAWSX].")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default=None, help="torch device [default: cuda if available, else cpu].")
@click.option("-o", "--output", "out_dir", default="reports/eval", show_default=True, metavar="DIR",
              help="Where results.json, report.md and report.html go.")
@click.option("--cache-dir", default=".eval-cache", show_default=True, metavar="DIR",
              help="Encoding cache (re-runs with other reducers do not re-encode).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the encoding cache.")
@click.option("--no-plots", is_flag=True, help="Leave the figures out of report.html.")
@click.option("--progress/--no-progress", default=None, help="Encoding progress bars [default: if stderr is a terminal].")
@click.option("--retrieval", is_flag=True,
              help="Retrieval instead of STS: corpus = unique sentence2, queries = sentence1 with a positive pair; "
                   "MRR@10, Recall@1/10, nDCG@10 per reducer x --index x --mode.")
@click.option("--index", "index_types", default="flat", show_default=True, metavar="I1,I2",
              help="--retrieval: index types (flat, hnsw, ivf-flat, ...) or FAISS factory strings.")
@click.option("--mode", "modes", default="dense,lexical,hybrid", show_default=True, metavar="M1,M2",
              help="--retrieval: dense, lexical, rrf, hybrid (weight tuned on valid), weighted:W.")
@click.option("--max-queries", type=click.IntRange(min=1), default=None,
              help="--retrieval: only the first N queries of each split (the corpus stays whole).")
@click.option("--documents", "documents", type=click.Path(exists=True, path_type=Path), default=None,
              help="--retrieval over long documents: a SQuAD-style JSON file (e.g. CMRC 2018) or a BEIR directory "
                   "(corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv); one index per --read setting.")
@click.option("--read", "read", default="truncate,passages", show_default=True, metavar="S1,S2",
              help="--documents: how documents are read: truncate[:MAX_LENGTH] | passages[:TOKENS[:OVERLAP]].")
@click.option("--concat", default="1", show_default=True, metavar="N1,N2",
              help="--documents (SQuAD): join every N consecutive paragraphs into one document.")
@click.option("--tune-documents", type=click.Path(exists=True, path_type=Path), default=None,
              help="--documents: tune the hybrid weight on this other file (e.g. CMRC trial; default weight 0.7).")
def eval_cmd(data_dir, tasks, models, poolings, reducers, dims, protocol, normalize, splits, limit, fit_corpus,
             fit_limit, max_length, batch_size, device, out_dir, cache_dir, no_cache, no_plots, progress,
             retrieval, index_types, modes, max_queries, documents, read, concat, tune_documents):
    """Evaluate encoders on Chinese STS tasks (Spearman of cosine vs label) and write a report.

    \b
    Example:
      embedkit eval --tasks STS-B,LCQMC --models ../shared/models/m3e-small \\
          --reducers none,whitening:256 --split test -o reports/eval
    """
    from ..evaluation.evaluator import run_grid
    from ..evaluation.report import markdown_tables, write_report

    t0 = time.perf_counter()
    if progress is None:
        progress = sys.stderr.isatty()
    if documents is not None:
        return _documents_eval(documents, models, read, concat, tune_documents, modes, max_queries, splits,
                               batch_size, device, out_dir)
    if retrieval:
        from ..evaluation.retrieval_report import retrieval_eval

        if len(_csv(models)) > 1:
            raise click.BadParameter("--retrieval evaluates one model at a time", param_hint="--models")
        run = retrieval_eval(
            data_dir or _default_data_dir(), out_dir=out_dir, plots=not no_plots, echo=click.echo,
            tasks=_csv(tasks), splits=_csv(splits) or ["test"], model=(_csv(models) or [None])[0],
            reducers=expand_reducers_cli(reducers, dims), index_types=_csv(index_types), modes=_csv(modes),
            limit=limit, max_queries=max_queries, max_length=max_length, batch_size=batch_size,
            cache_dir=None if no_cache else cache_dir, device=device, progress=progress)
        log.info("wrote %s in %.1fs", ", ".join(str(p) for p in run["paths"].values()), run["seconds"])
        return
    results = run_grid(
        data_dir or _default_data_dir(), tasks=_csv(tasks), models=_csv(models) or [None],
        poolings=_csv(poolings), reducers=_csv(reducers), dims=_int_list(dims, "--dims"),
        protocol=protocol, splits=_csv(splits), limit=limit, fit_corpus=fit_corpus, fit_limit=fit_limit,
        max_length=max_length, batch_size=batch_size, cache_dir=None if no_cache else cache_dir,
        device=device, progress=progress, normalize=normalize)
    paths = write_report(results, out_dir, plots=not no_plots)
    failed = [c for c in results["cells"] if c.get("error")]
    click.echo(markdown_tables(results))
    c = results["cache"]
    log.info("encoded %d sentences in %.1fs (cache: %d hits, %d misses); wall time %.1fs",
             c["n_encoded"], c["encode_s"], c["hits"], c["misses"], time.perf_counter() - t0)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    if failed:
        log.warning("%d of %d cells could not be computed (see report.md)", len(failed), len(results["cells"]))


def _documents_eval(path, models, read, concat, tune_path, modes, max_queries, splits, batch_size, device, out_dir):
    """``eval --documents``: long-document retrieval, one index per reading setting; a table on stdout,
    ``documents.json`` in OUT_DIR."""
    import json

    from ..evaluation.documents import markdown_table, run_documents_eval
    from ..fsutil import atomic_write_json

    if len(_csv(models)) > 1:
        raise click.BadParameter("--documents evaluates one model at a time", param_hint="--models")
    mode_list = _csv(modes)
    bad = [m for m in mode_list if m not in ("dense", "lexical", "hybrid")]
    if bad:
        raise click.BadParameter(f"{bad[0]!r}: --documents scores dense, lexical and hybrid", param_hint="--mode")
    from ..models import resolve_model

    result = run_documents_eval(path, model=resolve_model((_csv(models) or [None])[0]), settings=_csv(read),
                                concats=_int_list(concat, "--concat") or [1], modes=mode_list, tune_path=tune_path,
                                max_queries=max_queries, split=(_csv(splits) or ["test"])[0],
                                batch_size=batch_size, device=device)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out_dir) / "documents.json", result)
    click.echo(markdown_table(result))
    log.info("wrote %s in %.1fs (%s)", Path(out_dir) / "documents.json", result["seconds"],
             json.dumps(result["hybrid"].get("weight")))
