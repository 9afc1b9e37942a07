"""The poll: ``GET /v1/sets`` is the whole of a no-change sync, and it stays cheap and right.

A listing names every set the caller may read with its latest version and
its owner's newest keyset version; its ETag covers the whole body.  Each
node remembers rendered listings and checked tokens, tagged with the
generations the database moves in every changing transaction; these tests
try to make a node answer from memory what is no longer true (a publish, a
grant taken away, a group joined, a keyset rotated, a token revoked or
expired, a change made through another node) and check that it cannot, and
that a poll with nothing changed runs no query through the ORM, writes
nothing, and is counted into the audit log in batches.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, text

from server.api import auth, polls
from server.flask_db import database
from server.models import utcnow
from server.services import groups, sets, tokens
from server.services.callers import Role
from server.services.polls import PollCounter
from tests.conftest import make_app
from tests.hubserver import StartHub
from tests.server.dbstate import audit_events, engine_for, session_factory
from tests.server.seeding import (
    OPERATOR,
    AgencyKeys,
    SetChain,
    add_agency,
    add_set,
    publish_body,
)
from tests.synthetic import random_lines


@contextmanager
def _statements(app: Flask) -> Iterator[list[str]]:
    """The SQL the app runs through SQLAlchemy inside the block."""
    seen: list[str] = []
    engine: Engine = database(app).engine

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _poll(client: FlaskClient, agency: AgencyKeys, etag: str | None = None) -> Any:
    headers = agency.auth(Role.READER)
    if etag is not None:
        headers["If-None-Match"] = etag
    return client.get("/v1/sets", headers=headers)


def _publish(client: FlaskClient, chain: SetChain, rng: random.Random) -> None:
    candidate = chain.build(random_lines(rng, 5))
    body, content_type = publish_body(candidate)
    answer = client.post(
        chain.url, data=body, content_type=content_type, headers=chain.agency.auth()
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    chain.accept(candidate)


def test_the_listing_names_versions_and_owners_newest_keysets(
    database_url: str, client: FlaskClient
) -> None:
    alpha = add_agency(database_url, "alpha")
    beta = add_agency(database_url, "beta")
    gamma = add_agency(database_url, "gamma")
    own = add_set(database_url, alpha, "own", readers=["gamma"])
    add_set(database_url, beta, "shared", readers=["alpha"])
    add_set(database_url, beta, "hidden", readers=["gamma"])
    _publish(client, own, random.Random(1))
    answer = _poll(client, alpha)
    assert answer.status_code == 200
    body = answer.get_json()
    assert [(s["name"], s["latest_version"], s["keyset"]) for s in body["sets"]] == [
        ("alpha/own", 1, 1),
        ("beta/shared", 0, 1),
    ]
    # Grants are the owner's to see, in the listing as in the set's metadata.
    assert body["sets"][0]["grants"] == ["gamma"]
    assert "grants" not in body["sets"][1]
    assert _poll(client, gamma).get_json()["sets"][0]["name"] == "alpha/own"


def test_the_etag_moves_with_every_change_the_caller_can_see_and_only_then(
    database_url: str, client: FlaskClient
) -> None:
    rng = random.Random(2)
    alpha = add_agency(database_url, "alpha")
    beta = add_agency(database_url, "beta")
    add_agency(database_url, "delta")
    shared = add_set(database_url, beta, "shared", readers=["alpha"])
    first = _poll(client, alpha)
    etag = first.headers["ETag"]
    assert _poll(client, alpha, etag).status_code == 304

    def moved() -> bool:
        nonlocal etag
        answer = _poll(client, alpha, etag)
        if answer.status_code == 304:
            return False
        assert answer.status_code == 200
        etag = answer.headers["ETag"]
        return True

    # What alpha cannot see changes: the listing is re-read, the body and its
    # ETag are the same, and the poll is still a 304.
    add_set(database_url, beta, "for-delta", readers=["delta"])
    assert not moved()
    _publish(client, shared, rng)
    assert moved()
    add_set(database_url, beta, "granted-later")
    assert not moved()
    caller = beta.caller(Role.AGENCY_ADMIN)
    with session_factory(database_url) as factory:
        with factory() as session:
            groups.create_group(session, OPERATOR, "partners")
        with factory() as session:
            sets.set_grants(
                session, caller, "beta", "granted-later", ["group:partners"], if_match=None
            )
    assert not moved()
    with session_factory(database_url) as factory, factory() as session:
        groups.add_member(session, OPERATOR, "partners", "alpha")
    assert moved()
    assert [s["name"] for s in _poll(client, alpha).get_json()["sets"]] == [
        "beta/granted-later",
        "beta/shared",
    ]
    with session_factory(database_url) as factory, factory() as session:
        sets.set_grants(session, caller, "beta", "shared", [], if_match=None)
    assert moved()
    # The owner's next keyset (the trust issue's rotation writes it; here a row
    # like the one it writes) moves every listing that shows the owner's sets.
    with engine_for(database_url) as engine, engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO keysets (agency_id, version, body, signatures, sha256, "
                "expires_at, created_at) SELECT agency_id, 2, body, signatures, sha256, "
                "expires_at, created_at FROM keysets WHERE agency_id = :agency"
            ),
            {"agency": beta.id},
        )
    assert moved()
    assert {s["keyset"] for s in _poll(client, alpha).get_json()["sets"]} == {2}


def test_a_change_made_through_another_node_is_seen_by_this_one(database_url: str) -> None:
    alpha = add_agency(database_url, "alpha")
    beta = add_agency(database_url, "beta")
    shared = add_set(database_url, beta, "shared", readers=["alpha"])
    with make_app(database_url) as this_node, make_app(database_url) as other_node:
        here, there = this_node.test_client(), other_node.test_client()
        etag = _poll(here, alpha).headers["ETag"]
        assert _poll(here, alpha, etag).status_code == 304
        _publish(there, shared, random.Random(3))
        answer = _poll(here, alpha, etag)
        assert answer.status_code == 200
        assert answer.get_json()["sets"][0]["latest_version"] == 1
        # Revoked through the other node: refused here at once.
        with session_factory(database_url) as factory, factory() as session:
            tokens.revoke_token(session, OPERATOR, alpha.token_ids[Role.READER])
        refused = _poll(here, alpha, answer.headers["ETag"])
        assert refused.status_code == 401
        assert "revoked" in refused.get_json()["detail"]


def test_a_remembered_token_still_expires_on_the_clock(
    database_url: str, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_agency(database_url, "alpha", roles=[])
    with session_factory(database_url) as factory, factory() as session:
        _, secret = tokens.create_token(
            session, OPERATOR, "alpha", Role.READER, name="short", expires_days=1
        )
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/sets", headers=headers).status_code == 200
    later = utcnow() + timedelta(days=1, seconds=1)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    refused = client.get("/v1/sets", headers=headers)
    assert refused.status_code == 401
    assert "expired" in refused.get_json()["detail"]


def test_a_no_change_poll_runs_no_orm_query_and_writes_nothing(
    database_url: str, app: Flask, client: FlaskClient
) -> None:
    alpha = add_agency(database_url, "alpha")
    beta = add_agency(database_url, "beta")
    for number in range(20):
        add_set(database_url, beta, f"set-{number}", readers=["alpha"])
    etag = _poll(client, alpha).headers["ETag"]
    _poll(client, alpha, etag)  # the token's last-used time is written by now
    audit_before = len(audit_events(database_url))
    with _statements(app) as seen:
        for _ in range(5):
            assert _poll(client, alpha, etag).status_code == 304
    # The one read a poll makes is the generations row, on a plain cursor.
    assert seen == []
    assert len(audit_events(database_url)) == audit_before


def test_polls_are_counted_into_the_audit_log_in_batches(
    database_url: str, app: Flask, client: FlaskClient
) -> None:
    alpha = add_agency(database_url, "alpha")
    beta = add_agency(database_url, "beta")
    chain = add_set(database_url, beta, "shared", readers=["alpha"])
    etag = _poll(client, alpha).headers["ETag"]
    for _ in range(4):
        _poll(client, alpha, etag)
    _poll(client, beta)
    versions = client.get(f"{chain.url}?after=0", headers=alpha.auth(Role.READER))
    assert versions.get_json() == {"versions": []}
    polls.flush(app)
    rows = [e for e in audit_events(database_url) if e.action == "poll.count"]
    assert {(e.actor_agency, e.actor) for e in rows} == {
        ("alpha", "hub:poll-counter"),
        ("beta", "hub:poll-counter"),
    }
    counted = {e.actor_agency: json.loads(e.detail)["polls"] for e in rows}
    assert counted == {"alpha": {"sets": 5, "set:beta/shared": 1}, "beta": {"sets": 1}}
    polls.flush(app)
    assert len([e for e in audit_events(database_url) if e.action == "poll.count"]) == 2


def test_the_counter_flushes_when_its_interval_has_passed() -> None:
    counter = PollCounter(interval=timedelta(seconds=60))
    start = utcnow()
    assert not counter.count("alpha", "sets", start)
    assert not counter.count("alpha", "sets", start + timedelta(seconds=59))
    assert counter.count("beta", "sets", start + timedelta(seconds=60))
    batch = counter.take(start + timedelta(seconds=61))
    assert batch is not None
    assert batch.since == start
    assert batch.counts == {("alpha", "sets"): 2, ("beta", "sets"): 1}
    assert counter.take(start) is None


def test_a_hub_that_stops_writes_the_polls_it_still_counts(
    database_url: str, start_hub: StartHub
) -> None:
    alpha = add_agency(database_url, "alpha")
    hub = start_hub(database_url)
    with hub.http() as http:
        etag = http.get("/v1/sets", headers=alpha.auth(Role.READER)).headers["ETag"]
        for _ in range(6):
            answer = http.get(
                "/v1/sets", headers={**alpha.auth(Role.READER), "If-None-Match": etag}
            )
            assert answer.status_code == 304
    # Under a minute: nothing is written yet; gunicorn's worker_exit writes it.
    assert [e for e in audit_events(database_url) if e.action == "poll.count"] == []
    assert hub.stop() == 0
    rows = [e for e in audit_events(database_url) if e.action == "poll.count"]
    assert sum(json.loads(e.detail)["polls"]["sets"] for e in rows) == 7
    assert {e.actor_agency for e in rows} == {"alpha"}


@pytest.mark.parametrize(
    "database_url",
    [pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)],
    indirect=True,
)
def test_a_poll_survives_its_pooled_connection_being_closed_by_the_database(
    database_url: str, app: Flask, client: FlaskClient
) -> None:
    # SQLite has no connection a server could close; PostgreSQL (or a proxy) has.
    alpha = add_agency(database_url, "alpha")
    etag = _poll(client, alpha).headers["ETag"]
    # The database (or a proxy) ends every other session, the hub's pooled ones included.
    with engine_for(database_url) as engine, engine.connect() as connection:
        ended = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert ended >= 1
    assert _poll(client, alpha, etag).status_code == 304
