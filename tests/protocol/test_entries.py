"""Wire entries, contents and deltas: every malformed shape is refused, with its line number."""

from __future__ import annotations

import hashlib
import io
import random
import re
import tracemalloc
from collections.abc import Iterator

import pytest

from client.protocol.entries import (
    MAX_WIRE_LINE,
    ContentDigest,
    DeltaDigest,
    Entry,
    apply_delta,
    content_digest,
    encode_lines,
    parse_entry,
    read_lines,
    sha256_stream,
)
from client.protocol.errors import DeltaApplyError, EntryFormatError, SizeLimitError
from tests.protocol.factories import delta_between
from tests.synthetic import UNSEEDED, random_hex, random_line

_re = re.escape

MD5 = random_hex(UNSEEDED, 32)
SHA256 = random_hex(UNSEEDED, 64)

# (case id, bad line, substring naming the cause)
BAD_ENTRIES = [
    ("unknown-algorithm", f"sha3:{SHA256}", "unknown algorithm 'sha3'"),
    ("algorithm-uppercase", f"SHA256:{SHA256}", "unknown algorithm 'SHA256'"),
    ("no-algorithm", SHA256, "expected '<alg>:<lowercase hex>[ <label>]'"),
    ("uppercase-hex", f"sha256:{SHA256.upper()}", "hex must be lowercase"),
    ("mixed-case-hex", f"md5:{MD5[:16]}{MD5[16:].upper()}A", "hex must be lowercase"),
    ("too-short", f"sha256:{SHA256[:-1]}", "sha256 hash has 63 hex characters, expected 64"),
    ("too-long", f"md5:{MD5}0", "md5 hash has 33 hex characters, expected 32"),
    ("md5-length-for-sha1", f"sha1:{MD5}", "sha1 hash has 32 hex characters, expected 40"),
    ("non-hex", f"md5:{MD5[:-1]}g", "hash is not hex"),
    ("empty-hash", "md5:", "hash is not hex"),
    ("label-too-long", f"md5:{MD5} {'a' * 65}", "label must be 1-64 characters"),
    ("label-bad-char", f"md5:{MD5} cat/a", "label must be 1-64 characters"),
    ("label-with-space", f"md5:{MD5} cat a", "label must be 1-64 characters"),
    ("two-spaces-before-label", f"md5:{MD5}  cat-a", "label must be 1-64 characters"),
    ("trailing-space", f"md5:{MD5} ", "trailing whitespace"),
    ("trailing-space-after-label", f"md5:{MD5} cat-a ", "trailing whitespace"),
    ("trailing-tab", f"md5:{MD5}\t", "trailing whitespace"),
    ("crlf", f"md5:{MD5}\r", "line ends with CR; lines must end with LF only"),
    ("empty-line", "", "empty line"),
]


@pytest.mark.parametrize(
    ("line", "cause"), [c[1:] for c in BAD_ENTRIES], ids=[c[0] for c in BAD_ENTRIES]
)
def test_bad_entry_is_refused_with_its_cause_and_line_number(line: str, cause: str) -> None:
    # Two good lines that sort before anything else, then the bad one on line 3.
    good = [b"md5:" + b"0" * 32, b"md5:" + b"0" * 31 + b"1"]
    data = b"".join(encode_lines([*good, line.encode()]))
    digest = ContentDigest()
    with pytest.raises(EntryFormatError, match=f"^line 3: {_re(cause)}") as info:
        _feed(digest, data)
    assert info.value.line == 3
    assert digest.count == 2


def _feed(digest: ContentDigest, data: bytes) -> None:
    for raw in read_lines(io.BytesIO(data)):
        digest.add(raw)


def test_longest_valid_label_is_accepted() -> None:
    entry = parse_entry(f"sha512:{random_hex(UNSEEDED, 128)} {'Z' * 64}".encode(), 1)
    assert entry.label == "Z" * 64
    assert entry.alg == "sha512"


@pytest.mark.parametrize("alg", ["md5", "sha1", "sha256", "sha512", "pdq"])
def test_every_algorithm_parses_with_and_without_label(alg: str) -> None:
    bare = random_line(UNSEEDED, alg, None)
    labelled = bare + b" vics-1"
    assert parse_entry(bare, 1) == Entry(alg, bare.split(b":")[1].decode())
    assert parse_entry(labelled, 1).label == "vics-1"
    assert parse_entry(labelled, 1).line() == labelled


def test_non_ascii_entry_is_refused() -> None:
    with pytest.raises(EntryFormatError, match=r"^line 7: "):
        parse_entry(f"md5:{MD5} caté".encode(), 7)


# --- read_lines: framing ---------------------------------------------------


def test_missing_final_lf_is_refused_with_line_number() -> None:
    data = random_line(UNSEEDED, "sha256", None) + b"\n" + random_line(UNSEEDED, "sha256", None)
    with pytest.raises(EntryFormatError, match=r"^line 2: last line does not end with LF"):
        list(read_lines(io.BytesIO(data)))


def test_overlong_line_is_refused_with_line_number() -> None:
    data = random_line(UNSEEDED, "sha256", None) + b"\n" + b"a" * (MAX_WIRE_LINE + 1) + b"\n"
    with pytest.raises(EntryFormatError, match=f"^line 2: line longer than {MAX_WIRE_LINE} bytes"):
        list(read_lines(io.BytesIO(data)))


def test_overlong_line_without_lf_is_refused_before_it_is_buffered_whole() -> None:
    """An endless line is refused after a bounded read, not at the end of the stream."""
    served = 0

    def endless() -> Iterator[bytes]:
        nonlocal served
        yield random_line(UNSEEDED, "sha256", None) + b"\n"
        while True:
            served += 100
            yield b"a" * 100

    with pytest.raises(EntryFormatError, match=f"^line 2: line longer than {MAX_WIRE_LINE}"):
        list(read_lines(endless()))
    assert served <= MAX_WIRE_LINE + 100


def test_read_lines_splits_across_chunk_boundaries() -> None:
    lines = sorted(
        random_line(UNSEEDED, alg, None) for alg in ["md5", "sha1", "sha256", "sha512", "pdq"]
    )
    data = b"".join(encode_lines(lines))
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    assert list(read_lines(chunks)) == lines
    assert list(read_lines(io.BytesIO(data))) == lines
    assert list(read_lines(io.BytesIO(b""))) == []


def test_sha256_stream_refuses_more_than_the_limit() -> None:
    data = b"x" * 100
    assert sha256_stream(io.BytesIO(data), limit=100)[1] == 100
    with pytest.raises(SizeLimitError, match="stream longer than the 99 bytes expected"):
        sha256_stream(io.BytesIO(data), limit=99)


# --- content ----------------------------------------------------------------


def _content(lines: list[bytes]) -> None:
    digest = ContentDigest()
    for line in lines:
        digest.add(line)


def test_unsorted_content_is_refused() -> None:
    a, b = sorted([random_line(UNSEEDED, "sha256", None), random_line(UNSEEDED, "sha256", None)])
    with pytest.raises(
        EntryFormatError, match=r"^line 2: content lines are not in strictly increasing"
    ):
        _content([b, a])


def test_unsorted_content_across_algorithms_is_refused() -> None:
    # "sha256:" sorts after "md5:" bytewise.
    with pytest.raises(EntryFormatError, match=r"^line 2: content lines are not in strictly"):
        _content([random_line(UNSEEDED, "sha256", None), random_line(UNSEEDED, "md5", None)])


def test_duplicate_content_line_is_refused() -> None:
    line = random_line(UNSEEDED, "sha256", "cat-a")
    with pytest.raises(
        EntryFormatError, match=r"^line 2: content lines are not in strictly increasing"
    ):
        _content([line, line])


@pytest.mark.parametrize(("first", "second"), [(None, "cat-a"), ("cat-a", "cat-b"), ("A", "a")])
def test_same_identity_twice_with_different_labels_is_refused(
    first: str | None, second: str
) -> None:
    identity = f"sha1:{random_hex(UNSEEDED, 40)}"
    lines = sorted(
        [
            (identity if first is None else f"{identity} {first}").encode(),
            f"{identity} {second}".encode(),
        ]
    )
    with pytest.raises(EntryFormatError, match=f"^line 2: identity {identity} appears twice"):
        _content(lines)


def test_content_digest_counts_and_hashes_the_lf_terminated_bytes() -> None:
    lines = sorted(
        random_line(UNSEEDED, alg, None) for alg in ["md5", "sha1", "sha256", "sha512", "pdq"] * 3
    )
    digest, count = content_digest(lines)
    assert count == 15
    assert digest == hashlib.sha256(b"".join(line + b"\n" for line in lines)).hexdigest()
    assert content_digest([]) == (hashlib.sha256(b"").hexdigest(), 0)


# --- delta ------------------------------------------------------------------


def _delta(lines: list[bytes]) -> DeltaDigest:
    digest = DeltaDigest()
    for line in lines:
        digest.add(line)
    return digest


@pytest.mark.parametrize("sign", [b"*", b" ", b"", b"=", b"\xe2"])
def test_bad_delta_sign_is_refused(sign: bytes) -> None:
    with pytest.raises(EntryFormatError, match=r"^line 2: delta line must start with '\+' or '-'"):
        _delta(
            [
                b"+" + random_line(UNSEEDED, "sha256", None),
                sign + random_line(UNSEEDED, "sha256", None),
            ]
        )


def test_bad_entry_inside_delta_names_its_line() -> None:
    with pytest.raises(EntryFormatError, match=r"^line 2: hex must be lowercase"):
        _delta([b"+md5:" + b"0" * 32, b"+md5:" + MD5.upper().encode()])


def test_removes_before_adds_is_unsorted() -> None:
    with pytest.raises(
        EntryFormatError, match=r"^line 2: delta lines are not in strictly increasing"
    ):
        _delta(
            [
                b"-" + random_line(UNSEEDED, "sha256", None),
                b"+" + random_line(UNSEEDED, "sha256", None),
            ]
        )


def test_unsorted_adds_are_refused() -> None:
    a, b = sorted([random_line(UNSEEDED, "sha256", None), random_line(UNSEEDED, "sha256", None)])
    with pytest.raises(
        EntryFormatError, match=r"^line 2: delta lines are not in strictly increasing"
    ):
        _delta([b"+" + b, b"+" + a])


def test_duplicate_delta_line_is_refused() -> None:
    line = b"-" + random_line(UNSEEDED, "sha256", None)
    with pytest.raises(
        EntryFormatError, match=r"^line 2: delta lines are not in strictly increasing"
    ):
        _delta([line, line])


@pytest.mark.parametrize(("sign", "verb"), [(b"+", "added"), (b"-", "removed")])
def test_identity_changed_twice_is_refused(sign: bytes, verb: str) -> None:
    identity = f"pdq:{random_hex(UNSEEDED, 64)}"
    lines = sorted([f"{identity} cat-a".encode(), f"{identity} cat-b".encode()])
    with pytest.raises(EntryFormatError, match=f"^line 2: identity {identity} {verb} twice"):
        _delta([sign + line for line in lines])


def test_identity_without_and_with_label_added_twice_is_refused() -> None:
    identity = f"md5:{random_hex(UNSEEDED, 32)}"
    with pytest.raises(EntryFormatError, match=f"^line 2: identity {identity} added twice"):
        _delta([f"+{identity}".encode(), f"+{identity} cat-a".encode()])


def test_relabel_delta_is_accepted_and_counted() -> None:
    identity = f"md5:{random_hex(UNSEEDED, 32)}"
    digest = _delta(sorted([f"+{identity} cat-b".encode(), f"-{identity} cat-a".encode()]))
    assert (digest.adds, digest.removes) == (1, 1)


# --- apply_delta ------------------------------------------------------------


def _apply(content: list[bytes], delta: list[bytes]) -> list[bytes]:
    _delta(sorted(delta))  # the delta itself is valid; only applying it may fail
    return list(apply_delta(sorted(content), sorted(delta)))


def test_apply_removing_an_absent_line_is_refused() -> None:
    content = [random_line(UNSEEDED, "sha256", None)]
    absent = random_line(UNSEEDED, "sha256", None)
    with pytest.raises(DeltaApplyError, match="which is not in the set") as info:
        _apply(content, [b"-" + absent])
    assert absent.decode() in str(info.value)


def test_apply_removing_from_empty_content_is_refused() -> None:
    with pytest.raises(DeltaApplyError, match="which is not in the set"):
        _apply([], [b"-" + random_line(UNSEEDED, "sha256", None)])


@pytest.mark.parametrize(
    ("held", "removed"), [("cat-a", "cat-b"), ("cat-a", None), (None, "cat-a")]
)
def test_apply_removing_with_a_different_label_is_refused(
    held: str | None, removed: str | None
) -> None:
    identity = f"sha256:{random_hex(UNSEEDED, 64)}"
    held_line = identity if held is None else f"{identity} {held}"
    removed_line = identity if removed is None else f"{identity} {removed}"
    content = sorted(
        [
            held_line.encode(),
            random_line(UNSEEDED, "sha256", None),
            random_line(UNSEEDED, "sha256", None),
        ]
    )
    with pytest.raises(
        DeltaApplyError, match=f"removes '{_re(removed_line)}', which is not in the set"
    ):
        _apply(content, [f"-{removed_line}".encode()])


@pytest.mark.parametrize(
    ("held", "added"), [("cat-a", "cat-b"), ("cat-a", "cat-a"), (None, "x"), ("x", None)]
)
def test_apply_adding_a_present_identity_is_refused(held: str | None, added: str | None) -> None:
    identity = f"sha1:{random_hex(UNSEEDED, 40)}"
    held_line = identity if held is None else f"{identity} {held}"
    added_line = identity if added is None else f"{identity} {added}"
    content = sorted(
        [
            held_line.encode(),
            random_line(UNSEEDED, "sha1", None),
            random_line(UNSEEDED, "sha1", None),
        ]
    )
    with pytest.raises(DeltaApplyError, match=f"adds {identity}, which is already in the set"):
        _apply(content, [f"+{added_line}".encode()])


def test_apply_relabel_in_one_delta_works() -> None:
    identity = f"md5:{random_hex(UNSEEDED, 32)}"
    others = sorted(random_line(UNSEEDED, "md5", None) for _ in range(4))
    content = sorted([*others, f"{identity} cat-a".encode()])
    new = _apply(content, [f"-{identity} cat-a".encode(), f"+{identity} cat-b".encode()])
    assert new == sorted([*others, f"{identity} cat-b".encode()])


@pytest.mark.parametrize("label", [None, "cat-a"])
def test_apply_removing_and_adding_the_same_line_is_refused(label: str | None) -> None:
    """A no-op pair changes nothing, so it cannot be part of a canonical delta."""
    line = random_line(UNSEEDED, "sha512", label)
    content = sorted([line, random_line(UNSEEDED, "sha512", None)])
    with pytest.raises(
        DeltaApplyError, match=f"removes and adds the same line '{_re(line.decode())}'"
    ):
        _apply(content, [b"-" + line, b"+" + line])


def test_apply_adds_and_removes_keep_order() -> None:
    content = sorted(
        random_line(UNSEEDED, alg, None) for alg in ["md5", "sha1", "sha256", "sha512", "pdq"] * 4
    )
    removed = content[::3]
    added = [random_line(UNSEEDED, alg, None) for alg in ["sha512", "md5", "pdq"]]
    new = _apply(content, [b"-" + r for r in removed] + [b"+" + a for a in added])
    assert new == sorted((set(content) - set(removed)) | set(added))


def test_diff_then_apply_gives_the_new_content() -> None:
    rng = random.Random(7)
    universe = [
        random_line(UNSEEDED, alg, None) for alg in ["md5", "sha1", "sha256", "sha512", "pdq"] * 20
    ]
    old = sorted(rng.sample(universe, 40))
    new_set = set(rng.sample(universe, 40))
    # Relabel one identity that stays.
    kept = next(line for line in old if line in new_set)
    new_set.discard(kept)
    new_set.add(kept + b" relabelled")
    new = sorted(new_set)
    delta = delta_between(old, new)
    assert _apply(old, delta) == new


# --- memory -----------------------------------------------------------------

FLAT_LINES = 300_000


def _synthetic_sorted_lines(n: int) -> Iterator[bytes]:
    """Sorted, unique, random-looking sha256 lines, generated lazily."""
    rng = random.Random()
    value, step = rng.getrandbits(200), rng.getrandbits(40) + 1
    for _ in range(n):
        yield b"sha256:%064x" % value
        value += step


def _stream(lines: Iterator[bytes]) -> Iterator[bytes]:
    batch: list[bytes] = []
    for line in lines:
        batch.append(line + b"\n")
        if len(batch) == 1000:
            yield b"".join(batch)
            batch = []
    yield b"".join(batch)


def test_content_digest_memory_stays_flat() -> None:
    """300k lines (~22 MB of content) are checked and hashed in well under 5 MB."""
    tracemalloc.start()
    try:
        digest = ContentDigest()
        for line in read_lines(_stream(_synthetic_sorted_lines(FLAT_LINES))):
            digest.add(line)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.count == FLAT_LINES
    assert peak < 5 * 1024 * 1024, f"peak {peak} bytes"
