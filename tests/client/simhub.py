"""A simulated hub: the v1 read API in memory, as an ``httpx.MockTransport`` handler.

In the style of python-tuf's repository simulator, the test builds what an
honest hub would hold -- agencies with real Ed25519 keys and signed keysets,
sets with signed versions, their delta and content bytes -- and the hub
serves it.  An attack is then one change to what is served:

* change the data: replace a version (``SimSet.versions[i] = forged``), its
  delta or content bytes, or ``SimSet.latest`` (the number the set's metadata
  claims);
* replace one route: ``hub.routes[path] = handler`` answers every request
  for that exact path (no query) however the honest hub would have;
* rewrite any answer: ``hub.tamper = fn(request, response) -> response``.

Every request is kept in ``hub.requests``.  ``serve_on_socket`` puts the same
handler behind a real HTTP server on 127.0.0.1, for what only a socket can do
(stall in the middle of a body).  ``Snapshot`` is everything a local store
holds, to prove a refused sync changed nothing.

The last part runs the ``hashex`` verbs, against this hub or a real one
(``tests.client.realhub``): in this process (``hashex``, ``Consumer``) or as
a child process (``hashex_process``).

Every hash is synthetic (``tests.synthetic``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.cli import main as cli_main
from client.keysets import KeyChoice, make_keyset
from client.limits import Limits
from client.protocol.building import build_version
from client.protocol.documents import Keyset, Manifest, SignedDocument, sign_document
from client.protocol.keys import Signature, generate_private_key
from client.settings import ClientSettings
from client.store import Store
from client.transport import HubClient
from tests.environment import BIN, runner_env
from tests.synthetic import now, wire

HUB_URL = "https://hub.test"
TOKEN = "hxt_simulated-hub-token"
JSON = "application/json"
TEXT = "text/plain; charset=us-ascii"
PROBLEM = "application/problem+json"
# Short timeouts: nothing in these tests may wait long.
LIMITS = Limits(connect_timeout=2.0, read_timeout=2.0, sync_deadline=60.0)

Handler = Callable[[httpx.Request], httpx.Response]
Tamper = Callable[[httpx.Request, httpx.Response], httpx.Response]


# -- agencies, sets and versions ------------------------------------------------------


@dataclass
class SimAgency:
    """An agency with its private keys (the newest keyset's) and every keyset it signed."""

    slug: str
    keys: list[Ed25519PrivateKey]
    keysets: list[SignedDocument]

    @property
    def keyset(self) -> Keyset:
        """The newest keyset, parsed."""
        return Keyset.parse(self.keysets[-1].data)

    def keyset_file(self, path: Path, version: int = 1) -> Path:
        """Write keyset ``version`` as the keyset file a consumer pins; ``path``."""
        path.write_text(self.keysets[version - 1].dumps(), encoding="ascii")
        return path

    def rotate(
        self,
        keys: Sequence[Ed25519PrivateKey] | None = None,
        *,
        signers: Sequence[Ed25519PrivateKey] | None = None,
        publish_threshold: int = 1,
        expires_days: int = 365,
    ) -> SignedDocument:
        """Sign the next keyset (``keys`` in both roles) and hold it as the newest.

        ``signers`` are the previous roots that vouch for it (default: all of them).
        """
        new_keys = list(keys) if keys is not None else [generate_private_key()]
        document = make_keyset(
            self.slug,
            len(self.keysets) + 1,
            KeyChoice(both=new_keys, publish_threshold=publish_threshold),
            expires_days,
            extra_signers=list(self.keys if signers is None else signers),
        )
        self.keysets.append(document)
        self.keys = new_keys
        return document


def new_agency(slug: str, *, keys: int = 1, publish_threshold: int = 1) -> SimAgency:
    """An agency with ``keys`` fresh keys in both roles and its keyset 1."""
    private = [generate_private_key() for _ in range(keys)]
    document = make_keyset(
        slug, 1, KeyChoice(both=private, publish_threshold=publish_threshold), 365
    )
    return SimAgency(slug, private, [document])


@dataclass(frozen=True)
class SimVersion:
    """One signed version: the version object, its delta and its content bytes."""

    document: SignedDocument
    delta: bytes
    content: bytes

    @property
    def version(self) -> int:
        """The number the version object carries."""
        return self.document.version

    @property
    def manifest(self) -> Manifest:
        """The manifest, parsed (canonical manifests only)."""
        return Manifest.parse(self.document.data)

    @property
    def lines(self) -> list[bytes]:
        """The content as lines without LF."""
        return self.content.splitlines()

    def resigned(
        self,
        keys: Sequence[Ed25519PrivateKey],
        *,
        delta: bytes | None = None,
        content: bytes | None = None,
        **changes: Any,
    ) -> SimVersion:
        """This version with manifest fields changed, signed again by ``keys``."""
        manifest = dataclasses.replace(self.manifest, **changes)
        document = sign_document("manifest", manifest.encode(), manifest.version, keys)
        return SimVersion(
            document,
            self.delta if delta is None else delta,
            self.content if content is None else content,
        )

    def with_signatures(self, signatures: Sequence[Signature]) -> SimVersion:
        """The same manifest bytes carrying other signatures."""
        document = dataclasses.replace(self.document, signatures=tuple(signatures))
        return dataclasses.replace(self, document=document)


@dataclass
class SimSet:
    """One set as its agency publishes it: every version so far."""

    name: str
    agency: SimAgency
    versions: list[SimVersion] = field(default_factory=list)
    latest: int | None = None
    """What the set's metadata claims as ``latest_version``; None: the true one."""

    @property
    def lines(self) -> list[bytes]:
        """The newest content as lines (empty before version 1)."""
        return self.versions[-1].lines if self.versions else []

    def build(
        self,
        new_lines: Iterable[bytes],
        *,
        keys: Sequence[Ed25519PrivateKey] | None = None,
        keyset: Keyset | None = None,
        issued: datetime | None = None,
        expires: datetime | None = None,
        after: SimVersion | None = None,
    ) -> SimVersion:
        """Sign the version after ``after`` (default: the newest) with content ``new_lines``."""
        parent = after if after is not None else (self.versions[-1] if self.versions else None)
        new = sorted(set(new_lines))
        delta = io.BytesIO()
        moment = now()
        document = build_version(
            set_name=self.name,
            parent=None if parent is None else parent.document.data,
            old=[] if parent is None else parent.lines,
            new=new,
            keyset=self.agency.keyset if keyset is None else keyset,
            keys=self.agency.keys if keys is None else keys,
            issued=moment - timedelta(minutes=1) if issued is None else issued,
            expires=moment + timedelta(days=30) if expires is None else expires,
            delta_out=delta,
        )
        return SimVersion(document, delta.getvalue(), wire(new))

    def publish(self, new_lines: Iterable[bytes], **options: Any) -> SimVersion:
        """Build the next version and hold it as published."""
        version = self.build(new_lines, **options)
        self.versions.append(version)
        return version

    def change(
        self,
        adds: Iterable[bytes] = (),
        removes: Iterable[bytes] = (),
        **options: Any,
    ) -> SimVersion:
        """Publish the newest content with ``removes`` taken out and ``adds`` put in."""
        gone = set(removes)
        return self.publish([*(x for x in self.lines if x not in gone), *adds], **options)


# -- the hub -----------------------------------------------------------------------------


def json_response(body: Any, status: int = 200, content_type: str = JSON) -> httpx.Response:
    """A JSON answer, streamed as a socket would."""
    data = json.dumps(body).encode("utf-8")
    return httpx.Response(status, headers={"Content-Type": content_type}, content=iter([data]))


def text_response(
    data: bytes | Iterable[bytes], status: int = 200, content_type: str = TEXT
) -> httpx.Response:
    """An entries answer; a generator body streams (and may never end)."""
    chunks = [data] if isinstance(data, bytes) else data
    return httpx.Response(status, headers={"Content-Type": content_type}, content=iter(chunks))


def problem_response(status: int, slug: str, detail: str) -> httpx.Response:
    """An RFC 9457 problem answer, as the hub refuses."""
    body = {"type": f"https://hashex.example/problems/{slug}", "title": slug, "detail": detail}
    return json_response(body, status, PROBLEM)


class SimHub:
    """The hub's read API over the agencies and sets a test built."""

    def __init__(self) -> None:
        self.agencies: dict[str, SimAgency] = {}
        self.sets: dict[str, SimSet] = {}
        self.routes: dict[str, Handler] = {}
        self.tamper: Tamper | None = None
        self.requests: list[httpx.Request] = []

    def add_agency(self, slug: str, **options: Any) -> SimAgency:
        """A new agency, known to the hub."""
        agency = new_agency(slug, **options)
        self.agencies[slug] = agency
        return agency

    def add_set(self, name: str) -> SimSet:
        """A new, empty set of an agency already added."""
        simset = SimSet(name, self.agencies[name.split("/")[0]])
        self.sets[name] = simset
        return simset

    def client(self, limits: Limits = LIMITS) -> HubClient:
        """A HubClient whose every request this hub answers."""
        settings = ClientSettings.resolve(server=HUB_URL, token=TOKEN, environ={"HOME": "/"})
        return HubClient(settings, limits, transport=httpx.MockTransport(self.handle))

    def paths(self, suffix: str = "") -> list[str]:
        """The paths asked so far (ending with ``suffix``), in order."""
        return [r.url.path for r in self.requests if r.url.path.endswith(suffix)]

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as the (possibly tampered) hub."""
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return problem_response(401, "unauthorized", "no valid token")
        route = self.routes.get(request.url.path)
        response = route(request) if route is not None else self._honest(request)
        return response if self.tamper is None else self.tamper(request, response)

    def _honest(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        query = request.url.params
        if request.method != "GET" or parts[:1] != ["v1"]:
            return problem_response(405, "method-not-allowed", "the simulated hub only reads")
        if parts == ["v1", "sets"]:
            return _listing_response(
                request, {"sets": [_set_json(s) for _, s in sorted(self.sets.items())]}
            )
        if len(parts) == 4 and parts[1] == "agencies" and parts[3] == "keysets":
            agency = self.agencies.get(parts[2])
            if agency is None:
                return problem_response(404, "not-found", "no such agency")
            after = int(query.get("after", "0"))
            return json_response(
                {"keysets": [k.to_json() for k in agency.keysets if k.version > after]}
            )
        if len(parts) < 4 or parts[1] != "sets":
            return problem_response(404, "not-found", "no such route")
        simset = self.sets.get(f"{parts[2]}/{parts[3]}")
        if simset is None:
            return problem_response(404, "not-found", "no such set")
        rest = parts[4:]
        if not rest:
            return json_response(_set_json(simset))
        if rest == ["versions"]:
            after = int(query.get("after", "0"))
            limit = int(query.get("limit", "1000"))
            page = [v.document.to_json() for v in simset.versions if v.version > after]
            return json_response({"versions": page[:limit]})
        if len(rest) == 3 and rest[0] == "versions" and rest[2] in ("delta", "content"):
            number = int(rest[1])
            found = [v for v in simset.versions if v.version == number]
            if not found:
                return problem_response(404, "not-found", "no such version")
            return text_response(found[0].delta if rest[2] == "delta" else found[0].content)
        return problem_response(404, "not-found", "no such route")


def _set_json(simset: SimSet) -> dict[str, Any]:
    latest = len(simset.versions) if simset.latest is None else simset.latest
    return {
        "name": simset.name,
        "owner": simset.agency.slug,
        "title": simset.name,
        "latest_version": latest,
        "created_at": "2026-01-01T00:00:00Z",
        "keyset": simset.agency.keysets[-1].version,
    }


def _listing_response(request: httpx.Request, body: Any) -> httpx.Response:
    """The listing with an ETag over its body, and 304 when the client holds that ETag."""
    etag = '"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32] + '"'
    if request.headers.get("if-none-match") == etag:
        return httpx.Response(304, headers={"ETag": etag})
    response = json_response(body)
    response.headers["ETag"] = etag
    return response


# -- the same hub behind a real socket ---------------------------------------------------


@dataclass
class SocketHub:
    """A ``SimHub`` served over HTTP on 127.0.0.1.

    ``stall`` paths send half their body, then hang; ``drip`` paths send their
    body one byte per ``drip_interval`` seconds (each read well inside any
    read timeout), for at most ``max_drip`` seconds, then the rest at once.
    """

    base_url: str
    stall: set[str] = field(default_factory=set)
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    drip: set[str] = field(default_factory=set)
    drip_interval: float = 0.1
    max_drip: float = 8.0


@contextmanager
def serve_on_socket(hub: SimHub, *, max_stall: float = 10.0) -> Iterator[SocketHub]:
    """Serve ``hub`` on a free port of 127.0.0.1 until the block ends.

    A request for a path in ``stall`` gets its status, headers (with the full
    Content-Length) and the first half of its body, then nothing more until
    the block ends or ``max_stall`` seconds pass: a hub that stops mid-stream.
    """
    state: SocketHub

    class Handle(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
            request = httpx.Request("GET", url, headers=dict(self.headers.items()))
            response = hub.handle(request)
            body = response.read()
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if request.url.path in state.stall:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                state.stalled.set()
                state.release.wait(max_stall)
                self.close_connection = True
                return
            if request.url.path in state.drip:
                self._drip(body)
                return
            self.wfile.write(body)

        def _drip(self, body: bytes) -> None:
            until = time.monotonic() + state.max_drip
            sent = 0
            try:
                while sent < len(body) and time.monotonic() < until:
                    self.wfile.write(body[sent : sent + 1])
                    self.wfile.flush()
                    sent += 1
                    if state.release.wait(state.drip_interval):
                        break
                self.wfile.write(body[sent:])
            except OSError:
                # The client gave up and closed the connection: that is the point.
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
    server.daemon_threads = True
    state = SocketHub(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def socket_client(socket_hub: SocketHub, limits: Limits = LIMITS) -> HubClient:
    """A HubClient of a ``SocketHub`` (plain http, allowed on loopback)."""
    settings = ClientSettings.resolve(
        server=socket_hub.base_url, token=TOKEN, environ={"HOME": "/"}
    )
    return HubClient(settings, limits)


# -- what a local store holds --------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Everything a store holds: per set, version, manifest, signatures and
    entries; per agency, the keysets; and the whole database dumped as SQL,
    but for the hub's last listing (a remembered answer, not verified state:
    a sync that is refused may still have polled)."""

    sets: dict[str, tuple[int, bytes | None, list[Any], list[bytes]]]
    keysets: dict[str, list[SignedDocument]]
    dump: list[str]


def snapshot(home: Path, names: Sequence[str] = (), agencies: Sequence[str] = ()) -> Snapshot:
    """A snapshot of the store under ``home`` (sets ``names``, keysets of ``agencies``)."""
    store = Store.open(home)
    try:
        sets = {}
        for name in names:
            state = store.set_state(name)
            signatures = [s.to_json() for s in store.manifest_signatures(name)]
            sets[name] = (state.version, state.manifest, signatures, list(store.iter_content(name)))
        keysets = {agency: store.keyset_documents(agency) for agency in agencies}
    finally:
        store.close()
    with closing(sqlite3.connect(home / "store.sqlite3")) as connection:
        dump = [
            line for line in connection.iterdump() if not line.startswith('INSERT INTO "listings"')
        ]
    return Snapshot(sets, keysets, dump)


def set_rows(home: Path) -> list[str]:
    """The names of every set row in the store, held or not."""
    with closing(sqlite3.connect(home / "store.sqlite3")) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM sets ORDER BY name")]


# -- the hashex verbs, against this hub or a real one ------------------------------------------

COMMAND_SECONDS = 60.0


@dataclass(frozen=True)
class Ran:
    """What one ``hashex`` run came to."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """Stdout as one JSON value."""
        return json.loads(self.stdout)

    def json_lines(self) -> list[Any]:
        """Stdout as one JSON value per line."""
        return [json.loads(line) for line in self.stdout.splitlines()]


def hashex(*args: str | Path, env: dict[str, str | None] | None = None) -> Ran:
    """Run the ``hashex`` CLI in this process (no stdin: a prompt would fail)."""
    result = CliRunner(env=env or runner_env()).invoke(
        cli_main, [str(a) for a in args], input=None, catch_exceptions=False
    )
    return Ran(result.exit_code, result.stdout, result.stderr)


def hashex_process(*args: str | Path, env: dict[str, str]) -> Ran:
    """Run the installed ``hashex`` script as a child process, bounded in time."""
    process = subprocess.run(
        [str(BIN / "hashex"), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=COMMAND_SECONDS,
        check=False,
    )
    return Ran(process.returncode, process.stdout, process.stderr)


@dataclass(frozen=True)
class Consumer:
    """A ``hashex`` user: a home (store and pins), a hub and a token."""

    home: Path
    server: str
    token: str

    def run(self, *args: str | Path) -> Ran:
        """A hub verb with this consumer's --server, --token and --home."""
        return hashex(*args, "--server", self.server, "--token", self.token, "--home", self.home)

    def local(self, *args: str | Path) -> Ran:
        """A local verb (trust add, status, verify) with this consumer's --home."""
        return hashex(*args, "--home", self.home)

    def pin(self, agency: str, source: str | Path) -> None:
        """``hashex trust add``, which must succeed."""
        ran = self.local("trust", "add", agency, source)
        assert ran.exit_code == 0, ran.stderr

    def held(self, name: str) -> tuple[int, bytes | None, list[bytes]]:
        """The set's version, manifest bytes and entries in this consumer's store."""
        store = Store.open(self.home)
        try:
            state = store.set_state(name)
            return state.version, state.manifest, list(store.iter_content(name))
        finally:
            store.close()

    def assert_holds_signed(self, name: str, version: int) -> list[bytes]:
        """The store holds ``version`` and exactly the content its manifest signs; the lines."""
        held_version, manifest_bytes, lines = self.held(name)
        assert held_version == version
        assert manifest_bytes is not None
        manifest = Manifest.parse(manifest_bytes)
        assert manifest.version == version
        canonical = b"".join(line + b"\n" for line in lines)
        assert hashlib.sha256(canonical).hexdigest() == manifest.content_digest
        assert len(lines) == manifest.count
        return lines
