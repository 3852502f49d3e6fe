"""uvicorn's httptools protocol with the limits it lacks on a request's head (request line + headers).

* A head over ``MAX_HEADER_BYTES`` (run.py) is refused before the parser buffers it: 414 while the request
  line is still unfinished, 431 otherwise (checked on the raw bytes as they arrive, so a client that
  streams megabytes of headers costs no memory).
* A head not finished ``HEADER_TIMEOUT_S`` after the connection opened, or after the first byte of a
  next request on a kept-alive connection, gets 408 and the connection is closed (a connection that
  sent nothing at all is just closed). uvicorn's own keep-alive timeout still covers idle time between
  requests.
* Requests that are not valid HTTP (a malformed request line, header or ``Content-Length``) get the
  service's error shape, ``{"error": {"type", "message"}}``, instead of uvicorn's plain-text 400.

Every answer here closes the connection: the stream cannot be trusted past a bad head.
"""

from __future__ import annotations

import json
import logging

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .errors import error_body
from .run import HEADER_TIMEOUT_S, MAX_HEADER_BYTES

log = logging.getLogger("embedkit.server")
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = MAX_HEADER_BYTES
    header_timeout_s = HEADER_TIMEOUT_S

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request's head (or waiting for the next request's first byte)
        self._head_bytes = 0
        self._line_end: int | None = None  # where the request line ends in the head, once it has arrived
        self._tail = b""  # the last bytes of the head so far, to find an end marker split across reads
        self._head_timer = None

    # -- connection ---------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if self._head_timer is None:
                self._arm_head_timer()
            if not self._head_fits(data):
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as e:
            reason = str(e).strip().rstrip(".") or "malformed request"
            self._refuse(400, "bad_request", f"the request is not valid HTTP: {reason}")

    # -- parser callbacks ---------------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        self._head_bytes, self._line_end, self._tail = 0, None, b""
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # the next bytes are the next request's head (timer armed when they come)

    def send_400_response(self, msg: str) -> None:  # uvicorn's plain-text answer, in the error shape
        self._refuse(400, "bad_request", f"the request is not valid HTTP: {msg.rstrip('.')}")

    # -- the head's limits --------------------------------------------------------------------------
    def _head_fits(self, data: bytes) -> bool:
        if self._line_end is None and (nl := data.find(b"\n")) >= 0:
            self._line_end = self._head_bytes + nl
        seen = self._tail + data
        ends = [i + len(m) for m in _HEAD_ENDS if (i := seen.find(m)) >= 0]
        used = self._head_bytes + (min(ends) - len(self._tail) if ends else len(data))
        if used > self.max_header_bytes:
            if self._line_end is not None and self._line_end <= self.max_header_bytes:
                self._refuse(431, "headers_too_large", f"the request headers are over the limit of "
                                                       f"{self.max_header_bytes} bytes")
            else:
                self._refuse(414, "uri_too_long", f"the request line (method and URL) is over the limit of "
                                                  f"{self.max_header_bytes} bytes")
            return False
        if not ends:
            self._head_bytes = used
            self._tail = seen[-3:]
        return True

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes or self._tail:
            self._refuse(408, "request_timeout", f"the request headers did not arrive within "
                                                 f"{self.header_timeout_s:g} s")
        elif self.cycle is None or self.cycle.response_complete:
            self.transport.close()  # a connection that never sent a byte: nobody to answer

    def _refuse(self, status: int, type_: str, message: str) -> None:
        """Answer ``status`` in the error shape and close (only close while another response is being sent)."""
        self._disarm_head_timer()
        log.debug("refused a request from %s: %s %s", self.client, status, message)
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            body = json.dumps(error_body(type_, message)).encode()
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                     b"connection: close\r\n\r\n", body]
            self.transport.write(b"".join(head))
        self.transport.close()
