"""``/v1/sets/{agency}/{set}/versions``: publish, list, and download deltas and contents."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

from flask import Blueprint, Response, current_app, request
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.routing import BaseConverter, ValidationError

from server.api import polls
from server.api.auth import require_caller
from server.api.bodies import load_query
from server.api.cache import is_authorized_fill
from server.api.publish_parts import ORDER, PublishParts
from server.api.responses import json_response, matches_if_none_match
from server.api.schemas import MAX_ID, PageQuerySchema, VersionListSchema, VersionObjectSchema
from server.api.streaming import accepts_gzip, etag_for, gzipped
from server.config import SETTINGS_KEY
from server.errors import BadRequestError, TooLargeError
from server.flask_db import database, get_session
from server.models import utcnow
from server.request_body import INFLATED_KEY
from server.services import publishing, pulls
from server.services.publishing import PublishLimits, Upload
from server.services.pulls import Download

bp = Blueprint("versions", __name__, url_prefix="/v1/sets")


class VersionConverter(BaseConverter):
    """A version number in a path: its one canonical spelling, 1 to 2**31 - 1.

    Werkzeug's ``int`` would also take ``01`` and ``+1``, a second name for
    the same resource (and a second key for every cache in front of the hub).
    """

    regex = r"[1-9][0-9]{0,9}"

    def to_python(self, value: str) -> int:
        """The version as an int; a number beyond the 32-bit ids is no route (404)."""
        number = int(value)
        if number > MAX_ID:
            raise ValidationError()
        return number

    def to_url(self, value: int) -> str:
        """The canonical spelling of a version."""
        return str(value)


# One set of bounds for every publish, read by the parts parser and the service alike.
LIMITS = PublishLimits()
# Werkzeug's form parser serves no view (a publish reads its parts itself),
# but the app's setting bounds it all the same, should one ever use it.
MAX_PUBLISH_PARTS = len(ORDER)
UNBOUNDED = 2**63 - 1
IMMUTABLE = "private, max-age=31536000, immutable"
ENTRY_CONTENT_TYPE = "text/plain; charset=us-ascii"


@bp.post("/<agency>/<set_slug>/versions")
def publish(agency: str, set_slug: str) -> Response:
    """Publish the next version: multipart ``manifest``, ``signatures``, ``delta``."""
    caller = require_caller()
    with _publish_parts() as parts:
        upload = Upload(
            manifest=parts.documents["manifest"],
            signatures=parts.documents["signatures"],
            delta=parts.delta,
        )
        row = publishing.publish(
            get_session(), caller, agency, set_slug, upload, now=utcnow(), limits=LIMITS
        )
    return json_response(VersionObjectSchema().dump(row), status=201)


@bp.get("/<agency>/<set_slug>/versions")
def list_versions(agency: str, set_slug: str) -> Response:
    """Versions above ``after`` (at most ``limit``), oldest first."""
    caller = require_caller()
    query = load_query(PageQuerySchema(), request)
    session = get_session()
    page = pulls.list_versions(
        session, caller, agency, set_slug, after=query["after"], limit=query["limit"]
    )
    response = json_response(VersionListSchema().dump({"versions": page.versions}))
    if not page.versions or response.status_code == 304:
        polls.count(caller.agency, f"set:{agency}/{set_slug}")
    return response


@bp.get("/<agency>/<set_slug>/versions/<version:version>")
def get_version(agency: str, set_slug: str, version: int) -> Response:
    """One version object."""
    row = pulls.get_version(get_session(), require_caller(), agency, set_slug, version)
    return json_response(VersionObjectSchema().dump(row))


@bp.get("/<agency>/<set_slug>/versions/<version:version>/delta")
def get_delta(agency: str, set_slug: str, version: int) -> Response:
    """The delta bytes of a version."""
    return _download(agency, set_slug, version, "delta")


@bp.get("/<agency>/<set_slug>/versions/<version:version>/content")
def get_content(agency: str, set_slug: str, version: int) -> Response:
    """The full content bytes at a version."""
    return _download(agency, set_slug, version, "content")


def _download(agency: str, set_slug: str, version: int, kind: pulls.Kind) -> Response:
    caller = require_caller()
    session = get_session()
    download = pulls.find_download(session, caller, agency, set_slug, version, kind)
    gzip = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    etag = etag_for(download.sha256, gzip)
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding"}
    if matches_if_none_match(etag):
        polls.count(caller.agency, f"set:{agency}/{set_slug}")
        return Response(status=304, headers=headers)
    # nginx filling its cache after a miss: its auth_request audited this pull.
    if not is_authorized_fill():
        pulls.record_download(
            session, caller, agency, set_slug, download, "gzip" if gzip else "identity"
        )
    body = _chunks(database(current_app).sessions, download)
    if gzip:
        headers["Content-Encoding"] = "gzip"
    return Response(
        gzipped(body) if gzip else body, headers=headers, content_type=ENTRY_CONTENT_TYPE
    )


def _chunks(sessions: sessionmaker[Session], download: Download) -> Iterator[bytes]:
    # The body outlives the request's own session, which closes when the view
    # returns: the stream reads through a session of its own.
    with sessions() as session, closing(pulls.iter_chunks(session, download)) as chunks:
        yield from chunks


def _publish_parts() -> PublishParts:
    """The publish's parts, the delta still arriving (see :mod:`server.api.publish_parts`).

    An identity body is held to the upload limit as it is read.  A gzip body
    is held to it before inflating (the middleware counts its compressed
    bytes); what it inflates to is bounded part by part: the documents by
    their size, the delta by the counts its verified manifest signs for.
    """
    content_type, options = parse_options_header(request.headers.get("Content-Type", ""))
    boundary = options.get("boundary", "")
    if content_type != "multipart/form-data" or not boundary:
        raise BadRequestError(
            "a publish is multipart/form-data with the parts 'manifest', 'signatures' and 'delta'",
            field="Content-Type",
        )
    limit = current_app.config[SETTINGS_KEY].max_request_bytes
    # A gzip body's wire bytes are counted by the middleware as it inflates;
    # the inflated stream itself is bounded by the parts, not by this.
    request.max_content_length = UNBOUNDED if request.environ.get(INFLATED_KEY) else limit
    try:
        return PublishParts(
            request.stream,
            boundary.encode("latin-1"),
            max_document_bytes=LIMITS.max_document_bytes,
            spool_limit=limit,
        )
    except RequestEntityTooLarge:
        raise TooLargeError(
            f"a publish upload is at most {limit} bytes on the wire", limit=limit
        ) from None
