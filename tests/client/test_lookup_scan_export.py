"""``lookup``, ``scan`` and ``export`` on a local store, without a hub.

The store is filled the way a sync fills it: ``Store.replace_content`` with
real signed versions (``tests.client.simhub.SimSet``) and the agency's
keysets saved beside them, so freshness is computed exactly as after a
sync.  The verbs run in this process (click's runner), except where a scan
could hang: those run as a child process with a time bound.

* ``lookup --file`` of 100,000 hashes asks SQLite one statement per set per
  batch of 50,000, counted on the store's own connection; bad lines are
  reported with their numbers (exit 2) and nothing is answered.
* ``scan``: unreadable entries (a UNIX socket, a dangling symlink followed,
  a file deleted between the walk and the read, a FIFO) are skipped with a
  warning and the scan goes on; symlinks are not followed unless asked, and
  a symlink loop followed reports each file once; empty files and files
  larger than the read chunk hash correctly; only the algorithms the held
  sets use are computed.
* Stale sets: answers are flagged ``stale``, and ``--require-fresh`` exits 5.
* ``export`` of a set not held is exit 2.

Every hash and every file is synthetic random bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from client import matching
from client.cli import main as cli_main
from client.exports import VICS_CATEGORIES
from client.matching import parse_query_lines, parse_query_text
from client.protocol.entries import ALGORITHMS
from client.protocol.errors import EntryInputError
from client.store import Store
from client.trust import content_blocks
from tests.client.simhub import Ran, SimSet, SimVersion, hashex, new_agency
from tests.environment import BIN, process_env, runner_env
from tests.synthetic import now, random_line
from tests.terminal import on_a_terminal

NAME = "unit/known"
OTHER = "other/list"
# A scan of a few small files takes well under a second; a hung one is cut here.
SCAN_SECONDS = 6.0


@pytest.fixture
def rng() -> random.Random:
    return random.Random(6_060_001)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def hold(home: Path, simset: SimSet) -> SimVersion:
    """Put ``simset``'s newest version in the store as a sync would; the version."""
    version = simset.versions[-1]
    store = Store.open(home)
    try:
        store.save_keysets(simset.agency.slug, simset.agency.keysets)
        stream = io.BytesIO(version.content)
        store.replace_content(
            simset.name, version.document, content_blocks(version.manifest, stream)
        )
    finally:
        store.close()
    return version


def held_set(home: Path, name: str, lines: Sequence[bytes], *, stale: bool = False) -> SimVersion:
    """A signed set ``name`` holding ``lines`` (expired when ``stale``), held under ``home``."""
    simset = SimSet(name, new_agency(name.split("/")[0]))
    if stale:
        moment = now()
        simset.publish(
            lines, issued=moment - timedelta(days=10), expires=moment - timedelta(days=1)
        )
    else:
        simset.publish(lines)
    return hold(home, simset)


def run(home: Path, *args: str | Path) -> Ran:
    """A local verb on the store under ``home``, in this process."""
    return hashex(*args, "--home", home, env=runner_env())


def entry(alg: str, digest: str, label: str | None = None) -> bytes:
    return (f"{alg}:{digest}" if label is None else f"{alg}:{digest} {label}").encode("ascii")


def parts(line: bytes) -> tuple[str, str, str | None]:
    """An entry line's algorithm, hex and label."""
    identity, _, label = line.decode("ascii").partition(" ")
    alg, _, digest = identity.partition(":")
    return alg, digest, label or None


def digest_of(alg: str, data: bytes) -> str:
    return hashlib.new(alg, data).hexdigest()


def write_random(path: Path, rng: random.Random, size: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = rng.randbytes(size)
    path.write_bytes(data)
    return data


def ordered(found: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scan or lookup answers in a stable order."""
    return sorted(found, key=lambda hit: json.dumps(hit, sort_keys=True))


def hits(ran: Ran) -> list[dict[str, Any]]:
    """Scan or lookup JSON lines, in a stable order."""
    return ordered(ran.json_lines())


def scan_hit(path: Path, alg: str, data: bytes, version: int, label: str | None) -> dict[str, Any]:
    return {
        "path": str(path),
        "alg": alg,
        "hash": digest_of(alg, data),
        "set": NAME,
        "version": version,
        "label": label,
        "stale": False,
    }


# -- lookup ------------------------------------------------------------------------------


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement run on any SQLite connection opened from here on."""
    seen: list[str] = []
    connect = sqlite3.connect

    def tracing(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(seen.append)
        return connection

    monkeypatch.setattr(sqlite3, "connect", tracing)
    return seen


def test_a_batch_of_100000_hashes_is_a_few_queries_per_set(
    home: Path,
    tmp_path: Path,
    rng: random.Random,
    monkeypatch: pytest.MonkeyPatch,
    statements: list[str],
) -> None:
    own = [random_line(rng, alg, label) for alg in ("md5", "sha256") for label in (None, "cat-a")]
    other = [random_line(rng, "sha1", "vics-2") for _ in range(3)]
    held_set(home, NAME, [*own, *(random_line(rng) for _ in range(300))])
    held_set(home, OTHER, [*other, *(random_line(rng) for _ in range(300))])
    listed = [*own, *other]
    queries = [rng.randbytes(16).hex() for _ in range(100_000 - len(listed))]
    for line in listed:
        alg, digest, _ = parts(line)
        # Listed hashes spread through the file, in the forms users type.
        query = rng.choice([digest, digest.upper(), f"{alg}:{digest}", f"{alg.upper()}:{digest}"])
        queries.insert(rng.randrange(len(queries)), query)
    source = tmp_path / "hashes.txt"
    source.write_text("".join(f"{q}\n" for q in queries), encoding="ascii")

    calls: list[int] = []
    lookup = Store.lookup_digests

    def counting(store: Store, asked: dict[str, set[str]]) -> Any:
        calls.append(sum(map(len, asked.values())))
        return lookup(store, asked)

    monkeypatch.setattr(Store, "lookup_digests", counting)
    statements.clear()
    ran = run(home, "lookup", "--file", source, "--json")

    assert ran.exit_code == 0, ran.stderr
    found = {(hit["alg"], hit["hash"], hit["label"], hit["set"]) for hit in ran.json_lines()}
    expected = {
        (*parts(line), name) for name, lines in ((NAME, own), (OTHER, other)) for line in lines
    }
    assert found == expected
    assert len(calls) == 1  # one store lookup for the whole file
    joins = [s for s in statements if "JOIN entries_" in s]
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # Per set and algorithm, one read of its digests and one probe for those found.
    assert len(joins) <= 2 * len(ALGORITHMS)
    assert len(selects) < 40, selects[:50]


def test_lookup_forms_exit_codes_and_json(home: Path, rng: random.Random) -> None:
    md5 = rng.randbytes(16).hex()
    shared = rng.randbytes(32).hex()  # held as sha256 and as pdq: bare hex means both
    version = held_set(
        home,
        NAME,
        [entry("md5", md5, "cat-a"), entry("sha256", shared), entry("pdq", shared, "vics-2")],
    )
    ran = run(home, "lookup", md5.upper(), f"Sha256:{shared.upper()}", shared, "--json")
    assert ran.exit_code == 0, ran.stderr
    base = {"set": NAME, "version": version.version, "stale": False}
    assert hits(ran) == ordered(
        [
            {"query": md5.upper(), "alg": "md5", "hash": md5, "label": "cat-a"} | base,
            {"query": f"Sha256:{shared.upper()}", "alg": "sha256", "hash": shared, "label": None}
            | base,
            {"query": shared, "alg": "sha256", "hash": shared, "label": None} | base,
            {"query": shared, "alg": "pdq", "hash": shared, "label": "vics-2"} | base,
        ]
    )
    text = run(home, "lookup", f"md5:{md5}")
    assert text.exit_code == 0
    assert f"md5:{md5} in {NAME} version 1 label cat-a" in text.stdout
    missing = run(home, "lookup", rng.randbytes(16).hex(), f"sha1:{rng.randbytes(20).hex()}")
    assert (missing.exit_code, missing.stdout) == (1, "")


def test_lookup_from_stdin(home: Path, rng: random.Random) -> None:
    md5 = rng.randbytes(16).hex()
    held_set(home, NAME, [entry("md5", md5)])
    result = CliRunner(env=runner_env()).invoke(
        cli_main,
        ["lookup", "--file", "-", "--json", "--home", str(home)],
        input=f"\n{rng.randbytes(16).hex()}\n  {md5.upper()}  \n",
    )
    assert result.exit_code == 0, result.stderr
    assert [hit["hash"] for hit in map(json.loads, result.stdout.splitlines())] == [md5]


def test_bad_query_lines_are_reported_with_their_numbers(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    md5 = rng.randbytes(16).hex()
    held_set(home, NAME, [entry("md5", md5)])
    source = tmp_path / "hashes.txt"
    lines = [
        md5,  # 1: listed
        "not-hex",  # 2
        "",  # 3: blank lines are skipped, and still counted
        f"md5:{md5[:-1]}",  # 4: too short for md5
        f"sha3:{md5}",  # 5: no such algorithm
        "abc",  # 6: no algorithm has 3-character hashes
        f"SHA1:{rng.randbytes(20).hex()}",  # 7: fine
    ]
    source.write_text("\n".join(lines) + "\n", encoding="ascii")
    ran = run(home, "lookup", "--file", source)
    assert (ran.exit_code, ran.stdout) == (2, "")
    assert "4 bad line(s)" in ran.stderr
    for number in (2, 4, 5, 6):
        assert f"line {number}:" in ran.stderr
    for number in (1, 3, 7):
        assert f"line {number}:" not in ran.stderr
    # Arguments are numbered as arguments, not as lines of a file.
    arguments = run(home, "lookup", md5, "xyz")
    assert (arguments.exit_code, arguments.stdout) == (2, "")
    assert "1 bad argument(s):\n  argument 2: hash 'xyz' is not hex; expected " in arguments.stderr
    assert "line 2" not in arguments.stderr
    assert run(home, "lookup").exit_code == 2


# -- stale sets ----------------------------------------------------------------------------


def test_stale_sets_are_flagged_and_require_fresh_exits_5(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    data = rng.randbytes(1000)
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "listed.bin").write_bytes(data)
    held_set(home, NAME, [entry("md5", digest_of("md5", data), "cat-a")], stale=True)

    flagged = run(home, "lookup", digest_of("md5", data), "--json")
    assert flagged.exit_code == 0, flagged.stderr
    assert [(hit["set"], hit["stale"]) for hit in flagged.json_lines()] == [(NAME, True)]
    assert "(STALE)" in run(home, "lookup", digest_of("md5", data)).stdout
    scanned = run(home, "scan", evidence)
    assert scanned.exit_code == 0, scanned.stderr
    assert [hit["stale"] for hit in scanned.json_lines()] == [True]

    # --require-fresh: no answer at all from stale data, a message naming it, exit 5.
    for refused in (
        run(home, "lookup", digest_of("md5", data), "--require-fresh"),
        run(home, "lookup", digest_of("md5", data), "--require-fresh", "--json"),
        run(home, "scan", evidence, "--require-fresh"),
    ):
        assert (refused.exit_code, refused.stdout) == (5, ""), refused
        assert f"stale, so no answer (--require-fresh): {NAME} (manifest version 1 expired at" in (
            refused.stderr
        )


def test_require_fresh_does_not_answer_no_match_from_a_stale_set(
    home: Path, rng: random.Random
) -> None:
    # "Not listed" from an expired list is exactly the answer that may be
    # wrong: the agency may have listed the hash since.  --require-fresh
    # must refuse it (exit 5), not answer 1.
    held_set(home, NAME, [random_line(rng, "md5")], stale=True)
    ran = run(home, "lookup", rng.randbytes(16).hex(), "--require-fresh")
    assert ran.exit_code == 5, (ran.exit_code, ran.stdout, ran.stderr)


def test_scan_as_csv_flags_stale_data(home: Path, tmp_path: Path, rng: random.Random) -> None:
    # JSON lines carry "stale"; a CSV report from an expired list must say
    # so too (a column, or a warning), or its reader takes it as fresh.
    evidence = tmp_path / "evidence"
    data = write_random(evidence / "listed.bin", rng, 100)
    held_set(home, NAME, [entry("md5", digest_of("md5", data))], stale=True)
    ran = run(home, "scan", evidence, "--format", "csv")
    assert ran.exit_code == 0, ran.stderr
    header = next(csv.reader(io.StringIO(ran.stdout)))
    warned = "stale" in ran.stderr.replace(str(tmp_path), "").lower()
    assert "stale" in header or warned, (ran.stdout, ran.stderr)


def test_hashes_given_beside_a_file_are_not_dropped(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    # `lookup HASH --file F`: look HASH up as well, or refuse the mix (exit
    # 2); answering "not listed" for a listed HASH is never right.
    listed = rng.randbytes(16).hex()
    held_set(home, NAME, [entry("md5", listed)])
    source = tmp_path / "hashes.txt"
    source.write_text(f"{rng.randbytes(16).hex()}\n", encoding="ascii")
    ran = run(home, "lookup", listed, "--file", source, "--json")
    assert ran.exit_code in (0, 2), (ran.exit_code, ran.stdout, ran.stderr)
    if ran.exit_code == 0:
        assert [hit["hash"] for hit in ran.json_lines()] == [listed]


# -- scan ---------------------------------------------------------------------------------


def test_scan_skips_unreadable_entries_and_keeps_going(
    home: Path, tmp_path: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    evidence = tmp_path / "evidence"
    first = write_random(evidence / "a-first.bin", rng, 500)
    vanishing = evidence / "b-vanishing.bin"
    write_random(vanishing, rng, 500)
    (evidence / "c-dangling").symlink_to(evidence / "nowhere")
    # A UNIX socket: open() fails with ENXIO, for root too.
    monkeypatch.chdir(evidence)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("d-socket")
    last = write_random(evidence / "e-last.bin", rng, 500)
    version = held_set(
        home,
        NAME,
        [entry("sha256", digest_of("sha256", first)), entry("sha256", digest_of("sha256", last))],
    )
    # A file that the walk found and that is gone before it is read.
    hash_file = matching.hash_file

    def deleting(path: Path, algorithms: Sequence[str]) -> matching.FileHashes:
        if path == vanishing:
            path.unlink()
        return hash_file(path, algorithms)

    monkeypatch.setattr(matching, "hash_file", deleting)

    ran = run(home, "scan", evidence, "--follow-symlinks")
    assert ran.exit_code == 0, ran.stderr
    assert hits(ran) == ordered(
        [
            scan_hit(evidence / "a-first.bin", "sha256", first, version.version, None),
            scan_hit(evidence / "e-last.bin", "sha256", last, version.version, None),
        ]
    )
    warnings = [line for line in ran.stderr.splitlines() if "warning" in line]
    for skipped in ("b-vanishing.bin", "c-dangling", "d-socket"):
        assert any(f"{evidence / skipped}: skipped" in line for line in warnings), ran.stderr
    assert len(warnings) == 3, ran.stderr


def run_bounded(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``hashex`` as a child process that is killed if it takes over SCAN_SECONDS."""
    try:
        return subprocess.run(
            [str(BIN / "hashex"), *map(str, args)],
            env=process_env(),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=SCAN_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hashex {' '.join(map(str, args))} still running after {exc.timeout} s")


def test_scan_skips_a_fifo_instead_of_waiting_for_a_writer(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    evidence = tmp_path / "evidence"
    data = write_random(evidence / "b-listed.bin", rng, 500)
    os.mkfifo(evidence / "a-fifo")
    held_set(home, NAME, [entry("md5", digest_of("md5", data))])
    ran = run_bounded("scan", evidence, "--home", home)
    assert ran.returncode == 0, ran.stderr
    assert [hit["path"] for hit in map(json.loads, ran.stdout.splitlines())] == [
        str(evidence / "b-listed.bin")
    ]
    assert f"{evidence / 'a-fifo'}: skipped" in ran.stderr


@pytest.fixture
def linked(tmp_path: Path, rng: random.Random) -> dict[str, bytes]:
    """evidence/ holding only symlinks to listed files elsewhere, and one unlisted file."""
    outside = tmp_path / "outside"
    files = {
        "file": write_random(outside / "listed.bin", rng, 700),
        "inner": write_random(outside / "dir" / "inner.bin", rng, 900),
    }
    evidence = tmp_path / "evidence"
    write_random(evidence / "plain.bin", rng, 300)
    (evidence / "link.bin").symlink_to(outside / "listed.bin")
    (evidence / "linkdir").symlink_to(outside / "dir", target_is_directory=True)
    return files


def test_symlinks_are_not_followed_unless_asked(
    home: Path, tmp_path: Path, linked: dict[str, bytes]
) -> None:
    version = held_set(home, NAME, [entry("sha1", digest_of("sha1", d)) for d in linked.values()])
    evidence = tmp_path / "evidence"

    default = run(home, "scan", evidence)
    assert (default.exit_code, default.stdout) == (1, ""), default.stderr
    root_link = run(home, "scan", evidence / "link.bin")
    assert (root_link.exit_code, root_link.stdout) == (1, "")
    assert "symbolic link not followed" in root_link.stderr

    followed = run(home, "scan", evidence, "--follow-symlinks")
    assert followed.exit_code == 0, followed.stderr
    assert hits(followed) == ordered(
        [
            scan_hit(evidence / "link.bin", "sha1", linked["file"], version.version, None),
            scan_hit(evidence / "linkdir" / "inner.bin", "sha1", linked["inner"], 1, None),
        ]
    )
    root_followed = run(home, "scan", evidence / "link.bin", "--follow-symlinks")
    assert root_followed.exit_code == 0
    assert [hit["path"] for hit in root_followed.json_lines()] == [str(evidence / "link.bin")]


def test_a_followed_symlink_loop_reports_each_file_once(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    # As `find -L`: a link back to a directory being walked is not descended into.
    evidence = tmp_path / "evidence"
    data = write_random(evidence / "listed.bin", rng, 400)
    (evidence / "sub").mkdir()
    (evidence / "sub" / "up").symlink_to(evidence, target_is_directory=True)
    held_set(home, NAME, [entry("md5", digest_of("md5", data))])
    ran = run_bounded("scan", evidence, "--follow-symlinks", "--home", home)
    assert ran.returncode == 0, ran.stderr
    paths = [hit["path"] for hit in map(json.loads, ran.stdout.splitlines())]
    assert paths == [str(evidence / "listed.bin")], f"{len(paths)} reports: {paths[:3]}..."


def test_empty_files_match_the_digests_of_empty_content(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "empty").write_bytes(b"")
    write_random(evidence / "full.bin", rng, 100)
    held_set(home, NAME, [entry("md5", digest_of("md5", b""), "cat-a"), random_line(rng, "md5")])
    ran = run(home, "scan", evidence)
    assert ran.exit_code == 0, ran.stderr
    assert ran.json_lines() == [scan_hit(evidence / "empty", "md5", b"", 1, "cat-a")]
    assert ran.json_lines()[0]["hash"] == "d41d8cd98f00b204e9800998ecf8427e"

    other = tmp_path / "other-home"
    held_set(other, NAME, [entry("sha256", digest_of("sha256", b""))])
    ran = run(other, "scan", evidence)
    assert ran.exit_code == 0, ran.stderr
    assert [(h["alg"], h["hash"]) for h in ran.json_lines()] == [
        ("sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    ]


def test_files_larger_than_the_read_chunk_hash_correctly(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    assert matching.READ_BYTES == 1 << 20
    chunk = matching.READ_BYTES
    sizes = {"big.bin": 3 * chunk + chunk // 2, "exact.bin": chunk, "over.bin": chunk + 1}
    evidence = tmp_path / "evidence"
    data = {name: write_random(evidence / name, rng, size) for name, size in sizes.items()}
    algorithms = matching.FILE_ALGORITHMS
    for name, content in data.items():
        result = matching.hash_file(evidence / name, algorithms)
        assert result.error is None
        assert result.digests == {alg: digest_of(alg, content) for alg in algorithms}

    big = data["big.bin"]
    held_set(
        home,
        NAME,
        [entry("md5", digest_of("md5", big), "cat-b"), entry("sha256", digest_of("sha256", big))],
    )
    ran = run(home, "scan", evidence)
    assert ran.exit_code == 0, ran.stderr
    assert hits(ran) == ordered(
        [
            scan_hit(evidence / "big.bin", "md5", big, 1, "cat-b"),
            scan_hit(evidence / "big.bin", "sha256", big, 1, None),
        ]
    )


@pytest.fixture
def hashing(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The algorithms each file was hashed with, as scan asked for them."""
    asked: list[tuple[str, ...]] = []
    hash_file: Callable[[Path, Sequence[str]], matching.FileHashes] = matching.hash_file

    def spy(path: Path, algorithms: Sequence[str]) -> matching.FileHashes:
        asked.append(tuple(algorithms))
        return hash_file(path, algorithms)

    monkeypatch.setattr(matching, "hash_file", spy)
    return asked


@pytest.mark.parametrize(
    ("held", "computed"),
    [
        (("sha256",), ("sha256",)),
        (("sha1", "md5"), ("md5", "sha1")),
        (("sha512", "pdq"), ("sha512",)),
        (("pdq",), ()),
    ],
)
def test_scan_computes_only_the_algorithms_held(
    home: Path,
    tmp_path: Path,
    rng: random.Random,
    hashing: list[tuple[str, ...]],
    held: tuple[str, ...],
    computed: tuple[str, ...],
) -> None:
    evidence = tmp_path / "evidence"
    contents = [write_random(evidence / f"f{n}.bin", rng, 200) for n in range(3)]
    listed = contents[0]
    lines = [random_line(rng, alg) for alg in held for _ in range(5)]
    lines += [entry(alg, digest_of(alg, listed)) for alg in held if alg != "pdq"]
    held_set(home, NAME, lines)
    ran = run(home, "scan", evidence)
    if computed:
        assert hashing == [computed] * len(contents)
        assert ran.exit_code == 0, ran.stderr
        assert sorted(hit["alg"] for hit in ran.json_lines()) == sorted(computed)
    else:
        assert hashing == []  # PDQ cannot be computed from a file's bytes
        assert (ran.exit_code, ran.stdout) == (1, "")


def test_scan_with_no_listed_file_exits_1(home: Path, tmp_path: Path, rng: random.Random) -> None:
    evidence = tmp_path / "evidence"
    for n in range(4):
        write_random(evidence / f"sub{n % 2}" / f"f{n}.bin", rng, 300)
    held_set(home, NAME, [random_line(rng, "md5") for _ in range(10)])
    ran = run(home, "scan", evidence)
    assert (ran.exit_code, ran.stdout) == (1, "")
    # A path that does not exist is bad input (2), never "nothing listed" (1),
    # even beside one that does: the investigator mistyped the evidence path.
    missing = run(home, "scan", evidence, tmp_path / "no-such-dir")
    assert (missing.exit_code, missing.stdout) == (2, "")
    assert f"{tmp_path / 'no-such-dir'}: no such file or directory" in missing.stderr


def test_scan_as_csv(home: Path, tmp_path: Path, rng: random.Random) -> None:
    evidence = tmp_path / "evidence"
    first = write_random(evidence / "a.bin", rng, 100)
    second = write_random(evidence / "b" / "c.bin", rng, 100)
    held_set(
        home,
        NAME,
        [entry("md5", digest_of("md5", first), "cat-a"), entry("md5", digest_of("md5", second))],
    )
    ran = run(home, "scan", evidence, "--format", "csv")
    assert ran.exit_code == 0, ran.stderr
    # The fields JSON lines carry, by name (a column may be added, none lost).
    fields = ["path", "alg", "hash", "set", "version", "label"]
    reader = csv.DictReader(io.StringIO(ran.stdout))
    assert reader.fieldnames is not None
    assert reader.fieldnames[: len(fields)] == fields
    rows = sorted([row[field] for field in fields] for row in reader)
    assert rows == sorted(
        [
            [str(evidence / "a.bin"), "md5", digest_of("md5", first), NAME, "1", "cat-a"],
            [str(evidence / "b" / "c.bin"), "md5", digest_of("md5", second), NAME, "1", ""],
        ]
    )


def test_walk_yields_regular_files_in_order(tmp_path: Path, rng: random.Random) -> None:
    for name in ("b/2", "a/1", "c", "a/0"):
        write_random(tmp_path / "t" / name, rng, 10)
    warnings: list[str] = []
    walked = list(matching.walk([tmp_path / "t"], follow_symlinks=False, warn=warnings.append))
    assert walked == [tmp_path / "t" / p for p in ("c", "a/0", "a/1", "b/2")]
    assert warnings == []


def test_hash_files_keeps_the_order_of_its_input(tmp_path: Path, rng: random.Random) -> None:
    paths = []
    for n in range(40):
        path = tmp_path / f"{n:02}.bin"
        write_random(path, rng, rng.randrange(0, 5000))
        paths.append(path)
    results = list(matching.hash_files(iter(paths), ["sha1"], workers=3))
    assert [r.path for r in results] == [str(p) for p in paths]
    assert all(
        r.digests["sha1"] == digest_of("sha1", p.read_bytes())
        for r, p in zip(results, paths, strict=True)
    )


# -- export ---------------------------------------------------------------------------------


def test_export_of_a_set_not_held_is_exit_2(home: Path, rng: random.Random) -> None:
    held_set(home, NAME, [random_line(rng, "md5")])
    for output in ("lines", "md5sum", "csv", "vics"):
        ran = run(home, "export", "unit/other", "--format", output)
        assert (ran.exit_code, ran.stdout) == (2, "")
        assert "not held" in ran.stderr


def test_exports_of_a_held_set(home: Path, rng: random.Random) -> None:
    algorithms = ("md5", "sha1", "sha256", "pdq")
    labels = (None, "cat-c", "vics-4", "Zeta.9")
    lines = [random_line(rng, alg, label) for alg in algorithms for label in labels]
    version = held_set(home, NAME, lines)
    exported = run(home, "export", NAME, "--format", "lines")
    assert exported.stdout.encode() == version.content
    assert hashlib.sha256(exported.stdout.encode()).hexdigest() == version.manifest.content_digest

    sha1 = run(home, "export", NAME, "--format", "md5sum", "--alg", "sha1")
    expected = []
    for line in version.lines:
        alg, digest, label = parts(line)
        if alg == "sha1":
            expected.append(f"{digest}  {NAME}" + (f":{label}" if label else ""))
    assert sha1.stdout.splitlines() == expected

    vics = json.loads(run(home, "export", NAME, "--format", "vics").stdout)
    by_hash = {(item["MD5"] or item["SHA1"]).lower(): item for item in vics["Media"]}
    for line in version.lines:
        alg, digest, label = parts(line)
        if alg not in ("md5", "sha1"):
            assert digest not in by_hash
            continue
        item = by_hash[digest]
        assert item["Category"] == VICS_CATEGORIES.get(label or "", 1)
        assert item["IsPrecategorized"] is (label in VICS_CATEGORIES)
    assert len(by_hash) == len(vics["Media"]) == 8


def test_scan_matches_across_its_lookup_batches(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    # Scan looks files up 1,000 at a time: listed files on both sides of
    # each boundary, and in the last, partial batch, are all reported.
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    listed_at = (0, 998, 999, 1000, 1999, 2000, 2049)
    contents = {}
    for n in range(2050):
        data = n.to_bytes(4, "big") + rng.randbytes(12)
        (evidence / f"{n:05}.bin").write_bytes(data)
        contents[n] = data
    held_set(home, NAME, [entry("sha1", digest_of("sha1", contents[n])) for n in listed_at])
    ran = run(home, "scan", evidence)
    assert ran.exit_code == 0, ran.stderr
    assert sorted(hit["path"] for hit in ran.json_lines()) == [
        str(evidence / f"{n:05}.bin") for n in listed_at
    ]


def test_scan_skips_what_is_not_a_regular_file(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    evidence = tmp_path / "evidence"
    data = write_random(evidence / "listed.bin", rng, 100)
    held_set(home, NAME, [entry("md5", digest_of("md5", data))])
    ran = run(home, "scan", "/dev/null", evidence)
    assert ran.exit_code == 0, ran.stderr
    assert [hit["path"] for hit in ran.json_lines()] == [str(evidence / "listed.bin")]
    assert "/dev/null: skipped (not a regular file)" in ran.stderr


def test_a_large_csv_export_is_every_row_once(home: Path, rng: random.Random) -> None:
    lines = [random_line(rng) for _ in range(3000)]  # well over one 64 KB write
    version = held_set(home, NAME, lines)
    ran = run(home, "export", NAME, "--format", "csv")
    assert ran.exit_code == 0, ran.stderr
    rows = list(csv.reader(io.StringIO(ran.stdout)))
    assert rows[0] == ["alg", "hash", "label", "set", "version"]
    assert rows[1:] == [
        [alg, digest, label or "", NAME, "1"] for alg, digest, label in map(parts, version.lines)
    ]
    assert len(ran.stdout) > 3 * (1 << 16)


BARE = ["ab" * 16, "CD" * 20, "Ef" * 32, "01" * 64]


@pytest.mark.parametrize(
    ("text", "whole"),
    [
        ("\n".join(BARE) + "\n", True),
        ("\n".join(BARE), True),
        ("\n".join(BARE[::-1] * 3) + "\n", True),
        ("\r\n".join(BARE) + "\r\n", False),
        (f"{BARE[0]}\n\n{BARE[1]}\n", False),
        (f" {BARE[0]}\n{BARE[1]}\n", False),
        (f"md5:{BARE[0]}\n{BARE[1]}\n", False),
        (f"{BARE[0]}\n{BARE[1]}\u00e9\n", False),
        ("", False),
    ],
)
def test_a_query_file_parses_as_a_whole_exactly_as_line_by_line(
    text: str, whole: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = parse_query_lines(text.splitlines(), "file") if "\u00e9" not in text else None
    if whole:
        # The whole-file path must conclude on plain bare hex, without the
        # line-by-line parser that a million-line file cannot afford.
        monkeypatch.setattr("client.matching.parse_query_lines", None)
    if expected is None:
        with pytest.raises(EntryInputError, match="line 2: "):
            parse_query_text(text, "file")
    else:
        assert parse_query_text(text, "file") == expected


def test_a_closed_stdout_ends_quietly_with_success(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    """``lookup --file big.txt | head -1``: the match was printed, so never exit 1."""
    lines = [random_line(rng, "md5") for _ in range(20_000)]
    held_set(home, NAME, lines)
    queries = tmp_path / "big.txt"
    queries.write_bytes(b"\n".join(line.split(b" ")[0] for line in lines) + b"\n")
    for verb in (["lookup", "--file", str(queries)], ["export", NAME]):
        script = (
            f"{BIN / 'hashex'} {' '.join(verb)} --home {home} | head -1; "
            'echo "exit=${PIPESTATUS[0]}" >&2'
        )
        ran = subprocess.run(
            ["bash", "-c", script],
            env=process_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert len(ran.stdout.splitlines()) == 1, ran
        assert ran.stderr.strip().splitlines() == ["exit=0"], ran.stderr


@pytest.mark.parametrize("output", ["md5sum", "vics"])
def test_an_export_that_would_be_empty_says_what_the_set_holds(
    home: Path, rng: random.Random, output: str
) -> None:
    held_set(home, NAME, sorted([random_line(rng, "sha256"), random_line(rng, "sha512")]))
    ran = run(home, "export", NAME, "--format", output)
    assert (ran.exit_code, ran.stdout) == (1, ""), ran
    wanted = "md5 or sha1" if output == "vics" else "md5"
    assert f"{NAME} holds no {wanted} entries" in ran.stderr
    assert "it holds: sha256, sha512" in ran.stderr
    exported = run(home, "export", NAME, "--format", "md5sum", "--alg", "sha256")
    assert exported.exit_code == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == 1


def test_lookup_on_a_terminal_says_each_query_once_listed_or_not(
    home: Path, rng: random.Random
) -> None:
    listed = random_line(rng, "md5", label=None)
    held_set(home, NAME, [listed + b" cat-a"])
    digest = listed.decode().split(":")[1]
    missing = rng.randbytes(16).hex()
    code, text = on_a_terminal("lookup", digest, missing, digest, "--home", home)
    assert code == 0, text
    assert text.splitlines() == [
        f"{digest}: md5 in {NAME} version 1 label cat-a",
        f"{missing}: not listed",
    ]
    # In a pipe the lines stay as tools read them: matches only.
    piped = run(home, "lookup", digest, missing)
    assert piped.stdout.splitlines() == [f"{digest}: md5:{digest} in {NAME} version 1 label cat-a"]
