"""``lookup`` reads hash lists as ``publish --from`` does: one line reader, the same forms.

``md5sum`` and ``sha256sum`` output (``<hex>  <file>``, ``<hex> *<file>``),
``alg:hex [label]`` and bare hex in any case, blank lines and ``#``
comments: ``lookup --file``, ``Hashex.lookup`` and ``publish --from`` take
the same lines and refuse the same ones, with the same line numbers and
messages.  A file published and then looked up finds every one of its
entries.  Bad command-line hashes are named ``argument N``; bad lines of a
file ``FILE: line N``.

The store is filled as a sync fills it (``tests.client.test_lookup_scan_export``).
Every hash and file is synthetic random bytes.
"""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.api import Hashex
from client.matching import parse_query_lines
from client.protocol.entries import ALGORITHMS, identity_of
from client.protocol.errors import EntryInputError, LineProblem
from client.protocol.normalise import ALGORITHM_BY_LENGTH, LINE_FORMS, normalise
from client.publish import Change, read_user_lines
from tests.client.simhub import hashex_process
from tests.client.test_lookup_scan_export import NAME, digest_of, held_set, run
from tests.environment import process_env, require_tool
from tests.synthetic import random_hex


@pytest.fixture
def rng() -> random.Random:
    return random.Random(6_060_013)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def query_lines(text: str) -> list[str]:
    """The lines of ``text`` that are hashes (not blank, not comments), stripped."""
    return [line.strip() for line in text.splitlines() if line.strip()[:1] not in ("", "#")]


def test_lookup_file_reads_md5sum_and_sha256sum_output(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    md5s = [random_hex(rng, 32) for _ in range(3)]
    sha256s = [random_hex(rng, 64) for _ in range(2)]
    version = held_set(
        home, NAME, sorted([f"md5:{md5s[0]} cat-a".encode(), f"sha256:{sha256s[0]}".encode()])
    )
    text = (
        "# md5sum evidence/*\r\n"
        f"{md5s[0]}  evidence/img-0001.jpg\r\n"
        f"{md5s[1].upper()} *evidence/IMG 0002.JPG\r\n"
        "\r\n"
        f"\\{md5s[2]}  evidence/new\\nline.bin\r\n"
        "# sha256sum -b evidence/*\r\n"
        f"{sha256s[0]} *evidence/a file with  two spaces.png\r\n"
        f"  {sha256s[1]}  evidence/b.png  \r\n"
    )
    source = tmp_path / "case.sums"
    source.write_bytes(text.encode("ascii"))

    ran = run(home, "lookup", "--file", source, "--json")
    assert ran.exit_code == 0, ran.stderr
    base = {"set": NAME, "version": version.version, "stale": False}
    assert ran.json_lines() == [
        {"query": f"{md5s[0]}  evidence/img-0001.jpg", "alg": "md5", "hash": md5s[0]}
        | {"label": "cat-a"}
        | base,
        {"query": f"{sha256s[0]} *evidence/a file with  two spaces.png", "alg": "sha256"}
        | {"hash": sha256s[0], "label": None}
        | base,
    ]
    # In a pipe, one line per match, each naming its line as asked.
    piped = run(home, "lookup", "--file", source)
    assert piped.stdout.splitlines() == [
        f"{md5s[0]}  evidence/img-0001.jpg: md5:{md5s[0]} in {NAME} version 1 label cat-a",
        f"{sha256s[0]} *evidence/a file with  two spaces.png: sha256:{sha256s[0]} in {NAME} "
        "version 1",
    ]
    unlisted = tmp_path / "unlisted.md5"
    unlisted.write_text(f"{md5s[1]}  x.jpg\n{md5s[2]} *y.jpg\n", encoding="ascii")
    assert run(home, "lookup", "--file", unlisted).exit_code == 1


@pytest.mark.tool
def test_lookup_file_reads_what_md5sum_and_sha256sum_print(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    (tmp_path / "evidence" / "sub dir").mkdir(parents=True)
    names = ["evidence/a.jpg", "evidence/b.png", "evidence/sub dir/c d.bin", "evidence/e.txt"]
    files = {name: rng.randbytes(rng.randrange(1, 5000)) for name in names}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    summed = b"".join(
        subprocess.run(
            [require_tool(tool), *flags, *names], cwd=tmp_path, capture_output=True, check=True
        ).stdout
        for tool, flags in (("md5sum", []), ("sha256sum", ["-b"]))
    )
    source = tmp_path / "case.sums"
    source.write_bytes(summed)
    md5 = digest_of("md5", files["evidence/a.jpg"])
    sha256 = digest_of("sha256", files["evidence/sub dir/c d.bin"])
    held_set(home, NAME, sorted([f"md5:{md5}".encode(), f"sha256:{sha256}".encode()]))

    # The installed command, as an investigator runs it on the tools' output.
    ran = hashex_process("lookup", "--file", source, "--json", "--home", home, env=process_env())
    assert ran.exit_code == 0, ran.stderr
    assert sorted((hit["alg"], hit["hash"], hit["query"]) for hit in ran.json_lines()) == [
        ("md5", md5, f"{md5}  evidence/a.jpg"),
        ("sha256", sha256, f"{sha256} *evidence/sub dir/c d.bin"),
    ]


def mixed_list(rng: random.Random) -> str:
    """A hash list in every form ``publish --from`` takes, with CRLF, blanks and comments."""
    lines = ["# exported 2024-01-01", ""]
    for alg in ("md5", "sha1", "sha256", "sha512"):
        lines += [
            f"{random_hex(rng, ALGORITHMS[alg])}  evidence/{alg}-text.bin",
            f"{random_hex(rng, ALGORITHMS[alg]).upper()} *evidence/{alg} binary.bin",
            random_hex(rng, ALGORITHMS[alg]),
            f"  {random_hex(rng, ALGORITHMS[alg]).upper()}\t",
            f"{alg.upper()}:{random_hex(rng, ALGORITHMS[alg]).upper()} cat-b",
        ]
    digest = random_hex(rng, 64)
    lines += [f"pdq:{digest} vics-2", "   # indented comment", f"PDQ:{digest.upper()} vics-2"]
    lines.append(lines[2])  # a duplicate line
    rng.shuffle(lines)
    return "\r\n".join(lines) + "\r\n"


def test_a_file_publish_takes_is_found_whole_by_lookup(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    text = mixed_list(rng)
    source = tmp_path / "list.txt"
    source.write_bytes(text.encode("ascii"))
    # What publish --from would sign, read by publish's own reader.
    published = read_user_lines(source, Change(content=source))
    identities = {identity_of(line).decode() for line in published}
    assert len(identities) == 21
    held_set(home, NAME, published)

    ran = run(home, "lookup", "--file", source, "--json")
    assert ran.exit_code == 0, ran.stderr
    found = ran.json_lines()
    assert {f"{hit['alg']}:{hit['hash']}" for hit in found} == identities
    # Every hash line was asked, and each answered, by what publish made of it.
    assert {hit["query"] for hit in found} == set(query_lines(text))
    # The Python API reads the same file the same way.
    with Hashex(home=home) as hx, source.open(encoding="ascii", newline="") as lines:
        assert sorted(hit.to_json().items() for hit in hx.lookup(lines)) == sorted(
            hit.items() for hit in found
        )


# A line as users' files hold them: good in each form, or wrong in one way.
_HEXES = st.sampled_from([32, 40, 64, 128, 31, 48]).flatmap(
    lambda n: st.text("0123456789abcdefABCDEF", min_size=n, max_size=n)
)
_LINES = st.one_of(
    st.tuples(_HEXES, st.sampled_from(["  ", " *", " "]), st.sampled_from(["f.jpg", "a b"])).map(
        "".join
    ),
    st.tuples(
        st.sampled_from(["md5", "SHA1", "sha256", "Sha512", "pdq", "sha3", ""]),
        _HEXES,
        st.sampled_from(["", " cat-a", "  vics-1", " bad/label", " caté", " a b"]),
    ).map(lambda parts: f"{parts[0]}:{parts[1]}{parts[2]}"),
    _HEXES,
    st.sampled_from(["", "   ", "# comment", "  #x", "zz", "é", "0x12", "\\", "-"]),
)


@given(
    st.lists(st.tuples(_LINES, st.sampled_from(["", " ", "\t", "\r"])), max_size=12),
)
def test_publish_and_lookup_read_every_line_alike(items: list[tuple[str, str]]) -> None:
    # Each line's hash is made unique by its number: two labels for one
    # identity (which publish refuses and lookup needs not) never arise.
    lines = []
    for number, (line, pad) in enumerate(items):
        hashed = re.match(r"([^ :]*:)?([0-9a-fA-F]{2})", line)
        if hashed is not None:
            line = f"{line[: hashed.start(2)]}{number:02x}{line[hashed.end(2) :]}"
        lines.append(f"{pad}{line}{pad}\n")
    try:
        published = normalise(lines, source="list")
        refused: list[LineProblem] = []
    except EntryInputError as exc:
        published, refused = [], exc.problems
    try:
        queries = parse_query_lines(lines, "list")
        problems: list[LineProblem] = []
    except EntryInputError as exc:
        problems = exc.problems
    assert [p.line for p in problems] == [p.line for p in refused]
    for ours, theirs in zip(problems, refused, strict=True):
        # A bare hex of no known length: publish suggests --alg, lookup has none.
        if ours.message.startswith("no algorithm has"):
            length = ours.message.split()[3].split("-")[0]
            assert theirs.message.startswith(f"cannot tell the algorithm of a {length}-character")
        else:
            assert ours.message == theirs.message
    if not refused:
        keys = {
            key if ":" in key else f"{ALGORITHM_BY_LENGTH[len(key)]}:{key}" for key in queries.keys
        }
        assert keys == {identity_of(line).decode() for line in published}
        assert queries.texts == query_lines("".join(lines))


def test_api_lookup_reads_an_md5sum_file(home: Path, tmp_path: Path, rng: random.Random) -> None:
    listed, unlisted = random_hex(rng, 32), random_hex(rng, 32)
    held_set(home, NAME, [f"md5:{listed} cat-a".encode()])
    case = tmp_path / "case-1234.md5"
    case.write_text(f"{unlisted}  evidence/1.jpg\n{listed} *evidence/2.jpg\n", encoding="ascii")
    with Hashex(home=home) as hx, case.open(encoding="ascii") as hashes:
        (hit,) = hx.lookup(line.strip() for line in hashes)
        assert (hit.query, hit.alg, hit.hash, hit.label) == (
            f"{listed} *evidence/2.jpg",
            "md5",
            listed,
            "cat-a",
        )
        with pytest.raises(EntryInputError) as bad:
            hx.lookup([f"{listed}  ok.jpg", f"{listed} one-space.jpg", "", f"md5:{listed[:-1]}"])
    assert [str(p) for p in bad.value.problems] == [
        f"line 2: {LINE_FORMS}",
        "line 4: md5 hash has 31 hex characters, expected 32",
    ]
    assert str(bad.value).startswith("2 bad line(s) in hashes:\n  hashes: line 2: expected")


def test_bad_arguments_are_numbered_as_arguments_and_bad_lines_as_lines(
    home: Path, tmp_path: Path, rng: random.Random
) -> None:
    md5 = random_hex(rng, 32)
    held_set(home, NAME, [f"md5:{md5}".encode()])
    ran = run(home, "lookup", md5, "zz", "--json", f"sha1:{md5}", md5.upper())
    assert (ran.exit_code, ran.stdout) == (2, "")
    assert ran.stderr == (
        "hashex: 2 bad argument(s):\n"
        f"  argument 2: hash 'zz' is not hex; {LINE_FORMS}\n"
        "  argument 3: sha1 hash has 32 hex characters, expected 40\n"
    )
    source = tmp_path / "hashes.txt"
    source.write_text(f"# case 12\n{md5}\n{md5} file.jpg\n\nabc\n", encoding="ascii")
    ran = run(home, "lookup", md5, "--file", source)
    assert (ran.exit_code, ran.stdout) == (2, "")
    assert ran.stderr == (
        f"hashex: 2 bad line(s) in {source}:\n"
        f"  {source}: line 3: {LINE_FORMS}\n"
        f"  {source}: line 5: no algorithm has 3-character hashes; "
        "expected alg:hex, or bare hex of 32, 40, 64, 128 characters\n"
    )
    # publish --from refuses the same lines, by the same numbers.
    with pytest.raises(EntryInputError) as refused:
        read_user_lines(source, Change(content=source))
    assert [p.line for p in refused.value.problems] == [3, 5]
    assert str(refused.value.problems[0]) == f"line 3: {LINE_FORMS}"
