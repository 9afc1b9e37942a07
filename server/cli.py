"""``hashex-server``: the hub operator's command line.

Commands are grouped by what they manage (``log``; later ``agency``,
``token``, ``group``, ``audit``), next to ``init`` and ``serve``.  Settings
come from ``HASHEX_*`` variables, read only by the command that needs them,
so ``--help`` works whatever the environment holds.  Bad input exits 2 with a
message naming what is wrong; a database that cannot be used exits 1.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import click
from flask import Flask
from gunicorn.app.base import BaseApplication
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from server import gunicorn_conf, migrate
from server.app import create_app
from server.config import Settings, SettingsError, redact_url
from server.database import make_engine, make_session_factory
from server.services import hub_keys

# A hostname as RFC 1123 allows it: dot-separated labels of letters, digits, hyphens.
_HOSTNAME_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


class InputProblem(click.ClickException):
    """Bad input that is no command-line syntax error: a setting, a file."""

    exit_code = 2


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
