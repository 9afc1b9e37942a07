"""End to end: a hub set up with the real commands, served by gunicorn, driven over HTTP.

``hashex keyset init`` writes each agency's keyset file; ``hashex-server``
initialises an empty database, registers the agencies, issues tokens and
makes a sharing group, then serves on a free 127.0.0.1 port.  An agency
admin creates sets and grants one to another agency and to the group; each
reader sees exactly what it should, a group member added while the hub runs
sees the set at once, a token revoked while it runs is refused at once, and
the hub operator reads the audit log, which ``audit verify`` then checks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from client.protocol.keys import generate_private_key, write_private_key
from server.errors import problem_type
from server.services.tokens import TOKEN_RE
from tests.environment import BIN, process_env
from tests.hubserver import StartHub

COMMAND_SECONDS = 60.0
AGENCIES = {"hq": "Headquarters", "ally": "Allied Unit", "member": "Group Member"}


def _run(command: list[str], env: dict[str, str]) -> str:
    """Run a command to its end; its stdout, or fail with everything it said."""
    return _run_all([command], env)[0]


def _run_all(commands: list[list[str]], env: dict[str, str]) -> list[str]:
    """Run commands side by side (as several admins might); their stdouts, in order.

    Each must exit 0.  Their changes queue on the database's write lock and
    each chains its own audit row.
    """
    started = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in commands
    ]
    outputs: list[str] = []
    for command, process in zip(commands, started, strict=True):
        stdout, stderr = process.communicate(timeout=COMMAND_SECONDS)
        assert process.returncode == 0, f"{command}: exit {process.returncode}\n{stdout}{stderr}"
        outputs.append(stdout)
    return outputs


@pytest.fixture(scope="module")
def keyset_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each agency's keyset 1, written by ``hashex keyset init`` (made once for the module)."""
    directory = tmp_path_factory.mktemp("keysets")
    env = process_env(HOME=str(directory))
    files: dict[str, Path] = {}
    for slug in AGENCIES:
        key = directory / f"{slug}.pem"
        write_private_key(key, generate_private_key())
        files[slug] = directory / f"{slug}.keyset.json"
        _run(
            [
                str(BIN / "hashex"),
                "keyset",
                "init",
                slug,
                "--key",
                str(key),
                "--out",
                str(files[slug]),
            ],
            env,
        )
    return files


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_served_hub_shares_a_set_with_exactly_its_readers(
    empty_database_url: str, keyset_files: dict[str, Path], tmp_path: Path, start_hub: StartHub
) -> None:
    env = process_env(HOME=str(tmp_path), HASHEX_DATABASE_URL=empty_database_url)
    server = str(BIN / "hashex-server")
    assert "hub log key" in _run([server, "init"], env)
    hub = start_hub(empty_database_url, env={"HOME": str(tmp_path)}, wait=False)
    with hub.http(timeout=10.0) as http:
        # The hub starts up while the operator registers the agencies.
        _run_all(
            [
                [
                    server,
                    "agency",
                    "create",
                    slug,
                    "--name",
                    name,
                    "--keyset",
                    str(keyset_files[slug]),
                ]
                for slug, name in AGENCIES.items()
            ],
            env,
        )
        wanted = [("hq", "admin"), ("hq", "agency-admin"), ("ally", "reader"), ("member", "reader")]
        outputs = _run_all(
            [
                [server, "token", "create", agency, "--role", role, "--name", f"{agency}-{role}"]
                for agency, role in wanted
            ]
            + [[server, "group", "create", "partners"]],
            env,
        )
        for out in outputs[:-1]:
            # Exactly one line on stdout: the token.
            assert out.count("\n") == 1
            assert TOKEN_RE.fullmatch(out.strip())
        operator, hq_admin, ally, member = (out.strip() for out in outputs[:-1])
        hub.wait_until_up(2)

        for name, title in (("hq/shared", "Shared list"), ("hq/private", "Kept at home")):
            created = http.post(
                "/v1/sets", json={"name": name, "title": title}, headers=_auth(hq_admin)
            )
            assert created.status_code == 201, created.text
        etag = http.get("/v1/sets/hq/shared", headers=_auth(hq_admin)).headers["ETag"]
        granted = http.put(
            "/v1/sets/hq/shared/grants",
            json={"readers": ["group:partners", "ally"]},
            headers=_auth(hq_admin) | {"If-Match": etag},
        )
        assert granted.status_code == 200, granted.text
        assert granted.json() == {"name": "hq/shared", "readers": ["ally", "group:partners"]}

        def listed(token: str) -> list[str]:
            response = http.get("/v1/sets", headers=_auth(token))
            assert response.status_code == 200, response.text
            return [s["name"] for s in response.json()["sets"]]

        def get(token: str, name: str) -> httpx.Response:
            return http.get(f"/v1/sets/{name}", headers=_auth(token))

        assert listed(hq_admin) == ["hq/private", "hq/shared"]
        assert listed(operator) == ["hq/private", "hq/shared"]  # reads as its own agency
        assert listed(ally) == ["hq/shared"]
        shared = get(ally, "hq/shared")
        assert shared.status_code == 200
        assert shared.json()["title"] == "Shared list"
        assert "grants" not in shared.json()

        # Not granted: exactly like a set that does not exist.
        missing = get(ally, "hq/no-such-set")
        assert missing.status_code == 404
        assert missing.json()["type"] == problem_type("not-found")
        assert get(ally, "hq/private").content == missing.content
        # The group has no member yet.
        assert listed(member) == []
        assert get(member, "hq/shared").content == missing.content

        # Joining the group while the hub runs grants the set at once.
        _run([server, "group", "add", "partners", "member"], env)
        assert listed(member) == ["hq/shared"]
        assert get(member, "hq/shared").status_code == 200
        assert get(member, "hq/private").content == missing.content

        # A reader of a granted set cannot change its grants; the operator cannot either.
        for token in (ally, operator):
            refused = http.put(
                "/v1/sets/hq/shared/grants", json={"readers": []}, headers=_auth(token)
            )
            assert refused.status_code == 403
            assert refused.json()["type"] == problem_type("forbidden")
        assert listed(ally) == ["hq/shared"]

        # The operator reads the whole audit log; a reader only its agency's own actions.
        events = http.get("/v1/audit?limit=1000", headers=_auth(operator)).json()["events"]
        actions = [(e["action"], e["target"], e["outcome"]) for e in events]
        for slug in AGENCIES:
            assert ("agency.create", f"agency:{slug}", "ok") in actions
        assert sorted(a for a in actions if a[0] == "token.create") == [
            ("token.create", f"token:{n}", "ok") for n in (1, 2, 3, 4)
        ]
        assert ("group.create", "group:partners", "ok") in actions
        assert ("group.add", "group:partners", "ok") in actions
        assert ("set.create", "set:hq/shared", "ok") in actions
        assert ("set.create", "set:hq/private", "ok") in actions
        assert ("set.grants", "set:hq/shared", "ok") in actions
        assert [a for a in actions if a[2] == "refused"] == [
            ("set.grants", "/v1/sets/hq/shared/grants", "refused"),
            ("set.grants", "/v1/sets/hq/shared/grants", "refused"),
        ]
        over_http = [e for e in events if e["actor"].startswith("token:")]
        assert over_http
        assert all(e["remote_addr"] == "127.0.0.1" for e in over_http)
        assert all(e["actor"].startswith("cli:") for e in events if e["actor_agency"] is None)
        ally_view = http.get("/v1/audit", headers=_auth(ally)).json()["events"]
        assert [(e["action"], e["outcome"]) for e in ally_view] == [("set.grants", "refused")]

        # A token revoked while the hub runs is refused from the next request on.
        ally_token_id = next(
            e["target"].removeprefix("token:")
            for e in events
            if e["action"] == "token.create" and e["subject_agency"] == "ally"
        )
        _run([server, "token", "revoke", ally_token_id], env)
        revoked = http.get("/v1/sets", headers=_auth(ally))
        assert revoked.status_code == 401
        assert revoked.json()["type"] == problem_type("unauthorized")

        # The chain the hub and the commands wrote side by side verifies.
        verified = _run([server, "audit", "verify"], env)
        assert verified.startswith(f"{len(events) + 1}:"), verified  # and the revoke
        assert hub.process.poll() is None, hub.log.read_text()
        assert hub.stop() == 0, hub.log.read_text()
