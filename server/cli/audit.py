"""``hashex-server audit``: re-check the hash-chained audit log."""

from __future__ import annotations

import re

import click

from server.cli.common import HubFailure, initialised_settings, reading
from server.services import audit

EXIT_CHAIN_BROKEN = 3


class ChainBroken(HubFailure):
    """``audit verify`` found a row that was edited, inserted or deleted."""

    exit_code = EXIT_CHAIN_BROKEN


_HEAD_RE = re.compile(r"([0-9]+):([0-9a-f]{64})")


def _parse_head(value: str) -> tuple[int, str]:
    # An empty value is refused, not taken as "no head": HEAD=$(audit verify)
    # left empty by a failed run must not turn the check into a plain verify.
    match = _HEAD_RE.fullmatch(value)
    if match is None:
        raise click.BadParameter(
            f"{value!r}: expected ROWS:HASH as audit verify prints it", param_hint="--head"
        )
    rows, digest = int(match[1]), match[2]
    if rows == 0 and digest != audit.GENESIS_HASH:
        # No row carries the head of an empty chain: nothing else would check it.
        raise click.BadParameter(
            f"{value!r}: the head of an empty chain is 0:{audit.GENESIS_HASH}",
            param_hint="--head",
        )
    return rows, digest


@click.group("audit")
def audit_commands() -> None:
    """The hash-chained audit log."""


@audit_commands.command("verify")
@click.option(
    "--head",
    "recorded_head",
    metavar="ROWS:HASH",
    help="A head printed by an earlier run; its row must still carry that hash.",
)
def audit_verify(recorded_head: str | None) -> None:
    """Re-check every row of the audit chain, first to last.

    Prints the head, the number of rows and the hash of the last one, as
    ROWS:HASH alone on stdout (the sentence for people goes to stderr), so
    HEAD=$(hashex-server audit verify) records it. Keep it outside the
    database and give it back with --head: rows deleted
    from the end of the chain are caught only against a head recorded before.
    Exits 3 if the chain is broken, naming the first row that was edited,
    inserted or deleted; exits 2 if --head is not ROWS:HASH (an empty one
    included: a failed earlier run must not turn the check into a plain one).
    """
    expected = None if recorded_head is None else _parse_head(recorded_head)
    with reading(initialised_settings()) as session:
        try:
            report = audit.verify_chain(session, expect=expected)
        except audit.AuditChainError as exc:
            raise ChainBroken(f"audit chain broken: {exc.detail}") from None
    click.echo(f"audit chain intact: {report.rows} rows", err=True)
    click.echo(f"{report.rows}:{report.head}")
