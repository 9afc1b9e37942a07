"""The local store: each version applied whole or not at all, relabels, lookups, order.

The store trusts its caller (the sync loop hands it only verified data), so
these tests feed it honest versions built with real keys
(``tests.client.simhub``) and, to reach its own refusals, well-formed deltas
that do not apply.  A refusal that comes after whole batches were written
must leave the store exactly as it was: the batch hook proves the failure
came mid-way, the dump proves nothing stayed.
"""

from __future__ import annotations

import dataclasses
import io
import random
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from client.errors import HubRefusedError, ResponseError
from client.pins import read_pin
from client.protocol.blocks import BLOCK_LINES as BATCH
from client.protocol.entries import content_digest, identity_of
from client.protocol.errors import ChainError, DeltaApplyError, InputError
from client.store import Match, Pin, Store
from client.trust import VerifiedDelta, content_blocks, verify_delta
from tests.client.simhub import SimSet, SimVersion, hashex, new_agency, snapshot
from tests.synthetic import random_line, random_lines

NAME = "unit/list"
OTHER = "unit/other"


class Hooked:
    """A batch hook that records each batch number (and may fail at one)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.batches: list[int] = []
        self.fail_at = fail_at

    def __call__(self, number: int) -> None:
        self.batches.append(number)
        if number == self.fail_at:
            raise KeyboardInterrupt("simulated crash after a batch")


@pytest.fixture
def rng() -> random.Random:
    return random.Random(7_000_001)


@pytest.fixture
def hook() -> Hooked:
    return Hooked()


@pytest.fixture
def store(tmp_path: Path, hook: Hooked) -> Iterator[Store]:
    opened = Store.open(tmp_path / "home", batch_hook=hook)
    yield opened
    opened.close()


def new_set(name: str = NAME) -> SimSet:
    return SimSet(name, new_agency(name.split("/")[0]))


def verified(version: SimVersion, delta: bytes | None = None, **counts: int) -> VerifiedDelta:
    """``version``'s delta (or other bytes, with the counts given) as verified."""
    manifest = dataclasses.replace(version.manifest, **counts)
    return verify_delta(manifest, io.BytesIO(version.delta if delta is None else delta))


def load(store: Store, version: SimVersion, name: str = NAME) -> None:
    """Bootstrap ``name`` from ``version``'s content, as a sync does."""
    store.replace_content(
        name, version.document, content_blocks(version.manifest, io.BytesIO(version.content))
    )


def apply(store: Store, version: SimVersion, name: str = NAME) -> None:
    store.apply_delta(name, version.document, verified(version))


def held(store: Store, name: str = NAME) -> list[bytes]:
    return list(store.iter_content(name))


def assert_holds(store: Store, version: SimVersion, name: str = NAME) -> None:
    """The store holds exactly ``version``: its manifest, and content hashing to its digest."""
    state = store.set_state(name)
    assert (state.version, state.manifest) == (version.version, version.document.data)
    assert held(store, name) == version.lines
    manifest = version.manifest
    assert content_digest(store.iter_content(name)) == (manifest.content_digest, manifest.count)


@contextmanager
def closing_store(home: Path, hook: Hooked | None) -> Iterator[Store]:
    """The store under ``home``, closed at the end of the block."""
    store = Store.open(home, batch_hook=hook)
    try:
        yield store
    finally:
        store.close()


def dump(home: Path) -> list[str]:
    with closing(sqlite3.connect(home / "store.sqlite3")) as connection:
        return list(connection.iterdump())


def delta_bytes(adds: Iterable[bytes] = (), removes: Iterable[bytes] = ()) -> bytes:
    return b"".join(
        [*(b"+" + x + b"\n" for x in sorted(adds)), *(b"-" + x + b"\n" for x in sorted(removes))]
    )


# -- versions applied whole --------------------------------------------------------------------


def test_bootstrap_then_deltas_hold_exactly_the_signed_content(
    store: Store, rng: random.Random
) -> None:
    simset = new_set()
    load(store, simset.publish(random_lines(rng, 500)))
    assert_holds(store, simset.versions[-1])
    for _ in range(3):
        lines = simset.lines
        removed = set(rng.sample(lines, 40))
        version = simset.change(adds=random_lines(rng, 60), removes=removed)
        apply(store, version)
        assert_holds(store, version)
    assert [s.name for s in store.local_sets()] == [NAME]


def test_a_delta_that_fails_after_whole_batches_leaves_the_store_unchanged(
    tmp_path: Path, store: Store, hook: Hooked, rng: random.Random
) -> None:
    # 25,000 adds are three batches; the very last add collides with a held
    # identity (under another label), so two batches are written first.
    simset = new_set()
    v1 = simset.publish(random_lines(rng, 100, "sha512"))
    load(store, v1)
    before = dump(tmp_path / "home")
    clash = identity_of(v1.lines[0]) + b" other-label"
    adds = sorted([*random_lines(rng, 2 * BATCH + 4_999, "sha256"), clash])
    assert adds[-1] == clash
    v2 = simset.build([*v1.lines, *adds[:-1]])
    hook.batches.clear()
    with pytest.raises(DeltaApplyError):
        store.apply_delta(NAME, v2.document, verified(v2, delta_bytes(adds), adds=len(adds)))
    assert hook.batches == [1, 2]
    assert dump(tmp_path / "home") == before
    assert_holds(store, v1)


def test_removes_that_fail_after_a_whole_batch_leave_the_store_unchanged(
    tmp_path: Path, store: Store, hook: Hooked, rng: random.Random
) -> None:
    simset = new_set()
    v1 = simset.publish(random_lines(rng, BATCH + 2_000, "sha1"))
    load(store, v1)
    before = dump(tmp_path / "home")
    absent = b"sha1:" + b"f" * 40
    removes = [*v1.lines[: BATCH + 100], absent]
    assert sorted(removes)[-1] == absent
    v2 = simset.build(v1.lines[BATCH + 100 :])
    hook.batches.clear()
    with pytest.raises(DeltaApplyError):
        store.apply_delta(
            NAME,
            v2.document,
            verified(v2, delta_bytes(removes=removes), adds=0, removes=len(removes)),
        )
    assert hook.batches == [1]
    assert dump(tmp_path / "home") == before
    assert_holds(store, v1)


@pytest.mark.parametrize("case", ["remove under another label", "add of a held identity"])
def test_a_delta_that_does_not_apply(
    tmp_path: Path, store: Store, rng: random.Random, case: str
) -> None:
    simset = new_set()
    v1 = simset.publish([random_line(rng, "md5", "cat-a") for _ in range(20)])
    load(store, v1)
    before = dump(tmp_path / "home")
    target = v1.lines[5]
    other = identity_of(target) + b" cat-b"
    data = delta_bytes(removes=[other]) if case.startswith("remove") else delta_bytes(adds=[other])
    counts = {"adds": 0, "removes": 1} if case.startswith("remove") else {"adds": 1, "removes": 0}
    v2 = simset.build(v1.lines)
    with pytest.raises(DeltaApplyError):
        store.apply_delta(NAME, v2.document, verified(v2, data, **counts))
    assert dump(tmp_path / "home") == before


def test_a_relabel_is_one_remove_and_one_add_in_one_delta(store: Store, rng: random.Random) -> None:
    simset = new_set()
    v1 = simset.publish([random_line(rng, "sha256", "cat-a") for _ in range(30)])
    load(store, v1)
    old = v1.lines[10]
    new = identity_of(old) + b" cat-b"
    v2 = simset.change(adds=[new], removes=[old])
    assert v2.delta == b"+" + new + b"\n-" + old + b"\n"
    assert (v2.manifest.adds, v2.manifest.removes, v2.manifest.count) == (1, 1, 30)
    apply(store, v2)
    assert_holds(store, v2)
    identity = identity_of(old).decode()
    assert store.lookup([identity]) == [Match(identity, "cat-b", NAME, 2)]


def test_a_content_that_fails_at_its_end_leaves_the_set_as_it_was(
    tmp_path: Path, store: Store, hook: Hooked, rng: random.Random
) -> None:
    # The count is only known wrong once every line was read: all three
    # batches were already written into the new table.
    simset = new_set()
    v1 = simset.publish(random_lines(rng, 50))
    load(store, v1)
    before = dump(tmp_path / "home")
    v2 = simset.build(random_lines(rng, 2 * BATCH + 10))
    lying = dataclasses.replace(v2.manifest, count=v2.manifest.count + 1)
    hook.batches.clear()
    with pytest.raises(ChainError):
        store.replace_content(NAME, v2.document, content_blocks(lying, io.BytesIO(v2.content)))
    assert hook.batches == [1, 2, 3]
    assert dump(tmp_path / "home") == before
    assert_holds(store, v1)


def test_a_first_content_that_fails_leaves_no_set(
    tmp_path: Path, store: Store, rng: random.Random
) -> None:
    before = dump(tmp_path / "home")
    v1 = new_set().build(random_lines(rng, BATCH + 5))
    unsorted = v1.content.splitlines(keepends=True)
    unsorted[-1], unsorted[-2] = unsorted[-2], unsorted[-1]
    with pytest.raises(ResponseError):
        store.replace_content(
            NAME, v1.document, content_blocks(v1.manifest, io.BytesIO(b"".join(unsorted)))
        )
    assert dump(tmp_path / "home") == before
    assert store.set_state(NAME).version == 0
    assert held(store) == []


@pytest.mark.parametrize(("kind", "fail_at"), [("content", 2), ("delta", 1), ("delta", 3)])
def test_an_interruption_after_a_batch_rolls_the_version_back(
    tmp_path: Path, rng: random.Random, kind: str, fail_at: int
) -> None:
    home = tmp_path / "home"
    simset = new_set()
    v1 = simset.publish(random_lines(rng, 3 * BATCH))
    v2 = simset.change(adds=random_lines(rng, 2 * BATCH), removes=v1.lines[:BATCH])
    with closing_store(home, None) as store:
        load(store, v1)
    before = snapshot(home, [NAME])
    hook = Hooked(fail_at)
    write = load if kind == "content" else apply
    with closing_store(home, hook) as store, pytest.raises(KeyboardInterrupt):
        write(store, v2)
    assert hook.batches[-1] == fail_at
    assert snapshot(home, [NAME]) == before
    with closing_store(home, None) as store:
        apply(store, v2)
        assert_holds(store, v2)


def test_a_far_behind_set_is_replaced_whole(store: Store, rng: random.Random) -> None:
    simset = new_set()
    load(store, simset.publish(random_lines(rng, 300)))
    for _ in range(3):
        simset.change(adds=random_lines(rng, 20), removes=simset.lines[:15])
    load(store, simset.versions[-1])
    assert_holds(store, simset.versions[-1])


def test_a_set_emptied_by_a_delta(store: Store, rng: random.Random) -> None:
    simset = new_set()
    load(store, simset.publish(random_lines(rng, 12)))
    v2 = simset.change(removes=simset.lines)
    apply(store, v2)
    assert_holds(store, v2)
    assert held(store) == []
    assert store.lookup([identity_of(line).decode() for line in simset.versions[0].lines]) == []


# -- lookups and order ---------------------------------------------------------------------------


def test_lookup_across_sets(store: Store, rng: random.Random) -> None:
    shared = random_line(rng, "md5", None)
    only_first = random_line(rng, "sha1", "cat-a")
    first, second = new_set(NAME), new_set(OTHER)
    load(store, first.publish([shared + b" cat-a", only_first, *random_lines(rng, 50)]), NAME)
    second.publish(random_lines(rng, 10))
    v2 = second.change(adds=[shared + b" vics-1"])
    load(store, second.versions[0], OTHER)
    apply(store, v2, OTHER)
    absent = random_line(rng, "sha256", None).decode()
    found = store.lookup(
        [shared.decode(), only_first.split(b" ")[0].decode(), absent, shared.decode()]
    )
    assert sorted(found, key=lambda m: (m.identity, m.set_name)) == sorted(
        [
            Match(shared.decode(), "cat-a", NAME, 1),
            Match(shared.decode(), "vics-1", OTHER, 2),
            Match(only_first.split(b" ")[0].decode(), "cat-a", NAME, 1),
        ],
        key=lambda m: (m.identity, m.set_name),
    )
    assert store.lookup([absent]) == []
    assert store.lookup([]) == []


def test_lookup_with_no_sets(store: Store) -> None:
    assert store.lookup(["md5:" + "0" * 32]) == []


def test_iter_content_is_bytewise_order_whatever_the_insertion_order(
    store: Store, rng: random.Random
) -> None:
    # Every algorithm, labels of upper and lower case and digits, added in
    # deltas that land all over the existing range.
    simset = new_set()
    load(store, simset.publish(random_lines(rng, 200)))
    for _ in range(4):
        apply(
            store, simset.change(adds=random_lines(rng, 50), removes=rng.sample(simset.lines, 10))
        )
    lines = held(store)
    assert lines == sorted(lines)
    assert lines == simset.lines
    assert {line.split(b":")[0] for line in lines} == {
        b"md5",
        b"pdq",
        b"sha1",
        b"sha256",
        b"sha512",
    }
    assert b"".join(line + b"\n" for line in lines) == simset.versions[-1].content


def test_iter_content_of_a_set_never_held(store: Store) -> None:
    assert held(store, "nobody/nothing") == []


# -- the database itself ------------------------------------------------------------------------


def test_state_survives_reopening(tmp_path: Path, rng: random.Random) -> None:
    home = tmp_path / "home"
    simset = new_set()
    with closing_store(home, None) as store:
        store.add_pin(Pin("unit", "keyid", "ab" * 32), None)
        load(store, simset.publish(random_lines(rng, 40)))
        apply(store, simset.change(adds=random_lines(rng, 5)))
    with closing_store(home, None) as store:
        assert_holds(store, simset.versions[-1])
        assert store.pin("unit") == Pin("unit", "keyid", "ab" * 32)
        assert [s.name for s in store.local_sets()] == [NAME]


def test_a_pin_is_never_replaced(store: Store) -> None:
    store.add_pin(Pin("unit", "keyid", "ab" * 32), None)
    with pytest.raises(InputError):
        store.add_pin(Pin("unit", "keyid", "cd" * 32), None)
    assert store.pin("unit") == Pin("unit", "keyid", "ab" * 32)
    assert store.pinned_agencies() == ["unit"]


def test_a_store_of_another_schema_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Store.open(home).close()
    with closing(sqlite3.connect(home / "store.sqlite3")) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(InputError):
        Store.open(home)


# -- hashex verify re-checks the whole store ------------------------------------------------------


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (
            "UPDATE {table} SET line = substr(line, 1, instr(line || ' ', ' ') - 1) || ' forged' "
            "WHERE line = (SELECT MIN(line) FROM {table})",
            "content hashes to",
        ),
        ("INSERT INTO {table} VALUES ('md5:" + "0" * 32 + "')", "content hashes to"),
        (
            "DELETE FROM {table} WHERE line = (SELECT MAX(line) FROM {table})",
            "content hashes to",
        ),
        ("UPDATE sets SET signatures = '[]'", "FAILED"),
        ("UPDATE sets SET manifest = replace(manifest, 'count ', 'count 1')", "FAILED"),
    ],
    ids=["relabelled", "added", "removed", "unsigned", "manifest edited"],
)
def test_verify_catches_a_tampered_store(
    tmp_path: Path, rng: random.Random, tamper: str, problem: str
) -> None:
    home = tmp_path / "home"
    agency = new_agency("unit")
    simset = SimSet(NAME, agency)
    keyset_file = agency.keyset_file(tmp_path / "unit.json")
    with closing_store(home, None) as store:
        store.add_pin(*read_pin("unit", str(keyset_file)))
        load(store, simset.publish(random_lines(rng, 30)))
        apply(store, simset.change(adds=random_lines(rng, 5), removes=simset.lines[:3]))
    good = hashex("verify", "--home", home, "--json")
    assert (good.exit_code, good.json()) == (
        0,
        {"set": NAME, "version": 2, "ok": True, "problem": None},
    )
    with closing(sqlite3.connect(home / "store.sqlite3")) as connection:
        (set_id,) = connection.execute("SELECT id FROM sets WHERE name = ?", (NAME,)).fetchone()
        with connection:
            connection.execute(tamper.format(table=f"entries_{set_id}"))
    bad = hashex("verify", "--home", home, "--json")
    assert bad.exit_code == 3
    assert bad.json()["ok"] is False
    assert problem in bad.json()["problem"]


@pytest.mark.parametrize("slice_size", [1, 7, 100_000])
def test_reading_a_set_once_finds_what_probing_it_finds(
    store: Store, rng: random.Random, monkeypatch: pytest.MonkeyPatch, slice_size: int
) -> None:
    # A big batch reads each set's identities (a slice at a time) instead of
    # probing per hash; both ways must give the very same matches.
    first, second = new_set(NAME), new_set(OTHER)
    load(store, first.publish(random_lines(rng, 60)), NAME)
    load(store, second.publish([*first.lines[::3], *random_lines(rng, 20)]), OTHER)
    listed = [identity_of(line).decode() for line in first.lines[::2] + second.lines[-5:]]
    unlisted = [identity_of(random_line(rng)).decode() for _ in range(10)]
    small = [*listed[:4], *unlisted[:2]]
    big = [*listed, *unlisted, *listed[:3]]
    monkeypatch.setattr("client.store.SCAN_SLICE", slice_size)

    def by_key(matches: list[Match]) -> list[Match]:
        return sorted(matches, key=lambda m: (m.identity, m.set_name))

    def match(line: bytes, name: str) -> Match:
        identity, _, label = line.decode().partition(" ")
        return Match(identity, label or None, name, 1)

    expected = by_key(
        [
            match(line, name)
            for name, simset in ((NAME, first), (OTHER, second))
            for line in simset.lines
            if identity_of(line).decode() in big
        ]
    )
    assert len(big) * 4 >= 80  # the scan path, for both sets
    assert by_key(store.lookup(big)) == expected
    # Digests given as lists (duplicates and all) are made a set once, for
    # both sets; every algorithm's batch counts as big here.
    monkeypatch.setattr("client.store.SCAN_RATIO", 100)
    as_lists: dict[str, list[str]] = {}
    for identity in big:
        alg, _, digest = identity.partition(":")
        as_lists.setdefault(alg, []).append(digest)
    assert by_key(store.lookup_digests(as_lists)) == expected
    assert len(small) * 4 < 60  # the probe path
    assert by_key(store.lookup(small)) == [m for m in expected if m.identity in small]


def test_a_schema_1_store_is_migrated_with_its_sets_intact(
    tmp_path: Path, rng: random.Random
) -> None:
    home = tmp_path / "home"
    simset = new_set()
    v1 = simset.publish(random_lines(rng, 40))
    with closing_store(home, None) as store:
        load(store, v1)
    # Rewrite the set's table the way schema 1 kept it: identity and label.
    with closing(sqlite3.connect(home / "store.sqlite3")) as connection, connection:
        connection.executescript(
            "CREATE TABLE old (identity TEXT PRIMARY KEY, label TEXT) WITHOUT ROWID;"
            "INSERT INTO old SELECT substr(line, 1, instr(line || ' ', ' ') - 1), "
            "nullif(substr(line, instr(line || ' ', ' ') + 1), '') FROM entries_1;"
            "DROP TABLE entries_1; ALTER TABLE old RENAME TO entries_1;"
            # Schema 1 remembered no listing either.
            "DROP TABLE listings;"
            "PRAGMA user_version = 1;"
        )
    with closing_store(home, None) as store:
        assert_holds(store, v1)
        v2 = simset.change(adds=random_lines(rng, 5), removes=simset.lines[:3])
        apply(store, v2)
        assert_holds(store, v2)
    with closing(sqlite3.connect(home / "store.sqlite3")) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (3,)
        assert connection.execute("SELECT count(*) FROM listings").fetchone() == (0,)


def test_a_store_from_a_newer_hashex_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Store.open(home).close()
    with closing(sqlite3.connect(home / "store.sqlite3")) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(InputError, match="schema 99; this hashex knows up to 3: upgrade"):
        Store.open(home)


def test_a_delta_whose_confirmation_fails_is_rolled_back(
    tmp_path: Path, store: Store, rng: random.Random
) -> None:
    # A publisher applies its own delta while the hub checks the upload; a
    # refusal arriving last must leave the store at the version before.
    simset = new_set()
    v1 = simset.publish(random_lines(rng, 30))
    load(store, v1)
    before = dump(tmp_path / "home")
    v2 = simset.change(adds=random_lines(rng, 5), removes=simset.lines[:3])

    def refused() -> None:
        raise HubRefusedError(409, "version-conflict", "published by someone else first")

    with pytest.raises(HubRefusedError):
        store.apply_delta(NAME, v2.document, verified(v2), before_commit=refused)
    assert dump(tmp_path / "home") == before
    apply(store, v2)
    assert_holds(store, v2)
