"""``hashex-server`` through click's CliRunner: init, log key, and bad input."""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from client.protocol.keys import key_id, load_private_key_pem, load_public_key_pem
from server import migrate
from server.cli import main
from server.cli.serve import is_loopback, parse_bind
from server.config import DATABASE_URL_VAR, MAX_REQUEST_BYTES_VAR
from server.models import HubKey
from tests.conftest import sqlite_url
from tests.environment import BIN, process_env, runner_env
from tests.server.dbstate import session_factory
from tests.server.seeding import NEWER_REVISION, pretend_newer_schema


def _keys(database_url: str) -> list[HubKey]:
    with session_factory(database_url) as factory, factory() as session:
        return list(session.scalars(select(HubKey)))


def _init(database_url: str) -> tuple[str, str]:
    """Run init on ``database_url``; its two output lines."""
    result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=database_url)).invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    database_line, key_line = result.stdout.splitlines()
    return database_line, key_line


def test_init_creates_the_schema_and_the_log_key(empty_database_url: str) -> None:
    database_line, key_line = _init(empty_database_url)
    assert database_line.endswith(f": created at revision {migrate.head_revision()}")
    assert migrate.current_revision(empty_database_url) == migrate.head_revision()
    [key] = _keys(empty_database_url)
    assert key_line == f"hub log key {key.keyid}: created"
    private = load_private_key_pem(key.private_pem.encode("ascii"))
    assert key_id(private) == key.keyid
    assert key.public_key == private.public_key().public_bytes_raw()


def test_init_twice_keeps_the_same_key(empty_database_url: str) -> None:
    _, first = _init(empty_database_url)
    database_line, second = _init(empty_database_url)
    assert database_line.endswith(f": already at revision {migrate.head_revision()}")
    assert second == first.replace(": created", ": exists")
    assert len(_keys(empty_database_url)) == 1


def test_init_on_a_migrated_database_only_adds_the_key(runner: CliRunner) -> None:
    result = runner.invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    assert "already at revision" in result.stdout
    assert result.stdout.rstrip().endswith(": created")


def test_init_does_not_print_the_database_password(tmp_path: Path) -> None:
    # Nothing listens on port 1, so this fails fast, after naming the database.
    url = "postgresql://hub:hunter2@127.0.0.1:1/hashex"
    result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=url)).invoke(main, ["init"])
    assert result.exit_code == 1
    assert "cannot use the database postgresql+psycopg://hub:***@127.0.0.1:1/hashex" in (
        result.stderr
    )
    assert "hunter2" not in result.output


def test_log_key_prints_the_public_key(runner: CliRunner, database_url: str) -> None:
    runner.invoke(main, ["init"])
    result = runner.invoke(main, ["log", "key"])
    assert result.exit_code == 0, result.output
    [key] = _keys(database_url)
    public = load_public_key_pem(result.stdout.encode("ascii"))
    assert key_id(public) == key.keyid
    assert result.stdout.startswith("-----BEGIN PUBLIC KEY-----\n")


def test_log_key_before_the_key_exists(runner: CliRunner) -> None:
    result = runner.invoke(main, ["log", "key"])
    assert result.exit_code == 1
    assert "run hashex-server init" in result.stderr


def test_log_key_on_an_uninitialised_database(empty_database_url: str) -> None:
    result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=empty_database_url)).invoke(
        main, ["log", "key"]
    )
    assert result.exit_code == 1
    assert "run hashex-server init" in result.stderr


def test_a_missing_sqlite_file_is_not_created_by_log_key(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "hashex.db")
    result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=url)).invoke(main, ["log", "key"])
    assert result.exit_code == 1
    assert f"no database at {tmp_path / 'hashex.db'}" in result.stderr
    assert not (tmp_path / "hashex.db").exists()


@pytest.mark.parametrize("command", [["init"], ["log", "key"], ["serve"]])
@pytest.mark.parametrize(
    ("variable", "value"),
    [(DATABASE_URL_VAR, "mysql://hub@db/hashex"), (MAX_REQUEST_BYTES_VAR, "lots")],
)
def test_bad_settings_exit_2_naming_the_variable(
    command: list[str], variable: str, value: str
) -> None:
    result = CliRunner(env={variable: value}).invoke(main, command)
    assert result.exit_code == 2
    assert f"Error: {variable}: " in result.stderr


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_init_creates_the_sqlite_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    database = tmp_path / "new" / "deeper" / "hub.db"
    url = "sqlite:///new/deeper/hub.db" if relative else f"sqlite:///{database}"
    result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=url)).invoke(main, ["init"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"created the directory {database.parent}\n")
    assert migrate.current_revision(sqlite_url(database)) == migrate.head_revision()
    again = CliRunner(env=runner_env(HASHEX_DATABASE_URL=url)).invoke(main, ["init"])
    assert again.exit_code == 0, again.stderr
    assert "created the directory" not in again.stdout


def test_init_names_a_directory_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    url = sqlite_url(tmp_path / "a-file" / "sub" / "hashex.db")
    result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=url)).invoke(main, ["init"])
    assert result.exit_code == 2
    assert f"cannot create the directory {tmp_path / 'a-file' / 'sub'}" in result.stderr


def test_help_works_whatever_the_environment() -> None:
    runner = CliRunner(env={DATABASE_URL_VAR: "nonsense"})
    for command in ([], ["init"], ["serve"], ["log"], ["log", "key"]):
        result = runner.invoke(main, [*command, "--help"])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("bind", "problem"),
    [
        ("8080", "expected HOST:PORT"),
        ("127.0.0.1", "expected HOST:PORT"),
        (":8080", "is not an IP address or a host name"),
        ("bad_host:8080", "is not an IP address or a host name"),
        ("-bad:8080", "is not an IP address or a host name"),
        ("127.0.0.1:0", "from 1 to 65535"),
        ("127.0.0.1:65536", "from 1 to 65535"),
        ("127.0.0.1:http", "from 1 to 65535"),
        ("::1:8080", "in brackets"),
        ("[::1]8080", "expected [IPV6-ADDRESS]:PORT"),
        ("[127.0.0.1]:8080", "expected [IPV6-ADDRESS]:PORT"),
        ("unix:/run/hashex.sock", "from 1 to 65535"),
    ],
)
def test_serve_refuses_a_bad_bind_with_exit_2(bind: str, problem: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--bind", bind])
    assert result.exit_code == 2
    assert "Invalid value for '--bind'" in result.stderr
    assert problem in result.stderr


@pytest.mark.parametrize(
    ("bind", "parsed"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:443", ("0.0.0.0", 443)),  # noqa: S104 - parsing, not listening
        ("localhost:1", ("localhost", 1)),
        ("hub.example.org:65535", ("hub.example.org", 65535)),
        ("[::1]:8080", ("::1", 8080)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ],
)
def test_parse_bind(bind: str, parsed: tuple[str, int]) -> None:
    assert parse_bind(bind) == parsed


@given(address=st.ip_addresses(), port=st.integers(1, 65535))
def test_parse_bind_takes_every_address(address: object, port: int) -> None:
    text = f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"
    assert parse_bind(text) == (str(address), port)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - parsing, not listening
        ("192.0.2.1", False),
        ("hub.example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_needs_certfile_and_keyfile_together(tmp_path: Path) -> None:
    certificate = tmp_path / "cert.pem"
    certificate.write_text("not used")
    result = CliRunner().invoke(main, ["serve", "--certfile", str(certificate)])
    assert result.exit_code == 2
    assert "--certfile and --keyfile go together" in result.stderr


def test_serve_refuses_missing_tls_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["serve", "--certfile", str(tmp_path / "no.pem"), "--keyfile", str(tmp_path / "no.key")],
    )
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


@pytest.mark.parametrize("command", [["init"], ["serve"], ["log", "key"]])
def test_a_schema_from_a_newer_release_stops_every_command(
    database_url: str, command: list[str]
) -> None:
    pretend_newer_schema(database_url)
    result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=database_url)).invoke(main, command)
    assert result.exit_code == 1
    assert f"revision {NEWER_REVISION}, which this version of Hashex does not know" in (
        result.stderr
    )


def test_serve_refuses_an_uninitialised_database(empty_database_url: str) -> None:
    result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=empty_database_url)).invoke(
        main, ["serve"]
    )
    assert result.exit_code == 1
    assert "run hashex-server init" in result.stderr


def test_version_is_the_packages() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip().endswith(f", version {version('hashex')}")
    # The installed script, as an operator types it, and as hashex --version does.
    for program in ("hashex-server", "hashex"):
        shown = subprocess.run(
            [str(BIN / program), "--version"],
            env=process_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == f"{program}, version {version('hashex')}\n"
