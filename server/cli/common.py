"""What every ``hashex-server`` command shares: settings, sessions, refusals, output."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from client.protocol.documents import format_time
from client.protocol.names import SLUG_RE
from server import migrate
from server.config import Settings, SettingsError, redact_url
from server.engine import make_engine, make_session_factory
from server.errors import HubError, problem_type
from server.services import audit
from server.services.callers import Actor

# audit_events.actor is VARCHAR(64).
_ACTOR_LENGTH = 64

T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


class InputProblem(click.ClickException):
    """Bad input that is no command-line syntax error: a setting, a file."""

    exit_code = 2


class HubFailure(click.ClickException):
    """A failure reported as ``hashex-server: <message>`` on stderr."""

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the message, prefixed with the command's name."""
        click.echo(f"hashex-server: {self.format_message()}", file=file, err=True)


class Refused(HubFailure):
    """A change the hub refused: a service raised a client-side (4xx) error."""

    exit_code = 2


def settings() -> Settings:
    """The hub's settings from the environment; a bad one exits 2 naming it."""
    try:
        return Settings.load()
    except SettingsError as exc:
        raise InputProblem(str(exc)) from None


def sqlite_path(hub_settings: Settings) -> Path | None:
    """The file of a SQLite hub; None on PostgreSQL."""
    url = make_url(hub_settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database is None:
        return None
    return Path(url.database)


def require_initialised(hub_settings: Settings) -> None:
    """Refuse to go on unless ``init`` has brought the database to this code's schema."""
    where = redact_url(hub_settings.database_url)
    path = sqlite_path(hub_settings)
    # Connecting would create an empty SQLite file where none should be.
    if path is not None and not path.is_file():
        raise click.ClickException(f"no database at {path}: run hashex-server init")
    with database_errors(hub_settings):
        revision = migrate.current_revision(hub_settings.database_url)
    if revision is not None and not migrate.is_known(revision):
        raise click.ClickException(
            f"database {where} is at revision {revision}, which this version of Hashex "
            "does not know: run the newer version that upgraded it"
        )
    head = migrate.head_revision()
    if revision != head:
        raise click.ClickException(
            f"database {where} is at revision {revision or 'none'}, this hub needs {head}: "
            "run hashex-server init"
        )


def initialised_settings() -> Settings:
    """The settings of a hub whose database ``init`` has brought up to date."""
    hub_settings = settings()
    require_initialised(hub_settings)
    return hub_settings


@contextmanager
def session_for(hub_settings: Settings) -> Iterator[Session]:
    """A session on the hub's database; its engine is disposed at the end."""
    engine = make_engine(hub_settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


@contextmanager
def database_errors(hub_settings: Settings) -> Iterator[None]:
    """Turn a database that cannot be reached, opened or migrated into a one-line error."""
    try:
        yield
    except (DBAPIError, migrate.MigrationError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        reason = str(cause).strip().splitlines()[0]
        raise click.ClickException(
            f"cannot use the database {redact_url(hub_settings.database_url)}: {reason}"
        ) from None


@contextmanager
def reading(hub_settings: Settings) -> Iterator[Session]:
    """A session for a command that only reads, with database errors in one line."""
    with database_errors(hub_settings), session_for(hub_settings) as session:
        yield session


@dataclass(frozen=True)
class Audited:
    """How the audit log names a change the CLI asks for, should it be refused."""

    action: str
    target: str | None
    subject_agency: str | None


def change(
    hub_settings: Settings, actor: Actor, audited: Audited, apply: Callable[[Session], T]
) -> T:
    """Run ``apply`` in a session of its own and give back what it returns.

    A client-side refusal (a HubError with a 4xx status) is audited as
    refused in a fresh transaction, once the change's own transaction is
    rolled back so nothing of it is stored, and exits 2.
    """
    with database_errors(hub_settings):
        try:
            with session_for(hub_settings) as session:
                return apply(session)
        except HubError as exc:
            if not 400 <= exc.status < 500:
                raise
            refusal = exc
        with session_for(hub_settings) as session:
            audit.record_refusal(
                session,
                actor,
                audited.action,
                target=audited.target,
                subject_agency=audited.subject_agency,
                problem_type=problem_type(refusal.slug),
                detail=refusal.detail,
            )
    raise Refused(refusal.detail)


def current_actor() -> Actor:
    """The audit log's name for whoever runs this command: ``cli:<login name>``."""
    try:
        user = getpass.getuser()
    except (ImportError, KeyError, OSError):
        user = "unknown"
    return Actor(f"cli:{user}"[:_ACTOR_LENGTH])


def slug_or_none(value: str) -> str | None:
    """``value`` if it is a well-formed slug, else None (it then names nothing)."""
    return value if SLUG_RE.fullmatch(value) else None


def slug_target(kind: str, value: str) -> str | None:
    """An audit target ``<kind>:<slug>``, or None for a malformed slug."""
    slug = slug_or_none(value)
    return None if slug is None else f"{kind}:{slug}"


def time_text(moment: datetime | None) -> str | None:
    """A time as the contract writes it (RFC 3339, seconds, Z), or None."""
    return None if moment is None else format_time(moment)


def emit(as_json: bool, payload: Mapping[str, Any], text: str) -> None:
    """Print a result as one JSON object or as text for people."""
    click.echo(json.dumps(payload, sort_keys=True) if as_json else text)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print rows in aligned columns under a header line."""
    # A name holding a newline or a control character must not forge a row.
    lines = [list(headers), *([_printable(cell) for cell in row] for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    for line in lines:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


def _printable(text: str) -> str:
    return text if text.isprintable() else ascii(text)
