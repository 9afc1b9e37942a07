"""A consistent copy of a SQLite hub's database, taken while the hub serves.

SQLite's online backup API (:meth:`sqlite3.Connection.backup`), asked for
every page in one step, reads them all in one read transaction.  In WAL mode
that transaction never blocks the hub's writers and sees exactly the
transactions committed before it began: a publish, with its entries, its
version row and its audit row, is in the copy whole or not at all.

The hub's file is only read, never created.  The copy goes to a temporary
file beside the target, is switched to a rollback journal (one
self-contained file, nothing beside it), checked (``PRAGMA integrity_check``,
foreign keys, this code's newest Alembic revision), flushed to disk, and only
then moved to the target: by a hard link, which fails if the target appeared
in the meantime, or by a rename when replacing it was asked for.  The target
is therefore never a partial copy: it is absent, the file it was, or a whole
checked copy.  A failure removes the temporary file; only a process killed
outright can leave one behind, named ``.FILE.<random>.tmp``.

PostgreSQL hubs are backed up with ``pg_dump`` (docs/DEPLOY.md); they are
refused here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from server import migrate
from server.config import redact_url
from server.engine import SQLITE_BUSY_TIMEOUT_MS

# Files SQLite keeps beside a database, by suffix.
_SIDE_FILES = ("-journal", "-wal", "-shm")
# link() refused by the file system (FAT, some network shares), not by the target.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK})
# How many problems integrity_check reports at most.
_PROBLEMS_SHOWN = 3


class BackupError(Exception):
    """A backup that was not made; the target was left as it was."""


class BackupRefused(BackupError):
    """Bad input: a database this command does not copy, or a target it does not write."""


class BackupFailed(BackupError):
    """The database could not be read or copied, or the copy failed its checks."""


@dataclass(frozen=True)
class BackupReport:
    """What a backup wrote: where, at which revision, how many rows, how many bytes."""

    path: Path
    revision: str
    sets: int
    versions: int
    entries: int
    audit_rows: int
    size: int


def backup_sqlite(database_url: str, target: Path, *, replace: bool = False) -> BackupReport:
    """Copy the SQLite hub at ``database_url`` to ``target``, consistently, while it serves.

    Refuses (BackupRefused) a PostgreSQL URL, a missing database, one that is
    not a Hashex hub at this code's newest revision, a target whose directory
    does not exist, the database itself, and an existing target unless
    ``replace``.  Raises BackupFailed if the database cannot be read or
    copied, or the copy fails its checks.  Either way the target is left as
    it was and no temporary file remains.
    """
    source = _source_path(database_url)
    target = _check_target(source, Path(target).absolute(), replace=replace)
    head = migrate.head_revision()
    with _reading(source) as connection:
        _check_revision(connection, head, f"the database {source}", BackupRefused)
    temp = _temporary_beside(target)
    try:
        _copy(source, temp)
        report = _check_copy(temp, target, head)
        _flush(temp)
        _move_into_place(temp, target, replace=replace)
    except BaseException:
        _remove(temp)
        raise
    _flush_directory(target.parent)
    return report


def _source_path(database_url: str) -> Path:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise BackupRefused(
            f"the hub's database {redact_url(database_url)} is not SQLite: "
            "hashex-server backup copies SQLite hubs only; back up PostgreSQL with "
            "pg_dump -Fc and restore it with pg_restore, as docs/DEPLOY.md shows"
        )
    if not url.database:
        raise BackupRefused("HASHEX_DATABASE_URL names no SQLite file")
    path = Path(url.database)
    if not path.is_file():
        raise BackupRefused(f"no database at {path}: HASHEX_DATABASE_URL names no SQLite file")
    return path


def _check_target(source: Path, target: Path, *, replace: bool) -> Path:
    if target.is_dir():
        raise BackupRefused(f"{target} is a directory: name the file to write")
    if not target.parent.is_dir():
        raise BackupRefused(f"cannot write {target}: the directory {target.parent} does not exist")
    beside = {Path(f"{source}{suffix}") for suffix in _SIDE_FILES}
    if target == source or target in beside or (target.exists() and target.samefile(source)):
        raise BackupRefused(f"{target} is the hub's database itself: name another file")
    if os.path.lexists(target) and not replace:
        raise BackupRefused(f"{target} exists: give --force to replace it")
    return target


def _connect_existing(path: Path) -> sqlite3.Connection:
    # mode=rw: never create the file if it vanished.  Not mode=ro: a read-only
    # connection that is the file's last one leaves its -wal and -shm behind,
    # owned by whoever ran the backup, where the hub's user may not write.
    return sqlite3.connect(
        f"{path.as_uri()}?mode=rw",
        uri=True,
        timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
    )


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the hub's existing file, to read; SQLite's errors as BackupErrors."""
    try:
        with contextlib.closing(_connect_existing(path)) as connection:
            yield connection
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorname", None) == "SQLITE_NOTADB":
            raise BackupRefused(
                f"the database {path} is not a Hashex hub: it is not a SQLite database"
            ) from None
        raise BackupFailed(f"cannot read the database {path}: {exc}") from None


def _check_revision(
    connection: sqlite3.Connection, head: str | None, what: str, error: type[BackupError]
) -> str:
    """The database's Alembic revision, which must be ``head``; else ``error``."""
    known = connection.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'alembic_version'"
    ).fetchone()
    if known is None:
        raise error(f"{what} is not a Hashex hub: it has no schema revision (alembic_version)")
    revisions = [
        str(row[0]) for row in connection.execute("SELECT version_num FROM alembic_version")
    ]
    if len(revisions) != 1:
        raise error(f"{what} is not a Hashex hub: it has no single schema revision")
    (revision,) = revisions
    if revision == head:
        return revision
    if not migrate.is_known(revision):
        raise error(
            f"{what} is at revision {revision}, which this version of Hashex does not know: "
            "back it up with the newer version that upgraded it"
        )
    raise error(
        f"{what} is at revision {revision}, this version of Hashex serves {head}: back it "
        "up with the version that serves it, or run hashex-server init first"
    )


def _temporary_beside(target: Path) -> Path:
    try:
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise BackupRefused(f"cannot write in {target.parent}: {exc.strerror}") from None
    os.close(handle)
    return Path(name)


def _copy(source: Path, temp: Path) -> None:
    """Every page of ``source`` into ``temp``, in one step: one read transaction, a snapshot."""
    with _reading(source) as hub:
        try:
            with contextlib.closing(sqlite3.connect(temp, isolation_level=None)) as copy:
                hub.backup(copy, pages=-1)
        except sqlite3.Error as exc:
            raise BackupFailed(f"cannot copy {source} to {temp}: {exc}") from None


def _check_copy(temp: Path, target: Path, head: str | None) -> BackupReport:
    """Make the copy one self-contained file, check it, and count what it holds."""
    try:
        with contextlib.closing(sqlite3.connect(temp, isolation_level=None)) as copy:
            # The copy's header says WAL, as the hub's does; a rollback
            # journal leaves nothing beside the file once it is closed.
            (mode,) = copy.execute("PRAGMA journal_mode = DELETE").fetchone()
            if str(mode).lower() != "delete":
                raise BackupFailed(f"cannot take the copy out of WAL mode (still {mode})")
            problems = [str(row[0]) for row in copy.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                shown = "; ".join(problems[:_PROBLEMS_SHOWN])
                raise BackupFailed(
                    f"the copy fails PRAGMA integrity_check ({shown}): the hub's database may "
                    f"be damaged; {target} was not written"
                )
            violations = copy.execute("PRAGMA foreign_key_check").fetchall()
            if violations:
                raise BackupFailed(
                    f"the copy has {len(violations)} foreign key violation(s): the hub's "
                    f"database may be damaged; {target} was not written"
                )
            revision = _check_revision(copy, head, "the copy", BackupFailed)

            def count(query: str) -> int:
                return int(copy.execute(query).fetchone()[0])

            sets = count("SELECT count(*) FROM sets")
            versions = count("SELECT count(*) FROM versions")
            entries = count("SELECT count(*) FROM entries")
            audit_rows = count("SELECT count(*) FROM audit_events")
    except sqlite3.Error as exc:
        raise BackupFailed(
            f"cannot check the copy {temp}: {exc}; {target} was not written"
        ) from None
    return BackupReport(
        path=target,
        revision=revision,
        sets=sets,
        versions=versions,
        entries=entries,
        audit_rows=audit_rows,
        size=temp.stat().st_size,
    )


def _flush(path: Path) -> None:
    try:
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
    except OSError as exc:
        raise BackupFailed(f"cannot flush the copy {path} to disk: {exc.strerror}") from None


def _flush_directory(directory: Path) -> None:
    # The rename is durable once the directory is; some file systems cannot
    # fsync a directory, and the copy is in place by now either way.
    with contextlib.suppress(OSError):
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _move_into_place(temp: Path, target: Path, *, replace: bool) -> None:
    """Give the checked copy its name: atomically, never over a file unless ``replace``."""
    exists = BackupRefused(f"{target} exists: give --force to replace it")
    try:
        if replace:
            os.replace(temp, target)
            return
        try:
            # Unlike a rename, a link fails if the target appeared while we copied.
            os.link(temp, target)
        except FileExistsError:
            raise exists from None
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # No hard links here: check, then rename, as close together as can be.
            if os.path.lexists(target):
                raise exists from None
            os.replace(temp, target)
            return
    except OSError as exc:
        raise BackupFailed(f"cannot move the copy to {target}: {exc.strerror}") from None
    with contextlib.suppress(OSError):
        temp.unlink()


def _remove(temp: Path) -> None:
    for path in (temp, *(Path(f"{temp}{suffix}") for suffix in _SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
