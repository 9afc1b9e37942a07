"""End to end for investigators: a real hub, and ``hashex`` as a child process.

On SQLite and on PostgreSQL, a real ``hashex-server serve`` on 127.0.0.1
holds three agencies.  The owner publishes, with ``hashex publish``, a set
holding the md5, sha1 and sha256 digests of some synthetic evidence files
(random bytes written here) among random hashes, labelled ``cat-a``,
``vics-2`` or not at all, and grants it to one consumer agency.

The granted consumer runs the installed ``hashex`` script with only
``HASHEX_HOME``, ``HASHEX_SERVER`` and ``HASHEX_TOKEN`` set: it syncs, looks
hashes up (bare hex, ``alg:hex``, mixed case; ``--json``), scans the
evidence (exactly the listed files are reported) and a clean directory
(exit 1), and exports in every format: ``lines`` through ``sha256sum`` is
the signed content digest, ``hfind`` indexes the ``md5sum`` export and finds
a listed MD5 in it, ``vics`` is VICS JSON with the categories of
``VICS_CATEGORIES``, and ``csv`` has its header.  The third agency, never
granted, finds nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.exports import VICS_CATEGORIES
from client.protocol.documents import Manifest
from tests.client.realhub import RealAgency, RealHub, register
from tests.client.simhub import COMMAND_SECONDS, Consumer, Ran, hashex_process
from tests.environment import BIN, process_env
from tests.synthetic import random_line

NAME = "owner/known"
LABELS = ("cat-a", "vics-2", None)


def digest_of(alg: str, path: Path) -> str:
    return hashlib.new(alg, path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Listed:
    """One evidence file the set lists: by which algorithm and under which label."""

    path: Path
    alg: str
    label: str | None

    @property
    def digest(self) -> str:
        return digest_of(self.alg, self.path)

    def entry(self) -> bytes:
        text = f"{self.alg}:{self.digest}"
        return (text if self.label is None else f"{text} {self.label}").encode("ascii")


@dataclass(frozen=True)
class Investigator:
    """A consumer agency's tool: ``hashex`` in a child process, configured by HASHEX_*."""

    home: Path
    env: dict[str, str]

    def run(self, *args: str | Path) -> Ran:
        return hashex_process(*args, env=self.env)

    def export(self, output: str, *extra: str) -> bytes:
        """``hashex export NAME --format output``: its stdout bytes (it must succeed)."""
        process = subprocess.run(
            [str(BIN / "hashex"), "export", NAME, "--format", output, *extra],
            env=self.env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=COMMAND_SECONDS,
            check=False,
        )
        assert process.returncode == 0, process.stderr
        return process.stdout


@dataclass(frozen=True)
class World:
    hub: RealHub
    owner: RealAgency
    evidence: Path
    clean: Path
    listed: list[Listed]
    unlisted: list[Path]
    lines: list[bytes]
    """The published content: every entry line, sorted."""
    consumer: Investigator
    stranger: Investigator

    def manifest(self) -> Manifest:
        return Manifest.parse(self.hub.manifest(NAME, 1, self.owner.tokens["reader"]))


def investigator(hub: RealHub, home: Path, agency: RealAgency) -> Investigator:
    env = process_env(
        HASHEX_HOME=str(home), HASHEX_SERVER=hub.url, HASHEX_TOKEN=agency.tokens["reader"]
    )
    return Investigator(home, env)


def write_files(directory: Path, names: list[str], rng: random.Random) -> list[Path]:
    paths = []
    for name in names:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(1, 40_000)))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def world(hub: RealHub, tmp_path_factory: pytest.TempPathFactory) -> World:
    rng = random.Random(6_060_002)
    root = tmp_path_factory.mktemp("investigator")
    owner = register(hub.database_url, root, "owner")
    reader = register(hub.database_url, root, "reader", roles=("reader",))
    stranger = register(hub.database_url, root, "stranger", roles=("reader",))

    evidence = root / "evidence"
    a, b, c, d, _, _ = files = write_files(
        evidence,
        ["a.bin", "sub/b.bin", "sub/deeper/c.bin", "d.bin", "e.bin", "sub/f.bin"],
        rng,
    )
    listed = [
        Listed(a, "md5", "cat-a"),
        Listed(b, "sha1", "vics-2"),
        Listed(c, "sha256", None),
        Listed(d, "md5", None),
        Listed(d, "sha256", "cat-a"),
    ]
    clean = root / "clean"
    write_files(clean, ["g.bin", "h/i.bin"], rng)
    noise = [
        random_line(rng, alg, label)
        for alg in ("md5", "sha1", "sha256")
        for label in LABELS
        for _ in range(4)
    ]
    lines = sorted([*(x.entry() for x in listed), *noise])
    source = root / "publish.txt"
    source.write_bytes(b"".join(line + b"\n" for line in reversed(lines)))

    publisher = Consumer(root / "owner-home", hub.url, owner.tokens["agency-admin"])
    publisher.pin("owner", owner.keyset_file)
    for args in (("set", "create", NAME), ("set", "grant", NAME, "reader")):
        ran = publisher.run(*args)
        assert ran.exit_code == 0, ran.stderr
    published = Consumer(publisher.home, hub.url, owner.tokens["publisher"]).run(
        "publish", NAME, "--key", owner.keys[0], "--from", source
    )
    assert published.exit_code == 0, published.stderr

    consumer = investigator(hub, root / "reader-home", reader)
    outsider = investigator(hub, root / "stranger-home", stranger)
    for tool in (consumer, outsider):
        pinned = tool.run("trust", "add", "owner", owner.keyset_file)
        assert pinned.exit_code == 0, pinned.stderr
    synced = consumer.run("sync", "--json")
    assert synced.exit_code == 0, synced.stderr
    assert [(r["set"], r["version"], r["exit"]) for r in synced.json_lines()] == [(NAME, 1, 0)]
    unlisted = [p for p in files if p not in {x.path for x in listed}]
    return World(hub, owner, evidence, clean, listed, unlisted, lines, consumer, outsider)


def by_query(hit: dict[str, Any]) -> str:
    return str(hit["query"])


def test_lookup_bare_prefixed_and_mixed_case(world: World) -> None:
    a_md5, b_sha1, c_sha256 = world.listed[0], world.listed[1], world.listed[2]
    tool = world.consumer
    not_listed = digest_of("md5", world.unlisted[0])

    text = tool.run("lookup", a_md5.digest)
    assert text.exit_code == 0, text.stderr
    assert text.stdout == f"{a_md5.digest}: md5:{a_md5.digest} in {NAME} version 1 label cat-a\n"

    queries = [
        a_md5.digest.upper(),
        f"SHA1:{b_sha1.digest.upper()}",
        f"sha256:{c_sha256.digest[:32].upper()}{c_sha256.digest[32:]}",
        not_listed,
    ]
    ran = tool.run("lookup", *queries, "--json")
    assert ran.exit_code == 0, ran.stderr
    for hit in ran.json_lines():
        assert set(hit) == {"query", "alg", "hash", "set", "version", "label", "stale"}
    assert sorted(ran.json_lines(), key=by_query) == sorted(
        [
            {
                "query": query,
                "alg": x.alg,
                "hash": x.digest,
                "set": NAME,
                "version": 1,
                "label": x.label,
                "stale": False,
            }
            for query, x in zip(queries[:3], (a_md5, b_sha1, c_sha256), strict=True)
        ],
        key=by_query,
    )

    none = tool.run("lookup", not_listed, f"sha1:{'0' * 40}", "--json")
    assert (none.exit_code, none.stdout) == (1, ""), none.stderr


def test_scan_reports_exactly_the_listed_files(world: World) -> None:
    ran = world.consumer.run("scan", world.evidence)
    assert ran.exit_code == 0, ran.stderr
    found = ran.json_lines()
    expected = [
        {
            "path": str(x.path),
            "alg": x.alg,
            "hash": x.digest,
            "set": NAME,
            "version": 1,
            "label": x.label,
            "stale": False,
        }
        for x in world.listed
    ]

    def key(hit: dict[str, Any]) -> tuple[str, str]:
        return hit["path"], hit["alg"]

    assert sorted(found, key=key) == sorted(expected, key=key)
    assert {hit["path"] for hit in found} == {str(x.path) for x in world.listed}
    assert not {str(p) for p in world.unlisted} & {hit["path"] for hit in found}

    clean = world.consumer.run("scan", world.clean)
    assert (clean.exit_code, clean.stdout) == (1, ""), clean.stderr


def test_export_lines_through_sha256sum_is_the_content_digest(
    world: World, require_tool: Callable[[str], str]
) -> None:
    sha256sum = require_tool("sha256sum")
    with subprocess.Popen(
        [str(BIN / "hashex"), "export", NAME, "--format", "lines"],
        env=world.consumer.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    ) as export:
        assert export.stdout is not None
        summed = subprocess.run(
            [sha256sum],
            stdin=export.stdout,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            check=True,
        )
        export.stdout.close()
        assert export.wait(timeout=COMMAND_SECONDS) == 0
    manifest = world.manifest()
    assert summed.stdout == f"{manifest.content_digest}  -\n"
    assert world.consumer.export("lines") == b"".join(line + b"\n" for line in world.lines)


def test_hfind_finds_a_listed_md5_in_the_md5sum_export(
    world: World, tmp_path: Path, require_tool: Callable[[str], str]
) -> None:
    hfind = require_tool("hfind")
    exported = world.consumer.export("md5sum")
    expected = []
    for line in world.lines:
        identity, _, label = line.decode().partition(" ")
        alg, _, digest = identity.partition(":")
        if alg == "md5":
            expected.append(f"{digest}  {NAME}" + (f":{label}" if label else ""))
    assert exported.decode().splitlines() == expected
    database = tmp_path / "known.md5"
    database.write_bytes(exported)

    def run(*args: str | Path) -> str:
        process = subprocess.run(
            [hfind, *map(str, args)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=COMMAND_SECONDS,
            check=False,
        )
        assert process.returncode == 0, process.stderr
        return process.stdout

    def found(md5: str) -> tuple[str, str]:
        """What ``hfind`` says of one MD5: the hash it echoes, and the name or not-found."""
        digest, name = run(database, md5).removesuffix("\n").split("\t")
        return digest.lower(), name

    run("-i", "md5sum", database)
    a_md5, d_md5 = world.listed[0], world.listed[3]
    assert found(a_md5.digest) == (a_md5.digest, f"{NAME}:cat-a")
    assert found(d_md5.digest.upper()) == (d_md5.digest, NAME)
    stranger = digest_of("md5", world.unlisted[0])
    assert found(stranger) == (stranger, "Hash Not Found")


def test_vics_export_is_vics_json_with_mapped_categories(world: World) -> None:
    vics = json.loads(world.consumer.export("vics"))
    assert vics["@odata.context"].endswith("#Media")
    media = vics["Media"]
    assert isinstance(media, list)
    expected = {}
    for line in world.lines:
        identity, _, label = line.decode().partition(" ")
        alg, _, digest = identity.partition(":")
        if alg in ("md5", "sha1"):
            expected[(alg, digest)] = label or None
    assert len(media) == len(expected)
    assert {"cat-a", "vics-2", None} == set(expected.values())
    by_label: dict[str | None, set[tuple[int, bool]]] = {}
    for item in media:
        md5, sha1 = item["MD5"], item["SHA1"]
        assert (md5 is None) != (sha1 is None), item
        key = ("md5", md5.lower()) if md5 is not None else ("sha1", sha1.lower())
        label = expected.pop(key)
        by_label.setdefault(label, set()).add((item["Category"], item["IsPrecategorized"]))
    assert expected == {}
    assert by_label == {"cat-a": {(1, True)}, "vics-2": {(2, True)}, None: {(1, False)}}
    assert VICS_CATEGORIES["cat-a"] == 1
    assert VICS_CATEGORIES["vics-2"] == 2


def test_csv_export_has_its_header_and_every_entry(world: World) -> None:
    rows = list(csv.reader(io.StringIO(world.consumer.export("csv").decode("ascii"))))
    assert rows[0] == ["alg", "hash", "label", "set", "version"]
    expected = []
    for line in world.lines:
        identity, _, label = line.decode().partition(" ")
        alg, _, digest = identity.partition(":")
        expected.append([alg, digest, label, NAME, "1"])
    assert rows[1:] == expected


def test_an_ungranted_agency_finds_nothing(world: World) -> None:
    tool = world.stranger
    refused = tool.run("sync", NAME)
    assert refused.exit_code == 4, refused.stderr
    everything = tool.run("sync", "--json")
    assert (everything.exit_code, everything.stdout) == (0, "")
    a_md5 = world.listed[0]
    looked = tool.run("lookup", a_md5.digest, f"md5:{a_md5.digest}", "--json")
    assert (looked.exit_code, looked.stdout) == (1, "")
    scanned = tool.run("scan", world.evidence)
    assert (scanned.exit_code, scanned.stdout) == (1, "")
    exported = tool.run("export", NAME, "--format", "lines")
    assert (exported.exit_code, exported.stdout) == (2, "")
