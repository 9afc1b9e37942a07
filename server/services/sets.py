"""Hash sets, who may see them, and their grants.

A set is readable by its owning agency, by the agencies it is granted to,
and by the members of the sharing groups it is granted to.  A set the caller
may not read does not exist for that caller: the same NotFoundError as a
missing one, with the same words, so a probe learns nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from client.protocol.names import SLUG_RE, check_set_name, check_slug
from server.engine import begin_exclusive
from server.errors import (
    ConflictError,
    ForbiddenError,
    InvalidFieldError,
    NotFoundError,
    PreconditionFailedError,
    UnprocessableError,
)
from server.models import (
    Agency,
    AgencyKeyset,
    Grant,
    GroupMember,
    HashSet,
    SharingGroup,
    utcnow,
)
from server.services import audit
from server.services.callers import Caller, Role
from server.services.text import MAX_TITLE_LENGTH, check_text

GROUP_PREFIX = "group:"
MAX_READERS = 500


class SetExistsError(ConflictError):
    """The set name is taken (set names are never reused)."""

    slug = "set-exists"
    title = "Set exists"


class UnknownReaderError(UnprocessableError):
    """A grant names an agency or group the hub does not know."""

    slug = "unknown-reader"
    title = "Unknown reader"


@dataclass(frozen=True)
class SetView:
    """A set as a caller sees it; ``grants`` only for its owner's agency."""

    name: str
    owner: str
    title: str
    latest_version: int
    created_at: datetime
    grants: list[str] | None


def view_etag(view: SetView) -> str:
    """A strong ETag of a set's metadata as one caller sees it."""
    fields = [view.name, view.title, view.latest_version, view.created_at.isoformat(), view.grants]
    digest = hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()
    return f'"{digest[:32]}"'


def set_not_found() -> NotFoundError:
    """The one answer for a set that is missing or that the caller may not read.

    The words never name the set: a missing set and a hidden one answer byte
    for byte the same, whatever name was probed.
    """
    return NotFoundError("no set of that name is visible to this token")


def readable_by(caller: Caller) -> ColumnElement[bool]:
    """SQL condition: the set is owned by, or granted to, the caller's agency."""
    in_group = select(GroupMember.group_id).where(GroupMember.agency_id == caller.agency_id)
    granted = exists().where(
        Grant.set_id == HashSet.id,
        or_(Grant.agency_id == caller.agency_id, Grant.group_id.in_(in_group)),
    )
    return or_(HashSet.agency_id == caller.agency_id, granted)


@dataclass(frozen=True)
class ListedSet(SetView):
    """A set in the poll's listing: its view and its owner's newest keyset version."""

    keyset: int


def list_sets(session: Session, caller: Caller) -> list[ListedSet]:
    """Every set the caller may read, by name, with its owner's newest keyset version.

    Two queries whatever the number of sets: the sets with their owners and
    keysets, and the readers of the caller's own sets.
    """
    newest = (
        select(AgencyKeyset.agency_id, func.max(AgencyKeyset.version).label("keyset"))
        .group_by(AgencyKeyset.agency_id)
        .subquery()
    )
    rows = session.execute(
        select(HashSet, Agency.slug, newest.c.keyset)
        .join(Agency, HashSet.agency_id == Agency.id)
        .join(newest, newest.c.agency_id == HashSet.agency_id)
        .where(readable_by(caller))
        .order_by(Agency.slug, HashSet.slug)
    ).all()
    grants = _grants_of_own_sets(session, caller)
    return [
        ListedSet(
            name=f"{owner}/{hash_set.slug}",
            owner=owner,
            title=hash_set.title,
            latest_version=hash_set.latest_version,
            created_at=hash_set.created_at,
            grants=grants.get(hash_set.id, []) if hash_set.agency_id == caller.agency_id else None,
            keyset=keyset,
        )
        for hash_set, owner, keyset in rows
    ]


def _grants_of_own_sets(session: Session, caller: Caller) -> dict[int, list[str]]:
    """The readers of every set of the caller's agency, as the grants field names them."""
    rows = session.execute(
        select(Grant.set_id, Agency.slug, SharingGroup.slug)
        .join(HashSet, Grant.set_id == HashSet.id)
        .outerjoin(Agency, Grant.agency_id == Agency.id)
        .outerjoin(SharingGroup, Grant.group_id == SharingGroup.id)
        .where(HashSet.agency_id == caller.agency_id)
    ).all()
    agencies: dict[int, list[str]] = {}
    groups: dict[int, list[str]] = {}
    for set_id, agency, group in rows:
        if agency is not None:
            agencies.setdefault(set_id, []).append(agency)
        else:
            groups.setdefault(set_id, []).append(GROUP_PREFIX + group)
    # Agencies first, then groups, each sorted: the order the set's metadata shows.
    return {
        set_id: sorted(agencies.get(set_id, [])) + sorted(groups.get(set_id, []))
        for set_id in agencies.keys() | groups.keys()
    }


def find_readable(session: Session, caller: Caller, agency: str, set_slug: str) -> HashSet:
    """The set ``agency/set_slug`` if the caller may read it, else NotFoundError."""
    # A name that could never exist is simply missing: it must not reach the
    # database, which may refuse it (a NUL byte on PostgreSQL) with another error.
    if not (SLUG_RE.fullmatch(agency) and SLUG_RE.fullmatch(set_slug)):
        raise set_not_found()
    found = session.scalar(
        select(HashSet)
        .join(Agency, HashSet.agency_id == Agency.id)
        .where(Agency.slug == agency, HashSet.slug == set_slug, readable_by(caller))
    )
    if found is None:
        raise set_not_found()
    return found


def get_set(session: Session, caller: Caller, agency: str, set_slug: str) -> SetView:
    """The metadata of a readable set."""
    return _view(session, caller, find_readable(session, caller, agency, set_slug), agency)


def create_set(session: Session, caller: Caller, name: str, title: str) -> SetView:
    """Create an empty set owned by the caller's agency (agency admins only)."""
    try:
        agency_slug, set_slug = check_set_name(name)
    except ValueError as exc:
        raise InvalidFieldError.one("name", str(exc)) from None
    title = check_text("title", title, max_length=MAX_TITLE_LENGTH, required=False)
    if caller.role is not Role.AGENCY_ADMIN:
        raise ForbiddenError("creating a set needs an agency-admin token of its agency")
    if agency_slug != caller.agency:
        raise ForbiddenError(
            f"an agency-admin of {caller.agency} creates sets of {caller.agency} only"
        )
    begin_exclusive(session, f"sets:{agency_slug}")
    taken = session.scalar(
        select(HashSet.id).where(HashSet.agency_id == caller.agency_id, HashSet.slug == set_slug)
    )
    if taken is not None:
        raise SetExistsError(f"set {name} already exists (set names are never reused)")
    hash_set = HashSet(
        agency_id=caller.agency_id,
        slug=set_slug,
        title=title,
        latest_version=0,
        created_at=utcnow(),
    )
    session.add(hash_set)
    session.flush()
    audit.record(
        session,
        caller.actor,
        "set.create",
        target=f"set:{name}",
        subject_agency=caller.agency,
        detail={"title": hash_set.title},
    )
    session.commit()
    return _view(session, caller, hash_set, agency_slug)


def set_grants(
    session: Session,
    caller: Caller,
    agency: str,
    set_slug: str,
    readers: Sequence[str],
    *,
    if_match: str | None,
) -> SetView:
    """Replace the set's readers (agency admins of the owner only).

    ``if_match`` guards against lost updates: when given it must equal the
    ETag of the set's current metadata (``view_etag``), or nothing changes.
    """
    begin_exclusive(session, f"sets:{agency}")
    hash_set = find_readable(session, caller, agency, set_slug)
    if hash_set.agency_id != caller.agency_id or caller.role is not Role.AGENCY_ADMIN:
        raise ForbiddenError("changing grants needs an agency-admin token of the set's owner")
    before = _view(session, caller, hash_set, agency)
    if if_match is not None and not _if_match_allows(if_match, view_etag(before)):
        raise PreconditionFailedError(
            "the set changed since you read it (If-Match does not match its ETag)"
        )
    agency_ids, group_ids = _resolve_readers(session, caller, readers)
    session.execute(delete(Grant).where(Grant.set_id == hash_set.id))
    now = utcnow()
    session.add_all(
        [Grant(set_id=hash_set.id, agency_id=i, created_at=now) for i in agency_ids]
        + [Grant(set_id=hash_set.id, group_id=i, created_at=now) for i in group_ids]
    )
    session.flush()
    after = _view(session, caller, hash_set, agency)
    audit.record(
        session,
        caller.actor,
        "set.grants",
        target=f"set:{agency}/{set_slug}",
        subject_agency=agency,
        detail={"before": before.grants, "after": after.grants},
    )
    session.commit()
    return after


def _if_match_allows(header: str, etag: str) -> bool:
    """RFC 9110 If-Match: ``*`` or a list naming the current strong ETag."""
    candidates = {part.strip() for part in header.split(",")}
    return "*" in candidates or etag in candidates


def _resolve_readers(
    session: Session, caller: Caller, readers: Sequence[str]
) -> tuple[list[int], list[int]]:
    """Agency and group ids for the reader names, checked one by one."""
    if len(readers) > MAX_READERS:
        raise InvalidFieldError.one("readers", f"at most {MAX_READERS} readers per set")
    if len(set(readers)) != len(readers):
        raise InvalidFieldError.one("readers", "a reader is listed twice")
    agency_slugs: list[str] = []
    group_slugs: list[str] = []
    for index, reader in enumerate(readers):
        is_group = reader.startswith(GROUP_PREFIX)
        slug = reader[len(GROUP_PREFIX) :] if is_group else reader
        try:
            check_slug(slug, "group" if is_group else "agency")
        except ValueError as exc:
            raise InvalidFieldError({"readers": {str(index): [str(exc)]}}) from None
        if not is_group and slug == caller.agency:
            raise InvalidFieldError(
                {"readers": {str(index): [f"the owner {slug} always reads its own sets"]}}
            )
        (group_slugs if is_group else agency_slugs).append(slug)
    agencies = dict(
        session.execute(select(Agency.slug, Agency.id).where(Agency.slug.in_(agency_slugs))).all()
    )
    groups = dict(
        session.execute(
            select(SharingGroup.slug, SharingGroup.id).where(SharingGroup.slug.in_(group_slugs))
        ).all()
    )
    missing = [s for s in agency_slugs if s not in agencies]
    missing += [GROUP_PREFIX + s for s in group_slugs if s not in groups]
    if missing:
        raise UnknownReaderError(f"unknown reader(s): {', '.join(missing)}", readers=missing)
    return [agencies[s] for s in agency_slugs], [groups[s] for s in group_slugs]


def _view(session: Session, caller: Caller, hash_set: HashSet, agency: str) -> SetView:
    grants = None
    if hash_set.agency_id == caller.agency_id:
        agency_readers = session.scalars(
            select(Agency.slug)
            .join(Grant, Grant.agency_id == Agency.id)
            .where(Grant.set_id == hash_set.id)
        ).all()
        group_readers = session.scalars(
            select(SharingGroup.slug)
            .join(Grant, Grant.group_id == SharingGroup.id)
            .where(Grant.set_id == hash_set.id)
        ).all()
        grants = sorted(agency_readers) + sorted(GROUP_PREFIX + g for g in group_readers)
    return SetView(
        name=f"{agency}/{hash_set.slug}",
        owner=agency,
        title=hash_set.title,
        latest_version=hash_set.latest_version,
        created_at=hash_set.created_at,
        grants=grants,
    )
