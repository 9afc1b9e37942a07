"""A shared cache in front of the hub: which pulls it may answer, and their audit.

nginx keeps the immutable delta and content responses, and before it
answers one (from its store or by filling it from the hub) it asks the hub
through ``auth_request`` whether this token may have this URL.  The hub says
yes only for a version the token may read, and audits that pull exactly as
it audits a download it serves itself.  The fill request that follows a
miss carries the cache secret (``HASHEX_CACHE_SECRET``): the hub does not
audit that pull a second time.  Everything the cache refuses goes to the
hub uncached, which answers and audits as it always does.
"""

from __future__ import annotations

import hmac
import string
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from server.services import pulls
from server.services.callers import Caller
from server.services.pulls import Download, Kind

# What a path of the cache's key may hold: the one spelling of a URL, with
# no percent-escape (a second name for the same bytes), query or fragment.
_PATH_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~/")


@dataclass(frozen=True)
class CachedPull:
    """The delta or content a cached URL names: ``/v1/sets/{agency}/{set}/versions/{n}/{kind}``."""

    agency: str
    set_slug: str
    version: int
    kind: Kind


def plain_path(uri: str | None) -> str | None:
    """``uri`` when it is a bare path in the characters a route spells; else None.

    The cache keys its entries on the URI exactly as the client sent it, so
    only a URI that can be nothing but the route's one spelling may be
    authorized: no percent-escape, query, fragment, or empty or dot segment.
    """
    if not uri or not uri.startswith("/") or not _PATH_CHARACTERS.issuperset(uri):
        return None
    # Werkzeug's routing ignores leading slashes and nginx resolves dot
    # segments: an empty, "." or ".." segment is always another spelling.
    if any(segment in ("", ".", "..") for segment in uri[1:].split("/")):
        return None
    return uri


def is_authorized_fill(presented: str | None, secret: str | None) -> bool:
    """Whether a request carries the configured cache secret (never when none is set)."""
    if secret is None or presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), secret.encode("utf-8"))


def authorize_pull(
    session: Session,
    caller: Caller,
    pull: CachedPull,
    *,
    encoding: str,
    already_held: Callable[[Download], bool],
) -> bool:
    """Whether the cache may answer ``pull`` to ``caller``; audited as a download when it may.

    A pull the caller may not read raises NotFoundError, as a download
    would.  A request for bytes the client already holds (``already_held``:
    its ``If-None-Match``) is no download: False, and the hub answers it.
    """
    download = pulls.find_download(
        session, caller, pull.agency, pull.set_slug, pull.version, pull.kind
    )
    if already_held(download):
        return False
    pulls.record_download(session, caller, pull.agency, pull.set_slug, download, encoding)
    return True
