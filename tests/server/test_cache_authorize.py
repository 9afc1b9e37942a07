"""``GET /v1/cache/authorize``, nginx's ``auth_request``, and the cache fill's audit.

The hub answers 204 only to a request carrying the configured cache secret,
for a GET or HEAD of the one spelling of a delta or content URL (matched by
the hub's own routes, so it takes exactly the URLs they take), of a version
the token may read; that pull is then audited as a download, once.  Every
other request is 401 (no usable token) or 403, and audits nothing.  A
download carrying the configured secret (nginx filling its cache after that
authorization) writes no second row; one with a wrong secret, or any secret
on a hub that has none configured, is audited like any other.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from server.api.cache import ORIGINAL_METHOD_HEADER, ORIGINAL_URI_HEADER, SECRET_HEADER
from server.api.streaming import etag_for
from server.config import CACHE_SECRET_VAR, DATABASE_URL_VAR, Settings, SettingsError
from server.errors import problem_type
from server.services.callers import Role
from server.services.tokens import revoke_token
from tests.conftest import make_app
from tests.server.dbstate import audit_events, last_audit_id, session_factory
from tests.server.seeding import (
    OPERATOR,
    AgencyKeys,
    SetChain,
    add_agency,
    add_set,
    add_token,
    bearer,
    publish_body,
)
from tests.synthetic import random_lines

SECRET = "c4f3" * 16
KINDS = ("delta", "content")


@dataclass
class Hub:
    """alpha/cached at version 2, granted to beta; gamma reads nothing of alpha's."""

    database_url: str
    client: FlaskClient  # an app configured with SECRET
    bare: FlaskClient  # an app on the same database with no cache secret
    alpha: AgencyKeys
    beta: AgencyKeys
    gamma: AgencyKeys
    chain: SetChain

    def url(self, version: int, kind: str) -> str:
        return f"{self.chain.url}/{version}/{kind}"

    def digest(self, version: int, kind: str) -> str:
        manifest = self.chain.accepted[version - 1].manifest
        return manifest.delta_digest if kind == "delta" else manifest.content_digest

    def authorize(
        self,
        uri: str | None,
        token: str | None,
        *,
        method: str | None = "GET",
        secret: str | None = SECRET,
        client: FlaskClient | None = None,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        sent = dict(headers or {})
        if token is not None:
            sent |= bearer(token)
        if secret is not None:
            sent[SECRET_HEADER] = secret
        if uri is not None:
            sent[ORIGINAL_URI_HEADER] = uri
        if method is not None:
            sent[ORIGINAL_METHOD_HEADER] = method
        return (client or self.client).get("/v1/cache/authorize", headers=sent)


@pytest.fixture(scope="module")
def hub(shared_database_url: str) -> Iterator[Hub]:
    with (
        make_app(shared_database_url, {CACHE_SECRET_VAR: SECRET}) as app,
        make_app(shared_database_url) as bare,
    ):
        client = app.test_client()
        alpha = add_agency(shared_database_url, "alpha")
        beta = add_agency(shared_database_url, "beta", roles=[Role.READER])
        gamma = add_agency(shared_database_url, "gamma", roles=[Role.READER])
        chain = add_set(shared_database_url, alpha, "cached", readers=["beta"])
        first = random_lines(random.Random(14), 300)
        for lines in (first, [*first[30:], *random_lines(random.Random(15), 40)]):
            candidate = chain.build(lines)
            body, content_type = publish_body(candidate)
            response = client.post(
                chain.url, data=body, content_type=content_type, headers=alpha.auth()
            )
            assert response.status_code == 201, response.get_data(as_text=True)
            chain.accept(candidate)
        yield Hub(shared_database_url, client, bare.test_client(), alpha, beta, gamma, chain)


def _downloads(hub: Hub, before: int) -> list[tuple[str, str | None, str | None, object]]:
    return [
        (e.action, e.actor_agency, e.target, json.loads(e.detail))
        for e in audit_events(hub.database_url, before)
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("accept", "encoding"), [("identity", "identity"), ("gzip", "gzip")])
def test_a_reader_is_authorized_and_the_pull_audited_once(
    hub: Hub, kind: str, accept: str, encoding: str
) -> None:
    for agency, role in ((hub.beta, Role.READER), (hub.alpha, Role.PUBLISHER)):
        before = last_audit_id(hub.database_url)
        answer = hub.authorize(
            hub.url(2, kind), agency.secrets[role], headers={"Accept-Encoding": accept}
        )
        assert answer.status_code == 204, answer.get_data(as_text=True)
        assert answer.get_data() == b""
        assert answer.headers["Cache-Control"] == "no-store"
        assert _downloads(hub, before) == [
            (
                f"set.download.{kind}",
                agency.slug,
                "set:alpha/cached",
                {"version": 2, "encoding": encoding},
            )
        ]


def test_head_is_authorized_like_get(hub: Hub) -> None:
    before = last_audit_id(hub.database_url)
    assert (
        hub.authorize(
            hub.url(1, "content"), hub.beta.secrets[Role.READER], method="HEAD"
        ).status_code
        == 204
    )
    assert len(audit_events(hub.database_url, before)) == 1


def _refused(hub: Hub, answer: TestResponse, status: int, before: int) -> None:
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.mimetype == "application/problem+json"
    assert audit_events(hub.database_url, before) == []


@pytest.mark.parametrize(
    "secret", [None, "", "c4f3" * 15 + "c4f2", SECRET + "0", SECRET[:-1], SECRET.upper()]
)
def test_without_the_cache_secret_nothing_is_authorized(hub: Hub, secret: str | None) -> None:
    before = last_audit_id(hub.database_url)
    answer = hub.authorize(hub.url(1, "content"), hub.beta.secrets[Role.READER], secret=secret)
    _refused(hub, answer, 403, before)


def test_a_hub_with_no_cache_secret_authorizes_nothing(hub: Hub) -> None:
    before = last_audit_id(hub.database_url)
    for secret in (SECRET, None, ""):
        answer = hub.authorize(
            hub.url(1, "content"), hub.beta.secrets[Role.READER], secret=secret, client=hub.bare
        )
        _refused(hub, answer, 403, before)


def test_a_token_that_may_not_read_is_403_like_a_missing_version(hub: Hub) -> None:
    before = last_audit_id(hub.database_url)
    gamma = hub.gamma.secrets[Role.READER]
    beta = hub.beta.secrets[Role.READER]
    for uri, token in (
        (hub.url(1, "content"), gamma),
        (hub.url(3, "content"), beta),
        ("/v1/sets/alpha/no-such-set/versions/1/content", beta),
        ("/v1/sets/nobody/cached/versions/1/delta", beta),
    ):
        _refused(hub, hub.authorize(uri, token), 403, before)


def test_no_usable_token_is_401(hub: Hub) -> None:
    revoked = add_token(hub.database_url, hub.beta, Role.READER)
    assert hub.authorize(hub.url(1, "delta"), revoked).status_code == 204
    with session_factory(hub.database_url) as factory, factory() as session:
        revoke_token(session, OPERATOR, hub.beta.token_ids[Role.READER])
    before = last_audit_id(hub.database_url)  # the revocation is audited, nothing after it
    for token in (revoked, None, "hxt_" + "A" * 43, "not a token"):
        answer = hub.authorize(hub.url(1, "delta"), token)
        _refused(hub, answer, 401, before)
        assert answer.json is not None
        assert answer.json["type"] == problem_type("unauthorized")
    add_token(hub.database_url, hub.beta, Role.READER)  # the other tests' reader


@pytest.mark.parametrize(
    "uri",
    [
        None,
        "",
        "v1/sets/alpha/cached/versions/1/content",
        "/v1/sets/alpha/cached/versions/01/content",
        "/v1/sets/alpha/cached/versions/+1/content",
        "/v1/sets/alpha/cached/versions/1/content/",
        "/v1/sets/alpha/cached/versions/1/content?x=1",
        "/v1/sets/alpha/cached/versions/1/content?",
        "/v1/sets/alpha/cached/versions/1/content#x",
        "/v1/sets/alpha/cached/versions/%31/content",
        "/v1/sets/alpha/cached/versions/1/%63ontent",
        "//v1/sets/alpha/cached/versions/1/content",
        "/v1/sets/alpha//cached/versions/1/content",
        "/v1/sets/alpha/cached/versions/1/../1/content",
        "/v1/sets/alpha/./cached/versions/1/content",
        "///v1/sets/alpha/cached/versions/1/content",
        "/v1/sets/alpha/cached/versions/2147483648/content",
        "/v1/sets/Alpha/cached/versions/1/content",
        "/v1/sets/alpha/cached/versions/1",
        "/v1/sets/alpha/cached/versions",
        "/v1/sets/alpha/cached",
        "/v1/sets",
        "/v1/audit",
        "/v1/cache/authorize",
        "/v1/sets/alpha/cached/versions/1/content\x00",
        "/v1/sets/alpha/cached/versions/1/cont\u00e9nt",
    ],
)
def test_only_the_one_spelling_of_a_delta_or_content_url_is_authorized(
    hub: Hub, uri: str | None
) -> None:
    before = last_audit_id(hub.database_url)
    headers = {} if uri is None else {ORIGINAL_URI_HEADER: uri.encode("utf-8").decode("latin-1")}
    answer = hub.client.get(
        "/v1/cache/authorize",
        headers=bearer(hub.beta.secrets[Role.READER])
        | {SECRET_HEADER: SECRET, ORIGINAL_METHOD_HEADER: "GET"}
        | headers,
    )
    _refused(hub, answer, 403, before)


@pytest.mark.parametrize("method", [None, "", "POST", "PUT", "DELETE", "OPTIONS", "get"])
def test_only_get_and_head_are_authorized(hub: Hub, method: str | None) -> None:
    before = last_audit_id(hub.database_url)
    answer = hub.authorize(hub.url(1, "content"), hub.beta.secrets[Role.READER], method=method)
    _refused(hub, answer, 403, before)


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_bytes_the_client_holds_are_left_to_the_hub(hub: Hub, encoding: str) -> None:
    # A matching If-None-Match is a 304 and a poll, not a download: the hub answers it.
    tag = etag_for(hub.digest(1, "content"), encoding == "gzip")
    before = last_audit_id(hub.database_url)
    for held in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        answer = hub.authorize(
            hub.url(1, "content"),
            hub.beta.secrets[Role.READER],
            headers={"Accept-Encoding": encoding, "If-None-Match": held},
        )
        _refused(hub, answer, 403, before)
    other = etag_for(hub.digest(1, "content"), encoding != "gzip")
    answer = hub.authorize(
        hub.url(1, "content"),
        hub.beta.secrets[Role.READER],
        headers={"Accept-Encoding": encoding, "If-None-Match": other},
    )
    assert answer.status_code == 204


_SEGMENTS = st.sampled_from(
    [
        *("v1", "sets", "alpha", "cached", "beta", "versions", "grants", "audit"),
        *("1", "2", "3", "0", "01", "+1", "-1", "1.0", "2147483647", "2147483648"),
        *("delta", "content", ""),
    ]
)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # A first segment that is empty would make the test client read a host.
    st.lists(_SEGMENTS, min_size=0, max_size=8)
    .filter(lambda parts: not parts or parts[0] != "")
    .map(lambda parts: "/" + "/".join(parts))
    | st.sampled_from(["delta", "content"]).flatmap(
        lambda kind: st.sampled_from(["1", "2", "3", "01", "2147483648"]).map(
            lambda n: f"/v1/sets/alpha/cached/versions/{n}/{kind}"
        )
    )
)
def test_authorized_exactly_when_the_hub_itself_serves_the_bytes(hub: Hub, path: str) -> None:
    token = hub.beta.secrets[Role.READER]
    served = hub.client.get(path, headers=bearer(token))
    authorized = hub.authorize(path, token)
    assert authorized.status_code in (204, 403)
    is_entries = served.mimetype == "text/plain"
    assert (authorized.status_code == 204) == (served.status_code == 200 and is_entries), path


# -- the download nginx sends on a miss ------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_fill_with_the_configured_secret_is_not_audited_twice(hub: Hub, kind: str) -> None:
    before = last_audit_id(hub.database_url)
    answer = hub.client.get(
        hub.url(2, kind), headers=bearer(hub.beta.secrets[Role.READER]) | {SECRET_HEADER: SECRET}
    )
    assert answer.status_code == 200
    assert answer.get_data()
    assert audit_events(hub.database_url, before) == []


@pytest.mark.parametrize(
    ("secret", "configured"),
    [
        pytest.param("c4f3" * 15 + "c4f2", True, id="wrong"),
        pytest.param("", True, id="empty"),
        pytest.param(SECRET + " ", True, id="longer"),
        pytest.param(SECRET, False, id="right-but-unconfigured"),
    ],
)
def test_a_client_sent_secret_is_still_audited(hub: Hub, secret: str, configured: bool) -> None:
    client = hub.client if configured else hub.bare
    before = last_audit_id(hub.database_url)
    answer = client.get(
        hub.url(1, "content"),
        headers=bearer(hub.beta.secrets[Role.READER]) | {SECRET_HEADER: secret},
    )
    assert answer.status_code == 200
    assert _downloads(hub, before) == [
        (
            "set.download.content",
            "beta",
            "set:alpha/cached",
            {"version": 1, "encoding": "identity"},
        )
    ]


# -- the setting -------------------------------------------------------------------------------


def test_the_cache_secret_setting() -> None:
    base = {DATABASE_URL_VAR: "sqlite:///hub.db"}
    assert Settings.from_env(base).cache_secret is None
    assert Settings.from_env(base | {CACHE_SECRET_VAR: ""}).cache_secret is None
    settings = Settings.from_env(base | {CACHE_SECRET_VAR: SECRET})
    assert settings.cache_secret == SECRET
    assert SECRET not in repr(settings)
    for bad in ("short", "x" * 31, "x" * 257, "y" * 40 + " z", "y" * 40 + '"', "\u00e9" * 40):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env(base | {CACHE_SECRET_VAR: bad})
        assert caught.value.variable == CACHE_SECRET_VAR
        assert bad not in str(caught.value)
