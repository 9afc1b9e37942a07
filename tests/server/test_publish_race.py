"""Two publishes of the same version race through a real gunicorn: exactly one wins.

``hashex-server serve --workers 2`` runs on 127.0.0.1.  Each of 20 rounds
builds two different valid versions n+1 of the same set, and two threads,
each with its own keep-alive connection, send them at once, released
together by a barrier.  Every round must end with one 201 and one 409
``version-conflict`` (never a 500, never "database is locked"), the set's
latest version one higher, and the stored version exactly the winner's.
Every wait is bounded.

The same race is also replayed deterministically through the test client:
the rival version is stored between the losing publish's first version check
and its check under the set's lock (the moment the module docstring of
``server.services.publishing`` describes), and the loser must get the 409.
"""

from __future__ import annotations

import io
import random
import threading
from typing import IO, Any

import httpx
import pytest
from flask.testing import FlaskClient

from server.errors import problem_type
from server.models import utcnow
from server.services import publishing
from server.services.callers import Role
from tests.hubserver import StartHub
from tests.server.dbstate import (
    SET_TABLES,
    audit_events,
    last_audit_id,
    latest_version,
    session_factory,
    snapshot,
)
from tests.server.seeding import Candidate, add_agency, add_set, publish_body
from tests.synthetic import random_line, random_lines

ROUNDS = 20
WORKERS = 2
WAIT_SECONDS = 30.0


def _race(
    clients: list[httpx.Client], url: str, headers: dict[str, str], candidates: list[Candidate]
) -> list[httpx.Response]:
    """Send one candidate per client, all released at the same moment."""
    barrier = threading.Barrier(len(candidates), timeout=WAIT_SECONDS)
    bodies = [publish_body(candidate) for candidate in candidates]
    results: list[httpx.Response | BaseException | None] = [None] * len(candidates)

    def send(index: int) -> None:
        body, content_type = bodies[index]
        try:
            barrier.wait()
            results[index] = clients[index].post(
                url, content=body, headers={**headers, "Content-Type": content_type}
            )
        except BaseException as exc:  # reported by the main thread
            results[index] = exc

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive(), "a publish did not return in time"
    responses = []
    for result in results:
        assert isinstance(result, httpx.Response), repr(result)
        responses.append(result)
    return responses


def test_racing_publishes_store_exactly_one(database_url: str, start_hub: StartHub) -> None:
    rng = random.Random()
    alpha = add_agency(database_url, "alpha")
    chain = add_set(database_url, alpha, "race")
    headers = alpha.auth()
    base = random_lines(rng, 5)
    server = start_hub(database_url, workers=WORKERS)
    clients = [server.http(WAIT_SECONDS) for _ in range(2)]
    try:
        for client in clients:  # open each keep-alive connection before the first round
            assert client.get("/v1/health").status_code == 200
        for round_number in range(1, ROUNDS + 1):
            before = latest_version(database_url, chain)
            assert before == round_number - 1
            rivals = [chain.build([*base, *chain.lines[:3], random_line(rng)]) for _ in range(2)]
            assert rivals[0].delta != rivals[1].delta
            responses = _race(clients, chain.url, headers, rivals)
            statuses = [r.status_code for r in responses]
            assert sorted(statuses) == [201, 409], (round_number, [r.text for r in responses])
            loser = responses[statuses.index(409)]
            assert loser.json()["type"] == problem_type("version-conflict"), loser.text
            winner = rivals[statuses.index(201)]
            assert latest_version(database_url, chain) == before + 1
            stored = clients[0].get(f"{chain.url}/{winner.version}", headers=headers)
            assert stored.json()["manifest"] == winner.document.data.decode()
            content = clients[0].get(f"{chain.url}/{winner.version}/content", headers=headers)
            assert content.content == b"".join(line + b"\n" for line in winner.lines)
            chain.accept(winner)
    finally:
        for client in clients:
            client.close()
    server.stop()
    log = server.log.read_text()
    assert "database is locked" not in log
    assert "Traceback" not in log
    assert '" 500 ' not in log


def test_a_rival_stored_between_the_checks_makes_the_loser_a_version_conflict(
    database_url: str, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random()
    alpha = add_agency(database_url, "alpha")
    chain = add_set(database_url, alpha, "race")
    first = chain.build(random_lines(rng, 5))
    body, content_type = publish_body(first)
    published = client.post(chain.url, data=body, content_type=content_type, headers=alpha.auth())
    assert published.status_code == 201, published.get_data(as_text=True)
    chain.accept(first)
    rival, loser = (chain.build([*chain.lines[1:], random_line(rng)]) for _ in range(2))
    spool = publishing._spool_delta
    stored: list[int] = []
    calls: list[IO[bytes]] = []

    def rival_first(delta: IO[bytes], *args: Any) -> Any:
        # The loser has passed its first version check; the rival commits now
        # (its own publish comes through here too, and goes straight on).
        calls.append(delta)
        if len(calls) == 1:
            with session_factory(database_url) as factory, factory() as session:
                row = publishing.publish(
                    session,
                    alpha.caller(Role.PUBLISHER),
                    "alpha",
                    "race",
                    publishing.Upload(
                        rival.document.data,
                        rival.signatures_json().encode(),
                        io.BytesIO(rival.delta),
                    ),
                    now=utcnow(),
                    limits=publishing.PublishLimits(),
                )
                stored.append(row.version)
        return spool(delta, *args)

    monkeypatch.setattr(publishing, "_spool_delta", rival_first)
    audit_before = last_audit_id(database_url)
    body, content_type = publish_body(loser)
    response = client.post(chain.url, data=body, content_type=content_type, headers=alpha.auth())
    assert stored == [2]
    assert response.status_code == 409, response.get_data(as_text=True)
    assert response.get_json()["type"] == problem_type("version-conflict")
    assert latest_version(database_url, chain) == 2
    events = audit_events(database_url, audit_before)
    assert [(e.action, e.outcome) for e in events] == [
        ("set.publish", "ok"),
        ("set.publish", "refused"),
    ]
    stored_manifest = client.get(f"{chain.url}/2", headers=alpha.auth()).get_json()["manifest"]
    assert stored_manifest == rival.document.data.decode()
    assert len(snapshot(database_url, SET_TABLES)["versions"]) == 2
