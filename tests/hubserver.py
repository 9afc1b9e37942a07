"""A real hub for tests: ``hashex-server serve`` in a child process, on 127.0.0.1 only.

:func:`serving` runs it on a database until its block ends; the
``start_hub`` fixture (tests/conftest.py, a :class:`StartHub`) does the same
for one test, until its teardown.  Each is a :class:`HubServer`: its base
URL, gunicorn master and log, an httpx client of it, its workers' pids and a
way to stop it.  :func:`running` is the launcher underneath, for a command
that starts a hub some other way.  Startup and shutdown are bounded: a hub
that does not come up in START_SECONDS fails the test with its log.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.environment import BIN, process_env
from tests.hostile import children

START_SECONDS = 20.0
STOP_SECONDS = 20.0

# How the startup wait verifies the hub's certificate (httpx's ``verify``).
Verify = ssl.SSLContext | str | bool


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class HubServer:
    """A running hub: its base URL, the process that serves it, and that process's log."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def http(self, timeout: float = 30.0, **kwargs: Any) -> httpx.Client:
        """A client of this hub; trust_env=False keeps any proxy away from the traffic."""
        return httpx.Client(base_url=self.base_url, trust_env=False, timeout=timeout, **kwargs)

    def workers(self) -> list[int]:
        """The pids of the process's children (gunicorn's workers), from /proc."""
        return children(self.process.pid)

    def wait_until_up(self, workers: int | None, *, verify: Verify = True) -> None:
        """Wait until /v1/health answers 200 (and ``workers`` workers run, unless None).

        Fails the test with the log if the process exits, or after START_SECONDS.
        """
        deadline = time.monotonic() + START_SECONDS
        with self.http(timeout=5.0, verify=verify) as http:
            while True:
                if self.process.poll() is not None:
                    pytest.fail(
                        f"hub exited with {self.process.returncode}:\n{self.log.read_text()}"
                    )
                try:
                    if http.get("/v1/health").status_code == 200 and (
                        workers is None or len(self.workers()) == workers
                    ):
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"hub not up after {START_SECONDS} s:\n{self.log.read_text()}")
                time.sleep(0.1)

    def stop(self, timeout: float = STOP_SECONDS) -> int:
        """SIGTERM the process (if it still runs) and wait; its exit code.

        A process that has not exited after ``timeout`` seconds is killed.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@contextmanager
def running(
    command: Sequence[str], env: Mapping[str, str], log: Path, base_url: str
) -> Iterator[HubServer]:
    """Run ``command`` (which serves a hub at ``base_url``) until the block ends.

    Its stdout and stderr go to ``log``; it is stopped at the end if it still runs.
    """
    with log.open("wb") as output:
        process = subprocess.Popen(
            list(command), env=dict(env), stdout=output, stderr=subprocess.STDOUT
        )
    server = HubServer(base_url, process, log)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def serving(
    database_url: str,
    log: Path,
    *,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    bind: str | None = None,
    verify: Verify = True,
    wait: bool = True,
) -> Iterator[HubServer]:
    """Run ``hashex-server serve`` on ``database_url`` until the block ends.

    Its environment is the test's without HASHEX_* variables, plus ``env`` and
    HASHEX_DATABASE_URL.  It binds ``bind`` (default: a free port of
    127.0.0.1) and speaks https when given ``certfile`` and ``keyfile``.
    With ``wait`` (the default) the block starts once /v1/health answers 200,
    checked with httpx's ``verify``, and ``workers`` workers run; without, at
    once: to act while it starts, or to inspect one that should not come up.
    """
    bind = bind or f"127.0.0.1:{free_port()}"
    command = [str(BIN / "hashex-server"), "serve", "--bind", bind, "--workers", str(workers)]
    if certfile is not None:
        command += ["--certfile", str(certfile)]
    if keyfile is not None:
        command += ["--keyfile", str(keyfile)]
    scheme = "https" if certfile is not None or keyfile is not None else "http"
    environment = process_env(**(env or {})) | {"HASHEX_DATABASE_URL": database_url}
    with running(command, environment, log, f"{scheme}://{bind}") as server:
        if wait:
            server.wait_until_up(workers, verify=verify)
        yield server


class StartHub:
    """The ``start_hub`` fixture: ``start_hub(database_url, ...)`` runs a hub for one test.

    Its options are :func:`serving`'s; each hub logs to ``<directory>/hub-<n>.log``
    and stops when ``stack`` closes (at the test's teardown).
    """

    def __init__(self, stack: ExitStack, directory: Path) -> None:
        self._stack = stack
        self._directory = directory
        self._started = 0

    def __call__(
        self,
        database_url: str,
        *,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        verify: Verify = True,
        wait: bool = True,
    ) -> HubServer:
        """Start a hub on ``database_url`` (see :func:`serving`); it runs until teardown."""
        self._started += 1
        log = self._directory / f"hub-{self._started}.log"
        return self._stack.enter_context(
            serving(
                database_url,
                log,
                workers=workers,
                env=env,
                certfile=certfile,
                keyfile=keyfile,
                verify=verify,
                wait=wait,
            )
        )
