"""The ``embedkit`` command line: one click group; results to stdout, logs to stderr.

Subcommands are imported lazily so ``embedkit --help`` never imports torch or faiss."""

from __future__ import annotations

import importlib
import logging
import sys

import click

# name -> "module:attribute" of a click command; loaded only when that command runs.
COMMANDS = {
    "encode": ("embedkit.commands:encode", "Encode sentences to a .npy file of vectors (+ ids)."),
    "index": ("embedkit.commands:index", "Build, extend, shrink and inspect index directories."),
    "search": ("embedkit.commands:search", "Search an index directory."),
    "eval": ("embedkit.evaluation.cli:eval_cmd", "Evaluate encoders/reducers on Chinese STS tasks."),
    "serve": ("api.cli:serve", "Serve an index over HTTP (REST search, OpenAI embeddings)."),
    "demo": ("embedkit.commands:demo", "Build an index over the bundled Chinese corpus and query it."),
}


class EmbedkitUsageError(click.ClickException):
    """An EmbedkitError surfaced by the CLI: one line on stderr, exit status 1, no traceback."""

    exit_code = 1

    def show(self, file=None):
        click.echo(f"embedkit: error: {self.format_message()}", err=True)


class LazyGroup(click.Group):
    def invoke(self, ctx):
        from .errors import EmbedkitError

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


class _StderrFormatter(logging.Formatter):
    def format(self, record):
        return f"embedkit: {record.getMessage()}" if record.levelno < logging.WARNING else \
            f"embedkit: {record.levelname.lower()}: {record.getMessage()}"


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(_StderrFormatter())
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(logging.WARNING)
    logging.getLogger("embedkit").setLevel(level)
    logging.getLogger("api").setLevel(level)


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
    """Console entry point."""
    cli.main(args=argv, prog_name="embedkit")


if __name__ == "__main__":  # pragma: no cover
    main()
