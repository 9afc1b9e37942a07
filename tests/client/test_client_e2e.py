"""End to end: a real ``hashex-server serve`` on 127.0.0.1, driven by the ``hashex`` verbs.

On SQLite and on PostgreSQL, an agency made with ``hashex keygen``, ``hashex
keyset init`` and ``hashex-server agency create`` creates a set, grants it,
and publishes version 1 from a file, then version 2 with adds, removes and a
relabel.  Two consumers of a granted agency -- one pinned by the keyset
file, one by the root key id -- sync each version; each store then holds
exactly the signed content (its entries, written canonically, hash to the
manifest's content digest, and equal what the publisher meant).  An
ungranted consumer gets exit 4 and learns nothing, and a consumer cannot
publish to the owner's set, with its own key (exit 2) or with the owner's
(exit 4, the hub's 403).
"""

from __future__ import annotations

import random
from pathlib import Path

from client.protocol.documents import Keyset, Manifest, SignedDocument
from client.protocol.entries import identity_of
from server.errors import problem_type
from tests.client.realhub import RealAgency, RealHub, register
from tests.client.simhub import Consumer, hashex, set_rows
from tests.synthetic import random_line

NAME = "owner/list"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="ascii")
    return path


def bare(line: bytes) -> str:
    """The hex of an entry, without algorithm or label."""
    return identity_of(line).split(b":")[1].decode()


def test_publish_and_sync_each_version(hub: RealHub, tmp_path: Path) -> None:
    rng = random.Random(5_550_001)
    # The owner: a key, its keyset file and its tokens, from the two CLIs.
    key = tmp_path / "owner.pem"
    assert hashex("keygen", "--out", key).exit_code == 0
    keyset_file = tmp_path / "owner.keyset.json"
    made = hashex("keyset", "init", "owner", "--key", key, "--out", keyset_file)
    assert made.exit_code == 0, made.stderr
    hub.admin("agency", "create", "owner", "--name", "Owner Unit", "--keyset", keyset_file)
    admin_token = hub.admin("token", "create", "owner", "--role", "agency-admin").strip()
    publisher_token = hub.admin("token", "create", "owner", "--role", "publisher").strip()
    reader = register(hub.database_url, tmp_path, "reader")
    stranger = register(hub.database_url, tmp_path, "stranger", roles=("reader",))
    owner = Consumer(tmp_path / "owner-home", hub.url, admin_token)
    publisher = Consumer(owner.home, hub.url, publisher_token)
    owner.pin("owner", keyset_file)
    assert owner.run("set", "create", NAME, "--title", "Owner's list").exit_code == 0
    granted = owner.run("set", "grant", NAME, "reader", "--json")
    assert (granted.exit_code, granted.json()["readers"]) == (0, ["reader"])

    # Version 1 from a file mixing every input form.
    canonical = [random_line(rng, None, "cat-a") for _ in range(30)]
    sha256_bare = [random_line(rng, "sha256", None) for _ in range(10)]
    md5sum = [random_line(rng, "md5", None) for _ in range(10)]
    source = write_lines(
        tmp_path / "v1.txt",
        [line.decode() for line in canonical]
        + [bare(line).upper() for line in sha256_bare]
        + [f"{bare(line)}  evidence/file-{n}.jpg" for n, line in enumerate(md5sum)]
        + [canonical[0].decode()],
    )
    v1 = sorted(canonical + sha256_bare + md5sum)
    ran = publisher.run("publish", NAME, "--key", key, "--from", source, "--json")
    assert ran.exit_code == 0, ran.stderr
    assert ran.json() == {
        "set": NAME,
        "version": 1,
        "adds": 50,
        "removes": 0,
        "count": 50,
        "dry_run": False,
        "changed": True,
    }
    assert publisher.assert_holds_signed(NAME, 1) == v1

    # Two consumers of the granted agency, pinned two ways.
    by_file = Consumer(tmp_path / "by-file", hub.url, reader.tokens["reader"])
    by_file.pin("owner", keyset_file)
    by_key_id = Consumer(tmp_path / "by-key-id", hub.url, reader.tokens["reader"])
    owner_key_id = made_key_id(keyset_file)
    by_key_id.pin("owner", owner_key_id)
    for consumer in (by_file, by_key_id):
        synced = consumer.run("sync", NAME, "--json")
        assert synced.exit_code == 0, synced.stderr
        report = synced.json()
        assert (report["version"], report["applied"], report["bootstrapped"]) == (1, [1], True)
        assert consumer.assert_holds_signed(NAME, 1) == v1
        assert consumer.held(NAME)[1] == hub.manifest(NAME, 1, reader.tokens["reader"])

    # Version 2: three adds, two removes, and one hash relabelled.
    added = [random_line(rng, "sha1", None) for _ in range(3)]
    relabelled = sha256_bare[0]
    removed = [md5sum[1], canonical[2]]
    add_file = write_lines(tmp_path / "add.txt", [bare(x) for x in [*added, relabelled]])
    remove_file = write_lines(tmp_path / "remove.txt", [identity_of(x).decode() for x in removed])
    ran = publisher.run(
        "publish",
        NAME,
        "--key",
        key,
        "--add",
        add_file,
        "--remove",
        remove_file,
        "--label",
        "cat-z",
        "--json",
    )
    assert ran.exit_code == 0, ran.stderr
    assert ran.json() == {
        "set": NAME,
        "version": 2,
        "adds": 4,
        "removes": 3,
        "count": 51,
        "dry_run": False,
        "changed": True,
    }
    kept = [x for x in v1 if x not in removed and x != relabelled]
    v2 = sorted(kept + [x + b" cat-z" for x in added] + [relabelled + b" cat-z"])
    assert publisher.assert_holds_signed(NAME, 2) == v2
    for consumer in (by_file, by_key_id):
        synced = consumer.run("sync", NAME, "--json")
        assert synced.exit_code == 0, synced.stderr
        report = synced.json()
        assert (report["version"], report["applied"], report["bootstrapped"]) == (2, [2], False)
        assert consumer.assert_holds_signed(NAME, 2) == v2
        assert consumer.held(NAME)[1] == hub.manifest(NAME, 2, reader.tokens["reader"])
        status = consumer.local("status", "--json")
        assert status.exit_code == 0
        assert status.json() | {"synced_at": None} == {
            "set": NAME,
            "version": 2,
            "count": 51,
            "issued": status.json()["issued"],
            "expires": status.json()["expires"],
            "synced_at": None,
            "content_digest": "sha256:"
            + Manifest.parse(hub.manifest(NAME, 2, reader.tokens["reader"])).content_digest,
            "keyset": 1,
            "stale": False,
            "stale_reasons": [],
        }
        verified = consumer.local("verify", "--json")
        assert verified.exit_code == 0
        assert verified.json() == {"set": NAME, "version": 2, "ok": True, "problem": None}

    # An agency the set was never granted to learns nothing.
    outsider = Consumer(tmp_path / "outsider", hub.url, stranger.tokens["reader"])
    outsider.pin("owner", keyset_file)
    refused = outsider.run("sync", NAME, "--json")
    missing = outsider.run("sync", "owner/no-such-set", "--json")
    assert (refused.exit_code, missing.exit_code) == (4, 4)
    assert refused.json()["error"] == missing.json()["error"].replace("owner/no-such-set", NAME)
    assert problem_type("not-found") in refused.json()["error"]
    everything = outsider.run("sync", "--json")
    assert (everything.exit_code, everything.stdout) == (0, "")
    assert set_rows(outsider.home) == []

    # A consumer cannot publish to the owner's set.
    assert_cannot_publish(hub, tmp_path, reader, by_file, key, admin_token, v2)


def made_key_id(keyset_file: Path) -> str:
    """The root key id in a one-key keyset file."""
    keyset = Keyset.parse(SignedDocument.loads("keyset", keyset_file.read_text()).data)
    (only,) = keyset.root_keys
    return only


def assert_cannot_publish(
    hub: RealHub,
    tmp_path: Path,
    reader: RealAgency,
    consumer: Consumer,
    owner_key: Path,
    owner_token: str,
    content: list[bytes],
) -> None:
    extra = write_lines(tmp_path / "extra.txt", ["md5:" + "ab" * 16])
    as_publisher = Consumer(consumer.home, hub.url, reader.tokens["publisher"])
    # With its own key: not a publish key of the owner's keyset (exit 2).
    own = as_publisher.run("publish", NAME, "--key", reader.keys[0], "--add", extra)
    assert own.exit_code == 2, own.stderr
    assert "not a publish key" in own.stderr
    # With the owner's key (stolen): the hub refuses the reader's token (403, exit 4).
    stolen = as_publisher.run("publish", NAME, "--key", owner_key, "--add", extra)
    assert stolen.exit_code == 4, stolen.stderr
    assert problem_type("forbidden") in stolen.stderr
    assert hub.latest(NAME, owner_token) == 2
    assert consumer.assert_holds_signed(NAME, 2) == content
