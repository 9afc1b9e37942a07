"""A small synthetic hub world for the API tests, seeded through the services.

Agencies are registered with real signed keysets (``client.keysets.make_keyset``
over fresh Ed25519 keys), tokens come from ``server.services.tokens``, groups
from ``server.services.groups`` and sets and grants from ``server.services.sets``,
so the rows are exactly what the hub itself writes.

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

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from client.keysets import KeyChoice, make_keyset
from client.protocol.documents import SignedDocument
from client.protocol.keys import generate_private_key
from server.engine import make_engine, make_session_factory
from server.models import AuditEvent
from server.services import agencies, groups, sets, tokens
from server.services.callers import Actor, Caller, Role

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

# The data tables a refused request must leave alone (the audit log is checked apart).
DATA_TABLES = (
    "agencies",
    "keysets",
    "tokens",
    "sharing_groups",
    "group_members",
    "sets",
    "grants",
)


@dataclass
class Hub:
    """What the tests need to know about a seeded database: its tokens and keys."""

    database_url: str
    secrets: dict[tuple[str, Role], str] = field(default_factory=dict)
    token_ids: dict[tuple[str, Role], int] = field(default_factory=dict)
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    keysets: dict[str, SignedDocument] = field(default_factory=dict)
    agency_ids: dict[str, int] = field(default_factory=dict)

    def secret(self, agency: str, role: Role | str) -> str:
        """The bearer secret of ``agency``'s token of ``role``."""
        return self.secrets[(agency, Role(role))]

    def auth(self, agency: str, role: Role | str) -> dict[str, str]:
        """The ``Authorization`` header of ``agency``'s token of ``role``."""
        return bearer(self.secret(agency, role))

    def caller(self, agency: str, role: Role | str) -> Caller:
        """A service-level caller for ``agency``'s token of ``role``."""
        token_id = self.token_ids[(agency, Role(role))]
        return Caller(token_id, self.agency_ids[agency], agency, Role(role))


def bearer(secret: str) -> dict[str, str]:
    """An ``Authorization: Bearer`` header."""
    return {"Authorization": f"Bearer {secret}"}


def signed_keyset(agency: str, key: Ed25519PrivateKey | None = None) -> SignedDocument:
    """A valid keyset 1 of ``agency``: one key in both roles, signed by itself."""
    return make_keyset(agency, 1, KeyChoice(both=[key or generate_private_key()]), 365)


@contextmanager
def engine_for(database_url: str) -> Iterator[Engine]:
    """An engine on ``database_url``, disposed at the end."""
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def session_factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on ``database_url``; its engine is disposed at the end."""
    with engine_for(database_url) as engine:
        yield make_session_factory(engine)


def add_agency(factory: sessionmaker[Session], hub: Hub, slug: str) -> int:
    """Register ``slug`` with a fresh key and keyset 1; its id."""
    key = generate_private_key()
    document = signed_keyset(slug, key)
    with factory() as session:
        agency = agencies.create_agency(session, OPERATOR, slug, f"Agency {slug}", document.dumps())
        hub.keys[slug] = key
        hub.keysets[slug] = document
        return agency.id


def add_token(
    factory: sessionmaker[Session],
    hub: Hub,
    agency: str,
    role: Role,
    *,
    expires_days: int | None = None,
) -> str:
    """A token of ``role`` for ``agency``, recorded in ``hub``; its secret."""
    with factory() as session:
        token, secret = tokens.create_token(
            session, OPERATOR, agency, role, name=f"{agency}-{role}", expires_days=expires_days
        )
    hub.secrets[(agency, role)] = secret
    hub.token_ids[(agency, role)] = token.id
    return secret


def seed_agencies(
    database_url: str, agencies_roles: Mapping[str, Sequence[Role]] | None = None
) -> Hub:
    """Just agencies (default: alpha) with one token of each role given (default: all)."""
    hub = Hub(database_url)
    with session_factory(database_url) as factory:
        for slug, roles in (agencies_roles or {"alpha": ROLES}).items():
            hub.agency_ids[slug] = add_agency(factory, hub, slug)
            for role in roles:
                add_token(factory, hub, slug, role)
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


def snapshot(database_url: str, tables: Sequence[str] = DATA_TABLES) -> dict[str, list[Any]]:
    """Every row of ``tables``, sorted, to compare before and after a request."""
    with engine_for(database_url) as engine, engine.connect() as connection:
        return {
            table: sorted(
                (tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}"))),  # noqa: S608
                key=repr,
            )
            for table in tables
        }


def audit_rows(database_url: str, after: int = 0) -> list[AuditEvent]:
    """The audit events with ids above ``after``, oldest first."""
    with session_factory(database_url) as factory, factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id)
            ).all()
        )


def audit_count(database_url: str) -> int:
    """How many audit rows the database holds."""
    with session_factory(database_url) as factory, factory() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
