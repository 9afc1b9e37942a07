"""Sharing groups: named sets of agencies a set can be granted to as ``group:<slug>``."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from client.protocol.names import check_slug
from server.engine import begin_exclusive
from server.errors import BadRequestError, ConflictError, NotFoundError
from server.models import Agency, GroupMember, SharingGroup, utcnow
from server.services import audit
from server.services.agencies import get_agency
from server.services.callers import Actor


class GroupExistsError(ConflictError):
    """The group slug is taken."""

    slug = "group-exists"
    title = "Group exists"


class AlreadyMemberError(ConflictError):
    """The agency is already a member of the group."""

    slug = "already-member"
    title = "Already a member"


def get_group(session: Session, slug: str) -> SharingGroup:
    """The sharing group ``slug``, or NotFoundError."""
    group = session.scalar(select(SharingGroup).where(SharingGroup.slug == slug))
    if group is None:
        raise NotFoundError(f"there is no group {slug!r}")
    return group


def create_group(session: Session, actor: Actor, slug: str) -> SharingGroup:
    """Create an empty sharing group."""
    try:
        check_slug(slug, "group")
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None
    begin_exclusive(session, "groups")
    if session.scalar(select(SharingGroup.id).where(SharingGroup.slug == slug)) is not None:
        raise GroupExistsError(f"group {slug!r} already exists")
    group = SharingGroup(slug=slug, created_at=utcnow())
    session.add(group)
    session.flush()
    audit.record(session, actor, "group.create", target=f"group:{slug}")
    session.commit()
    return group


def add_member(session: Session, actor: Actor, group_slug: str, agency_slug: str) -> None:
    """Make an agency a member of a group: it reads every set granted to the group."""
    begin_exclusive(session, "groups")
    group = get_group(session, group_slug)
    agency = get_agency(session, agency_slug)
    if session.get(GroupMember, (group.id, agency.id)) is not None:
        raise AlreadyMemberError(f"{agency_slug} is already a member of group {group_slug}")
    session.add(GroupMember(group_id=group.id, agency_id=agency.id, created_at=utcnow()))
    audit.record(
        session,
        actor,
        "group.add",
        target=f"group:{group_slug}",
        subject_agency=agency_slug,
    )
    session.commit()


def list_groups(session: Session) -> Sequence[tuple[str, list[str]]]:
    """Every group with its members' slugs, by slug."""
    rows = session.execute(
        select(SharingGroup.slug, Agency.slug)
        .outerjoin(GroupMember, GroupMember.group_id == SharingGroup.id)
        .outerjoin(Agency, Agency.id == GroupMember.agency_id)
        .order_by(SharingGroup.slug, Agency.slug)
    ).all()
    groups: dict[str, list[str]] = {}
    for group_slug, agency_slug in rows:
        members = groups.setdefault(group_slug, [])
        if agency_slug is not None:
            members.append(agency_slug)
    return list(groups.items())
