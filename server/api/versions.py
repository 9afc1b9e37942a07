"""``/v1/sets/{agency}/{set}/versions``: publish, list, and download deltas and contents."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import IO

from flask import Blueprint, Response, current_app, request
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import BaseConverter, ValidationError

from server.api import polls
from server.api.auth import require_caller
from server.api.bodies import load_query
from server.api.cache import is_authorized_fill
from server.api.responses import json_response, matches_if_none_match
from server.api.schemas import MAX_ID, PageQuerySchema, VersionListSchema, VersionObjectSchema
from server.api.streaming import accepts_gzip, etag_for, gzipped
from server.config import SETTINGS_KEY
from server.errors import BadRequestError, TooLargeError
from server.flask_db import database, get_session
from server.models import utcnow
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
MAX_PUBLISH_PARTS = 8
# What Werkzeug's multipart parser may buffer at once: a part that is no file
# (at most this large), and the chunk it reads (64 KiB) with what is left of
# the one before.  The manifest and signatures are then held to their own
# 64 KiB by the service.
MAX_PART_BUFFER_BYTES = 1024 * 1024
IMMUTABLE = "private, max-age=31536000, immutable"
ENTRY_CONTENT_TYPE = "text/plain; charset=us-ascii"


@bp.post("/<agency>/<set_slug>/versions")
def publish(agency: str, set_slug: str) -> Response:
    """Publish the next version: multipart ``manifest``, ``signatures``, ``delta``."""
    caller = require_caller()
    _read_parts()
    upload = Upload(
        manifest=_small_part("manifest"),
        signatures=_small_part("signatures"),
        delta=_file_part("delta"),
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


def _read_parts() -> None:
    """Parse the multipart body under the upload limits: the delta spools to disk.

    Only this endpoint takes a body beyond the JSON cap; the small parts are
    held in memory and capped at the document size, and a publish has no
    reason for more than a handful of parts.
    """
    limit = current_app.config[SETTINGS_KEY].max_request_bytes
    request.max_content_length = limit
    request.max_form_memory_size = MAX_PART_BUFFER_BYTES
    request.max_form_parts = MAX_PUBLISH_PARTS
    try:
        request.files  # noqa: B018 - parses the body once, files and form alike
    except RequestEntityTooLarge:
        raise TooLargeError(
            f"a publish is at most {limit} bytes, in at most {MAX_PUBLISH_PARTS} parts "
            f"whose headers and non-file values are under {MAX_PART_BUFFER_BYTES} bytes, "
            f"with a manifest and signatures of at most {LIMITS.max_document_bytes} bytes each",
            limit=limit,
        ) from None


def _small_part(name: str) -> bytes:
    """A publish part that is a small document: a form field or an uploaded file."""
    upload = request.files.get(name)
    if upload is not None:
        return upload.stream.read(LIMITS.max_document_bytes + 1)
    value = request.form.get(name)
    if value is None:
        raise _missing(name)
    return value.encode("utf-8")


def _file_part(name: str) -> IO[bytes]:
    upload = request.files.get(name)
    if upload is not None:
        return upload.stream
    raise _missing(name)


def _missing(part: str) -> BadRequestError:
    return BadRequestError(
        f"missing multipart part {part!r}; a publish has 'manifest', 'signatures' and 'delta'",
        field=part,
    )
