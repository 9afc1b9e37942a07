"""Each agency's rendered listing, kept in memory while the listing generation stands.

A no-change poll then costs a token lookup and a one-row read: no sets,
grants or keysets are queried, nothing is rendered or hashed.  The
generation (:func:`server.services.generations.read`) is bumped by the
database in every transaction that could change a listing, so an entry is
used only while nothing it shows can have changed; nodes share nothing but
the database, and each renders the same bytes, hence the same ETag.
"""

from __future__ import annotations

import threading

from flask import Flask, current_app

from server.api.responses import RenderedJson

_EXTENSION = "hashex.listings"
# One entry per agency that polls; past this many the cache starts afresh
# rather than grow with agencies that no longer poll.
MAX_AGENCIES = 10_000


class ListingCache:
    """Rendered listings by agency id, each tagged with the generation it was read at."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[int, RenderedJson]] = {}

    def get(self, agency_id: int, generation: int) -> RenderedJson | None:
        """The agency's listing if it was rendered at ``generation``."""
        entry = self._entries.get(agency_id)
        if entry is None or entry[0] != generation:
            return None
        return entry[1]

    def put(self, agency_id: int, generation: int, rendered: RenderedJson) -> RenderedJson:
        """Keep the agency's listing rendered at ``generation``; return it."""
        with self._lock:
            if len(self._entries) >= MAX_AGENCIES:
                self._entries.clear()
            current = self._entries.get(agency_id)
            # A slower thread that read an older generation must not replace a newer entry.
            if current is None or current[0] <= generation:
                self._entries[agency_id] = (generation, rendered)
        return rendered


def init_app(app: Flask) -> None:
    """Give ``app`` an empty listing cache."""
    app.extensions[_EXTENSION] = ListingCache()


def cache() -> ListingCache:
    """The current app's listing cache."""
    found: ListingCache = current_app.extensions[_EXTENSION]
    return found
