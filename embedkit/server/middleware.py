"""Pure ASGI middleware: request body limit, request metrics, readable startup failures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from .errors import error_body
from .metrics import Metrics


class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """Outermost layer of the app.

    * Bodies over ``max_body_bytes`` get 413 (announced by Content-Length: refused before reading;
      chunked: refused as soon as the running total passes the limit).
    * Every HTTP request is counted and timed by route template (``/documents/{doc_id}``, not the id).
    * A failed lifespan startup reports one readable line instead of a traceback.
    * HEAD on a route that serves GET answers as GET does, without the body.
    * A request still running when the server's shutdown grace period ends (uvicorn cancels it) gets
      503 + Retry-After, like any request the stopping server cannot serve, not a 500 and a traceback.
    """

    def __init__(self, app, *, max_body_bytes: int, metrics: Metrics, startup_error: Callable[[], str | None],
                 retry_after_s: int = 1):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.startup_error = startup_error

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        elif scope["type"] == "http":
            if scope.get("method") == "HEAD" and _serves_get(scope):  # HEAD: the GET answer without its body
                scope, send = dict(scope, method="GET"), _without_body(send)
            await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _lifespan_send(self, send):
        async def wrapped(message):
            if message.get("type") == "lifespan.startup.failed":
                message = dict(message, message=self.startup_error() or "startup failed")
            await send(message)

        return wrapped

    async def _http(self, scope, receive, send):
        t0 = time.perf_counter()
        state = {"status": 500, "started": False, "received": 0, "too_big": False}
        limit = self.max_body_bytes
        self.metrics.in_flight.inc()
        try:
            declared = _content_length(scope)
            if declared == -1:
                state["status"] = 400
                await _send_error(send, 400, "bad_request", "the Content-Length header is not a valid number")
                return
            if declared is not None and declared > limit:
                state["status"] = 413
                await _send_error(send, 413, "payload_too_large",
                                  f"the request body is {declared} bytes; the limit is {limit} bytes")
                return

            async def limited_receive():
                message = await receive()
                if message["type"] == "http.request":
                    state["received"] += len(message.get("body", b""))
                    if state["received"] > limit:
                        state["too_big"] = True
                        raise _BodyTooLarge()
                return message

            async def tracking_send(message):
                if state["too_big"]:
                    return  # the app's own reaction to the aborted read is replaced by the 413 below
                if message["type"] == "http.response.start":
                    state["status"] = message["status"]
                    state["started"] = True
                await send(message)

            try:
                await self.app(scope, limited_receive, tracking_send)
            except _BodyTooLarge:
                pass
            except asyncio.CancelledError:  # only uvicorn cancels a request: its shutdown grace period is over
                asyncio.current_task().uncancel()
                if not state["started"]:
                    state["status"] = 503
                    await _send_error(send, 503, "unavailable", _shutdown_message(scope),
                                      {"retry-after": str(self.retry_after_s)})
                return
            if state["too_big"] and not state["started"]:
                state["status"] = 413
                await _send_error(send, 413, "payload_too_large",
                                  f"the request body is over the limit of {limit} bytes")
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(endpoint, scope.get("method", "?"), state["status"],
                                         time.perf_counter() - t0)


def _shutdown_message(scope) -> str:
    msg = "the server is shutting down and did not finish this request in time; retry shortly"
    if scope.get("method") in ("POST", "DELETE") and scope.get("path", "").startswith("/documents"):
        # the index write runs in a worker thread that the shutdown lets finish: it may have been applied
        msg += " (the change may have been applied: check with GET /documents/{id}; a retried add of it answers 409)"
    return msg


def _serves_get(scope) -> bool:
    from .errors import allowed_methods

    app = scope.get("app")
    return app is not None and hasattr(app, "router") and "GET" in allowed_methods(app, scope)


def _without_body(send):
    async def head_send(message):
        if message["type"] == "http.response.body":
            message = dict(message, body=b"")
        await send(message)

    return head_send


def _content_length(scope) -> int | None:
    """The declared body size; None when absent, -1 when unparsable."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None


async def _send_error(send, status: int, type_: str, message: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(type_, message), ensure_ascii=False).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
