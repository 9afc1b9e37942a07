"""JSON answers with strong ETags, and 304 for a matching ``If-None-Match``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from flask import Response, request


@dataclass(frozen=True)
class RenderedJson:
    """A JSON body rendered once, with its strong ETag: what a cache keeps."""

    body: bytes
    etag: str


def render_json(payload: Any, *, etag: str | None = None) -> RenderedJson:
    """``payload`` as the hub's canonical JSON, with its digest as ETag unless given."""
    body = (json.dumps(payload, sort_keys=True, separators=(",", ":")) + "\n").encode()
    return RenderedJson(body, etag or '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def json_response(payload: Any, *, status: int = 200, etag: str | None = None) -> Response:
    """``payload`` as JSON with a strong ETag (its digest unless given); 304 on a match.

    Listings and metadata change rarely and are polled often: a client that
    sends back the ETag it holds gets an empty 304 instead of the body.
    """
    return rendered_response(render_json(payload, etag=etag), status=status)


def rendered_response(rendered: RenderedJson, *, status: int = 200) -> Response:
    """The answer of an already rendered body: 304 when the client holds its ETag."""
    headers = {"ETag": rendered.etag, "Cache-Control": "private, no-cache"}
    if status == 200 and request.method in ("GET", "HEAD") and matches_if_none_match(rendered.etag):
        return Response(status=304, headers=headers)
    return Response(rendered.body, status=status, mimetype="application/json", headers=headers)


def matches_if_none_match(tag: str) -> bool:
    """Whether the request's If-None-Match names ``tag`` (or ``*``)."""
    header = request.headers.get("If-None-Match", "")
    candidates = {part.strip() for part in header.split(",")}
    return "*" in candidates or tag in candidates or f"W/{tag}" in candidates
