"""Liveness and readiness: ``GET /v1/health`` and ``GET /v1/ready``.

A load balancer polls ``health`` to know the process answers, so it touches
nothing else; ``ready`` also asks the database, so a node that cannot reach
it is taken out of rotation instead of failing real requests.
"""

from __future__ import annotations

import logging

from flask import Blueprint
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.errors import UnavailableError
from server.flask_db import get_session

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__, url_prefix="/v1")

_NO_STORE = {"Cache-Control": "no-store"}


@bp.get("/health")
def health() -> tuple[dict[str, str], int, dict[str, str]]:
    """The process is up and answering; the database is not consulted."""
    return {"status": "ok"}, 200, _NO_STORE


@bp.get("/ready")
def ready() -> tuple[dict[str, str], int, dict[str, str]]:
    """The process can reach its database; 503 ``unavailable`` otherwise."""
    try:
        get_session().execute(text("SELECT 1"))
    except SQLAlchemyError:
        log.exception("readiness check: the database is unreachable")
        raise UnavailableError("The hub cannot reach its database.", headers=_NO_STORE) from None
    return {"status": "ready"}, 200, _NO_STORE
