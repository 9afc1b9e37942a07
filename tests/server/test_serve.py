"""The real ``hashex-server serve``: gunicorn in a child process, on 127.0.0.1 only."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.errors import problem_type

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _running(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command``, output to ``log``; SIGTERM it at the end, and kill it if it hangs."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STARTUP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _environment(**variables: str) -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items() if not name.startswith("HASHEX_")}
    return environ | variables


def _wait_until_up(
    process: subprocess.Popen[bytes], log: Path, http: httpx.Client, url: str
) -> httpx.Response:
    """Poll ``url`` until the hub answers; fail with its log if it dies or is slow."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}:\n{log.read_text()}")
        try:
            return http.get(url)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                pytest.fail(f"not answering after {STARTUP_SECONDS} s:\n{log.read_text()}")
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STARTUP_SECONDS) == 0, log.read_text()


def _local_client(verify: ssl.SSLContext | bool = True) -> httpx.Client:
    # trust_env=False: no proxy from the environment may see this traffic.
    return httpx.Client(trust_env=False, timeout=5.0, verify=verify)


def test_serve_answers_health_and_stops_on_sigterm(database_url: str, tmp_path: Path) -> None:
    bind = f"127.0.0.1:{_free_port()}"
    log = tmp_path / "serve.log"
    command = [str(BIN / "hashex-server"), "serve", "--bind", bind, "--workers", "1"]
    env = _environment(HASHEX_DATABASE_URL=database_url)
    with _running(command, env, log) as process, _local_client() as http:
        health = _wait_until_up(process, log, http, f"http://{bind}/v1/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = http.get(f"http://{bind}/v1/ready")
        assert ready.status_code == 200, log.read_text()
        missing = http.get(f"http://{bind}/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["type"] == problem_type("not-found")
        _stop(process, log)
    assert f"Hashex hub: http://{bind}/v1/health" in log.read_text()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


def test_serve_speaks_tls_with_a_certificate(sqlite_database_url: str, tmp_path: Path) -> None:
    certfile, keyfile = _self_signed(tmp_path)
    bind = f"127.0.0.1:{_free_port()}"
    log = tmp_path / "serve.log"
    command = [
        str(BIN / "hashex-server"),
        "serve",
        "--bind",
        bind,
        "--workers",
        "1",
        "--certfile",
        str(certfile),
        "--keyfile",
        str(keyfile),
    ]
    env = _environment(HASHEX_DATABASE_URL=sqlite_database_url)
    trust = ssl.create_default_context(cafile=str(certfile))
    with _running(command, env, log) as process, _local_client(verify=trust) as http:
        health = _wait_until_up(process, log, http, f"https://{bind}/v1/health")
        assert health.status_code == 200
        with _local_client() as plain, pytest.raises(httpx.TransportError):
            plain.get(f"http://{bind}/v1/health")
        _stop(process, log)
    assert f"Hashex hub: https://{bind}/v1/health" in log.read_text()


def test_make_run_script_brings_up_a_hub(tmp_path: Path) -> None:
    bind = f"127.0.0.1:{_free_port()}"
    log = tmp_path / "run-demo.log"
    env = _environment(
        RUN_DIR=str(tmp_path / "run"),
        BIND=bind,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    command = ["bash", str(REPO / "scripts" / "run-demo")]
    with _running(command, env, log) as process, _local_client() as http:
        health = _wait_until_up(process, log, http, f"http://{bind}/v1/health")
        assert health.status_code == 200
        _stop(process, log)
    output = log.read_text()
    assert f"Hashex hub: http://{bind}/v1/health" in output
    assert "hub log key" in output
    assert (tmp_path / "run" / "hashex.db").is_file()
