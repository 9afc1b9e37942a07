"""Settings from HASHEX_* variables: defaults, normal forms, and clear refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.config import (
    DATABASE_URL_VAR,
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_REQUEST_BYTES_VAR,
    Settings,
    SettingsError,
    redact_url,
)


def test_defaults_are_a_sqlite_file_in_the_working_directory(tmp_path: Path) -> None:
    settings = Settings.from_env({}, cwd=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path}/hashex.db"
    assert settings.max_request_bytes == DEFAULT_MAX_REQUEST_BYTES


def test_empty_variables_take_the_defaults(tmp_path: Path) -> None:
    environ = {DATABASE_URL_VAR: "", MAX_REQUEST_BYTES_VAR: ""}
    assert Settings.from_env(environ, cwd=tmp_path) == Settings.from_env({}, cwd=tmp_path)


def test_relative_sqlite_paths_resolve_against_the_working_directory(tmp_path: Path) -> None:
    settings = Settings.from_env({DATABASE_URL_VAR: "sqlite:///var/hub.db"}, cwd=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path}/var/hub.db"


def test_absolute_sqlite_paths_stay(tmp_path: Path) -> None:
    settings = Settings.from_env({DATABASE_URL_VAR: "sqlite:////srv/hashex/hub.db"}, cwd=tmp_path)
    assert settings.database_url == "sqlite:////srv/hashex/hub.db"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (
            "postgresql://hub@db.example:5432/hashex",
            "postgresql+psycopg://hub@db.example:5432/hashex",
        ),
        ("postgresql+psycopg://hub@db/hashex", "postgresql+psycopg://hub@db/hashex"),
        (
            "postgresql://hub:p%40ss@db/hashex?sslmode=verify-full",
            "postgresql+psycopg://hub:p%40ss@db/hashex?sslmode=verify-full",
        ),
    ],
)
def test_postgresql_urls_use_psycopg(raw: str, normal: str, tmp_path: Path) -> None:
    assert Settings.from_env({DATABASE_URL_VAR: raw}, cwd=tmp_path).database_url == normal


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("not a url", "not a database URL"),
        ("postgresql://hub@db:port/hashex", "not a database URL"),
        ("mysql://hub@db/hashex", "unsupported database 'mysql'"),
        ("postgres://hub@db/hashex", "write postgresql://"),
        ("postgresql+psycopg2://hub@db/hashex", "unsupported database"),
        ("postgresql://hub@db", "must name its database"),
        ("sqlite://", "must be a file path"),
        ("sqlite:///:memory:", "must be a file path"),
        ("sqlite://host/hub.db", "names no host"),
        ("sqlite:///hub.db?mode=ro", "no query options"),
    ],
)
def test_bad_database_urls_are_refused_clearly(raw: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({DATABASE_URL_VAR: raw}, cwd=tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{DATABASE_URL_VAR}: ")
    assert problem in message
    assert "expected sqlite:///relative/path, sqlite:////absolute/path" in message
    assert caught.value.variable == DATABASE_URL_VAR


def test_a_refused_url_does_not_echo_its_password(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({DATABASE_URL_VAR: "postgresql://hub:hunter2@db"}, cwd=tmp_path)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "1e6", "10 ", "\u0661\u0662"])
def test_bad_byte_limits_are_refused_clearly(raw: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=f"^{MAX_REQUEST_BYTES_VAR}: .*expected a positive"):
        Settings.from_env({MAX_REQUEST_BYTES_VAR: raw}, cwd=tmp_path)


def test_byte_limit(tmp_path: Path) -> None:
    settings = Settings.from_env({MAX_REQUEST_BYTES_VAR: "1048576"}, cwd=tmp_path)
    assert settings.max_request_bytes == 1048576


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = Settings.from_env({}, cwd=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_request_bytes = 1  # type: ignore[misc]


def test_redact_url_hides_the_password() -> None:
    redacted = redact_url("postgresql+psycopg://hub:hunter2@db/hashex")
    assert "hunter2" not in redacted
    assert redacted == "postgresql+psycopg://hub:***@db/hashex"


@given(url=st.text(), limit=st.text())
def test_any_text_either_parses_or_is_a_settings_error(url: str, limit: str) -> None:
    try:
        settings = Settings.from_env(
            {DATABASE_URL_VAR: url, MAX_REQUEST_BYTES_VAR: limit}, cwd=Path("/srv")
        )
    except SettingsError:
        return
    assert settings.database_url.startswith(("sqlite:////", "postgresql+psycopg://"))
    assert settings.max_request_bytes >= 1
