"""Run the service with uvicorn: one process (the app object built here), or ``workers`` processes
(uvicorn's supervisor; each worker builds its app from the settings passed in the environment).

uvicorn[standard] brings uvloop and httptools; they are asked for by name so a missing one is an
error, not a silent fallback to the slower pure-Python pair.
"""

from __future__ import annotations

import logging
import os

from embedkit.errors import EmbedkitError

from .settings import Settings

log = logging.getLogger("embedkit.server")

# A request's head (request line + headers): refused past this size (414/431), dropped when unfinished
# after this long (408); enforced by protocol.GuardedHttpToolsProtocol (h11 has the size cap only).
MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT_S = 10.0

APP_FACTORY = "embedkit.server.app:app_from_env"


def _fast_loop_and_parser() -> tuple[str, str]:
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if (loop, http) != ("uvloop", "httptools"):
        log.warning("uvloop/httptools not installed (pip install 'embedkit[api]'); serving with %s + %s", loop, http)
    if http == "httptools":  # with the head limits uvicorn's protocol lacks (size, time; see protocol.py)
        http = "embedkit.server.protocol:GuardedHttpToolsProtocol"
    return loop, http


def run_server(settings: Settings, *, access_log: bool = False) -> None:
    """Serve until interrupted. Raises EmbedkitError with one readable line when the app cannot start."""
    import uvicorn

    level = logging.getLogger("embedkit.server").getEffectiveLevel()
    loop, http = _fast_loop_and_parser()
    common = {"host": settings.host, "port": settings.port, "lifespan": "on", "access_log": access_log, "loop": loop,
              "http": http, "log_level": "warning" if level >= logging.WARNING else "info", "server_header": False,
              "timeout_graceful_shutdown": 10, "h11_max_incomplete_event_size": MAX_HEADER_BYTES}
    if settings.workers > 1:
        # Each worker process rebuilds the settings from the environment it inherits.
        os.environ.update(settings.to_env())
        uvicorn.run(APP_FACTORY, factory=True, workers=settings.workers, **common)
        return

    from .app import create_app

    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, **common))
    try:
        server.run()
    except SystemExit as e:  # uvicorn exits by itself when the lifespan (index load) fails
        if e.code and app.state.startup_error:
            raise EmbedkitError(f"the server did not start: {app.state.startup_error}") from None
        raise
    if not server.started:
        reason = app.state.startup_error or "see the messages above"
        raise EmbedkitError(f"the server did not start: {reason}")
