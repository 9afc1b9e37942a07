"""Every error the hub answers, rendered as RFC 9457 ``application/problem+json``.

The one place where errors become responses: the hub's own
:class:`~server.errors.HubError` tree, Werkzeug's HTTP errors (unknown
route, wrong method, body over a limit) and unhandled exceptions all leave
through :func:`render_problem`, which dumps them with the problem schema of
the OpenAPI document, so no member reaches the wire undocumented.  A 500
never carries the exception's text: the details go to the log.  The
gunicorn worker (:mod:`server.worker`) renders the refusals it makes before
the app runs with the same function.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Response

from server.api.schemas import ProblemSchema
from server.errors import (
    BLANK_TYPE,
    BY_STATUS,
    INTERNAL_DETAIL,
    PROBLEM_CONTENT_TYPE,
    HubError,
    problem_type,
)

_SCHEMA = ProblemSchema()


def render_problem(problem: Mapping[str, object]) -> bytes:
    """The wire bytes of a problem: its documented members as compact ASCII JSON."""
    body = json.dumps(_SCHEMA.dump(problem), separators=(",", ":"), ensure_ascii=True)
    return body.encode("ascii") + b"\n"


def status_problem(status: int, detail: str) -> dict[str, object]:
    """The problem of a bare HTTP status, typed by the hub's cause for that status."""
    cause = BY_STATUS.get(status)
    return {
        "type": BLANK_TYPE if cause is None else problem_type(cause.slug),
        "title": HTTP_STATUS_CODES.get(status, "Unknown error") if cause is None else cause.title,
        "status": status,
        "detail": INTERNAL_DETAIL if status == 500 else detail,
    }


def problem_response(
    problem: Mapping[str, object], status: int, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    """A response carrying ``problem`` as ``application/problem+json``."""
    response = Response(render_problem(problem), status=status, mimetype=PROBLEM_CONTENT_TYPE)
    for name, value in headers:
        response.headers.add(name, value)
    return response


def handle_hub_error(error: HubError) -> Response:
    """Answer a :class:`HubError` with its problem."""
    return problem_response(error.to_problem(), error.status, error.headers.items())


def handle_http_exception(error: HTTPException) -> Response:
    """Answer a Werkzeug HTTP error (404 route, 405, 413, 500, ...) as a problem."""
    status = error.code or 500
    problem = status_problem(status, error.description or HTTP_STATUS_CODES.get(status, ""))
    # Keep what the error adds for the client (Allow on a 405, WWW-Authenticate
    # on a 401); the content type is ours.
    headers = [
        (name, value) for name, value in error.get_headers() if name.lower() != "content-type"
    ]
    return problem_response(problem, status, headers)


def init_app(app: Flask) -> None:
    """Make every error of ``app`` answer as a problem.

    Unhandled exceptions reach Flask's ``handle_exception``, which logs them
    and hands us an ``InternalServerError`` (an ``HTTPException``); under
    ``app.testing`` Flask re-raises them instead, so tests see the real error.
    """
    app.register_error_handler(HubError, handle_hub_error)
    app.register_error_handler(HTTPException, handle_http_exception)
