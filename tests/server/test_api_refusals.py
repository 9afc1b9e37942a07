"""Every refusal: its status and problem ``type``, nothing stored, and its audit row.

A refused change by an authenticated caller leaves the data tables exactly as
they were and adds exactly one audit row, ``outcome = 'refused'``, naming the
problem type.  Requests that never reach a view (unknown route, wrong method)
and reads are not changes, so they add no row.  Database error text never
reaches the client.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from werkzeug.test import TestResponse

from server.api.bodies import MAX_JSON_BYTES
from server.errors import INTERNAL_DETAIL, PROBLEM_CONTENT_TYPE, problem_type
from server.services import sets as sets_service
from server.services.callers import Role
from tests.conftest import make_app
from tests.server.dbstate import audit_count, audit_events, engine_for, snapshot
from tests.server.seeding import AGENCIES, ROLES, SETS, Hub, seed_world

ABSENT = object()  # no JSON body


@dataclass(frozen=True)
class Refusal:
    """One refused request by alpha's token of ``role`` (None: no token at all)."""

    method: str
    path: str
    role: Role | None
    status: int
    slug: str
    audited: bool
    body: Any = ABSENT
    raw: str | bytes | None = None  # a raw body instead of JSON
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    names: str | None = None  # the field the problem must name


AA, PUB, RDR = Role.AGENCY_ADMIN, Role.PUBLISHER, Role.READER
OWN_GRANTS = "/v1/sets/alpha/own/grants"

# fmt: off
REFUSALS: dict[str, Refusal] = {
    # -- bodies that do not parse: 400; of another media type: 415
    "malformed JSON":          Refusal("POST", "/v1/sets", AA, 400, "malformed-body", True,
                                       raw='{"name": "alpha/x",'),
    "duplicate member":        Refusal("POST", "/v1/sets", AA, 400, "malformed-body", True,
                                       raw='{"name": "alpha/x", "name": "alpha/y"}'),
    "NaN":                     Refusal("POST", "/v1/sets", AA, 400, "malformed-body", True,
                                       raw='{"name": "alpha/x", "title": NaN}'),
    "not UTF-8":               Refusal("POST", "/v1/sets", AA, 400, "malformed-body", True,
                                       raw=b'{"name": "alpha/x", "title": "\xff"}'),
    "nested too deep":         Refusal("POST", "/v1/sets", AA, 400, "malformed-body", True,
                                       raw='{"readers": ' + "[" * 40 + "]" * 40 + "}"),
    "number too long to read": Refusal("POST", "/v1/sets", AA, 400, "malformed-body", True,
                                       raw='{"name": "alpha/x", "title": ' + "9" * 5000 + "}"),
    "gzip, then more":         Refusal("POST", "/v1/sets", AA, 400, "bad-request", True,
                                       raw=gzip.compress(b'{"name": "alpha/x"}') + b"junk",
                                       headers={"Content-Encoding": "gzip"}),
    "not JSON":                Refusal("POST", "/v1/sets", AA, 415, "unsupported-media-type",
                                       True, raw="name=alpha/x", content_type="text/plain"),
    "JSON, not UTF-8":         Refusal("POST", "/v1/sets", AA, 415, "unsupported-media-type",
                                       True, raw='{"name": "alpha/x"}',
                                       content_type="application/json; charset=latin-1"),
    "deflate":                 Refusal("POST", "/v1/sets", AA, 415, "unsupported-media-type",
                                       False, raw='{"name": "alpha/x"}',
                                       headers={"Content-Encoding": "deflate"}),
    "gzip twice":              Refusal("POST", "/v1/sets", AA, 415, "unsupported-media-type",
                                       False, raw='{"name": "alpha/x"}',
                                       headers={"Content-Encoding": "gzip, gzip"}),
    # -- well-formed bodies whose fields break their rules: 422, naming each field
    "not an object":           Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body=["alpha/x"], names="body"),
    "missing field":           Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"title": "no name"}, names="name"),
    "unknown field":           Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"name": "alpha/x", "colour": "red"}, names="colour"),
    "bad set name":            Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"name": "Alpha/X"}, names="name"),
    "set name without agency": Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"name": "x"}, names="name"),
    "set name, three parts":   Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"name": "alpha/x/y"}, names="name"),
    "set name, newline":       Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"name": "alpha/x\n"}, names="name"),
    "title not a string":      Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"name": "alpha/x", "title": 7}, names="title"),
    "title too long":          Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"name": "alpha/x", "title": "t" * 201},
                                       names="title"),
    "title with NUL":          Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"name": "alpha/x", "title": "a\x00b"},
                                       names="title"),
    "title with a newline":    Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"name": "alpha/x", "title": "a\nb"},
                                       names="title"),
    "title with RTL override": Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"name": "alpha/x", "title": "txt.\u202eexe"},
                                       names="title"),
    "title, lone surrogate":   Refusal("POST", "/v1/sets", AA, 422, "invalid-field", True,
                                       body={"name": "alpha/x", "title": "\ud800"},
                                       names="title"),
    "missing readers":         Refusal("PUT", OWN_GRANTS, AA, 422, "invalid-field", True,
                                       body={}, names="readers"),
    "readers not a list":      Refusal("PUT", OWN_GRANTS, AA, 422, "invalid-field", True,
                                       body={"readers": "delta"}, names="readers"),
    "bad reader form":         Refusal("PUT", OWN_GRANTS, AA, 422, "invalid-field", True,
                                       body={"readers": ["delta", "Not A Slug"]},
                                       names="readers"),
    "bad group form":          Refusal("PUT", OWN_GRANTS, AA, 422, "invalid-field", True,
                                       body={"readers": ["group:"]}, names="readers"),
    "reader listed twice":     Refusal("PUT", OWN_GRANTS, AA, 422, "invalid-field", True,
                                       body={"readers": ["delta", "delta"]}, names="readers"),
    "owner as reader":         Refusal("PUT", OWN_GRANTS, AA, 422, "invalid-field", True,
                                       body={"readers": ["alpha"]}, names="readers"),
    # -- well-formed, but refused by the hub's state or rules
    "unknown reader":          Refusal("PUT", OWN_GRANTS, AA, 422, "unknown-reader", True,
                                       body={"readers": ["delta", "nobody", "group:nobody"]}),
    "set exists":              Refusal("POST", "/v1/sets", AA, 409, "set-exists", True,
                                       body={"name": "alpha/own", "title": "again"}),
    "stale If-Match":          Refusal("PUT", OWN_GRANTS, AA, 412, "precondition-failed", True,
                                       body={"readers": []},
                                       headers={"If-Match": '"00000000000000000000000000000000"'}),
    "create as publisher":     Refusal("POST", "/v1/sets", PUB, 403, "forbidden", True,
                                       body={"name": "alpha/x"}),
    "create for beta":         Refusal("POST", "/v1/sets", AA, 403, "forbidden", True,
                                       body={"name": "beta/x"}),
    "grants as reader":        Refusal("PUT", OWN_GRANTS, RDR, 403, "forbidden", True,
                                       body={"readers": []}),
    "grants of a granted set": Refusal("PUT", "/v1/sets/beta/to-agency/grants", AA, 403,
                                       "forbidden", True, body={"readers": []}),
    "grants of a hidden set":  Refusal("PUT", "/v1/sets/beta/ungranted/grants", AA, 404,
                                       "not-found", True, body={"readers": []}),
    "grants of a missing set": Refusal("PUT", "/v1/sets/beta/missing/grants", AA, 404,
                                       "not-found", True, body={"readers": []}),
    # -- no view runs, or nothing is changed: refused, not audited
    "no token":                Refusal("POST", "/v1/sets", None, 401, "unauthorized", False,
                                       body={"name": "alpha/x"}),
    "unknown route":           Refusal("POST", "/v1/nothing-here", AA, 404, "not-found", False,
                                       body={"name": "alpha/x"}),
    "unknown route, GET":      Refusal("GET", "/v1/sets/alpha/own/nothing", AA, 404,
                                       "not-found", False),
    "wrong method":            Refusal("DELETE", "/v1/sets/alpha/own", AA, 405,
                                       "method-not-allowed", False),
    "wrong method, grants":    Refusal("POST", OWN_GRANTS, AA, 405, "method-not-allowed", False,
                                       body={"readers": []}),
    "bad query":               Refusal("GET", "/v1/audit?limit=0", AA, 400, "bad-request", False,
                                       names="limit"),
    "bad query, not a number": Refusal("GET", "/v1/agencies/alpha/keysets?after=x", AA, 400,
                                       "bad-request", False, names="after"),
    "query given twice":       Refusal("GET", "/v1/audit?limit=2&limit=3", AA, 400,
                                       "bad-request", False),
    "query, underscore digits": Refusal("GET", "/v1/audit?after=1_0", AA, 400, "bad-request",
                                       False, names="after"),
    "query, other digits":     Refusal("GET", "/v1/audit?after=%D9%A1", AA, 400, "bad-request",
                                       False, names="after"),
    "query, a sign":           Refusal("GET", "/v1/audit?after=%2B1", AA, 400, "bad-request",
                                       False, names="after"),
    "OPTIONS":                 Refusal("OPTIONS", "/v1/sets", AA, 405, "method-not-allowed",
                                       False),
    "doubled slashes":         Refusal("GET", "//v1//sets", AA, 404, "not-found", False),
    "version spelled 01":      Refusal("GET", "/v1/sets/alpha/own/versions/01", RDR, 404,
                                       "not-found", False),
    "unknown agency":          Refusal("GET", "/v1/agencies/nobody/keysets", RDR, 404,
                                       "not-found", False),
}
# fmt: on


def _send(client: FlaskClient, hub: Hub, refusal: Refusal) -> TestResponse:
    headers = dict(refusal.headers)
    if refusal.role is not None:
        headers |= hub.auth("alpha", refusal.role)
    if refusal.raw is not None:
        data = refusal.raw
    elif refusal.body is not ABSENT:
        data = json.dumps(refusal.body)
    else:
        return client.open(refusal.path, method=refusal.method, headers=headers)
    return client.open(
        refusal.path,
        method=refusal.method,
        headers=headers,
        data=data,
        content_type=refusal.content_type,
    )


def _named_fields(problem: dict[str, Any]) -> set[str]:
    """The fields a 400 problem names: its ``errors`` keys, or its ``field``."""
    named = set(problem.get("errors") or {})
    if "field" in problem:
        named.add(problem["field"])
    return named


def _check(database_url: str, hub: Hub, client: FlaskClient, name: str) -> list[str]:
    """Send one refusal; return what is wrong with how it was refused."""
    refusal = REFUSALS[name]
    wrong: list[str] = []
    rows_before, audit_before = snapshot(database_url), audit_count(database_url)
    response = _send(client, hub, refusal)
    if response.status_code != refusal.status:
        return [f"{name}: status {response.status_code}, expected {refusal.status}"]
    if response.mimetype != PROBLEM_CONTENT_TYPE:
        return [f"{name}: {response.mimetype} is not a problem"]
    problem = response.get_json(force=True)
    if problem["type"] != problem_type(refusal.slug):
        wrong.append(f"{name}: type {problem['type']}, expected {refusal.slug}")
    if problem["status"] != refusal.status:
        wrong.append(f"{name}: problem status {problem['status']}")
    if refusal.names is not None and refusal.names not in _named_fields(problem):
        wrong.append(f"{name}: the problem does not name {refusal.names!r}: {problem}")
    if refusal.status == 405 and refusal.method in response.headers.get("Allow", refusal.method):
        wrong.append(f"{name}: Allow {response.headers.get('Allow')!r}")
    if snapshot(database_url) != rows_before:
        wrong.append(f"{name}: the data tables changed")
    added = audit_events(database_url, after=audit_before)
    if not refusal.audited:
        if added:
            wrong.append(f"{name}: audited {[(e.action, e.outcome) for e in added]}")
        return wrong
    if len(added) != 1:
        return [*wrong, f"{name}: {len(added)} audit rows, expected 1"]
    event = added[0]
    detail = json.loads(event.detail)
    expected_action = "set.create" if refusal.path == "/v1/sets" else "set.grants"
    assert refusal.role is not None
    observed = (event.outcome, event.action, event.actor, event.actor_agency, detail["type"])
    wanted = (
        "refused",
        expected_action,
        f"token:{hub.token_id('alpha', refusal.role)}",
        "alpha",
        problem["type"],
    )
    if observed != wanted:
        wrong.append(f"{name}: audit row {observed}, expected {wanted}")
    if detail.get("detail") != problem["detail"]:
        wrong.append(f"{name}: audit detail {detail!r} is not the problem's")
    return wrong


def _warm_up(client: FlaskClient, hub: Hub) -> None:
    # A token's first use writes its last_used_at (at most once a minute);
    # do that now, so the data tables change only if a refusal changes them.
    for agency in AGENCIES:
        for role in ROLES:
            assert client.get("/v1/sets", headers=hub.auth(agency, role)).status_code == 200


def test_every_refusal_is_typed_stores_nothing_and_is_audited_once(
    database_url: str, client: FlaskClient
) -> None:
    hub = seed_world(database_url)
    _warm_up(client, hub)
    wrong = [problem for name in REFUSALS for problem in _check(database_url, hub, client, name)]
    assert not wrong, "\n".join(wrong)
    # What was refused is still as it was.
    own = client.get("/v1/sets/alpha/own", headers=hub.auth("alpha", AA)).get_json()
    assert own["grants"] == list(SETS["alpha/own"][1])
    names = [s["name"] for s in client.get("/v1/sets", headers=hub.auth("alpha", AA)).json["sets"]]
    assert names == ["alpha/own", "beta/to-agency", "beta/to-group"]


def test_unknown_reader_names_every_unknown_reader(database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    response = _send(client, hub, REFUSALS["unknown reader"])
    assert response.status_code == 422
    assert response.get_json(force=True)["readers"] == ["nobody", "group:nobody"]


# -- Size limits ------------------------------------------------------------------------


def test_a_body_over_the_json_cap_is_413_stores_nothing_and_is_audited(
    database_url: str, app: Flask
) -> None:
    hub = seed_world(database_url)
    client = app.test_client()
    _warm_up(client, hub)
    headers = hub.auth("alpha", AA)
    rows_before, audit_before = snapshot(database_url), audit_count(database_url)
    big_create = {"name": "alpha/big", "title": "t" * MAX_JSON_BYTES}
    big_grants = {"readers": ["delta"] * (MAX_JSON_BYTES // 8)}
    answers = [
        client.post("/v1/sets", json=big_create, headers=headers),
        client.put(OWN_GRANTS, json=big_grants, headers=headers),
    ]
    for response in answers:
        assert response.status_code == 413
        assert response.mimetype == PROBLEM_CONTENT_TYPE
        problem = response.get_json(force=True)
        assert problem["type"] == problem_type("too-large")
        assert problem["limit"] == MAX_JSON_BYTES
        assert str(MAX_JSON_BYTES) in problem["detail"]
    assert snapshot(database_url) == rows_before
    added = audit_events(database_url, after=audit_before)
    assert [(e.action, e.outcome, json.loads(e.detail)["type"]) for e in added] == [
        ("set.create", "refused", problem_type("too-large")),
        ("set.grants", "refused", problem_type("too-large")),
    ]
    # Under the limit the same request goes through.
    small = client.post("/v1/sets", json={"name": "alpha/big", "title": "t" * 200}, headers=headers)
    assert small.status_code == 201


# -- Database errors never leak ----------------------------------------------------------


@pytest.fixture
def production_app(database_url: str) -> Iterator[Flask]:
    """The hub as gunicorn runs it: errors become 500 problems, never raised to the caller."""
    with make_app(database_url) as app:
        app.config.update(TESTING=False, PROPAGATE_EXCEPTIONS=False)
        yield app


INTERNAL_PROBLEM = {
    "type": problem_type("internal-error"),
    "title": "Internal server error",
    "status": 500,
    "detail": INTERNAL_DETAIL,
}


def test_a_database_error_is_a_500_without_its_text(
    database_url: str, production_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = seed_world(database_url)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise OperationalError(
            "SELECT secret FROM sets -- SECRET-DB-TEXT",
            {"password": "SECRET-DB-TEXT"},
            Exception("SECRET-DB-TEXT: could not connect to 10.1.2.3"),
        )

    monkeypatch.setattr(sets_service, "list_sets", broken)
    monkeypatch.setattr(sets_service, "create_set", broken)
    client = production_app.test_client()
    answers = [
        client.get("/v1/sets", headers=hub.auth("alpha", RDR)),
        client.post("/v1/sets", json={"name": "alpha/x"}, headers=hub.auth("alpha", AA)),
    ]
    for response in answers:
        assert response.status_code == 500
        assert response.mimetype == PROBLEM_CONTENT_TYPE
        assert response.get_json(force=True) == INTERNAL_PROBLEM
        assert b"SECRET-DB-TEXT" not in response.data
        assert b"10.1.2.3" not in response.data


def test_a_real_database_failure_leaks_no_sql(database_url: str, production_app: Flask) -> None:
    hub = seed_world(database_url)
    with engine_for(database_url) as engine, engine.begin() as connection:
        connection.execute(text("ALTER TABLE sets RENAME TO sets_gone"))
    client = production_app.test_client()
    answers = [
        client.get("/v1/sets", headers=hub.auth("alpha", RDR)),
        client.get("/v1/sets/alpha/own", headers=hub.auth("alpha", RDR)),
        client.put(OWN_GRANTS, json={"readers": []}, headers=hub.auth("alpha", AA)),
    ]
    for response in answers:
        assert response.status_code == 500
        assert response.get_json(force=True) == INTERNAL_PROBLEM
        for leak in (b"sets", b"SELECT", b"relation", b"no such table", b"psycopg", b"sqlite"):
            assert leak not in response.data


# -- Path segments the database cannot hold --------------------------------------------
#
# The URL's agency and set segments reach the database unchecked.  Whatever
# they hold, a set that cannot exist must answer exactly like a missing one.


@pytest.mark.parametrize(
    "agency",
    [pytest.param("a" * 64, id="agency-64-chars"), pytest.param("al\x00pha", id="agency-nul")],
)
def test_an_impossible_agency_in_the_path_is_a_missing_set(
    agency: str, database_url: str, production_app: Flask
) -> None:
    hub = seed_world(database_url)
    client = production_app.test_client()
    headers = hub.auth("alpha", AA)
    quoted = agency.replace("\x00", "%00")
    missing_get = client.get("/v1/sets/beta/missing", headers=headers)
    missing_put = client.put("/v1/sets/beta/missing/grants", json={"readers": []}, headers=headers)
    audit_before = audit_count(database_url)
    get = client.get(f"/v1/sets/{quoted}/own", headers=headers)
    put = client.put(f"/v1/sets/{quoted}/own/grants", json={"readers": []}, headers=headers)
    assert (get.status_code, get.data) == (404, missing_get.data)
    assert (put.status_code, put.data) == (404, missing_put.data)
    # The refused grant is audited like any other.
    assert [e.outcome for e in audit_events(database_url, after=audit_before)] == ["refused"]


def test_a_nul_in_the_set_or_keyset_path_is_404(database_url: str, production_app: Flask) -> None:
    hub = seed_world(database_url)
    client = production_app.test_client()
    headers = hub.auth("alpha", RDR)
    paths = ["/v1/sets/alpha/o%00wn", "/v1/sets/alpha/own%00", "/v1/agencies/al%00pha/keysets"]
    statuses = {path: client.get(path, headers=headers).status_code for path in paths}
    assert statuses == dict.fromkeys(paths, 404)


@pytest.mark.parametrize(
    "after",
    [
        pytest.param(str(2**31), id="2^31"),
        pytest.param(str(2**63), id="2^63"),
        pytest.param("9" * 20, id="20-digits"),
    ],
)
def test_an_after_beyond_any_row_id_is_never_a_500(
    after: str, database_url: str, production_app: Flask
) -> None:
    # Row ids are 32-bit on PostgreSQL and 64-bit on SQLite.  A larger
    # ``after`` may be refused (400 naming it) or answered with nothing
    # newer, but must never reach the database as a number it cannot hold.
    hub = seed_world(database_url)
    client = production_app.test_client()
    headers = hub.auth("alpha", Role.ADMIN)
    for path, items in (("/v1/audit", "events"), ("/v1/agencies/alpha/keysets", "keysets")):
        response = client.get(f"{path}?after={after}", headers=headers)
        assert response.status_code in (200, 400), (path, response.status_code)
        if response.status_code == 200:
            assert response.get_json()[items] == [], path
        else:
            problem = response.get_json(force=True)
            assert problem["type"] == problem_type("bad-request"), path
            assert "after" in problem["errors"], path
