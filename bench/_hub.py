"""A real hub for the benchmarks, and the ``hashex`` command line run against it.

:func:`running_hub` initialises a SQLite hub in a directory of its own, runs
``hashex-server serve`` on a free port of 127.0.0.1 in a process group of
its own, and stops that whole group when the block ends, whatever happens.
:func:`seed` registers the owning agency and a consumer agency with keys,
keysets and tokens made by the two CLIs, exactly as an operator would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
START_SECONDS = 30.0
STOP_SECONDS = 30.0
OWNER = "bench-owner"
CONSUMER = "bench-lab"


class BenchError(RuntimeError):
    """A step of the benchmark setup failed; the message carries its output."""


@dataclass(frozen=True)
class Hub:
    """A running hub: its URL, the database its admin CLI works on, its master's pid."""

    url: str
    database_url: str
    pid: int = 0

    @property
    def address(self) -> tuple[str, int]:
        """Host and port."""
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        return host, int(port)

    def admin(self, *args: str | Path) -> str:
        """Run ``hashex-server ARGS`` on this hub's database; its stdout."""
        return run([BIN / "hashex-server", *args], {"HASHEX_DATABASE_URL": self.database_url})


@dataclass(frozen=True)
class Agency:
    """An agency registered on the hub: its key, its keyset file and its tokens."""

    slug: str
    key: Path
    keyset: Path
    admin_token: str
    publisher_token: str
    reader_token: str


@dataclass(frozen=True)
class Client:
    """``hashex`` run as one user of one hub: a token and a home of its own."""

    hub: Hub
    token: str
    home: Path

    def env(self) -> dict[str, str]:
        """The ``HASHEX_*`` settings of this user."""
        return {
            "HASHEX_SERVER": self.hub.url,
            "HASHEX_TOKEN": self.token,
            "HASHEX_HOME": str(self.home),
        }

    def command(self, *args: str | Path) -> list[str]:
        """The argument vector of ``hashex ARGS``."""
        return [str(BIN / "hashex"), *(str(a) for a in args)]

    def run(self, *args: str | Path) -> str:
        """Run ``hashex ARGS`` as this user; its stdout, or BenchError on failure."""
        return run(self.command(*args), self.env())


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment without any ``HASHEX_*`` variable of the caller, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("HASHEX_")}
    env.update(extra)
    return env


def run(command: Sequence[str | Path], env: dict[str, str]) -> str:
    """Run ``command`` with ``env`` added to a clean environment; its stdout."""
    done = subprocess.run(
        [str(part) for part in command],
        env=clean_env(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(str(p) for p in command[:3])} ... exited {done.returncode}:\n"
            f"{done.stderr[-2000:]}"
        )
    return done.stdout


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_hub(
    directory: Path,
    *,
    workers: int,
    worker_class: str | None = None,
    database_url: str | None = None,
    app: str | None = None,
) -> Iterator[Hub]:
    """An initialised hub served on 127.0.0.1 until the block ends.

    The database is a SQLite file in ``directory`` unless ``database_url``
    names another (an empty PostgreSQL database, say).  ``worker_class`` runs
    gunicorn itself with the hub's configuration but another worker class
    (``gthread``, say), to compare it with the hub's own; ``app`` serves
    another WSGI app under the hub's gunicorn settings (a bare endpoint to
    compare the hub's with).
    """
    database_url = database_url or f"sqlite:///{directory.resolve() / 'hub.db'}"
    hub = Hub(f"http://127.0.0.1:{free_port()}", database_url)
    hub.admin("init")
    bind = hub.url.removeprefix("http://")
    command = [str(BIN / "hashex-server"), "serve", "--bind", bind, "--workers", str(workers)]
    if worker_class is not None or app is not None:
        command = [
            str(BIN / "gunicorn"),
            "-c",
            "python:server.gunicorn_conf",
            "--bind",
            bind,
            "--workers",
            str(workers),
        ]
        if worker_class is not None:
            command += ["--worker-class", worker_class]
        if app is not None:
            command += ["--chdir", str(Path(__file__).parent), app]
    with (directory / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            command,
            env=clean_env({"HASHEX_DATABASE_URL": database_url}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_up(hub, process, directory / "serve.log")
        yield Hub(hub.url, database_url, process.pid)
    finally:
        _stop(process)


def _wait_until_up(hub: Hub, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    with httpx.Client(base_url=hub.url, trust_env=False, timeout=5.0) as http:
        while True:
            if process.poll() is not None:
                raise BenchError(f"the hub exited with {process.returncode}:\n{log.read_text()}")
            try:
                if http.get("/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"the hub was not up after {START_SECONDS} s:\n{log.read_text()}")
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the hub's process group (master and workers), then SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def seed(hub: Hub, directory: Path) -> tuple[Agency, Agency]:
    """The owning agency and a consumer agency, registered with the real CLIs."""
    return _register(hub, directory, OWNER), _register(hub, directory, CONSUMER)


def _register(hub: Hub, directory: Path, slug: str) -> Agency:
    key = directory / f"{slug}.pem"
    keyset = directory / f"{slug}.keyset.json"
    run([BIN / "hashex", "keygen", "--out", key], {})
    run([BIN / "hashex", "keyset", "init", slug, "--key", key, "--out", keyset], {})
    hub.admin("agency", "create", slug, "--name", f"Bench {slug}", "--keyset", keyset)
    tokens = {
        role: hub.admin("token", "create", slug, "--role", role, "--name", role).strip()
        for role in ("agency-admin", "publisher", "reader")
    }
    return Agency(slug, key, keyset, tokens["agency-admin"], tokens["publisher"], tokens["reader"])


def create_set(hub: Hub, owner: Agency, name: str, reader: str, home: Path) -> None:
    """Create ``name`` and grant it to ``reader``, with the owner's admin token."""
    admin = Client(hub, owner.admin_token, home)
    admin.run("set", "create", name, "--title", f"Benchmark set {name}")
    admin.run("set", "grant", name, reader)
