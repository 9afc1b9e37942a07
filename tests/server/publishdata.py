"""Seeding and signing for the publishing and pulling tests.

Agencies are registered through ``server.services.agencies`` with real
signed keysets whose private keys the tests keep, so they can sign valid
versions (``client.protocol.building.build_version``) and then tamper with
exactly one thing.  Every entry is a synthetic random hash.

The pieces:

* :func:`add_agency` -- an agency with ``keys`` Ed25519 keys in both roles,
  a publish threshold, and a token of each role (:class:`AgencyKeys`);
* :func:`add_set` -- a set of that agency, optionally granted to readers;
* :class:`SetChain` -- the publisher's view of one set: its latest manifest
  and content; :meth:`SetChain.build` signs the next version from a new
  content, :meth:`SetChain.accept` moves the chain on once the hub took it;
* :func:`resign` -- the same candidate with manifest fields changed, signed
  again, for the refusals that must get past the signature check;
* :func:`multipart` -- a publish request body, built once and sent by the
  Flask test client or by httpx alike (and gzipped for upload tests);
* :func:`set_data` / :func:`audit_events` -- what a refused publish must
  leave alone, and what it must append;
* :func:`shared_database` -- one migrated database for a whole module, for
  tests that only read or must change nothing;
* :func:`serving` -- a real ``hashex-server serve`` on a free port of
  127.0.0.1, with its gunicorn workers' pids read from /proc.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, text

from client.keysets import KeyChoice, make_keyset
from client.protocol.building import build_version
from client.protocol.documents import Keyset, Manifest, SignedDocument, sha256_hex, sign_document
from client.protocol.entries import ALGORITHMS
from client.protocol.keys import generate_private_key
from server.errors import problem_type
from server.models import AuditEvent
from server.services import agencies, sets, tokens
from server.services.callers import Actor, Caller, Role
from tests.conftest import _sqlite_copy
from tests.server.hubdata import engine_for, session_factory

OPERATOR = Actor("cli:test")
ROLES = (Role.ADMIN, Role.AGENCY_ADMIN, Role.PUBLISHER, Role.READER)
# What a publish writes to; a refused one must leave every row of these alone.
SET_TABLES = ("sets", "versions", "entries")
# A fixed boundary keeps request bodies deterministic (and easy to read in a failure).
BOUNDARY = "hashex-test-boundary-7f3a9c"
LABELS = ("cat-a", "cat-b", "vics-1", "Zeta.9", "x_y-z", "0")
BIN = Path(sys.executable).parent
SERVER_START_SECONDS = 20.0


@dataclass
class AgencyKeys:
    """A registered agency: its private keys, its keyset, and one token per role."""

    slug: str
    id: int
    keys: list[Ed25519PrivateKey]
    keyset: Keyset
    secrets: dict[Role, str] = field(default_factory=dict)
    token_ids: dict[Role, int] = field(default_factory=dict)

    def auth(self, role: Role = Role.PUBLISHER) -> dict[str, str]:
        """The ``Authorization`` header of this agency's token of ``role``."""
        return {"Authorization": f"Bearer {self.secrets[role]}"}

    def caller(self, role: Role) -> Caller:
        """This agency's token of ``role`` as a service-level caller."""
        return Caller(self.token_ids[role], self.id, self.slug, role)


def add_agency(
    database_url: str, slug: str, *, keys: int = 1, publish_threshold: int = 1
) -> AgencyKeys:
    """Register ``slug`` with ``keys`` fresh keys in both roles and a token of every role."""
    private = [generate_private_key() for _ in range(keys)]
    document = make_keyset(
        slug, 1, KeyChoice(both=private, publish_threshold=publish_threshold), 365
    )
    with session_factory(database_url) as factory:
        with factory() as session:
            agency = agencies.create_agency(
                session, OPERATOR, slug, f"Agency {slug}", document.dumps()
            )
        found = AgencyKeys(slug, agency.id, private, Keyset.parse(document.data))
        for role in ROLES:
            with factory() as session:
                token, secret = tokens.create_token(
                    session, OPERATOR, slug, role, name=f"{slug}-{role}", expires_days=1
                )
            found.secrets[role] = secret
            found.token_ids[role] = token.id
    return found


def add_set(
    database_url: str, owner: AgencyKeys, slug: str, readers: Sequence[str] = ()
) -> SetChain:
    """Create ``owner/slug`` (granted to ``readers``) and the chain that publishes it."""
    caller = owner.caller(Role.AGENCY_ADMIN)
    with session_factory(database_url) as factory:
        with factory() as session:
            sets.create_set(session, caller, f"{owner.slug}/{slug}", f"Set {slug}")
        if readers:
            with factory() as session:
                sets.set_grants(session, caller, owner.slug, slug, list(readers), if_match=None)
    return SetChain(owner, slug)


def shared_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database for a whole module (``request.param``: sqlite or postgresql).

    For a module-scoped fixture parametrized with ``tests.conftest.DATABASE_KINDS``:
    tests that only read, or whose every request must leave the data alone,
    share one seeded hub instead of seeding one each.  It is made exactly as
    ``database_url`` makes its per-test copies, from the same templates.
    """
    if request.param == "sqlite":
        directory = tmp_path_factory.mktemp("shared-hub")
        yield _sqlite_copy(request.getfixturevalue("_sqlite_template"), directory)
        return
    server = request.getfixturevalue("_postgres")
    name, url = server.create(template=request.getfixturevalue("_postgres_template"))
    try:
        yield url
    finally:
        server.drop(name)


def now() -> datetime:
    """The current time, whole seconds, aware UTC."""
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Candidate:
    """A signed manifest, its delta bytes, and the content it leads to (sorted lines)."""

    document: SignedDocument
    delta: bytes
    lines: tuple[bytes, ...]

    @property
    def manifest(self) -> Manifest:
        """The manifest, parsed (only valid for canonical manifests)."""
        return Manifest.parse(self.document.data)

    @property
    def version(self) -> int:
        """The version number the document carries."""
        return self.document.version

    def signatures_json(self) -> str:
        """The ``signatures`` part: a JSON array of ``{"keyid", "sig"}``."""
        return json.dumps([s.to_json() for s in self.document.signatures])


@dataclass
class SetChain:
    """One set as its publisher sees it: the latest accepted manifest and content."""

    agency: AgencyKeys
    slug: str
    version: int = 0
    manifest: bytes | None = None
    lines: tuple[bytes, ...] = ()
    accepted: list[Candidate] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``<agency>/<set>``."""
        return f"{self.agency.slug}/{self.slug}"

    @property
    def url(self) -> str:
        """The publish and listing path of the set."""
        return f"/v1/sets/{self.name}/versions"

    def build(
        self,
        new_lines: Iterable[bytes],
        *,
        keys: Sequence[Ed25519PrivateKey] | None = None,
        issued: datetime | None = None,
        expires: datetime | None = None,
    ) -> Candidate:
        """Sign the next version whose content is ``new_lines`` (any order, no LF)."""
        new = tuple(sorted(set(new_lines)))
        delta = io.BytesIO()
        moment = now()
        document = build_version(
            set_name=self.name,
            parent=self.manifest,
            old=self.lines,
            new=new,
            keyset=self.agency.keyset,
            keys=self.agency.keys if keys is None else keys,
            issued=moment - timedelta(minutes=1) if issued is None else issued,
            expires=moment + timedelta(days=30) if expires is None else expires,
            delta_out=delta,
        )
        return Candidate(document, delta.getvalue(), new)

    def accept(self, candidate: Candidate) -> None:
        """Move the chain on to ``candidate``, which the hub stored."""
        self.version = candidate.version
        self.manifest = candidate.document.data
        self.lines = candidate.lines
        self.accepted.append(candidate)


def resign(
    candidate: Candidate,
    keys: Sequence[Ed25519PrivateKey],
    *,
    delta: bytes | None = None,
    **changes: Any,
) -> Candidate:
    """``candidate`` with manifest fields changed (and maybe new delta bytes), re-signed."""
    manifest = dataclasses.replace(candidate.manifest, **changes)
    document = sign_document("manifest", manifest.encode(), manifest.version, keys)
    return Candidate(document, candidate.delta if delta is None else delta, candidate.lines)


def sign_bytes(data: bytes, version: int, keys: Sequence[Ed25519PrivateKey]) -> SignedDocument:
    """Sign arbitrary manifest bytes (canonical or not) with ``keys``."""
    return sign_document("manifest", data, version, keys)


def for_delta(candidate: Candidate, keys: Sequence[Ed25519PrivateKey], delta: bytes) -> Candidate:
    """A manifest signed for exactly these ``delta`` bytes: their digest and line counts."""
    lines = delta.splitlines()
    return resign(
        candidate,
        keys,
        delta=delta,
        delta_digest=sha256_hex(delta),
        adds=sum(1 for line in lines if line.startswith(b"+")),
        removes=sum(1 for line in lines if not line.startswith(b"+")),
    )


def multipart(
    fields: Mapping[str, bytes], files: Mapping[str, bytes] | None = None
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its Content-Type: form fields, then files.

    Built by hand with a fixed boundary, so equal parts always give equal bodies.
    """
    out = bytearray()
    for name, data in fields.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += data + b"\r\n"
    for name, data in (files or {}).items():
        out += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={BOUNDARY}"


def publish_body(candidate: Candidate) -> tuple[bytes, str]:
    """The request body of publishing ``candidate``, and its Content-Type."""
    return multipart(
        {"manifest": candidate.document.data, "signatures": candidate.signatures_json().encode()},
        {"delta": candidate.delta},
    )


def random_line(rng: random.Random, alg: str | None = None, *, label: bool | None = None) -> bytes:
    """One synthetic canonical entry line: a random hash, maybe with a label."""
    name = alg or rng.choice(sorted(ALGORITHMS))
    hexdigits = rng.randbytes(ALGORITHMS[name] // 2).hex()
    with_label = rng.random() < 0.5 if label is None else label
    suffix = " " + rng.choice(LABELS) if with_label else ""
    return f"{name}:{hexdigits}{suffix}".encode("ascii")


def random_lines(rng: random.Random, count: int, alg: str | None = None) -> list[bytes]:
    """``count`` synthetic lines of distinct identities."""
    return [random_line(rng, alg) for _ in range(count)]


def set_data(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the set tables, sorted, to compare before and after a refusal."""
    with engine_for(database_url) as engine, engine.connect() as connection:
        return {
            table: sorted(
                (tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}"))),  # noqa: S608
                key=repr,
            )
            for table in SET_TABLES
        }


def latest_version(database_url: str, chain: SetChain) -> int:
    """The set's ``latest_version`` column."""
    with engine_for(database_url) as engine, engine.connect() as connection:
        value = connection.execute(
            text(
                "SELECT s.latest_version FROM sets s JOIN agencies a ON a.id = s.agency_id "
                "WHERE a.slug = :agency AND s.slug = :slug"
            ),
            {"agency": chain.agency.slug, "slug": chain.slug},
        ).scalar_one()
        return int(value)


def last_audit_id(database_url: str) -> int:
    """The id of the newest audit row (0 when there is none)."""
    with session_factory(database_url) as factory, factory() as session:
        return int(session.scalar(select(func.max(AuditEvent.id))) or 0)


def audit_events(database_url: str, after: int) -> list[AuditEvent]:
    """The audit rows with ids above ``after``, oldest first."""
    with session_factory(database_url) as factory, factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id)
            ).all()
        )


def poll_total(database_url: str) -> int:
    """The sum of every poll counter."""
    with engine_for(database_url) as engine, engine.connect() as connection:
        return int(
            connection.execute(text("SELECT COALESCE(SUM(polls), 0) FROM poll_counts")).scalar_one()
        )


def problem(slug: str) -> str:
    """The problem ``type`` URI of ``slug``."""
    return problem_type(slug)


# -- A real hub: ``hashex-server serve`` in a child process, on 127.0.0.1 only --


@dataclass(frozen=True)
class Server:
    """A running ``hashex-server serve``: its base URL, gunicorn master and log."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def http(self, timeout: float = 30.0) -> httpx.Client:
        """A client of this hub; trust_env=False keeps any proxy away from the traffic."""
        return httpx.Client(base_url=self.base_url, trust_env=False, timeout=timeout)

    def workers(self) -> list[int]:
        """The pids of the gunicorn master's children (its workers), from /proc."""
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                children.append(int(entry.name))
        return sorted(children)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(database_url: str, log: Path, *, workers: int) -> Iterator[Server]:
    """Run ``hashex-server serve`` on ``database_url`` until the block ends.

    Only ``HASHEX_DATABASE_URL`` is set for it (other ``HASHEX_*`` variables
    are dropped); it listens on a free port of 127.0.0.1.  Startup and
    shutdown are bounded: a hub that does not answer within
    SERVER_START_SECONDS fails the test with its log.
    """
    bind = f"127.0.0.1:{free_port()}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("HASHEX_")}
    env["HASHEX_DATABASE_URL"] = database_url
    command = [str(BIN / "hashex-server"), "serve", "--bind", bind, "--workers", str(workers)]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    server = Server(f"http://{bind}", process, log)
    try:
        _wait_until_up(server, workers)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=SERVER_START_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(server: Server, workers: int) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    with server.http(timeout=5.0) as http:
        while True:
            if server.process.poll() is not None:
                pytest.fail(
                    f"hub exited with {server.process.returncode}:\n{server.log.read_text()}"
                )
            try:
                if http.get("/v1/health").status_code == 200 and len(server.workers()) == workers:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"hub not up after {SERVER_START_SECONDS} s:\n{server.log.read_text()}")
            time.sleep(0.1)
