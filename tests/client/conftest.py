"""Fixtures shared by the client tests that talk to a real hub.

``hub`` is a real ``hashex-server serve`` (gunicorn on 127.0.0.1), one per
test module and database kind, on the module's ``shared_database_url``.  A
module that needs another hub defines its own ``hub``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.realhub import RealHub
from tests.hubserver import serving


@pytest.fixture(scope="module")
def hub(shared_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealHub]:
    """A real hub serving ``shared_database_url`` for the whole module."""
    log = tmp_path_factory.mktemp("hub") / "serve.log"
    with serving(shared_database_url, log, workers=2) as server:
        yield RealHub(shared_database_url, server)
