"""The hub's settings: one typed, frozen record read from ``HASHEX_*`` variables.

Every value is checked when it is read, so a bad setting stops ``hashex-server``
before it touches a database or binds a port, with a message that names the
variable and the form it expects.  Later settings join :class:`Settings` as
typed fields with their own parser; nothing else reads the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# Where a Flask app of the hub keeps its Settings (app.config[SETTINGS_KEY]).
SETTINGS_KEY = "HASHEX_SETTINGS"

DATABASE_URL_VAR = "HASHEX_DATABASE_URL"
MAX_REQUEST_BYTES_VAR = "HASHEX_MAX_REQUEST_BYTES"
CACHE_SECRET_VAR = "HASHEX_CACHE_SECRET"  # noqa: S105 - the name of a setting

DEFAULT_SQLITE_FILE = "hashex.db"

# A publish of a 1,000,000-entry version is about 140 MB of delta lines with
# labels; the default leaves room for that and refuses anything far larger.
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024 * 1024

# A cache secret is a header value nginx sends: long, and in characters no
# configuration file or header needs to quote or escape.
_SECRET_RE = re.compile(r"[A-Za-z0-9._~+/=-]{32,256}")
_CACHE_KEY_FORM = "32 to 256 letters, digits or ._~+/=- (e.g. the output of openssl rand -hex 32)"

_DATABASE_FORMS = (
    "sqlite:///relative/path, sqlite:////absolute/path or postgresql://user@host:port/database"
)


class SettingsError(ValueError):
    """A ``HASHEX_*`` variable whose value cannot be used; the message names it."""

    def __init__(self, variable: str, problem: str, expected: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}; expected {expected}")


@dataclass(frozen=True)
class Settings:
    """The hub's configuration, already validated and normalised.

    ``database_url`` is a SQLAlchemy URL naming its driver: ``sqlite:///`` with
    an absolute path, or ``postgresql+psycopg://``.  ``cache_secret`` is
    what nginx sends on the requests a cache in front of the hub has already
    authorised and audited (None: no cache is trusted); it never shows in a repr.
    """

    database_url: str
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    cache_secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], cwd: Path | None = None) -> Settings:
        """Read the settings from ``environ``; unset or empty variables take defaults.

        Relative SQLite paths are resolved against ``cwd`` (default: the working
        directory) now, so every gunicorn worker opens the same file.
        """
        base = Path.cwd() if cwd is None else cwd
        raw_url = environ.get(DATABASE_URL_VAR, "")
        raw_limit = environ.get(MAX_REQUEST_BYTES_VAR, "")
        raw_secret = environ.get(CACHE_SECRET_VAR, "")
        return cls(
            database_url=(
                _sqlite_url(base / DEFAULT_SQLITE_FILE)
                if raw_url == ""
                else parse_database_url(raw_url, base)
            ),
            max_request_bytes=(
                DEFAULT_MAX_REQUEST_BYTES
                if raw_limit == ""
                else _byte_count(MAX_REQUEST_BYTES_VAR, raw_limit)
            ),
            cache_secret=None if raw_secret == "" else _cache_secret(raw_secret),
        )

    @classmethod
    def load(cls) -> Settings:
        """The settings of this process, from ``os.environ``."""
        return cls.from_env(os.environ)


def parse_database_url(raw: str, cwd: Path) -> str:
    """Check a database URL and give it in its normalised SQLAlchemy form."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        # ValueError: SQLAlchemy parses the port with int().
        raise SettingsError(DATABASE_URL_VAR, "not a database URL", _DATABASE_FORMS) from None
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        return _parse_sqlite(url, cwd)
    if url.drivername in ("postgresql", "postgresql+psycopg"):
        return _parse_postgresql(url)
    hint = " (write postgresql://)" if url.drivername.startswith("postgres") else ""
    raise SettingsError(
        DATABASE_URL_VAR, f"unsupported database {url.drivername!r}{hint}", _DATABASE_FORMS
    )


def _parse_sqlite(url: URL, cwd: Path) -> str:
    if url.host or url.username or url.password or url.port:
        raise SettingsError(
            DATABASE_URL_VAR, "a SQLite URL names no host (use three slashes)", _DATABASE_FORMS
        )
    if url.query:
        raise SettingsError(DATABASE_URL_VAR, "SQLite URLs take no query options", _DATABASE_FORMS)
    # An in-memory database would be private to one connection of one worker:
    # the hub would lose its data and every worker would see another one.
    if not url.database or url.database == ":memory:" or "\x00" in url.database:
        raise SettingsError(
            DATABASE_URL_VAR, "a SQLite database must be a file path", _DATABASE_FORMS
        )
    return _sqlite_url(cwd / url.database)


def _sqlite_url(path: Path) -> str:
    return URL.create("sqlite", database=str(path.absolute())).render_as_string()


def _parse_postgresql(url: URL) -> str:
    if not url.database:
        raise SettingsError(
            DATABASE_URL_VAR, "a PostgreSQL URL must name its database", _DATABASE_FORMS
        )
    # psycopg 3 is the driver we install; SQLAlchemy's bare "postgresql"
    # would mean psycopg2.
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _byte_count(variable: str, raw: str) -> int:
    expected = f"a positive whole number of bytes, e.g. {DEFAULT_MAX_REQUEST_BYTES}"
    if not raw.isascii() or not raw.isdigit():
        raise SettingsError(variable, f"{raw!r} is not a whole number", expected)
    value = int(raw)
    if value < 1:
        raise SettingsError(variable, "must be at least 1", expected)
    return value


def _cache_secret(raw: str) -> str:
    if not _SECRET_RE.fullmatch(raw):
        # The value itself is never repeated: it is a secret, however malformed.
        raise SettingsError(
            CACHE_SECRET_VAR, f"not a usable secret ({len(raw)} characters)", _CACHE_KEY_FORM
        )
    return raw


def redact_url(database_url: str) -> str:
    """The URL fit for a message or a log: any password replaced by ``***``."""
    return make_url(database_url).render_as_string(hide_password=True)
