"""The local store: pins, verified keysets and manifests, and the entries of each set.

One SQLite file under ``HASHEX_HOME``.  Each set's entries live in a table of
their own, ``entries_<id>(line PRIMARY KEY) WITHOUT ROWID``, keyed by the
canonical line itself.  Identities have a fixed length per algorithm, so the
lines of one identity are exactly the keys from ``<identity>`` up to, not
including, ``<identity>!`` (a label follows a space, which sorts below
``!``): a lookup by hash is one primary-key range probe per set, a delta
costs one probe per line, and a bootstrap appends the already sorted content
to a fresh table that replaces the old one in the same transaction.

Every verified version is applied in one transaction together with its
manifest: a crash or a failed check at any moment leaves the store exactly at
the last good version (SQLite's journal guarantees it), and the next sync
resumes from there.  Nothing unverified is ever written: the sync loop calls
these methods only with what ``client.trust`` accepted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from client.protocol.blocks import json_array
from client.protocol.documents import Manifest, SignedDocument
from client.protocol.entries import ALGORITHMS
from client.protocol.errors import DeltaApplyError, InputError
from client.protocol.keys import Signature, parse_signatures
from client.trust import SetState, VerifiedDelta

SCHEMA_VERSION = 3
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

# {table} below is only ever a name the store made from an integer set id
# (see _table), never text from outside.  Each value of a JSON array bound to
# these statements is one entry line, or one identity.
_INSERT = "INSERT INTO {table} SELECT value FROM json_each(?)"
_COUNT_HELD = "SELECT count(*) FROM json_each(?) JOIN {table} ON line = value"
_DELETE = "DELETE FROM {table} WHERE line IN (SELECT value FROM json_each(?))"
_COUNT_CLASHES = (
    "SELECT count(*) FROM "
    "(SELECT substr(value, 1, instr(value || ' ', ' ') - 1) AS identity FROM json_each(?)) "
    "CROSS JOIN {table} ON line >= identity AND line < identity || '!'"
)
# CROSS JOIN fixes the order: one range probe of the set per asked identity
# (sent sorted, so the probes walk the B-tree in order), never a scan of the
# whole set.
_PROBE = "SELECT line FROM json_each(?) CROSS JOIN {table} ON line >= value AND line < value || '!'"
# The hex digests of the lines in a key range of the set, for a batch big
# enough that reading the set once beats probing it per hash.
_HEX_RANGE = (
    "SELECT group_concat(substr(line, :start, :length), char(10)) FROM {table} "
    "WHERE line >= :low AND line < :high"
)
_MIGRATIONS = {
    # Schema 1 keyed each set's table by identity, with the label beside it.
    1: (
        "CREATE TABLE {table}_v2 (line TEXT PRIMARY KEY) WITHOUT ROWID",
        "INSERT INTO {table}_v2 SELECT identity || coalesce(' ' || label, '') FROM {table} "
        "ORDER BY 1",
        "DROP TABLE {table}",
        "ALTER TABLE {table}_v2 RENAME TO {table}",
    ),
}
# Steps that change the store as a whole, not each set's table.
_STORE_MIGRATIONS = {
    # Schema 3 remembers each hub's last listing, so a poll can be a 304.
    2: ("CREATE TABLE listings (hub TEXT PRIMARY KEY, etag TEXT NOT NULL, body TEXT NOT NULL)",),
}
# A batch of at least 1/SCAN_RATIO of a set's size reads the set once instead
# of probing it per hash: a probe costs a few times what reading one line does.
SCAN_RATIO = 4
SCAN_SLICE = 100_000


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
        # One thread at a time uses the connection, but not always the one that
        # opened it: a big lookup reads on a helper thread while the caller waits.
        connection = sqlite3.connect(
            home / "store.sqlite3", isolation_level=None, timeout=60, check_same_thread=False
        )
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        store = cls(connection, batch_hook)
        store._migrate()
        return store

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _migrate(self) -> None:
        with self._transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise InputError(
                    f"the local store has schema {version}; this hashex knows up to "
                    f"{SCHEMA_VERSION}: upgrade hashex"
                )
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            for step in range(max(version, 1), SCHEMA_VERSION):
                for (set_id,) in self._db.execute("SELECT id FROM sets").fetchall():
                    for statement in _MIGRATIONS.get(step, ()):
                        self._db.execute(statement.format(table=_table(set_id)))
                for statement in _STORE_MIGRATIONS.get(step, ()):
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _transaction(self, *, immediate: bool = True) -> _Transaction:
        return _Transaction(self._db, immediate)

    # The hub's last listing

    def listing(self, hub: str) -> tuple[str, str] | None:
        """The ETag and JSON text of the last listing ``hub`` sent, if any."""
        row = self._db.execute("SELECT etag, body FROM listings WHERE hub = ?", (hub,)).fetchone()
        return None if row is None else (row[0], row[1])

    def save_listing(self, hub: str, etag: str, body: str) -> None:
        """Remember ``hub``'s listing and its ETag for the next poll."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO listings VALUES (?, ?, ?) "
                "ON CONFLICT (hub) DO UPDATE SET etag = excluded.etag, body = excluded.body",
                (hub, etag, body),
            )

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

    def pins(self) -> list[Pin]:
        """Every pin, by agency."""
        rows = self._db.execute("SELECT agency, kind, value FROM pins ORDER BY agency")
        return [Pin(*row) for row in rows]

    def remove_pin(self, agency: str) -> list[str]:
        """Unpin ``agency`` and drop its keysets and every set of it held; the sets dropped.

        What was verified under a pin is only as trusted as the pin: nothing of
        the agency may keep answering lookups once it is gone.
        """
        with self._transaction():
            if (
                self._db.execute("SELECT 1 FROM pins WHERE agency = ?", (agency,)).fetchone()
                is None
            ):
                raise InputError(f"agency {agency} is not pinned")
            held = self._db.execute(
                "SELECT id, name FROM sets WHERE name >= ? AND name < ? ORDER BY name",
                (f"{agency}/", f"{agency}0"),
            ).fetchall()
            for set_id, _ in held:
                self._db.execute(f"DROP TABLE IF EXISTS {_table(set_id)}")
                self._db.execute("DELETE FROM sets WHERE id = ?", (set_id,))
            self._db.execute("DELETE FROM keysets WHERE agency = ?", (agency,))
            self._db.execute("DELETE FROM pins WHERE agency = ?", (agency,))
        return [name for _, name in held]

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

    def apply_delta(
        self,
        name: str,
        document: SignedDocument,
        delta: VerifiedDelta,
        *,
        before_commit: Callable[[], object] | None = None,
    ) -> None:
        """Apply one verified delta and record its manifest, all in one transaction.

        Removes go first and must be present exactly as written; then adds,
        whose identities must be absent.  Anything else rolls the whole
        version back and raises DeltaApplyError.  ``before_commit`` runs last,
        inside the transaction: whatever it raises rolls the version back too.
        """
        with self._transaction():
            set_id = self._set_id(name)
            table = _table(set_id)
            batches = 0
            for block in delta.remove_blocks():
                self._remove(table, block)
                batches += 1
                self._after_batch(batches)
            # An empty table clashes with nothing: a first version's adds,
            # however many, are appended without a probe each.
            empty = self._db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None  # noqa: S608
            for block in delta.add_blocks():
                lines = json_array(block)
                if (
                    not empty
                    and self._db.execute(_COUNT_CLASHES.format(table=table), (lines,)).fetchone()[0]
                ):
                    raise DeltaApplyError("adds an identity which is already held")
                self._db.execute(_INSERT.format(table=table), (lines,))
                batches += 1
                self._after_batch(batches)
            self._record(set_id, document)
            if before_commit is not None:
                before_commit()

    def _remove(self, table: str, block: list[bytes]) -> None:
        """Delete a block of entry lines, every one of which must be held exactly."""
        count = _COUNT_HELD.format(table=table)
        lines = json_array(block)
        if self._db.execute(count, (lines,)).fetchone()[0] != len(block):
            missing = next(
                line
                for line in block
                if not self._db.execute(count, (json_array([line]),)).fetchone()[0]
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
            self._db.execute(f"CREATE TABLE {fresh} (line TEXT PRIMARY KEY) WITHOUT ROWID")
            for number, block in enumerate(blocks, 1):
                self._db.execute(_INSERT.format(table=fresh), (json_array(block),))
                self._after_batch(number)
            self._db.execute(f"DROP TABLE {table}")
            self._db.execute(f"ALTER TABLE {fresh} RENAME TO {table}")
            self._record(set_id, document)

    def iter_content(self, name: str) -> Iterator[bytes]:
        """The held entries of a set as canonical lines, in bytewise order."""
        row = self._db.execute("SELECT id FROM sets WHERE name = ?", (name,)).fetchone()
        if row is None:
            return
        cursor = self._db.execute(f"SELECT line FROM {_table(row[0])} ORDER BY line")  # noqa: S608
        for (line,) in cursor:
            yield line.encode("ascii")

    def lookup(self, identities: Iterable[str]) -> list[Match]:
        """Every held entry whose identity (``alg:hex``) is one of ``identities``."""
        by_algorithm: dict[str, set[str]] = {}
        for identity in identities:
            alg, _, hex_ = identity.partition(":")
            by_algorithm.setdefault(alg, set()).add(hex_)
        return self.lookup_digests(by_algorithm)

    def lookup_digests(self, asked: Mapping[str, Collection[str]]) -> list[Match]:
        """Every held entry of algorithm ``alg`` and a hex digest in ``asked[alg]``.

        Per set and algorithm, a batch small against the set probes the set
        once per digest, all in one statement; a batch of at least a
        1/SCAN_RATIO of the set reads the set's digests once, a key range at
        a time, and keeps those asked for.  Either way, a few statements per
        set, however many hashes are asked.
        """
        sets = self._db.execute(
            "SELECT id, name, version, manifest FROM sets WHERE version > 0"
        ).fetchall()
        matches: list[Match] = []
        wanted: dict[str, set[str]] = {}
        # One read transaction: every set is read at one version each, and a
        # sync running alongside is not blocked.
        with self._transaction(immediate=False):
            for set_id, name, version, manifest in sets:
                table = _table(set_id)
                count = Manifest.parse(manifest.encode("ascii")).count
                for alg, digests in asked.items():
                    found: Collection[str] = digests
                    if digests and count <= SCAN_RATIO * len(digests):
                        found = self._held_among(table, alg, count, digests, wanted)
                    for line in self._probe(table, alg, found):
                        identity, _, label = line.partition(" ")
                        matches.append(Match(identity, label or None, name, version))
        return matches

    def _probe(self, table: str, alg: str, digests: Collection[str]) -> list[str]:
        if not digests:
            return []
        # Each once, and sorted: the probes walk the set's B-tree in order.
        array = json.dumps(sorted({f"{alg}:{digest}" for digest in digests}))
        return [line for (line,) in self._db.execute(_PROBE.format(table=table), (array,))]

    def _held_among(
        self,
        table: str,
        alg: str,
        count: int,
        digests: Collection[str],
        wanted: dict[str, set[str]],
    ) -> set[str]:
        """The ``digests`` that ``table`` holds, reading it a key range at a time.

        Digests are uniformly spread, so ranges cut at the leading hex digits
        hold about the same number of lines: enough of them that each holds
        about SCAN_SLICE lines at most, which bounds the memory a range costs.
        The ranges are read on a helper thread (SQLite runs without the GIL)
        while this one makes the set of digests asked for, kept in ``wanted``
        for the next set.
        """
        digits = 0
        while count > SCAN_SLICE * 16**digits:
            digits += 1
        prefixes = [f"{prefix:0{digits}x}" for prefix in range(16**digits)] if digits else [""]
        bounds = [f"{alg}:{prefix}" for prefix in prefixes] + [f"{alg};"]
        statement = _HEX_RANGE.format(table=table)

        def read(low: str, high: str) -> str | None:
            parameters = {
                "start": len(alg) + 2,
                "length": ALGORITHMS[alg],
                "low": low,
                "high": high,
            }
            joined: str | None = self._db.execute(statement, parameters).fetchone()[0]
            return joined

        held: set[str] = set()
        with ThreadPoolExecutor(max_workers=1) as reader:
            ranges = reader.map(read, bounds[:-1], bounds[1:])
            if alg not in wanted:
                wanted[alg] = digests if isinstance(digests, set) else set(digests)
            for joined in ranges:
                if joined is not None:
                    held.update(wanted[alg].intersection(joined.split("\n")))
        return held

    def holds_algorithm(self, alg: str) -> bool:
        """Whether any held set has an entry of algorithm ``alg``."""
        ids = self._db.execute("SELECT id FROM sets WHERE version > 0").fetchall()
        return any(self._table_holds(set_id, alg) for (set_id,) in ids)

    def algorithms_of(self, name: str) -> set[str]:
        """The algorithms of the entries held for set ``name`` (empty if none or not held)."""
        row = self._db.execute("SELECT id FROM sets WHERE name = ?", (name,)).fetchone()
        if row is None:
            return set()
        return {alg for alg in ALGORITHMS if self._table_holds(row[0], alg)}

    def _table_holds(self, set_id: int, alg: str) -> bool:
        # Lines start "<alg>:" and ";" follows ":" in ASCII: a range, one index probe.
        row = self._db.execute(
            f"SELECT 1 FROM {_table(set_id)} WHERE line >= ? AND line < ? LIMIT 1",  # noqa: S608
            (f"{alg}:", f"{alg};"),
        ).fetchone()
        return row is not None

    def _set_id(self, name: str) -> int:
        row = self._db.execute("SELECT id FROM sets WHERE name = ?", (name,)).fetchone()
        if row is not None:
            set_id: int = row[0]
            return set_id
        cursor = self._db.execute("INSERT INTO sets (name, version) VALUES (?, 0)", (name,))
        new_id = cursor.lastrowid
        if new_id is None:
            raise RuntimeError("SQLite gave no row id for a new set")
        self._db.execute(f"CREATE TABLE {_table(new_id)} (line TEXT PRIMARY KEY) WITHOUT ROWID")
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


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
