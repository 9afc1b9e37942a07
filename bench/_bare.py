"""The floor of the poll benchmark: a bare Flask endpoint under the hub's gunicorn settings.

It answers ``GET /v1/sets`` with what a no-change poll gets (an empty 304
carrying the ETag sent), touching no database, checking no token: what
Flask and gunicorn alone cost per request on this machine.
"""

from __future__ import annotations

from flask import Flask, Response, request

ETAG = '"bare"'


def create_app() -> Flask:
    """A Flask app with the one endpoint."""
    app = Flask(__name__)

    @app.get("/v1/health")
    def health() -> Response:
        return Response('{"status":"ok"}\n', mimetype="application/json")

    @app.get("/v1/sets")
    def poll() -> Response:
        if request.headers.get("If-None-Match") == ETAG:
            return Response(status=304, headers={"ETag": ETAG})
        return Response('{"sets":[]}\n', mimetype="application/json", headers={"ETag": ETAG})

    return app
