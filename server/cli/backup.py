"""``hashex-server backup``: a consistent copy of a SQLite hub while it serves."""

from __future__ import annotations

from pathlib import Path

import click

from server.cli.common import InputProblem, settings
from server.services import backup as backups


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def backup(file: Path, force: bool) -> None:
    """Copy the hub's SQLite database to FILE, consistently, while the hub serves.

    The copy is a snapshot: every publish in it is whole, and publishes go on
    while it is taken. It is written beside FILE, checked (integrity_check,
    foreign keys, this version's schema revision) and only then renamed to
    FILE, so FILE is never a partial copy. An existing FILE is refused unless
    --force. Prints one line: what was written.

    A PostgreSQL hub is refused (exit 2): back it up with pg_dump -Fc, as
    docs/DEPLOY.md shows. So are a missing directory, the database itself,
    and a database that is not a Hashex hub at this version's schema.
    """
    hub_settings = settings()
    try:
        report = backups.backup_sqlite(hub_settings.database_url, file, replace=force)
    except backups.BackupRefused as exc:
        raise InputProblem(str(exc)) from None
    except backups.BackupFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"backup {report.path}: {report.sets} sets, {report.versions} versions, "
        f"{report.entries} entries, {report.audit_rows} audit rows; {report.size} bytes "
        f"at revision {report.revision}, integrity ok"
    )
