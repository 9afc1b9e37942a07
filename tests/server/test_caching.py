"""Caching: strong ETags per encoding, immutable entry bodies, 304s, polls and downloads.

Delta and content bodies never change once published, so each carries a
strong ETag of its own per encoding, ``Cache-Control: private,
max-age=31536000, immutable`` and ``Vary: Accept-Encoding``.  A client that
already holds one gets an empty 304; that is a poll, counted in memory and
written to the audit log in batches (``poll.count`` rows), while every real
download writes exactly one audit row.  Gzip bodies are deterministic (mtime 0, no
file name), so the gzip ETag names one byte sequence forever.  Listings
answer ``If-None-Match`` with 304 too, and an empty listing is a poll.

The hub is seeded once per database; every check compares counters before
and after its own requests.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from server.api import polls
from server.services.callers import Role
from tests.conftest import make_app
from tests.server.dbstate import audit_events, last_audit_id
from tests.server.seeding import AgencyKeys, SetChain, add_agency, add_set, publish_body
from tests.synthetic import random_lines

IMMUTABLE = "private, max-age=31536000, immutable"
KINDS = ("delta", "content")


@dataclass
class Hub:
    """alpha/cache at version 2 (granted to beta), alpha/empty with no version yet."""

    database_url: str
    client: FlaskClient
    alpha: AgencyKeys
    beta: AgencyKeys
    chain: SetChain
    empty: SetChain

    def get(
        self,
        path: str,
        *,
        encoding: str = "identity",
        if_none_match: str | None = None,
        reader: AgencyKeys | None = None,
    ) -> TestResponse:
        headers = (reader or self.alpha).auth(Role.READER)
        headers["Accept-Encoding"] = encoding
        if if_none_match is not None:
            headers["If-None-Match"] = if_none_match
        response = self.client.get(path, headers=headers)
        response.get_data()  # read it all, as a client would (abandoned pulls: streaming tests)
        return response

    def digest(self, version: int, kind: str) -> str:
        manifest = self.chain.accepted[version - 1].manifest
        return manifest.delta_digest if kind == "delta" else manifest.content_digest

    def polls(self, chain: SetChain, agency: AgencyKeys) -> int:
        """The polls of ``chain`` by ``agency`` in the audit log, once the counts are flushed."""
        polls.flush(self.client.application)
        target = f"set:{chain.agency.slug}/{chain.slug}"
        return sum(
            json.loads(event.detail)["polls"].get(target, 0)
            for event in audit_events(self.database_url)
            if event.action == "poll.count" and event.actor_agency == agency.slug
        )


@pytest.fixture(scope="module")
def hub(shared_database_url: str) -> Iterator[Hub]:
    with make_app(shared_database_url) as app:
        client = app.test_client()
        rng = random.Random()
        alpha = add_agency(shared_database_url, "alpha")
        beta = add_agency(shared_database_url, "beta")
        chain = add_set(shared_database_url, alpha, "cache", readers=["beta"])
        empty = add_set(shared_database_url, alpha, "empty")
        # Over 64 KB of content: bodies leave the hub in more than one chunk.
        first = random_lines(rng, 1200)
        for lines in (first, [*first[20:], *random_lines(rng, 40)]):
            candidate = chain.build(lines)
            body, content_type = publish_body(candidate)
            response = client.post(
                chain.url, data=body, content_type=content_type, headers=alpha.auth()
            )
            assert response.status_code == 201, response.get_data(as_text=True)
            chain.accept(candidate)
        yield Hub(shared_database_url, client, alpha, beta, chain, empty)


def _path(hub: Hub, version: int, kind: str) -> str:
    return f"{hub.chain.url}/{version}/{kind}"


@pytest.mark.parametrize("kind", KINDS)
def test_entry_bodies_carry_a_strong_etag_per_encoding(hub: Hub, kind: str) -> None:
    plain = hub.get(_path(hub, 2, kind))
    packed = hub.get(_path(hub, 2, kind), encoding="gzip")
    assert plain.status_code == packed.status_code == 200
    plain_tag, packed_tag = plain.headers["ETag"], packed.headers["ETag"]
    for tag in (plain_tag, packed_tag):
        assert tag.startswith('"')
        assert tag.endswith('"')
        assert not tag.startswith("W/")
    # The identity ETag is the body's own digest, the one the manifest signs.
    assert plain_tag == f'"{hub.digest(2, kind)}"'
    assert hashlib.sha256(plain.get_data()).hexdigest() == hub.digest(2, kind)
    assert packed_tag != plain_tag
    # One ETag per body: another version has other tags, the same version the same.
    other = hub.get(_path(hub, 1, kind), encoding="gzip")
    assert other.headers["ETag"] not in (plain_tag, packed_tag)
    again = hub.get(_path(hub, 2, kind), encoding="gzip")
    assert again.headers["ETag"] == packed_tag


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_entry_bodies_are_immutable_and_vary_on_encoding(
    hub: Hub, kind: str, encoding: str
) -> None:
    response = hub.get(_path(hub, 1, kind), encoding=encoding)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == IMMUTABLE
    assert response.headers["Vary"] == "Accept-Encoding"
    assert ("Content-Encoding" in response.headers) == (encoding == "gzip")


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("br, gzip", True),
        ("deflate, gzip;q=0.1", True),
        ("gzip; q=0.5", True),
        ("*", True),
        ("identity", False),
        ("br", False),
        ("", False),
        ("gzip;q=0", False),
        ("gzip;q=0.0", False),
        ("gzip;q=bogus", False),
    ],
)
def test_gzip_is_served_exactly_when_accept_encoding_allows_it(
    hub: Hub, accept: str, gzipped: bool
) -> None:
    response = hub.get(_path(hub, 2, "content"), encoding=accept)
    assert response.status_code == 200
    assert response.headers.get("Content-Encoding") == ("gzip" if gzipped else None)
    body = gzip.decompress(response.get_data()) if gzipped else response.get_data()
    assert hashlib.sha256(body).hexdigest() == hub.digest(2, "content")
    plain_tag = f'"{hub.digest(2, "content")}"'
    assert (response.headers["ETag"] == plain_tag) != gzipped


@pytest.mark.parametrize("kind", KINDS)
def test_gzip_bodies_are_deterministic_with_mtime_zero(hub: Hub, kind: str) -> None:
    first = hub.get(_path(hub, 2, kind), encoding="gzip").get_data()
    second = hub.get(_path(hub, 2, kind), encoding="gzip").get_data()
    assert first == second
    magic, method, flags, mtime = struct.unpack("<HBBI", first[:8])
    assert (magic, method) == (0x8B1F, 8)
    assert mtime == 0
    assert flags == 0  # no file name, no comment, no extra field
    assert gzip.decompress(first) == hub.get(_path(hub, 2, kind)).get_data()


def _one_download_row(hub: Hub, before: int, kind: str, version: int, encoding: str) -> None:
    events = audit_events(hub.database_url, before)
    assert [(e.action, e.outcome) for e in events] == [(f"set.download.{kind}", "ok")]
    (event,) = events
    assert event.target == f"set:{hub.chain.name}"
    assert event.subject_agency == "alpha"
    assert json.loads(event.detail) == {"version": version, "encoding": encoding}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_if_none_match_is_a_304_poll_not_a_download(hub: Hub, kind: str, encoding: str) -> None:
    polls_before = hub.polls(hub.chain, hub.alpha)
    audit_before = last_audit_id(hub.database_url)
    full = hub.get(_path(hub, 2, kind), encoding=encoding)
    assert full.status_code == 200
    _one_download_row(hub, audit_before, kind, 2, encoding)
    assert hub.polls(hub.chain, hub.alpha) == polls_before

    audit_before = last_audit_id(hub.database_url)
    tag = full.headers["ETag"]
    cached = hub.get(_path(hub, 2, kind), encoding=encoding, if_none_match=tag)
    assert cached.status_code == 304
    assert cached.get_data() == b""
    assert cached.headers["ETag"] == tag
    assert cached.headers["Cache-Control"] == IMMUTABLE
    assert cached.headers["Vary"] == "Accept-Encoding"
    assert audit_events(hub.database_url, audit_before) == []
    assert hub.polls(hub.chain, hub.alpha) == polls_before + 1


@pytest.mark.parametrize(
    "header",
    ["{tag}", "W/{tag}", '"0123", {tag}', "*"],
    ids=["exact", "weak", "in-a-list", "star"],
)
def test_if_none_match_forms_that_match(hub: Hub, header: str) -> None:
    tag = hub.get(_path(hub, 1, "content")).headers["ETag"]
    audit_before = last_audit_id(hub.database_url)
    cached = hub.get(_path(hub, 1, "content"), if_none_match=header.format(tag=tag))
    assert cached.status_code == 304
    assert audit_events(hub.database_url, audit_before) == []


def test_another_encodings_etag_does_not_match(hub: Hub) -> None:
    packed_tag = hub.get(_path(hub, 2, "content"), encoding="gzip").headers["ETag"]
    audit_before = last_audit_id(hub.database_url)
    plain = hub.get(_path(hub, 2, "content"), if_none_match=packed_tag)
    assert plain.status_code == 200
    assert hashlib.sha256(plain.get_data()).hexdigest() == hub.digest(2, "content")
    _one_download_row(hub, audit_before, "content", 2, "identity")


def test_another_versions_etag_does_not_match(hub: Hub) -> None:
    old_tag = hub.get(_path(hub, 1, "delta")).headers["ETag"]
    audit_before = last_audit_id(hub.database_url)
    response = hub.get(_path(hub, 2, "delta"), if_none_match=old_tag)
    assert response.status_code == 200
    assert response.get_data() == hub.chain.accepted[1].delta
    _one_download_row(hub, audit_before, "delta", 2, "identity")


def test_a_granted_readers_download_and_poll_are_its_own(hub: Hub) -> None:
    polls = (hub.polls(hub.chain, hub.alpha), hub.polls(hub.chain, hub.beta))
    audit_before = last_audit_id(hub.database_url)
    full = hub.get(_path(hub, 2, "content"), reader=hub.beta)
    assert full.status_code == 200
    _one_download_row(hub, audit_before, "content", 2, "identity")
    (event,) = audit_events(hub.database_url, audit_before)
    assert event.actor_agency == "beta"
    assert event.actor == f"token:{hub.beta.token_ids[Role.READER]}"
    cached = hub.get(_path(hub, 2, "content"), reader=hub.beta, if_none_match=full.headers["ETag"])
    assert cached.status_code == 304
    assert (hub.polls(hub.chain, hub.alpha), hub.polls(hub.chain, hub.beta)) == (
        polls[0],
        polls[1] + 1,
    )


def test_the_versions_listing_answers_if_none_match_with_304(hub: Hub) -> None:
    listing = hub.get(hub.chain.url)
    assert listing.status_code == 200
    assert [v["version"] for v in listing.get_json()["versions"]] == [1, 2]
    tag = listing.headers["ETag"]
    assert not tag.startswith("W/")
    polls_before = hub.polls(hub.chain, hub.alpha)
    audit_before = last_audit_id(hub.database_url)
    cached = hub.get(hub.chain.url, if_none_match=tag)
    assert cached.status_code == 304
    assert cached.get_data() == b""
    assert cached.headers["ETag"] == tag
    assert audit_events(hub.database_url, audit_before) == []
    assert hub.polls(hub.chain, hub.alpha) == polls_before + 1
    # A page is a listing of its own, with its own tag.
    page = hub.get(f"{hub.chain.url}?after=1", if_none_match=tag)
    assert page.status_code == 200
    assert page.headers["ETag"] != tag


@pytest.mark.parametrize("where", ["after-the-latest", "set-without-versions"])
def test_an_empty_listing_counts_a_poll(hub: Hub, where: str) -> None:
    chain = hub.chain if where == "after-the-latest" else hub.empty
    path = f"{chain.url}?after={chain.version}"
    polls_before = hub.polls(chain, hub.alpha)
    audit_before = last_audit_id(hub.database_url)
    for _ in range(3):
        response = hub.get(path)
        assert response.status_code == 200
        assert response.get_json() == {"versions": []}
    assert audit_events(hub.database_url, audit_before) == []
    assert hub.polls(chain, hub.alpha) == polls_before + 3


def test_every_download_writes_one_audit_row(hub: Hub) -> None:
    audit_before = last_audit_id(hub.database_url)
    expected = []
    for version in (1, 2):
        for kind in KINDS:
            for encoding in ("identity", "gzip"):
                response = hub.get(_path(hub, version, kind), encoding=encoding)
                assert response.status_code == 200
                response.get_data()
                expected.append(
                    (f"set.download.{kind}", {"version": version, "encoding": encoding})
                )
    events = audit_events(hub.database_url, audit_before)
    assert [(e.action, json.loads(e.detail)) for e in events] == expected
    assert {e.outcome for e in events} == {"ok"}


def test_a_refused_download_is_neither_audited_as_a_download_nor_a_poll(hub: Hub) -> None:
    stranger = add_agency(hub.database_url, "gamma")
    audit_before = last_audit_id(hub.database_url)
    response = hub.get(_path(hub, 2, "content"), reader=stranger)
    assert response.status_code == 404
    missing = hub.get(_path(hub, 3, "content"))
    assert missing.status_code == 404
    assert audit_events(hub.database_url, audit_before) == []
    assert hub.polls(hub.chain, stranger) == 0
