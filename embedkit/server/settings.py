"""Server settings: one immutable object built by the CLI (or by hand) and passed to ``create_app``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from embedkit.constants import SERVE_DEFAULT_RUNTIME
from embedkit.errors import InputError

API_KEY_ENV = "EMBEDKIT_API_KEY"
INDEX_ENV = "EMBEDKIT_INDEX"
SETTINGS_ENV = "EMBEDKIT_SERVER_SETTINGS"  # JSON of every setting but the API key (``to_env``)


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to know; every limit is enforced per request.

    ``max_queue`` bounds the texts waiting for the encoder (queued, not yet in a running batch);
    a request that would push it past the bound is answered 503 with ``Retry-After``."""

    index_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)
    # request limits
    max_texts: int = 256           # texts (queries, inputs, documents) in one request
    max_chars: int = 4096          # characters in one text (a query, an input to encode)
    max_document_chars: int = 100_000  # characters in one document (POST /documents; split into passages)
    max_top_k: int = 100
    max_body_bytes: int = 2 * 1024 * 1024
    max_filter_fields: int = 16
    # micro-batching
    batching: bool = True
    max_batch: int = 64            # texts per encoder call
    max_batch_tokens: int = 16384  # estimated tokens (characters + 2 per text) per encoder call
    batch_wait_ms: float = 2.0     # how long the first request of a batch waits for company
    max_queue: int = 2048          # texts waiting for the encoder
    retry_after_s: int = 1
    # processes and threads
    workers: int = 1               # server processes (more than one: read-only, documents cannot change)
    encoder_threads: int | None = None  # torch threads in this process (None: torch's default)
    worker_threads: int = 4        # searches, post-processing and index writes (the encoder has its own)
    search_threads: int = 1        # OpenMP threads per FAISS search call
    freeze_gc: bool = True         # gc.freeze() the loaded model's objects (the serving process's choice)
    # model
    backend: str = SERVE_DEFAULT_RUNTIME  # "auto": bf16 (OpenVINO or torch) where native, else torch
    device: str | None = None
    model_name: str | None = None  # the name /v1/embeddings reports (default: the model dir's name)
    log_level: str = "info"

    def __post_init__(self):
        object.__setattr__(self, "index_dir", Path(self.index_dir))
        if self.api_key == "":
            object.__setattr__(self, "api_key", None)  # no key given (an empty EMBEDKIT_API_KEY)
        if self.api_key is not None:
            _check_api_key(self.api_key)
        _positive = ("max_texts", "max_chars", "max_document_chars", "max_top_k", "max_body_bytes", "max_filter_fields",
                     "max_batch", "max_batch_tokens", "max_queue", "retry_after_s", "workers", "worker_threads",
                     "search_threads")
        for name in _positive:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise InputError(f"setting {name} must be a positive integer, got {v!r}")
        if self.encoder_threads is not None and (not isinstance(self.encoder_threads, int)
                                                 or isinstance(self.encoder_threads, bool) or self.encoder_threads <= 0):
            raise InputError(f"setting encoder_threads must be a positive integer or None, got {self.encoder_threads!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise InputError(f"port must be in 0..65535, got {self.port!r}")
        if not 0 <= float(self.batch_wait_ms) <= 1000:
            raise InputError(f"batch_wait_ms must be in 0..1000, got {self.batch_wait_ms!r}")
        if self.max_queue < self.max_texts:
            raise InputError(f"max_queue ({self.max_queue}) must be at least max_texts ({self.max_texts}), "
                             "or a full-size request could never be accepted")

    @property
    def read_only(self) -> bool:
        """Several processes serve one index read-only: none of them may change its documents."""
        return self.workers > 1

    @classmethod
    def from_env(cls, index_dir=None, environ=None, **overrides) -> Settings:
        """Settings for a deployed app (``uvicorn api.asgi:app``, or each ``embedkit serve --workers`` process).

        Taken from ``EMBEDKIT_SERVER_SETTINGS`` (JSON written by :meth:`to_env`) when set; the index
        directory from ``index_dir`` or ``EMBEDKIT_INDEX``; the API key from ``EMBEDKIT_API_KEY``
        unless given. ``overrides`` win over all of these."""
        env = os.environ if environ is None else environ
        values: dict = {}
        if env.get(SETTINGS_ENV):
            try:
                values = json.loads(env[SETTINGS_ENV])
            except ValueError as e:
                raise InputError(f"{SETTINGS_ENV} is not valid JSON: {e}") from None
            known = {f.name for f in fields(cls)} - {"api_key"}
            unknown = sorted(set(values) - known) if isinstance(values, dict) else values
            if unknown:
                raise InputError(f"{SETTINGS_ENV} must be a JSON object of known settings; got {unknown!r}")
        if index_dir is None:
            index_dir = values.pop("index_dir", None) or env.get(INDEX_ENV)
        else:
            values.pop("index_dir", None)
        if not index_dir:
            raise InputError(f"no index to serve: set {INDEX_ENV} to an index directory")
        values.update(overrides)
        if values.get("api_key") is None:
            values["api_key"] = env.get(API_KEY_ENV) or None
        return cls(index_dir=index_dir, **values)

    def to_env(self) -> dict[str, str]:
        """Environment variables from which :meth:`from_env` rebuilds these settings (the API key
        travels in ``EMBEDKIT_API_KEY``, never in the JSON)."""
        d = asdict(self)
        key = d.pop("api_key")
        d["index_dir"] = str(self.index_dir)
        env = {SETTINGS_ENV: json.dumps(d)}
        if key is not None:
            env[API_KEY_ENV] = key
        return env

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)

    def public(self) -> dict:
        """The settings a client may see (/info): never the API key."""
        d = asdict(self)
        d.pop("api_key")
        d["index_dir"] = str(self.index_dir)
        d["auth"] = self.api_key is not None
        d["read_only"] = self.read_only
        return d


def _check_api_key(key) -> None:
    """A key a client can send in ``Authorization: Bearer <key>``: printable ASCII, no surrounding spaces
    (a blank key would turn auth off, a non-ASCII one could never match a header)."""
    if not isinstance(key, str):
        raise InputError(f"the API key must be a string, got {type(key).__name__}")
    if not key.strip():
        raise InputError("the API key is only whitespace; give a real key (printable ASCII) or none at all")
    if key != key.strip():
        raise InputError("the API key has leading or trailing whitespace, which an Authorization header "
                         "cannot carry; remove it")
    bad = next((c for c in key if not 0x21 <= ord(c) <= 0x7E), None)
    if bad is not None:
        raise InputError(f"the API key contains {bad!r} (U+{ord(bad):04X}); keys must be printable ASCII "
                         "without spaces, as an Authorization header carries them")
