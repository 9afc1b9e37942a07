"""``hashex-server`` admin verbs: agencies, tokens, groups and ``audit verify``.

Every test runs on SQLite and PostgreSQL.  Keysets are real: Ed25519 keys
made in the test and signed by the client's keyset code, or written by
``hashex keyset init`` itself.  Each refusal is checked three ways: exit 2
with the reason on stderr, nothing of it stored, and one ``refused`` audit row.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, text
from sqlalchemy.orm import DeclarativeBase

from client import cli as client_cli
from client.keysets import KeyChoice, make_keyset
from client.protocol.documents import sha256_hex
from client.protocol.keys import generate_private_key, load_private_key_pem, public_key_to_pem
from server.cli import main
from server.cli.agencies import MAX_KEYSET_FILE_BYTES
from server.config import DATABASE_URL_VAR, MAX_REQUEST_BYTES_VAR
from server.errors import problem_type
from server.models import Agency, AgencyKeyset, AuditEvent, GroupMember, HubKey, SharingGroup, Token
from server.services import audit
from tests.conftest import sqlite_url
from tests.environment import runner_env
from tests.server.dbstate import engine_for, session_factory

USER = "alice"
ACTOR = f"cli:{USER}"
TOKEN_LINE = re.compile(r"hxt_[A-Za-z0-9_-]{43}\n")

# Every admin verb with arguments that pass click's own checks; KEYSET
# stands for the path of a keyset file (see with_keyset).
ADMIN_COMMANDS = [
    ["agency", "create", "acme", "--name", "Acme", "--keyset", "KEYSET"],
    ["agency", "list"],
    ["token", "create", "acme", "--role", "reader"],
    ["token", "list"],
    ["token", "revoke", "1"],
    ["group", "create", "g"],
    ["group", "add", "g", "acme"],
    ["group", "list"],
    ["audit", "verify"],
]


# -- helpers ------------------------------------------------------------------------


def keyset_text(
    slug: str,
    *,
    version: int = 1,
    key: Ed25519PrivateKey | None = None,
    publishers: list[Path] | None = None,
) -> str:
    """The JSON text of a signed keyset file of ``slug``, one key in both roles."""
    choice = KeyChoice(both=[key or generate_private_key()], publishers=publishers or [])
    return make_keyset(slug, version, choice, expires_days=365).dumps()


def write_keyset(directory: Path, slug: str, **options: Any) -> Path:
    """A keyset file of ``slug`` in ``directory`` (see :func:`keyset_text`)."""
    path = directory / f"{slug}-keyset.json"
    path.write_text(keyset_text(slug, **options), encoding="ascii")
    return path


def with_keyset(command: list[str], directory: Path) -> list[str]:
    """``command`` with KEYSET replaced by a keyset file of acme made in ``directory``."""
    if "KEYSET" not in command:
        return command
    path = str(write_keyset(directory, "acme"))
    return [path if arg == "KEYSET" else arg for arg in command]


def invoke(runner: CliRunner, *args: str) -> Result:
    """Run ``hashex-server ARGS`` as the login ``alice``."""
    return runner.invoke(main, list(args), env={"LOGNAME": USER})


def create_agency(runner: CliRunner, directory: Path, slug: str) -> Result:
    """Register ``slug`` with a fresh keyset; the run must succeed."""
    path = write_keyset(directory, slug)
    result = invoke(runner, "agency", "create", slug, "--name", slug.title(), "--keyset", str(path))
    assert result.exit_code == 0, result.output
    return result


def create_token(runner: CliRunner, agency: str, *options: str) -> str:
    """A new token of ``agency`` (default role reader); the run must succeed."""
    result = invoke(runner, "token", "create", agency, "--role", "reader", *options)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def count(database_url: str, model: type[DeclarativeBase]) -> int:
    """How many rows the table of ``model`` holds."""
    with session_factory(database_url) as factory, factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def rows(database_url: str, model: type[DeclarativeBase]) -> list[Any]:
    """Every row of ``model``'s table, by primary key."""
    with session_factory(database_url) as factory, factory() as session:
        key = model.__mapper__.primary_key
        return list(session.scalars(select(model).order_by(*key)))


def events(database_url: str) -> list[tuple[str, str, str, str | None, str | None]]:
    """The audit log as (action, actor, outcome, target, subject agency), oldest first."""
    return [
        (e.action, e.actor, e.outcome, e.target, e.subject_agency)
        for e in rows(database_url, AuditEvent)
    ]


def assert_refused(result: Result, problem: str) -> None:
    """Exit 2 with ``hashex-server: ...problem...`` as the one line on stderr."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("hashex-server: "), result.stderr
    assert problem in result.stderr
    assert len(result.stderr.splitlines()) == 1


def last_event(database_url: str) -> AuditEvent:
    """The newest audit row."""
    event: AuditEvent = rows(database_url, AuditEvent)[-1]
    return event


# -- agency create --------------------------------------------------------------------


def test_agency_create_stores_the_agency_and_its_keyset(
    runner: CliRunner, database_url: str, tmp_path: Path
) -> None:
    path = write_keyset(tmp_path, "acme")
    data = json.loads(path.read_text())["keyset"].encode("ascii")
    result = invoke(
        runner, "agency", "create", "acme", "--name", "Acme Police", "--keyset", str(path)
    )
    assert result.exit_code == 0, result.output
    first, second = result.stdout.splitlines()
    assert first == "agency acme created: Acme Police"
    assert second.startswith(f"keyset 1 sha256:{sha256_hex(data)}, expires ")
    [agency] = rows(database_url, Agency)
    assert (agency.slug, agency.name) == ("acme", "Acme Police")
    [keyset] = rows(database_url, AgencyKeyset)
    assert (keyset.agency_id, keyset.version, keyset.body) == (agency.id, 1, data.decode())
    assert events(database_url) == [("agency.create", ACTOR, "ok", "agency:acme", "acme")]
    assert json.loads(last_event(database_url).detail)["keyset_sha256"] == sha256_hex(data)


def test_agency_create_json(runner: CliRunner, tmp_path: Path) -> None:
    path = write_keyset(tmp_path, "acme")
    result = invoke(
        runner, "agency", "create", "acme", "--name", "Acme", "--keyset", str(path), "--json"
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["slug"] == "acme"
    assert created["name"] == "Acme"
    assert created["keyset"]["version"] == 1
    assert re.fullmatch(r"[0-9a-f]{64}", created["keyset"]["sha256"])


def test_agency_create_takes_the_file_hashex_keyset_init_writes(
    runner: CliRunner, database_url: str, tmp_path: Path
) -> None:
    client = CliRunner()
    key, keyset = tmp_path / "acme.pem", tmp_path / "acme.json"
    made = client.invoke(client_cli.main, ["keygen", "--out", str(key)])
    assert made.exit_code == 0, made.output
    made = client.invoke(
        client_cli.main, ["keyset", "init", "acme", "--key", str(key), "--out", str(keyset)]
    )
    assert made.exit_code == 0, made.output
    result = invoke(runner, "agency", "create", "acme", "--name", "Acme", "--keyset", str(keyset))
    assert result.exit_code == 0, result.output
    assert count(database_url, Agency) == 1


def _tampered(directory: Path) -> Path:
    # One byte of the signed text changes (the expiry's century); the
    # signature and the JSON around it stay as they were.
    path = write_keyset(directory, "acme")
    original = path.read_text()
    tampered = original.replace("\\nexpires 20", "\\nexpires 21", 1)
    assert sum(a != b for a, b in zip(original, tampered, strict=True)) == 1
    path.write_text(tampered)
    return path


def _write(directory: Path, content: str | bytes) -> Path:
    path = directory / "keyset.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("make_file", "slug", "name", "problem"),
    [
        pytest.param(
            lambda d: write_keyset(d, "other"),
            "acme",
            "Acme",
            "keyset file: keyset is for agency other, expected acme",
            id="another-agency",
        ),
        pytest.param(
            _tampered, "acme", "Acme", "keyset file: signature by root key", id="tampered"
        ),
        pytest.param(
            lambda d: write_keyset(d, "acme", version=2),
            "acme",
            "Acme",
            "keyset file: keyset version 2, expected 1",
            id="version-2",
        ),
        pytest.param(
            lambda d: _write(d, "this is not JSON\n"),
            "acme",
            "Acme",
            "keyset file: keyset object: not valid JSON",
            id="not-json",
        ),
        pytest.param(
            lambda d: _write(d, b"\xff\xfe\x00garbage"),
            "acme",
            "Acme",
            "keyset file: keyset object: not valid JSON",
            id="binary",
        ),
        pytest.param(
            lambda d: _write(d, '{"version": 1, "keyset": "hashex-keyset/v1\\n"}'),
            "acme",
            "Acme",
            "expected a keyset object with exactly 'version', 'keyset' and 'signatures'",
            id="no-signatures",
        ),
        pytest.param(
            lambda d: write_keyset(d, "acme"),
            "Acme!",
            "Acme",
            "agency 'Acme!' must match [a-z0-9][a-z0-9-]{0,62}",
            id="bad-slug",
        ),
        pytest.param(
            lambda d: write_keyset(d, "acme"),
            "a" * 64,
            "Acme",
            "must match [a-z0-9][a-z0-9-]{0,62}",
            id="long-slug",
        ),
        pytest.param(
            lambda d: write_keyset(d, "acme"),
            "acme",
            "  ",
            "name: must not be empty",
            id="blank-name",
        ),
        pytest.param(
            lambda d: write_keyset(d, "acme"),
            "acme",
            "n" * 201,
            "name: must be at most 200 characters (got 201)",
            id="long-name",
        ),
        pytest.param(
            lambda d: write_keyset(d, "acme"),
            "acme",
            "Acme\x00",
            "name: must not contain control or format characters (U+0000 at position 4)",
            id="nul-in-name",
        ),
        pytest.param(
            lambda d: write_keyset(d, "acme"),
            "acme",
            "Acme\x1b[31m",
            "name: must not contain control or format characters (U+001B at position 4)",
            id="escape-in-name",
        ),
    ],
)
def test_agency_create_refusals_store_nothing_and_are_audited(
    runner: CliRunner,
    database_url: str,
    tmp_path: Path,
    make_file: Callable[[Path], Path],
    slug: str,
    name: str,
    problem: str,
) -> None:
    path = make_file(tmp_path)
    result = invoke(runner, "agency", "create", slug, "--name", name, "--keyset", str(path))
    assert_refused(result, problem)
    assert count(database_url, Agency) == 0
    assert count(database_url, AgencyKeyset) == 0
    [event] = rows(database_url, AuditEvent)
    assert (event.action, event.actor, event.outcome) == ("agency.create", ACTOR, "refused")
    # A malformed slug names no agency; a well-formed one does.
    expected_subject = "acme" if slug == "acme" else None
    assert event.subject_agency == expected_subject
    detail = json.loads(event.detail)
    assert detail["detail"] in result.stderr
    assert detail["type"].startswith(problem_type(""))


def test_agency_create_refuses_a_taken_slug(
    runner: CliRunner, database_url: str, tmp_path: Path
) -> None:
    create_agency(runner, tmp_path, "acme")
    path = write_keyset(tmp_path, "acme")
    result = invoke(runner, "agency", "create", "acme", "--name", "Other", "--keyset", str(path))
    assert_refused(result, "agency 'acme' already exists")
    [agency] = rows(database_url, Agency)
    assert agency.name == "Acme"
    assert count(database_url, AgencyKeyset) == 1
    assert events(database_url)[-1] == ("agency.create", ACTOR, "refused", "agency:acme", "acme")
    assert json.loads(last_event(database_url).detail)["type"] == problem_type("agency-exists")


@pytest.mark.parametrize("role", ["root", "publish"])
def test_agency_create_refuses_the_hubs_log_key(
    runner: CliRunner, database_url: str, tmp_path: Path, role: str
) -> None:
    assert invoke(runner, "init").exit_code == 0
    [hub_key] = rows(database_url, HubKey)
    hub_private = load_private_key_pem(hub_key.private_pem.encode("ascii"))
    if role == "root":
        path = write_keyset(tmp_path, "acme", key=hub_private)
    else:
        public = tmp_path / "hub.pub.pem"
        public.write_bytes(public_key_to_pem(hub_private.public_key()))
        path = write_keyset(tmp_path, "acme", publishers=[public])
    result = invoke(runner, "agency", "create", "acme", "--name", "Acme", "--keyset", str(path))
    assert_refused(result, f"key {hub_key.keyid} is the hub's log key")
    assert count(database_url, Agency) == 0
    assert count(database_url, AgencyKeyset) == 0


def test_agency_create_names_a_missing_keyset_file(
    runner: CliRunner, database_url: str, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.json"
    result = invoke(runner, "agency", "create", "acme", "--name", "A", "--keyset", str(missing))
    assert result.exit_code == 2
    assert f"--keyset {missing}: cannot read it (No such file or directory)" in result.stderr
    assert count(database_url, Agency) == 0
    # The hub was never asked: nothing to audit.
    assert count(database_url, AuditEvent) == 0


def test_agency_create_refuses_a_directory_as_keyset(
    runner: CliRunner, database_url: str, tmp_path: Path
) -> None:
    result = invoke(runner, "agency", "create", "acme", "--name", "A", "--keyset", str(tmp_path))
    assert result.exit_code == 2
    assert "is a directory" in result.stderr
    assert count(database_url, Agency) == 0


def test_agency_create_refuses_a_huge_keyset_file(
    runner: CliRunner, database_url: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, b" " * (MAX_KEYSET_FILE_BYTES + 1))
    result = invoke(runner, "agency", "create", "acme", "--name", "A", "--keyset", str(path))
    assert result.exit_code == 2
    assert f"larger than {MAX_KEYSET_FILE_BYTES} bytes" in result.stderr
    assert count(database_url, Agency) == 0


def test_agency_list(runner: CliRunner, tmp_path: Path) -> None:
    create_agency(runner, tmp_path, "zulu")
    create_agency(runner, tmp_path, "alpha")
    table = invoke(runner, "agency", "list")
    assert table.exit_code == 0, table.output
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["SLUG", "KEYSET", "SHA256", "CREATED", "NAME"]
    assert [line.split()[0] for line in lines] == ["alpha", "zulu"]
    listed = json.loads(invoke(runner, "agency", "list", "--json").stdout)["agencies"]
    assert [(a["slug"], a["name"], a["keyset"]["version"]) for a in listed] == [
        ("alpha", "Alpha", 1),
        ("zulu", "Zulu", 1),
    ]


# -- tokens ---------------------------------------------------------------------------


def test_token_create_prints_only_the_token_and_stores_its_hash(
    runner: CliRunner, database_url: str, tmp_path: Path
) -> None:
    create_agency(runner, tmp_path, "acme")
    before = datetime.now(UTC)
    result = invoke(runner, "token", "create", "acme", "--role", "publisher", "--name", "ci")
    assert result.exit_code == 0, result.output
    assert TOKEN_LINE.fullmatch(result.stdout)
    secret = result.stdout.strip()
    [token] = rows(database_url, Token)
    assert f"token {token.id} of acme, role publisher" in result.stderr
    assert token.secret_sha256 == hashlib.sha256(secret.encode("ascii")).hexdigest()
    assert (token.role, token.name, token.revoked_at) == ("publisher", "ci", None)
    assert token.expires_at is not None
    assert (
        before + timedelta(days=365) <= token.expires_at <= datetime.now(UTC) + timedelta(days=365)
    )
    # The secret is nowhere in the database: not in the token's row, not in the audit log.
    with engine_for(database_url) as engine, engine.connect() as connection:
        for table in ("tokens", "audit_events"):
            for row in connection.execute(text(f"SELECT * FROM {table}")):  # noqa: S608
                assert all(secret not in str(value) for value in row), table
    assert events(database_url)[-1] == (
        "token.create",
        ACTOR,
        "ok",
        f"token:{token.id}",
        "acme",
    )
    assert json.loads(last_event(database_url).detail)["role"] == "publisher"


def test_token_create_expires_after_the_days_given(
    runner: CliRunner, database_url: str, tmp_path: Path
) -> None:
    create_agency(runner, tmp_path, "acme")
    create_token(runner, "acme", "--expires", "7")
    [token] = rows(database_url, Token)
    assert token.expires_at is not None
    assert token.expires_at - token.created_at == timedelta(days=7)


def test_token_create_help_gives_the_default_expiry() -> None:
    result = CliRunner().invoke(main, ["token", "create", "--help"])
    assert "[default: 365;" in result.stdout


def test_token_create_refuses_an_unknown_agency(runner: CliRunner, database_url: str) -> None:
    result = invoke(runner, "token", "create", "nobody", "--role", "reader")
    assert_refused(result, "there is no agency 'nobody'")
    assert count(database_url, Token) == 0
    assert events(database_url) == [("token.create", ACTOR, "refused", None, "nobody")]
    assert json.loads(last_event(database_url).detail)["type"] == problem_type("not-found")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--role", "root"], "Invalid value for '--role'"),
        ([], "Missing option '--role'"),
        (["--role", "reader", "--expires", "0"], "Invalid value for '--expires'"),
        (["--role", "reader", "--expires", "3651"], "Invalid value for '--expires'"),
    ],
)
def test_token_create_refuses_bad_options(
    runner: CliRunner, database_url: str, tmp_path: Path, options: list[str], problem: str
) -> None:
    create_agency(runner, tmp_path, "acme")
    result = invoke(runner, "token", "create", "acme", *options)
    assert result.exit_code == 2
    assert problem in result.stderr
    assert result.stdout == ""
    assert count(database_url, Token) == 0


def test_token_list_shows_no_secret(runner: CliRunner, database_url: str, tmp_path: Path) -> None:
    create_agency(runner, tmp_path, "acme")
    secret = create_token(runner, "acme", "--name", "scanner")
    digest = hashlib.sha256(secret.encode("ascii")).hexdigest()
    table = invoke(runner, "token", "list")
    listed = invoke(runner, "token", "list", "--json")
    for result in (table, listed):
        assert result.exit_code == 0, result.output
        assert secret not in result.output
        assert digest not in result.output
        assert secret[len("hxt_") :] not in result.output
    header, line = table.stdout.splitlines()
    assert header.split() == [
        *("ID", "AGENCY", "ROLE", "NAME", "CREATED", "EXPIRES", "REVOKED", "LAST", "USED")
    ]
    assert line.split()[:4] == ["1", "acme", "reader", "scanner"]
    [token] = json.loads(listed.stdout)["tokens"]
    assert set(token) == {
        "id",
        "agency",
        "role",
        "name",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    }
    assert (token["id"], token["agency"], token["revoked_at"]) == (1, "acme", None)


def test_token_list_cannot_be_forged_by_a_name(
    runner: CliRunner, database_url: str, tmp_path: Path
) -> None:
    create_agency(runner, tmp_path, "acme")
    forged = invoke(runner, "token", "create", "acme", "--role", "reader", "--name", "x\n2  acme")
    assert_refused(forged, "name: must not contain control or format characters (U+000A")
    assert count(database_url, Token) == 0
    # A name stored before names were checked is still printed on its own line.
    create_token(runner, "acme", "--name", "x")
    with engine_for(database_url) as engine, engine.begin() as connection:
        connection.execute(text("UPDATE tokens SET name = :name"), {"name": "x\n2   acme  admin"})
    table = invoke(runner, "token", "list")
    assert len(table.stdout.splitlines()) == 2
    assert "'x\\n2   acme  admin'" in table.stdout


def test_token_revoke(runner: CliRunner, database_url: str, tmp_path: Path) -> None:
    create_agency(runner, tmp_path, "acme")
    create_token(runner, "acme")
    result = invoke(runner, "token", "revoke", "1")
    assert result.exit_code == 0, result.output
    [token] = rows(database_url, Token)
    assert token.revoked_at is not None
    assert result.stdout.startswith("token 1: revoked at ")
    assert events(database_url)[-1] == ("token.revoke", ACTOR, "ok", "token:1", "acme")
    [listed] = json.loads(invoke(runner, "token", "list", "--json").stdout)["tokens"]
    assert listed["revoked_at"] is not None
    # Revoking again changes nothing, and is not logged again.
    audited = count(database_url, AuditEvent)
    again = invoke(runner, "token", "revoke", "1")
    assert again.exit_code == 0, again.output
    assert rows(database_url, Token)[0].revoked_at == token.revoked_at
    assert count(database_url, AuditEvent) == audited


def test_token_revoke_refuses_an_unknown_id(runner: CliRunner, database_url: str) -> None:
    result = invoke(runner, "token", "revoke", "99")
    assert_refused(result, "there is no token 99")
    assert events(database_url) == [("token.revoke", ACTOR, "refused", "token:99", None)]


@pytest.mark.parametrize("token_id", ["0", "-1", "2147483648", "99999999999999999999", "one"])
def test_token_revoke_refuses_what_is_no_id(
    runner: CliRunner, database_url: str, token_id: str
) -> None:
    result = invoke(runner, "token", "revoke", "--", token_id)
    assert result.exit_code == 2
    assert "Invalid value for 'ID'" in result.stderr
    assert count(database_url, AuditEvent) == 0


# -- groups ---------------------------------------------------------------------------


def test_group_create_add_and_list(runner: CliRunner, database_url: str, tmp_path: Path) -> None:
    create_agency(runner, tmp_path, "acme")
    create_agency(runner, tmp_path, "beta")
    created = invoke(runner, "group", "create", "europe")
    assert created.exit_code == 0, created.output
    assert created.stdout == "group europe created\n"
    assert invoke(runner, "group", "create", "empty").exit_code == 0
    for member in ("beta", "acme"):
        added = invoke(runner, "group", "add", "europe", member)
        assert added.exit_code == 0, added.output
        assert added.stdout == f"agency {member} added to group europe\n"
    assert count(database_url, GroupMember) == 2
    assert events(database_url)[2:] == [
        ("group.create", ACTOR, "ok", "group:europe", None),
        ("group.create", ACTOR, "ok", "group:empty", None),
        ("group.add", ACTOR, "ok", "group:europe", "beta"),
        ("group.add", ACTOR, "ok", "group:europe", "acme"),
    ]
    table = invoke(runner, "group", "list")
    assert table.stdout.splitlines()[1:] == ["empty   -", "europe  acme,beta"]
    listed = json.loads(invoke(runner, "group", "list", "--json").stdout)
    assert listed == {
        "groups": [
            {"slug": "empty", "members": []},
            {"slug": "europe", "members": ["acme", "beta"]},
        ]
    }


@pytest.mark.parametrize(
    ("command", "problem", "audited"),
    [
        (
            ["group", "create", "europe"],
            "group 'europe' already exists",
            ("group.create", ACTOR, "refused", "group:europe", None),
        ),
        (
            ["group", "create", "Europe"],
            "group 'Europe' must match",
            ("group.create", ACTOR, "refused", None, None),
        ),
        (
            ["group", "add", "europe", "nobody"],
            "there is no agency 'nobody'",
            ("group.add", ACTOR, "refused", "group:europe", "nobody"),
        ),
        (
            ["group", "add", "nowhere", "acme"],
            "there is no group 'nowhere'",
            ("group.add", ACTOR, "refused", "group:nowhere", "acme"),
        ),
        (
            ["group", "add", "europe", "acme"],
            "acme is already a member of group europe",
            ("group.add", ACTOR, "refused", "group:europe", "acme"),
        ),
    ],
)
def test_group_refusals(
    runner: CliRunner,
    database_url: str,
    tmp_path: Path,
    command: list[str],
    problem: str,
    audited: tuple[str, str, str, str | None, str | None],
) -> None:
    create_agency(runner, tmp_path, "acme")
    assert invoke(runner, "group", "create", "europe").exit_code == 0
    assert invoke(runner, "group", "add", "europe", "acme").exit_code == 0
    result = invoke(runner, *command)
    assert_refused(result, problem)
    assert count(database_url, SharingGroup) == 1
    assert count(database_url, GroupMember) == 1
    assert events(database_url)[-1] == audited


# -- the audit log ----------------------------------------------------------------------


def test_every_admin_action_is_audited_once(
    runner: CliRunner, database_url: str, tmp_path: Path
) -> None:
    create_agency(runner, tmp_path, "acme")
    create_token(runner, "acme")
    assert invoke(runner, "token", "revoke", "1").exit_code == 0
    assert invoke(runner, "group", "create", "europe").exit_code == 0
    assert invoke(runner, "group", "add", "europe", "acme").exit_code == 0
    assert invoke(runner, "token", "create", "nobody", "--role", "reader").exit_code == 2
    # Reading changes nothing and is not logged.
    for command in (["agency", "list"], ["token", "list"], ["group", "list"], ["audit", "verify"]):
        assert invoke(runner, *command).exit_code == 0
    assert events(database_url) == [
        ("agency.create", ACTOR, "ok", "agency:acme", "acme"),
        ("token.create", ACTOR, "ok", "token:1", "acme"),
        ("token.revoke", ACTOR, "ok", "token:1", "acme"),
        ("group.create", ACTOR, "ok", "group:europe", None),
        ("group.add", ACTOR, "ok", "group:europe", "acme"),
        ("token.create", ACTOR, "refused", None, "nobody"),
    ]
    assert all(
        e.actor_agency is None and e.remote_addr is None for e in rows(database_url, AuditEvent)
    )


def test_the_actor_is_unknown_without_a_login_name(
    runner: CliRunner, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_user() -> str:
        raise OSError("no login name")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert invoke(runner, "group", "create", "europe").exit_code == 0
    assert last_event(database_url).actor == "cli:unknown"


def test_audit_verify_on_a_good_chain(runner: CliRunner, database_url: str, tmp_path: Path) -> None:
    empty = invoke(runner, "audit", "verify")
    assert empty.exit_code == 0, empty.output
    assert empty.stdout == f"0:{audit.GENESIS_HASH}\n"
    assert empty.stderr == "audit chain intact: 0 rows\n"
    create_agency(runner, tmp_path, "acme")
    create_token(runner, "acme")
    assert invoke(runner, "group", "create", "Bad").exit_code == 2
    result = invoke(runner, "audit", "verify")
    assert result.exit_code == 0, result.output
    head = last_event(database_url).hash
    assert result.stdout == f"3:{head}\n"


# -- settings, databases and interruptions -------------------------------------------


@pytest.mark.parametrize("command", ADMIN_COMMANDS, ids=" ".join)
def test_help_works_whatever_the_environment(command: list[str]) -> None:
    runner = CliRunner(env={DATABASE_URL_VAR: "nonsense"})
    for prefix in (command[:1], command[:2]):
        result = runner.invoke(main, [*prefix, "--help"])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ADMIN_COMMANDS, ids=" ".join)
@pytest.mark.parametrize(
    ("variable", "value"),
    [(DATABASE_URL_VAR, "mysql://hub@db/hashex"), (MAX_REQUEST_BYTES_VAR, "lots")],
)
def test_bad_settings_exit_2_naming_the_variable(
    command: list[str], variable: str, value: str, tmp_path: Path
) -> None:
    result = CliRunner(env={variable: value}).invoke(main, with_keyset(command, tmp_path))
    assert result.exit_code == 2
    assert f"Error: {variable}: " in result.stderr


@pytest.mark.parametrize("command", ADMIN_COMMANDS, ids=" ".join)
def test_an_uninitialised_database_stops_every_admin_command(
    empty_database_url: str, tmp_path: Path, command: list[str]
) -> None:
    runner = CliRunner(env=runner_env(HASHEX_DATABASE_URL=empty_database_url))
    result = runner.invoke(main, with_keyset(command, tmp_path))
    assert result.exit_code == 1
    assert "run hashex-server init" in result.stderr


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "hashex.db")
    result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=url)).invoke(main, ["agency", "list"])
    assert result.exit_code == 1
    assert f"no database at {tmp_path / 'hashex.db'}" in result.stderr
    assert not (tmp_path / "hashex.db").exists()


def test_an_unreachable_database_exits_1() -> None:
    # Nothing listens on port 1.
    url = "postgresql://hub:hunter2@127.0.0.1:1/hashex"
    result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=url)).invoke(main, ["token", "list"])
    assert result.exit_code == 1
    assert "cannot use the database postgresql+psycopg://hub:***@127.0.0.1:1/hashex" in (
        result.stderr
    )
    assert "hunter2" not in result.output


def test_ctrl_c_stores_nothing_and_audits_nothing(
    runner: CliRunner, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    path = write_keyset(tmp_path, "acme")
    monkeypatch.setattr(audit, "record", interrupted)
    result = invoke(runner, "agency", "create", "acme", "--name", "Acme", "--keyset", str(path))
    assert result.exit_code == 1
    assert "Aborted!" in result.stderr
    monkeypatch.undo()
    assert count(database_url, Agency) == 0
    assert count(database_url, AgencyKeyset) == 0
    assert count(database_url, AuditEvent) == 0
