"""Shared click options, and the small specs they fill.

A group of options reaches a command as one frozen dataclass (``corpus``, ``encoder``, ``engine``,
``milvus``) instead of one parameter per option. Only click and the import-free constants load here."""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path

import click

from ..constants import CORPUS_FORMATS, DEFAULT_RUNTIME, ENGINES, POOLINGS, RUNTIME_CHOICES


@dataclass(frozen=True)
class CorpusSpec:
    """How to read a corpus file (``embedkit.corpus.iter_corpus`` keywords)."""

    fmt: str | None = None
    text_field: str = "text"
    id_field: str = "id"
    column: str | None = None
    id_column: str | None = None

    def kwargs(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def iter(self, path: Path, stats=None):
        from ..corpus import iter_corpus

        return iter_corpus(path, stats=stats, **self.kwargs())

    def count(self, path: Path) -> int | None:
        """An upper bound on the documents in ``path`` (its line count; None if unreadable), read
        cheaply in binary so IVF lists can be sized for the whole corpus before streaming it."""
        try:
            with open(path, "rb") as f:
                return max(1, sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b"")))
        except OSError:
            return None


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder to load and how it runs (``embedkit.encoder.Encoder`` keywords)."""

    model: str | None = None
    pooling: str = "model"
    max_length: int = 64
    batch_size: int = 32
    device: str | None = None
    backend: str = DEFAULT_RUNTIME

    def make(self):
        from ..encoder import Encoder

        return Encoder(self.model, pooling=self.pooling, max_length=self.max_length, batch_size=self.batch_size,
                       device=self.device, backend=self.backend)


@dataclass(frozen=True)
class EngineSpec:
    """Where the vectors are computed: this process, or a Ray cluster."""

    engine: str = "local"
    address: str | None = None
    num_workers: int | None = None

    @property
    def ray(self) -> bool:
        return self.engine == "ray"


@dataclass(frozen=True)
class MilvusSpec:
    """Where a Milvus-backed index keeps its collection."""

    milvus_uri: str | None = None
    milvus_collection: str | None = None

    @property
    def given(self) -> bool:
        return bool(self.milvus_uri or self.milvus_collection)

    def params(self, params: dict | None = None) -> dict:
        """``params`` plus the connection keys the Milvus backend reads (``uri``, ``collection``)."""
        out = dict(params or {})
        if self.milvus_uri:
            out["uri"] = self.milvus_uri
        if self.milvus_collection:
            out["collection"] = self.milvus_collection
        return out


def grouped(spec_cls, name: str, *options):
    """Add ``options`` (click option decorators, in the order ``--help`` lists them) to a command, which
    receives their values as one ``spec_cls`` instance under the keyword ``name``."""
    names = [f.name for f in fields(spec_cls)]

    def decorator(f):
        @functools.wraps(f)
        def command(*args, **kwargs):
            kwargs[name] = spec_cls(**{n: kwargs.pop(n) for n in names})
            return f(*args, **kwargs)

        for option in reversed(options):
            command = option(command)
        return command

    return decorator


#: the environment variable that forces a runtime for every command (``--backend`` wins over it)
RUNTIME_ENVVAR = "EMBEDKIT_RUNTIME"


def backend_option(default: str = DEFAULT_RUNTIME, **kwargs):
    return click.option("--backend", type=click.Choice(RUNTIME_CHOICES), default=default, envvar=RUNTIME_ENVVAR,
                        **kwargs)


corpus_options = grouped(
    CorpusSpec, "corpus_spec",
    click.option("--id-column", default=None, help="tsv: id column (number or header name)."),
    click.option("--column", default=None, help="tsv: text column, a 0-based number or a header name."),
    click.option("--id-field", default="id", show_default=True,
                 help="jsonl: field holding the id (default: the line number)."),
    click.option("--text-field", default="text", show_default=True, help="jsonl: field holding the text."),
    click.option("--format", "fmt", type=click.Choice(CORPUS_FORMATS), default=None,
                 help="Input format (default: from the file extension; .txt otherwise)."),
)

encoder_options = grouped(
    EncoderSpec, "encoder",
    backend_option(show_default=True, help="Execution backend (env EMBEDKIT_RUNTIME; onnx: exported once, cached; "
                                          "auto: measured here, see `embedkit runtimes`)."),
    click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True),
    click.option("--max-length", type=click.IntRange(min=1), default=64, show_default=True),
    click.option("--pooling", type=click.Choice(POOLINGS), default="model", show_default=True),
    click.option("--model", "-m", default=None, envvar="EMBEDKIT_MODEL", show_envvar=True,
                 help="Model directory or hub id (default: m3e-small, see README)."),
)

engine_options = grouped(
    EngineSpec, "engine",
    click.option("--num-workers", type=click.IntRange(min=1), default=None,
                 help="ray: encoder actors (default: one per GPU, else one per CPU)."),
    click.option("--address", default=None, envvar="RAY_ADDRESS",
                 help="ray: 'auto' (this node's cluster), host:port, ray://host:port; default: a local "
                      "Ray started for this job."),
    click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                 help="ray: encode on a Ray cluster (Ray Data actor pool; output is Parquet shards)."),
)

milvus_options = grouped(
    MilvusSpec, "milvus",
    click.option("--milvus-collection", default=None,
                 help="Milvus collection name (default: embedkit_<output dir name>)."),
    click.option("--milvus-uri", default=None, envvar="EMBEDKIT_MILVUS_URI",
                 help="--index milvus[:TYPE]: a Milvus Lite file (*.db, default OUTPUT/milvus.db) or "
                      "http://host:19530. Credentials: MILVUS_TOKEN or MILVUS_USER/MILVUS_PASSWORD."),
)
