"""Bearer tokens: every bad credential is 401, lookups go by hash, last use is written rarely.

A token is stored only as its SHA-256 and found through the unique index on
that column: these tests read the tables, the SQL each request sends and the
database's own query plan to show it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, inspect, text, update
from werkzeug.test import TestResponse

from server.api import auth
from server.errors import PROBLEM_CONTENT_TYPE, problem_type
from server.flask_db import database
from server.models import Token, utcnow
from server.services import tokens
from server.services.callers import Role
from tests.server.dbstate import DATA_TABLES, audit_count, engine_for, session_factory, snapshot
from tests.server.seeding import OPERATOR, Hub, add_token, bearer, seed_agencies

CHALLENGE = 'Bearer realm="hashex"'


def _assert_unauthorized(response: TestResponse, why: str = "") -> None:
    assert response.status_code == 401, why
    assert response.mimetype == PROBLEM_CONTENT_TYPE, why
    assert response.get_json(force=True)["type"] == problem_type("unauthorized"), why
    assert response.headers["WWW-Authenticate"] == CHALLENGE, why


def _set_column(database_url: str, token_id: int, **values: Any) -> None:
    with session_factory(database_url) as factory, factory() as session:
        session.execute(update(Token).where(Token.id == token_id).values(**values))
        session.commit()


def _token_row(database_url: str, token_id: int) -> Token:
    with session_factory(database_url) as factory, factory() as session:
        token = session.get(Token, token_id)
        assert token is not None
        return token


@contextmanager
def _statements(app: Flask) -> Iterator[list[tuple[str, Any]]]:
    """Every SQL statement (and its parameters) the app's engine sends meanwhile."""
    engine = database(app).engine
    seen: list[tuple[str, Any]] = []

    def capture(
        _conn: object, _cursor: object, statement: str, parameters: Any, *_: object
    ) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", capture)


# -- Every bad credential is 401 ------------------------------------------------------


def _no_header(_hub: Hub, _url: str) -> list[dict[str, str]]:
    return [{}, {"Authorization": ""}]


def _wrong_scheme(hub: Hub, _url: str) -> list[dict[str, str]]:
    secret = hub.secret("alpha", Role.READER)
    return [
        {"Authorization": "Basic " + base64.b64encode(b"alpha:" + secret.encode()).decode()},
        {"Authorization": f"Token {secret}"},
        {"Authorization": f"Bearer{secret}"},
        {"Authorization": secret},
    ]


def _malformed(hub: Hub, _url: str) -> list[dict[str, str]]:
    secret = hub.secret("alpha", Role.READER)
    return [
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer hxt_short"},
        {"Authorization": f"Bearer {secret}A"},  # one character too many
        {"Authorization": f"Bearer {secret[:-1]}"},  # one too few
        {"Authorization": f"Bearer {secret[:-1]}!"},  # not base64url
        {"Authorization": "Bearer " + secret.replace("hxt_", "hxs_")},
        {"Authorization": f"Bearer {secret} {secret}"},
    ]


def _unknown(_hub: Hub, _url: str) -> list[dict[str, str]]:
    return [bearer(tokens.new_secret())]


def _expired(hub: Hub, url: str) -> list[dict[str, str]]:
    _set_column(url, hub.token_id("alpha", Role.READER), expires_at=utcnow() - timedelta(seconds=1))
    return [hub.auth("alpha", Role.READER)]


def _revoked(hub: Hub, url: str) -> list[dict[str, str]]:
    with session_factory(url) as factory, factory() as session:
        tokens.revoke_token(session, OPERATOR, hub.token_id("alpha", Role.READER))
    return [hub.auth("alpha", Role.READER)]


BAD_CREDENTIALS: dict[str, Callable[[Hub, str], list[dict[str, str]]]] = {
    "missing": _no_header,
    "wrong-scheme": _wrong_scheme,
    "malformed": _malformed,
    "unknown": _unknown,
    "expired": _expired,
    "revoked": _revoked,
}


def test_bad_credentials_are_401_with_a_challenge(database_url: str, client: FlaskClient) -> None:
    hub = seed_agencies(database_url, {"alpha": []})
    for kind, spoil in BAD_CREDENTIALS.items():
        # A fresh token for each kind; it works until it is spoiled, so the
        # 401 below is the spoiling's doing.
        add_token(database_url, hub.agencies["alpha"], Role.READER)
        token_id = hub.token_id("alpha", Role.READER)
        works = client.get("/v1/sets", headers=hub.auth("alpha", Role.READER))
        assert works.status_code == 200, kind
        _set_column(database_url, token_id, last_used_at=None)
        headers_list = spoil(hub, database_url)
        rows_before, audit_before = snapshot(database_url), audit_count(database_url)
        for headers in headers_list:
            _assert_unauthorized(client.get("/v1/sets", headers=headers), kind)
            # A change is refused for the token before its body is read.
            _assert_unauthorized(
                client.post("/v1/sets", json={"name": "alpha/x", "title": "t"}, headers=headers),
                kind,
            )
        # Nothing is stored for a caller nobody knows; the token was not marked as used.
        assert snapshot(database_url) == rows_before, kind
        assert audit_count(database_url) == audit_before, kind
        assert _token_row(database_url, token_id).last_used_at is None, kind


ENDPOINTS = [
    ("GET", "/v1/sets"),
    ("POST", "/v1/sets"),
    ("GET", "/v1/sets/alpha/own"),
    ("PUT", "/v1/sets/alpha/own/grants"),
    ("GET", "/v1/agencies/alpha/keysets"),
    ("GET", "/v1/audit"),
]


def test_every_endpoint_but_health_ready_and_openapi_needs_a_token(
    database_url: str, client: FlaskClient
) -> None:
    seed_agencies(database_url, {"alpha": [Role.READER]})
    for method, path in ENDPOINTS:
        # Even a malformed body is refused as unauthenticated first.
        response = client.open(
            path, method=method, data="{not json", content_type="application/json"
        )
        _assert_unauthorized(response, f"{method} {path}")
    for path in ("/v1/health", "/v1/ready", "/v1/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_the_scheme_is_case_insensitive_and_a_live_token_works(
    database_url: str, client: FlaskClient
) -> None:
    hub = seed_agencies(database_url, {"alpha": [Role.READER]})
    secret = hub.secret("alpha", Role.READER)
    later = add_token(database_url, hub.agencies["alpha"], Role.PUBLISHER, expires_days=1)
    for header in (f"bearer {secret}", f"BEARER {secret}", f"Bearer {later}"):
        assert client.get("/v1/sets", headers={"Authorization": header}).status_code == 200


def test_a_token_that_expires_a_moment_from_now_still_works(
    database_url: str, client: FlaskClient
) -> None:
    hub = seed_agencies(database_url, {"alpha": [Role.READER]})
    token_id = hub.token_id("alpha", Role.READER)
    _set_column(database_url, token_id, expires_at=utcnow() + timedelta(seconds=30))
    assert client.get("/v1/sets", headers=hub.auth("alpha", Role.READER)).status_code == 200
    _set_column(database_url, token_id, expires_at=utcnow() - timedelta(seconds=30))
    _assert_unauthorized(client.get("/v1/sets", headers=hub.auth("alpha", Role.READER)))


# -- Stored and found by hash only -------------------------------------------------------


def _forms_of(secret: str) -> list[bytes]:
    """The secret as text, and its 32 raw bytes in every plain encoding."""
    raw = base64.urlsafe_b64decode(secret.removeprefix(tokens.TOKEN_PREFIX) + "=")
    assert len(raw) == 32
    return [
        secret.encode(),
        secret.removeprefix(tokens.TOKEN_PREFIX).encode(),
        raw,
        raw.hex().encode(),
        base64.b64encode(raw),
    ]


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def test_no_table_holds_a_secret_only_its_sha256(
    app: Flask, database_url: str, client: FlaskClient
) -> None:
    hub = seed_agencies(database_url, {"alpha": [Role.READER, Role.AGENCY_ADMIN]})
    for role in (Role.READER, Role.AGENCY_ADMIN):
        assert client.get("/v1/sets", headers=hub.auth("alpha", role)).status_code == 200
    with engine_for(database_url) as engine, engine.connect() as connection:
        tables = inspect(engine).get_table_names()
        assert set(DATA_TABLES) | {"audit_events"} <= set(tables)
        cells = [
            _as_bytes(value)
            for table in tables
            for row in connection.execute(text(f"SELECT * FROM {table}"))  # noqa: S608
            for value in row
            if value is not None
        ]
        stored = dict(connection.execute(text("SELECT id, secret_sha256 FROM tokens")).all())
    for secret in hub.secrets():
        for form in _forms_of(secret):
            assert not any(form in cell for cell in cells)
    assert sorted(stored.values()) == sorted(
        hashlib.sha256(secret.encode()).hexdigest() for secret in hub.secrets()
    )


def _token_lookups(statements: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(sql, params) for sql, params in statements if re.search(r"\bFROM tokens\b", sql)]


def _plan(engine: Engine, statement: str, parameters: Any) -> str:
    """The database's plan for ``statement`` as one text."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return "\n".join(str(row[-1]) for row in rows)
        # A tiny table is cheaper to scan; forbid that, so only an index can avoid it.
        connection.exec_driver_sql("SET enable_seqscan = off")
        rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters)
        return "\n".join(str(row[0]) for row in rows)


def test_a_token_is_looked_up_by_its_hash_through_the_unique_index(
    app: Flask, database_url: str, client: FlaskClient
) -> None:
    hub = seed_agencies(database_url, {"alpha": [Role.READER], "beta": [Role.READER]})
    secret = hub.secret("alpha", Role.READER)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    with _statements(app) as statements:
        assert client.get("/v1/sets", headers=bearer(secret)).status_code == 200
    # No statement carries the secret: it is never sent to be compared.
    for sql, params in statements:
        assert secret not in sql
        assert secret not in repr(params)
    lookups = _token_lookups(statements)
    assert len(lookups) == 1, lookups
    sql, params = lookups[0]
    assert re.search(r"WHERE tokens\.secret_sha256 = ", sql), sql
    assert digest in repr(params)
    plan = _plan(database(app).engine, sql, params)
    if database(app).engine.dialect.name == "sqlite":
        assert re.search(r"SEARCH tokens USING (COVERING )?INDEX \S+ \(secret_sha256=\?\)", plan), (
            plan
        )
        assert "SCAN tokens" not in plan, plan
    else:
        assert re.search(r"Index (Only )?Scan using uq_tokens_secret_sha256 on tokens", plan), plan
        assert "Seq Scan on tokens" not in plan, plan


def test_last_used_at_is_written_on_first_use_and_then_at_most_once_a_minute(
    app: Flask, database_url: str, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = seed_agencies(database_url, {"alpha": [Role.READER]})
    token_id = hub.token_id("alpha", Role.READER)
    assert _token_row(database_url, token_id).last_used_at is None
    headers = hub.auth("alpha", Role.READER)

    def updates(statements: list[tuple[str, Any]]) -> int:
        return sum(1 for sql, _ in statements if re.match(r"\s*UPDATE tokens\b", sql))

    before = utcnow()
    with _statements(app) as first:
        assert client.get("/v1/sets", headers=headers).status_code == 200
    used = _token_row(database_url, token_id).last_used_at
    assert used is not None
    assert before <= used <= utcnow()
    assert updates(first) == 1

    with _statements(app) as again:
        for _ in range(3):
            assert client.get("/v1/audit", headers=headers).status_code == 200
    assert updates(again) == 0
    assert _token_row(database_url, token_id).last_used_at == used

    # A minute on (the hub's clock moved; the token check it remembers
    # carries the time it wrote), the next request writes it again.
    later_now = used + timedelta(seconds=61)
    monkeypatch.setattr(auth, "utcnow", lambda: later_now)
    with _statements(app) as later:
        assert client.get("/v1/sets", headers=headers).status_code == 200
    assert updates(later) == 1
    assert _token_row(database_url, token_id).last_used_at == later_now
