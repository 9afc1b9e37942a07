"""Sets, grants, keysets and audit over HTTP: the happy paths, ETags, paging and OpenAPI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.api.schemas import (
    READER_PATTERN,
    SET_NAME_PATTERN,
    CreateSetSchema,
    GrantsSchema,
)
from server.errors import problem_type
from server.services.callers import Role
from tests.conftest import make_app
from tests.server.dbstate import audit_events
from tests.server.seeding import AGENCIES, ROLES, Hub, seed_world

AA, PUB, RDR, ADMIN = Role.AGENCY_ADMIN, Role.PUBLISHER, Role.READER, Role.ADMIN
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _names(client: FlaskClient, hub: Hub, agency: str, role: Role = RDR) -> list[str]:
    response = client.get("/v1/sets", headers=hub.auth(agency, role))
    assert response.status_code == 200
    return [s["name"] for s in response.get_json()["sets"]]


# -- Create, list, get ----------------------------------------------------------------


def test_create_then_get_and_list_a_set(database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    before = datetime.now(UTC).replace(microsecond=0)
    created = client.post(
        "/v1/sets",
        json={"name": "alpha/new-list", "title": "  New list  "},
        headers=hub.auth("alpha", AA),
    )
    assert created.status_code == 201
    body = created.get_json()
    assert set(body) == {"name", "owner", "title", "latest_version", "created_at", "grants"}
    assert body["name"] == "alpha/new-list"
    assert body["owner"] == "alpha"
    assert body["title"] == "New list"
    assert body["latest_version"] == 0
    assert body["grants"] == []
    assert TIME_RE.fullmatch(body["created_at"])
    made = datetime.strptime(body["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= made <= datetime.now(UTC)

    # Every token of the owning agency reads it, with the same metadata and ETag.
    for role in ROLES:
        got = client.get("/v1/sets/alpha/new-list", headers=hub.auth("alpha", role))
        assert got.status_code == 200
        assert got.get_json() == body
        assert got.headers["ETag"] == created.headers["ETag"]
    assert _names(client, hub, "alpha") == [
        "alpha/new-list",
        "alpha/own",
        "beta/to-agency",
        "beta/to-group",
    ]
    # Nobody else has been granted it.
    for agency in ("beta", "gamma", "delta"):
        assert "alpha/new-list" not in _names(client, hub, agency)
        missing = client.get("/v1/sets/alpha/new-list", headers=hub.auth(agency, RDR))
        assert missing.status_code == 404

    event = audit_events(database_url)[-1]
    assert (event.action, event.target, event.outcome) == ("set.create", "set:alpha/new-list", "ok")
    assert (event.actor, event.actor_agency) == (
        f"token:{hub.token_id('alpha', AA)}",
        "alpha",
    )
    assert json.loads(event.detail) == {"title": "New list"}


def test_the_title_defaults_to_empty(database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    created = client.post(
        "/v1/sets", json={"name": "alpha/untitled"}, headers=hub.auth("alpha", AA)
    )
    assert created.status_code == 201
    assert created.get_json()["title"] == ""


def test_each_agency_lists_exactly_what_it_may_read(database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    expected = {
        "alpha": ["alpha/own", "beta/to-agency", "beta/to-group"],
        "beta": ["beta/to-agency", "beta/to-group", "beta/ungranted"],
        "gamma": [],
        "delta": ["alpha/own", "beta/ungranted"],
    }
    for agency, names in expected.items():
        for role in ROLES:
            response = client.get("/v1/sets", headers=hub.auth(agency, role))
            listed = response.get_json()["sets"]
            assert [s["name"] for s in listed] == names, (agency, role)
            # Grants are shown to the owning agency only.
            for entry in listed:
                assert ("grants" in entry) == (entry["owner"] == agency), entry
    owner_view = client.get("/v1/sets/beta/ungranted", headers=hub.auth("beta", RDR)).get_json()
    assert owner_view["grants"] == ["delta", "group:others"]


# -- Grants --------------------------------------------------------------------------


def test_grants_replace_the_readers_under_if_match(database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    owner = hub.auth("alpha", AA)
    first = client.get("/v1/sets/alpha/own", headers=owner)
    assert first.get_json()["grants"] == ["delta"]
    etag = first.headers["ETag"]

    put = client.put(
        "/v1/sets/alpha/own/grants",
        json={"readers": ["group:partners", "gamma", "beta"]},
        headers=owner | {"If-Match": etag},
    )
    assert put.status_code == 200
    assert put.get_json() == {"name": "alpha/own", "readers": ["beta", "gamma", "group:partners"]}

    after = client.get("/v1/sets/alpha/own", headers=owner)
    assert after.get_json()["grants"] == ["beta", "gamma", "group:partners"]
    assert after.headers["ETag"] != etag
    # The new readers read it; delta, no longer granted, no longer does.
    for agency in ("beta", "gamma"):
        assert "alpha/own" in _names(client, hub, agency)
        got = client.get("/v1/sets/alpha/own", headers=hub.auth(agency, RDR))
        assert got.status_code == 200
        assert "grants" not in got.get_json()
    assert "alpha/own" not in _names(client, hub, "delta")
    assert client.get("/v1/sets/alpha/own", headers=hub.auth("delta", RDR)).status_code == 404

    # The ETag read before the change is stale now: 412, and nothing changes.
    stale = client.put(
        "/v1/sets/alpha/own/grants", json={"readers": []}, headers=owner | {"If-Match": etag}
    )
    assert stale.status_code == 412
    assert stale.get_json()["type"] == problem_type("precondition-failed")
    assert client.get("/v1/sets/alpha/own", headers=owner).get_json()["grants"] == [
        "beta",
        "gamma",
        "group:partners",
    ]

    # Without If-Match the update is unconditional; an empty list revokes every grant.
    cleared = client.put("/v1/sets/alpha/own/grants", json={"readers": []}, headers=owner)
    assert cleared.get_json() == {"name": "alpha/own", "readers": []}
    for agency in ("beta", "gamma", "delta"):
        assert "alpha/own" not in _names(client, hub, agency)

    accepted = [e for e in audit_events(database_url) if e.outcome == "ok"][-2:]
    assert [(e.action, e.target, json.loads(e.detail)) for e in accepted] == [
        (
            "set.grants",
            "set:alpha/own",
            {"before": ["delta"], "after": ["beta", "gamma", "group:partners"]},
        ),
        (
            "set.grants",
            "set:alpha/own",
            {"before": ["beta", "gamma", "group:partners"], "after": []},
        ),
    ]


def test_a_group_grant_reaches_members_added_later(database_url: str, client: FlaskClient) -> None:
    from server.services import groups
    from tests.server.dbstate import session_factory
    from tests.server.seeding import OPERATOR

    hub = seed_world(database_url)
    assert "beta/to-group" not in _names(client, hub, "gamma")
    with session_factory(database_url) as factory, factory() as session:
        groups.add_member(session, OPERATOR, "partners", "gamma")
    assert "beta/to-group" in _names(client, hub, "gamma")
    assert client.get("/v1/sets/beta/to-group", headers=hub.auth("gamma", RDR)).status_code == 200


def test_if_match_compares_strongly(database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    owner = hub.auth("alpha", AA)
    etag = client.get("/v1/sets/alpha/own", headers=owner).headers["ETag"]
    weak = client.put(
        "/v1/sets/alpha/own/grants", json={"readers": []}, headers=owner | {"If-Match": f"W/{etag}"}
    )
    assert weak.status_code == 412


def test_if_match_takes_a_list_of_etags_or_a_star(database_url: str, client: FlaskClient) -> None:
    # RFC 9110, 13.1.1: If-Match holds "*" or a list of entity tags; the
    # condition is true when the current ETag is one of them (or for "*",
    # whenever the set exists).
    hub = seed_world(database_url)
    owner = hub.auth("alpha", AA)
    etag = client.get("/v1/sets/alpha/own", headers=owner).headers["ETag"]
    listed = client.put(
        "/v1/sets/alpha/own/grants",
        json={"readers": ["beta"]},
        headers=owner | {"If-Match": f'"0123456789abcdef0123456789abcdef", {etag}'},
    )
    assert listed.status_code == 200
    star = client.put(
        "/v1/sets/alpha/own/grants", json={"readers": ["gamma"]}, headers=owner | {"If-Match": "*"}
    )
    assert star.status_code == 200


# -- ETags and 304 -----------------------------------------------------------------------


CONDITIONAL_PATHS = ["/v1/sets", "/v1/sets/alpha/own", "/v1/agencies/alpha/keysets", "/v1/audit"]


def test_if_none_match_answers_304(database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    headers = hub.auth("alpha", AA)
    for path in CONDITIONAL_PATHS:
        first = client.get(path, headers=headers)
        assert first.status_code == 200, path
        etag = first.headers["ETag"]
        assert re.fullmatch(r'"[0-9a-f]{16,64}"', etag), path
        for condition in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
            again = client.get(path, headers=headers | {"If-None-Match": condition})
            assert again.status_code == 304, (path, condition)
            assert again.data == b"", path
            assert again.headers["ETag"] == etag, path
        other = client.get(path, headers=headers | {"If-None-Match": '"nope"'})
        assert other.status_code == 200, path
        assert other.data == first.data, path


def test_etags_follow_grant_changes(database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    owner, grantee = hub.auth("alpha", AA), hub.auth("gamma", RDR)

    def tags() -> tuple[str, str, str]:
        return (
            client.get("/v1/sets", headers=owner).headers["ETag"],
            client.get("/v1/sets/alpha/own", headers=owner).headers["ETag"],
            client.get("/v1/sets", headers=grantee).headers["ETag"],
        )

    before = tags()
    assert tags() == before  # stable while nothing changes
    put = client.put("/v1/sets/alpha/own/grants", json={"readers": ["gamma"]}, headers=owner)
    assert put.status_code == 200
    after = tags()
    assert all(old != new for old, new in zip(before, after, strict=True)), (before, after)
    # The caller's old listing ETag no longer answers 304.
    stale = client.get("/v1/sets", headers=owner | {"If-None-Match": before[0]})
    assert stale.status_code == 200


# -- Audit -------------------------------------------------------------------------------


def _visible(client: FlaskClient, hub: Hub, agency: str, role: Role) -> list[tuple[str, str]]:
    response = client.get("/v1/audit?limit=1000", headers=hub.auth(agency, role))
    assert response.status_code == 200
    return [(e["action"], e["target"]) for e in response.get_json()["events"]]


def _tokens_of(hub: Hub, agency: str) -> list[tuple[str, str]]:
    return [("token.create", f"token:{hub.token_id(agency, role)}") for role in ROLES]


def test_audit_is_scoped_to_the_caller(database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    # One refused change each: by alpha's reader, and by gamma probing alpha's set.
    assert (
        client.post(
            "/v1/sets", json={"name": "alpha/x"}, headers=hub.auth("alpha", RDR)
        ).status_code
        == 403
    )
    probe = client.put(
        "/v1/sets/alpha/own/grants", json={"readers": []}, headers=hub.auth("gamma", AA)
    )
    assert probe.status_code == 404
    alpha_own = [("set.create", "set:alpha/own"), ("set.grants", "set:alpha/own")]
    alpha_refusal = [("set.create", "/v1/sets")]
    gamma_probe = [("set.grants", "/v1/sets/alpha/own/grants")]

    # The hub operator sees every event, whichever agency its token belongs to.
    everything = [(e.action, e.target) for e in audit_events(database_url)]
    for agency in AGENCIES:
        assert _visible(client, hub, agency, ADMIN) == everything

    # An agency admin: what its agency did, and what was done to it and its sets.
    assert _visible(client, hub, "alpha", AA) == [
        ("agency.create", "agency:alpha"),
        *_tokens_of(hub, "alpha"),
        ("group.add", "group:partners"),
        *alpha_own,
        *alpha_refusal,
        *gamma_probe,
    ]
    assert _visible(client, hub, "beta", AA) == [
        ("agency.create", "agency:beta"),
        *_tokens_of(hub, "beta"),
        ("set.create", "set:beta/to-agency"),
        ("set.grants", "set:beta/to-agency"),
        ("set.create", "set:beta/to-group"),
        ("set.grants", "set:beta/to-group"),
        ("set.create", "set:beta/ungranted"),
        ("set.grants", "set:beta/ungranted"),
    ]
    assert _visible(client, hub, "gamma", AA) == [
        ("agency.create", "agency:gamma"),
        *_tokens_of(hub, "gamma"),
        *gamma_probe,
    ]
    # Publishers and readers: only what their own agency's tokens did.
    for role in (PUB, RDR):
        assert _visible(client, hub, "alpha", role) == [*alpha_own, *alpha_refusal]
        assert _visible(client, hub, "gamma", role) == gamma_probe
        assert _visible(client, hub, "delta", role) == []


def test_audit_events_carry_every_field_and_chain(database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    events = client.get("/v1/audit?limit=1000", headers=hub.auth("alpha", ADMIN)).get_json()[
        "events"
    ]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    previous = "0" * 64
    for event in events:
        assert set(event) == {
            "id",
            "at",
            "actor",
            "actor_agency",
            "action",
            "target",
            "subject_agency",
            "remote_addr",
            "outcome",
            "detail",
            "prev_hash",
            "hash",
        }
        assert isinstance(event["detail"], dict)
        assert event["prev_hash"] == previous
        assert re.fullmatch(r"[0-9a-f]{64}", event["hash"])
        previous = event["hash"]
    made = events[-1]
    assert made["actor"] == f"token:{hub.token_id('beta', AA)}"
    assert (made["actor_agency"], made["subject_agency"]) == ("beta", "beta")
    at = datetime.strptime(made["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert datetime.now(UTC) - timedelta(minutes=5) < at <= datetime.now(UTC)
    # An API change records where it came from.
    client.post("/v1/sets", json={"name": "alpha/api"}, headers=hub.auth("alpha", AA))
    last = client.get("/v1/audit?limit=1000", headers=hub.auth("alpha", AA)).get_json()["events"][
        -1
    ]
    assert (last["action"], last["target"], last["remote_addr"]) == (
        "set.create",
        "set:alpha/api",
        "127.0.0.1",
    )


def test_audit_pages_with_after_and_limit(database_url: str, client: FlaskClient) -> None:
    hub = seed_world(database_url)
    for agency, role in (("alpha", ADMIN), ("alpha", AA), ("beta", AA)):
        headers = hub.auth(agency, role)
        everything = client.get("/v1/audit?limit=1000", headers=headers).get_json()["events"]
        assert len(everything) > 6
        pages: list[list[dict[str, Any]]] = []
        after = 0
        while True:
            page = client.get(f"/v1/audit?after={after}&limit=3", headers=headers).get_json()
            if not page["events"]:
                break
            assert len(page["events"]) <= 3
            assert all(event["id"] > after for event in page["events"])
            pages.append(page["events"])
            after = page["events"][-1]["id"]
        # The pages are the whole visible log, in order, each full but the last.
        assert [event for page in pages for event in page] == everything, (agency, role)
        assert all(len(page) == 3 for page in pages[:-1]), (agency, role)
        default = client.get("/v1/audit", headers=headers).get_json()["events"]
        assert default == everything[:100]
        for bad in ("limit=0", "limit=1001", "after=-1", "limit=x"):
            refused = client.get(f"/v1/audit?{bad}", headers=headers)
            assert refused.status_code == 400, bad
            assert refused.get_json()["type"] == problem_type("bad-request")


# -- Keysets, health, OpenAPI ---------------------------------------------------------


def test_keysets_are_the_signed_documents_for_any_token(
    database_url: str, client: FlaskClient
) -> None:
    hub = seed_world(database_url)
    for agency in AGENCIES:
        response = client.get(f"/v1/agencies/{agency}/keysets", headers=hub.auth("gamma", RDR))
        assert response.status_code == 200
        assert response.get_json() == {"keysets": [hub.agencies[agency].document.to_json()]}
        later = client.get(f"/v1/agencies/{agency}/keysets?after=1", headers=hub.auth("gamma", RDR))
        assert later.get_json() == {"keysets": []}


def test_ready_and_health(client: FlaskClient) -> None:
    assert client.get("/v1/ready").get_json() == {"status": "ready"}
    assert client.get("/v1/health").get_json() == {"status": "ok"}


ISSUE_PATHS = {
    "/v1/health": {"get"},
    "/v1/ready": {"get"},
    "/v1/sets": {"get", "post"},
    "/v1/sets/{agency}/{set}": {"get"},
    "/v1/sets/{agency}/{set}/grants": {"put"},
    "/v1/agencies/{agency}/keysets": {"get"},
    "/v1/audit": {"get"},
}


@pytest.fixture
def doc_app(sqlite_database_url: str) -> Iterator[Flask]:
    """The hub on one SQLite database: its OpenAPI document never reads the database."""
    with make_app(sqlite_database_url) as app:
        yield app


def _openapi(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document: dict[str, Any] = response.get_json()
    return document


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_openapi_documents_every_path_of_the_api(doc_app: Flask) -> None:
    document = _openapi(doc_app)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"]
    assert document["info"]["version"]
    paths = document["paths"]
    for path, methods in ISSUE_PATHS.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert operation["responses"], (path, method)
            for status, answer in operation["responses"].items():
                assert answer["description"], (path, method, status)
    for ref in _refs(document):
        assert _resolve(document, ref) is not None
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
    }
    query = paths["/v1/audit"]["get"]["parameters"]
    assert {(p["name"], p["in"]) for p in query} == {("after", "query"), ("limit", "query")}


def _flask_path(rule: str) -> str:
    return re.sub(
        r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>", lambda m: "{" + m[1] + "}", rule
    ).replace("{set_slug}", "{set}")


def test_openapi_documents_every_route_the_hub_serves(doc_app: Flask) -> None:
    paths = _openapi(doc_app)["paths"]
    served: dict[str, set[str]] = {}
    for rule in doc_app.url_map.iter_rules():
        if rule.rule.startswith("/v1/") and rule.rule != "/v1/openapi.json":
            methods = {m.lower() for m in (rule.methods or ())} - {"head", "options"}
            served.setdefault(_flask_path(rule.rule), set()).update(methods)
    documented = {path: set(item) - {"parameters"} for path, item in paths.items()}
    assert documented == served


def test_openapi_request_bodies_are_the_validating_schemas(doc_app: Flask) -> None:
    document = _openapi(doc_app)
    schemas = document["components"]["schemas"]
    create_ref = document["paths"]["/v1/sets"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]["$ref"]
    grants_ref = document["paths"]["/v1/sets/{agency}/{set}/grants"]["put"]["requestBody"][
        "content"
    ]["application/json"]["schema"]["$ref"]
    create, grants = _resolve(document, create_ref), _resolve(document, grants_ref)
    assert create is schemas["CreateSet"] or create == schemas["CreateSet"]
    assert grants == schemas["Grants"]

    assert set(create["properties"]) == set(CreateSetSchema().fields) == {"name", "title"}
    assert create["required"] == ["name"]
    assert create["properties"]["name"]["type"] == "string"
    assert create["properties"]["name"]["pattern"] == SET_NAME_PATTERN
    assert create["properties"]["title"]["maxLength"] == 200

    assert set(grants["properties"]) == set(GrantsSchema().fields) == {"readers"}
    assert grants["required"] == ["readers"]
    readers = grants["properties"]["readers"]
    assert readers["type"] == "array"
    assert readers["items"]["pattern"] == READER_PATTERN
    assert readers["maxItems"] == 500
    assert "Problem" in schemas
