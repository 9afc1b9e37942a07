"""``/v1/audit``: the audit events the caller may see, oldest first, paged."""

from __future__ import annotations

from flask import Blueprint, Response, request

from server.api.auth import require_caller
from server.api.bodies import load_query
from server.api.responses import json_response
from server.api.schemas import AuditListSchema, PageQuerySchema
from server.flask_db import get_session
from server.services import audit

bp = Blueprint("audit", __name__, url_prefix="/v1/audit")


@bp.get("")
def list_events() -> Response:
    """A page of events with ids above ``after`` (at most ``limit``)."""
    caller = require_caller()
    query = load_query(PageQuerySchema(), request)
    events = audit.list_events(get_session(), caller, after=query["after"], limit=query["limit"])
    return json_response(AuditListSchema().dump({"events": events}))
