"""``/v1/sets``: list, create and read sets, and replace their grants."""

from __future__ import annotations

from flask import Blueprint, Response, request

from server.api import listings, polls
from server.api.auth import request_generation, require_caller
from server.api.bodies import load_json
from server.api.responses import json_response, render_json, rendered_response
from server.api.schemas import (
    CreateSetSchema,
    GrantsResultSchema,
    GrantsSchema,
    SetListSchema,
    SetSchema,
)
from server.flask_db import get_session
from server.services import sets
from server.services.polls import LISTING

bp = Blueprint("sets", __name__, url_prefix="/v1/sets")


@bp.get("")
def list_sets() -> Response:
    """The poll: every set the caller may read, with owners' keysets; 304 when unchanged."""
    caller = require_caller()
    generation = request_generation().listings
    rendered = listings.cache().get(caller.agency_id, generation)
    if rendered is None:
        session = get_session()
        payload = SetListSchema().dump({"sets": sets.list_sets(session, caller)})
        session.commit()
        rendered = listings.cache().put(caller.agency_id, generation, render_json(payload))
    polls.count(caller.agency, LISTING)
    return rendered_response(rendered)


@bp.post("")
def create_set() -> Response:
    """Create a set of the caller's agency (agency-admin)."""
    caller = require_caller()
    body = load_json(CreateSetSchema(), request)
    view = sets.create_set(get_session(), caller, body["name"], body["title"])
    return json_response(SetSchema().dump(view), status=201, etag=sets.view_etag(view))


@bp.get("/<agency>/<set_slug>")
def get_set(agency: str, set_slug: str) -> Response:
    """A readable set's metadata; its ETag guards grant updates."""
    view = sets.get_set(get_session(), require_caller(), agency, set_slug)
    return json_response(SetSchema().dump(view), etag=sets.view_etag(view))


@bp.put("/<agency>/<set_slug>/grants")
def put_grants(agency: str, set_slug: str) -> Response:
    """Replace the readers of a set (agency-admin of the owner)."""
    caller = require_caller()
    body = load_json(GrantsSchema(), request)
    view = sets.set_grants(
        get_session(),
        caller,
        agency,
        set_slug,
        body["readers"],
        if_match=request.headers.get("If-Match"),
    )
    return json_response(GrantsResultSchema().dump({"name": view.name, "readers": view.grants}))
