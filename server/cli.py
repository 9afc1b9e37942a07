"""``hashex-server``: the hub operator's command line.

Commands are grouped by what they manage (``agency``, ``token``, ``group``,
``audit``, ``log``), next to ``init`` and ``serve``.  Settings come from
``HASHEX_*`` variables, read only by the command that needs them, so
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

import getpass
import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from flask import Flask
from gunicorn.app.base import BaseApplication
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from client.protocol.documents import format_time
from client.protocol.names import SLUG_RE
from server import gunicorn_conf, migrate
from server.app import create_app
from server.config import Settings, SettingsError, redact_url
from server.database import make_engine, make_session_factory
from server.errors import HubError, problem_type
from server.models import Agency, AgencyKeyset, Token
from server.services import agencies, audit, groups, hub_keys, tokens
from server.services.callers import Actor, Role

# A hostname as RFC 1123 allows it: dot-separated labels of letters, digits, hyphens.
_HOSTNAME_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")

EXIT_CHAIN_BROKEN = 3

# A keyset file is a few kilobytes; refuse to read anything far larger.
MAX_KEYSET_FILE_BYTES = 1024 * 1024
DEFAULT_TOKEN_DAYS = 365
MAX_TOKEN_DAYS = 3650
# audit_events.actor is VARCHAR(64).
_ACTOR_LENGTH = 64
# Row ids are INTEGER: 32 bits on PostgreSQL.
MAX_ROW_ID = 2**31 - 1

T = TypeVar("T")


class InputProblem(click.ClickException):
    """Bad input that is no command-line syntax error: a setting, a file."""

    exit_code = 2


class _HubFailure(click.ClickException):
    """A failure reported as ``hashex-server: <message>`` on stderr."""

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the message, prefixed with the command's name."""
        click.echo(f"hashex-server: {self.format_message()}", file=file, err=True)


class Refused(_HubFailure):
    """A change the hub refused: a service raised a client-side (4xx) error."""

    exit_code = 2


class ChainBroken(_HubFailure):
    """``audit verify`` found a row that was edited, inserted or deleted."""

    exit_code = EXIT_CHAIN_BROKEN


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run and administer a Hashex hub."""


@main.command()
def init() -> None:
    """Create or upgrade the database; make the hub log key if there is none.

    Safe to run again, and on several nodes at once: it changes only what is
    missing.
    """
    settings = _settings()
    path = _sqlite_path(settings)
    if path is not None and not path.parent.is_dir():
        raise InputProblem(
            f"HASHEX_DATABASE_URL: the directory {path.parent} of the SQLite file does not exist"
        )
    where = redact_url(settings.database_url)
    with _database_errors(settings):
        result = migrate.upgrade(settings.database_url)
        with _session(settings) as session:
            key, created = hub_keys.ensure_hub_key(session)
    if result.before is None:
        click.echo(f"database {where}: created at revision {result.after}")
    elif result.changed:
        click.echo(f"database {where}: upgraded from {result.before} to {result.after}")
    else:
        click.echo(f"database {where}: already at revision {result.after}")
    click.echo(f"hub log key {key.keyid}: {'created' if created else 'exists'}")


def parse_bind(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 as ``[ADDR]:PORT``) into a checked host and port."""
    if value.startswith("["):
        host, separator, port = value[1:].partition("]:")
        if not separator or not _is_ip(host, version=6):
            raise ValueError(f"{value!r}: expected [IPV6-ADDRESS]:PORT")
    else:
        host, separator, port = value.rpartition(":")
        if not separator:
            raise ValueError(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
        if ":" in host:
            raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
        if not (_is_ip(host, version=4) or _HOSTNAME_RE.fullmatch(host)):
            raise ValueError(f"{value!r}: {host!r} is not an IP address or a host name")
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as :func:`parse_bind` gives it) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(text: str, *, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _check_bind(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        parse_bind(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@main.command()
@click.option(
    "--bind",
    default=gunicorn_conf.bind,
    show_default=True,
    metavar="HOST:PORT",
    callback=_check_bind,
    help="Address to listen on; IPv6 as [ADDR]:PORT.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=gunicorn_conf.workers,
    show_default=True,
    help="Gunicorn worker processes.",
)
@click.option(
    "--certfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TLS certificate chain (PEM); needs --keyfile.",
)
@click.option(
    "--keyfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TLS private key (PEM); needs --certfile.",
)
def serve(bind: str, workers: int, certfile: Path | None, keyfile: Path | None) -> None:
    """Serve the hub with gunicorn, in the foreground, until SIGTERM or Ctrl-C.

    With --certfile and --keyfile gunicorn speaks TLS itself; otherwise serve
    plain HTTP on loopback only, or behind a TLS proxy.
    """
    if (certfile is None) != (keyfile is None):
        raise click.UsageError("--certfile and --keyfile go together: give both, or neither")
    settings = _settings()
    _require_initialised(settings)
    options: dict[str, object] = {"bind": bind, "workers": workers}
    scheme = "http"
    if certfile is not None and keyfile is not None:
        options.update(certfile=str(certfile), keyfile=str(keyfile))
        scheme = "https"
    elif not is_loopback(parse_bind(bind)[0]):
        click.echo(
            f"warning: serving plain HTTP on {bind}: tokens travel in clear unless a "
            "TLS proxy is in front (or give --certfile and --keyfile)",
            err=True,
        )
    click.echo(f"Hashex hub: {scheme}://{bind}/v1/health", err=True)
    _HubServer(settings, options).run()


@main.group()
def log() -> None:
    """The hub's transparency log."""


@log.command("key")
def log_key() -> None:
    """Print the hub's log public key (PEM), for consumers to pin."""
    settings = _settings()
    _require_initialised(settings)
    with _database_errors(settings), _session(settings) as session:
        key = hub_keys.current_hub_key(session)
        if key is None:
            raise click.ClickException("the hub has no log key yet: run hashex-server init")
        click.echo(hub_keys.public_key_pem(key), nl=False)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@main.group()
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
    settings = _settings()
    keyset_file = _read_keyset_file(keyset_path)
    _require_initialised(settings)
    actor = _actor()

    def create(session: Session) -> dict[str, Any]:
        created = agencies.create_agency(session, actor, slug, name, keyset_file)
        return _agency_json(created, agencies.list_keysets(session, created.slug)[-1])

    refused = _Audited("agency.create", _slug_target("agency", slug), _slug_or_none(slug))
    result = _change(settings, actor, refused, create)
    keyset = result["keyset"]
    _emit(
        as_json,
        result,
        f"agency {result['slug']} created: {result['name']}\n"
        f"keyset {keyset['version']} sha256:{keyset['sha256']}, expires {keyset['expires_at']}",
    )


@agency.command("list")
@json_option
def agency_list(as_json: bool) -> None:
    """List the agencies with their newest keyset."""
    settings = _settings()
    _require_initialised(settings)
    with _database_errors(settings), _session(settings) as session:
        listed = [
            _agency_json(row, agencies.list_keysets(session, row.slug)[-1])
            for row in agencies.list_agencies(session)
        ]
    if as_json:
        click.echo(json.dumps({"agencies": listed}, sort_keys=True))
        return
    _table(
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


@main.group()
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
    settings = _settings()
    _require_initialised(settings)
    actor = _actor()
    refused = _Audited("token.create", None, _slug_or_none(agency_slug))
    created, secret = _change(
        settings,
        actor,
        refused,
        lambda session: tokens.create_token(
            session, actor, agency_slug, Role(role), name=name, expires_days=expires_days
        ),
    )
    click.echo(secret)
    click.echo(
        f"token {created.id} of {agency_slug}, role {role}, expires "
        f"{_time(created.expires_at)}: shown once, store it now",
        err=True,
    )


@token.command("list")
@json_option
def token_list(as_json: bool) -> None:
    """List every token (never a secret), oldest first."""
    settings = _settings()
    _require_initialised(settings)
    with _database_errors(settings), _session(settings) as session:
        listed = [_token_json(row, slug) for row, slug in tokens.list_tokens(session)]
    if as_json:
        click.echo(json.dumps({"tokens": listed}, sort_keys=True))
        return
    _table(
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
    settings = _settings()
    _require_initialised(settings)
    actor = _actor()
    refused = _Audited("token.revoke", f"token:{token_id}", None)
    revoked = _change(
        settings, actor, refused, lambda session: tokens.revoke_token(session, actor, token_id)
    )
    click.echo(f"token {revoked.id}: revoked at {_time(revoked.revoked_at)}")


@main.group()
def group() -> None:
    """Sharing groups: sets granted to group:SLUG reach every member agency."""


@group.command("create")
@click.argument("slug")
def group_create(slug: str) -> None:
    """Create the empty sharing group SLUG."""
    settings = _settings()
    _require_initialised(settings)
    actor = _actor()
    refused = _Audited("group.create", _slug_target("group", slug), None)
    created = _change(
        settings, actor, refused, lambda session: groups.create_group(session, actor, slug)
    )
    click.echo(f"group {created.slug} created")


@group.command("add")
@click.argument("group_slug", metavar="GROUP")
@click.argument("agency_slug", metavar="AGENCY")
def group_add(group_slug: str, agency_slug: str) -> None:
    """Make AGENCY a member of GROUP."""
    settings = _settings()
    _require_initialised(settings)
    actor = _actor()
    refused = _Audited("group.add", _slug_target("group", group_slug), _slug_or_none(agency_slug))
    _change(
        settings,
        actor,
        refused,
        lambda session: groups.add_member(session, actor, group_slug, agency_slug),
    )
    click.echo(f"agency {agency_slug} added to group {group_slug}")


@group.command("list")
@json_option
def group_list(as_json: bool) -> None:
    """List the sharing groups and their members."""
    settings = _settings()
    _require_initialised(settings)
    with _database_errors(settings), _session(settings) as session:
        listed = groups.list_groups(session)
    if as_json:
        payload = [{"slug": slug, "members": members} for slug, members in listed]
        click.echo(json.dumps({"groups": payload}, sort_keys=True))
        return
    _table(["GROUP", "MEMBERS"], [[slug, ",".join(members) or "-"] for slug, members in listed])


def _parse_head(value: str) -> tuple[int, str]:
    rows, _, digest = value.partition(":")
    if not (rows.isdigit() and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise click.BadParameter(
            f"{value!r}: expected ROWS:HASH as audit verify prints it", param_hint="--head"
        )
    return int(rows), digest


@main.group("audit")
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

    Prints the number of rows and the hash of the last one as ROWS:HASH.
    Keep it outside the database and give it back with --head: rows deleted
    from the end of the chain are caught only against a head recorded before.
    Exits 3 if the chain is broken, naming the first row that was edited,
    inserted or deleted.
    """
    expected = _parse_head(recorded_head) if recorded_head else None
    settings = _settings()
    _require_initialised(settings)
    with _database_errors(settings), _session(settings) as session:
        try:
            report = audit.verify_chain(session, expect=expected)
        except audit.AuditChainError as exc:
            raise ChainBroken(f"audit chain broken: {exc.detail}") from None
    click.echo(f"audit chain intact: {report.rows} rows, head {report.rows}:{report.head}")


class _HubServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """Gunicorn running the hub: our config module, then the options of ``serve``."""

    def __init__(self, settings: Settings, options: Mapping[str, object]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        """Apply server.gunicorn_conf, then the command-line options."""
        known = self.cfg.settings
        for name, value in (vars(gunicorn_conf) | dict(self._options)).items():
            if name in known:
                self.cfg.set(name, value)

    def load(self) -> Flask:
        """Build the app; gunicorn calls this in each worker, after the fork."""
        return create_app(self._settings)


def _settings() -> Settings:
    try:
        return Settings.load()
    except SettingsError as exc:
        raise InputProblem(str(exc)) from None


def _sqlite_path(settings: Settings) -> Path | None:
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database is None:
        return None
    return Path(url.database)


def _require_initialised(settings: Settings) -> None:
    """Refuse to go on unless ``init`` has brought the database to this code's schema."""
    where = redact_url(settings.database_url)
    path = _sqlite_path(settings)
    # Connecting would create an empty SQLite file where none should be.
    if path is not None and not path.is_file():
        raise click.ClickException(f"no database at {path}: run hashex-server init")
    with _database_errors(settings):
        revision = migrate.current_revision(settings.database_url)
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


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


@contextmanager
def _database_errors(settings: Settings) -> Iterator[None]:
    """Turn a database that cannot be reached, opened or migrated into a one-line error."""
    try:
        yield
    except (DBAPIError, migrate.MigrationError) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        reason = str(cause).strip().splitlines()[0]
        raise click.ClickException(
            f"cannot use the database {redact_url(settings.database_url)}: {reason}"
        ) from None


@dataclass(frozen=True)
class _Audited:
    """How the audit log names a change the CLI asks for, should it be refused."""

    action: str
    target: str | None
    subject_agency: str | None


def _change(
    settings: Settings, actor: Actor, audited: _Audited, change: Callable[[Session], T]
) -> T:
    """Run ``change`` in a session of its own and give back what it returns.

    A client-side refusal (a HubError with a 4xx status) is audited as
    refused in a fresh transaction, once the change's own transaction is
    rolled back so nothing of it is stored, and exits 2.
    """
    with _database_errors(settings):
        try:
            with _session(settings) as session:
                return change(session)
        except HubError as exc:
            if not 400 <= exc.status < 500:
                raise
            refusal = exc
        with _session(settings) as session:
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


def _actor() -> Actor:
    """The audit log's name for whoever runs this command: ``cli:<login name>``."""
    try:
        user = getpass.getuser()
    except (ImportError, KeyError, OSError):
        user = "unknown"
    return Actor(f"cli:{user}"[:_ACTOR_LENGTH])


def _slug_or_none(value: str) -> str | None:
    """``value`` if it is a well-formed slug, else None (it then names nothing)."""
    return value if SLUG_RE.fullmatch(value) else None


def _slug_target(kind: str, value: str) -> str | None:
    """An audit target ``<kind>:<slug>``, or None for a malformed slug."""
    slug = _slug_or_none(value)
    return None if slug is None else f"{kind}:{slug}"


def _read_keyset_file(path: Path) -> bytes:
    """The bytes of a keyset file, or exit 2 naming why it cannot be read."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KEYSET_FILE_BYTES + 1)
    except OSError as exc:
        raise InputProblem(f"--keyset {path}: cannot read it ({exc.strerror})") from None
    if len(data) > MAX_KEYSET_FILE_BYTES:
        raise InputProblem(
            f"--keyset {path}: larger than {MAX_KEYSET_FILE_BYTES} bytes; "
            "a keyset file is a few kilobytes"
        )
    return data


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def _agency_json(row: Agency, keyset: AgencyKeyset) -> dict[str, Any]:
    return {
        "slug": row.slug,
        "name": row.name,
        "created_at": _time(row.created_at),
        "keyset": {
            "version": keyset.version,
            "sha256": keyset.sha256,
            "expires_at": _time(keyset.expires_at),
        },
    }


def _token_json(row: Token, agency_slug: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "agency": agency_slug,
        "role": row.role,
        "name": row.name,
        "created_at": _time(row.created_at),
        "expires_at": _time(row.expires_at),
        "revoked_at": _time(row.revoked_at),
        "last_used_at": _time(row.last_used_at),
    }


def _emit(as_json: bool, payload: Mapping[str, Any], text: str) -> None:
    """Print a result as one JSON object or as text for people."""
    click.echo(json.dumps(payload, sort_keys=True) if as_json else text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print rows in aligned columns under a header line."""
    # A name holding a newline or a control character must not forge a row.
    lines = [list(headers), *([_printable(cell) for cell in row] for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    for line in lines:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        click.echo("  ".join(cells).rstrip())


def _printable(text: str) -> str:
    return text if text.isprintable() else ascii(text)
