"""The OpenAPI document is the wire: schemathesis finds no 5xx and no schema violation.

A real hub on SQLite and on PostgreSQL is seeded with two agencies, a set
granted from one to the other and one published version; then schemathesis
runs every check against ``/v1/openapi.json`` (response schemas, status
codes, content types, headers, positive and negative data, missing and
ignored auth, use after free...) with a token of each role, a bounded
number of examples per operation (``make fuzz`` runs longer).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.apifuzz import run_schemathesis
from tests.client.realhub import register
from tests.client.simhub import hashex_process
from tests.environment import process_env
from tests.hubserver import StartHub
from tests.synthetic import random_lines

EXAMPLES = 8
ROLES = ("admin", "agency-admin", "publisher", "reader")


@pytest.mark.parametrize("role", ROLES)
def test_schemathesis_finds_nothing(
    database_url: str, start_hub: StartHub, tmp_path: Path, role: str
) -> None:
    owner = register(database_url, tmp_path, "fuzz-owner", roles=ROLES)
    lab = register(database_url, tmp_path, "fuzz-lab", roles=("reader",))
    server = start_hub(database_url)
    env = process_env(
        HASHEX_SERVER=server.base_url,
        HASHEX_TOKEN=owner.tokens["agency-admin"],
        HASHEX_HOME=str(tmp_path / "home"),
    )
    for command in (
        ("set", "create", "fuzz-owner/fuzzed"),
        ("set", "grant", "fuzz-owner/fuzzed", "fuzz-lab"),
        ("trust", "add", "fuzz-owner", str(owner.keyset_file)),
    ):
        assert hashex_process(*command, env=env).exit_code == 0
    content = tmp_path / "v1.txt"
    content.write_bytes(b"\n".join(random_lines(random.Random(5), 50)) + b"\n")
    published = hashex_process(
        "publish",
        "fuzz-owner/fuzzed",
        "--key",
        owner.keys[0],
        "--from",
        content,
        env=env | {"HASHEX_TOKEN": owner.tokens["publisher"]},
    )
    assert published.exit_code == 0, published.stderr
    token = lab.tokens["reader"] if role == "reader" else owner.tokens[role]
    run = run_schemathesis(
        server.base_url,
        token,
        agency="fuzz-owner",
        set_name="fuzzed",
        max_examples=EXAMPLES,
    )
    assert run.returncode == 0, run.output[-8000:]
    assert run.generated > 100, run.output[-8000:]
    log = server.log.read_text()
    assert "Traceback" not in log, log
