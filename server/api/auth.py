"""Who is calling: the bearer token of the request, checked once per request.

Views call :func:`require_caller`; refusals of authenticated changes are
audited here too, in one place for every endpoint (:func:`audit_refusals`).
"""

from __future__ import annotations

import json

from flask import Flask, Response, current_app, g, request

from client.protocol.names import SLUG_RE
from server.errors import PROBLEM_CONTENT_TYPE
from server.flask_db import database, get_session
from server.models import utcnow
from server.services import audit, generations, tokens
from server.services.callers import Caller

_TOKEN_CACHE = "hashex.token-cache"  # noqa: S105 - an extension key, not a secret
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The audit action of each changing endpoint, as its services name it when
# the change is accepted; an endpoint missing here is audited by its name.
ACTIONS = {
    "sets.create_set": "set.create",
    "sets.put_grants": "set.grants",
    "versions.publish": "set.publish",
}


def require_caller() -> Caller:
    """The request's authenticated caller, or 401 (the token is checked once)."""
    cached: Caller | None = g.get("caller")
    if cached is not None:
        return cached
    session = get_session()
    now = utcnow()
    g.generation = generations.read(database(current_app).hot)
    caller, due = tokens.authenticate(
        session,
        request.headers.get("Authorization"),
        remote_addr=request.remote_addr,
        now=now,
        cache=current_app.extensions[_TOKEN_CACHE],
        generation=g.generation.tokens,
    )
    # End the read so the service can open its transaction as a writer.
    session.commit()
    if due:
        with database(current_app).sessions() as touch_session:
            tokens.touch(touch_session, caller.token_id, now)
    g.caller = caller
    return caller


def request_generation() -> generations.Generation:
    """The generations this request read before checking its token (after require_caller)."""
    found: generations.Generation = g.generation
    return found


def audit_refusals(response: Response) -> Response:
    """Audit a refused change by an authenticated caller, in its own transaction.

    The request's own transaction is rolled back first: nothing of the
    refused change is stored, and on SQLite its write lock is released.
    """
    caller: Caller | None = g.get("caller")
    if (
        caller is None
        or request.method not in _CHANGES
        or not 400 <= response.status_code < 500
        or response.mimetype != PROBLEM_CONTENT_TYPE
    ):
        return response
    get_session().rollback()
    problem = json.loads(response.get_data())
    view_args = request.view_args or {}
    with database(current_app).sessions() as session:
        audit.record_refusal(
            session,
            caller.actor,
            ACTIONS.get(request.endpoint or "", request.endpoint or request.path),
            target=_printable(request.path)[:200],
            subject_agency=_slug_or_none(view_args.get("agency")),
            problem_type=str(problem.get("type")),
            detail=str(problem.get("detail")),
        )
    return response


def _printable(text: str) -> str:
    # A refused path may hold anything, a NUL byte included, which a database
    # column must not be handed as it is.
    return "".join(c if c.isprintable() else "?" for c in text)


def _slug_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and SLUG_RE.fullmatch(value) else None


def init_app(app: Flask) -> None:
    """Remember checked tokens, and audit refused changes of every endpoint of ``app``."""
    app.extensions[_TOKEN_CACHE] = tokens.TokenCache(tokens.MAX_REMEMBERED_TOKENS)
    app.after_request(audit_refusals)
