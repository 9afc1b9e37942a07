"""docs/DEPLOY.md's ``hashex-server`` commands exist, and its audit round trip runs as written.

Every ``hashex-server`` command in a shell block of DEPLOY.md (and in an
inline code span that starts with ``hashex-server``) is taken apart: its
subcommand path must be one of the real command tree's, ``--help`` of that
path must list every option the line names, and the line's arguments must
parse (right number of arguments, values the options accept). A doc that
names a command, an option or a choice the code does not have fails here.

The "Operating" section's ``HEAD=$(hashex-server audit verify)`` then
``hashex-server audit verify --head "$HEAD"`` is run by bash, line for line
as printed, with the installed ``hashex-server`` script, on SQLite and
PostgreSQL: it passes on an intact chain and exits 3 once the chain was cut
short or its tail rewritten after the head was recorded.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from server.cli import main
from server.cli.audit import EXIT_CHAIN_BROKEN
from server.engine import make_engine, make_session_factory
from server.models import AuditEvent
from server.services.audit import row_hash
from tests.environment import BIN, process_env, runner_env

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md"
PROGRAM = "hashex-server"

# Fenced blocks in these languages configure another program; they are not
# shell, and no line of them runs hashex-server.
NOT_SHELL = frozenset({"nginx"})

# Commands DEPLOY.md must keep showing: a parser that finds nothing fails here.
EXPECTED_PATHS = frozenset(
    {
        "init",
        "serve",
        "agency create",
        "token create",
        "token list",
        "token revoke",
        "group create",
        "group add",
        "audit verify",
        "log key",
    }
)

_FENCE_RE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE_RE = re.compile(rf"(?<!`)`({re.escape(PROGRAM)}(?: [^`\n]*)?)`(?!`)")
_SUBSTITUTION_RE = re.compile(r"\$\(([^()]*)\)")
_ASSIGNMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")
_SEPARATORS = frozenset({";", "&&", "||", "|", "&"})


@dataclass(frozen=True)
class Documented:
    """One ``hashex-server`` command of the doc: the line it is on, and its arguments."""

    line: str
    args: tuple[str, ...]


def shell_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced blocks that are shell, in order."""
    return [
        match["body"] for match in _FENCE_RE.finditer(markdown) if match["lang"] not in NOT_SHELL
    ]


def shell_commands(script: str) -> Iterator[list[str]]:
    """Each simple command of ``script``: its words, command substitutions included.

    ``HEAD=$(hashex-server audit verify)`` gives ``hashex-server audit
    verify``; comments, leading ``NAME=value`` assignments and the
    separators ``;``, ``&&``, ``||``, ``|`` and ``&`` are dropped.
    """
    for line in script.replace("\\\n", " ").splitlines():
        substituted = _SUBSTITUTION_RE.findall(line)
        outer = _SUBSTITUTION_RE.sub("SUBSTITUTED", line)
        for part in (*substituted, outer):
            lexer = shlex.shlex(part, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words: list[str] = []
            for word in [*lexer, ";"]:
                if word not in _SEPARATORS:
                    words.append(word)
                    continue
                while words and _ASSIGNMENT_RE.fullmatch(words[0]):
                    words.pop(0)
                if words:
                    yield words
                words = []


def documented_commands(markdown: str) -> list[Documented]:
    """Every ``hashex-server`` command of ``markdown``'s shell blocks and inline spans."""
    found: list[Documented] = []
    for block in shell_blocks(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            for words in shell_commands(line):
                if words[0] == PROGRAM:
                    found.append(Documented(line.strip(), tuple(words[1:])))
    for span in _INLINE_RE.findall(markdown):
        found.append(Documented(span, tuple(shlex.split(span)[1:])))
    return found


def _subcommand_path(args: tuple[str, ...]) -> tuple[list[str], click.Command, list[str]]:
    """Split ``args`` into the subcommand path, the command it names, and the rest.

    Raises click.UsageError naming a word that should be a subcommand and is not.
    """
    path: list[str] = []
    command: click.Command = main
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        if sub is None:
            where = " ".join([PROGRAM, *path])
            raise click.UsageError(f"{where} has no subcommand {rest[0]!r}")
        path.append(rest.pop(0))
        command = sub
    return path, command, rest


def listed_options(help_text: str) -> set[str]:
    """The option names the Options section of a ``--help`` lists."""
    _, _, section = help_text.partition("\nOptions:\n")
    names: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("  -"):
            continue
        for word in row.split():
            if not word.startswith("-"):
                break
            names.add(word.rstrip(","))
    return names


def named_options(args: list[str]) -> list[str]:
    """The options a command line names, ``--opt=value`` as ``--opt``."""
    return [
        word.partition("=")[0] for word in args if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", word)
    ]


def problems(args: tuple[str, ...]) -> list[str]:
    """What is wrong with ``hashex-server ARGS`` as the command tree sees it; [] if nothing."""
    try:
        path, command, rest = _subcommand_path(args)
    except click.UsageError as exc:
        return [exc.format_message()]
    name = " ".join([PROGRAM, *path])
    shown = CliRunner(env=runner_env()).invoke(main, [*path, "--help"], prog_name=PROGRAM)
    if shown.exit_code != 0 or f"Usage: {name}" not in shown.stdout:
        return [f"{name} --help exits {shown.exit_code}: {shown.output}"]
    known = listed_options(shown.stdout)
    found = [
        f"{name} has no option {option}" for option in named_options(rest) if option not in known
    ]
    if found or isinstance(command, click.Group):
        return found
    try:
        command.make_context(name, list(rest))
    except click.BadParameter as exc:
        kind = exc.param.type if exc.param is not None else None
        # A file on the operator's machine (a TLS certificate) that is not on this one.
        if not (isinstance(kind, click.Path) and kind.exists):
            found.append(f"{name}: {exc.format_message()}")
    except click.UsageError as exc:
        found.append(f"{name}: {exc.format_message()}")
    return found


DOCUMENTED = documented_commands(DEPLOY.read_text(encoding="utf-8"))


def test_deploy_names_the_admin_commands() -> None:
    paths = {" ".join(_subcommand_path(command.args)[0]) for command in DOCUMENTED}
    assert paths >= EXPECTED_PATHS, sorted(EXPECTED_PATHS - paths)


@pytest.mark.parametrize(
    "command", DOCUMENTED, ids=[shlex.join([PROGRAM, *command.args]) for command in DOCUMENTED]
)
def test_every_documented_command_and_option_exists(command: Documented) -> None:
    assert problems(command.args) == [], command.line


def test_the_check_finds_what_a_doc_gets_wrong() -> None:
    doc = (
        "Run `hashex-server audit verify --quiet` now.\n\n"
        "```\n"
        "HEAD=$(hashex-server audit verify --head x --json) && echo ok  # a comment --nope\n"
        "hashex-server token create acme --role owner\n"
        "hashex-server token revoke\n"
        "hashex-server agency delete acme\n"
        "```\n\n"
        "```nginx\nhashex-server proxy_pass --no-such;\n```\n"
    )
    commands = documented_commands(doc)
    assert [command.args for command in commands] == [
        ("audit", "verify", "--head", "x", "--json"),
        ("token", "create", "acme", "--role", "owner"),
        ("token", "revoke"),
        ("agency", "delete", "acme"),
        ("audit", "verify", "--quiet"),
    ]
    found = [problems(command.args) for command in commands]
    assert found[0] == ["hashex-server audit verify has no option --json"]
    assert len(found[1]) == 1
    assert "'owner' is not one of" in found[1][0]
    assert len(found[2]) == 1
    assert "Missing argument 'ID'" in found[2][0]
    assert found[3] == ["hashex-server agency has no subcommand 'delete'"]
    assert found[4] == ["hashex-server audit verify has no option --quiet"]


def test_a_tls_file_missing_here_is_no_fault_of_the_doc(tmp_path: Path) -> None:
    missing = tmp_path / "hub.crt"
    assert problems(("serve", "--certfile", str(missing), "--bind", "0.0.0.0:8443")) == []
    assert len(problems(("serve", "--bind", "nowhere"))) == 1


# -- the audit head round trip, run by bash ----------------------------------------------


def round_trip() -> tuple[str, str]:
    """DEPLOY.md's two lines: the one recording the head, the one checking against it."""
    for block in shell_blocks(DEPLOY.read_text(encoding="utf-8")):
        lines = block.strip().splitlines()
        if lines and lines[0].startswith(f"HEAD=$({PROGRAM} audit verify)"):
            assert len(lines) == 2, block
            return lines[0], lines[1]
    raise AssertionError("DEPLOY.md has no block starting HEAD=$(hashex-server audit verify)")


def bash(database_url: str, script: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by bash with the installed scripts first on PATH, on ``database_url``."""
    env = process_env(
        HASHEX_DATABASE_URL=database_url,
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        **variables,
    )
    return subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def audited(database_url: str) -> Iterator[Engine]:
    """An engine on a hub whose audit chain holds two rows, made by the installed script."""
    made = bash(
        database_url,
        "set -e\nhashex-server init\n"
        "hashex-server group create europe\nhashex-server group create asia",
    )
    assert made.returncode == 0, made.stderr
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_the_head_round_trip_runs_as_written(database_url: str, audited: Engine) -> None:
    record, check = round_trip()
    ran = bash(database_url, f"set -e\n{record}\n{check}")
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == "audit chain intact: 2 rows\n" * 2
    with make_session_factory(audited)() as session:
        last = session.get(AuditEvent, 2)
        assert last is not None
        assert ran.stdout == f"2:{last.hash}\n"


def cut_the_tail(engine: Engine) -> None:
    """Delete the chain's last row: the rest still chains, only the head shows the cut."""
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events WHERE id = 2"))


def rewrite_the_tail(engine: Engine) -> None:
    """Change the last row's actor and give it the hash that fits: only the head shows it."""
    with make_session_factory(engine)() as session, session.begin():
        event = session.get(AuditEvent, 2)
        assert event is not None
        event.actor = "cli:someone-else"
        event.hash = row_hash(event)


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        pytest.param(cut_the_tail, "audit row 2: missing", id="cut"),
        pytest.param(
            rewrite_the_tail, "audit row 2: does not carry the head recorded earlier", id="rewrite"
        ),
    ],
)
def test_a_recorded_head_catches_a_changed_tail(
    database_url: str, audited: Engine, tamper: Callable[[Engine], None], says: str
) -> None:
    record, check = round_trip()
    recorded = bash(database_url, f'set -e\n{record}\nprintf "%s" "$HEAD"')
    assert recorded.returncode == 0, recorded.stderr
    assert re.fullmatch(r"2:[0-9a-f]{64}", recorded.stdout)
    tamper(audited)
    # Without the head the shorter or rewritten chain is a good chain.
    assert bash(database_url, "hashex-server audit verify").returncode == 0
    caught = bash(database_url, check, HEAD=recorded.stdout)
    assert caught.returncode == EXIT_CHAIN_BROKEN, caught.stderr
    assert caught.stdout == ""
    assert caught.stderr.startswith("hashex-server: audit chain broken: ")
    assert says in caught.stderr


def test_an_empty_head_from_a_failed_run_is_refused(database_url: str, audited: Engine) -> None:
    # The chain is broken, so the recording line fails and leaves HEAD empty;
    # the checking line must then fail too, not pass as a verify without a head.
    with audited.begin() as connection:
        connection.execute(text("UPDATE audit_events SET actor = 'cli:mallory' WHERE id = 1"))
    record, check = round_trip()
    ran = bash(database_url, f"{record}\n{check}")
    assert ran.returncode == 2, ran.stderr
    assert "hashex-server: audit chain broken: audit row 1: " in ran.stderr
    assert "'': expected ROWS:HASH" in ran.stderr


def test_the_head_of_an_empty_chain_is_the_genesis_hash(empty_database_url: str) -> None:
    _, check = round_trip()
    assert bash(empty_database_url, "hashex-server init").returncode == 0
    empty = bash(empty_database_url, f"HEAD=$(hashex-server audit verify)\n{check}")
    assert empty.returncode == 0, empty.stderr
    wrong = bash(empty_database_url, check, HEAD="0:" + "1" * 64)
    assert wrong.returncode == 2
    assert "the head of an empty chain is 0:" in wrong.stderr
