"""One error shape for every 4xx/5xx: ``{"error": {"type": ..., "message": ...}}``.

:func:`to_error` maps every exception the service can meet to (status, type, message, headers);
one handler, registered for each exception class, turns that into the response. Unexpected
exceptions become a 500 whose message names no internals (the traceback goes to the server log).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from embedkit.errors import EmbedkitError, IndexFormatError, InputError

from .batching import BatcherClosedError, QueueFullError

log = logging.getLogger("embedkit.server")

_HTTP_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "validation_error", 429: "rate_limited",
               503: "unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, type: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type, message, headers


class ClientDisconnected(Exception):
    """The client went away while its request waited; nobody is left to answer."""


def error_body(type: str, message: str) -> dict:
    return {"error": {"type": type, "message": message}}


def error_response(status: int, type: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(type, safe_text(message)), status_code=status, headers=headers)


def safe_text(message: str) -> str:
    """``message`` as UTF-8 can send it: a lone surrogate echoed from the input becomes ``\\ud800``."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def scrub_paths(message: str, index_dir) -> str:
    """A client's message without the server's filesystem layout: the index directory is named by
    its last component only."""
    from pathlib import Path

    d = Path(index_dir)
    for form in {str(d.resolve()), str(d.absolute()), str(d)}:
        if form not in ("", "."):
            message = message.replace(form, d.name or "the index")
    return message


def to_error(exc: BaseException, retry_after_s: int = 1,
             content_type: str | None = None) -> tuple[int, str, str, dict[str, str] | None]:
    if isinstance(exc, ApiError):
        return exc.status, exc.type, exc.message, exc.headers
    if isinstance(exc, RequestValidationError):
        return validation_error(exc.errors(), content_type)
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):  # FastAPI: "error parsing the body"
            return 400, "invalid_json", _unparsable(exc.__cause__), None
        return exc.status_code, _HTTP_TYPES.get(exc.status_code, "http_error"), str(exc.detail), \
            getattr(exc, "headers", None)
    if isinstance(exc, ClientDisconnected):
        return 499, "client_closed_request", "the client disconnected before the answer", None
    if isinstance(exc, QueueFullError):
        return 503, "overloaded", str(exc), {"Retry-After": str(retry_after_s)}
    if isinstance(exc, BatcherClosedError):
        return 503, "unavailable", str(exc), {"Retry-After": str(retry_after_s)}
    if isinstance(exc, InputError):
        return 422, "invalid_request", str(exc), None
    if isinstance(exc, IndexFormatError):
        return 500, "index_error", f"the index could not be read or written: {exc}", None
    if isinstance(exc, EmbedkitError):
        return 500, "embedkit_error", str(exc), None
    return 500, "internal_error", "internal server error (details are in the server log)", None


def _unparsable(cause: ValueError) -> str:
    """Why a body the JSON parser gave up on was refused (not a syntax error: those are ``json_invalid``)."""
    digits = re.search(r"value has (\d+) digits", str(cause))
    if digits:
        return (f"the request body is not valid JSON here: a number has {digits.group(1)} digits "
                f"(at most {sys.get_int_max_str_digits()})")
    return f"the request body is not valid JSON: {type(cause).__name__}: {str(cause)[:200]}"


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(app, scope) -> list[str]:
    """Every method some route serves at this path (Starlette's own 405 names only the first route's)."""
    return [m for m in _METHODS
            if any(route.matches({**scope, "method": m})[0] == Match.FULL for route in app.router.routes)]


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        status, type_, message, headers = to_error(exc, retry_after_s, request.headers.get("content-type"))
        state = request.app.state
        if isinstance(exc, QueueFullError) and getattr(state, "metrics", None) is not None:
            state.metrics.rejected.inc()
        if status < 500 and getattr(state, "settings", None) is not None:
            message = scrub_paths(message, state.settings.index_dir)
        if status == 405:
            allow = allowed_methods(request.app, request.scope)
            headers = dict(headers or {}, Allow=", ".join(allow))
            message = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allow)}"
        if status >= 500 and type_ not in ("overloaded", "unavailable", "not_ready"):
            log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc,
                      exc_info=(type(exc), exc, exc.__traceback__))
        return error_response(status, type_, message, headers)

    for cls in (ApiError, ClientDisconnected, RequestValidationError, StarletteHTTPException, QueueFullError, BatcherClosedError,
                EmbedkitError, Exception):
        app.add_exception_handler(cls, handle)


# ------------------------------------------------------------------------------------------------
# validation errors -> one readable message naming the field, the rule and the offending value
# ------------------------------------------------------------------------------------------------
def validation_error(errors: list[dict], content_type: str | None = None) -> tuple[int, str, str, None]:
    for e in errors:
        if tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), (bytes, bytearray)):
            return 415, "unsupported_media_type", (f"the request body must be JSON sent with 'Content-Type: "
                                                   f"application/json' (got {content_type!r})"), None
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            where = e.get("loc", ())
            pos = f" at position {where[1]}" if len(where) > 1 and isinstance(where[1], int) else ""
            return 400, "invalid_json", f"the request body is not valid JSON{pos}: {ctx.get('error', e['msg'])}", None
    parts = [_describe(e) for e in errors[:3]]
    if len(errors) > 3:
        parts.append(f"and {len(errors) - 3} more problem(s)")
    return 422, "validation_error", "; ".join(parts), None


def _describe(e: dict) -> str:
    loc = _loc(e.get("loc", ()))
    msg = e.get("msg", "invalid")
    if e.get("type") == "missing" and loc == "request body":
        return "the request body is required (a JSON object)"
    if e.get("type") == "missing":
        return f"{loc}: field required"
    return f"{loc}: {msg}{_got(e)}"


def _loc(loc) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif "[" in str(p) or str(p) in ("str", "int", "float", "bool", "list", "dict"):
            continue  # pydantic's union-member tags say nothing to a client
        else:
            out += f".{p}" if out else str(p)
    return out or "request body"


def _got(e: dict) -> str:
    if "input" not in e or e.get("type") in ("missing",):
        return ""
    v: Any = e["input"]
    if isinstance(v, str):
        if e.get("type") == "string_too_long":
            return f" (got {len(v)} characters)"
        return f" (got {safe_text(json.dumps(v[:60], ensure_ascii=False))}{'…' if len(v) > 60 else ''})"
    if isinstance(v, (list, tuple)):
        return f" (got a list of {len(v)})"
    if isinstance(v, dict):
        return "" if not v else f" (got an object with {len(v)} field(s))"
    return f" (got {json.dumps(v) if isinstance(v, (int, float, bool)) or v is None else type(v).__name__})"
