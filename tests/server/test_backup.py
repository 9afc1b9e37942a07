"""Backup and restore of a real hub, and the consumers that sync across the restore.

On SQLite, ``hashex-server backup`` runs three times while another process
keeps publishing to the hub.  Each copy is one self-contained file that
passes ``PRAGMA integrity_check`` and ``hashex-server audit verify``, and
every version in it is whole: the entries it holds hash to the delta and
content digests its signed manifest commits to, the manifests chain, the
version has its publish audit row, and no entry belongs to a version the copy
does not have.  The newest copy is restored as docs/DEPLOY.md says (copied
into a fresh directory, ``init``, ``serve``).  A consumer that synced before
the backup syncs from the restored hub without a break; the owner publishes
the next version there and the consumer syncs it, verified; the restored
audit chain extends the one the copy held.  A consumer that synced a
version published after the backup is told it is a rollback (exit 3) and
keeps what it verified; so is the owner's home that published it, and the
owner publishes that set forward from a fresh home, as DEPLOY.md says.  On
PostgreSQL the same story runs with ``pg_dump -Fc`` taken while publishing,
and ``pg_restore`` into a fresh database.

The hostile tests: ``backup`` refuses a PostgreSQL hub, a missing directory,
an existing file, the database itself and databases that are no hub, each
with exit 2, a message saying why, and nothing written; a copy that fails
its checks exits 1 and leaves no file behind.

Every hash is synthetic (``tests.synthetic``).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, or_, select, text
from sqlalchemy.engine import make_url

from client.protocol.documents import Manifest
from server.cli import main
from server.models import Agency, AuditEvent, Entry, HashSet, SetVersion
from server.services.pulls import Download, iter_chunks
from tests.client.realhub import RealAgency, register
from tests.client.simhub import COMMAND_SECONDS, Consumer, Ran, hashex, hashex_process
from tests.conftest import sqlite_url
from tests.environment import BIN, process_env, runner_env
from tests.hubserver import HubServer, StartHub
from tests.server.dbstate import engine_for, session_factory
from tests.synthetic import random_line

LIST = "owner/list"  # the set the consumer follows across the restore
BUSY = "owner/busy"  # the set published to while backups are taken
ENTRIES = 200
CHANGED = 20
BACKUPS = 3
# The publishing process publishes at least this many versions, and at most
# MAX_BUSY_VERSIONS, stopping once the backups are done.
MIN_BUSY_VERSIONS = 3
MAX_BUSY_VERSIONS = 40
SIDE_FILES = ("-journal", "-wal", "-shm")


def server_command(database_url: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``hashex-server`` on ``database_url`` as a child process."""
    return subprocess.run(
        [str(BIN / "hashex-server"), *map(str, args)],
        env=process_env(HASHEX_DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=COMMAND_SECONDS,
        check=False,
    )


def server_ok(database_url: str, *args: str | Path) -> str:
    """``hashex-server ARGS``, which must exit 0; its stdout."""
    done = server_command(database_url, *args)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


# -- what a backup or a restored database must hold -------------------------------------


def assert_versions_whole(database_url: str) -> dict[str, int]:
    """Every version of every set is whole and chained; each set's latest version.

    The entries the database holds give, for each version, a delta and a
    content that hash to the digests its signed manifest commits to; the
    manifests chain by digest; each version has its publish audit row and
    each publish audit row its version; no entry belongs to a later version.
    """
    latest: dict[str, int] = {}
    with session_factory(database_url) as factory, factory() as session:
        rows = session.execute(
            select(HashSet, Agency.slug).join(Agency, Agency.id == HashSet.agency_id)
        ).all()
        for hash_set, agency in rows:
            name = f"{agency}/{hash_set.slug}"
            versions = session.scalars(
                select(SetVersion)
                .where(SetVersion.set_id == hash_set.id)
                .order_by(SetVersion.version)
            ).all()
            assert [v.version for v in versions] == list(range(1, hash_set.latest_version + 1))
            beyond = session.scalar(
                select(func.count())
                .select_from(Entry)
                .where(
                    Entry.set_id == hash_set.id,
                    or_(
                        Entry.added_in > hash_set.latest_version,
                        Entry.removed_in > hash_set.latest_version,
                    ),
                )
            )
            assert beyond == 0, name
            parent = None
            for version in versions:
                manifest = Manifest.parse(version.manifest.encode("ascii"))
                assert (manifest.set_name, manifest.version) == (name, version.version)
                assert manifest.parent_digest == parent
                parent = hashlib.sha256(version.manifest.encode("ascii")).hexdigest()
                assert parent == version.manifest_sha256
                content = b"".join(
                    iter_chunks(
                        session,
                        Download(hash_set.id, version.version, "content", version.content_sha256),
                    )
                )
                delta = b"".join(
                    iter_chunks(
                        session,
                        Download(hash_set.id, version.version, "delta", version.delta_sha256),
                    )
                )
                assert hashlib.sha256(content).hexdigest() == manifest.content_digest, name
                assert hashlib.sha256(delta).hexdigest() == manifest.delta_digest, name
                assert content.count(b"\n") == manifest.count
                signs = [line[:1] for line in delta.splitlines()]
                assert (signs.count(b"+"), signs.count(b"-")) == (manifest.adds, manifest.removes)
            published = [
                event.detail_object["version"]
                for event in session.scalars(
                    select(AuditEvent)
                    .where(
                        AuditEvent.action == "set.publish",
                        AuditEvent.outcome == "ok",
                        AuditEvent.target == f"set:{name}",
                    )
                    .order_by(AuditEvent.id)
                )
            ]
            assert published == [v.version for v in versions], name
            latest[name] = hash_set.latest_version
    return latest


def check_sqlite_backup(path: Path, scratch: Path) -> tuple[str, dict[str, int]]:
    """Check a ``hashex-server backup`` file; its audit head and each set's latest version.

    The file stands alone (rollback journal, nothing beside it), only its
    owner may read it, it passes integrity_check, and a scratch copy of it
    passes ``audit verify`` and holds only whole versions.
    """
    assert [suffix for suffix in SIDE_FILES if Path(f"{path}{suffix}").exists()] == []
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as copy:
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    # Opening it as a hub (WAL) changes the file: check a copy of the backup.
    scratch.mkdir()
    shutil.copyfile(path, scratch / "hub.db")
    url = sqlite_url(scratch / "hub.db")
    head = server_ok(url, "audit", "verify").strip()
    return head, assert_versions_whole(url)


# -- the story: publish, sync, back up while publishing, restore, follow --------------------


@dataclass
class BusyPublisher:
    """Another process publishing BUSY over and over, until told to stop."""

    hub_url: str
    owner: RealAgency
    home: Path
    directory: Path
    rng: random.Random
    first: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    runs: list[Ran] = field(default_factory=list)

    def publish_one(self) -> Ran:
        """``hashex publish BUSY --add`` of CHANGED new random hashes, as a child process."""
        adds = write_lines(
            self.directory / f"busy-{len(self.runs) + 1}.txt",
            [random_line(self.rng) for _ in range(CHANGED)],
        )
        env = process_env(
            HASHEX_SERVER=self.hub_url,
            HASHEX_TOKEN=self.owner.tokens["publisher"],
            HASHEX_HOME=str(self.home),
        )
        ran = hashex_process(
            "publish", BUSY, "--key", self.owner.keys[0], "--add", adds, "--json", env=env
        )
        self.runs.append(ran)
        return ran

    def run(self) -> None:
        """Publish until stopped (at least MIN_BUSY_VERSIONS); stop at the first failure."""
        try:
            while len(self.runs) < MAX_BUSY_VERSIONS and (
                len(self.runs) < MIN_BUSY_VERSIONS or not self.stop.is_set()
            ):
                if self.publish_one().exit_code != 0:
                    return
                self.first.set()
        finally:
            self.first.set()


@dataclass
class Story:
    """An owner publishing two sets on a hub, and consumers of another agency."""

    tmp_path: Path
    owner: RealAgency
    reader: RealAgency
    hub: HubServer
    rng: random.Random = field(default_factory=lambda: random.Random(14_000_014))
    content: list[bytes] = field(default_factory=list)

    @classmethod
    def begin(cls, database_url: str, start_hub: StartHub, tmp_path: Path) -> Story:
        """Register the agencies, serve the hub, create and grant both sets."""
        owner = register(database_url, tmp_path, "owner")
        reader = register(database_url, tmp_path, "reader", roles=("reader",))
        story = cls(tmp_path, owner, reader, start_hub(database_url))
        admin = story.owner_at(story.hub.base_url, "agency-admin")
        for name in (LIST, BUSY):
            assert admin.run("set", "create", name).exit_code == 0
            granted = admin.run("set", "grant", name, "reader")
            assert granted.exit_code == 0, granted.stderr
        pinned = hashex(
            "trust", "add", "owner", owner.keyset_file, "--home", tmp_path / "busy-home"
        )
        assert pinned.exit_code == 0, pinned.stderr
        return story

    def owner_at(self, url: str, role: str = "publisher") -> Consumer:
        """The owner's publishing home, on the hub at ``url``."""
        consumer = Consumer(self.tmp_path / "owner-home", url, self.owner.tokens[role])
        if not (consumer.home / "store.sqlite3").exists():
            consumer.pin("owner", self.owner.keyset_file)
        return consumer

    def consumer(self, home: str, url: str) -> Consumer:
        """A consumer of the reader agency with its own home, on the hub at ``url``."""
        consumer = Consumer(self.tmp_path / home, url, self.reader.tokens["reader"])
        if not (consumer.home / "store.sqlite3").exists():
            consumer.pin("owner", self.owner.keyset_file)
        return consumer

    def publish_list(self, url: str, version: int, *, removes: int = 0) -> None:
        """The owner publishes the next version of LIST: CHANGED adds, ``removes`` removes."""
        if version == 1:
            self.content = [random_line(self.rng) for _ in range(ENTRIES)]
        else:
            kept = self.content[removes:]
            self.content = kept + [random_line(self.rng) for _ in range(CHANGED)]
        source = write_lines(self.tmp_path / f"list-{version}.txt", self.content)
        ran = self.owner_at(url).run(
            "publish", LIST, "--key", self.owner.keys[0], "--from", source, "--json"
        )
        assert ran.exit_code == 0, ran.stderr
        assert ran.json()["version"] == version

    def sync(self, consumer: Consumer, name: str) -> Ran:
        """``hashex sync NAME --json``."""
        return consumer.run("sync", name, "--json")

    def assert_holds(self, consumer: Consumer, version: int) -> None:
        """The consumer holds LIST at ``version``, exactly the owner's content, verified."""
        held = consumer.assert_holds_signed(LIST, version)
        assert held == sorted(self.content)

    def before_backup(self) -> Consumer:
        """LIST at version 2, synced by the consumer that will follow the restore."""
        url = self.hub.base_url
        self.publish_list(url, 1)
        self.publish_list(url, 2, removes=10)
        follower = self.consumer("follower-home", url)
        synced = self.sync(follower, LIST)
        assert synced.exit_code == 0, synced.stderr
        assert synced.json()["version"] == 2
        self.assert_holds(follower, 2)
        return follower

    def back_up_while_publishing(self, take: Callable[[int], Path], count: int) -> list[Path]:
        """Take ``count`` backups while another process keeps publishing BUSY."""
        publisher = BusyPublisher(
            self.hub.base_url,
            self.owner,
            self.tmp_path / "busy-home",
            self.tmp_path,
            random.Random(14_000_015),
        )
        thread = threading.Thread(target=publisher.run, name="busy-publisher")
        thread.start()
        backups: list[Path] = []
        try:
            assert publisher.first.wait(COMMAND_SECONDS)
            assert publisher.runs[0].exit_code == 0, publisher.runs[0].stderr
            for number in range(1, count + 1):
                backups.append(take(number))
                # Every backup started and ended while publishes were still coming.
                assert thread.is_alive()
        finally:
            publisher.stop.set()
            thread.join(COMMAND_SECONDS * 2)
        assert not thread.is_alive()
        failed = [ran for ran in publisher.runs if ran.exit_code != 0]
        assert failed == [], failed[0].stderr if failed else ""
        assert len(publisher.runs) >= MIN_BUSY_VERSIONS
        return backups

    def after_backup(self) -> Consumer:
        """One more BUSY version, then a consumer that holds it: newer than any backup."""
        ahead = self.consumer("ahead-home", self.hub.base_url)
        publisher = BusyPublisher(
            self.hub.base_url,
            self.owner,
            self.tmp_path / "busy-home",
            self.tmp_path / "late",
            random.Random(14_000_016),
        )
        publisher.directory.mkdir()
        published = publisher.publish_one()
        assert published.exit_code == 0, published.stderr
        synced = self.sync(ahead, BUSY)
        assert synced.exit_code == 0, synced.stderr
        assert synced.json()["version"] == published.json()["version"]
        return ahead

    def follow_restored(
        self, restored: HubServer, follower: Consumer, ahead: Consumer, busy_in_backup: int
    ) -> None:
        """The consumers on the restored hub: no break for one, a rollback for the other."""
        url = restored.base_url
        follower = Consumer(follower.home, url, follower.token)
        synced = self.sync(follower, LIST)
        assert synced.exit_code == 0, synced.stderr
        assert (synced.json()["version"], synced.json()["applied"]) == (2, [])
        self.assert_holds(follower, 2)

        held = Consumer(ahead.home, url, ahead.token).held(BUSY)
        assert held[0] > busy_in_backup
        refused = self.sync(Consumer(ahead.home, url, ahead.token), BUSY)
        assert refused.exit_code == 3, refused.stdout + refused.stderr
        assert "verified here before" in refused.stdout + refused.stderr
        assert Consumer(ahead.home, url, ahead.token).held(BUSY) == held

        # The owner's home that published after the backup is refused the same
        # way; a fresh home publishes BUSY forward from the restored version.
        extra = write_lines(self.tmp_path / "busy-forward.txt", [random_line(self.rng)])
        token = self.owner.tokens["publisher"]
        stale = Consumer(self.tmp_path / "busy-home", url, token)
        refused = stale.run("publish", BUSY, "--key", self.owner.keys[0], "--add", extra)
        assert refused.exit_code == 3, refused.stderr
        assert "verified here before" in refused.stderr
        fresh = Consumer(self.tmp_path / "fresh-owner-home", url, token)
        fresh.pin("owner", self.owner.keyset_file)
        forward = fresh.run("publish", BUSY, "--key", self.owner.keys[0], "--add", extra, "--json")
        assert forward.exit_code == 0, forward.stderr
        assert forward.json()["version"] == busy_in_backup + 1

        # The owner publishes LIST forward on the restored hub; the follower verifies it.
        self.publish_list(url, 3, removes=5)
        synced = self.sync(follower, LIST)
        assert synced.exit_code == 0, synced.stderr
        assert (synced.json()["version"], synced.json()["applied"]) == (3, [3])
        self.assert_holds(follower, 3)
        assert follower.local("verify").exit_code == 0


# -- SQLite: hashex-server backup ----------------------------------------------------------


def test_a_sqlite_backup_taken_while_publishing_restores_a_hub_consumers_follow(
    sqlite_database_url: str, start_hub: StartHub, tmp_path: Path
) -> None:
    story = Story.begin(sqlite_database_url, start_hub, tmp_path)
    follower = story.before_backup()
    directory = tmp_path / "backups"
    directory.mkdir()

    def take(number: int) -> Path:
        path = directory / f"hub-{number}.db"
        line = server_ok(sqlite_database_url, "backup", path)
        assert line.startswith(f"backup {path}: 2 sets, "), line
        assert line.count("\n") == 1
        assert f"{path.stat().st_size} bytes" in line
        return path

    backups = story.back_up_while_publishing(take, BACKUPS)
    checked = [
        check_sqlite_backup(path, tmp_path / f"check-{number}")
        for number, path in enumerate(backups)
    ]
    # Later copies hold at least what earlier ones did; all hold LIST as synced.
    busy_versions = [latest[BUSY] for _, latest in checked]
    assert busy_versions == sorted(busy_versions)
    assert busy_versions[0] >= 1
    assert {latest[LIST] for _, latest in checked} == {2}
    head, latest = checked[-1]
    ahead = story.after_backup()

    # Restore as DEPLOY.md says: the file into a fresh directory, init, serve.
    restored_file = tmp_path / "restored" / "hub.db"
    restored_file.parent.mkdir()
    shutil.copyfile(backups[-1], restored_file)
    restored_url = sqlite_url(restored_file)
    assert "already at revision" in server_ok(restored_url, "init")
    restored = start_hub(restored_url)
    story.follow_restored(restored, follower, ahead, latest[BUSY])

    # The restored hub's audit chain extends the one the backup held.
    server_ok(restored_url, "audit", "verify", "--head", head)
    assert assert_versions_whole(restored_url) == {LIST: 3, BUSY: latest[BUSY] + 1}
    assert restored.stop() == 0, restored.log.read_text()


# -- PostgreSQL: pg_dump -Fc and pg_restore ------------------------------------------------


def libpq_url(database_url: str) -> str:
    """The database URL as pg_dump and pg_restore take it (no SQLAlchemy driver name)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_tool(name: str, database_url: str, require_tool: Callable[[str], str]) -> str:
    """``name`` of the server's major version if installed beside it, else the one on PATH.

    pg_dump refuses a server newer than itself; Debian keeps each version in
    /usr/lib/postgresql/N/bin.  A tool found nowhere fails under CI=true.
    """
    with engine_for(database_url) as engine, engine.connect() as connection:
        number = int(connection.execute(text("SHOW server_version_num")).scalar_one())
    beside = Path(f"/usr/lib/postgresql/{number // 10000}/bin/{name}")
    return str(beside) if beside.is_file() else require_tool(name)


def run_tool(command: list[str]) -> None:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False
    )
    assert done.returncode == 0, f"{command[0]}: exit {done.returncode}\n{done.stderr}"


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("database_url", "empty_database_url"), [("postgresql", "postgresql")], indirect=True
)
def test_a_pg_dump_taken_while_publishing_restores_a_hub_consumers_follow(
    database_url: str,
    empty_database_url: str,
    start_hub: StartHub,
    tmp_path: Path,
    require_tool: Callable[[str], str],
) -> None:
    pg_dump = pg_tool("pg_dump", database_url, require_tool)
    pg_restore = pg_tool("pg_restore", database_url, require_tool)
    story = Story.begin(database_url, start_hub, tmp_path)
    follower = story.before_backup()

    def take(number: int) -> Path:
        path = tmp_path / f"hub-{number}.dump"
        run_tool([pg_dump, "-Fc", f"--dbname={libpq_url(database_url)}", f"--file={path}"])
        return path

    (dump,) = story.back_up_while_publishing(take, 1)
    ahead = story.after_backup()

    # Restore as DEPLOY.md says: into a fresh database, init, serve.
    restored_url = empty_database_url
    run_tool(
        [
            pg_restore,
            "--exit-on-error",
            "--single-transaction",
            "--no-owner",
            f"--dbname={libpq_url(restored_url)}",
            str(dump),
        ]
    )
    assert "already at revision" in server_ok(restored_url, "init")
    head = server_ok(restored_url, "audit", "verify").strip()
    latest = assert_versions_whole(restored_url)
    assert latest[LIST] == 2
    assert latest[BUSY] >= 1
    restored = start_hub(restored_url)
    story.follow_restored(restored, follower, ahead, latest[BUSY])
    server_ok(restored_url, "audit", "verify", "--head", head)
    assert assert_versions_whole(restored_url) == {LIST: 3, BUSY: latest[BUSY] + 1}
    assert restored.stop() == 0, restored.log.read_text()


# -- what backup refuses, and what a failed one leaves -------------------------------------


def backup(database_url: str, *args: str | Path) -> tuple[int, str]:
    """``hashex-server backup ARGS`` in this process: its exit code and all it said."""
    result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=database_url)).invoke(
        main, ["backup", *map(str, args)]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result
    return result.exit_code, result.output


def leftovers(directory: Path) -> list[str]:
    """Temporary files a backup left in ``directory``."""
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".tmp"))


@pytest.fixture
def target_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty directory for backups; nothing temporary must remain in it."""
    directory = tmp_path / "backups"
    directory.mkdir()
    yield directory
    assert leftovers(directory) == []


def test_backup_refuses_a_postgresql_hub(target_dir: Path) -> None:
    # Port 1: nothing listens there; the refusal must not need the database.
    code, said = backup("postgresql://hashex@127.0.0.1:1/hub", target_dir / "hub.db")
    assert code == 2, said
    assert "not SQLite" in said
    assert "pg_dump -Fc" in said
    assert "docs/DEPLOY.md" in said
    assert list(target_dir.iterdir()) == []


def test_backup_refuses_a_file_in_a_missing_directory(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    code, said = backup(sqlite_database_url, tmp_path / "nowhere" / "hub.db")
    assert code == 2, said
    assert f"the directory {tmp_path / 'nowhere'} does not exist" in said
    assert not (tmp_path / "nowhere").exists()


def test_backup_refuses_an_existing_file_unless_forced(
    sqlite_database_url: str, target_dir: Path
) -> None:
    existing = target_dir / "hub.db"
    existing.write_bytes(b"last week's backup")
    code, said = backup(sqlite_database_url, existing)
    assert code == 2, said
    assert f"{existing} exists: give --force to replace it" in said
    assert existing.read_bytes() == b"last week's backup"

    code, said = backup(sqlite_database_url, existing, "--force")
    assert code == 0, said
    assert said.startswith(f"backup {existing}: 0 sets, 0 versions, 0 entries, ")
    with closing(sqlite3.connect(existing)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    # The hub's own file is only read: nothing is left beside it.
    hub_file = Path(make_url(sqlite_database_url).database or "")
    assert [s for s in SIDE_FILES if Path(f"{hub_file}{s}").exists()] == []


def test_backup_refuses_the_database_itself(sqlite_database_url: str) -> None:
    hub_file = Path(make_url(sqlite_database_url).database or "")
    before = hub_file.read_bytes()
    for target in (hub_file, Path(f"{hub_file}-wal")):
        code, said = backup(sqlite_database_url, target, "--force")
        assert code == 2, said
        assert "is the hub's database itself" in said
    assert hub_file.read_bytes() == before


def _not_sqlite(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(8192))


def _other_sqlite(path: Path) -> None:
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.commit()


def _unknown_revision(path: Path) -> None:
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
        connection.commit()


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        pytest.param(None, "no database at", id="missing"),
        pytest.param(_not_sqlite, "is not a Hashex hub: it is not a SQLite database", id="noise"),
        pytest.param(_other_sqlite, "is not a Hashex hub: it has no schema revision", id="other"),
        pytest.param(_unknown_revision, "which this version of Hashex does not know", id="newer"),
    ],
)
def test_backup_refuses_a_database_that_is_no_hub(
    spoil: Callable[[Path], None] | None,
    why: str,
    sqlite_database_url: str,
    target_dir: Path,
) -> None:
    hub_file = Path(make_url(sqlite_database_url).database or "")
    if spoil is None:
        hub_file.unlink()
    else:
        if spoil is not _unknown_revision:
            hub_file.unlink()
        spoil(hub_file)
    code, said = backup(sqlite_database_url, target_dir / "hub.db")
    assert code == 2, said
    assert why in said
    assert list(target_dir.iterdir()) == []
    # A missing database is not created by looking for it.
    assert hub_file.exists() == (spoil is not None)


def test_a_backup_whose_copy_fails_its_checks_leaves_no_file(
    sqlite_database_url: str, target_dir: Path
) -> None:
    # Damage the hub: an index forgotten by the schema leaves its pages unused.
    hub_file = Path(make_url(sqlite_database_url).database or "")
    with closing(sqlite3.connect(hub_file, isolation_level=None)) as connection:
        connection.execute("PRAGMA writable_schema = ON")
        connection.execute(
            "DELETE FROM sqlite_schema WHERE type = 'index' AND name = 'ix_entries_set_added_line'"
        )
        connection.execute("PRAGMA writable_schema = OFF")
    target = target_dir / "hub.db"
    code, said = backup(sqlite_database_url, target)
    assert code == 1, said
    assert "fails PRAGMA integrity_check" in said
    assert f"{target} was not written" in said
    assert list(target_dir.iterdir()) == []

    # Over an existing backup with --force: the old file stays as it was.
    target.write_bytes(b"yesterday's backup")
    code, said = backup(sqlite_database_url, target, "--force")
    assert code == 1, said
    assert target.read_bytes() == b"yesterday's backup"
    assert [p.name for p in target_dir.iterdir()] == ["hub.db"]


def test_the_backup_file_is_readable_by_its_owner_only(
    sqlite_database_url: str, target_dir: Path
) -> None:
    # The copy holds the hub's log signing key and every token's hash.
    old_umask = os.umask(0o022)
    try:
        code, said = backup(sqlite_database_url, target_dir / "hub.db")
    finally:
        os.umask(old_umask)
    assert code == 0, said
    assert stat.S_IMODE((target_dir / "hub.db").stat().st_mode) == 0o600
