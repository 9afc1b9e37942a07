"""The local store: pins, verified keysets and manifests, and the entries of each set.

One SQLite file under ``HASHEX_HOME``.  Each set's entries live in a table of
their own, ``entries_<id>(identity PRIMARY KEY, label) WITHOUT ROWID``: a
lookup by hash is one primary-key probe per set, a delta costs one probe per
line, and a bootstrap loads the already sorted content into a fresh table
that replaces the old one in the same transaction.

Every verified version is applied in one transaction together with its
manifest: a crash or a failed check at any moment leaves the store exactly at
the last good version (SQLite's journal guarantees it), and the next sync
resumes from there.  Nothing unverified is ever written: the sync loop calls
these methods only with what ``client.trust`` accepted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from client.protocol.documents import SignedDocument
from client.protocol.errors import DeltaApplyError, InputError
from client.protocol.keys import Signature, parse_signatures
from client.trust import SetState, VerifiedDelta

SCHEMA_VERSION = 1
# Called after each batch of a version is applied, before it commits: a
# fault-injection point for crash tests (HASHEX_TEST_BATCH_HOOK), and nothing
# else.
BatchHook = Callable[[int], None]

_SCHEMA = """
CREATE TABLE pins (
    agency TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('keyset', 'key', 'keyid')),
    value TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE keysets (
    agency TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    signatures TEXT NOT NULL,
    PRIMARY KEY (agency, version)
);
CREATE TABLE sets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    manifest TEXT,
    signatures TEXT,
    synced_at TEXT
);
"""

# Each value of the JSON array is one entry line; split at its first space
# into identity and (optional) label.  {table} is only ever a name the store
# made from an integer set id (see _table), never text from outside.
_ENTRIES = (
    "SELECT CASE WHEN cut THEN substr(value, 1, cut - 1) ELSE value END AS identity, "
    "CASE WHEN cut THEN substr(value, cut + 1) END AS label "
    "FROM (SELECT value, instr(value, ' ') AS cut FROM json_each(?))"
)
_INSERT = "INSERT INTO {table} " + _ENTRIES
_COUNT_HELD = (
    "SELECT count(*) FROM (" + _ENTRIES + ") AS line "  # noqa: S608
    "JOIN {table} AS held ON held.identity = line.identity AND held.label IS line.label"
)
_DELETE = "DELETE FROM {table} WHERE identity IN (SELECT identity FROM (" + _ENTRIES + "))"  # noqa: S608


@dataclass(frozen=True)
class Pin:
    """How an agency is anchored: a keyset file, a root public key PEM, or a key id."""

    agency: str
    kind: str
    value: str


@dataclass(frozen=True)
class LocalSet:
    """A set as held locally."""

    name: str
    version: int
    manifest: bytes | None
    synced_at: str | None


@dataclass(frozen=True)
class Match:
    """One held entry that matches a queried identity."""

    identity: str
    label: str | None
    set_name: str
    version: int


class Store:
    """The local store; open it with ``Store.open(home)``."""

    def __init__(self, connection: sqlite3.Connection, batch_hook: BatchHook | None) -> None:
        self._db = connection
        self._batch_hook = batch_hook

    @classmethod
    def open(cls, home: Path, *, batch_hook: BatchHook | None = None) -> Store:
        """Open (creating if needed) the store under ``home``."""
        try:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InputError(f"HASHEX_HOME {home}: cannot create ({exc.strerror})") from None
        connection = sqlite3.connect(home / "store.sqlite3", isolation_level=None, timeout=60)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        store = cls(connection, batch_hook)
        store._migrate()
        return store

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            raise InputError(
                f"the local store has schema {version}; this hashex knows {SCHEMA_VERSION}"
            )
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _transaction(self, *, immediate: bool = True) -> _Transaction:
        return _Transaction(self._db, immediate)

    # Pins and keysets

    def add_pin(self, pin: Pin, keyset: SignedDocument | None) -> None:
        """Pin an agency (replacing nothing: re-pinning is refused).

        A keyset-file pin also stores that keyset as verified.
        """
        with self._transaction():
            if self._db.execute("SELECT 1 FROM pins WHERE agency = ?", (pin.agency,)).fetchone():
                raise InputError(f"agency {pin.agency} is already pinned")
            self._db.execute(
                "INSERT INTO pins VALUES (?, ?, ?, ?)",
                (pin.agency, pin.kind, pin.value, _now()),
            )
            if keyset is not None:
                self._insert_keyset(pin.agency, keyset)

    def pin(self, agency: str) -> Pin | None:
        """The pin of ``agency``, if any."""
        row = self._db.execute(
            "SELECT agency, kind, value FROM pins WHERE agency = ?", (agency,)
        ).fetchone()
        return None if row is None else Pin(*row)

    def pinned_agencies(self) -> list[str]:
        """Every pinned agency, by slug."""
        return [r[0] for r in self._db.execute("SELECT agency FROM pins ORDER BY agency")]

    def keyset_documents(self, agency: str) -> list[SignedDocument]:
        """The agency's verified keysets as stored, oldest first."""
        rows = self._db.execute(
            "SELECT version, body, signatures FROM keysets WHERE agency = ? ORDER BY version",
            (agency,),
        ).fetchall()
        return [
            SignedDocument.from_json(
                "keyset", {"version": v, "keyset": body, "signatures": json.loads(sigs)}
            )
            for v, body, sigs in rows
        ]

    def save_keysets(self, agency: str, documents: Sequence[SignedDocument]) -> None:
        """Store newly verified keysets; versions already held are left as they are."""
        with self._transaction():
            for document in documents:
                self._db.execute(
                    "INSERT OR IGNORE INTO keysets VALUES (?, ?, ?, ?)",
                    _keyset_row(agency, document),
                )

    def _insert_keyset(self, agency: str, document: SignedDocument) -> None:
        self._db.execute("INSERT INTO keysets VALUES (?, ?, ?, ?)", _keyset_row(agency, document))

    # Sets

    def set_state(self, name: str) -> SetState:
        """The verified state of ``name`` (version 0 if never synced)."""
        row = self._db.execute(
            "SELECT version, manifest FROM sets WHERE name = ?", (name,)
        ).fetchone()
        if row is None or row[1] is None:
            return SetState(name)
        return SetState(name, row[0], row[1].encode("ascii"))

    def manifest_signatures(self, name: str) -> list[Signature]:
        """The signatures stored with a set's newest manifest."""
        row = self._db.execute("SELECT signatures FROM sets WHERE name = ?", (name,)).fetchone()
        return parse_signatures(json.loads(row[0])) if row and row[0] else []

    def local_sets(self) -> list[LocalSet]:
        """Every set held locally, by name."""
        rows = self._db.execute(
            "SELECT name, version, manifest, synced_at FROM sets WHERE version > 0 ORDER BY name"
        ).fetchall()
        return [LocalSet(n, v, m.encode("ascii") if m else None, s) for n, v, m, s in rows]

    def apply_delta(self, name: str, document: SignedDocument, delta: VerifiedDelta) -> None:
        """Apply one verified delta and record its manifest, all in one transaction.

        Removes go first and must be present exactly as written; then adds,
        whose identities must be absent.  Anything else rolls the whole
        version back and raises DeltaApplyError.
        """
        with self._transaction():
            set_id = self._set_id(name)
            table = _table(set_id)
            batches = 0
            for block in delta.remove_blocks():
                self._remove(table, block)
                batches += 1
                self._after_batch(batches)
            for block in delta.add_blocks():
                try:
                    self._db.execute(_INSERT.format(table=table), (_json_array(block),))
                except sqlite3.IntegrityError:
                    raise DeltaApplyError("adds an identity which is already held") from None
                batches += 1
                self._after_batch(batches)
            self._record(set_id, document)

    def _remove(self, table: str, block: list[bytes]) -> None:
        """Delete a block of entry lines, every one of which must be held exactly."""
        count = _COUNT_HELD.format(table=table)
        lines = _json_array(block)
        if self._db.execute(count, (lines,)).fetchone()[0] != len(block):
            missing = next(
                line
                for line in block
                if not self._db.execute(count, (_json_array([line]),)).fetchone()[0]
            )
            raise DeltaApplyError(f"removes {missing.decode()!r}, which is not held")
        self._db.execute(_DELETE.format(table=table), (lines,))

    def replace_content(
        self, name: str, document: SignedDocument, blocks: Iterable[list[bytes]]
    ) -> None:
        """Replace a set's entries with a verified content, in one transaction."""
        with self._transaction():
            set_id = self._set_id(name)
            table = _table(set_id)
            fresh = f"{table}_new"
            self._db.execute(f"DROP TABLE IF EXISTS {fresh}")
            self._db.execute(
                f"CREATE TABLE {fresh} (identity TEXT PRIMARY KEY, label TEXT) WITHOUT ROWID"
            )
            for number, block in enumerate(blocks, 1):
                self._db.execute(_INSERT.format(table=fresh), (_json_array(block),))
                self._after_batch(number)
            self._db.execute(f"DROP TABLE {table}")
            self._db.execute(f"ALTER TABLE {fresh} RENAME TO {table}")
            self._record(set_id, document)

    def iter_content(self, name: str) -> Iterator[bytes]:
        """The held entries of a set as canonical lines, in bytewise order."""
        row = self._db.execute("SELECT id FROM sets WHERE name = ?", (name,)).fetchone()
        if row is None:
            return
        cursor = self._db.execute(
            f"SELECT identity, label FROM {_table(row[0])} ORDER BY identity"  # noqa: S608
        )
        for identity, label in cursor:
            yield (identity if label is None else f"{identity} {label}").encode("ascii")

    def lookup(self, identities: Sequence[str]) -> list[Match]:
        """Every held entry whose identity is one of ``identities``, across all sets.

        The identities go into a temporary table and are joined with each
        set's table: one statement per set, however many hashes are asked.
        """
        sets = self._db.execute("SELECT id, name, version FROM sets WHERE version > 0").fetchall()
        matches: list[Match] = []
        # A read: a deferred transaction, so a sync running alongside is not
        # blocked (the temporary table is this connection's own).
        with self._transaction(immediate=False):
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS query (identity TEXT PRIMARY KEY)")
            self._db.execute("DELETE FROM temp.query")
            # Sorted, the identities append to the temporary B-tree instead of
            # landing at random places in it.
            self._db.executemany(
                "INSERT OR IGNORE INTO temp.query VALUES (?)", ((i,) for i in sorted(identities))
            )
            for set_id, name, version in sets:
                # CROSS JOIN fixes the order: one primary-key probe of the set
                # per asked identity, never a scan of the whole set per batch.
                rows = self._db.execute(
                    f"SELECT e.identity, e.label FROM temp.query q "  # noqa: S608
                    f"CROSS JOIN {_table(set_id)} e ON e.identity = q.identity"
                )
                matches.extend(Match(i, label, name, version) for i, label in rows)
            self._db.execute("DELETE FROM temp.query")
        return matches

    def holds_algorithm(self, alg: str) -> bool:
        """Whether any held set has an entry of algorithm ``alg``."""
        for (set_id,) in self._db.execute("SELECT id FROM sets WHERE version > 0").fetchall():
            # Identities start "<alg>:" and ";" follows ":" in ASCII: a range.
            row = self._db.execute(
                f"SELECT 1 FROM {_table(set_id)} WHERE identity >= ? AND identity < ? LIMIT 1",  # noqa: S608
                (f"{alg}:", f"{alg};"),
            ).fetchone()
            if row is not None:
                return True
        return False

    def _set_id(self, name: str) -> int:
        row = self._db.execute("SELECT id FROM sets WHERE name = ?", (name,)).fetchone()
        if row is not None:
            set_id: int = row[0]
            return set_id
        cursor = self._db.execute("INSERT INTO sets (name, version) VALUES (?, 0)", (name,))
        new_id = cursor.lastrowid
        if new_id is None:
            raise RuntimeError("SQLite gave no row id for a new set")
        self._db.execute(
            f"CREATE TABLE {_table(new_id)} (identity TEXT PRIMARY KEY, label TEXT) WITHOUT ROWID"
        )
        return new_id

    def _record(self, set_id: int, document: SignedDocument) -> None:
        self._db.execute(
            "UPDATE sets SET version = ?, manifest = ?, signatures = ?, synced_at = ? WHERE id = ?",
            (
                document.version,
                document.data.decode("ascii"),
                json.dumps([s.to_json() for s in document.signatures]),
                _now(),
                set_id,
            ),
        )

    def _after_batch(self, number: int) -> None:
        if self._batch_hook is not None:
            self._batch_hook(number)


class _Transaction:
    """``BEGIN [IMMEDIATE]`` ... ``COMMIT``, or ``ROLLBACK`` on any exception.

    Writers begin IMMEDIATE: they take the write lock before reading, so two
    syncs of one store queue instead of failing half-way.
    """

    def __init__(self, db: sqlite3.Connection, immediate: bool) -> None:
        self._db = db
        self._immediate = immediate

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE" if self._immediate else "BEGIN")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def _keyset_row(agency: str, document: SignedDocument) -> tuple[str, int, str, str]:
    signatures = json.dumps([s.to_json() for s in document.signatures])
    return agency, document.version, document.data.decode("ascii"), signatures


def _table(set_id: int) -> str:
    # Set ids are integers the store assigned itself; never user text.
    return f"entries_{int(set_id)}"


def _json_array(lines: list[bytes]) -> str:
    """A block of verified entry lines as one JSON array of strings, for ``json_each``.

    Joined, not escaped: checked entry lines hold only ``[A-Za-z0-9:._ -]``,
    none of which JSON needs to escape.  One statement then loads a whole
    block in C instead of a Python tuple per line.
    """
    return (b'["' + b'","'.join(lines) + b'"]').decode("ascii")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
