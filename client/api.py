"""The Python API for tools that keep their reference sets current on their own.

One class, :class:`Hashex`, does what the ``hashex`` command does, with the
same typed errors (``client.protocol.errors`` and ``client.errors``)::

    from client.api import Hashex

    with Hashex(server="https://hub.example.org", token=token) as hx:
        for result in hx.sync():                 # every readable, pinned set
            if result.error is not None:
                raise result.error               # never act on an unverified list
        for hit in hx.lookup(hashes_from_my_case):
            print(hit.query, hit.set, hit.label, "STALE" if hit.stale else "")
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import httpx

from client import matching
from client.limits import Limits
from client.protocol.entries import Entry, parse_entry
from client.settings import ClientSettings
from client.status import SetStatus, statuses
from client.store import Store
from client.sync import SetResult, Syncer
from client.transport import HubClient


class Hashex:
    """A client of one hub with one local store: sync, look up, read entries, status."""

    def __init__(
        self,
        *,
        server: str | None = None,
        token: str | None = None,
        home: str | Path | None = None,
        limits: Limits | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = ClientSettings.resolve(server=server, token=token, home=home)
        self.limits = limits or Limits()
        self.store = Store.open(self.settings.home)
        self._transport = transport
        self._hub: HubClient | None = None

    def __enter__(self) -> Hashex:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the store and the connection to the hub."""
        self.store.close()
        if self._hub is not None:
            self._hub.close()

    @property
    def hub(self) -> HubClient:
        """The hub client, opened on first use."""
        if self._hub is None:
            self.settings.require_token()
            self._hub = HubClient(self.settings, self.limits, transport=self._transport)
        return self._hub

    def sync(self, *names: str, now: datetime | None = None) -> list[SetResult]:
        """Sync the named sets, or every readable set whose agency is pinned.

        Each result carries its own error: one set's failure never stops or
        taints another, and never leaves a set half-applied.
        """
        syncer = Syncer(self.hub, self.store, self.limits, now=now)
        return [syncer.sync(name) for name in (names or syncer.readable_pinned_sets())]

    def lookup(self, hashes: Iterable[str], *, now: datetime | None = None) -> list[matching.Hit]:
        """Which of ``hashes`` the held sets list.

        ``hashes`` are the lines of a hash list, in the forms ``publish``
        reads (``alg:hex [label]`` or bare hex in any case, ``md5sum`` and
        ``sha256sum`` output; blank lines and ``#`` comments skipped); each
        hit's ``query`` is its line, stripped.  Bad lines raise one
        EntryInputError, numbered from 1, in ``hashes``.
        """
        queries = matching.parse_query_lines(hashes, "hashes")
        stale = {s.name for s in self.status(now=now) if s.stale}
        return matching.lookup(self.store, queries, stale)

    def entries(self, name: str) -> Iterator[Entry]:
        """The held entries of one set, in canonical order."""
        for number, line in enumerate(self.store.iter_content(name), 1):
            yield parse_entry(line, number)

    def status(self, *, now: datetime | None = None) -> list[SetStatus]:
        """Every held set's version and freshness."""
        return statuses(self.store, now or datetime.now(UTC))
