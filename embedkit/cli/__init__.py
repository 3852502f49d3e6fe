"""The ``embedkit`` command line: one click group; results to stdout, logs to stderr.

One module per command group (encode, index, search, eval, serve, demo, calibrate, finetune), shared options in ``options``.
Subcommands are imported lazily so ``embedkit --help`` never imports torch or faiss."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from .serve import SERVICE

# name -> "module:attribute" of a click command; loaded only when that command runs.
COMMANDS = {
    "encode": ("embedkit.cli.encode:encode", "Encode sentences to a .npy file of vectors (+ ids)."),
    "index": ("embedkit.cli.index:index", "Build, extend, shrink and inspect index directories."),
    "search": ("embedkit.cli.search:search", "Search an index directory."),
    "eval": ("embedkit.cli.eval:eval_cmd", "Evaluate encoders/reducers on Chinese STS tasks."),
    "serve": ("embedkit.cli.serve:serve", "Serve an index over HTTP (REST search, OpenAI embeddings)."),
    "demo": ("embedkit.cli.demo:demo", "Build an index over the bundled Chinese corpus and query it."),
    "calibrate": ("embedkit.cli.calibrate:calibrate", "Fit calibrated similarity probabilities on labelled pairs."),
    "runtimes": ("embedkit.cli.runtimes:runtimes", "Measure the encoder runtimes here; show what --backend auto runs."),
    "finetune": ("embedkit.cli.finetune:finetune", "Fine-tune the encoder on labelled pairs (kept only if it beats the base)."),
}


class EmbedkitUsageError(click.ClickException):
    """An EmbedkitError surfaced by the CLI: one line on stderr, exit status 1, no traceback."""

    exit_code = 1

    def show(self, file=None):
        click.echo(f"embedkit: error: {self.format_message()}", err=True)


class LazyGroup(click.Group):
    def invoke(self, ctx):
        from ..errors import EmbedkitError

        try:
            return super().invoke(ctx)
        except EmbedkitError as e:
            raise EmbedkitUsageError(str(e)) from None

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        mod, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(mod), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


OWN_LOGGERS = ("embedkit", SERVICE)  # the library's and the service's loggers

# Third-party records below these levels are dropped by embedkit's handler (their loggers are left alone).
QUIET_BELOW = {
    "sentence_transformers": logging.ERROR,
    "transformers": logging.ERROR,  # only reaches here if its propagation is on (it has its own handler)
    "grpc._server": logging.CRITICAL,  # Milvus Lite's embedded gRPC server logs unimplemented RPCs as errors
}
_QUANTIZER = f"{os.sep}onnxruntime{os.sep}quantization{os.sep}"  # logs "consider pre-processing" on root


def _is_own(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in OWN_LOGGERS)


class _StderrHandler(logging.StreamHandler):
    """embedkit's one handler, on the root logger: embedkit's records as its own loggers' levels let them
    through, third-party records from WARNING (ERROR with -q), minus the known noise in QUIET_BELOW."""

    def __init__(self, quiet: bool):
        super().__init__(sys.stderr)
        self.third_party_level = logging.ERROR if quiet else logging.WARNING

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_own(record.name):
            return super().filter(record)
        floor = self.third_party_level
        for name, level in QUIET_BELOW.items():
            if record.name == name or record.name.startswith(name + "."):
                floor = max(floor, level)
        if record.name == "root" and _QUANTIZER in (record.pathname or ""):
            floor = max(floor, logging.ERROR)
        return record.levelno >= floor and super().filter(record)

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        return f"embedkit: {msg}" if record.levelno < logging.WARNING else \
            f"embedkit: {record.levelname.lower()}: {msg}"


def setup_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr through one embedkit handler on the root logger (replacing the one a previous call
    added); set the level of embedkit's own loggers only, never the root's or a third party's."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(h)
    root.addHandler(_StderrHandler(quiet))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(package_name="embedkit")
def cli(verbose: int, quiet: bool):
    """embedkit: Chinese-first sentence embeddings, whitening/JL reduction, FAISS search.

    \b
    Quick start:
      embedkit index build corpus.txt -o indexes/my --reduce whitening:256 --index hnsw
      embedkit search indexes/my "怎么开通信用卡" -k 5
    """
    setup_logging(verbose, quiet)


def main(argv=None) -> None:
    """Console entry point. As the application (not the library) it may set process-wide defaults: model
    loading progress bars stay off stderr unless the user asked for them (HF_HUB_DISABLE_PROGRESS_BARS)."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    cli.main(args=argv, prog_name="embedkit")
