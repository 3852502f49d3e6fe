"""``uvicorn api.asgi:app`` (from the repository root): the service over the index in ``EMBEDKIT_INDEX``.

Every setting can be given as JSON in ``EMBEDKIT_SERVER_SETTINGS``; the API key comes from
``EMBEDKIT_API_KEY``. The service itself lives in the installed package ``embedkit.server``.
"""

from embedkit.server import Settings, create_app

app = create_app(Settings.from_env())
