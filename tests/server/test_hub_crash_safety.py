"""SIGKILL of the whole hub (master and workers) in the middle of a large publish.

A real ``hashex publish`` of a set of :data:`ENTRIES` entries runs against a
real hub, which is killed outright at five points spread over the time an
undisturbed publish of the same size takes.  After every kill, on SQLite
and on PostgreSQL: the set holds no version or the whole version, no entry
row exists that no committed version accounts for, the audit chain
verifies, and the hub's temporary directory is empty.  Then the client's
retry of the same publish succeeds.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from sqlalchemy import func, select

from server.models import Entry, HashSet, SetVersion
from server.services import audit
from tests.client.realhub import RealAgency, register
from tests.client.simhub import COMMAND_SECONDS, hashex_process
from tests.environment import BIN, process_env
from tests.hubserver import HubServer, StartHub
from tests.server.dbstate import session_factory
from tests.synthetic import random_lines

ENTRIES = 150_000
KILL_POINTS = (0.15, 0.35, 0.55, 0.75, 0.95)
NAME = "crash/known"


def _publish_command(agency: RealAgency, content: Path, name: str) -> list[str]:
    return [
        str(BIN / "hashex"),
        "publish",
        name,
        "--key",
        str(agency.keys[0]),
        "--from",
        str(content),
    ]


def _env(server: HubServer, agency: RealAgency, home: Path) -> dict[str, str]:
    return process_env(
        HASHEX_SERVER=server.base_url,
        HASHEX_TOKEN=agency.tokens["publisher"],
        HASHEX_HOME=str(home),
    )


def _kill_hub(server: HubServer) -> None:
    """SIGKILL the master and every worker at once, as a power cut would."""
    for pid in [server.process.pid, *server.workers()]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.process.wait(timeout=COMMAND_SECONDS)


def _check_no_partial_state(database_url: str) -> int:
    """Assert the set is at a whole version with exactly its rows; the version."""
    with session_factory(database_url) as factory, factory() as session:
        hash_set = session.scalars(select(HashSet).where(HashSet.slug == "known")).one()
        versions = session.scalars(select(SetVersion).where(SetVersion.set_id == hash_set.id)).all()
        rows = session.scalar(
            select(func.count()).select_from(Entry).where(Entry.set_id == hash_set.id)
        )
        orphans = session.scalar(
            select(func.count())
            .select_from(Entry)
            .where(Entry.set_id == hash_set.id, Entry.added_in > hash_set.latest_version)
        )
        assert [v.version for v in versions] == list(range(1, hash_set.latest_version + 1))
        assert orphans == 0
        assert rows == (ENTRIES if versions else 0)
        if versions:
            assert versions[-1].count == ENTRIES
        audit.verify_chain(session)
        return hash_set.latest_version


def _undisturbed_seconds(
    start_hub: StartHub, database_url: str, agency: RealAgency, content: Path, home: Path
) -> float:
    """How long an undisturbed publish of the same size takes here (on another set)."""
    server = start_hub(database_url)
    env = _env(server, agency, home)
    admin_env = env | {"HASHEX_TOKEN": agency.tokens["agency-admin"]}
    assert hashex_process("set", "create", "crash/calibrate", env=admin_env).exit_code == 0
    assert hashex_process("set", "create", NAME, env=admin_env).exit_code == 0
    started = time.monotonic()
    done = subprocess.run(
        _publish_command(agency, content, "crash/calibrate"),
        env=env,
        capture_output=True,
        timeout=COMMAND_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seconds = time.monotonic() - started
    server.stop()
    return seconds


def test_a_hub_killed_mid_publish_keeps_no_partial_version(
    database_url: str, start_hub: StartHub, tmp_path: Path
) -> None:
    agency = register(database_url, tmp_path, "crash")
    home = tmp_path / "publisher"
    assert (
        hashex_process(
            "trust", "add", "crash", agency.keyset_file, env=process_env(HASHEX_HOME=str(home))
        ).exit_code
        == 0
    )
    content = tmp_path / "content.txt"
    content.write_bytes(b"\n".join(random_lines(random.Random(12), ENTRIES, "sha256")) + b"\n")
    duration = _undisturbed_seconds(start_hub, database_url, agency, content, home)
    hub_tmp = tmp_path / "hub-tmp"
    hub_tmp.mkdir()
    for point in KILL_POINTS:
        server = start_hub(database_url, env={"TMPDIR": str(hub_tmp)})
        publishing = subprocess.Popen(
            _publish_command(agency, content, NAME),
            env=_env(server, agency, home),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(duration * point)
        _kill_hub(server)
        _, stderr = publishing.communicate(timeout=COMMAND_SECONDS)
        # Killed before it answered (4, hub unreachable), or it had answered (0).
        assert publishing.returncode in (0, 4), stderr
        _check_no_partial_state(database_url)
        # No spool is left behind.  The killed master's metrics directory is
        # (nothing runs to remove it), and the next start removes it: one at most.
        left = list(hub_tmp.iterdir())
        assert [p for p in left if not p.name.startswith("hashex-metrics-")] == []
        assert len(left) <= 1, left
    server = start_hub(database_url)
    retry = hashex_process(
        "publish",
        NAME,
        "--key",
        agency.keys[0],
        "--from",
        content,
        "--json",
        env=_env(server, agency, home),
    )
    assert retry.exit_code == 0, retry.stderr
    assert _check_no_partial_state(database_url) == 1
    status = hashex_process("status", "--json", env=_env(server, agency, home))
    held = {item["set"]: item for item in status.json_lines()}
    assert held[NAME]["version"] == 1
