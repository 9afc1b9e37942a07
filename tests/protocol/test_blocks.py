"""The block-wise checkers give exactly the per-line checkers' verdict, error and line number.

The fast path in ``client.protocol.blocks`` may only speed things up: these
tests feed valid and subtly broken contents and deltas, cut into blocks of
every size, to both and demand the same outcome.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.protocol.blocks import ContentChecker, DeltaChecker, read_blocks
from client.protocol.entries import MAX_WIRE_LINE, ContentDigest, DeltaDigest, Entry, read_lines
from client.protocol.errors import EntryFormatError
from tests.protocol.strategies import entries, unique_entries

SHA = "sha256:" + "ab" * 32


def _mutations() -> st.SearchStrategy[Callable[[list[bytes], int], list[bytes]]]:
    """Ways to break (or, sometimes, keep valid) a list of lines at an index."""

    def swap(lines: list[bytes], i: int) -> list[bytes]:
        if i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        return lines

    def duplicate(lines: list[bytes], i: int) -> list[bytes]:
        return [*lines[: i + 1], lines[i], *lines[i + 1 :]]

    def relabel_twice(lines: list[bytes], i: int) -> list[bytes]:
        identity = lines[i].split(b" ")[0]
        return [*lines[:i], identity + b" a", identity + b" b", *lines[i + 1 :]]

    def unlabel_then_label(lines: list[bytes], i: int) -> list[bytes]:
        identity = lines[i].split(b" ")[0]
        return [*lines[:i], identity, identity + b" x", *lines[i + 1 :]]

    def upper(lines: list[bytes], i: int) -> list[bytes]:
        lines[i] = lines[i].upper()
        return lines

    def truncate(lines: list[bytes], i: int) -> list[bytes]:
        lines[i] = lines[i][:-1]
        return lines

    def trailing_space(lines: list[bytes], i: int) -> list[bytes]:
        lines[i] = lines[i] + b" "
        return lines

    def bad_label(lines: list[bytes], i: int) -> list[bytes]:
        lines[i] = lines[i].split(b" ")[0] + b" bad/label"
        return lines

    def drop(lines: list[bytes], i: int) -> list[bytes]:
        return [*lines[:i], *lines[i + 1 :]]

    def keep(lines: list[bytes], i: int) -> list[bytes]:
        return lines

    def prefix_inside(lines: list[bytes], i: int) -> list[bytes]:
        # Same length, a second "<alg>:" where hex should be.
        cut = lines[i].index(b":") + 1
        lines[i] = lines[i][:cut] + lines[i][:cut] + lines[i][2 * cut :]
        return lines

    def non_hex(lines: list[bytes], i: int) -> list[bytes]:
        lines[i] = lines[i][:-1] + b"g"
        return lines

    def upper_hex(lines: list[bytes], i: int) -> list[bytes]:
        lines[i] = lines[i][:-1] + lines[i][-1:].upper()
        return lines

    return st.sampled_from(
        [
            swap,
            duplicate,
            relabel_twice,
            unlabel_then_label,
            upper,
            truncate,
            trailing_space,
            bad_label,
            drop,
            keep,
        ]
    )


def _verdict(check: Callable[[], object]) -> tuple[int, str] | None:
    try:
        check()
    except EntryFormatError as exc:
        return exc.line, str(exc)
    return None


def _blocks(lines: list[bytes], size: int) -> list[list[bytes]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def _per_line_content(lines: list[bytes]) -> None:
    digest = ContentDigest()
    for line in lines:
        digest.add(line)


def _blockwise_content(lines: list[bytes], size: int) -> None:
    checker = ContentChecker()
    for block in _blocks(lines, size):
        checker.check(block)


def _per_line_delta(lines: list[bytes]) -> None:
    digest = DeltaDigest()
    for line in lines:
        digest.add(line)


def _blockwise_delta(lines: list[bytes], size: int) -> tuple[int, int]:
    checker = DeltaChecker()
    for block in _blocks(lines, size):
        checker.check(block)
    return checker.adds, checker.removes


one_alg_contents = st.sampled_from(["md5", "sha1", "sha256"]).flatmap(
    lambda alg: st.lists(
        st.one_of(entries(alg), entries(alg).map(lambda e: Entry(e.alg, e.hex))),
        min_size=1,
        max_size=60,
        unique_by=lambda e: e.identity,
    )
)
unlabelled_contents = st.sampled_from(["md5", "sha1", "pdq"]).flatmap(
    lambda alg: st.lists(
        entries(alg).map(lambda e: Entry(e.alg, e.hex)),
        min_size=1,
        max_size=60,
        unique_by=lambda e: e.identity,
    )
)


@given(
    contents=st.one_of(
        one_alg_contents, unlabelled_contents, unique_entries(min_size=1, max_size=60)
    ),
    mutate=_mutations(),
    where=st.integers(min_value=0, max_value=10**6),
    size=st.integers(min_value=1, max_value=70),
)
def test_content_blocks_agree_with_the_per_line_check(
    contents: list[Entry],
    mutate: Callable[[list[bytes], int], list[bytes]],
    where: int,
    size: int,
) -> None:
    lines = mutate(sorted(e.line() for e in contents), where % len(contents))
    expected = _verdict(lambda: _per_line_content(lines))
    assert _verdict(lambda: _blockwise_content(lines, size)) == expected


@given(
    adds=st.one_of(one_alg_contents, unlabelled_contents),
    removes=st.one_of(one_alg_contents, unlabelled_contents),
    mutate=_mutations(),
    where=st.integers(min_value=0, max_value=10**6),
    size=st.integers(min_value=1, max_value=140),
    shape=st.sampled_from(["both", "adds", "removes"]),
)
def test_delta_blocks_agree_with_the_per_line_check(
    adds: list[Entry],
    removes: list[Entry],
    mutate: Callable[[list[bytes], int], list[bytes]],
    where: int,
    size: int,
    shape: str,
) -> None:
    plus = sorted(b"+" + e.line() for e in adds) if shape != "removes" else []
    minus = sorted(b"-" + e.line() for e in removes) if shape != "adds" else []
    lines = mutate(plus + minus, where % len(plus + minus))
    expected = _verdict(lambda: _per_line_delta(lines))
    assert _verdict(lambda: _blockwise_delta(lines, size)) == expected
    if expected is None:
        assert _blockwise_delta(lines, size) == (
            sum(line[:1] == b"+" for line in lines),
            sum(line[:1] == b"-" for line in lines),
        )


def test_delta_check_returns_where_the_removes_start() -> None:
    checker = DeltaChecker()
    block = [b"+md5:" + b"1" * 32, b"+md5:" + b"2" * 32, b"-md5:" + b"0" * 32]
    assert checker.check(block) == 2
    assert checker.check([b"-md5:" + b"3" * 32]) == 0
    assert (checker.adds, checker.removes) == (2, 2)


def test_remove_then_add_across_blocks_is_refused_with_its_line() -> None:
    checker = DeltaChecker()
    checker.check([b"-md5:" + b"1" * 32])
    with pytest.raises(EntryFormatError, match="line 2: delta lines are not in strictly"):
        checker.check([b"+md5:" + b"2" * 32])


def test_content_checker_hashes_only_when_asked() -> None:
    lines = [f"{SHA} a".encode()]
    hashing = ContentChecker(hashing=True)
    hashing.check(lines)
    digest = ContentDigest()
    digest.add(lines[0])
    assert hashing.hexdigest() == digest.hexdigest()
    with pytest.raises(RuntimeError):
        ContentChecker().hexdigest()


@given(
    lines=st.lists(
        st.binary(min_size=0, max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=50
    ),
    size=st.integers(min_value=1, max_value=20),
)
def test_read_blocks_gives_every_line_in_blocks_of_size(lines: list[bytes], size: int) -> None:
    stream = io.BytesIO(b"".join(line + b"\n" for line in lines))
    blocks = list(read_blocks(stream, size=size))
    assert [line for block in blocks for line in block] == lines
    assert all(len(block) == size for block in blocks[:-1])


def test_read_blocks_refuses_a_missing_final_lf_with_its_line() -> None:
    with pytest.raises(EntryFormatError, match="line 3: last line does not end with LF"):
        list(read_blocks(io.BytesIO(b"a\nb\nc")))


def test_read_blocks_refuses_an_overlong_line_with_its_line() -> None:
    data = b"a\n" + b"x" * (MAX_WIRE_LINE + 1) + b"\nb\n"
    with pytest.raises(EntryFormatError, match=f"line 2: line longer than {MAX_WIRE_LINE}"):
        list(read_blocks(io.BytesIO(data)))


def test_read_blocks_refuses_an_endless_line_before_holding_it() -> None:
    class Endless(io.RawIOBase):
        reads = 0

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            self.reads += 1
            buffer[:] = b"x" * len(buffer)
            return len(buffer)

    endless = Endless()
    with pytest.raises(EntryFormatError, match="line 1: line longer"):
        list(read_blocks(endless))  # type: ignore[arg-type]
    assert endless.reads == 1


def test_a_valid_block_of_one_algorithm_is_proven_without_per_line_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # If the fast path never concluded, the agreement tests above would pass
    # while every block still cost the per-line price.
    def per_line(*args: object) -> None:
        raise AssertionError("the per-line check ran")

    monkeypatch.setattr("client.protocol.blocks.check_content_line", per_line)
    monkeypatch.setattr("client.protocol.blocks.check_delta_line", per_line)
    content = ContentChecker()
    content.check([f"sha1:{i:040x}".encode() for i in range(0, 100, 2)])
    content.check([f"sha1:{i:040x} l{i}".encode() for i in range(101, 200, 2)])
    delta = DeltaChecker()
    delta.check([f"+md5:{i:032x}".encode() for i in range(50)])
    delta.check([f"+md5:{i:032x}".encode() for i in range(50, 60)])
    delta.check([f"-md5:{i:032x}".encode() for i in range(60, 70)])
    delta.check([f"-md5:{i:032x}".encode() for i in range(70, 80)])
    assert (content.count, delta.adds, delta.removes) == (100, 60, 20)


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\nmd5:0123456789abcdef0123456789abcdef",
        b"garbage\n" + b"x" * 300 + b"\n",
        b"A" * 300 + b"\n" + b"B" * 300,
        b"md5:" + b"0" * 32 + b"\nbad\n" + b"y" * 300,
    ],
)
def test_the_first_bad_line_is_reported_whatever_is_wrong_with_it(data: bytes) -> None:
    # Framing errors (a line too long, a missing final LF) come after the
    # lines before them are checked, exactly as a line-by-line reader finds.
    def line_by_line() -> None:
        digest = ContentDigest()
        for line in read_lines(io.BytesIO(data)):
            digest.add(line)

    expected = _verdict(line_by_line)

    def blockwise() -> None:
        checker = ContentChecker()
        for block in read_blocks(io.BytesIO(data), size=1):
            checker.check(block)

    assert expected is not None
    assert _verdict(blockwise) == expected


@pytest.mark.parametrize("sign", [b"", b"+"])
def test_lines_of_uneven_length_are_never_proven_bare(sign: bytes) -> None:
    # One hex digit moved from a line to the next: the block's length, its
    # LFs and its hex are all as a bare block's, but two lines are not.
    lines = [sign + f"sha256:{i:x}{'0' * 63}".encode() for i in range(1, 16)]
    lines[4], lines[5] = lines[4][:-1], lines[5] + b"0"
    assert lines == sorted(lines)
    joined = b"\n".join(lines)
    assert len(joined) == len(lines) * (len(lines[0]) + 1) - 1
    checker = ContentChecker() if not sign else DeltaChecker()
    with pytest.raises(EntryFormatError, match="line 5: sha256 hash has 63 hex characters"):
        checker.check(lines)


def test_a_verified_block_is_counted_and_hashed_and_checked_where_it_meets() -> None:
    lines = [f"md5:{i:032x}".encode() for i in range(30)]
    checked, verified = ContentChecker(hashing=True), ContentChecker(hashing=True)
    checked.check(lines[:10])
    checked.check(lines[10:])
    verified.check(lines[:10])
    verified.add_verified(lines[10:])
    assert (verified.count, verified.hexdigest()) == (checked.count, checked.hexdigest())
    late = ContentChecker()
    late.check(lines[10:])
    with pytest.raises(EntryFormatError, match="line 21: content lines are not in strictly"):
        late.add_verified(lines[:10])


@pytest.mark.parametrize(
    ("fresh_line", "message"),
    [
        (b"md5:" + b"0" * 31 + b"g", "hash is not hex"),
        (b"md5:" + b"0" * 30 + b"0F", "hex must be lowercase"),
        (b"md5:" + b"9" * 32, "not in strictly increasing"),
        (f"md5:{4:032x} cat-a".encode(), "appears twice with different labels"),
    ],
)
def test_new_lines_in_a_verified_block_are_checked_where_they_stand(
    fresh_line: bytes, message: str
) -> None:
    held = [f"md5:{i:032x}".encode() for i in range(0, 20, 2)]
    changed = [*held[:3], fresh_line, *held[3:]]
    checker = ContentChecker()
    with pytest.raises(EntryFormatError, match=message):
        checker.add_verified(changed, [3])
    # Told nothing is new, the checker takes the block as verified.
    ContentChecker().add_verified(changed)
