"""``hashex-server token``: bearer tokens of agencies, each with one role."""

from __future__ import annotations

import json

import click

from server.api.schemas import TokenSchema
from server.cli.common import (
    Audited,
    change,
    current_actor,
    initialised_settings,
    json_option,
    reading,
    slug_or_none,
    table,
    time_text,
)
from server.services import tokens
from server.services.callers import Role

DEFAULT_TOKEN_DAYS = 365
MAX_TOKEN_DAYS = 3650
# Row ids are INTEGER: 32 bits on PostgreSQL.
MAX_ROW_ID = 2**31 - 1


@click.group()
def token() -> None:
    """Bearer tokens: each belongs to one agency and carries one role."""


@token.command("create")
@click.argument("agency_slug", metavar="AGENCY")
@click.option(
    "--role",
    required=True,
    type=click.Choice([role.value for role in Role]),
    help="What the token may do (admin: the hub operator).",
)
@click.option("--name", default=None, help="Who or what holds the token, for people.")
@click.option(
    "--expires",
    "expires_days",
    type=click.IntRange(min=1, max=MAX_TOKEN_DAYS),
    default=DEFAULT_TOKEN_DAYS,
    show_default=True,
    help="Days until the token expires.",
)
def token_create(agency_slug: str, role: str, name: str | None, expires_days: int) -> None:
    """Issue a token of AGENCY and print it: the only line on stdout.

    The hub keeps only the token's SHA-256, so it is shown this once; what
    else is said goes to stderr.
    """
    hub_settings = initialised_settings()
    actor = current_actor()
    refused = Audited("token.create", None, slug_or_none(agency_slug))
    created, secret = change(
        hub_settings,
        actor,
        refused,
        lambda session: tokens.create_token(
            session, actor, agency_slug, Role(role), name=name, expires_days=expires_days
        ),
    )
    click.echo(secret)
    click.echo(
        f"token {created.id} of {agency_slug}, role {role}, expires "
        f"{time_text(created.expires_at)}: shown once, store it now",
        err=True,
    )


@token.command("list")
@json_option
def token_list(as_json: bool) -> None:
    """List every token (never a secret), oldest first."""
    with reading(initialised_settings()) as session:
        listed = TokenSchema().dump(tokens.list_tokens(session), many=True)
    if as_json:
        click.echo(json.dumps({"tokens": listed}, sort_keys=True))
        return
    table(
        ["ID", "AGENCY", "ROLE", "NAME", "CREATED", "EXPIRES", "REVOKED", "LAST USED"],
        [
            [
                str(item["id"]),
                item["agency"],
                item["role"],
                item["name"] or "-",
                item["created_at"],
                item["expires_at"] or "never",
                item["revoked_at"] or "-",
                item["last_used_at"] or "-",
            ]
            for item in listed
        ],
    )


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=click.IntRange(min=1, max=MAX_ROW_ID))
def token_revoke(token_id: int) -> None:
    """Revoke token ID (from `token list`) now; it is refused from then on."""
    hub_settings = initialised_settings()
    actor = current_actor()
    refused = Audited("token.revoke", f"token:{token_id}", None)
    revoked = change(
        hub_settings, actor, refused, lambda session: tokens.revoke_token(session, actor, token_id)
    )
    click.echo(f"token {revoked.id}: revoked at {time_text(revoked.revoked_at)}")
