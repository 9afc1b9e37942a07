"""The access-control matrix: every role x every endpoint x every case, exact statuses.

The world is :mod:`tests.server.seeding`'s standard one.  A *case* names the
calling agency and the set it aims at:

    own              alpha calls about alpha/own (its own set)
    granted-agency   alpha calls about beta/to-agency (granted to alpha)
    granted-group    alpha calls about beta/to-group (granted to group:partners, alpha's group)
    ungranted        alpha calls about beta/ungranted (granted to others only)
    missing          alpha calls about beta/missing (no such set)
    other-agency     gamma (no grant, no group) calls about alpha/own
    new              alpha calls about alpha/new (no such set yet, in its own agency)

Each endpoint is one test on a fresh database (SQLite and PostgreSQL), and
walks its rows of the table below: one cell per (case, role), each with its
exact expected status.  Roles are tried least privileged first, so the one
cell that changes anything (``agency-admin`` creating ``alpha/new``) runs last
in its row.  Every failing cell is reported, not only the first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from server.errors import PROBLEM_CONTENT_TYPE, problem_type
from server.services.callers import Role
from tests.server.seeding import SETS, Hub, seed_world

ADMIN, AGENCY_ADMIN, PUBLISHER, READER = (
    Role.ADMIN,
    Role.AGENCY_ADMIN,
    Role.PUBLISHER,
    Role.READER,
)
# The order the table's columns are written in.
COLUMNS = (ADMIN, AGENCY_ADMIN, PUBLISHER, READER)
# The order cells run in: the only role that may change anything goes last.
RUN_ORDER = (READER, PUBLISHER, ADMIN, AGENCY_ADMIN)


@dataclass(frozen=True)
class Case:
    """Who calls (their agency) and about which set."""

    caller: str
    target: str

    @property
    def owner(self) -> str:
        return self.target.split("/")[0]


CASES = {
    "own": Case("alpha", "alpha/own"),
    "granted-agency": Case("alpha", "beta/to-agency"),
    "granted-group": Case("alpha", "beta/to-group"),
    "ungranted": Case("alpha", "beta/ungranted"),
    "missing": Case("alpha", "beta/missing"),
    "other-agency": Case("gamma", "alpha/own"),
    "new": Case("alpha", "alpha/new"),
}

# Cells of GET /v1/sets: 200 with the target set listed, or 200 without it.
LISTED = (200, True)
UNLISTED = (200, False)
# Cells of GET /v1/audit: 200 with the target set's events visible, or 200 without them.
SEEN = (200, True)
UNSEEN = (200, False)

Cell = int | tuple[int, bool]
Row = tuple[str, Cell, Cell, Cell, Cell]

# fmt: off
MATRIX: dict[str, list[Row]] = {
    "GET /v1/sets": [
        # case              admin     agency-admin  publisher  reader
        ("own",             LISTED,   LISTED,       LISTED,    LISTED),
        ("granted-agency",  LISTED,   LISTED,       LISTED,    LISTED),
        ("granted-group",   LISTED,   LISTED,       LISTED,    LISTED),
        ("ungranted",       UNLISTED, UNLISTED,     UNLISTED,  UNLISTED),
        ("missing",         UNLISTED, UNLISTED,     UNLISTED,  UNLISTED),
        ("other-agency",    UNLISTED, UNLISTED,     UNLISTED,  UNLISTED),
        ("new",             UNLISTED, UNLISTED,     UNLISTED,  UNLISTED),
    ],
    "POST /v1/sets": [
        # case              admin  agency-admin  publisher  reader
        ("own",             403,   409,          403,       403),
        ("granted-agency",  403,   403,          403,       403),
        ("granted-group",   403,   403,          403,       403),
        ("ungranted",       403,   403,          403,       403),
        ("missing",         403,   403,          403,       403),
        ("other-agency",    403,   403,          403,       403),
        ("new",             403,   201,          403,       403),
    ],
    "GET /v1/sets/{agency}/{set}": [
        # case              admin  agency-admin  publisher  reader
        ("own",             200,   200,          200,       200),
        ("granted-agency",  200,   200,          200,       200),
        ("granted-group",   200,   200,          200,       200),
        ("ungranted",       404,   404,          404,       404),
        ("missing",         404,   404,          404,       404),
        ("other-agency",    404,   404,          404,       404),
        ("new",             404,   404,          404,       404),
    ],
    "PUT /v1/sets/{agency}/{set}/grants": [
        # case              admin  agency-admin  publisher  reader
        ("own",             403,   200,          403,       403),
        ("granted-agency",  403,   403,          403,       403),
        ("granted-group",   403,   403,          403,       403),
        ("ungranted",       404,   404,          404,       404),
        ("missing",         404,   404,          404,       404),
        ("other-agency",    404,   404,          404,       404),
        ("new",             404,   404,          404,       404),
    ],
    "GET /v1/agencies/{agency}/keysets": [
        # case              admin  agency-admin  publisher  reader
        ("own",             200,   200,          200,       200),
        ("granted-agency",  200,   200,          200,       200),
        ("granted-group",   200,   200,          200,       200),
        ("ungranted",       200,   200,          200,       200),
        ("missing",         200,   200,          200,       200),
        ("other-agency",    200,   200,          200,       200),
        ("new",             200,   200,          200,       200),
    ],
    "GET /v1/audit": [
        # case              admin   agency-admin  publisher  reader
        ("own",             SEEN,   SEEN,         SEEN,      SEEN),
        ("granted-agency",  SEEN,   UNSEEN,       UNSEEN,    UNSEEN),
        ("granted-group",   SEEN,   UNSEEN,       UNSEEN,    UNSEEN),
        ("ungranted",       SEEN,   UNSEEN,       UNSEEN,    UNSEEN),
        ("missing",         UNSEEN, UNSEEN,       UNSEEN,    UNSEEN),
        ("other-agency",    SEEN,   UNSEEN,       UNSEEN,    UNSEEN),
        ("new",             UNSEEN, UNSEEN,       UNSEEN,    UNSEEN),
    ],
}
# fmt: on

# The problem type each refusal status of this matrix must carry.
REFUSAL_TYPES = {
    403: problem_type("forbidden"),
    404: problem_type("not-found"),
    409: problem_type("set-exists"),
}


def test_the_table_covers_every_case_once_per_endpoint() -> None:
    for endpoint, rows in MATRIX.items():
        assert [row[0] for row in rows] == list(CASES), endpoint


Request = Callable[[FlaskClient, Hub, Case, Role], TestResponse]


def _list_sets(client: FlaskClient, hub: Hub, case: Case, role: Role) -> TestResponse:
    return client.get("/v1/sets", headers=hub.auth(case.caller, role))


def _create_set(client: FlaskClient, hub: Hub, case: Case, role: Role) -> TestResponse:
    body = {"name": case.target, "title": "made by the matrix"}
    return client.post("/v1/sets", json=body, headers=hub.auth(case.caller, role))


def _get_set(client: FlaskClient, hub: Hub, case: Case, role: Role) -> TestResponse:
    return client.get(f"/v1/sets/{case.target}", headers=hub.auth(case.caller, role))


def _put_grants(client: FlaskClient, hub: Hub, case: Case, role: Role) -> TestResponse:
    # The readers alpha/own already has: the one allowed cell changes no grant.
    body = {"readers": list(SETS["alpha/own"][1])}
    return client.put(
        f"/v1/sets/{case.target}/grants", json=body, headers=hub.auth(case.caller, role)
    )


def _keysets(client: FlaskClient, hub: Hub, case: Case, role: Role) -> TestResponse:
    return client.get(f"/v1/agencies/{case.owner}/keysets", headers=hub.auth(case.caller, role))


def _audit(client: FlaskClient, hub: Hub, case: Case, role: Role) -> TestResponse:
    return client.get("/v1/audit?limit=1000", headers=hub.auth(case.caller, role))


REQUESTS: dict[str, Request] = {
    "GET /v1/sets": _list_sets,
    "POST /v1/sets": _create_set,
    "GET /v1/sets/{agency}/{set}": _get_set,
    "PUT /v1/sets/{agency}/{set}/grants": _put_grants,
    "GET /v1/agencies/{agency}/keysets": _keysets,
    "GET /v1/audit": _audit,
}


def _observe(endpoint: str, hub: Hub, case: Case, response: TestResponse) -> Cell:
    """What the cell saw, in the table's terms; checks the body of each answer too."""
    status = response.status_code
    if status >= 400:
        assert response.mimetype == PROBLEM_CONTENT_TYPE
        assert response.get_json(force=True)["type"] == REFUSAL_TYPES.get(status)
        return status
    body = response.get_json()
    if endpoint == "GET /v1/sets":
        return status, case.target in [s["name"] for s in body["sets"]]
    if endpoint == "GET /v1/audit":
        targets = {event["target"] for event in body["events"]}
        return status, f"set:{case.target}" in targets
    if endpoint in ("GET /v1/sets/{agency}/{set}", "POST /v1/sets"):
        assert body["name"] == case.target
        assert body["owner"] == case.owner
        # Grants are shown to the owning agency only.
        assert ("grants" in body) == (case.owner == case.caller)
    if endpoint == "PUT /v1/sets/{agency}/{set}/grants":
        assert body == {"name": case.target, "readers": list(SETS[case.target][1])}
    if endpoint == "GET /v1/agencies/{agency}/keysets":
        assert body == {"keysets": [hub.agencies[case.owner].document.to_json()]}
    return status


def _test_id(endpoint: str) -> str:
    """``GET /v1/sets/{agency}/{set}`` -> ``GET-sets-agency-set``: easy to pick with -k."""
    return "-".join(re.findall(r"[A-Za-z]+", endpoint.replace("/v1/", " ")))


def _run_matrix(endpoint: str, client: FlaskClient, hub: Hub) -> dict[tuple[str, Role], Any]:
    """Run every cell of ``endpoint``; return the responses, fail listing every wrong cell."""
    expected = {
        (case, role): cell
        for case, *cells in MATRIX[endpoint]
        for role, cell in zip(COLUMNS, cells, strict=True)
    }
    responses: dict[tuple[str, Role], Any] = {}
    wrong: list[str] = []
    for case_name in CASES:
        for role in RUN_ORDER:
            case = CASES[case_name]
            response = REQUESTS[endpoint](client, hub, case, role)
            responses[(case_name, role)] = response
            try:
                seen = _observe(endpoint, hub, case, response)
            except AssertionError as exc:
                seen = f"{response.status_code} with an unexpected body ({exc})"
            want = expected[(case_name, role)]
            if seen != want:
                wrong.append(f"{endpoint} [{case_name}, {role}]: expected {want}, got {seen}")
    assert not wrong, "\n".join(wrong)
    return responses


@pytest.mark.parametrize(
    "endpoint", [pytest.param(endpoint, id=_test_id(endpoint)) for endpoint in MATRIX]
)
def test_access_matrix(endpoint: str, database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    responses = _run_matrix(endpoint, client, hub)
    if endpoint in ("GET /v1/sets/{agency}/{set}", "PUT /v1/sets/{agency}/{set}/grants"):
        # A set the caller may not read is exactly a missing one, byte for byte.
        for role in COLUMNS:
            hidden, missing = responses[("ungranted", role)], responses[("missing", role)]
            assert hidden.data == missing.data, role
            assert hidden.headers == missing.headers, role
            assert responses[("other-agency", role)].data == missing.data, role


def test_hidden_and_missing_sets_refuse_set_creation_alike(
    database_url: str, client: FlaskClient
) -> None:
    # Creating a set in another agency's namespace is refused before any name
    # is looked up: whether beta/ungranted exists is not revealed.
    hub = seed_world(database_url)
    for role in COLUMNS:
        answers = [
            client.post("/v1/sets", json={"name": name}, headers=hub.auth("alpha", role))
            for name in ("beta/ungranted", "beta/missing")
        ]
        assert answers[0].status_code == answers[1].status_code == 403, role
        assert answers[0].data == answers[1].data, role
