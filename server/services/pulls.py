"""Reading versions: listings, version objects, and delta and content lines.

Lines stream from the database in bytewise order (the primary key's order),
a batch at a time, so serving a set of millions of entries costs flat memory.
Every delta or content download is audited; polls that download nothing (an
empty listing, a 304) are only counted (:mod:`server.services.polls`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.orm import Session

from server.engine import begin_exclusive
from server.errors import NotFoundError
from server.models import Entry, SetVersion
from server.services import audit
from server.services.callers import Caller
from server.services.sets import find_readable

Kind = Literal["delta", "content"]
MAX_PAGE = 1000
STREAM_BATCH = 10_000


@dataclass(frozen=True)
class Download:
    """What a delta or content download serves: whose lines, and their digest."""

    set_id: int
    version: int
    kind: Kind
    sha256: str


@dataclass(frozen=True)
class VersionPage:
    """A page of a set's versions, oldest first."""

    set_id: int
    versions: Sequence[SetVersion]


def list_versions(
    session: Session, caller: Caller, agency: str, set_slug: str, *, after: int, limit: int
) -> VersionPage:
    """Versions above ``after`` (at most ``limit``) of a readable set, oldest first."""
    hash_set = find_readable(session, caller, agency, set_slug)
    rows = session.scalars(
        select(SetVersion)
        .where(SetVersion.set_id == hash_set.id, SetVersion.version > after)
        .order_by(SetVersion.version)
        .limit(min(limit, MAX_PAGE))
    ).all()
    return VersionPage(hash_set.id, rows)


def get_version(
    session: Session, caller: Caller, agency: str, set_slug: str, version: int
) -> SetVersion:
    """One version of a readable set, or NotFoundError."""
    hash_set = find_readable(session, caller, agency, set_slug)
    row = session.scalar(
        select(SetVersion).where(SetVersion.set_id == hash_set.id, SetVersion.version == version)
    )
    if row is None:
        raise NotFoundError(f"{agency}/{set_slug} has no version {version}")
    return row


def find_download(
    session: Session, caller: Caller, agency: str, set_slug: str, version: int, kind: Kind
) -> Download:
    """The delta or content of one version of a readable set, not yet audited."""
    row = get_version(session, caller, agency, set_slug, version)
    digest = row.delta_sha256 if kind == "delta" else row.content_sha256
    return Download(row.set_id, row.version, kind, digest)


def record_download(
    session: Session, caller: Caller, agency: str, set_slug: str, download: Download, encoding: str
) -> None:
    """Audit one delta or content download, in a transaction of its own."""
    session.commit()
    begin_exclusive(session, audit.CHAIN_LOCK)
    audit.record(
        session,
        caller.actor,
        f"set.download.{download.kind}",
        target=f"set:{agency}/{set_slug}",
        subject_agency=agency,
        detail={"version": download.version, "encoding": encoding},
    )
    session.commit()


def download_queries(download: Download) -> list[tuple[str, Select[str]]]:
    """The line queries of a download, each with the sign its lines carry on the wire."""
    n = download.version
    if download.kind == "content":
        # "+ 0" keeps the planner on the primary key, already in line order,
        # rather than on the delta index followed by a sort of the whole set.
        alive = and_(
            (Entry.added_in + 0) <= n, or_(Entry.removed_in.is_(None), Entry.removed_in > n)
        )
        return [("", _lines(download.set_id, alive))]
    return [
        ("+", _lines(download.set_id, Entry.added_in == n)),
        ("-", _lines(download.set_id, Entry.removed_in == n)),
    ]


def _lines(set_id: int, condition: ColumnElement[bool]) -> Select[str]:
    return select(Entry.line).where(Entry.set_id == set_id, condition).order_by(Entry.line)


def iter_chunks(session: Session, download: Download) -> Generator[bytes]:
    """The exact wire bytes of a download, a batch of lines per chunk, bytewise order."""
    for sign, query in download_queries(download):
        # Core rows fetched a batch at a time (a server-side cursor on
        # PostgreSQL) and joined per batch: no ORM object per line, flat memory.
        result = session.connection().execution_options(stream_results=True).execute(query)
        # A client that hangs up mid-download closes this generator: the
        # cursor must close with it.
        with closing(result):
            while rows := result.fetchmany(STREAM_BATCH):
                yield "".join(f"{sign}{row[0]}\n" for row in rows).encode("ascii")
