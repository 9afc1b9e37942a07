"""``hashex sync --every DURATION``: unattended syncing.

The loop runs as a child process (the installed ``hashex`` script), each run
bounded in time, and its stderr log -- one ``<time> sync exit <code>`` line
per sync -- is read as it grows:

* against a hub that is down (a free port of 127.0.0.1) it keeps running
  and logs ``sync exit 4`` once per interval, not in a hot loop, until it is
  killed;
* against a simulated hub on 127.0.0.1 whose first manifest is forged, it
  stops on the first sync with exit 3;
* against an honest simulated hub it syncs every interval, picks up a
  version published in between, and stops with exit 3 once the hub serves a
  forged one, keeping the last good version;
* a bad ``--every`` is exit 2 before anything is synced.

``next_wait`` (jitter within a tenth either way, a backoff that grows with
failures and never passes the interval) and ``parse_duration`` are tested
as functions.
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.commands import hub as hub_commands
from client.commands.hub import next_wait, parse_duration
from client.protocol.errors import InputError
from client.protocol.keys import generate_private_key
from client.store import Store
from tests.client.simhub import (
    TOKEN,
    Consumer,
    SimHub,
    SimSet,
    hashex,
    json_response,
    serve_on_socket,
)
from tests.environment import BIN, process_env, runner_env
from tests.hubserver import free_port
from tests.synthetic import random_lines

NAME = "owner/list"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ sync exit (\d): \S.*$")
# Every wait below is bounded; a loop that misbehaves fails within these.
RUN_SECONDS = 3.0
WAIT_SECONDS = 15.0


@dataclass
class Loop:
    """A running ``hashex sync --every``: its process and its stderr log."""

    process: subprocess.Popen[bytes]
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def codes(self) -> list[int]:
        """The exit code of each sync logged so far."""
        found = (LOG_LINE.match(line) for line in self.stderr().splitlines())
        return [int(m[1]) for m in found if m is not None]

    def wait_for(self, count: int, code: int) -> None:
        """Wait until ``count`` syncs logged ``code``; fail if the loop exits or stalls."""
        deadline = time.monotonic() + WAIT_SECONDS
        while self.codes().count(code) < count:
            assert self.process.poll() is None, (
                f"exited {self.process.returncode}:\n{self.stderr()}"
            )
            assert time.monotonic() < deadline, f"no {count} x 'sync exit {code}':\n{self.stderr()}"
            time.sleep(0.02)


@contextmanager
def sync_every(tmp_path: Path, *args: str, env: dict[str, str]) -> Iterator[Loop]:
    """Run ``hashex sync --every ...`` until the block ends; it is killed if still running."""
    log = tmp_path / "sync-every.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [str(BIN / "hashex"), "sync", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield Loop(process, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT_SECONDS)


def env_for(home: Path, server: str, token: str = TOKEN) -> dict[str, str]:
    # The loop's tests run at 1 s intervals; users get at least 30 s.
    return process_env(
        HASHEX_HOME=str(home),
        HASHEX_SERVER=server,
        HASHEX_TOKEN=token,
        HASHEX_TEST_MIN_INTERVAL="1",
    )


def test_a_hub_that_is_down_is_retried_until_killed(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    env = env_for(tmp_path / "home", down)
    with sync_every(tmp_path, "--every", "1s", env=env) as loop:
        started = time.monotonic()
        loop.wait_for(1, 4)
        first = time.monotonic()
        loop.wait_for(2, 4)
        second = time.monotonic()
        while time.monotonic() - started < RUN_SECONDS:
            assert loop.process.poll() is None, f"exited by itself:\n{loop.stderr()}"
            time.sleep(0.05)
        assert loop.process.poll() is None, f"exited by itself:\n{loop.stderr()}"
    codes = loop.codes()
    assert len(codes) >= 2
    assert set(codes) == {4}
    # A second of interval, jittered by a tenth at most: never a hot loop.
    assert second - first >= 0.5
    assert len(codes) <= RUN_SECONDS / 0.9 + 1
    assert "cannot reach the hub" in loop.stderr()


@pytest.fixture
def simhub() -> SimHub:
    hub = SimHub()
    hub.add_agency("owner")
    hub.add_set(NAME)
    return hub


def pinned_home(tmp_path: Path, hub: SimHub) -> Path:
    home = tmp_path / "home"
    keyset_file = hub.agencies["owner"].keyset_file(tmp_path / "owner.keyset.json")
    Consumer(home, "https://unused.invalid", TOKEN).pin("owner", keyset_file)
    return home


def held_version(home: Path) -> int:
    store = Store.open(home)
    try:
        return store.set_state(NAME).version
    finally:
        store.close()


def test_a_forged_manifest_stops_the_loop_with_exit_3_on_the_first_sync(
    tmp_path: Path, simhub: SimHub
) -> None:
    rng = random.Random(6_060_004)
    simset = simhub.sets[NAME]
    honest = simset.publish(random_lines(rng, 20))
    simset.versions[0] = honest.resigned([generate_private_key()])
    home = pinned_home(tmp_path, simhub)
    with serve_on_socket(simhub) as socket_hub:
        env = env_for(home, socket_hub.base_url)
        with sync_every(tmp_path, "--every", "1s", env=env) as loop:
            code = loop.process.wait(timeout=WAIT_SECONDS)
    assert code == 3, loop.stderr()
    assert loop.codes() == [3]
    assert "verification failed" in loop.stderr()
    assert held_version(home) == 0


def test_each_interval_syncs_new_versions_until_a_forgery(tmp_path: Path, simhub: SimHub) -> None:
    rng = random.Random(6_060_005)
    simset: SimSet = simhub.sets[NAME]
    simset.publish(random_lines(rng, 20))
    home = pinned_home(tmp_path, simhub)
    with serve_on_socket(simhub) as socket_hub:
        env = env_for(home, socket_hub.base_url)
        with sync_every(tmp_path, "--every", "1s", env=env) as loop:
            loop.wait_for(1, 0)
            assert held_version(home) == 1
            simset.change(adds=random_lines(rng, 5), removes=simset.lines[:3])
            loop.wait_for(2, 0)
            assert held_version(home) == 2
            forged = simset.build(random_lines(rng, 10), keys=[generate_private_key()])
            simset.versions.append(forged)
            code = loop.process.wait(timeout=WAIT_SECONDS)
    assert code == 3, loop.stderr()
    assert loop.codes()[-1] == 3
    assert set(loop.codes()[:-1]) == {0}
    assert held_version(home) == 2
    # One line per sync and nothing else; it says what changed.
    lines = loop.stderr().splitlines()
    assert all(LOG_LINE.match(line) for line in lines), lines
    assert any(f"{NAME}: version 2 (applied 2), fresh" in line for line in lines), lines


def test_a_nonsense_listing_stops_the_loop_and_is_logged(tmp_path: Path, simhub: SimHub) -> None:
    # The list of sets without its "sets": a response that contradicts the
    # request, so exit 3; like every other sync, it gets its log line.
    simhub.routes["/v1/sets"] = lambda request: json_response({"nope": []})
    home = pinned_home(tmp_path, simhub)
    with serve_on_socket(simhub) as socket_hub:
        env = env_for(home, socket_hub.base_url)
        with sync_every(tmp_path, "--every", "1s", env=env) as loop:
            code = loop.process.wait(timeout=WAIT_SECONDS)
    assert code == 3, loop.stderr()
    assert loop.codes() == [3], loop.stderr()


@pytest.mark.parametrize(
    ("every", "says"),
    [
        ("5", "a number with a unit: 30s, 5m, 5min, 1h (seconds? minutes?)"),
        ("0s", "the shortest interval is 30 seconds"),
        ("10s", "the shortest interval is 30 seconds"),
        ("abc", "a number with a unit"),
        ("1.5m", "a number with a unit"),
        ("5d", "a number with a unit"),
        ("-5s", "a number with a unit"),
        ("s", "a number with a unit"),
        ("", "a number with a unit"),
    ],
)
def test_a_bad_interval_is_exit_2_before_any_sync(tmp_path: Path, every: str, says: str) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    ran = hashex(
        "sync",
        "--every",
        every,
        env=runner_env(HASHEX_HOME=str(tmp_path / "home"), HASHEX_SERVER=down, HASHEX_TOKEN=TOKEN),
    )
    assert ran.exit_code == 2, ran.stderr
    assert f"--every {every!r}: " in ran.stderr
    assert says in ran.stderr
    assert "sync exit" not in ran.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("5min", 300.0),
        ("5 minutes", 300.0),
        ("1h", 3600.0),
        ("2hours", 7200.0),
        ("90sec", 90.0),
        (" 2M ", 120.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["45", "29s", "0m", "abc", "1.5m", "5d", "-1s", "m", "1h30m", "5mins2", "10 ms"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(InputError, match="--every"):
        parse_duration(text)


@pytest.fixture
def jitter(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Fix the jitter factor ``random.uniform`` gives ``next_wait`` (checking its bounds)."""

    def fix(factor: float) -> None:
        def uniform(low: float, high: float) -> float:
            assert (low, high) == (0.9, 1.1)
            return factor

        monkeypatch.setattr(hub_commands.random, "uniform", uniform)

    return fix


@pytest.mark.parametrize("interval", [1.0, 30.0, 300.0, 3600.0])
def test_next_wait_jitters_within_a_tenth(interval: float) -> None:
    rng = random.Random(6_060_006)
    state = random.getstate()
    random.seed(rng.random())
    try:
        waits = [next_wait(interval, 0) for _ in range(2000)]
    finally:
        random.setstate(state)
    assert all(0.9 * interval <= w <= 1.1 * interval for w in waits)
    # Spread over the whole band, so tools started together drift apart.
    assert min(waits) < 0.92 * interval
    assert max(waits) > 1.08 * interval
    assert len(set(waits)) > 1900


def test_next_wait_backoff_grows_and_never_passes_the_interval(
    jitter: Callable[[float], None],
) -> None:
    jitter(1.0)
    for interval in (1.0, 10.0, 60.0, 300.0, 3600.0, 86400.0):
        waits = [next_wait(interval, failures) for failures in range(0, 40)]
        assert waits[0] == interval
        backoff = waits[1:]
        assert all(0 < w <= interval for w in backoff)
        assert backoff == sorted(backoff), f"{interval}: {backoff}"
        # It levels off (no overflow after a long outage), at most at the interval.
        assert next_wait(interval, 10_000) == backoff[-1]
    # After an outage begins, a long interval is retried sooner, then less and less often.
    hourly = [next_wait(3600.0, failures) for failures in range(1, 12)]
    assert hourly[0] < 3600.0
    assert len(set(hourly)) > 3


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_next_wait_jitter_bounds(jitter: Callable[[float], None], factor: float) -> None:
    jitter(factor)
    assert next_wait(300.0, 0) == pytest.approx(300.0 * factor)
    assert next_wait(300.0, 50) == pytest.approx(300.0 * factor)
    assert next_wait(300.0, 1) <= 300.0 * factor
