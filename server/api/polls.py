"""The app's poll counter: counted per request, flushed to the audit log in batches.

See :mod:`server.services.polls`.  Every app keeps its own counter; apps
are remembered weakly so gunicorn's ``worker_exit`` hook can flush what a
stopping worker still holds (:func:`flush_all`).
"""

from __future__ import annotations

import weakref

from flask import Flask, current_app

from server.flask_db import database
from server.models import utcnow
from server.services import polls

_EXTENSION = "hashex.polls"
_APPS: weakref.WeakSet[Flask] = weakref.WeakSet()


def init_app(app: Flask) -> None:
    """Give ``app`` a poll counter."""
    app.extensions[_EXTENSION] = polls.PollCounter()
    _APPS.add(app)


def count(agency: str, target: str) -> None:
    """Count one poll that downloaded nothing; flush the batch when it is due."""
    now = utcnow()
    counter: polls.PollCounter = current_app.extensions[_EXTENSION]
    if counter.count(agency, target, now):
        flush(current_app)


def flush_all() -> None:
    """Flush every app's pending counts (a worker about to exit)."""
    for app in list(_APPS):
        flush(app)


def flush(app: Flask) -> None:
    """Write ``app``'s pending counts to the audit log now."""
    batch = app.extensions[_EXTENSION].take(utcnow())
    if batch is not None:
        with database(app).sessions() as session:
            polls.flush(session, batch)
