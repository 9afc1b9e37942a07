"""``hashex-server agency``: member agencies and their signed keysets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from sqlalchemy.orm import Session

from client.pins import MAX_KEYSET_FILE_BYTES
from client.protocol.usertext import read_small_file
from server.api.schemas import AgencySchema
from server.cli.common import (
    Audited,
    InputProblem,
    change,
    current_actor,
    emit,
    initialised_settings,
    json_option,
    reading,
    require_initialised,
    settings,
    slug_or_none,
    slug_target,
    table,
)
from server.services import agencies

_AGENCY = AgencySchema()


@click.group()
def agency() -> None:
    """Member agencies and their signed keysets."""


@agency.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="The agency's name, for people.")
@click.option(
    "--keyset",
    "keyset_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The agency's signed keyset 1: the file `hashex keyset init` writes.",
)
@json_option
def agency_create(slug: str, name: str, keyset_path: Path, as_json: bool) -> None:
    """Register agency SLUG with its signed keyset 1.

    The keyset must be keyset 1 of SLUG, signed by its own root keys, and
    share no key with the hub's log; otherwise nothing is stored.
    """
    hub_settings = settings()
    keyset_file = _read_keyset_file(keyset_path)
    require_initialised(hub_settings)
    actor = current_actor()

    def create(session: Session) -> dict[str, Any]:
        created = agencies.create_agency(session, actor, slug, name, keyset_file)
        dumped: dict[str, Any] = _AGENCY.dump(agencies.agency_view(session, created))
        return dumped

    refused = Audited("agency.create", slug_target("agency", slug), slug_or_none(slug))
    result = change(hub_settings, actor, refused, create)
    keyset = result["keyset"]
    emit(
        as_json,
        result,
        f"agency {result['slug']} created: {result['name']}\n"
        f"keyset {keyset['version']} sha256:{keyset['sha256']}, expires {keyset['expires_at']}",
    )


@agency.command("list")
@json_option
def agency_list(as_json: bool) -> None:
    """List the agencies with their newest keyset."""
    with reading(initialised_settings()) as session:
        listed = _AGENCY.dump(agencies.list_agencies(session), many=True)
    if as_json:
        click.echo(json.dumps({"agencies": listed}, sort_keys=True))
        return
    table(
        ["SLUG", "KEYSET", "SHA256", "CREATED", "NAME"],
        [
            [
                item["slug"],
                str(item["keyset"]["version"]),
                item["keyset"]["sha256"],
                item["created_at"],
                item["name"],
            ]
            for item in listed
        ],
    )


def _read_keyset_file(path: Path) -> bytes:
    """The bytes of a keyset file, or exit 2 naming why it cannot be read."""
    try:
        return read_small_file(path, MAX_KEYSET_FILE_BYTES)
    except OSError as exc:
        raise InputProblem(f"--keyset {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise InputProblem(f"--keyset {path}: {exc}; a keyset file is a few kilobytes") from None
