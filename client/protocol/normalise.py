"""User hash lists to canonical entries: the one place input is repaired, not refused.

``publish --from/--add/--remove`` take what tools print: ``alg:hex [label]``
in any case, bare hex, ``md5sum``/``sha256sum`` output, blank lines and
comments, duplicates, any order.  ``normalise`` turns that into the sorted,
unique canonical lines a content is made of, or reports every bad line with
its number.  Nothing received over the wire ever comes through here.
``lookup`` reads its hashes with the same line reader, ``read_hash_line``,
so both take the same line forms and refuse the same bad lines.

A list of millions of lines is common, and the general per-line path costs
microseconds a line.  So the lines are first tried as a whole: when every one
is already canonical, or is bare hex or ``alg:hex`` without a label (any
case), a few passes in C normalise them.  Anything else, including any list
with an error, takes the per-line path, which alone reports problems.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import islice, repeat
from typing import BinaryIO

from client.protocol.blocks import BLOCK_LINES, ContentChecker
from client.protocol.entries import ALGORITHMS, LABEL_RE, Entry
from client.protocol.errors import EntryFormatError, EntryInputError, LineProblem
from client.protocol.usertext import read_user_text

ALGORITHM_BY_LENGTH: dict[int, str] = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
"""Bare hex of these lengths implies an algorithm; 64 means sha256, never pdq."""


def normalise(
    lines: Iterable[str], *, alg: str | None = None, label: str | None = None, source: str = "input"
) -> list[bytes]:
    """Turn a user's hash list into sorted, unique canonical entry lines.

    Accepts ``alg:hex [label]`` (any case), bare hex (algorithm from ``alg``,
    else from the length: 32 md5, 40 sha1, 64 sha256, 128 sha512) and
    ``md5sum``/``sha256sum`` output (``<hex>  <file>`` or ``<hex> *<file>``;
    the file name is ignored).  Blank lines and ``#`` comments are skipped.
    ``label`` gives one label to every entry that has none of its own.
    Every bad line is collected and reported together, with its number, in
    one EntryInputError: nothing is half-accepted.
    """
    if alg is not None and alg not in ALGORITHMS:
        raise EntryInputError(
            [LineProblem(0, f"unknown algorithm {alg!r}; expected one of {', '.join(ALGORITHMS)}")],
            source,
        )
    if label is not None and not LABEL_RE.fullmatch(label.encode("ascii", "replace")):
        raise EntryInputError(
            [LineProblem(0, f"label {label!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")],
            source,
        )
    texts = list(lines)
    whole = normalise_whole(texts, alg, label)
    return whole if whole is not None else normalise_each(texts, alg, label, source)


def normalise_file(
    stream: BinaryIO, *, alg: str | None = None, label: str | None = None, source: str = "input"
) -> list[bytes]:
    """A user's hash file, read and normalised; every bad line reported with its number.

    The bytes are read as :mod:`client.protocol.usertext` says (a byte-order
    mark skipped, CRLF read as LF, binary refused), then normalised; the
    problems of both steps are reported together, in line order.
    """
    text = read_user_text(stream)
    try:
        lines = normalise(text.lines, alg=alg, label=label, source=source)
    except EntryInputError as exc:
        problems = sorted(text.problems + exc.problems, key=lambda problem: problem.line)
        raise EntryInputError(problems, source) from None
    if text.problems:
        raise EntryInputError(text.problems, source)
    return lines


def normalise_whole(texts: list[str], alg: str | None, label: str | None) -> list[bytes] | None:
    """The normalised lines, if the list can be normalised as a whole; else None.

    It can when every line is a canonical entry, or every line is bare hex or
    ``alg:hex`` without a label in any case, with no blank line, comment, CR
    or stray space, and no identity with two labels.  Then the result equals
    what ``normalise_each`` gives, at a fraction of its cost.
    """
    # One line per text, each ending in LF but maybe the last (a file's
    # lines): only then are the joined text's lines the texts themselves.
    ended = texts[-1].endswith("\n") if texts else True
    if not all(map(str.endswith, islice(texts, max(len(texts) - 1, 0)), repeat("\n"))):
        return None
    # Strings until sorted: CPython sorts ASCII str faster than bytes.
    data = "".join(texts)
    if data.count("\n") != len(texts) - (not ended):
        return None
    if not data.isascii() or "\r" in data:
        return None
    labelled = " " in data
    if not labelled:
        # Algorithm names and hex are case-insensitive; labels are not.
        data = data.lower()
    lines = data.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        return None
    if ":" not in data:
        chosen = alg or ALGORITHM_BY_LENGTH.get(len(lines[0]))
        if labelled or chosen is None:
            return None
        lines = [f"{chosen}:{line}" for line in lines]
    elif alg is not None and not all(line.startswith(f"{alg}:") for line in lines):
        return None
    if label is not None:
        if labelled:
            return None
        lines = [f"{line} {label}" for line in lines]
    # Joined and split again, the sorted lines lie in memory in the order
    # they are read from now on: the checks below run much faster.
    unique = "\n".join(sorted(set(lines))).encode("ascii").split(b"\n")
    # The checker proves every line canonical, and no identity labelled twice.
    checker = ContentChecker()
    try:
        for start in range(0, len(unique), BLOCK_LINES):
            checker.check(unique[start : start + BLOCK_LINES])
    except EntryFormatError:
        # The per-line path names the bad line, or both lines of an identity.
        return None
    return unique


def normalise_each(
    texts: Iterable[str], alg: str | None, label: str | None, source: str
) -> list[bytes]:
    """Normalise line by line, collecting every problem with its line number."""
    problems: list[LineProblem] = []
    seen: dict[str, tuple[int, Entry]] = {}
    for lineno, raw in enumerate(texts, 1):
        try:
            read = read_hash_line(raw)
            if read is None:
                continue
            entry = _entry(read, alg, label)
        except ValueError as exc:
            problems.append(LineProblem(lineno, str(exc)))
            continue
        earlier = seen.get(entry.identity)
        if earlier is None:
            seen[entry.identity] = (lineno, entry)
        elif earlier[1].label != entry.label:
            problems.append(
                LineProblem(
                    lineno,
                    f"{entry.identity} has {_describe_label(entry.label)} here but "
                    f"{_describe_label(earlier[1].label)} on line {earlier[0]}",
                )
            )
    if problems:
        raise EntryInputError(problems, source)
    return sorted(entry.line() for _, entry in seen.values())


def _describe_label(label: str | None) -> str:
    return "no label" if label is None else f"label {label!r}"


HashLine = tuple[str | None, str, str | None]
"""A user's hash line as read: algorithm (None when the line does not name
one), lowercase hex, and the line's own label."""

LINE_FORMS = "expected 'alg:hex [label]', bare hex, or md5sum/sha256sum output '<hex>  <file>'"
"""The forms a line of a user's hash list may take, as error messages name them."""

_is_hex = re.compile(r"[0-9A-Fa-f]+").fullmatch
_SUM_LINE_RE = re.compile(r"\\?([0-9A-Fa-f]+) [ *].*")


def read_hash_line(raw: str) -> HashLine | None:
    """One line of a user's hash list, read the same way by ``publish`` and ``lookup``.

    Surrounding whitespace (LF and CRLF included) is ignored; a blank line
    or a ``#`` comment gives None.  ``alg:hex [label]`` (any case) gives its
    algorithm, its hex in lowercase and its label, checked against the
    algorithm's length and the label rules.  Bare hex and ``md5sum``/
    ``sha256sum`` output (``<hex>  <file>`` or ``<hex> *<file>``; the file
    name is not kept) give None for the algorithm: the caller decides what
    the length means.  Anything else raises ValueError saying what is wrong.
    """
    text = raw.strip()
    if not text or text[0] == "#":
        return None
    if not text.isascii():
        raise ValueError("line contains non-ASCII characters")
    head, _, rest = text.partition(" ")
    if ":" in head:
        alg, _, hex_ = head.partition(":")
        alg = alg.lower()
        length = ALGORITHMS.get(alg)
        if length is None:
            raise ValueError(f"unknown algorithm {alg!r}; expected one of {', '.join(ALGORITHMS)}")
        label = (rest.strip() or None) if rest else None
        if label is not None and not LABEL_RE.fullmatch(label.encode()):
            raise ValueError(f"label {label!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")
        if not _is_hex(hex_):
            raise ValueError(f"{alg} hash {hex_[:80]!r} is not hex")
        if len(hex_) != length:
            raise ValueError(f"{alg} hash has {len(hex_)} hex characters, expected {length}")
        return alg, hex_.lower(), label
    if rest:
        summed = _SUM_LINE_RE.fullmatch(text)
        if summed is None:
            raise ValueError(LINE_FORMS)
        return None, summed.group(1).lower(), None
    if not _is_hex(head):
        raise ValueError(f"hash {head[:80]!r} is not hex; {LINE_FORMS}")
    return None, head.lower(), None


def _entry(read: HashLine, alg: str | None, label: str | None) -> Entry:
    """A read line as an Entry under ``--alg`` and ``--label``, or ValueError saying why not."""
    line_alg, hex_, own_label = read
    if line_alg is None:
        line_alg = alg or ALGORITHM_BY_LENGTH.get(len(hex_))
        if line_alg is None:
            raise ValueError(
                f"cannot tell the algorithm of a {len(hex_)}-character hash; use alg:hex or --alg"
            )
        if len(hex_) != ALGORITHMS[line_alg]:
            raise ValueError(
                f"{line_alg} hash has {len(hex_)} hex characters, expected {ALGORITHMS[line_alg]}"
            )
    elif alg is not None and line_alg != alg:
        raise ValueError(f"algorithm {line_alg} differs from --alg {alg}")
    if own_label is not None and label is not None and own_label != label:
        raise ValueError(f"has label {own_label!r} but --label {label!r} was given")
    return Entry(line_alg, hex_, own_label or label)
