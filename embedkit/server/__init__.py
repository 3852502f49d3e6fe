"""embedkit's REST service: ``create_app(settings)`` builds the FastAPI app; ``embedkit serve`` runs it."""

__all__ = ["Settings", "create_app"]


def __getattr__(name):  # lazy: importing embedkit.server.batching or .settings does not import FastAPI
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Settings":
        from .settings import Settings

        return Settings
    raise AttributeError(f"module 'embedkit.server' has no attribute {name!r}")
