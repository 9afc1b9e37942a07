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

This module imports no web framework, so services can raise these errors
without depending on the web layer; :mod:`server.api.problems` renders them,
in one place for every view, through the documented problem schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, TypedDict, Unpack

PROBLEM_TYPE_BASE = "https://hashex.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"
BLANK_TYPE = "about:blank"

# The detail of every 500: the cause is logged, never sent.
INTERNAL_DETAIL = "The hub failed to handle this request; the cause is in its log."

JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]


class ProblemExtensions(TypedDict, total=False):
    """The members a problem may carry beside the RFC 9457 ones.

    Every one is declared in the problem schema of the OpenAPI document
    (``server.api.schemas.ProblemSchema``); a test holds the two equal, so a
    new extension cannot reach the wire undocumented.
    """

    errors: dict[str, JSONValue]
    field: str
    readers: list[str]
    line: int
    limit: int


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
        **extensions: Unpack[ProblemExtensions],
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions

    def to_problem(self) -> dict[str, object]:
        """The problem object: the RFC 9457 members, then this error's extensions."""
        return {
            **self.extensions,
            "type": problem_type(self.slug),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }


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
    """A request body or upload over a configured size limit; ``limit`` names it in bytes."""

    status = 413
    slug = "too-large"
    title = "Too large"


class MalformedBodyError(BadRequestError):
    """A JSON body that does not parse: bad syntax, encoding, duplicate names, nesting."""

    slug = "malformed-body"
    title = "Malformed body"


class UnsupportedMediaTypeError(HubError):
    """A body of a media type the endpoint does not take."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class UnprocessableError(HubError):
    """A well-formed document or delta the hub refuses."""

    status = 422
    slug = "unprocessable"
    title = "Unprocessable"


class InvalidFieldError(UnprocessableError):
    """A well-formed body whose fields break their rules; ``errors`` names each one."""

    slug = "invalid-field"
    title = "Invalid field"

    def __init__(self, messages: Mapping[str, JSONValue]) -> None:
        flat = sorted(_flatten(messages))
        where, reason = flat[0]
        detail = f"{where}: {reason}"
        if len(flat) > 1:
            detail += f" (and {len(flat) - 1} more: {', '.join(name for name, _ in flat[1:])})"
        super().__init__(detail, field=min(messages), errors=dict(messages))

    @classmethod
    def one(cls, field: str, message: str) -> InvalidFieldError:
        """The error of a single field."""
        return cls({field: [message]})


def _flatten(messages: Mapping[str, JSONValue], prefix: str = "") -> list[tuple[str, str]]:
    """Each message of a (nested) marshmallow error map, with where it applies.

    ``{"readers": {"0": ["bad"]}}`` gives ``[("readers[0]", "bad")]``.
    """
    flat: list[tuple[str, str]] = []
    for key, value in messages.items():
        name = str(key)
        where = f"{prefix}[{name}]" if prefix and name.isdigit() else f"{prefix}{name}"
        if isinstance(value, dict):
            flat.extend(_flatten(value, where))
        elif isinstance(value, list):
            flat.extend((where, str(item)) for item in value if not isinstance(item, dict))
            for item in value:
                if isinstance(item, dict):
                    flat.extend(_flatten(item, where))
        else:
            flat.append((where, str(value)))
    return flat or [("body", "invalid")]


class RequestTimeoutError(HubError):
    """A client too slow to send its request: the hub stopped waiting for it."""

    status = 408
    slug = "request-timeout"
    title = "Request timeout"


class UriTooLongError(HubError):
    """A request line over the server's limit."""

    status = 414
    slug = "uri-too-long"
    title = "URI too long"


class ExpectationFailedError(HubError):
    """An ``Expect`` header other than ``100-continue``."""

    status = 417
    slug = "expectation-failed"
    title = "Expectation failed"


class HeadersTooLargeError(HubError):
    """Request headers over the server's limits (size or count)."""

    status = 431
    slug = "headers-too-large"
    title = "Request header fields too large"


class NotImplementedHTTPError(HubError):
    """A transfer coding (or another HTTP feature) the hub does not implement."""

    status = 501
    slug = "not-implemented"
    title = "Not implemented"


class UnavailableError(HubError):
    """The hub cannot serve now, e.g. its database is unreachable."""

    status = 503
    slug = "unavailable"
    title = "Unavailable"


# Werkzeug's and gunicorn's own HTTP errors map onto these by status, so a
# client sees one "type" per cause whoever raised it.
BY_STATUS: Mapping[int, type[HubError]] = {
    cls.status: cls
    for cls in (
        HubError,
        BadRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        MethodNotAllowedError,
        RequestTimeoutError,
        ConflictError,
        PreconditionFailedError,
        TooLargeError,
        UriTooLongError,
        UnsupportedMediaTypeError,
        ExpectationFailedError,
        UnprocessableError,
        HeadersTooLargeError,
        NotImplementedHTTPError,
        UnavailableError,
    )
}
