"""``GET /metrics``: the hub's series in the Prometheus text format, for the operator.

Only an ``admin`` token may read them (401 without a valid token, 403 for any
other role): per-endpoint counts and timings say how the hub is used and
probed.  Prometheus sends the token with ``authorization: {type: Bearer,
credentials_file: ...}`` in its scrape config (docs/DEPLOY.md).  The series
themselves are described in :mod:`server.metrics`.
"""

from __future__ import annotations

from flask import Blueprint, Response

from server import metrics
from server.api.auth import require_caller
from server.errors import ForbiddenError
from server.services.callers import Role

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape() -> Response:
    """Every worker's series, added up."""
    if require_caller().role is not Role.ADMIN:
        raise ForbiddenError("only the hub operator's admin token may read the metrics")
    return Response(
        metrics.exposition(),
        content_type=metrics.CONTENT_TYPE,
        headers={"Cache-Control": "no-store"},
    )
