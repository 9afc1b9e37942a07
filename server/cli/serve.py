"""``hashex-server init`` and ``hashex-server serve``: the database and the server."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path

import click
from flask import Flask
from gunicorn.app.base import BaseApplication

from server import gunicorn_conf, migrate
from server.app import create_app
from server.cli.common import (
    InputProblem,
    database_errors,
    initialised_settings,
    session_for,
    settings,
    sqlite_path,
)
from server.config import Settings, redact_url
from server.services import hub_keys

# A hostname as RFC 1123 allows it: dot-separated labels of letters, digits, hyphens.
_HOSTNAME_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


@click.command()
def init() -> None:
    """Create or upgrade the database; make the hub log key if there is none.

    Safe to run again, and on several nodes at once: it changes only what is
    missing.
    """
    hub_settings = settings()
    path = sqlite_path(hub_settings)
    if path is not None and not path.parent.is_dir():
        # A first run names a file in a folder that does not exist yet
        # (/srv/hashex/hub.db): make it, as the README's first step expects.
        try:
            path.parent.mkdir(parents=True)
        except OSError as exc:
            raise InputProblem(
                f"HASHEX_DATABASE_URL: cannot create the directory {path.parent} of the "
                f"SQLite file: {exc.strerror}"
            ) from None
        click.echo(f"created the directory {path.parent}")
    where = redact_url(hub_settings.database_url)
    with database_errors(hub_settings):
        result = migrate.upgrade(hub_settings.database_url)
        with session_for(hub_settings) as session:
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


@click.command()
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
    hub_settings = initialised_settings()
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
    _HubServer(hub_settings, options).run()


class _HubServer(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """Gunicorn running the hub: our config module, then the options of ``serve``."""

    def __init__(self, hub_settings: Settings, options: Mapping[str, object]) -> None:
        self._settings = hub_settings
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
