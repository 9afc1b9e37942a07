"""JSON answers with strong ETags, and 304 for a matching ``If-None-Match``."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Response, request


def json_response(payload: Any, *, status: int = 200, etag: str | None = None) -> Response:
    """``payload`` as JSON with a strong ETag (its digest unless given); 304 on a match.

    Listings and metadata change rarely and are polled often: a client that
    sends back the ETag it holds gets an empty 304 instead of the body.
    """
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")) + "\n"
    tag = etag or '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
    response = Response(body, status=status, mimetype="application/json")
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = "private, no-cache"
    if status == 200 and request.method in ("GET", "HEAD") and matches_if_none_match(tag):
        response.status_code = 304
        response.set_data(b"")
    return response


def matches_if_none_match(tag: str) -> bool:
    """Whether the request's If-None-Match names ``tag`` (or ``*``)."""
    header = request.headers.get("If-None-Match", "")
    candidates = {part.strip() for part in header.split(",")}
    return "*" in candidates or tag in candidates or f"W/{tag}" in candidates
