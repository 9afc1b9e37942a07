"""Fixtures shared by the whole suite: databases, the app, its clients, tools.

Databases
    ``database_url`` runs a test once on SQLite and once on PostgreSQL (ids
    ``sqlite`` / ``postgresql``; the PostgreSQL run carries the ``postgres``
    marker).  Each test gets its own database, already at the newest schema
    revision: the migrations run once per test run into a template (a SQLite
    file, a PostgreSQL template database), and every test gets a copy.
    ``empty_database_url`` is the same pair, never migrated (for ``init``);
    ``sqlite_database_url`` is one migrated SQLite copy, for tests that do not
    depend on the database kind.  ``shared_database_url`` (both kinds) and
    ``shared_sqlite_database_url`` are one migrated database for a whole
    module: for tests that only read, or whose every request must leave the
    data alone, and share one seeded hub instead of seeding one each.

    PostgreSQL is ``HASHEX_TEST_DATABASE_URL`` (default
    ``postgresql://postgres@127.0.0.1:5432/test``); the role must be allowed
    to create databases.  If it cannot be reached, its tests fail under
    ``CI=true`` and skip elsewhere, the same rule as missing system tools.

App
    ``app`` is the hub's Flask app on the test's ``database_url`` (made by
    ``make_app``, which other settings and databases use too), ``client``
    its test client, ``engine`` an engine on the database, ``runner`` a click
    ``CliRunner`` whose environment points ``hashex-server`` at that
    database: ``runner.invoke(main, ["init"])``.

A real hub
    ``start_hub(database_url, workers=2, ...)`` runs ``hashex-server serve``
    for the test and gives its ``tests.hubserver.HubServer``; every hub it
    started stops at the test's teardown.

Tools
    ``require_tool("openssl")`` gives the tool's path (see tests.environment),
    and marks the test ``tool``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from server import flask_db, migrate
from server.app import create_app
from server.config import DATABASE_URL_VAR, parse_database_url, redact_url
from server.engine import make_engine
from tests.environment import IN_CI, runner_env
from tests.environment import require_tool as _require_tool
from tests.hubserver import StartHub

TEST_DATABASE_URL_VAR = "HASHEX_TEST_DATABASE_URL"
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if IN_CI else "dev")

DATABASE_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def unavailable(reason: str) -> NoReturn:
    """Stop a test whose requirement is missing: fail under CI=true, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true requires it)", pytrace=False)
    pytest.skip(reason)


def sqlite_url(path: Path) -> str:
    """The normalised database URL of a SQLite file."""
    return URL.create("sqlite", database=str(path)).render_as_string()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that asks for ``require_tool`` as a ``tool`` test."""
    for item in items:
        if "require_tool" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.tool)


@pytest.fixture
def require_tool() -> Callable[[str], str]:
    """A function giving a system tool's path; see tests.environment.require_tool."""
    return _require_tool


# -- SQLite -------------------------------------------------------------------


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "hashex.db"
    migrate.upgrade(sqlite_url(path))
    # Fold the write-ahead log into the main file, so copying that one file
    # copies the whole database.
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _sqlite_copy(template: Path, directory: Path) -> str:
    path = directory / "hashex.db"
    shutil.copyfile(template, path)
    return sqlite_url(path)


@pytest.fixture
def sqlite_database_url(_sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite database of this test's own."""
    return _sqlite_copy(_sqlite_template, tmp_path)


# -- PostgreSQL ---------------------------------------------------------------


@dataclass(frozen=True)
class _PostgresServer:
    """The test server: an admin connection to make and drop databases."""

    admin: Engine
    url: URL

    def create(self, template: str | None = None) -> tuple[str, str]:
        """A new database (a copy of ``template`` if given): its name and URL."""
        name = f"hashex_test_{secrets.token_hex(6)}"
        statement = f'CREATE DATABASE "{name}"'
        if template is not None:
            statement += f' TEMPLATE "{template}"'
        with self.admin.connect() as connection:
            connection.exec_driver_sql(statement)
        return name, self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, name: str) -> None:
        """Drop a database, ending any session a test left open on it."""
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _postgres() -> Iterator[_PostgresServer]:
    raw = os.environ.get(TEST_DATABASE_URL_VAR) or DEFAULT_TEST_DATABASE_URL
    url = make_url(parse_database_url(raw, Path.cwd()))
    admin = create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )
    try:
        problem = _connection_problem(admin)
        if problem is not None:
            unavailable(
                f"PostgreSQL {redact_url(url.render_as_string(hide_password=False))} "
                f"({TEST_DATABASE_URL_VAR}) is unreachable: {problem}"
            )
        yield _PostgresServer(admin, url)
    finally:
        admin.dispose()


def _connection_problem(engine: Engine) -> str | None:
    """Why ``engine`` cannot connect (the driver's first line), or None if it can."""
    try:
        with engine.connect():
            return None
    except OperationalError as exc:
        return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)


@pytest.fixture(scope="session")
def _postgres_template(_postgres: _PostgresServer) -> Iterator[str]:
    name, url = _postgres.create()
    try:
        migrate.upgrade(url)
        yield name
    finally:
        _postgres.drop(name)


# -- Databases of a test, or of a module ---------------------------------------------


def _new_database(request: pytest.FixtureRequest, directory: Path) -> Iterator[str]:
    """A migrated database of ``request.param``'s kind (a SQLite one in ``directory``)."""
    if request.param == "sqlite":
        yield _sqlite_copy(request.getfixturevalue("_sqlite_template"), directory)
        return
    server: _PostgresServer = request.getfixturevalue("_postgres")
    name, url = server.create(template=request.getfixturevalue("_postgres_template"))
    try:
        yield url
    finally:
        server.drop(name)


@pytest.fixture(params=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at the newest schema revision, this test's own; SQLite, then PostgreSQL."""
    yield from _new_database(request, tmp_path)


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def shared_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database at the newest schema revision for the whole module; SQLite, then PostgreSQL."""
    yield from _new_database(request, tmp_path_factory.mktemp("shared-database"))


@pytest.fixture(scope="module")
def shared_sqlite_database_url(
    _sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A migrated SQLite database for the whole module."""
    return _sqlite_copy(_sqlite_template, tmp_path_factory.mktemp("shared-database"))


@pytest.fixture(params=DATABASE_KINDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database never migrated (a SQLite file not yet made); SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "hashex.db")
        return
    server: _PostgresServer = request.getfixturevalue("_postgres")
    name, url = server.create()
    try:
        yield url
    finally:
        server.drop(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on this test's database."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


# -- The app ----------------------------------------------------------------------


@contextmanager
def make_app(database_url: str, settings: Mapping[str, str] | None = None) -> Iterator[Flask]:
    """The hub's app on ``database_url`` with ``settings``, in testing mode, for the block."""
    app = create_app({DATABASE_URL_VAR: database_url, **(settings or {})})
    app.config["TESTING"] = True
    try:
        yield app
    finally:
        flask_db.dispose(app)


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """The hub's app on this test's database, in testing mode."""
    with make_app(database_url) as app:
        yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of ``app``."""
    return app.test_client()


@pytest.fixture
def runner(database_url: str) -> CliRunner:
    """A CliRunner whose ``hashex-server`` uses this test's database."""
    return CliRunner(env=runner_env(HASHEX_DATABASE_URL=database_url))


# -- A real hub -------------------------------------------------------------------


@pytest.fixture
def start_hub(tmp_path: Path) -> Iterator[StartHub]:
    """Start real hubs for this test (see tests.hubserver.StartHub); all stop at its teardown."""
    with ExitStack() as hubs:
        yield StartHub(hubs, tmp_path)
