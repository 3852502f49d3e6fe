"""HTTP endpoints. Request models come from the app's :class:`~embedkit.server.schemas.Schemas` (its limits).

(No ``from __future__ import annotations`` here: FastAPI must see the per-app model classes.)
"""

import asyncio
import secrets
import time
from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from embedkit.corpus import Doc

from . import schemas as sc
from .errors import ApiError, ClientDisconnected
from .service import Service
from .settings import Settings

_ERRORS = {code: {"model": sc.ErrorResponse} for code in (400, 401, 413, 422, 503)}
_WRITE_ERRORS = {code: {"model": sc.ErrorResponse} for code in (403, 404, 409)}
DOCS_ASSETS = "/docs-assets"  # Swagger UI's files, from the fastapi-offline package (no CDN)


class JSONBytes(Response):
    """A body serialised already (by orjson, in the service)."""
    media_type = "application/json"


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, coro):
    """Await ``coro``, cancelling it (and so its queued texts) as soon as the client disconnects."""
    work = asyncio.ensure_future(coro)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        gone.cancel()
        raise
    if work in done:
        gone.cancel()
        return work.result()
    work.cancel()
    raise ClientDisconnected()


def get_service(request: Request) -> Service:
    svc = getattr(request.app.state, "service", None)
    if svc is None:
        raise ApiError(503, "not_ready", "the index is not loaded yet", {"Retry-After": "1"})
    return svc


Svc = Annotated[Service, Depends(get_service)]


def make_auth(api_key: str | None):
    bearer = HTTPBearer(auto_error=False, description="The server's API key (--api-key / EMBEDKIT_API_KEY).")

    async def require_key(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if api_key is None:
            return
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), api_key.encode()):
            what = "missing" if creds is None else "invalid"
            raise ApiError(401, "unauthorized", f"{what} API key: send the header 'Authorization: Bearer <key>'",
                           {"WWW-Authenticate": "Bearer"})

    return require_key


def build_routers(s: sc.Schemas, settings: Settings) -> list[APIRouter]:
    open_ = APIRouter()
    deps = [Depends(make_auth(settings.api_key))] if settings.api_key else []
    api = APIRouter(dependencies=deps, responses=_ERRORS)
    page = files("embedkit.server").joinpath("static", "index.html").read_text(encoding="utf-8")

    @open_.get("/", include_in_schema=False)
    async def search_page() -> HTMLResponse:
        return HTMLResponse(page)

    @open_.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title="embedkit - API docs",
                                   swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png")

    @open_.get("/health", response_model=sc.HealthResponse, responses={503: {"model": sc.ErrorResponse}},
               tags=["service"])
    async def health(request: Request):
        """200 once the model and index are loaded; 503 before. Never needs the API key."""
        svc = get_service(request)
        return {"status": "ok", "count": len(svc.index)}

    @api.post("/search", response_model=sc.SearchResponse, tags=["search"])
    async def search(body: s.SearchRequest, request: Request, svc: Svc):
        """Ranked hits for one query or several."""
        t0 = time.perf_counter()
        queries = [body.query] if body.query is not None else list(body.queries)
        return JSONBytes(await unless_disconnected(request, svc.search(queries, body.top_k, body.filter,
                                                                       body.min_score, t0, mode=body.mode,
                                                                       min_probability=body.min_probability,
                                                                       unit=body.unit)))

    @api.post("/similarity", response_model=sc.SimilarityResponse, tags=["search"])
    async def similarity(body: s.SimilarityRequest, request: Request, svc: Svc):
        """Score each pair [a, b] through the index's query path; on a calibrated index (`embedkit
        calibrate`) also P(similar) and whether it is a match. Batched with the other endpoints."""
        return JSONBytes(await unless_disconnected(request, svc.similarity([tuple(p) for p in body.pairs])))

    @api.post("/encode", response_model=sc.EncodeResponse, tags=["embeddings"])
    async def encode(body: s.EncodeRequest, request: Request, svc: Svc):
        """Texts to vectors: by default the index's query path (reducer applied, normalised as the metric needs)."""
        return JSONBytes(await unless_disconnected(request, svc.encode(list(body.texts), body.reduce,
                                                                       body.normalize)))

    @api.post("/v1/embeddings", response_model=sc.EmbeddingsResponse, tags=["embeddings"])
    async def embeddings(body: s.EmbeddingsRequest, request: Request, svc: Svc):
        """OpenAI-compatible embeddings (the index's query-path vectors). ``encoding_format=base64`` sends
        little-endian float32 bytes; ``dimensions`` below the index dimension keeps the first components
        and re-normalises them."""
        return JSONBytes(await unless_disconnected(request, svc.embeddings(list(body.input), body.encoding_format,
                                                                           body.dimensions)))

    @api.get("/v1/models", response_model=sc.ModelList, tags=["embeddings"])
    async def models(svc: Svc):
        return {"object": "list", "data": [{"id": svc.model_name, "object": "model", "created": 0,
                                            "owned_by": "embedkit"}]}

    @api.post("/documents", response_model=sc.AddDocumentsResponse, status_code=201, tags=["documents"],
              responses=_WRITE_ERRORS)
    async def add_documents(body: s.AddDocumentsRequest, svc: Svc):
        """Add documents (new ids only); persisted atomically, visible to the next search. A server
        with several worker processes is read-only (403)."""
        docs = [Doc(d.id, d.text, d.metadata) for d in body.documents]
        return JSONBytes(await svc.add_documents(docs), status_code=201)

    @api.get("/documents/{doc_id:path}", tags=["documents"], responses={404: {"model": sc.ErrorResponse}})
    async def get_document(doc_id: str, svc: Svc):
        return await svc.get_document(doc_id)

    @api.delete("/documents/{doc_id:path}", response_model=sc.DeleteResponse, tags=["documents"],
                responses=_WRITE_ERRORS)
    async def delete_document(doc_id: str, svc: Svc):
        """Delete one document; persisted atomically, gone from the next search. A server with
        several worker processes is read-only (403)."""
        return await svc.delete_document(doc_id)

    @api.get("/info", response_model=sc.InfoResponse, tags=["service"])
    async def info(svc: Svc):
        """Model, pooling, reducer, dimension, count, index type and the limits in force."""
        return svc.info()

    @api.get("/metrics", tags=["service"], response_class=Response)
    async def metrics(request: Request):
        """Prometheus text format: request counts and latencies, batch sizes, queue depth."""
        m = request.app.state.metrics
        return Response(m.render(), media_type=m.content_type)

    return [open_, api]
