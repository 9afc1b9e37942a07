"""``GET /v1/cache/authorize``: nginx's ``auth_request`` for its cache of deltas and contents.

nginx asks before it answers a delta or content URL from its cache or fills
its cache from the hub, with the client's own headers (its token, its
``Accept-Encoding``), the cache secret, and the URI and method the client
sent.  204: the URI is the one spelling of a delta or content URL, the
version exists and the token may read it; the pull is audited here, exactly
like a download the hub serves.  Anything else is refused with 401 (no
usable token) or 403, the only refusals ``auth_request`` understands; nginx
then passes the request uncached to the hub, whose own answer (404 for a set
the token may not read, 401 for a revoked token) the client gets, audited as
always.  See docs/DEPLOY.md and docs/nginx/hashex.conf.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from server.api.auth import require_caller
from server.api.responses import matches_if_none_match
from server.api.streaming import accepts_gzip, etag_for
from server.config import SETTINGS_KEY, Settings
from server.errors import ForbiddenError, NotFoundError
from server.flask_db import get_session
from server.services import cache
from server.services.cache import CachedPull
from server.services.pulls import Kind

# Set by nginx on the requests it sends for its cache, overwriting any a
# client sent: the authorization subrequest and the fill after a miss.
SECRET_HEADER = "X-Hashex-Cache-Secret"  # noqa: S105 - a header's name, not a secret
ORIGINAL_URI_HEADER = "X-Original-URI"
ORIGINAL_METHOD_HEADER = "X-Original-Method"

_KINDS: dict[str, Kind] = {"versions.get_delta": "delta", "versions.get_content": "content"}
_NO_STORE = {"Cache-Control": "no-store"}

bp = Blueprint("cache", __name__, url_prefix="/v1/cache")


def is_authorized_fill() -> bool:
    """Whether this request is nginx filling its cache: authorized and audited already."""
    settings: Settings = current_app.config[SETTINGS_KEY]
    return cache.is_authorized_fill(request.headers.get(SECRET_HEADER), settings.cache_secret)


@bp.get("/authorize")
def authorize() -> Response:
    """204 when the cache may answer the original request (audited); 401 or 403 when not."""
    caller = require_caller()  # 401 for a missing, malformed, expired or revoked token
    if not is_authorized_fill():
        raise ForbiddenError("only the hub's cache, with the cache secret, may ask this")
    pull = _pull(
        request.headers.get(ORIGINAL_METHOD_HEADER), request.headers.get(ORIGINAL_URI_HEADER)
    )
    if pull is None:
        raise ForbiddenError("not the one spelling of a delta or content URL, with GET or HEAD")
    gzip = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    try:
        allowed = cache.authorize_pull(
            get_session(),
            caller,
            pull,
            encoding="gzip" if gzip else "identity",
            already_held=lambda download: matches_if_none_match(etag_for(download.sha256, gzip)),
        )
    except NotFoundError:
        raise ForbiddenError("no such version, or one this token may not read") from None
    if not allowed:
        raise ForbiddenError("the client holds these bytes already: the hub answers it")
    return Response(status=204, headers=_NO_STORE)


def _pull(method: str | None, uri: str | None) -> CachedPull | None:
    """The delta or content the original request names, matched by the hub's own routes."""
    path = cache.plain_path(uri)
    if method not in ("GET", "HEAD") or path is None:
        return None
    try:
        endpoint, args = current_app.url_map.bind("hub").match(path, method="GET")
    except HTTPException:  # no route, or a redirect to another spelling
        return None
    kind = _KINDS.get(str(endpoint))
    if kind is None:
        return None
    return CachedPull(args["agency"], args["set_slug"], args["version"], kind)
