"""The hub's one error hierarchy, answered as RFC 9457 ``application/problem+json``.

Every problem the hub answers has a stable ``type``: the absolute URI
``https://hashex.dev/problems/<slug>``, where the slug names the cause
(``not-found``, ``version-conflict``, ...).  Clients branch on ``type``, never
on ``title`` or ``detail``, which are for people.  A status with no cause of
its own answers ``about:blank``, which RFC 9457 defines as "nothing more than
the HTTP status".

Services raise subclasses of :class:`HubError`; a more specific cause is a
subclass with its own ``slug``.  Werkzeug's HTTP errors (unknown route, wrong
method, body over the size limit) and unhandled exceptions are answered in
the same form, and a 500 never carries the exception's text: the details go
to the log.

This module imports no Flask at run time, so services can raise these errors
without depending on the web layer; :func:`init_app` registers the handlers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, ClassVar

from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Response

if TYPE_CHECKING:
    from flask import Flask

PROBLEM_TYPE_BASE = "https://hashex.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"
BLANK_TYPE = "about:blank"

# The detail of every 500: the cause is logged, never sent.
INTERNAL_DETAIL = "The hub failed to handle this request; the cause is in its log."

JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]


def problem_type(slug: str) -> str:
    """The ``type`` URI of the problem named ``slug``."""
    return PROBLEM_TYPE_BASE + slug


class HubError(Exception):
    """Root of every error the hub answers as a problem; by itself a 500."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: JSONValue,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions

    def to_problem(self) -> dict[str, JSONValue]:
        """The problem object: the RFC 9457 members, then this error's extensions.

        An extension never replaces a standard member.
        """
        problem: dict[str, JSONValue] = {
            "type": problem_type(self.slug),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        for name, value in self.extensions.items():
            problem.setdefault(name, value)
        return problem


class BadRequestError(HubError):
    """A request the hub cannot parse: bad parameters or a malformed body."""

    status = 400
    slug = "bad-request"
    title = "Bad request"


class UnauthorizedError(HubError):
    """No token, or a malformed, expired or revoked one."""

    status = 401
    slug = "unauthorized"
    title = "Unauthorized"


class ForbiddenError(HubError):
    """A valid token whose role does not allow this action on a visible resource."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFoundError(HubError):
    """No such resource, or one the caller may not see (the two look alike)."""

    status = 404
    slug = "not-found"
    title = "Not found"


class MethodNotAllowedError(HubError):
    """A method the resource does not support; ``Allow`` lists those it does."""

    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class ConflictError(HubError):
    """The request contradicts the resource's current state."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class PreconditionFailedError(HubError):
    """An ``If-Match`` that no longer matches: someone changed the resource first."""

    status = 412
    slug = "precondition-failed"
    title = "Precondition failed"


class TooLargeError(HubError):
    """A request body or upload over a configured size limit."""

    status = 413
    slug = "too-large"
    title = "Too large"


class UnprocessableError(HubError):
    """A well-formed document or delta the hub refuses."""

    status = 422
    slug = "unprocessable"
    title = "Unprocessable"


class UnavailableError(HubError):
    """The hub cannot serve now, e.g. its database is unreachable."""

    status = 503
    slug = "unavailable"
    title = "Unavailable"


# Werkzeug's own HTTP errors map onto these by status, so a client sees one
# "type" per cause whoever raised it.
_BY_STATUS: Mapping[int, type[HubError]] = {
    cls.status: cls
    for cls in (
        HubError,
        BadRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        MethodNotAllowedError,
        ConflictError,
        PreconditionFailedError,
        TooLargeError,
        UnprocessableError,
        UnavailableError,
    )
}


def problem_response(
    problem: Mapping[str, JSONValue], status: int, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    """A response carrying ``problem`` as ``application/problem+json``."""
    body = json.dumps(problem, separators=(",", ":"), ensure_ascii=True) + "\n"
    response = Response(body, status=status, mimetype=PROBLEM_CONTENT_TYPE)
    for name, value in headers:
        response.headers.add(name, value)
    return response


def handle_hub_error(error: HubError) -> Response:
    """Answer a :class:`HubError` with its problem."""
    return problem_response(error.to_problem(), error.status, error.headers.items())


def handle_http_exception(error: HTTPException) -> Response:
    """Answer a Werkzeug HTTP error (404 route, 405, 413, 500, ...) as a problem."""
    status = error.code or 500
    cause = _BY_STATUS.get(status)
    title = HTTP_STATUS_CODES.get(status, "Unknown error") if cause is None else cause.title
    detail = INTERNAL_DETAIL if status >= 500 else (error.description or title)
    problem: dict[str, JSONValue] = {
        "type": BLANK_TYPE if cause is None else problem_type(cause.slug),
        "title": title,
        "status": status,
        "detail": detail,
    }
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
