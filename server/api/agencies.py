"""``/v1/agencies/{agency}/keysets``: an agency's signed keysets, for any valid token."""

from __future__ import annotations

from flask import Blueprint, Response, request

from server.api.auth import require_caller
from server.api.bodies import load_query
from server.api.responses import json_response
from server.api.schemas import AfterQuerySchema, KeysetListSchema
from server.flask_db import get_session
from server.services import agencies

bp = Blueprint("agencies", __name__, url_prefix="/v1/agencies")


@bp.get("/<agency>/keysets")
def list_keysets(agency: str) -> Response:
    """The agency's keysets newer than ``after``, oldest first."""
    require_caller()
    query = load_query(AfterQuerySchema(), request)
    rows = agencies.list_keysets(get_session(), agency, after=query["after"])
    return json_response(KeysetListSchema().dump({"keysets": rows}))
