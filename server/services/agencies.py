"""Agencies and their signed keysets.

The hub registers an agency only with a keyset 1 that verifies against its
own root keys, for that slug, exactly as a consumer would check it: the hub
never stores a keyset that no consumer could accept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from client.protocol.documents import Keyset, SignedDocument, verify_keyset
from client.protocol.errors import VerificationError
from client.protocol.names import SLUG_RE, check_slug
from server.engine import begin_exclusive
from server.errors import BadRequestError, ConflictError, NotFoundError, UnprocessableError
from server.models import Agency, AgencyKeyset, HubKey, utcnow
from server.services import audit
from server.services.callers import Actor
from server.services.text import MAX_NAME_LENGTH, check_text


class AgencyExistsError(ConflictError):
    """The slug is taken: agency slugs are never reused."""

    slug = "agency-exists"
    title = "Agency exists"


class InvalidKeysetError(UnprocessableError):
    """A keyset that does not verify, is not the expected version, or reuses a hub key."""

    slug = "invalid-keyset"
    title = "Invalid keyset"


def get_agency(session: Session, slug: str) -> Agency:
    """The agency ``slug``, or NotFoundError (also for a slug that could never exist)."""
    if not SLUG_RE.fullmatch(slug):
        raise NotFoundError(f"there is no agency {slug[:80]!r}")
    agency = session.scalar(select(Agency).where(Agency.slug == slug))
    if agency is None:
        raise NotFoundError(f"there is no agency {slug!r}")
    return agency


def create_agency(
    session: Session, actor: Actor, slug: str, name: str, keyset_file: str | bytes
) -> Agency:
    """Register an agency with its signed keyset 1 (the keyset file's JSON text)."""
    try:
        check_slug(slug, "agency")
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None
    name = check_text("name", name, max_length=MAX_NAME_LENGTH)
    try:
        document = SignedDocument.loads("keyset", keyset_file)
        keyset = verify_keyset(document.data, document.signatures, None, agency=slug)
    except VerificationError as exc:
        raise InvalidKeysetError(f"keyset file: {exc}") from None
    begin_exclusive(session, "agencies")
    if session.scalar(select(Agency.id).where(Agency.slug == slug)) is not None:
        raise AgencyExistsError(f"agency {slug!r} already exists")
    _refuse_hub_keys(session, keyset)
    now = utcnow()
    agency = Agency(slug=slug, name=name, created_at=now)
    session.add(agency)
    session.flush()
    session.add(_keyset_row(agency, document, keyset))
    audit.record(
        session,
        actor,
        "agency.create",
        target=f"agency:{slug}",
        subject_agency=slug,
        detail={"name": agency.name, "keyset_sha256": keyset.digest},
    )
    session.commit()
    return agency


def _refuse_hub_keys(session: Session, keyset: Keyset) -> None:
    # A key that signs the hub's log must never also speak for an agency: the
    # log is there to catch the hub lying about agencies' documents.
    key_ids = set(keyset.root_keys) | set(keyset.publish_keys)
    shared = session.scalar(select(HubKey.keyid).where(HubKey.keyid.in_(key_ids)).limit(1))
    if shared is not None:
        raise InvalidKeysetError(f"key {shared} is the hub's log key; an agency needs its own")


def _keyset_row(agency: Agency, document: SignedDocument, keyset: Keyset) -> AgencyKeyset:
    return AgencyKeyset(
        agency_id=agency.id,
        version=keyset.version,
        body=document.data.decode("ascii"),
        signatures=json.dumps([s.to_json() for s in document.signatures]),
        sha256=keyset.digest,
        expires_at=keyset.expires,
        created_at=utcnow(),
    )


@dataclass(frozen=True)
class AgencyView:
    """An agency with its newest keyset."""

    slug: str
    name: str
    created_at: datetime
    keyset: AgencyKeyset


def list_agencies(session: Session) -> list[AgencyView]:
    """Every agency with its newest keyset, by slug."""
    return [
        AgencyView(
            agency.slug, agency.name, agency.created_at, list_keysets(session, agency.slug)[-1]
        )
        for agency in session.scalars(select(Agency).order_by(Agency.slug))
    ]


def agency_view(session: Session, agency: Agency) -> AgencyView:
    """One agency with its newest keyset."""
    return AgencyView(
        agency.slug, agency.name, agency.created_at, list_keysets(session, agency.slug)[-1]
    )


def list_keysets(session: Session, slug: str, *, after: int = 0) -> Sequence[AgencyKeyset]:
    """The agency's keysets with versions above ``after``, oldest first."""
    agency = get_agency(session, slug)
    return session.scalars(
        select(AgencyKeyset)
        .where(AgencyKeyset.agency_id == agency.id, AgencyKeyset.version > after)
        .order_by(AgencyKeyset.version)
    ).all()
