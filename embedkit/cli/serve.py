"""``embedkit serve``: run the REST service with uvicorn. Heavy imports happen inside the command."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import click

from ..constants import SERVE_DEFAULT_RUNTIME
from .options import backend_option

SERVICE = "embedkit.server"  # the service package (its modules settings and app; its logger): the one place it is named


def _service(module: str):
    """``SERVICE.<module>``, imported when the command runs (``settings`` is light, ``app`` loads FastAPI)."""
    return importlib.import_module(f"{SERVICE}.{module}")


@click.command()
@click.argument("index_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", envvar="EMBEDKIT_API_KEY", show_envvar=True, default=None,
              help="Require 'Authorization: Bearer KEY' on every endpoint except /health, / and /docs.")
@click.option("--batching/--no-batching", default=True, show_default=True,
              help="Merge concurrent requests into encoder batches.")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most texts in one encoder call.")
@click.option("--batch-wait-ms", type=click.FloatRange(0, 1000), default=2.0, show_default=True,
              help="How long a request waits for others to share its batch.")
@click.option("--max-queue", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Texts waiting for the encoder before new requests get 503 + Retry-After.")
@click.option("--max-texts", type=click.IntRange(min=1), default=256, show_default=True,
              help="Texts (queries, inputs, documents) per request.")
@click.option("--max-chars", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Characters per query or text to encode.")
@click.option("--max-document-chars", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Characters per document added with POST /documents (split into passages when long).")
@click.option("--max-top-k", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=2 * 1024 * 1024, show_default=True)
@click.option("--search-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="OpenMP threads per FAISS search (concurrent requests search in parallel anyway).")
@click.option("--worker-threads", type=click.IntRange(min=1), default=4, show_default=True,
              help="Threads for searches and index writes (the encoder has its own).")
@backend_option(default=SERVE_DEFAULT_RUNTIME, show_default=True,
                help="Encoder runtime (env EMBEDKIT_RUNTIME); auto = the fastest installed runtime within 0.5 "
                     "Spearman points of fp32, measured on this machine once per model and cached "
                     "(`embedkit runtimes` shows the table).")
@click.option("--device", default=None, help="cpu, cuda ... (default: CUDA if available).")
@click.option("--model-name", default=None, help="Model name reported by /v1/embeddings (default: the "
                                                 "model directory's name).")
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes, each with its own model copy; more than one serves the index read-only "
                   "(POST/DELETE /documents answer 403).")
@click.option("--encoder-threads", type=click.IntRange(min=1), default=None,
              help="Torch threads per process (default: torch's own; with --workers N: cores / N).")
@click.option("--freeze-gc/--no-freeze-gc", default=True, show_default=True,
              help="gc.freeze() the loaded model's objects, so garbage collections do not pause requests.")
@click.option("--max-batch-tokens", type=click.IntRange(min=1), default=16384, show_default=True,
              help="Most estimated tokens (characters + 2 per text) in one encoder call.")
def serve(index_dir: Path, access_log: bool, **options):
    """Serve the index in INDEX_DIR: /search, /encode, /v1/embeddings, /documents, /health, /info,
    /metrics, a search page at / and API docs at /docs."""
    from ..errors import EmbedkitError
    from ..index import current_generation, read_manifest

    if options["encoder_threads"] is None and options["workers"] > 1:
        options["encoder_threads"] = max(1, (os.cpu_count() or 1) // options["workers"])
    settings = _service("settings").Settings(index_dir=index_dir, **options)  # every other option is a setting
    # Cheap checks first, so a wrong path fails in a second with one clear line.
    try:
        read_manifest(current_generation(index_dir))
    except EmbedkitError as e:
        raise EmbedkitError(f"cannot serve index {str(index_dir)!r}: {e}") from None

    _service("run").run_server(settings, access_log=access_log)
