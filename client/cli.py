"""The ``hashex`` command.

Exit codes are part of the contract: 0 success or match, 1 no match, 2 usage
or bad input, 3 verification failed, 4 hub unreachable or refused, 5 stale;
when several apply, 3 wins over 4 over 5 over 2.  Every verb runs without a
prompt, so scripts and forensic tools can drive it.
"""

from __future__ import annotations

import importlib

import click

# Each verb's module is imported only when that verb runs: a lookup or a scan
# in a forensic pipeline starts without loading the HTTP and signing stacks.
_COMMANDS = {
    "keygen": "client.commands.keys:keygen",
    "keyset": "client.commands.keys:keyset",
    "trust": "client.commands.hub:trust",
    "set": "client.commands.hub:set_group",
    "sync": "client.commands.hub:sync",
    "publish": "client.commands.hub:publish",
    "status": "client.commands.local:status",
    "verify": "client.commands.local:verify",
    "lookup": "client.commands.investigate:lookup",
    "scan": "client.commands.investigate:scan",
    "export": "client.commands.investigate:export",
}


class _LazyGroup(click.Group):
    """A group whose subcommands are loaded from ``_COMMANDS`` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every verb, by name."""
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The verb named ``cmd_name``, imported now; None if there is no such verb."""
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hashex")
def main() -> None:
    """Hashex: sync, verify and match signed hash sets."""
