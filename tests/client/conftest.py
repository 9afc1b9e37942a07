"""Fixtures shared by the client tests that talk to a real hub.

``hub`` is a real ``hashex-server serve`` (gunicorn on 127.0.0.1), one per
test module and database kind, on a database copied from the migrated
template.  A module that needs another hub defines its own ``hub``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.simhub import RealHub
from tests.conftest import DATABASE_KINDS
from tests.server.publishdata import serving, shared_database


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database for the module's hub, on SQLite and on PostgreSQL."""
    yield from shared_database(request, tmp_path_factory)


@pytest.fixture(scope="module")
def hub(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHub]:
    """A real hub serving ``database`` for the whole module."""
    log = tmp_path_factory.mktemp("hub") / "serve.log"
    with serving(database, log, workers=2) as server:
        yield RealHub(database, server)
