"""``hashex-server log``: the hub's transparency log."""

from __future__ import annotations

import click

from server.cli.common import initialised_settings, reading
from server.services import hub_keys


@click.group()
def log() -> None:
    """The hub's transparency log."""


@log.command("key")
def log_key() -> None:
    """Print the hub's log public key (PEM), for consumers to pin."""
    with reading(initialised_settings()) as session:
        key = hub_keys.current_hub_key(session)
        if key is None:
            raise click.ClickException("the hub has no log key yet: run hashex-server init")
        click.echo(hub_keys.public_key_pem(key), nl=False)
