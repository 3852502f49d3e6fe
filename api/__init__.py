"""The deployable ASGI entry of embedkit's REST service (not installed; the service is ``embedkit.server``).

``uvicorn api.asgi:app`` run from the repository root serves the index named by ``EMBEDKIT_INDEX``;
``embedkit serve`` is the usual way to run it.
"""
