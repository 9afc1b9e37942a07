"""``hashex-server``: the hub operator's command line.

Commands are grouped by what they manage, one module each: ``agency``
(:mod:`.agencies`), ``token`` (:mod:`.tokens`), ``group`` (:mod:`.groups`),
``audit`` (:mod:`.audit`) and ``log`` (:mod:`.log`), next to ``init`` and
``serve`` (:mod:`.serve`) and ``backup`` (:mod:`.backup`).  Settings come
from ``HASHEX_*`` variables, read only by the command that needs them, so
``--help`` works whatever the environment holds.

The admin verbs are thin: they parse their arguments, hand them to a service
in :mod:`server.services` (which holds the rules and audits every change) and
print the result.  A change the hub refuses (a service's 4xx error) is
audited as refused, in a transaction of its own, exactly as the API audits
refusals, and exits 2 with ``hashex-server: <why>``.

Exit codes: 0 success; 1 a database that cannot be used, or Ctrl-C; 2 bad
input (a setting, a file, an argument) or a refused change; 3 ``audit
verify`` found the audit chain broken.
"""

from __future__ import annotations

import click

from server.cli import agencies, audit, backup, groups, log, serve, tokens


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hashex")
def main() -> None:
    """Run and administer a Hashex hub."""


main.add_command(serve.init)
main.add_command(serve.serve)
main.add_command(agencies.agency)
main.add_command(tokens.token)
main.add_command(groups.group)
main.add_command(audit.audit_commands)
main.add_command(log.log)
main.add_command(backup.backup)
