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

A list of millions of lines must not cost its size several times over in
memory either.  ``normalise_to_file`` reads the file a piece of
``CHUNK_LINES`` lines at a time (by the same byte rules, one reader), sorts
each piece as above into a run on disk, and merges the runs a block at a
time into one sorted file.  Only two lines of one identity with different
labels can meet in no single piece; the merge finds the identity, and the
file is read once more, for those identities only, to name their lines.
Its verdict, and every message, is the one ``normalise_file`` gives.
"""

from __future__ import annotations

import operator
import re
import tempfile
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from itertools import islice, pairwise, repeat
from pathlib import Path
from typing import BinaryIO

from client.protocol.blocks import BLOCK_LINES, ContentChecker, in_blocks, read_blocks
from client.protocol.entries import ALGORITHMS, LABEL_RE, Entry, identity_of
from client.protocol.errors import EntryFormatError, EntryInputError, LineProblem
from client.protocol.usertext import UserText, iter_user_text, read_user_text

ALGORITHM_BY_LENGTH: dict[int, str] = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
"""Bare hex of these lengths implies an algorithm; 64 means sha256, never pdq."""

CHUNK_LINES = 100_000
"""Lines of a user's file ``normalise_to_file`` sorts at a time: what bounds its memory."""

# The identity at the start of each line of a joined block of canonical lines.
_IDENTITY_RE = re.compile(rb"^[^ \n]+", re.MULTILINE)
# Runs of (lowercase) hex digits: the hex of every readable hash line is one.
_HEX_RUN_RE = re.compile(r"[0-9a-f]{32,}")


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
    _check_options(alg, label, source)
    texts = list(lines)
    whole = normalise_whole(texts, alg, label)
    return whole if whole is not None else normalise_each(texts, alg, label, source)


def _check_options(alg: str | None, label: str | None, source: str) -> None:
    """Refuse an unknown ``--alg`` or a bad ``--label`` (as line 0: no line of the file)."""
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


def normalise_file(
    stream: BinaryIO, *, alg: str | None = None, label: str | None = None, source: str = "input"
) -> list[bytes]:
    """A user's hash file, read and normalised; every bad line reported with its number.

    The bytes are read as :mod:`client.protocol.usertext` says (a byte-order
    mark skipped, CRLF read as LF, binary refused), then normalised; the
    problems of both steps are reported together, in line order.  The whole
    file is held in memory: ``normalise_to_file`` gives the same in bounded
    memory.
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


def normalise_to_file(
    stream: BinaryIO,
    out: BinaryIO,
    *,
    alg: str | None = None,
    label: str | None = None,
    source: str = "input",
    spool: Path | None = None,
    chunk_lines: int | None = None,
) -> int:
    """Normalise a user's hash file into ``out``, in memory bounded by ``chunk_lines``.

    Writes the sorted, unique canonical lines, each ending in LF, and returns
    how many.  Accepts and refuses exactly what ``normalise_file`` does, with
    the same EntryInputError (every problem, in line order); on error what
    ``out`` holds is meaningless.  ``stream`` must be seekable: to name the
    lines of an identity given with two labels, it is read a second time.
    Runs go to anonymous temporary files in ``spool`` (default: the system's
    temporary directory).  ``chunk_lines`` defaults to CHUNK_LINES.
    """
    chunk_lines = CHUNK_LINES if chunk_lines is None else chunk_lines
    try:
        _check_options(alg, label, source)
    except EntryInputError as exc:
        text = [p for piece in iter_user_text(stream, chunk_lines) for p in piece.problems]
        raise EntryInputError(exc.problems + text, source) from None
    origin = stream.tell()
    problems: list[LineProblem] = []
    with _Runs(spool) as runs:
        for piece in iter_user_text(stream, chunk_lines):
            problems.extend(piece.problems)
            lines, bad = _normalise_piece(piece, alg, label)
            problems.extend(bad)
            runs.add(lines)
        count, conflicts = _write_merged(runs.merged(), out, writing=not problems)
    if conflicts:
        stream.seek(origin)
        problems.extend(_conflict_problems(stream, conflicts, alg, label, chunk_lines))
    if problems:
        raise EntryInputError(sorted(problems, key=lambda problem: problem.line), source)
    return count


def _normalise_piece(
    piece: UserText, alg: str | None, label: str | None
) -> tuple[list[bytes], list[LineProblem]]:
    """A piece's sorted, unique lines and its bad lines; two labels of one identity pass."""
    whole = normalise_whole(piece.lines, alg, label)
    if whole is not None:
        return whole, []
    problems: list[LineProblem] = []
    lines = {entry.line() for _, entry in _entries(piece.lines, alg, label, piece.start, problems)}
    return sorted(lines), problems


class _Runs:
    """Sorted, unique runs of lines, spooled to anonymous temporary files, merged in the end.

    The newest run stays in memory until another comes.  At most ``FAN_IN``
    runs of one generation are kept: that many are merged into one run of
    the next, so memory stays bounded however long the input.
    """

    def __init__(self, spool: Path | None) -> None:
        self._spool = spool
        self._files = ExitStack()
        self._generations: list[list[BinaryIO]] = []
        self._last: list[bytes] = []

    def __enter__(self) -> _Runs:
        return self

    def __exit__(self, *exc: object) -> None:
        self._files.close()

    def add(self, lines: list[bytes]) -> None:
        """Take the next run (sorted and unique)."""
        if self._last:
            self._spill(0, in_blocks(self._last))
        self._last = lines

    def _spill(self, generation: int, blocks: Iterable[list[bytes]]) -> None:
        run = self._files.enter_context(tempfile.TemporaryFile(dir=self._spool))  # noqa: SIM115
        for block in blocks:
            run.write(b"\n".join(block) + b"\n")
        run.seek(0)
        if generation == len(self._generations):
            self._generations.append([])
        runs = self._generations[generation]
        runs.append(run)
        if len(runs) == FAN_IN:
            self._generations[generation] = []
            self._spill(generation + 1, merge_blocks([_read_run(r) for r in runs]))
            for done in runs:
                done.close()

    def merged(self) -> Iterator[list[bytes]]:
        """Every line of every run, sorted and unique, in blocks."""
        sources = [_read_run(run) for runs in self._generations for run in runs]
        if self._last:
            sources.append(in_blocks(self._last))
        return sources[0] if len(sources) == 1 else merge_blocks(sources)


FAN_IN = 32
"""Runs merged at once: each costs a read buffer and a block of lines."""


def _read_run(run: BinaryIO) -> Iterator[list[bytes]]:
    return read_blocks(run, size=2_000, read_size=1 << 17)


def merge_blocks(sources: list[Iterator[list[bytes]]]) -> Iterator[list[bytes]]:
    """Merge sorted, unique runs (each given as blocks of lines) into sorted, unique blocks.

    A block at a time, in C: every run's lines up to the smallest last line
    of the runs' current blocks are taken together, sorted (Timsort merges
    the sorted pieces) and freed of repeats.  So each round finishes at
    least one block of one run, and holds at most one block of each.
    """
    heads: list[tuple[list[bytes], Iterator[list[bytes]]]] = []
    positions: list[int] = []
    for blocks in sources:
        block = next(blocks, None)
        if block:
            heads.append((block, blocks))
            positions.append(0)
    while heads:
        bound = min(block[-1] for block, _ in heads)
        merged: list[bytes] = []
        live: list[tuple[list[bytes], Iterator[list[bytes]]]] = []
        kept: list[int] = []
        for (block, blocks), position in zip(heads, positions, strict=True):
            cut = bisect_right(block, bound, position)
            merged += block[position:cut]
            if cut == len(block):
                block, cut = next(blocks, None) or [], 0
            if block:
                live.append((block, blocks))
                kept.append(cut)
        heads, positions = live, kept
        merged.sort()
        # Runs rarely share a line: look for a repeat (in C) before removing any.
        if True in map(operator.eq, merged, islice(merged, 1, None)):
            merged = list(dict.fromkeys(merged))
        yield merged


def _write_merged(
    blocks: Iterable[list[bytes]], out: BinaryIO, *, writing: bool
) -> tuple[int, set[bytes]]:
    """Write sorted, unique canonical blocks to ``out``: their count, and identities seen twice.

    Only labelled lines can share an identity with the line before them
    (a bare identity sorts first), so a block without a space is checked by
    that alone.  Nothing is written after an identity is seen twice, or when
    not ``writing``.
    """
    count = 0
    conflicts: set[bytes] = set()
    previous: bytes | None = None
    for block in blocks:
        joined = b"\n".join(block)
        if b" " in joined:
            identities = _IDENTITY_RE.findall(joined)
            if previous is not None:
                identities.insert(0, identity_of(previous))
            if True in map(operator.eq, identities, islice(identities, 1, None)):
                conflicts.update(a for a, b in pairwise(identities) if a == b)
        if writing and not conflicts:
            out.write(joined + b"\n")
        count += len(block)
        previous = block[-1]
    return count, conflicts


def _conflict_problems(
    stream: BinaryIO,
    conflicts: set[bytes],
    alg: str | None,
    label: str | None,
    chunk_lines: int,
) -> list[LineProblem]:
    """Read the file again, naming each line that labels one of ``conflicts`` anew.

    As ``normalise_each`` does: every line of an identity whose label
    differs from the identity's first line.  Pieces that hold none of the
    identities' hex are skipped unparsed.
    """
    wanted = {identity.decode("ascii") for identity in conflicts}
    hexes = {identity.partition(":")[2] for identity in wanted}
    first: dict[str, tuple[int, str | None]] = {}
    problems: list[LineProblem] = []
    ignored: list[LineProblem] = []
    for piece in iter_user_text(stream, chunk_lines):
        if hexes.isdisjoint(_HEX_RUN_RE.findall("".join(piece.lines).lower())):
            continue
        for lineno, entry in _entries(piece.lines, alg, label, piece.start, ignored):
            if entry.identity not in wanted:
                continue
            earlier = first.setdefault(entry.identity, (lineno, entry.label))
            if earlier[1] != entry.label:
                problems.append(_conflict(lineno, entry, earlier))
    return problems


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
    texts: Iterable[str], alg: str | None, label: str | None, source: str, start: int = 0
) -> list[bytes]:
    """Normalise line by line, collecting every problem with its line number.

    ``start`` is how many lines of the file come before ``texts``: problems
    carry the file's line numbers.
    """
    problems: list[LineProblem] = []
    seen: dict[str, tuple[int, Entry]] = {}
    for lineno, entry in _entries(texts, alg, label, start, problems):
        earlier = seen.get(entry.identity)
        if earlier is None:
            seen[entry.identity] = (lineno, entry)
        elif earlier[1].label != entry.label:
            problems.append(_conflict(lineno, entry, (earlier[0], earlier[1].label)))
    if problems:
        raise EntryInputError(problems, source)
    return sorted(entry.line() for _, entry in seen.values())


def _entries(
    texts: Iterable[str],
    alg: str | None,
    label: str | None,
    start: int,
    problems: list[LineProblem],
) -> Iterator[tuple[int, Entry]]:
    """Each good line's number and entry; each bad line's problem goes to ``problems``."""
    for lineno, raw in enumerate(texts, start + 1):
        try:
            read = read_hash_line(raw)
            if read is None:
                continue
            entry = _entry(read, alg, label)
        except ValueError as exc:
            problems.append(LineProblem(lineno, str(exc)))
            continue
        yield lineno, entry


def _conflict(lineno: int, entry: Entry, earlier: tuple[int, str | None]) -> LineProblem:
    """The problem of a line that gives an identity another label than its first line."""
    return LineProblem(
        lineno,
        f"{entry.identity} has {_describe_label(entry.label)} here but "
        f"{_describe_label(earlier[1])} on line {earlier[0]}",
    )


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
