"""The Flask application factory.

``create_app`` takes the settings as a :class:`~server.config.Settings`, as
a mapping of ``HASHEX_*`` variables (validated exactly like the environment),
or reads them from the environment; gunicorn workers each call it once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask

from server import errors, flask_db
from server.api import agencies, audit, auth, health, openapi, sets, versions
from server.config import Settings
from server.gzip_uploads import GzipRequestMiddleware

SETTINGS_KEY = "HASHEX_SETTINGS"


def create_app(config: Settings | Mapping[str, str] | None = None) -> Flask:
    """Build the hub's WSGI app; nothing here connects to the database."""
    settings = (
        config
        if isinstance(config, Settings)
        else Settings.from_env(os.environ if config is None else config)
    )
    app = Flask(__name__)
    app.config.from_mapping(
        {
            SETTINGS_KEY: settings,
            # Werkzeug answers 413 for bodies over this before a view reads them.
            "MAX_CONTENT_LENGTH": settings.max_request_bytes,
        }
    )
    flask_db.init_app(app, settings.database_url)
    errors.init_app(app)
    auth.init_app(app)
    app.wsgi_app = GzipRequestMiddleware(app.wsgi_app, settings.max_request_bytes)  # type: ignore[method-assign]
    for blueprint in (health.bp, sets.bp, versions.bp, agencies.bp, audit.bp, openapi.bp):
        app.register_blueprint(blueprint)
    return app
