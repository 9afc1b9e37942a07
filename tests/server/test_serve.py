"""The real ``hashex-server serve``: gunicorn in a child process, on 127.0.0.1 only."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from server.errors import problem_type
from tests.certificates import LOCALHOST, make_authority
from tests.environment import BIN, process_env
from tests.hubserver import StartHub, free_port, running

REPO = Path(__file__).resolve().parents[2]


def test_serve_answers_health_and_stops_on_sigterm(database_url: str, start_hub: StartHub) -> None:
    hub = start_hub(database_url, workers=1)
    with hub.http(timeout=5.0) as http:
        health = http.get("/v1/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = http.get("/v1/ready")
        assert ready.status_code == 200, hub.log.read_text()
        missing = http.get("/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["type"] == problem_type("not-found")
    assert hub.stop() == 0, hub.log.read_text()
    assert f"Hashex hub: {hub.base_url}/v1/health" in hub.log.read_text()


def test_serve_speaks_tls_with_a_certificate(
    sqlite_database_url: str, start_hub: StartHub, tmp_path: Path
) -> None:
    authority = make_authority(tmp_path, "hashex-test-ca")
    served = authority.issue(tmp_path, "hub", [x509.IPAddress(LOCALHOST)])
    trust = ssl.create_default_context(cafile=str(authority.cert))
    hub = start_hub(
        sqlite_database_url, workers=1, certfile=served.cert, keyfile=served.key, verify=trust
    )
    with hub.http(timeout=5.0, verify=trust) as http:
        assert http.get("/v1/health").status_code == 200
    plain = hub.base_url.replace("https://", "http://", 1)
    with hub.http(timeout=5.0) as http, pytest.raises(httpx.TransportError):
        http.get(f"{plain}/v1/health")
    assert hub.stop() == 0, hub.log.read_text()
    assert f"Hashex hub: {hub.base_url}/v1/health" in hub.log.read_text()


def test_make_run_script_brings_up_a_hub(tmp_path: Path) -> None:
    bind = f"127.0.0.1:{free_port()}"
    env = process_env(
        RUN_DIR=str(tmp_path / "run"),
        BIND=bind,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    command = ["bash", str(REPO / "scripts" / "run-demo")]
    with running(command, env, tmp_path / "run-demo.log", f"http://{bind}") as hub:
        # The script's shell is the process: gunicorn's workers are not its children.
        hub.wait_until_up(None)
        assert hub.stop() == 0, hub.log.read_text()
    output = hub.log.read_text()
    assert f"Hashex hub: http://{bind}/v1/health" in output
    assert "hub log key" in output
    assert (tmp_path / "run" / "hashex.db").is_file()
