"""normalise(): the one place user input is repaired (case, md5sum output, order, duplicates).

``read_hash_line`` is its line reader, which ``lookup`` shares.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.protocol.entries import content_digest
from client.protocol.errors import EntryInputError, InputError
from client.protocol.normalise import (
    LINE_FORMS,
    normalise,
    normalise_each,
    normalise_whole,
    read_hash_line,
)
from tests.synthetic import UNSEEDED, random_hex

MD5, SHA1, SHA256, SHA512, PDQ = (random_hex(UNSEEDED, n) for n in (32, 40, 64, 128, 64))


def test_mixed_case_and_alg_prefix() -> None:
    out = normalise([f"MD5:{MD5.upper()}", f"Sha1:{SHA1[:20].upper()}{SHA1[20:]} cat-a"])
    assert out == sorted([f"md5:{MD5}".encode(), f"sha1:{SHA1} cat-a".encode()])


@pytest.mark.parametrize(
    ("hex_", "alg"), [(MD5, "md5"), (SHA1, "sha1"), (SHA256, "sha256"), (SHA512, "sha512")]
)
def test_bare_hex_takes_its_algorithm_from_its_length(hex_: str, alg: str) -> None:
    assert normalise([hex_.upper()]) == [f"{alg}:{hex_}".encode()]


def test_alg_override_makes_64_hex_pdq() -> None:
    assert normalise([PDQ], alg="pdq") == [f"pdq:{PDQ}".encode()]
    assert normalise([PDQ]) == [f"sha256:{PDQ}".encode()]


def test_alg_override_must_fit_the_length() -> None:
    with pytest.raises(
        EntryInputError, match="line 1: sha1 hash has 32 hex characters, expected 40"
    ):
        normalise([MD5], alg="sha1")


def test_alg_override_conflicting_with_a_prefix() -> None:
    with pytest.raises(
        EntryInputError, match="line 1: algorithm md5 differs from --alg sha256"
    ) as info:
        normalise([f"md5:{MD5}"], alg="sha256")
    assert [p.line for p in info.value.problems] == [1]


def test_unknown_alg_override() -> None:
    with pytest.raises(EntryInputError, match="unknown algorithm 'sha3'"):
        normalise([MD5], alg="sha3")


@pytest.mark.parametrize(
    "line",
    [
        f"{MD5}  file.bin",
        f"{MD5} *file.bin",
        f"{MD5}  a file name with  spaces.jpg",
        f"{MD5} *C:/dir with space/x.png",
        f"\\{MD5}  weird\\nname",
        f"{MD5.upper()}  FILE.BIN",
        f"{MD5}  -",
    ],
)
def test_md5sum_output(line: str) -> None:
    assert normalise([line + "\n"]) == [f"md5:{MD5}".encode()]


def test_sha256sum_output_with_label_option() -> None:
    lines = [f"{SHA256}  one.jpg\n", f"{SHA512} *two.jpg\n"]
    assert normalise(lines, label="cat-a") == sorted(
        [f"sha256:{SHA256} cat-a".encode(), f"sha512:{SHA512} cat-a".encode()]
    )


def test_alg_hex_label_form() -> None:
    assert normalise([f"pdq:{PDQ} vics-1"]) == [f"pdq:{PDQ} vics-1".encode()]


def test_dedups_sorts_and_skips_blank_and_comment_lines() -> None:
    lines = [
        "# exported list\n",
        f"{SHA256}\n",
        "\n",
        "   \n",
        f"md5:{MD5}\r\n",
        f"sha256:{SHA256.upper()}\n",
        f"  {SHA256}  \n",
        "  # indented comment\n",
        f"MD5:{MD5}\n",
    ]
    out = normalise(lines)
    assert out == sorted([f"md5:{MD5}".encode(), f"sha256:{SHA256}".encode()])
    # The result is canonical content: it passes the strict wire check.
    assert content_digest(out)[1] == 2


def test_label_option_and_own_label_agree() -> None:
    out = normalise([f"md5:{MD5} cat-a", f"md5:{MD5}"], label="cat-a")
    assert out == [f"md5:{MD5} cat-a".encode()]


def test_all_bad_lines_are_reported_with_their_numbers() -> None:
    lines = [
        f"md5:{MD5}",  # 1 good
        "sha3:" + SHA256,  # 2 unknown algorithm
        "xyz",  # 3 not hex
        "",  # 4 blank: skipped
        MD5[:-1],  # 5 31 characters: no algorithm
        f"md5:{MD5} bad/label",  # 6 bad label
        f"sha1:{SHA1}g",  # 7 not hex
        f"{MD5} file",  # 8 one space: not md5sum output
        f"md5:{MD5} caté",  # 9 non-ASCII
        f"sha256:{SHA256[:-2]}",  # 10 wrong length
        "# comment",  # 11 skipped
        f"md5:{MD5} {'l' * 65}",  # 12 label too long
    ]
    with pytest.raises(EntryInputError) as info:
        normalise(lines, source="list.txt")
    error = info.value
    assert [p.line for p in error.problems] == [2, 3, 5, 6, 7, 8, 9, 10, 12]
    messages = {p.line: p.message for p in error.problems}
    assert "unknown algorithm 'sha3'" in messages[2]
    assert "'xyz' is not hex" in messages[3]
    assert "cannot tell the algorithm of a 31-character hash" in messages[5]
    assert "label 'bad/label' must be 1-64 characters" in messages[6]
    assert "is not hex" in messages[7]
    assert "expected 'alg:hex [label]', bare hex, or md5sum/sha256sum output" in messages[8]
    assert "non-ASCII" in messages[9]
    assert "sha256 hash has 62 hex characters, expected 64" in messages[10]
    assert "must be 1-64 characters" in messages[12]
    assert str(error).startswith(
        "9 bad line(s) in list.txt:\n  list.txt: line 2: unknown algorithm"
    )
    assert isinstance(error, InputError)
    assert isinstance(error, ValueError)


def test_many_bad_lines_are_summarised() -> None:
    with pytest.raises(EntryInputError, match="and 5 more") as info:
        normalise(["nothex"] * 25)
    assert [p.line for p in info.value.problems] == list(range(1, 26))


def test_conflicting_labels_for_one_identity() -> None:
    lines = [f"md5:{MD5} cat-a", f"sha1:{SHA1}", f"MD5:{MD5.upper()} cat-b", f"md5:{MD5}"]
    with pytest.raises(EntryInputError) as info:
        normalise(lines)
    problems = info.value.problems
    assert [p.line for p in problems] == [3, 4]
    assert f"md5:{MD5} has label 'cat-b' here but label 'cat-a' on line 1" in problems[0].message
    assert f"md5:{MD5} has no label here but label 'cat-a' on line 1" in problems[1].message


def test_label_conflicting_with_the_label_option() -> None:
    with pytest.raises(
        EntryInputError, match="line 2: has label 'cat-a' but --label 'cat-b' was given"
    ):
        normalise([f"sha1:{SHA1}", f"md5:{MD5} cat-a"], label="cat-b")


def test_bad_label_option() -> None:
    with pytest.raises(EntryInputError, match="label 'a b' must be 1-64 characters"):
        normalise([MD5], label="a b")


@pytest.mark.parametrize("length", [16, 33, 48, 63, 65, 96, 127, 129, 256])
def test_ambiguous_or_unknown_lengths(length: int) -> None:
    hex_ = random_hex(UNSEEDED, length + length % 2)[:length]
    with pytest.raises(
        EntryInputError, match=f"line 1: cannot tell the algorithm of a {length}-character hash"
    ):
        normalise([hex_])


def test_empty_input_gives_empty_content() -> None:
    assert normalise(["\n", "# nothing\n"]) == []


def _user_line(draw: st.DrawFn) -> str:
    """One line as a user's file may hold it: mostly good, sometimes odd or wrong."""
    alg = draw(st.sampled_from(["md5", "sha1", "sha256", "pdq"]))
    hex_ = draw(st.sampled_from([MD5, SHA1, SHA256, PDQ, SHA256[:60] + "abcd", SHA1[:-1]]))
    label = draw(st.sampled_from(["", " cat-a", " cat-b", " bad/label"]))
    form = draw(st.sampled_from(["canonical", "upper", "bare", "bare-upper", "odd"]))
    if form == "canonical":
        return f"{alg}:{hex_}{label}"
    if form == "upper":
        return f"{alg.upper()}:{hex_.upper()}{label}"
    if form == "bare":
        return hex_
    if form == "bare-upper":
        return hex_.upper()
    return draw(st.sampled_from(["", "# note", f" {alg}:{hex_}", f"{hex_}  file.jpg", "zz"]))


@given(
    data=st.data(),
    count=st.integers(min_value=1, max_value=12),
    alg=st.sampled_from([None, "sha256", "pdq"]),
    label=st.sampled_from([None, "cat-a"]),
    ends=st.sampled_from(["\n", "\r\n", "", "\n\n"]),
)
def test_whole_list_normalising_agrees_with_line_by_line(
    data: st.DataObject, count: int, alg: str | None, label: str | None, ends: str
) -> None:
    # Texts are lines as a file gives them, or not: a list from a caller may
    # hold items without LF, or with an LF inside.
    texts = [
        data.draw(st.composite(_user_line)()) + data.draw(st.sampled_from(["\n", ends]))
        for _ in range(count)
    ]
    whole = normalise_whole(texts, alg, label)
    try:
        each: list[bytes] | None = normalise_each(texts, alg, label, "input")
    except EntryInputError:
        each = None
    if whole is not None:
        assert whole == each


@pytest.mark.parametrize(
    "texts",
    [
        [f"sha256:{SHA256}\n", f"md5:{MD5} cat-a\n"],
        [f"{SHA256.upper()}\n", f"{PDQ}\n", f"{SHA256}\n"],
        [f"SHA1:{SHA1.upper()}\n"],
    ],
)
def test_common_lists_are_normalised_as_a_whole(texts: list[str]) -> None:
    # Else the agreement test above would pass with a whole-list path that
    # never concludes, and a million-line publish would crawl.
    assert normalise_whole(texts, None, None) == normalise_each(texts, None, None, "input")


def test_items_without_lf_are_not_joined_into_one_hash() -> None:
    # Joining two 32-digit md5 values without a separator would forge one
    # 64-digit sha256 identity.
    first, second = "0123456789abcdef" * 2, "f" * 32
    assert normalise([first, second]) == [f"md5:{first}".encode(), f"md5:{second}".encode()]


@pytest.mark.parametrize(
    ("line", "read"),
    [
        (f"MD5:{MD5.upper()} cat-a\r\n", ("md5", MD5, "cat-a")),
        (f"  pdq:{PDQ}  \n", ("pdq", PDQ, None)),
        (f"Sha1:{SHA1}  Zeta.9", ("sha1", SHA1, "Zeta.9")),
        (SHA256.upper(), (None, SHA256, None)),
        (f"{MD5}  evidence/a b.jpg\n", (None, MD5, None)),
        (f"{SHA512.upper()} *C:/x.bin", (None, SHA512, None)),
        (f"\\{MD5}  new\\nline", (None, MD5, None)),
        # Bare hex of any length: what a length means is the caller's to say.
        ("0aF", (None, "0af", None)),
        ("", None),
        ("  \t\r\n", None),
        ("# comment", None),
        ("  #md5:zz", None),
    ],
)
def test_read_hash_line_reads_each_form(
    line: str, read: tuple[str | None, str, str | None]
) -> None:
    assert read_hash_line(line) == read


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("zz", f"hash 'zz' is not hex; {LINE_FORMS}"),
        (f"{MD5} file.jpg", LINE_FORMS),
        (f"{MD5}\tfile.jpg", f"hash '{MD5}\\tfile.jpg' is not hex; {LINE_FORMS}"),
        (
            f"sha3:{SHA256}",
            "unknown algorithm 'sha3'; expected one of md5, sha1, sha256, sha512, pdq",
        ),
        (f"md5:{MD5[:-1]}x", f"md5 hash '{MD5[:-1]}x' is not hex"),
        (f"sha1:{MD5}", "sha1 hash has 32 hex characters, expected 40"),
        (f"md5:{MD5} a/b", "label 'a/b' must be 1-64 characters of A-Z a-z 0-9 . _ -"),
        (f"{MD5}  caf\u00e9.jpg", "line contains non-ASCII characters"),
    ],
)
def test_read_hash_line_says_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        read_hash_line(line)
