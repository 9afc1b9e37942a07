"""``hashex-server group``: sharing groups and their member agencies."""

from __future__ import annotations

import json

import click

from server.cli.common import (
    Audited,
    change,
    current_actor,
    initialised_settings,
    json_option,
    reading,
    slug_or_none,
    slug_target,
    table,
)
from server.services import groups


@click.group()
def group() -> None:
    """Sharing groups: sets granted to group:SLUG reach every member agency."""


@group.command("create")
@click.argument("slug")
def group_create(slug: str) -> None:
    """Create the empty sharing group SLUG."""
    hub_settings = initialised_settings()
    actor = current_actor()
    refused = Audited("group.create", slug_target("group", slug), None)
    created = change(
        hub_settings, actor, refused, lambda session: groups.create_group(session, actor, slug)
    )
    click.echo(f"group {created.slug} created")


@group.command("add")
@click.argument("group_slug", metavar="GROUP")
@click.argument("agency_slug", metavar="AGENCY")
def group_add(group_slug: str, agency_slug: str) -> None:
    """Make AGENCY a member of GROUP."""
    hub_settings = initialised_settings()
    actor = current_actor()
    refused = Audited("group.add", slug_target("group", group_slug), slug_or_none(agency_slug))
    change(
        hub_settings,
        actor,
        refused,
        lambda session: groups.add_member(session, actor, group_slug, agency_slug),
    )
    click.echo(f"agency {agency_slug} added to group {group_slug}")


@group.command("list")
@json_option
def group_list(as_json: bool) -> None:
    """List the sharing groups and their members."""
    with reading(initialised_settings()) as session:
        listed = groups.list_groups(session)
    if as_json:
        payload = [{"slug": slug, "members": members} for slug, members in listed]
        click.echo(json.dumps({"groups": payload}, sort_keys=True))
        return
    table(["GROUP", "MEMBERS"], [[slug, ",".join(members) or "-"] for slug, members in listed])
