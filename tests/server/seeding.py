"""Hub databases seeded through the services, and versions signed to publish into them.

Agencies are registered through ``server.services.agencies`` with real signed
keysets (``client.keysets.make_keyset`` over fresh Ed25519 keys) whose
private keys the tests keep; tokens come from ``server.services.tokens``,
groups from ``server.services.groups``, sets and grants from
``server.services.sets``, so the rows are exactly what the hub itself writes.
Every entry is a synthetic random hash.

The pieces:

* :func:`add_agency` -- an agency with ``keys`` keys in both roles, a
  publish threshold, and a token of each role given (:class:`AgencyKeys`);
  :func:`add_token` -- another token for it;
* :func:`seed_agencies` / :func:`seed_world` -- several agencies, or the
  standard world below, as a :class:`Hub`;
* :func:`add_set` -- a set of an agency, optionally granted to readers;
* :class:`SetChain` -- the publisher's view of one set: its latest manifest
  and content; :meth:`SetChain.build` signs the next version from a new
  content, :meth:`SetChain.accept` moves the chain on once the hub took it;
* :func:`resign`, :func:`sign_bytes`, :func:`for_delta` -- a candidate with
  manifest fields changed (or arbitrary manifest bytes) signed again, for the
  refusals that must get past the signature check;
* :func:`multipart` / :func:`publish_body` -- a publish request body, built
  once and sent by the Flask test client or by httpx alike;
* :func:`pretend_newer_schema` -- a database a newer release has upgraded.

The standard world (:func:`seed_world`)::

    agencies  alpha (the caller's own), beta (owns the other sets),
              gamma (no relation to anything), delta (reads what alpha may not)
    groups    partners = {alpha}, others = {delta}
    sets      alpha/own          owned by alpha, granted to delta
              beta/to-agency     granted to alpha
              beta/to-group      granted to group:partners
              beta/ungranted     granted to delta and group:others (never to alpha)
    tokens    one of every role for every agency
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from client.keysets import KeyChoice, make_keyset
from client.protocol.building import build_version
from client.protocol.documents import Keyset, Manifest, SignedDocument, sha256_hex, sign_document
from client.protocol.keys import generate_private_key
from server.services import agencies, groups, sets, tokens
from server.services.callers import Actor, Caller, Role
from tests.server.dbstate import engine_for, session_factory
from tests.synthetic import now

OPERATOR = Actor("cli:test-operator")
ROLES = (Role.ADMIN, Role.AGENCY_ADMIN, Role.PUBLISHER, Role.READER)

AGENCIES = ("alpha", "beta", "gamma", "delta")
GROUPS: Mapping[str, Sequence[str]] = {"partners": ("alpha",), "others": ("delta",)}
# name -> (title, readers)
SETS: Mapping[str, tuple[str, Sequence[str]]] = {
    "alpha/own": ("Alpha's own list", ("delta",)),
    "beta/to-agency": ("Granted to alpha", ("alpha",)),
    "beta/to-group": ("Granted to partners", ("group:partners",)),
    "beta/ungranted": ("Never granted to alpha", ("delta", "group:others")),
}

# A fixed boundary keeps request bodies deterministic (and easy to read in a failure).
BOUNDARY = "hashex-test-boundary-7f3a9c"
# A revision id no release of Hashex has: what a newer release would leave.
NEWER_REVISION = "ffffffffffff"


# -- agencies and tokens -----------------------------------------------------------------


def bearer(secret: str) -> dict[str, str]:
    """An ``Authorization: Bearer`` header."""
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class AgencyKeys:
    """A registered agency: its private keys, its keyset 1, and its newest token per role."""

    slug: str
    id: int
    keys: list[Ed25519PrivateKey]
    document: SignedDocument
    secrets: dict[Role, str] = field(default_factory=dict)
    token_ids: dict[Role, int] = field(default_factory=dict)

    @property
    def keyset(self) -> Keyset:
        """Its keyset 1, parsed."""
        return Keyset.parse(self.document.data)

    def auth(self, role: Role = Role.PUBLISHER) -> dict[str, str]:
        """The ``Authorization`` header of this agency's token of ``role``."""
        return bearer(self.secrets[role])

    def caller(self, role: Role) -> Caller:
        """This agency's token of ``role`` as a service-level caller."""
        return Caller(self.token_ids[role], self.id, self.slug, role)


def add_agency(
    database_url: str,
    slug: str,
    *,
    keys: int = 1,
    publish_threshold: int = 1,
    roles: Sequence[Role] = ROLES,
) -> AgencyKeys:
    """Register ``slug`` with ``keys`` fresh keys in both roles and a token of each of ``roles``."""
    private = [generate_private_key() for _ in range(keys)]
    document = make_keyset(
        slug, 1, KeyChoice(both=private, publish_threshold=publish_threshold), 365
    )
    with session_factory(database_url) as factory:
        with factory() as session:
            agency = agencies.create_agency(
                session, OPERATOR, slug, f"Agency {slug}", document.dumps()
            )
            found = AgencyKeys(slug, agency.id, private, document)
        for role in roles:
            _create_token(factory, found, role)
    return found


def add_token(
    database_url: str, agency: AgencyKeys, role: Role, *, expires_days: int | None = None
) -> str:
    """A new token of ``role`` for ``agency``, now its token of that role; its secret."""
    with session_factory(database_url) as factory:
        return _create_token(factory, agency, role, expires_days)


def _create_token(
    factory: sessionmaker[Session], agency: AgencyKeys, role: Role, expires_days: int | None = None
) -> str:
    with factory() as session:
        token, secret = tokens.create_token(
            session,
            OPERATOR,
            agency.slug,
            role,
            name=f"{agency.slug}-{role}",
            expires_days=expires_days,
        )
    agency.secrets[role] = secret
    agency.token_ids[role] = token.id
    return secret


@dataclass
class Hub:
    """A seeded database and its agencies, for the tests that act as them."""

    database_url: str
    agencies: dict[str, AgencyKeys] = field(default_factory=dict)

    def secret(self, agency: str, role: Role | str) -> str:
        """The bearer secret of ``agency``'s token of ``role``."""
        return self.agencies[agency].secrets[Role(role)]

    def auth(self, agency: str, role: Role | str) -> dict[str, str]:
        """The ``Authorization`` header of ``agency``'s token of ``role``."""
        return bearer(self.secret(agency, role))

    def token_id(self, agency: str, role: Role | str) -> int:
        """The id of ``agency``'s token of ``role``."""
        return self.agencies[agency].token_ids[Role(role)]

    def caller(self, agency: str, role: Role | str) -> Caller:
        """A service-level caller for ``agency``'s token of ``role``."""
        return self.agencies[agency].caller(Role(role))

    def secrets(self) -> list[str]:
        """The secret of every agency's token of every role."""
        return [secret for agency in self.agencies.values() for secret in agency.secrets.values()]


def seed_agencies(
    database_url: str, agencies_roles: Mapping[str, Sequence[Role]] | None = None
) -> Hub:
    """Just agencies (default: alpha) with one token of each role given (default: all)."""
    hub = Hub(database_url)
    for slug, roles in (agencies_roles or {"alpha": ROLES}).items():
        hub.agencies[slug] = add_agency(database_url, slug, roles=roles)
    return hub


def seed_world(database_url: str) -> Hub:
    """Seed the standard world (see the module docstring) into ``database_url``."""
    hub = seed_agencies(database_url, dict.fromkeys(AGENCIES, ROLES))
    with session_factory(database_url) as factory:
        for group, members in GROUPS.items():
            with factory() as session:
                groups.create_group(session, OPERATOR, group)
            for member in members:
                with factory() as session:
                    groups.add_member(session, OPERATOR, group, member)
        for name, (title, readers) in SETS.items():
            owner, slug = name.split("/")
            caller = hub.caller(owner, Role.AGENCY_ADMIN)
            with factory() as session:
                sets.create_set(session, caller, name, title)
            with factory() as session:
                sets.set_grants(session, caller, owner, slug, list(readers), if_match=None)
    return hub


# -- sets and the versions published into them ---------------------------------------------


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


# -- the schema ------------------------------------------------------------------------------


def pretend_newer_schema(database_url: str) -> None:
    """Mark a migrated database as upgraded by a newer release of the hub."""
    with engine_for(database_url) as engine, engine.begin() as connection:
        connection.execute(
            text("UPDATE alembic_version SET version_num = :revision"),
            {"revision": NEWER_REVISION},
        )
