"""The app factory: ``create_app(settings)`` -> a FastAPI app whose lifespan loads the index once.

All state lives on ``app.state`` (settings, metrics, service, startup_error); nothing at module level.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from embedkit import __version__
from embedkit.errors import EmbedkitError

from .errors import install_error_handlers
from .metrics import Metrics
from .middleware import GuardMiddleware
from .routes import DOCS_ASSETS, build_routers
from .schemas import make_schemas
from .service import Service
from .settings import Settings

log = logging.getLogger("embedkit.server")

WARMUP_TEXT = "预热"


def _load_index(settings: Settings):
    from embedkit.index import EmbedIndex

    if settings.encoder_threads is not None:  # the serving process's own choice (embedkit serve --encoder-threads)
        import torch

        torch.set_num_threads(settings.encoder_threads)
    idx = EmbedIndex.load(settings.index_dir, backend=settings.backend, device=settings.device)
    idx.encoder.encode([WARMUP_TEXT], normalize=False)  # first-call costs are paid before /health says ok
    return idx


def _describe_failure(settings: Settings, e: BaseException) -> str:
    what = str(e) if isinstance(e, EmbedkitError) else f"{type(e).__name__}: {e}"
    return f"cannot serve index {str(settings.index_dir)!r}: {what}"


def create_app(settings: Settings, *, index=None) -> FastAPI:
    """Build the app. ``index`` (an already loaded EmbedIndex) skips loading, for embedding the
    service in another program; by default the lifespan loads ``settings.index_dir``."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            idx = index if index is not None else await asyncio.to_thread(_load_index, settings)
        except Exception as e:
            app.state.startup_error = _describe_failure(settings, e)
            log.debug("index load failed", exc_info=True)
            raise
        frozen = settings.freeze_gc
        if frozen:
            # The loaded model's objects (hundreds of thousands, from torch, transformers, OpenVINO) leave
            # the collector's view: full collections over them were the p99 tail of many single-text
            # clients (scripts/benchmarks/serve_no_freeze_gc.json against serve.json, 32x1).
            gc.collect()
            gc.freeze()
        service = Service(idx, settings, metrics)
        await service.start()
        app.state.service = service
        log.info("serving %s: %d documents, model %s, %s, dim %d; micro-batching %s", settings.index_dir,
                 len(idx), service.model_name, idx.manifest["index"].get("factory", "?"), idx.dim,
                 f"on (max {settings.max_batch} texts, wait {settings.batch_wait_ms:g} ms)" if settings.batching
                 else "off")
        try:
            yield
        finally:
            app.state.service = None
            await service.stop()
            if frozen:
                gc.unfreeze()

    app = FastAPI(title="embedkit", version=__version__, lifespan=lifespan, redoc_url=None, docs_url=None,
                  description="Chinese-first semantic search and OpenAI-compatible embeddings over one "
                              "embedkit index directory.")
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    app.state.startup_error = None
    for router in build_routers(make_schemas(settings), settings):
        app.include_router(router)
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    app.state.openapi_base = None
    app.openapi = lambda: _openapi(app)
    install_error_handlers(app, settings.retry_after_s)
    app.add_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics,
                       startup_error=lambda: app.state.startup_error, retry_after_s=settings.retry_after_s)
    return app


def app_from_env() -> FastAPI:
    """The app of one ``embedkit serve --workers N`` process (uvicorn factory): settings from the environment."""
    return create_app(Settings.from_env())


def _openapi(app: FastAPI) -> dict:
    """The OpenAPI document, with the limits that depend on the loaded index: ``dimensions`` at most
    the index dimension; search ``mode`` lexical/hybrid only when the index has a lexical part;
    ``min_probability`` only when it is calibrated (both re-read on every call: another process may
    add them while the server runs)."""
    import copy

    base = app.state.openapi_base
    if base is None:
        base = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    service = app.state.service
    if service is None:
        return base  # not cached: the index-dependent limits come once it is loaded
    app.state.openapi_base = base
    schema = copy.deepcopy(base)
    comps = schema["components"]["schemas"]
    dims = comps["EmbeddingsRequest"]["properties"]["dimensions"]
    for option in dims.get("anyOf", [dims]):
        if option.get("type") == "integer":
            option["maximum"] = int(service.index.dim)
    idx = service.index
    idx.refresh()
    props = comps["SearchRequest"]["properties"]
    if getattr(idx.store, "lexical", None) is None:
        props["mode"]["enum"] = ["dense"]
        props["mode"]["description"] += " This index has no lexical part: only dense."
    if idx.query_path.calibration is None:
        props["min_probability"] = {"type": "null", "default": None, "title": "Min Probability",
                                    "description": "Only on a calibrated index (embedkit calibrate); this one is not."}
    return schema
