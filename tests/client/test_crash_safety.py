"""Crash safety: a real ``hashex sync`` killed with SIGKILL in the middle of a large version.

A real ``hashex-server serve`` on 127.0.0.1 (SQLite) holds a set whose
version 1 has 2,500 entries and whose version 2 removes 500 of them and adds
35,000.  The store applies a version in batches of 10,000 lines inside
one transaction, and with ``HASHEX_TEST_BATCH_HOOK`` it touches
``batch-<n>`` after each batch (before the commit) and, at
``HASHEX_TEST_PAUSE_AT``, waits there.  The test waits for that file -- no
guessing with sleeps -- and kills the process at exactly that moment: after
the first, a middle and the last batch of

* a bootstrap (the content of version 2: 37,000 entries, four batches), and
* a delta (version 1 to 2: one batch of removes, then four of adds).

Each time the store must open exactly at the last good version (the same
version, manifest and entries, the same database dump), and the next sync,
without the hook, must complete and hold exactly the signed content.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.protocol.blocks import BLOCK_LINES as BATCH
from tests.client.realhub import RealHub, register
from tests.client.simhub import Consumer, set_rows, snapshot
from tests.environment import BIN, process_env
from tests.hubserver import serving
from tests.synthetic import random_lines, wire

NAME = "crash/big"
KEPT, REMOVED, ADDED = 2_000, 500, 35_000
WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class BigSet:
    """The hub, the set's two versions, and a consumer store already at version 1."""

    hub: RealHub
    token: str
    keyset_file: Path
    v1: list[bytes]
    v2: list[bytes]
    at_v1: Path


@pytest.fixture(scope="module")
def big(
    tmp_path_factory: pytest.TempPathFactory, shared_sqlite_database_url: str
) -> Iterator[BigSet]:
    directory = tmp_path_factory.mktemp("crash-hub")
    rng = random.Random(9_090_909)
    with serving(shared_sqlite_database_url, directory / "serve.log", workers=1) as server:
        hub = RealHub(shared_sqlite_database_url, server)
        owner = register(shared_sqlite_database_url, directory, "crash")
        reader = register(shared_sqlite_database_url, directory, "victim", roles=("reader",))
        admin = Consumer(directory / "owner", hub.url, owner.tokens["agency-admin"])
        admin.pin("crash", owner.keyset_file)
        assert admin.run("set", "create", NAME).exit_code == 0
        assert admin.run("set", "grant", NAME, "victim").exit_code == 0
        v1 = random_lines(rng, KEPT + REMOVED)
        (directory / "v1.txt").write_bytes(wire(v1))
        published = admin.run(
            "publish", NAME, "--key", owner.keys[0], "--from", directory / "v1.txt"
        )
        assert published.exit_code == 0, published.stderr
        at_v1 = Consumer(directory / "at-v1", hub.url, reader.tokens["reader"])
        at_v1.pin("crash", owner.keyset_file)
        assert at_v1.run("sync", NAME).exit_code == 0
        assert at_v1.assert_holds_signed(NAME, 1) == v1
        removed = rng.sample(v1, REMOVED)
        added = random_lines(rng, ADDED)
        (directory / "add.txt").write_bytes(wire(added))
        (directory / "remove.txt").write_bytes(wire(removed))
        published = admin.run(
            "publish",
            NAME,
            "--key",
            owner.keys[0],
            "--add",
            directory / "add.txt",
            "--remove",
            directory / "remove.txt",
        )
        assert published.exit_code == 0, published.stderr
        gone = set(removed)
        v2 = sorted([*(x for x in v1 if x not in gone), *added])
        assert admin.assert_holds_signed(NAME, 2) == v2
        yield BigSet(hub, reader.tokens["reader"], owner.keyset_file, v1, v2, at_v1.home)


def killed_at(big: BigSet, home: Path, batch: int, hooks: Path) -> None:
    """Run ``hashex sync`` until it has applied ``batch`` (uncommitted), then SIGKILL it."""
    hooks.mkdir()
    env = process_env(HASHEX_TEST_BATCH_HOOK=str(hooks), HASHEX_TEST_PAUSE_AT=str(batch))
    command = [str(BIN / "hashex"), "sync", NAME, "--server", big.hub.url]
    command += ["--token", big.token, "--home", str(home)]
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        marker = hooks / f"batch-{batch}"
        deadline = time.monotonic() + WAIT_SECONDS
        while not marker.exists():
            if process.poll() is not None:
                _, stderr = process.communicate()
                pytest.fail(
                    f"hashex sync ended ({process.returncode}) before batch {batch}: {stderr}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no batch {batch} after {WAIT_SECONDS} s")
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=WAIT_SECONDS) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    # It stopped exactly there: no later batch was ever applied.
    assert sorted(p.name for p in hooks.iterdir()) == [f"batch-{n}" for n in range(1, batch + 1)]


def resumed(big: BigSet, home: Path) -> None:
    """The next sync, without the hook, completes and holds exactly version 2."""
    consumer = Consumer(home, big.hub.url, big.token)
    synced = consumer.run("sync", NAME, "--json")
    assert synced.exit_code == 0, synced.stderr
    assert synced.json()["applied"] == [2]
    assert consumer.assert_holds_signed(NAME, 2) == big.v2
    verified = consumer.local("verify", "--json")
    assert (verified.exit_code, verified.json()["ok"]) == (0, True)


def test_the_versions_take_the_batches_the_tests_expect() -> None:
    content = KEPT + ADDED
    assert -(-content // BATCH) == 4
    assert (-(-REMOVED // BATCH), -(-ADDED // BATCH)) == (1, 4)


@pytest.mark.parametrize("batch", [1, 2, 4], ids=["first", "middle", "last"])
def test_killed_while_bootstrapping(big: BigSet, tmp_path: Path, batch: int) -> None:
    home = tmp_path / "home"
    consumer = Consumer(home, big.hub.url, big.token)
    consumer.pin("crash", big.keyset_file)
    before = snapshot(home, [NAME], ["crash"])
    killed_at(big, home, batch, tmp_path / "hooks")
    assert snapshot(home, [NAME], ["crash"]) == before
    assert consumer.held(NAME) == (0, None, [])
    assert set_rows(home) == []
    resumed(big, home)


@pytest.mark.parametrize("batch", [1, 3, 5], ids=["first", "middle", "last"])
def test_killed_while_applying_a_delta(big: BigSet, tmp_path: Path, batch: int) -> None:
    # Batch 1 holds the 500 removes; batches 2 to 5 the 35,000 adds.
    home = tmp_path / "home"
    shutil.copytree(big.at_v1, home)
    before = snapshot(home, [NAME], ["crash"])
    assert before.sets[NAME][0] == 1
    killed_at(big, home, batch, tmp_path / "hooks")
    assert snapshot(home, [NAME], ["crash"]) == before
    consumer = Consumer(home, big.hub.url, big.token)
    assert consumer.assert_holds_signed(NAME, 1) == big.v1
    resumed(big, home)
