"""Polls that download nothing: counted in memory, written to the audit log in batches.

A thousand tools polling every few minutes must not write a row each: the
poll is the hub's hottest path and a write per request would serialise it
on the database.  Each process counts its polls per agency and target
(``sets`` for the listing, ``set:<agency>/<set>`` for a set's versions or
an unchanged download) and appends one ``poll.count`` audit row per polling
agency at most every :data:`FLUSH_INTERVAL`, and when the process stops
(gunicorn's ``worker_exit``).  A process killed outright loses at most one
interval of counts, never a download: every download is audited one by one.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from server.engine import begin_exclusive
from server.services import audit
from server.services.callers import Actor

FLUSH_INTERVAL = timedelta(minutes=1)
# Past this many distinct (agency, target) pairs a batch is flushed early,
# so the memory a process spends on counts stays bounded whatever is polled.
MAX_PENDING_KEYS = 10_000
LISTING = "sets"


@dataclass(frozen=True)
class PollBatch:
    """The polls counted between ``since`` and ``until``, by agency and target."""

    since: datetime
    until: datetime
    counts: dict[tuple[str, str], int]


class PollCounter:
    """One process's pending poll counts; safe to share between threads."""

    def __init__(self, interval: timedelta = FLUSH_INTERVAL) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._since: datetime | None = None

    def count(self, agency: str, target: str, now: datetime) -> bool:
        """Count one poll; whether a batch is due to be flushed."""
        with self._lock:
            if self._since is None:
                self._since = now
            self._counts[(agency, target)] += 1
            return now - self._since >= self._interval or len(self._counts) >= MAX_PENDING_KEYS

    def take(self, now: datetime) -> PollBatch | None:
        """Hand over the pending counts (None if there are none) and start afresh."""
        with self._lock:
            if self._since is None:
                return None
            batch = PollBatch(self._since, now, dict(self._counts))
            self._counts.clear()
            self._since = None
            return batch


def flush(session: Session, batch: PollBatch) -> None:
    """Append one ``poll.count`` row per polling agency, in a transaction of its own.

    The row names the polling agency as its actor's agency, so the agency's
    own admins see their tools' polls beside the hub operator.
    """
    begin_exclusive(session, audit.CHAIN_LOCK)
    per_agency: dict[str, dict[str, int]] = {}
    for (agency, target), polls in sorted(batch.counts.items()):
        per_agency.setdefault(agency, {})[target] = polls
    for agency, targets in per_agency.items():
        audit.record(
            session,
            Actor("hub:poll-counter", agency),
            "poll.count",
            detail={
                "since": batch.since.isoformat(),
                "until": batch.until.isoformat(),
                "polls": targets,
            },
        )
    session.commit()
