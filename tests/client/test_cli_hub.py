"""The hub verbs of ``hashex`` against a real ``hashex-server serve``, on SQLite and PostgreSQL.

``trust add`` in each of its forms and each of its refusals; ``set create``,
``grant`` and ``revoke`` (with ``If-Match`` guarding a concurrent change);
``sync`` with and without names; ``--json`` on every reporting verb;
staleness as exit 5; ``publish`` refused by the hub, and ``--dry-run``; and
flags beating the ``HASHEX_*`` variables in a real child process.

The hub is shared by the module (one per database); each test registers
agencies of its own, so no test sees another's sets.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from client.commands import hub as hub_commands
from client.limits import Limits
from client.protocol.documents import Manifest, SignedDocument
from client.protocol.keys import generate_private_key, public_key_to_pem
from client.settings import ClientSettings
from client.store import Store
from client.sync import Syncer
from client.transport import HubClient
from server.errors import problem_type
from tests.client.realhub import RealAgency, RealHub, register
from tests.client.simhub import (
    Consumer,
    SimAgency,
    SimSet,
    SimVersion,
    hashex_process,
    set_rows,
    snapshot,
)
from tests.environment import process_env
from tests.hubserver import free_port
from tests.synthetic import random_lines, wire

_numbers = itertools.count(1)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(4_040_404)


def agency(
    hub: RealHub, tmp_path: Path, prefix: str, *, keys: int = 1, publish_threshold: int = 1
) -> RealAgency:
    """A fresh agency whose slug no other test uses."""
    slug = f"{prefix}-{next(_numbers)}"
    return register(
        hub.database_url, tmp_path, slug, keys=keys, publish_threshold=publish_threshold
    )


def owner_of(
    hub: RealHub, tmp_path: Path, owner: RealAgency, role: str = "agency-admin"
) -> Consumer:
    """The owner's own ``hashex`` (a token of ``role``), with its own agency pinned."""
    consumer = Consumer(tmp_path / f"{owner.slug}-home", hub.url, owner.tokens[role])
    store = Store.open(consumer.home)
    try:
        pinned = store.pin(owner.slug) is not None
    finally:
        store.close()
    if not pinned:
        consumer.pin(owner.slug, owner.keyset_file)
    return consumer


def new_set(
    hub: RealHub,
    tmp_path: Path,
    owner: RealAgency,
    slug: str,
    readers: list[str],
    lines: list[bytes],
) -> str:
    """Create ``owner/slug``, grant it, and publish ``lines`` as version 1; its name."""
    name = f"{owner.slug}/{slug}"
    admin = owner_of(hub, tmp_path, owner)
    created = admin.run("set", "create", name)
    assert created.exit_code == 0, created.stderr
    for reader in readers:
        assert admin.run("set", "grant", name, reader).exit_code == 0
    source = tmp_path / f"{owner.slug}-{slug}.txt"
    source.write_bytes(wire(lines))
    published = admin.run("publish", name, "--key", owner.keys[0], "--from", source)
    assert published.exit_code == 0, published.stderr
    return name


def consumer_of(hub: RealHub, tmp_path: Path, reader: RealAgency, label: str = "c") -> Consumer:
    return Consumer(tmp_path / f"{reader.slug}-{label}", hub.url, reader.tokens["reader"])


# -- trust add ------------------------------------------------------------------------------------


def test_trust_add_forms_and_refusals(hub: RealHub, tmp_path: Path, rng: random.Random) -> None:
    owner = agency(hub, tmp_path, "trusted")
    other = agency(hub, tmp_path, "other")
    reader = agency(hub, tmp_path, "pinner")
    lines = random_lines(rng, 25)
    name = new_set(hub, tmp_path, owner, "list", [reader.slug], lines)
    public_pem = tmp_path / "owner.pub.pem"
    public_pem.write_bytes(public_key_to_pem(owner.private[0].public_key()))
    stranger_pem = tmp_path / "stranger.pub.pem"
    stranger_pem.write_bytes(public_key_to_pem(generate_private_key().public_key()))
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"version": 1, "keyset": "nonsense", "signatures": []}\n')
    tampered = tmp_path / "tampered.json"
    tampered.write_text(
        owner.keyset_file.read_text().replace("publish-threshold 1", "publish-threshold 2")
    )

    # The three forms, each then good enough to sync a real set.
    for form, source in (
        ("keyset", owner.keyset_file),
        ("key", public_pem),
        ("keyid", owner.key_id),
    ):
        consumer = consumer_of(hub, tmp_path, reader, form)
        added = consumer.local("trust", "add", owner.slug, source, "--json")
        assert added.exit_code == 0, added.stderr
        assert added.json() == {"agency": owner.slug, "pin": form}
        synced = consumer.run("sync", name)
        assert synced.exit_code == 0, synced.stderr
        assert consumer.assert_holds_signed(name, 1) == lines
        again = consumer.local("trust", "add", owner.slug, owner.keyset_file)
        assert again.exit_code == 2
        assert "already pinned" in again.stderr

    # Refused: nothing pinned, exit 2.
    refusals: list[tuple[str, str | Path]] = [
        (owner.slug, tmp_path / "no-such-file"),
        (owner.slug, garbage),
        (owner.slug, tampered),
        (owner.slug, other.keyset_file),
        ("Not_A_Slug", owner.keyset_file),
        (owner.slug, "0" * 63),
    ]
    for slug, source in refusals:
        consumer = consumer_of(hub, tmp_path, reader, "refused")
        ran = consumer.local("trust", "add", slug, source)
        assert ran.exit_code == 2, (slug, source, ran.stdout)
        assert ran.stderr.startswith("hashex: ")
        store = Store.open(consumer.home)
        try:
            assert store.pinned_agencies() == []
        finally:
            store.close()

    # Pinned to a key that is not the agency's: sync refuses keyset 1 (exit 3).
    for label, source in (("stranger-pem", stranger_pem), ("stranger-id", "ab" * 32)):
        consumer = consumer_of(hub, tmp_path, reader, label)
        consumer.pin(owner.slug, source)
        ran = consumer.run("sync", name)
        assert ran.exit_code == 3, ran.stderr
        assert set_rows(consumer.home) == []


# -- set create, grant, revoke --------------------------------------------------------------------


def test_set_create_grant_and_revoke(hub: RealHub, tmp_path: Path, rng: random.Random) -> None:
    owner = agency(hub, tmp_path, "granter")
    first = agency(hub, tmp_path, "first")
    second = agency(hub, tmp_path, "second")
    admin = owner_of(hub, tmp_path, owner)
    name = f"{owner.slug}/shared"
    created = admin.run("set", "create", name, "--title", "Shared", "--json")
    assert created.exit_code == 0, created.stderr
    assert (created.json()["name"], created.json()["latest_version"]) == (name, 0)
    assert admin.run("set", "create", name).exit_code == 4
    as_publisher = owner_of(hub, tmp_path, owner, "publisher")
    denied = as_publisher.run("set", "create", f"{owner.slug}/not-mine")
    assert denied.exit_code == 4
    assert problem_type("forbidden") in denied.stderr
    assert admin.run("set", "create", "Bad/Name").exit_code == 2

    granted = admin.run("set", "grant", name, first.slug, "--json")
    assert (granted.exit_code, granted.json()) == (0, {"set": name, "readers": [first.slug]})
    both = admin.run("set", "grant", name, second.slug, "--json")
    assert sorted(both.json()["readers"]) == sorted([first.slug, second.slug])
    twice = admin.run("set", "grant", name, second.slug, "--json")
    assert sorted(twice.json()["readers"]) == sorted([first.slug, second.slug])
    source = tmp_path / "v1.txt"
    source.write_bytes(wire(random_lines(rng, 5)))
    assert admin.run("publish", name, "--key", owner.keys[0], "--from", source).exit_code == 0

    reader = consumer_of(hub, tmp_path, first)
    reader.pin(owner.slug, owner.keyset_file)
    assert reader.run("sync", name).exit_code == 0
    revoked = admin.run("set", "revoke", name, first.slug, "--json")
    assert (revoked.exit_code, revoked.json()) == (0, {"set": name, "readers": [second.slug]})
    gone = reader.run("sync", name)
    assert gone.exit_code == 4
    assert problem_type("not-found") in gone.stderr
    assert reader.held(name)[0] == 1  # what it verified before stays
    not_a_reader = admin.run("set", "revoke", name, first.slug)
    assert not_a_reader.exit_code == 2


def test_a_grant_does_not_overwrite_a_concurrent_change(
    hub: RealHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between the verb's GET of the set (with its ETag) and its PUT of the
    # readers, another admin changes the grants.  The verb's If-Match no longer
    # matches: the hub answers 412 (exit 4) and the other change stands.
    owner = agency(hub, tmp_path, "racer")
    mine, theirs = agency(hub, tmp_path, "mine"), agency(hub, tmp_path, "theirs")
    admin = owner_of(hub, tmp_path, owner)
    name = f"{owner.slug}/raced"
    assert admin.run("set", "create", name).exit_code == 0
    auth = {"Authorization": f"Bearer {owner.tokens['agency-admin']}"}

    class Interfering(httpx.BaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.HTTPTransport()
            self.sent: list[httpx.Request] = []
            self.etags: list[str] = []

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            self.sent.append(request)
            response = self.inner.handle_request(request)
            if request.method == "GET":
                self.etags.append(response.headers["etag"])
                with hub.server.http() as http:
                    other = http.put(
                        f"/v1/sets/{name}/grants", json={"readers": [theirs.slug]}, headers=auth
                    )
                    assert other.status_code == 200
            return response

        def close(self) -> None:
            self.inner.close()

    transport = Interfering()
    monkeypatch.setattr(
        hub_commands,
        "hub_client",
        lambda settings: HubClient(settings, Limits(), transport=transport),
    )
    raced = admin.run("set", "grant", name, mine.slug)
    assert raced.exit_code == 4
    assert problem_type("precondition-failed") in raced.stderr
    assert [r.method for r in transport.sent] == ["GET", "PUT"]
    assert transport.sent[1].headers["if-match"] == transport.etags[0]
    assert json.loads(transport.sent[1].content) == {"readers": [mine.slug]}
    with hub.server.http() as http:
        assert http.get(f"/v1/sets/{name}", headers=auth).json()["grants"] == [theirs.slug]


# -- sync, status, verify -------------------------------------------------------------------------


def test_sync_without_names_covers_every_readable_pinned_set(
    hub: RealHub, tmp_path: Path, rng: random.Random
) -> None:
    first, second, unpinned = (agency(hub, tmp_path, p) for p in ("pin-a", "pin-b", "unpinned"))
    reader = agency(hub, tmp_path, "all-reader")
    one = new_set(hub, tmp_path, first, "one", [reader.slug], random_lines(rng, 7))
    two = new_set(hub, tmp_path, second, "two", [reader.slug], random_lines(rng, 9))
    new_set(hub, tmp_path, unpinned, "three", [reader.slug], random_lines(rng, 3))
    new_set(hub, tmp_path, first, "hidden", [], random_lines(rng, 4))
    consumer = consumer_of(hub, tmp_path, reader)
    consumer.pin(first.slug, first.keyset_file)
    consumer.pin(second.slug, second.keyset_file)
    synced = consumer.run("sync", "--json")
    assert synced.exit_code == 0, synced.stderr
    reports = synced.json_lines()
    assert [r["set"] for r in reports] == sorted([one, two])
    assert all((r["exit"], r["version"], r["error"]) == (0, 1, None) for r in reports)
    assert set_rows(consumer.home) == sorted([one, two])
    again = consumer.run("sync", "--json")
    assert [(r["set"], r["applied"]) for r in again.json_lines()] == [(one, []), (two, [])]


def test_json_on_every_reporting_verb(hub: RealHub, tmp_path: Path, rng: random.Random) -> None:
    owner = agency(hub, tmp_path, "json")
    reader = agency(hub, tmp_path, "json-reader")
    name = new_set(hub, tmp_path, owner, "list", [reader.slug], random_lines(rng, 12))
    consumer = consumer_of(hub, tmp_path, reader)
    consumer.pin(owner.slug, owner.keyset_file)
    synced = consumer.run("sync", name, "--json").json()
    assert set(synced) == {
        "set",
        "version",
        "applied",
        "bootstrapped",
        "stale",
        "stale_reasons",
        "error",
        "exit",
    }
    assert (synced["set"], synced["version"], synced["exit"]) == (name, 1, 0)
    status = consumer.local("status", "--json")
    assert status.exit_code == 0
    assert set(status.json()) == {
        "set",
        "version",
        "count",
        "issued",
        "expires",
        "synced_at",
        "content_digest",
        "keyset",
        "stale",
        "stale_reasons",
    }
    assert (status.json()["count"], status.json()["stale"]) == (12, False)
    verified = consumer.local("verify", "--json")
    assert (verified.exit_code, verified.json()["ok"]) == (0, True)
    failed = consumer.run("sync", f"{owner.slug}/missing", "--json")
    assert failed.exit_code == 4
    assert failed.json()["exit"] == 4
    assert problem_type("not-found") in failed.json()["error"]
    # Without --json, words for people: not JSON.
    words = consumer.local("status")
    assert f"{name}: version 1, 12 entries" in words.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(words.stdout)


def test_stale_is_exit_5_and_the_last_list_is_kept(
    hub: RealHub, tmp_path: Path, rng: random.Random
) -> None:
    owner = agency(hub, tmp_path, "stale")
    reader = agency(hub, tmp_path, "stale-reader")
    lines = random_lines(rng, 10)
    name = new_set(hub, tmp_path, owner, "list", [reader.slug], lines)
    consumer = consumer_of(hub, tmp_path, reader)
    consumer.pin(owner.slug, owner.keyset_file)
    assert consumer.run("sync", name).exit_code == 0

    # Through the Python API, with the clock moved 31 days on: the 30-day
    # version is stale, kept, and exit 5.
    before = snapshot(consumer.home, [name], [owner.slug])
    store = Store.open(consumer.home)
    try:
        with HubClient(_settings(consumer)) as client:
            later = datetime.now(UTC) + timedelta(days=31)
            result = Syncer(client, store, Limits(), now=later).sync(name)
    finally:
        store.close()
    assert (result.error, result.version, result.exit_code) == (None, 1, 5)
    assert any("expired" in reason for reason in result.stale)
    assert snapshot(consumer.home, [name], [owner.slug]) == before

    # Through the CLI, with the real clock: a version that expires in three
    # seconds is synced, then reported stale by status and by sync.
    keyset = SignedDocument.loads("keyset", owner.keyset_file.read_text())
    simset = SimSet(name, SimAgency(owner.slug, owner.private, [keyset]))
    simset.versions.append(_held_version(consumer, name, lines))
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    v2 = simset.build([*lines, *random_lines(rng, 2)], expires=expires)
    posted = hub.publish(name, v2, owner.tokens["publisher"])
    assert posted.status_code == 201, posted.text
    synced = consumer.run("sync", name, "--json")
    assert synced.json()["version"] == 2
    deadline = time.monotonic() + 10
    while datetime.now(UTC) <= expires and time.monotonic() < deadline:
        time.sleep(0.1)
    status = consumer.local("status", "--json")
    assert status.exit_code == 5
    assert status.json()["stale"] is True
    again = consumer.run("sync", name, "--json")
    assert (again.exit_code, again.json()["stale"], again.json()["version"]) == (5, True, 2)
    assert consumer.assert_holds_signed(name, 2) == v2.lines
    plain = consumer.local("status")
    assert "stale: manifest version 2 expired" in plain.stdout


def _settings(consumer: Consumer) -> ClientSettings:
    return ClientSettings.resolve(
        server=consumer.server, token=consumer.token, home=consumer.home, environ={}
    )


def _held_version(consumer: Consumer, name: str, lines: list[bytes]) -> SimVersion:
    """The consumer's held version as the publisher's parent (its delta is not needed)."""
    store = Store.open(consumer.home)
    try:
        state = store.set_state(name)
        signatures = store.manifest_signatures(name)
    finally:
        store.close()
    assert state.manifest is not None
    document = SignedDocument("manifest", state.version, state.manifest, tuple(signatures))
    return SimVersion(document, b"", wire(lines))


# -- publish --------------------------------------------------------------------------------------


def test_publish_refused_by_the_hub_prints_its_problem_and_exits_4(
    hub: RealHub, tmp_path: Path, rng: random.Random
) -> None:
    owner = agency(hub, tmp_path, "refused")
    name = new_set(hub, tmp_path, owner, "list", [], random_lines(rng, 6))
    as_reader = owner_of(hub, tmp_path, owner, "reader")
    before = snapshot(as_reader.home, [name], [owner.slug])
    extra = tmp_path / "extra.txt"
    extra.write_bytes(wire(random_lines(rng, 2)))
    ran = as_reader.run("publish", name, "--key", owner.keys[0], "--add", extra)
    assert ran.exit_code == 4
    assert f"hub refused (403): {problem_type('forbidden')}: " in ran.stderr
    assert hub.latest(name, owner.tokens["reader"]) == 1
    assert snapshot(as_reader.home, [name], [owner.slug]) == before


def test_publish_dry_run_uploads_nothing(hub: RealHub, tmp_path: Path, rng: random.Random) -> None:
    owner = agency(hub, tmp_path, "dry")
    name = new_set(hub, tmp_path, owner, "list", [], random_lines(rng, 6))
    admin = owner_of(hub, tmp_path, owner, "publisher")
    before = snapshot(admin.home, [name], [owner.slug])
    extra = tmp_path / "extra.txt"
    extra.write_bytes(wire(random_lines(rng, 3)))
    ran = admin.run("publish", name, "--key", owner.keys[0], "--add", extra, "--dry-run", "--json")
    assert ran.exit_code == 0, ran.stderr
    assert ran.json() == {
        "set": name,
        "version": 2,
        "adds": 3,
        "removes": 0,
        "count": 9,
        "dry_run": True,
        "changed": True,
    }
    assert hub.latest(name, owner.tokens["publisher"]) == 1
    assert snapshot(admin.home, [name], [owner.slug]) == before


def test_unchanged_content_publishes_nothing_unless_refreshed(
    hub: RealHub, tmp_path: Path, rng: random.Random
) -> None:
    owner = agency(hub, tmp_path, "same")
    lines = random_lines(rng, 6)
    name = new_set(hub, tmp_path, owner, "list", [], lines)
    publisher = owner_of(hub, tmp_path, owner, "publisher")
    again = tmp_path / "again.txt"
    again.write_bytes(wire(reversed(lines)))
    same = publisher.run("publish", name, "--key", owner.keys[0], "--from", again)
    assert same.exit_code == 0, same.stderr
    assert same.stdout.startswith(f"nothing to publish: {name} version 1 already holds")
    assert hub.latest(name, owner.tokens["publisher"]) == 1
    refreshed = publisher.run("publish", name, "--key", owner.keys[0], "--refresh", "--json")
    assert refreshed.exit_code == 0, refreshed.stderr
    assert refreshed.json() == {
        "set": name,
        "version": 2,
        "adds": 0,
        "removes": 0,
        "count": 6,
        "dry_run": False,
        "changed": True,
    }
    assert hub.latest(name, owner.tokens["publisher"]) == 2


def test_an_empty_list_is_published_only_when_allowed(
    hub: RealHub, tmp_path: Path, rng: random.Random
) -> None:
    owner = agency(hub, tmp_path, "empty")
    lines = random_lines(rng, 4)
    name = new_set(hub, tmp_path, owner, "list", [], lines)
    publisher = owner_of(hub, tmp_path, owner, "publisher")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"# nothing left\n\n")
    refused = publisher.run("publish", name, "--key", owner.keys[0], "--from", empty)
    assert refused.exit_code == 2
    assert f"{empty} holds no hashes" in refused.stderr
    assert "--allow-empty" in refused.stderr
    everything = tmp_path / "everything.txt"
    everything.write_bytes(wire(lines))
    emptied = publisher.run("publish", name, "--key", owner.keys[0], "--remove", everything)
    assert emptied.exit_code == 2
    assert f"the new content of {name} is empty" in emptied.stderr
    assert hub.latest(name, owner.tokens["publisher"]) == 1
    allowed = publisher.run(
        "publish", name, "--key", owner.keys[0], "--from", empty, "--allow-empty", "--json"
    )
    assert allowed.exit_code == 0, allowed.stderr
    assert (allowed.json()["version"], allowed.json()["count"]) == (2, 0)
    assert hub.latest(name, owner.tokens["publisher"]) == 2


def test_publish_with_a_threshold_of_two_keys(
    hub: RealHub, tmp_path: Path, rng: random.Random
) -> None:
    owner = agency(hub, tmp_path, "quorum", keys=2, publish_threshold=2)
    reader = agency(hub, tmp_path, "quorum-reader")
    admin = owner_of(hub, tmp_path, owner)
    name = f"{owner.slug}/list"
    assert admin.run("set", "create", name).exit_code == 0
    assert admin.run("set", "grant", name, reader.slug).exit_code == 0
    lines = random_lines(rng, 8)
    source = tmp_path / "v1.txt"
    source.write_bytes(wire(lines))
    one = admin.run("publish", name, "--key", owner.keys[0], "--from", source)
    assert one.exit_code == 2
    assert "needs 2 publish keys" in one.stderr
    same_twice = admin.run(
        "publish", name, "--key", owner.keys[0], "--key", owner.keys[0], "--from", source
    )
    assert same_twice.exit_code == 2
    assert hub.latest(name, owner.tokens["reader"]) == 0
    both = admin.run(
        "publish", name, "--key", owner.keys[0], "--key", owner.keys[1], "--from", source, "--json"
    )
    assert (both.exit_code, both.json()["version"]) == (0, 1)
    consumer = consumer_of(hub, tmp_path, reader)
    consumer.pin(owner.slug, owner.keyset_file)
    assert consumer.run("sync", name).exit_code == 0
    assert consumer.assert_holds_signed(name, 1) == lines


def test_publish_refuses_bad_input_before_the_hub(
    hub: RealHub, tmp_path: Path, rng: random.Random
) -> None:
    owner = agency(hub, tmp_path, "input")
    name = new_set(hub, tmp_path, owner, "list", [], random_lines(rng, 4))
    admin = owner_of(hub, tmp_path, owner, "publisher")
    bad = tmp_path / "bad.txt"
    bad.write_text("md5:" + "a" * 32 + "\nnot a hash\nsha256:" + "b" * 10 + "\n")
    ran = admin.run("publish", name, "--key", owner.keys[0], "--from", bad)
    assert ran.exit_code == 2
    assert "line 2" in ran.stderr
    assert "line 3" in ran.stderr
    unpinned = Consumer(tmp_path / "unpinned-home", hub.url, owner.tokens["publisher"])
    good = tmp_path / "good.txt"
    good.write_bytes(wire(random_lines(rng, 2)))
    refused = unpinned.run("publish", name, "--key", owner.keys[0], "--from", good)
    assert refused.exit_code == 2
    assert "not pinned" in refused.stderr
    neither = admin.run("publish", name, "--key", owner.keys[0])
    assert neither.exit_code == 2
    both_forms = admin.run("publish", name, "--key", owner.keys[0], "--from", good, "--add", good)
    assert both_forms.exit_code == 2
    not_held = admin.run("publish", name, "--key", owner.keys[0], "--remove", good)
    assert not_held.exit_code == 2
    assert "does not hold" in not_held.stderr
    assert hub.latest(name, owner.tokens["publisher"]) == 1


def test_sync_refuses_bad_names_and_unpinned_agencies(hub: RealHub, tmp_path: Path) -> None:
    reader = agency(hub, tmp_path, "careful")
    consumer = consumer_of(hub, tmp_path, reader)
    bad = consumer.run("sync", "Not/A/Name", "--json")
    assert (bad.exit_code, bad.json()["exit"]) == (2, 2)
    unpinned = consumer.run("sync", f"{reader.slug}/anything", "--json")
    assert unpinned.exit_code == 2
    assert "not pinned" in unpinned.json()["error"]
    empty = consumer.local("status")
    assert (empty.exit_code, empty.stdout.startswith("no sets held yet")) == (0, True)
    assert consumer.local("status", "--json").stdout == ""


# -- settings -------------------------------------------------------------------------------------


def test_flags_beat_the_environment_in_a_real_invocation(
    hub: RealHub, tmp_path: Path, rng: random.Random
) -> None:
    owner = agency(hub, tmp_path, "flags")
    reader = agency(hub, tmp_path, "flags-reader")
    name = new_set(hub, tmp_path, owner, "list", [reader.slug], random_lines(rng, 5))
    flagged = consumer_of(hub, tmp_path, reader, "flagged")
    flagged.pin(owner.slug, owner.keyset_file)
    decoy_home = tmp_path / "decoy-home"
    dead = f"http://127.0.0.1:{free_port()}"
    decoys = process_env(
        HASHEX_SERVER=dead, HASHEX_TOKEN="hxt_not-a-token", HASHEX_HOME=str(decoy_home)
    )
    with_flags = hashex_process(
        "sync",
        name,
        "--json",
        "--server",
        hub.url,
        "--token",
        flagged.token,
        "--home",
        flagged.home,
        env=decoys,
    )
    assert with_flags.exit_code == 0, with_flags.stderr
    assert with_flags.json()["version"] == 1
    assert flagged.held(name)[0] == 1
    assert not decoy_home.exists()
    # The same variables alone are used: the dead hub is unreachable (exit 4).
    without = hashex_process("sync", name, "--home", flagged.home, env=decoys)
    assert without.exit_code == 4
    assert dead in without.stderr
    assert "hxt_not-a-token" not in without.stderr
    # And the variables, when right, are enough.
    good = process_env(
        HASHEX_SERVER=hub.url, HASHEX_TOKEN=flagged.token, HASHEX_HOME=str(flagged.home)
    )
    status = hashex_process("status", "--json", env=good)
    assert (status.exit_code, status.json()["version"]) == (0, 1)


# -- trust list and remove; what status and sync say ---------------------------------------------


def test_trust_list_remove_and_what_status_reports(
    hub: RealHub, tmp_path: Path, rng: random.Random
) -> None:
    owner = agency(hub, tmp_path, "listed")
    reader = agency(hub, tmp_path, "listing")
    lines = random_lines(rng, 12)
    name = new_set(hub, tmp_path, owner, "list", [reader.slug], lines)
    empty = f"{owner.slug}/empty"
    admin = owner_of(hub, tmp_path, owner)
    assert admin.run("set", "create", empty).exit_code == 0
    assert admin.run("set", "grant", empty, reader.slug).exit_code == 0
    consumer = consumer_of(hub, tmp_path, reader)
    assert consumer.local("trust", "list").stdout.startswith("no agency is pinned")
    consumer.pin(owner.slug, owner.keyset_file)
    listed = consumer.local("trust", "list", "--json")
    assert listed.json() == {"agency": owner.slug, "pin": "keyset"}

    # A set without versions says so, rather than "version 0, fresh".
    synced = consumer.run("sync")
    assert synced.exit_code == 0, synced.stderr
    assert f"{empty}: no versions yet" in synced.stdout.splitlines()
    assert f"{name}: version 1 (applied 1), fresh" in synced.stdout.splitlines()

    # status --json shows what the README checks against the hub's manifest.
    status = consumer.local("status", "--json").json()
    manifest = consumer.held(name)[1]
    assert manifest is not None
    parsed = Manifest.parse(manifest)
    assert status["content_digest"] == f"sha256:{parsed.content_digest}"
    assert status["keyset"] == 1
    assert status["expires"] == parsed.expires.strftime("%Y-%m-%dT%H:%M:%SZ")

    # Unpinning drops everything of the agency: no lookup answers from it.
    first = lines[0].split(b" ")[0].decode()
    assert consumer.local("lookup", first).exit_code == 0
    removed = consumer.local("trust", "remove", owner.slug)
    assert removed.exit_code == 0, removed.stderr
    assert removed.stdout.strip() == (
        f"unpinned {owner.slug}: nothing it signed is trusted here any more; "
        f"dropped its sets {name}"
    )
    assert consumer.local("lookup", first).exit_code == 1
    assert consumer.local("trust", "list", "--json").stdout == ""
    assert set_rows(consumer.home) == []
    again = consumer.local("trust", "remove", owner.slug)
    assert again.exit_code == 2
    assert f"agency {owner.slug} is not pinned" in again.stderr
