"""HTTP endpoints. Request models come from the app's :class:`~embedkit.server.schemas.Schemas` (its limits).

(No ``from __future__ import annotations`` here: FastAPI must see the per-app model classes.)
"""

import secrets
import time
from importlib.resources import files
from typing import Optional

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from embedkit.corpus import Doc

from . import schemas as sc
from .errors import ApiError
from .service import Service
from .settings import Settings

_ERRORS = {code: {"model": sc.ErrorResponse} for code in (400, 401, 413, 422, 503)}


def get_service(request: Request) -> Service:
    svc = getattr(request.app.state, "service", None)
    if svc is None:
        raise ApiError(503, "not_ready", "the index is not loaded yet", {"Retry-After": "1"})
    return svc


def make_auth(api_key: Optional[str]):
    bearer = HTTPBearer(auto_error=False, description="The server's API key (--api-key / EMBEDKIT_API_KEY).")

    async def require_key(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
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

    @open_.get("/health", response_model=sc.HealthResponse, responses={503: {"model": sc.ErrorResponse}},
               tags=["service"])
    async def health(request: Request):
        """200 once the model and index are loaded; 503 before. Never needs the API key."""
        svc = get_service(request)
        return {"status": "ok", "count": len(svc.index)}

    @api.post("/search", response_model=sc.SearchResponse, tags=["search"])
    async def search(body: s.SearchRequest, svc: Service = Depends(get_service)):
        """Ranked hits for one query or several."""
        t0 = time.perf_counter()
        queries = [body.query] if body.query is not None else list(body.queries)
        results, count = await svc.search(queries, body.top_k, body.filter, body.min_score)
        return JSONResponse({"results": results, "count": count,
                             "took_ms": round((time.perf_counter() - t0) * 1000, 3)})

    @api.post("/encode", response_model=sc.EncodeResponse, tags=["embeddings"])
    async def encode(body: s.EncodeRequest, svc: Service = Depends(get_service)):
        """Texts to vectors: by default the index's query path (reducer applied, normalised as the metric needs)."""
        return JSONResponse(await svc.encode(list(body.texts), body.reduce, body.normalize))

    @api.post("/v1/embeddings", response_model=sc.EmbeddingsResponse, tags=["embeddings"])
    async def embeddings(body: s.EmbeddingsRequest, svc: Service = Depends(get_service)):
        """OpenAI-compatible embeddings (the index's query-path vectors). ``encoding_format=base64`` sends
        little-endian float32 bytes; ``dimensions`` below the index dimension keeps the first components
        and re-normalises them."""
        return JSONResponse(await svc.embeddings(list(body.input), body.encoding_format, body.dimensions))

    @api.get("/v1/models", response_model=sc.ModelList, tags=["embeddings"])
    async def models(svc: Service = Depends(get_service)):
        return {"object": "list", "data": [{"id": svc.model_name, "object": "model", "created": 0,
                                            "owned_by": "embedkit"}]}

    @api.post("/documents", response_model=sc.AddDocumentsResponse, status_code=201, tags=["documents"],
              responses={409: {"model": sc.ErrorResponse}})
    async def add_documents(body: s.AddDocumentsRequest, svc: Service = Depends(get_service)):
        """Add documents (new ids only); persisted atomically, visible to the next search."""
        docs = [Doc(d.id, d.text, d.metadata) for d in body.documents]
        return JSONResponse(await svc.add_documents(docs), status_code=201)

    @api.get("/documents/{doc_id:path}", tags=["documents"], responses={404: {"model": sc.ErrorResponse}})
    async def get_document(doc_id: str, svc: Service = Depends(get_service)):
        return await svc.get_document(doc_id)

    @api.delete("/documents/{doc_id:path}", response_model=sc.DeleteResponse, tags=["documents"],
                responses={404: {"model": sc.ErrorResponse}})
    async def delete_document(doc_id: str, svc: Service = Depends(get_service)):
        """Delete one document; persisted atomically, gone from the next search."""
        return await svc.delete_document(doc_id)

    @api.get("/info", response_model=sc.InfoResponse, tags=["service"])
    async def info(svc: Service = Depends(get_service)):
        """Model, pooling, reducer, dimension, count, index type and the limits in force."""
        return svc.info()

    @api.get("/metrics", tags=["service"], response_class=Response)
    async def metrics(request: Request):
        """Prometheus text format: request counts and latencies, batch sizes, queue depth."""
        m = request.app.state.metrics
        return Response(m.render(), media_type=m.content_type)

    return [open_, api]
