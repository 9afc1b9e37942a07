"""Publishing a version: verify everything, then commit all of it or nothing.

The hub checks a publish with the same protocol code every consumer runs,
in this order:

1. outside any lock: the manifest's publish-threshold signatures by the
   agency's newest keyset, its strict form, its ``set`` line, its times;
   then the delta, spooled to disk: its SHA-256 over the raw bytes before a
   single line is parsed, then every line (canonical, sorted, unique) and
   the counts;
2. under the set's writer lock: the keyset is still the newest, the version
   is exactly latest + 1, the parent digest is the latest manifest's; the
   delta applies (every ``-`` line present, every ``+`` identity absent) and
   the resulting content, streamed from the database in bytewise order and
   merged with the delta, hashes to the manifest's content digest;
3. only then the writes: added entries in bulk, removed ones marked, the
   version row, the set's latest version and the audit row, in one
   transaction.  A unique (set, version) constraint settles any race.

Nothing here holds a whole set in memory: the delta lives in temporary
files and the content streams past a running digest.  The temporary files
are anonymous (unlinked as they are made), so a hub killed mid-publish
leaves none behind, just as its uncommitted transaction leaves no row.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, BinaryIO, cast

from sqlalchemy import Update, bindparam, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from client.protocol import errors as protocol
from client.protocol.blocks import DeltaChecker, in_blocks, json_array, read_blocks
from client.protocol.documents import Keyset, Manifest, sha256_hex, verify_manifest
from client.protocol.entries import MAX_ENTRY_LENGTH, identity_of, merge_delta, sha256_stream
from client.protocol.keys import parse_signatures
from server.engine import begin_exclusive
from server.errors import ConflictError, ForbiddenError, TooLargeError, UnprocessableError
from server.models import AgencyKeyset, Entry, HashSet, SetVersion
from server.services import audit
from server.services.callers import Caller, Role
from server.services.sets import find_readable

INSERT_BATCH = 10_000


# The longest line a delta can hold: a sign, the longest entry, and its LF.
MAX_DELTA_LINE_BYTES = 1 + MAX_ENTRY_LENGTH + 1


@dataclass(frozen=True)
class PublishLimits:
    """The bounds a publish is checked against."""

    max_signatures: int = 16
    clock_skew: timedelta = timedelta(minutes=5)
    max_document_bytes: int = 64 * 1024


@dataclass(frozen=True)
class Upload:
    """The parts of a publish request; ``delta`` is read once, as a stream."""

    manifest: bytes
    signatures: bytes
    delta: IO[bytes]


class VersionConflictError(ConflictError):
    """The manifest is not the next version of the set."""

    slug = "version-conflict"
    title = "Version conflict"


class InvalidManifestError(UnprocessableError):
    """The manifest is not in canonical form."""

    slug = "invalid-manifest"
    title = "Invalid manifest"


class InvalidSignaturesError(UnprocessableError):
    """The signatures part is not a JSON array of ``{"keyid", "sig"}`` objects."""

    slug = "invalid-signatures"
    title = "Invalid signatures"


class BadSignatureError(UnprocessableError):
    """A signature by a key of the agency's keyset does not verify."""

    slug = "bad-signature"
    title = "Bad signature"


class UnknownKeyError(UnprocessableError):
    """No signature came from a publish key of the agency's newest keyset."""

    slug = "unknown-key"
    title = "Unknown key"


class ThresholdNotMetError(UnprocessableError):
    """Fewer distinct publish keys signed than the keyset's threshold."""

    slug = "threshold-not-met"
    title = "Threshold not met"


class TooManySignaturesError(UnprocessableError):
    """More signatures than the hub reads."""

    slug = "too-many-signatures"
    title = "Too many signatures"


class KeysetMismatchError(UnprocessableError):
    """The manifest names a keyset other than the agency's newest."""

    slug = "keyset-mismatch"
    title = "Keyset mismatch"


class SetMismatchError(UnprocessableError):
    """The manifest's ``set`` line names another set than the URL."""

    slug = "set-mismatch"
    title = "Set mismatch"


class ParentMismatchError(UnprocessableError):
    """The parent digest is not the SHA-256 of the latest manifest."""

    slug = "parent-mismatch"
    title = "Parent mismatch"


class IssuedInFutureError(UnprocessableError):
    """``issued`` lies further in the future than the allowed clock skew."""

    slug = "issued-in-future"
    title = "Issued in the future"


class ExpiredManifestError(UnprocessableError):
    """``expires`` has already passed."""

    slug = "expired"
    title = "Expired"


class DeltaDigestMismatchError(UnprocessableError):
    """The delta bytes received do not hash to the manifest's delta digest."""

    slug = "delta-digest-mismatch"
    title = "Delta digest mismatch"


class InvalidDeltaError(UnprocessableError):
    """A delta line is not canonical, not sorted, or repeats an identity."""

    slug = "invalid-delta"
    title = "Invalid delta"


class CountMismatchError(UnprocessableError):
    """The delta's or the content's line counts differ from the manifest's."""

    slug = "count-mismatch"
    title = "Count mismatch"


class DeltaNotApplicableError(UnprocessableError):
    """The delta removes an absent line or adds an identity already present."""

    slug = "delta-not-applicable"
    title = "Delta not applicable"


class ContentDigestMismatchError(UnprocessableError):
    """The content after applying the delta does not hash to the manifest's digest."""

    slug = "content-digest-mismatch"
    title = "Content digest mismatch"


_SIGNATURE_ERRORS: dict[type[protocol.SignatureError], type[UnprocessableError]] = {
    protocol.BadSignatureError: BadSignatureError,
    protocol.UnknownKeyError: UnknownKeyError,
    protocol.ThresholdError: ThresholdNotMetError,
    protocol.TooManySignaturesError: TooManySignaturesError,
}


@dataclass(frozen=True)
class _Checked:
    """A manifest that passed the checks made outside the lock."""

    manifest: Manifest
    signatures_json: str
    keyset_digest: str


def publish(
    session: Session,
    caller: Caller,
    agency: str,
    set_slug: str,
    upload: Upload,
    *,
    now: datetime,
    limits: PublishLimits,
) -> SetVersion:
    """Check and store the next version of ``agency/set_slug``; see the module doc."""
    hash_set = find_readable(session, caller, agency, set_slug)
    if hash_set.agency_id != caller.agency_id or not _may_publish(caller.role):
        raise ForbiddenError("publishing needs a publisher token of the set's owner")
    set_id = hash_set.id
    keyset = _newest_keyset(session, hash_set.agency_id)
    checked = _check_manifest(upload, keyset, f"{agency}/{set_slug}", now, limits)
    # Checked once now, so a replay or a gap is refused before its delta is
    # read, and again under the lock, where the answer is final.
    _check_chain(session, set_id, checked)
    session.commit()
    with _spooling() as spool:
        _spool_delta(upload.delta, checked.manifest, spool)
        begin_exclusive(session, f"set:{set_id}")
        _check_chain(session, set_id, checked)
        _check_content(session, set_id, checked.manifest, spool)
        row = _store(session, set_id, checked, spool, now)
        audit.record(
            session,
            caller.actor,
            "set.publish",
            target=f"set:{agency}/{set_slug}",
            subject_agency=agency,
            detail={
                "version": row.version,
                "manifest_sha256": row.manifest_sha256,
                "adds": row.adds,
                "removes": row.removes,
            },
        )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise VersionConflictError(
                f"version {row.version} was published by someone else first"
            ) from None
    return row


def _may_publish(role: Role) -> bool:
    return role in (Role.PUBLISHER, Role.AGENCY_ADMIN)


def _newest_keyset(session: Session, agency_id: int) -> AgencyKeyset:
    row = session.scalar(
        select(AgencyKeyset)
        .where(AgencyKeyset.agency_id == agency_id)
        .order_by(AgencyKeyset.version.desc())
        .limit(1)
    )
    if row is None:
        raise UnprocessableError("the agency has no keyset")
    return row


def _check_manifest(
    upload: Upload, keyset_row: AgencyKeyset, set_name: str, now: datetime, limits: PublishLimits
) -> _Checked:
    for part, data in (("manifest", upload.manifest), ("signatures", upload.signatures)):
        if len(data) > limits.max_document_bytes:
            raise TooLargeError(
                f"the {part} is over {limits.max_document_bytes} bytes",
                field=part,
                limit=limits.max_document_bytes,
            )
    try:
        signatures = parse_signatures(json.loads(upload.signatures), limits.max_signatures)
    except protocol.TooManySignaturesError as exc:
        raise TooManySignaturesError(str(exc)) from None
    except (ValueError, protocol.FormatError) as exc:
        raise InvalidSignaturesError(str(exc)) from None
    keyset = Keyset.parse(keyset_row.body.encode("ascii"))
    try:
        manifest = verify_manifest(
            upload.manifest, signatures, keyset, max_signatures=limits.max_signatures
        )
    except protocol.SignatureError as exc:
        raise _SIGNATURE_ERRORS.get(type(exc), BadSignatureError)(str(exc)) from None
    except protocol.ChainError as exc:
        # The signatures verified, so the bytes may be read to say which
        # check failed: another set's manifest, or one naming an old keyset.
        claimed = Manifest.parse(upload.manifest).set_name
        if claimed != set_name:
            raise SetMismatchError(f"the manifest is for {claimed}, not {set_name}") from None
        raise KeysetMismatchError(
            f"{exc}; a new version must name the agency's newest keyset"
        ) from None
    except protocol.FormatError as exc:
        raise InvalidManifestError(str(exc)) from None
    if manifest.set_name != set_name:
        raise SetMismatchError(f"the manifest is for {manifest.set_name}, not {set_name}")
    if manifest.issued > now + limits.clock_skew:
        raise IssuedInFutureError(
            f"issued {manifest.issued:%Y-%m-%dT%H:%M:%SZ} is in the future (hub time "
            f"{now:%Y-%m-%dT%H:%M:%SZ})"
        )
    if manifest.expires <= now:
        raise ExpiredManifestError(f"the manifest expired at {manifest.expires:%Y-%m-%dT%H:%M:%SZ}")
    signatures_json = json.dumps([s.to_json() for s in signatures])
    return _Checked(manifest, signatures_json, keyset_row.sha256)


@dataclass(frozen=True)
class _Spool:
    """A delta's raw bytes, and its added and removed entry lines, in temporary files.

    ``adds()`` and ``removes()`` give each file rewound, to be read from the start.
    """

    raw: BinaryIO
    added: BinaryIO
    removed: BinaryIO

    def adds(self) -> BinaryIO:
        """The added entry lines, from the first."""
        self.added.seek(0)
        return self.added

    def removes(self) -> BinaryIO:
        """The removed entry lines, from the first."""
        self.removed.seek(0)
        return self.removed


@contextmanager
def _spooling() -> Iterator[_Spool]:
    """A spool of anonymous files: they vanish when the block ends, or with the process."""
    with (
        tempfile.TemporaryFile(prefix="hashex-delta-") as raw,
        tempfile.TemporaryFile(prefix="hashex-adds-") as added,
        tempfile.TemporaryFile(prefix="hashex-removes-") as removed,
    ):
        yield _Spool(cast(BinaryIO, raw), cast(BinaryIO, added), cast(BinaryIO, removed))


def max_delta_bytes(manifest: Manifest) -> int:
    """The most bytes a delta with the manifest's counts can take, every line at its longest."""
    return (manifest.adds + manifest.removes) * MAX_DELTA_LINE_BYTES


def _spool_delta(delta: IO[bytes], manifest: Manifest, spool: _Spool) -> None:
    """Hash the raw delta, then validate it into sorted adds and removes files.

    The digest comes first over the exact bytes received: no line of a delta
    the agency did not sign is ever parsed.
    """
    hasher = hashlib.sha256()
    limit = max_delta_bytes(manifest)
    received = 0
    # One pass: the upload is hashed as it is spooled, and bounded by what
    # the verified manifest signs for (a gzip upload may inflate to that).
    while chunk := delta.read(1 << 20):
        received += len(chunk)
        if received > limit:
            raise TooLargeError(
                f"the delta is over {limit} bytes, the most {manifest.adds} adds and "
                f"{manifest.removes} removes can take ({MAX_DELTA_LINE_BYTES} bytes a line)",
                field="delta",
                limit=limit,
            )
        hasher.update(chunk)
        spool.raw.write(chunk)
    digest = hasher.hexdigest()
    if digest != manifest.delta_digest:
        raise DeltaDigestMismatchError(
            f"the delta hashes to sha256:{digest}, the manifest says sha256:{manifest.delta_digest}"
        )
    spool.raw.seek(0)
    checker = DeltaChecker()
    adds, removes = spool.adds(), spool.removes()
    try:
        for block in read_blocks(spool.raw):
            cut = checker.check(block)
            _write_entries(adds, block[:cut])
            _write_entries(removes, block[cut:])
    except protocol.EntryFormatError as exc:
        raise InvalidDeltaError(f"delta {exc}", line=exc.line) from None
    spool.raw.truncate(0)
    if (checker.adds, checker.removes) != (manifest.adds, manifest.removes):
        raise CountMismatchError(
            f"the delta has {checker.adds} adds and {checker.removes} removes, the manifest "
            f"says {manifest.adds} and {manifest.removes}"
        )


def _check_chain(session: Session, set_id: int, checked: _Checked) -> None:
    manifest = checked.manifest
    # populate_existing: the set row was read before the lock; what counts is
    # the row as it stands now that no other publish of this set can run.
    hash_set = session.get_one(HashSet, set_id, populate_existing=True)
    latest = hash_set.latest_version
    if manifest.version != latest + 1:
        raise VersionConflictError(
            f"version {manifest.version} is not the next version: the set is at {latest}"
        )
    newest = _newest_keyset(session, hash_set.agency_id)
    if newest.sha256 != checked.keyset_digest:
        raise KeysetMismatchError("the agency's keyset changed while publishing; sign again")
    if latest == 0:
        return
    parent = session.scalar(
        select(SetVersion.manifest_sha256).where(
            SetVersion.set_id == set_id, SetVersion.version == latest
        )
    )
    if parent != manifest.parent_digest:
        raise ParentMismatchError(
            f"parent sha256:{manifest.parent_digest} is not version {latest}'s "
            f"manifest sha256:{parent}"
        )


def _check_content(session: Session, set_id: int, manifest: Manifest, spool: _Spool) -> None:
    """Merge the current content with the delta and check the resulting digest.

    Only hashed, not checked line by line: the current content was checked
    when it was stored and the delta lines just now, and the merge keeps
    the order and refuses what does not apply.
    """
    if manifest.version == 1:
        # Nothing to merge with, and a version 1 manifest removes nothing and
        # counts exactly its adds (Manifest.parse): the content is the adds.
        digest, _ = sha256_stream(spool.adds())
        count = manifest.adds
    else:
        digest, count = _merged_digest(session, set_id, spool)
    if count != manifest.count:
        raise CountMismatchError(
            f"the new content has {count} entries, the manifest says {manifest.count}"
        )
    if digest != manifest.content_digest:
        raise ContentDigestMismatchError(
            f"the new content hashes to sha256:{digest}, the manifest says "
            f"sha256:{manifest.content_digest}"
        )


def _merged_digest(session: Session, set_id: int, spool: _Spool) -> tuple[str, int]:
    """SHA-256 and count of the current content merged with the delta's removes and adds.

    The current content is read a block at a time.  A block that no remove
    or add falls into (most of them, for a small change to a big set) is
    hashed whole, without a line of Python per entry; a block something
    falls into is merged line by line with just those removes and adds.
    """
    digest = hashlib.sha256()
    count = 0
    removes = _Pending(_lines(spool.removes()))
    adds = _Pending(_lines(spool.adds()))
    try:
        for block in _current_blocks(session, set_id):
            last = block[-1].encode("ascii")
            block_removes = removes.take_up_to(last)
            block_adds = adds.take_up_to(identity_of(last), by_identity=True)
            if not block_removes and not block_adds:
                digest.update(("\n".join(block) + "\n").encode("ascii"))
                count += len(block)
                continue
            lines = [line.encode("ascii") for line in block]
            for merged in in_blocks(merge_delta(lines, block_removes, block_adds)):
                digest.update(b"\n".join(merged) + b"\n")
                count += len(merged)
        # What is left lies beyond the last line held: removes of nothing, adds at the end.
        for merged in in_blocks(merge_delta([], removes.rest(), adds.rest())):
            digest.update(b"\n".join(merged) + b"\n")
            count += len(merged)
    except protocol.DeltaApplyError as exc:
        raise DeltaNotApplicableError(str(exc)) from None
    return digest.hexdigest(), count


class _Pending:
    """A sorted stream of delta lines, taken from the front as the content passes them."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._next = next(lines, None)

    def take_up_to(self, bound: bytes, *, by_identity: bool = False) -> list[bytes]:
        """The lines at the front up to ``bound`` (their identities, ``by_identity``)."""
        taken: list[bytes] = []
        while self._next is not None and (
            (identity_of(self._next) if by_identity else self._next) <= bound
        ):
            taken.append(self._next)
            self._next = next(self._lines, None)
        return taken

    def rest(self) -> Iterator[bytes]:
        """Every line not taken yet."""
        if self._next is not None:
            yield self._next
            yield from self._lines


def _current_blocks(session: Session, set_id: int) -> Iterator[list[str]]:
    """The current content's lines, in order, a batch at a time."""
    result = session.execute(
        select(Entry.line)
        .where(Entry.set_id == set_id, Entry.removed_in.is_(None))
        .order_by(Entry.line)
        .execution_options(yield_per=INSERT_BATCH)
    )
    # closing(): a refused merge stops early, and the database cursor behind
    # the current content must be closed then, not whenever it is collected.
    with closing(result):
        for partition in result.scalars().partitions():
            yield list(partition)


def _lines(handle: IO[bytes]) -> Iterator[bytes]:
    for line in handle:
        yield line[:-1]


def _store(
    session: Session,
    set_id: int,
    checked: _Checked,
    spool: _Spool,
    now: datetime,
) -> SetVersion:
    manifest = checked.manifest
    version = manifest.version
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        _copy_entries(session, set_id, version, spool.adds())
    else:
        insert_block = text(
            "INSERT INTO entries (set_id, line, added_in) "
            "SELECT :set_id, value, :version FROM json_each(:lines)"
        )
        for block in read_blocks(spool.adds()):
            connection.execute(
                insert_block, {"set_id": set_id, "version": version, "lines": json_array(block)}
            )
    mark_removed = mark_removed_statement(set_id, version)
    for batch in _batches(spool.removes()):
        connection.execute(mark_removed, [{"old_line": line} for line in batch])
    data = manifest.encode()
    row = SetVersion(
        set_id=set_id,
        version=version,
        manifest=data.decode("ascii"),
        signatures=checked.signatures_json,
        manifest_sha256=sha256_hex(data),
        delta_sha256=manifest.delta_digest,
        content_sha256=manifest.content_digest,
        adds=manifest.adds,
        removes=manifest.removes,
        count=manifest.count,
        keyset_version=manifest.keyset_version,
        issued_at=manifest.issued,
        expires_at=manifest.expires,
        created_at=now,
    )
    session.add(row)
    session.get_one(HashSet, set_id).latest_version = version
    session.flush()
    return row


def mark_removed_statement(set_id: int, version: int) -> Update:
    """UPDATE marking one live line (bound as ``old_line``) removed in ``version``."""
    return (
        update(Entry)
        .where(
            Entry.set_id == set_id,
            Entry.line == bindparam("old_line"),
            # The unary plus keeps SQLite's planner off ix_entries_set_removed
            # (which would scan every live entry per line): the primary key
            # finds the line directly.
            text("+removed_in IS NULL"),
        )
        .values(removed_in=version)
    )


def _batches(handle: IO[bytes]) -> Iterator[list[str]]:
    for block in read_blocks(handle):
        yield [line.decode("ascii") for line in block]


def _write_entries(out: IO[bytes], lines: list[bytes]) -> None:
    """Write delta lines as entry lines: without their sign, each ending in LF."""
    if lines:
        out.write(b"\n".join(line[1:] for line in lines) + b"\n")


def _copy_entries(session: Session, set_id: int, version: int, adds: IO[bytes]) -> None:
    """Bulk-load added lines with PostgreSQL's COPY: no per-row statement at all."""
    driver = session.connection().connection.driver_connection
    if driver is None:
        raise RuntimeError("no PostgreSQL driver connection for COPY")
    with (
        driver.cursor() as cursor,
        cursor.copy("COPY entries (set_id, line, added_in) FROM STDIN") as copy,
    ):
        prefix = f"{set_id}\t".encode()
        suffix = f"\t{version}\n".encode()
        for block in read_blocks(adds):
            copy.write(prefix + (suffix + prefix).join(block) + suffix)
