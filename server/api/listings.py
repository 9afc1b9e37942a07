"""Each agency's rendered listing, kept in memory while the listing generation stands.

A no-change poll then costs a token lookup and a one-row read: no sets,
grants or keysets are queried, nothing is rendered or hashed.  The
generation (:func:`server.services.generations.read`) is bumped by the
database in every transaction that could change a listing, so an entry is
used only while nothing it shows can have changed; nodes share nothing but
the database, and each renders the same bytes, hence the same ETag.
"""

from __future__ import annotations

from flask import Flask, current_app

from server.api.responses import RenderedJson
from server.services.generations import GenerationCache

_EXTENSION = "hashex.listings"
# One entry per agency that polls; past this many the cache starts afresh
# rather than grow with agencies that no longer poll.
MAX_AGENCIES = 10_000


ListingCache = GenerationCache[int, RenderedJson]
"""Rendered listings by agency id, tagged with the listings generation they were read at."""


def init_app(app: Flask) -> None:
    """Give ``app`` an empty listing cache."""
    app.extensions[_EXTENSION] = ListingCache(MAX_AGENCIES)


def cache() -> ListingCache:
    """The current app's listing cache."""
    found: ListingCache = current_app.extensions[_EXTENSION]
    return found
