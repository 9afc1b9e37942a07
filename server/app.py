"""The Flask application factory.

``create_app`` takes the settings as a :class:`~server.config.Settings`, as
a mapping of ``HASHEX_*`` variables (validated exactly like the environment),
or reads them from the environment; gunicorn workers each call it once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask

from server import flask_db, metrics
from server.api import (
    agencies,
    audit,
    auth,
    bodies,
    cache,
    health,
    listings,
    openapi,
    polls,
    problems,
    sets,
    versions,
)
from server.api import metrics as metrics_api
from server.config import SETTINGS_KEY, Settings
from server.request_body import RequestBodyMiddleware


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
            # Every body is read through the small JSON cap unless its endpoint
            # raises the cap for itself (only a publish does); Werkzeug
            # enforces it while reading, chunked and inflated bodies included.
            "MAX_CONTENT_LENGTH": bodies.MAX_JSON_BYTES,
            "MAX_FORM_PARTS": versions.MAX_PUBLISH_PARTS,
            # No empty HTML answer to OPTIONS: a 405 problem like any other method.
            "PROVIDE_AUTOMATIC_OPTIONS": False,
        }
    )
    flask_db.init_app(app, settings.database_url)
    app.url_map.converters["version"] = versions.VersionConverter
    # One spelling per URL: no redirect from //v1//sets (which would echo the
    # client's Host header back in a Location).
    app.url_map.merge_slashes = False
    problems.init_app(app)
    auth.init_app(app)
    listings.init_app(app)
    polls.init_app(app)
    app.wsgi_app = RequestBodyMiddleware(app.wsgi_app, settings.max_request_bytes)  # type: ignore[method-assign]
    for blueprint in (health.bp, sets.bp, versions.bp, agencies.bp, audit.bp, cache.bp, openapi.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(metrics_api.bp)
    # Last: its middleware is the outermost layer, so it times and counts everything.
    metrics.init_app(app)
    return app
