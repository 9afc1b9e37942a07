"""``hashex publish`` in bounded memory, against a real hub: what it signs and uploads is exact.

The publish path normalises its input files into sorted spool files a piece
at a time and builds the version by streaming the held content past them a
block at a time.  Here the pieces and blocks are a few lines long, so every
edge is crossed with sets of a few hundred entries: ``--from`` of a first
and a second version, and ``--add``/``--remove`` with relabels, adds of
lines already held and removes by identity.  A consumer then syncs what the
hub accepted (gzip uploads, the default) and must hold exactly the content
the same change defines when computed the obvious way.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from client.protocol import building, normalise
from client.protocol.entries import identity_of
from tests.client.realhub import RealAgency, RealHub, register
from tests.client.simhub import Consumer
from tests.synthetic import random_line, wire

_numbers = itertools.count(1)


@pytest.fixture(autouse=True)
def small_pieces() -> Iterator[None]:
    """Pieces of 7 lines, runs merged 3 at a time, blocks of 5 lines."""
    with (
        mock.patch.object(normalise, "CHUNK_LINES", 7),
        mock.patch.object(normalise, "FAN_IN", 3),
        mock.patch.object(building, "BLOCK_LINES", 5),
    ):
        yield


@pytest.fixture
def rng() -> random.Random:
    return random.Random(5_150_515)


def _set(hub: RealHub, tmp_path: Path) -> tuple[RealAgency, Consumer, Consumer, str]:
    slug = f"stream-{next(_numbers)}"
    owner = register(hub.database_url, tmp_path, slug)
    publisher = Consumer(tmp_path / "publisher", hub.url, owner.tokens["agency-admin"])
    publisher.pin(slug, owner.keyset_file)
    name = f"{slug}/list"
    assert publisher.run("set", "create", name).exit_code == 0
    reader = Consumer(tmp_path / "reader", hub.url, owner.tokens["reader"])
    reader.pin(slug, owner.keyset_file)
    return owner, publisher, reader, name


def _user_file(path: Path, lines: list[bytes], rng: random.Random) -> Path:
    """``lines`` as a user may give them: shuffled, some twice, some upper case, CRLF."""
    given = [line.decode() for line in lines] + [line.decode() for line in lines[::9]]
    rng.shuffle(given)
    shown = [
        text if " " in text or rng.random() < 0.5 else text.upper().replace("SHA", "sha")
        for text in given
    ]
    path.write_text("".join(f"{text}\r\n" for text in shown), encoding="ascii")
    return path


def _changed(old: list[bytes], adds: list[bytes], removes: list[bytes]) -> list[bytes]:
    """What --add/--remove defines: removed and relabelled identities out, adds in."""
    gone = {identity_of(line) for line in removes} | {identity_of(line) for line in adds}
    return sorted([line for line in old if identity_of(line) not in gone] + adds)


def test_publish_from_then_change_then_from_again(
    hub: RealHub, tmp_path: Path, rng: random.Random
) -> None:
    owner, publisher, reader, name = _set(hub, tmp_path)
    key = owner.keys[0]
    first = sorted({random_line(rng) for _ in range(300)})
    source = _user_file(tmp_path / "v1.txt", first, rng)
    ran = publisher.run("publish", name, "--key", key, "--from", source, "--json")
    assert ran.exit_code == 0, ran.stderr
    assert ran.json()["count"] == len(first)
    assert reader.run("sync", name).exit_code == 0
    assert reader.assert_holds_signed(name, 1) == first

    # A change: removes by identity (another label, or none), relabels,
    # adds of lines already held exactly, and new lines.
    removes = [identity_of(line) for line in first[::11]]
    relabels = [identity_of(line) + b" Zeta.9" for line in first[3::17]]
    again = first[4::17]
    fresh = [random_line(rng) for _ in range(40)]
    adds = sorted(set(relabels + again + fresh))
    added = _user_file(tmp_path / "adds.txt", adds, rng)
    removed = _user_file(tmp_path / "removes.txt", removes, rng)
    ran = publisher.run("publish", name, "--key", key, "--add", added, "--remove", removed)
    assert ran.exit_code == 0, ran.stderr
    second = _changed(first, adds, removes)
    assert reader.run("sync", name).exit_code == 0
    assert reader.assert_holds_signed(name, 2) == second
    # The publisher recorded the same version without downloading it.
    assert publisher.assert_holds_signed(name, 2) == second

    # --from a whole new content: half kept, some relabelled, some new.
    third = sorted(
        {
            identity_of(line): line for line in second[::2] + [random_line(rng) for _ in range(60)]
        }.values()
    )
    source = _user_file(tmp_path / "v3.txt", third, rng)
    ran = publisher.run("publish", name, "--key", key, "--from", source, "--json")
    assert ran.exit_code == 0, ran.stderr
    assert ran.json()["adds"] == len(set(third) - set(second))
    assert ran.json()["removes"] == len(set(second) - set(third))
    assert reader.run("sync", name).exit_code == 0
    assert reader.assert_holds_signed(name, 3) == third


def test_removes_the_set_does_not_hold_are_named(
    hub: RealHub, tmp_path: Path, rng: random.Random
) -> None:
    owner, publisher, _, name = _set(hub, tmp_path)
    held = sorted({random_line(rng, "sha256") for _ in range(60)})
    source = tmp_path / "v1.txt"
    source.write_bytes(wire(held))
    assert publisher.run("publish", name, "--key", owner.keys[0], "--from", source).exit_code == 0
    absent = sorted(random_line(rng, "md5", label=None) for _ in range(7))
    removes = tmp_path / "removes.txt"
    removes.write_bytes(wire(held[::10] + absent))
    ran = publisher.run("publish", name, "--key", owner.keys[0], "--remove", removes)
    assert ran.exit_code == 2
    shown = ", ".join(line.decode() for line in absent[:5])
    assert f"--remove lists 7 hash(es) {name} does not hold: {shown}" in ran.stderr
    assert publisher.held(name)[0] == 1
