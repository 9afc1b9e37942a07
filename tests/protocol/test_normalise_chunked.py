"""normalise_to_file(): the bounded-memory path gives exactly what normalise_file gives.

The same generated files, good and bad (bad lines, two labels of one
identity, and the byte-level refusals of ``usertext``: NUL, non-ASCII,
over-long lines, UTF-16, a byte-order mark, CRLF), go through the in-memory
path and through the chunked one with pieces of a few lines, several runs
and tiny merge fan-ins: the sorted lines, or the numbered problems, agree.
"""

from __future__ import annotations

import codecs
import io
import random
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.protocol import normalise as normalise_module
from client.protocol import usertext
from client.protocol.errors import EntryInputError, LineProblem
from client.protocol.normalise import merge_blocks, normalise_file, normalise_to_file
from client.protocol.usertext import MAX_USER_LINE, iter_user_text, read_user_text
from tests.synthetic import UNSEEDED, random_hex

# A few identities, so that lines meet again across pieces, with and without labels.
HEXES = [random_hex(UNSEEDED, 64) for _ in range(4)] + [random_hex(UNSEEDED, 32)]


@st.composite
def user_line(draw: st.DrawFn) -> bytes:
    """One line as a user's file may hold it: mostly good, sometimes odd or wrong."""
    hex_ = draw(st.sampled_from(HEXES))
    alg = "sha256" if len(hex_) == 64 else "md5"
    label = draw(st.sampled_from(["", " cat-a", " cat-b"]))
    form = draw(
        st.sampled_from(["canonical", "upper", "bare", "sum", "blank", "comment", "bad", "bytes"])
    )
    text = {
        "canonical": f"{alg}:{hex_}{label}",
        "upper": f"{alg.upper()}:{hex_.upper()}{label}",
        "bare": hex_.upper() if draw(st.booleans()) else hex_,
        "sum": f"{hex_}  file name.jpg",
        "blank": draw(st.sampled_from(["", "   "])),
        "comment": "# a note",
        "bad": draw(st.sampled_from(["zz", f"{alg}:{hex_[:-1]}", f"{alg}:{hex_} bad/label"])),
        "bytes": "",
    }[form].encode()
    if form == "bytes":
        text = draw(
            st.sampled_from(
                [b"a\x00b", "caf\u00e9".encode(), b"x" * (MAX_USER_LINE + 1), b"\x0c", b"\x1e"]
            )
        )
    return text


@st.composite
def user_file(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(user_line(), max_size=24))
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = end.join(lines) + draw(st.sampled_from([b"", end]))
    head = draw(st.sampled_from([b"", codecs.BOM_UTF8, codecs.BOM_UTF16_LE]))
    return head + data


def in_memory(data: bytes, **options: str | None) -> list[bytes] | list[LineProblem]:
    try:
        return normalise_file(io.BytesIO(data), **options)
    except EntryInputError as exc:
        return exc.problems


def chunked(
    data: bytes, chunk_lines: int, **options: str | None
) -> list[bytes] | list[LineProblem]:
    out = io.BytesIO()
    try:
        count = normalise_to_file(io.BytesIO(data), out, chunk_lines=chunk_lines, **options)
    except EntryInputError as exc:
        return exc.problems
    lines = out.getvalue().split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == count
    return lines


@settings(max_examples=300, deadline=None)
@given(
    data=user_file(),
    chunk_lines=st.integers(1, 6),
    fan_in=st.integers(2, 4),
    alg=st.sampled_from([None, None, "sha256", "sha3"]),
    label=st.sampled_from([None, None, "cat-a", "a b"]),
)
def test_chunked_and_in_memory_paths_agree(
    data: bytes, chunk_lines: int, fan_in: int, alg: str | None, label: str | None
) -> None:
    with mock.patch.object(normalise_module, "FAN_IN", fan_in):
        assert chunked(data, chunk_lines, alg=alg, label=label) == in_memory(
            data, alg=alg, label=label
        )


@pytest.mark.parametrize("chunk_lines", [1, 2, 3, 100])
def test_two_labels_meeting_only_in_the_merge_name_their_lines(chunk_lines: int) -> None:
    a, b = HEXES[:2]
    lines = [
        f"sha256:{a} cat-a",  # 1
        f"sha256:{b}",  # 2
        "",  # 3
        f"SHA256:{a.upper()} cat-a",  # 4 the same line again: no problem
        f"sha256:{b} cat-b",  # 5 another label than line 2's
        f"sha256:{a}",  # 6 another label than line 1's
        f"sha256:{b}",  # 7 line 2's label again
        f"sha256:{a} cat-b",  # 8 another label than line 1's
    ]
    data = "\n".join(lines).encode()
    with pytest.raises(EntryInputError) as caught:
        normalise_to_file(io.BytesIO(data), io.BytesIO(), chunk_lines=chunk_lines, source="l")
    assert [str(p) for p in caught.value.problems] == [
        f"line 5: sha256:{b} has label 'cat-b' here but no label on line 2",
        f"line 6: sha256:{a} has no label here but label 'cat-a' on line 1",
        f"line 8: sha256:{a} has label 'cat-b' here but label 'cat-a' on line 1",
    ]
    assert caught.value.problems == in_memory(data)


def test_bad_lines_of_every_piece_keep_their_numbers() -> None:
    rng = random.Random(7)
    lines = [random_hex(rng, 64) for _ in range(50)]
    for number in (3, 17, 18, 49):
        lines[number - 1] = "nothex"
    data = "\n".join(lines).encode()
    with pytest.raises(EntryInputError) as caught:
        normalise_to_file(io.BytesIO(data), io.BytesIO(), chunk_lines=4)
    assert [p.line for p in caught.value.problems] == [3, 17, 18, 49]


def test_many_runs_merge_in_generations(tmp_path: Path) -> None:
    rng = random.Random(11)
    hexes = [random_hex(rng, 64) for _ in range(500)]
    # Each hash twice, far apart: the runs share lines.
    data = "".join(f"{h}\n" for h in hexes + hexes[::-1]).encode()
    out = io.BytesIO()
    with mock.patch.object(normalise_module, "FAN_IN", 3):
        count = normalise_to_file(io.BytesIO(data), out, chunk_lines=7, spool=tmp_path)
    expected = sorted(f"sha256:{h}".encode() for h in hexes)
    assert count == 500
    assert out.getvalue() == b"".join(line + b"\n" for line in expected)
    # The runs were anonymous temporary files: nothing is left behind.
    assert list(tmp_path.iterdir()) == []


def test_merge_blocks_merges_sorted_runs_without_repeats() -> None:
    rng = random.Random(5)
    runs = [sorted({rng.randbytes(2) for _ in range(rng.randint(0, 40))}) for _ in range(6)]
    sources = [iter([run[i : i + 3] for i in range(0, len(run), 3)]) for run in runs]
    merged = [line for block in merge_blocks(sources) for line in block]
    assert merged == sorted(set().union(*runs))


@settings(max_examples=200, deadline=None)
@given(data=user_file(), lines=st.integers(1, 5), chunk=st.integers(1, 40))
def test_pieces_of_a_file_join_into_the_whole(data: bytes, lines: int, chunk: int) -> None:
    # Chunks of a few bytes: lines, CRLF pairs and over-long lines cross them.
    with mock.patch.object(usertext, "_CHUNK", chunk):
        whole = read_user_text(io.BytesIO(data))
        pieces = list(iter_user_text(io.BytesIO(data), lines))
    assert all(0 < len(piece.lines) <= lines for piece in pieces)
    assert [piece.start for piece in pieces] == [i * lines for i in range(len(pieces))]
    assert [line for piece in pieces for line in piece.lines] == whole.lines
    assert [p for piece in pieces for p in piece.problems] == whole.problems
    for piece in pieces:
        assert all(piece.start < p.line <= piece.start + len(piece.lines) for p in piece.problems)


@pytest.mark.parametrize("chunk_lines", [1, 1000])
def test_a_read_that_ends_exactly_at_a_line_end_does_not_end_the_file(chunk_lines: int) -> None:
    # 72-byte lines: 524,288 of them fill nine 4 MiB reads exactly, and the
    # reader once stopped there, dropping the rest of the file.
    rng = random.Random(3)
    lines = [f"sha256:{random_hex(rng, 64)}\n" for _ in range(40)]
    data = "".join(lines).encode()
    with mock.patch.object(usertext, "_CHUNK", 72 * 4):
        assert len(read_user_text(io.BytesIO(data)).lines) == 40
        out = io.BytesIO()
        assert normalise_to_file(io.BytesIO(data), out, chunk_lines=chunk_lines) == 40
    assert out.getvalue() == "".join(sorted(lines)).encode()
