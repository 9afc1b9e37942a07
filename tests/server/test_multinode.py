"""Several hub nodes behind nginx on one PostgreSQL, with the cache of docs/DEPLOY.md, for real.

nginx runs docs/nginx/hashex.conf, the very file DEPLOY.md shows (a test
holds the two equal), with only its addresses and paths swapped for loopback
ports and temporary files: TLS from a test CA, in front of two
``hashex-server serve`` nodes on one PostgreSQL database, and a cache of the
delta and content responses whose every answer is authorized by the hub
(``auth_request`` to ``/v1/cache/authorize``).  Agencies, keysets and tokens
come from the real ``hashex`` and ``hashex-server`` commands, with real
Ed25519 keys; sets are published and synced by the real ``hashex`` client
through nginx.

What it shows:

- a content body is served to a reader from the cache (the second request
  is a HIT, and no node is asked for the body again), in each encoding;
- that cached URL is 404 for a consumer whose agency may not read the set,
  byte for byte the hub's answer for a set that does not exist, and 401 for a
  revoked token;
- every pull is audited once, a hit as much as a miss (whose fill the hub
  does not audit a second time), and a client cannot skip its row by
  sending the cache secret itself;
- publishes and pulls running at once through both nodes store every
  publish exactly once, each set's versions whole and chained, ``audit
  verify`` holds, and every consumer ends verified at the newest version of
  every set.

Every hash is synthetic (``tests.synthetic``); a few hundred per set.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import random
import re
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509
from sqlalchemy import select

from client.protocol.documents import Manifest
from server.cli import main as server_main
from server.config import CACHE_SECRET_VAR
from server.errors import problem_type
from server.models import Agency as AgencyRow
from server.models import HashSet, SetVersion, Token
from server.services.tokens import secret_hash
from tests.certificates import LOCALHOST, make_authority
from tests.client.simhub import COMMAND_SECONDS, Consumer, Ran, hashex
from tests.environment import BIN, process_env, require_tool, runner_env
from tests.hubserver import START_SECONDS, STOP_SECONDS, HubServer, free_port, serving
from tests.server.dbstate import audit_events, last_audit_id, session_factory
from tests.synthetic import random_lines, wire

REPO = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "docs" / "nginx" / "hashex.conf"
DEPLOY = REPO / "docs" / "DEPLOY.md"
SECRET = "0123456789abcdef" * 4
NODES = 2

POSTGRES_ONLY = pytest.mark.parametrize(
    "shared_database_url",
    [pytest.param("postgresql", id="postgresql", marks=[pytest.mark.postgres, pytest.mark.tool])],
    indirect=True,
)


def test_deploy_shows_the_tested_nginx_config() -> None:
    shown = re.findall(r"^```nginx\n(.*?)^```", DEPLOY.read_text(encoding="utf-8"), re.S | re.M)
    assert NGINX_CONF.read_text(encoding="ascii") in shown


# -- nginx in front of the nodes, from the documented file ----------------------------------


def _swap(text: str, old: str, new: str, count: int = 1) -> str:
    """``text`` with ``old`` replaced; it must occur exactly ``count`` times."""
    assert text.count(old) == count, f"docs/nginx/hashex.conf no longer has {old!r} x{count}"
    return text.replace(old, new)


def deployable(
    documented: str, *, nodes: list[str], port: int, directory: Path, cert: Path, key: Path
) -> str:
    """The documented config with loopback addresses and this test's files."""
    upstream = "".join(f"    server {node};\n" for node in nodes)
    text = _swap(documented, "    server 10.0.0.11:8080;\n    server 10.0.0.12:8080;\n", upstream)
    text = _swap(text, "listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    text = _swap(text, "/var/cache/nginx/hashex", str(directory / "cache"))
    text = _swap(text, "/etc/nginx/tls/hub.crt", str(cert))
    text = _swap(text, "/etc/nginx/tls/hub.key", str(key))
    secret_file = directory / "hashex-cache-secret.conf"
    secret_file.write_text(f'proxy_set_header X-Hashex-Cache-Secret "{SECRET}";\n')
    return _swap(text, "/etc/nginx/hashex-cache-secret.conf", str(secret_file), count=2)


def main_config(nginx: str, directory: Path) -> str:
    """An nginx.conf whose every file is under ``directory``, including hashex.conf."""
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=True).stderr
    temp_paths = "".join(
        f"    {kind.replace('-', '_')}_temp_path {directory / kind};\n"
        for kind in re.findall(r"--http-([a-z-]+)-temp-path", built)
    )
    # As root (CI) nginx would hand its workers to "nobody", who cannot read
    # this test's directories: they run as the test's own user instead.
    user = (
        f"user {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name};\n"
        if os.geteuid() == 0
        else ""
    )
    return (
        f"{user}worker_processes 2;\n"
        f"pid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} notice;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    log_format hashex '$request_method $request_uri $status "
        "$upstream_cache_status $upstream_addr';\n"
        f"    access_log {directory / 'access.log'} hashex;\n"
        f"{temp_paths}"
        f"    include {directory / 'hashex.conf'};\n"
        "}\n"
    )


@dataclass(frozen=True)
class Nginx:
    """nginx running in the foreground: its base URL, process and directory."""

    url: str
    process: subprocess.Popen[bytes]
    directory: Path

    def output(self) -> str:
        """What nginx said: its stderr and its error log."""
        said = (self.directory / "nginx.out").read_text(errors="replace")
        log = self.directory / "error.log"
        return said + (log.read_text(errors="replace") if log.exists() else "")

    def access(self) -> list[list[str]]:
        """The access log: method, URI, status, cache status, upstream address per request."""
        log = self.directory / "access.log"
        return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


@contextmanager
def running_nginx(directory: Path, nodes: list[HubServer], ca: ssl.SSLContext) -> Iterator[Nginx]:
    """nginx from docs/nginx/hashex.conf in front of ``nodes``, until the block ends."""
    nginx = require_tool("nginx")
    authority = make_authority(directory, "hashex-test-ca")
    issued = authority.issue(directory, "hub", [x509.IPAddress(LOCALHOST)])
    port = free_port()
    (directory / "hashex.conf").write_text(
        deployable(
            NGINX_CONF.read_text(encoding="ascii"),
            nodes=[node.base_url.removeprefix("http://") for node in nodes],
            port=port,
            directory=directory,
            cert=issued.cert,
            key=issued.key,
        )
    )
    conf = directory / "nginx.conf"
    conf.write_text(main_config(nginx, directory))
    ca.load_verify_locations(authority.cert)
    with (directory / "nginx.out").open("wb") as out:
        process = subprocess.Popen(
            [nginx, "-p", str(directory), "-c", str(conf), "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Nginx(f"https://127.0.0.1:{port}", process, directory)
    try:
        _wait_until_up(server, ca)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # fast shutdown
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(server: Nginx, ca: ssl.SSLContext) -> None:
    deadline = time.monotonic() + START_SECONDS
    with httpx.Client(base_url=server.url, verify=ca, trust_env=False, timeout=5.0) as http:
        while True:
            if server.process.poll() is not None:
                pytest.fail(f"nginx exited with {server.process.returncode}:\n{server.output()}")
            try:
                if http.get("/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"nginx not up after {START_SECONDS} s:\n{server.output()}")
            time.sleep(0.1)


# -- the cluster: a database, two nodes, nginx, and agencies made with the real commands -------


@dataclass
class Agency:
    """An agency made with ``hashex keygen``/``keyset init`` and ``hashex-server``."""

    slug: str
    key: Path
    keyset_file: Path
    tokens: dict[str, str] = field(default_factory=dict)


@dataclass
class Cluster:
    """PostgreSQL, two hub nodes and nginx in front of them, with the agencies."""

    database_url: str
    nodes: list[HubServer]
    nginx: Nginx
    ca: ssl.SSLContext
    ca_file: Path
    directory: Path
    agencies: dict[str, Agency] = field(default_factory=dict)

    def admin(self, *args: str | Path) -> str:
        """``hashex-server ARGS`` on the cluster's database (it must succeed); its stdout."""
        result = CliRunner(env=runner_env(HASHEX_DATABASE_URL=self.database_url)).invoke(
            server_main, [str(arg) for arg in args], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        return result.stdout

    def http(self) -> httpx.Client:
        """A client of nginx (the hub's public address)."""
        return httpx.Client(base_url=self.nginx.url, verify=self.ca, trust_env=False, timeout=30.0)

    def env(self, token: str, home: Path) -> dict[str, str]:
        """The environment of a ``hashex`` process using the hub through nginx."""
        return process_env(
            HASHEX_SERVER=self.nginx.url,
            HASHEX_CA_BUNDLE=str(self.ca_file),
            HASHEX_TOKEN=token,
            HASHEX_HOME=str(home),
        )

    def hashex(self, token: str, home: Path, *args: str | Path) -> Ran:
        """``hashex ARGS`` in this process, through nginx (it must succeed)."""
        env: dict[str, str | None] = runner_env(**self.env(token, home))
        ran = hashex(*args, env=env)
        assert ran.exit_code == 0, ran.stderr
        return ran

    def agency(self, slug: str, *roles: str) -> Agency:
        """Register ``slug`` as an operator would, with a token of each of ``roles``."""
        key = self.directory / f"{slug}.pem"
        keyset_file = self.directory / f"{slug}.keyset.json"
        assert hashex("keygen", "--out", key).exit_code == 0
        made = hashex("keyset", "init", slug, "--key", key, "--out", keyset_file)
        assert made.exit_code == 0, made.stderr
        self.admin("agency", "create", slug, "--name", f"Unit {slug}", "--keyset", keyset_file)
        agency = Agency(slug, key, keyset_file)
        for role in roles:
            agency.tokens[role] = self.admin("token", "create", slug, "--role", role).strip()
        self.agencies[slug] = agency
        return agency

    def node_requests(self, path: str) -> int:
        """How many requests for exactly ``path`` the nodes' access logs hold."""
        # The path ends where the request line or the JSON string does.
        pattern = re.compile(re.escape(path) + r'[ "]')
        return sum(len(pattern.findall(node.log.read_text())) for node in self.nodes)


@pytest.fixture(scope="module")
def cluster(
    shared_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    require_tool("nginx")
    directory = tmp_path_factory.mktemp("multinode")
    with ExitStack() as stack:
        nodes = [
            stack.enter_context(
                serving(
                    shared_database_url,
                    directory / f"node-{n}.log",
                    env={CACHE_SECRET_VAR: SECRET, "HOME": str(directory)},
                )
            )
            for n in range(NODES)
        ]
        ca = ssl.create_default_context()
        nginx = stack.enter_context(running_nginx(directory, nodes, ca))
        cluster = Cluster(
            shared_database_url, nodes, nginx, ca, directory / "hashex-test-ca.pem", directory
        )
        cluster.agency("north", "agency-admin", "publisher", "reader")
        cluster.agency("south", "agency-admin", "publisher")
        cluster.agency("lab", "reader")
        cluster.agency("outsider", "reader")
        yield cluster
        for node in nodes:
            assert node.process.poll() is None, node.log.read_text()
        assert "Traceback" not in "".join(node.log.read_text() for node in nodes)
        assert nginx.process.poll() is None, nginx.output()


def _create(cluster: Cluster, name: str, *readers: str) -> None:
    owner = cluster.agencies[name.split("/")[0]]
    home = cluster.directory / f"{owner.slug}-admin"
    cluster.hashex(owner.tokens["agency-admin"], home, "set", "create", name)
    for reader in readers:
        cluster.hashex(owner.tokens["agency-admin"], home, "set", "grant", name, reader)


def _publisher_home(cluster: Cluster, slug: str) -> Path:
    home = cluster.directory / f"{slug}-publisher"
    if not home.exists():
        agency = cluster.agencies[slug]
        pinned = hashex("trust", "add", slug, agency.keyset_file, "--home", home)
        assert pinned.exit_code == 0, pinned.stderr
    return home


def _downloads(cluster: Cluster, after: int) -> list[tuple[str, str | None, str | None, Any]]:
    """The audit rows since ``after``: action, actor agency, target, detail."""
    return [
        (event.action, event.actor_agency, event.target, event.detail_object)
        for event in audit_events(cluster.database_url, after)
    ]


def _eventually(check: Callable[[], bool], what: str) -> None:
    """Wait (a few seconds at most) until ``check`` holds: logs are written after the answer."""
    deadline = time.monotonic() + 10.0
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"never held: {what}")
        time.sleep(0.05)


def _bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


# -- a cached body, its readers, its refusals, and its audit -----------------------------------


@POSTGRES_ONLY
def test_cached_bodies_are_authorized_and_audited_on_every_hit(cluster: Cluster) -> None:
    name = "north/cached"
    north, lab, outsider = (cluster.agencies[slug] for slug in ("north", "lab", "outsider"))
    _create(cluster, name, "lab")
    content = cluster.directory / "cached-v1.txt"
    content.write_bytes(wire(random_lines(random.Random(1401), 300)))
    home = _publisher_home(cluster, "north")
    cluster.hashex(
        north.tokens["publisher"], home, "publish", name, "--key", north.key, "--from", content
    )
    url = f"/v1/sets/{name}/versions/1/content"

    with cluster.http() as http:
        version = http.get(f"/v1/sets/{name}/versions/1", headers=_bearer(lab.tokens["reader"]))
        digest = Manifest.parse(version.json()["manifest"].encode()).content_digest

        # A reader pulls the content twice in each encoding: a miss, then a hit.
        fills = cluster.node_requests(url)
        for encoding in ("identity", "gzip"):
            before = last_audit_id(cluster.database_url)
            answers = [
                http.get(
                    url, headers=_bearer(lab.tokens["reader"], **{"Accept-Encoding": encoding})
                )
                for _ in range(2)
            ]
            assert [a.status_code for a in answers] == [200, 200]
            assert [a.headers["X-Cache-Status"] for a in answers] == ["MISS", "HIT"]
            first, second = answers
            assert first.content == second.content  # httpx decodes gzip
            assert hashlib.sha256(second.content).hexdigest() == digest
            assert first.headers["ETag"] == second.headers["ETag"]
            assert second.headers.get("Content-Encoding") == (
                "gzip" if encoding == "gzip" else None
            )
            assert second.headers["Cache-Control"] == "private, max-age=31536000, immutable"
            # Each pull audited once: the miss not twice, the hit not zero times.
            row = (
                "set.download.content",
                "lab",
                f"set:{name}",
                {"encoding": encoding, "version": 1},
            )
            assert _downloads(cluster, before) == [row, row]
        # Only the misses asked a node for the body: one fill per encoding.
        _eventually(lambda: cluster.node_requests(url) == fills + 2, "both fills logged")
        time.sleep(0.5)
        assert cluster.node_requests(url) == fills + 2

        # The owner's own reader: a hit, audited as its own pull.
        before = last_audit_id(cluster.database_url)
        own = http.get(url, headers=_bearer(north.tokens["reader"], **{"Accept-Encoding": "gzip"}))
        assert (own.status_code, own.headers["X-Cache-Status"]) == (200, "HIT")
        assert _downloads(cluster, before) == [
            ("set.download.content", "north", f"set:{name}", {"encoding": "gzip", "version": 1})
        ]

        # Not a reader: the hub's own 404, exactly as for a set that does not exist.
        before = last_audit_id(cluster.database_url)
        for encoding in ("identity", "gzip"):
            headers = _bearer(outsider.tokens["reader"], **{"Accept-Encoding": encoding})
            refused = http.get(url, headers=headers)
            missing = http.get("/v1/sets/north/no-such-set/versions/1/content", headers=headers)
            assert refused.status_code == missing.status_code == 404
            assert refused.headers["Content-Type"] == "application/problem+json"
            assert refused.json()["type"] == problem_type("not-found")
            assert refused.content == missing.content
            assert "X-Cache-Status" not in refused.headers
        assert _downloads(cluster, before) == []

        # A token revoked while its cached URL is hot: 401 from the next request on.
        token = cluster.admin("token", "create", "lab", "--role", "reader").strip()
        hot = http.get(url, headers=_bearer(token, **{"Accept-Encoding": "gzip"}))
        assert (hot.status_code, hot.headers["X-Cache-Status"]) == (200, "HIT")
        with session_factory(cluster.database_url) as factory, factory() as session:
            token_id = session.scalars(
                select(Token.id).where(Token.secret_sha256 == secret_hash(token))
            ).one()
        cluster.admin("token", "revoke", str(token_id))
        before = last_audit_id(cluster.database_url)
        for headers in (_bearer(token), {}):
            denied = http.get(url, headers=headers)
            assert denied.status_code == 401
            assert denied.headers["Content-Type"] == "application/problem+json"
            assert denied.json()["type"] == problem_type("unauthorized")
        assert _downloads(cluster, before) == []

        # A client sending the cache secret itself is audited all the same:
        # nginx overwrites the header on the cached URL and clears it elsewhere.
        before = last_audit_id(cluster.database_url)
        forging = {"X-Hashex-Cache-Secret": SECRET, "Accept-Encoding": "identity"}
        for path, cache_status in ((url, "HIT"), (url + "?fresh=1", None)):
            forged = http.get(path, headers=_bearer(lab.tokens["reader"], **forging))
            assert forged.status_code == 200
            assert forged.headers.get("X-Cache-Status") == cache_status
            assert hashlib.sha256(forged.content).hexdigest() == digest
        row = ("set.download.content", "lab", f"set:{name}", {"encoding": "identity", "version": 1})
        assert _downloads(cluster, before) == [row, row]


# -- publishes and pulls at once, through both nodes -------------------------------------------


VERSIONS = 4


def _contents(seed: int) -> list[list[bytes]]:
    """The content of each version: a few hundred lines, then some removed and some added."""
    rng = random.Random(seed)
    versions = [random_lines(rng, 300)]
    for _ in range(VERSIONS - 1):
        kept = rng.sample(versions[-1], len(versions[-1]) - 30)
        versions.append(sorted(kept + random_lines(rng, 40)))
    return versions


def _run(command: list[str], env: dict[str, str]) -> Ran:
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=COMMAND_SECONDS,
        check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


@POSTGRES_ONLY
def test_concurrent_publishes_and_pulls_through_both_nodes(cluster: Cluster) -> None:
    names = ("north/list", "south/list")
    for name in names:
        _create(cluster, name, "lab")
    contents = {name: _contents(seed) for seed, name in enumerate(names, start=1402)}
    lab = cluster.agencies["lab"]
    consumers = [
        Consumer(cluster.directory / f"consumer-{n}", cluster.nginx.url, lab.tokens["reader"])
        for n in range(3)
    ]
    for consumer in consumers:
        for slug in ("north", "south"):
            consumer.pin(slug, cluster.agencies[slug].keyset_file)
    before = last_audit_id(cluster.database_url)
    failures: list[str] = []
    publishing = threading.Event()
    publishing.set()

    def publish(name: str) -> None:
        slug = name.split("/")[0]
        agency = cluster.agencies[slug]
        home = _publisher_home(cluster, slug)
        env = cluster.env(agency.tokens["publisher"], home)
        for number, lines in enumerate(contents[name], start=1):
            source = cluster.directory / f"{slug}-v{number}.txt"
            source.write_bytes(wire(lines))
            command = [str(BIN / "hashex"), "publish", name, "--key", str(agency.key)]
            ran = _run([*command, "--from", str(source), "--json"], env)
            if ran.exit_code != 0 or ran.json()["version"] != number:
                failures.append(f"publish {name} v{number}: {ran}")
                return

    def pull(consumer: Consumer) -> None:
        env = cluster.env(consumer.token, consumer.home)
        while publishing.is_set():
            ran = _run([str(BIN / "hashex"), "sync", "--json"], env)
            if ran.exit_code != 0:
                failures.append(f"{consumer.home.name}: {ran}")
        # Once the publishers are done, a sync must bring every set to its newest version.
        ran = _run([str(BIN / "hashex"), "sync", "--json"], env)
        if ran.exit_code != 0:
            failures.append(f"last sync in {consumer.home.name}: {ran}")

    publishers = [threading.Thread(target=publish, args=(name,)) for name in names]
    pullers = [threading.Thread(target=pull, args=(consumer,)) for consumer in consumers]
    for thread in (*publishers, *pullers):
        thread.start()
    for thread in publishers:
        thread.join()
    publishing.clear()
    for thread in pullers:
        thread.join()
    assert failures == [], "\n".join(failures)

    # Every consumer ends verified at the newest version of every set.
    for consumer in consumers:
        for name in names:
            assert consumer.assert_holds_signed(name, VERSIONS) == contents[name][-1]
        verified = consumer.local("verify")
        assert verified.exit_code == 0, verified.stderr

    # Every publish stored exactly once, each set's versions whole, in order.
    events = audit_events(cluster.database_url, before)
    for name in names:
        published = [e for e in events if e.action == "set.publish" and e.target == f"set:{name}"]
        assert [(e.outcome, e.actor_agency) for e in published] == [
            ("ok", name.split("/")[0])
        ] * VERSIONS
    with session_factory(cluster.database_url) as factory, factory() as session:
        for name in names:
            agency, slug = name.split("/")
            stored = session.scalars(
                select(SetVersion)
                .join(HashSet, HashSet.id == SetVersion.set_id)
                .join(AgencyRow, AgencyRow.id == HashSet.agency_id)
                .where(AgencyRow.slug == agency, HashSet.slug == slug)
                .order_by(SetVersion.version)
            ).all()
            assert [v.version for v in stored] == list(range(1, VERSIONS + 1))
            assert [v.count for v in stored] == [len(lines) for lines in contents[name]]
    downloads = [e for e in events if e.action.startswith("set.download.")]
    assert downloads
    assert all(e.actor_agency == "lab" for e in downloads)

    # The audit chain the two nodes wrote side by side verifies.
    cluster.admin("audit", "verify")

    # Both nodes served the run: listings and publishes, and the cache's authorizations.
    for node in cluster.nodes:
        log = node.log.read_text()
        assert "/v1/cache/authorize" in log, node.base_url
        assert "/versions" in log, node.base_url
    publishes = [line for line in cluster.nginx.access() if line[0] == "POST"]
    assert len(publishes) >= 2 * VERSIONS
    assert all(line[2] == "201" for line in publishes)
