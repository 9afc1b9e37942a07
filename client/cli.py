"""The ``hashex`` command.

Exit codes are part of the contract: 0 success or match, 1 no match, 2 usage
or bad input, 3 verification failed, 4 hub unreachable or refused, 5 stale;
when several apply, 3 wins over 4 over 5 over 2.  Every verb runs without a
prompt, so scripts and forensic tools can drive it.
"""

from __future__ import annotations

import click

from client.commands import hub, investigate, keys, local


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hashex")
def main() -> None:
    """Hashex: sync, verify and match signed hash sets."""


main.add_command(keys.keygen)
main.add_command(keys.keyset)
for command in (hub.trust, hub.set_group, hub.sync, hub.publish):
    main.add_command(command)
for command in (
    local.status,
    local.verify,
    investigate.lookup,
    investigate.scan,
    investigate.export,
):
    main.add_command(command)
