"""Checking contents and deltas a block of lines at a time.

The per-line checks in ``entries`` (``ContentDigest``, ``DeltaDigest``) say
exactly what is wrong with a line, but each line costs several Python
operations: on a list of a million hashes that is most of a sync.  The
checkers here take a block of lines (``read_blocks`` cuts a stream into
lists of ``BLOCK_LINES``) and try to *prove* the block valid with a few
passes that run in C: one regular expression per line, one slice per line
and one comparison per pair of neighbours.

The proof is deliberately narrow: it only covers a block whose lines are all
of one algorithm (and, in a delta, one sign) and continue the block before.
Whenever it cannot conclude (a bad line, or merely a block where the
algorithm or the sign changes) the same block goes through the per-line
checks, which raise the precise, line-numbered error or accept the block.
So the fast path can only make checking faster; it never accepts a block the
per-line checks refuse.  A property test holds the two to one verdict.
"""

from __future__ import annotations

import hashlib
import operator
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Protocol

from client.protocol.entries import (
    ALGORITHMS,
    MAX_WIRE_LINE,
    check_content_line,
    check_delta_line,
    entry_pattern,
)
from client.protocol.errors import EntryFormatError

BLOCK_LINES = 10_000
"""Lines per block: big enough to amortise the per-block work, small enough to stay cheap."""

_READ_BYTES = 1 << 20
_ENTRY_RE = re.compile(entry_pattern())
_DELTA_RE = re.compile(rb"[+-]" + entry_pattern())
_HEX_LENGTHS = {name.encode(): length for name, length in ALGORITHMS.items()}
_HEX_DIGITS = b"0123456789abcdef"


class Readable(Protocol):
    """Anything with a binary ``read(size)``: a file, or a window onto one."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; empty at the end."""
        ...


def read_blocks(
    stream: Readable,
    *,
    size: int = BLOCK_LINES,
    max_line: int = MAX_WIRE_LINE,
    read_size: int = _READ_BYTES,
) -> Iterator[list[bytes]]:
    """Yield the stream's LF-terminated lines, without LF, in lists of ``size``.

    The stream is read ``read_size`` bytes at a time; the last list may be
    shorter.  A missing final LF is refused, and so is a line longer than
    any canonical line, before it is kept whole in memory.
    The lines before such a line are yielded first, so that a checker reading
    the blocks reports the first bad line of the stream, whatever is wrong.
    """
    pending: list[bytes] = []
    tail = b""
    lineno = 0
    while chunk := stream.read(read_size):
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        if len(tail) > max_line or max(map(len, lines), default=0) > max_line:
            # The first line too long: a complete one, else the unfinished tail.
            long_lines = (i for i, line in enumerate(lines) if len(line) > max_line)
            overlong = next(long_lines, len(lines))
            pending.extend(lines[:overlong])
            yield from in_blocks(pending, size)
            raise EntryFormatError(lineno + overlong + 1, f"line longer than {max_line} bytes")
        lineno += len(lines)
        pending.extend(lines)
        while len(pending) >= size:
            yield pending[:size]
            del pending[:size]
    yield from in_blocks(pending, size)
    if tail:
        raise EntryFormatError(lineno + 1, "last line does not end with LF")


def in_blocks(lines: Iterable[bytes], size: int = BLOCK_LINES) -> Iterator[list[bytes]]:
    """``lines`` in lists of at most ``size``: a list sliced, anything else taken in C."""
    if isinstance(lines, list):
        for start in range(0, len(lines), size):
            yield lines[start : start + size]
        return
    stream = iter(lines)
    while block := list(islice(stream, size)):
        yield block


def json_array(lines: list[bytes]) -> str:
    """A block of checked entry lines as one JSON array of strings, for SQLite's ``json_each``.

    Joined, not escaped: checked entry (and delta) lines hold only
    ``[A-Za-z0-9:._ +-]``, none of which JSON needs to escape.  One statement
    then loads a whole block in C instead of a Python tuple per line.
    """
    return (b'["' + b'","'.join(lines) + b'"]').decode("ascii")


class ContentChecker:
    """Check content lines block by block: canonical, strictly increasing, identities unique.

    With ``hashing`` it also computes the SHA-256 of the content bytes; a
    client that already checked the raw download's digest leaves it off.
    """

    def __init__(self, *, hashing: bool = False) -> None:
        self._hash = hashlib.sha256() if hashing else None
        self._previous: bytes | None = None
        self.count = 0

    def check(self, lines: list[bytes]) -> None:
        """Check the next block of content lines (without LF); raise EntryFormatError."""
        if not lines:
            return
        # Joined once: the proof reads the block whole, and so does the hash.
        joined = b"\n".join(lines)
        if not _proves_run(lines, self._previous, _ENTRY_RE, 0, joined):
            previous = self._previous
            for lineno, line in enumerate(lines, self.count + 1):
                check_content_line(line, previous, lineno)
                previous = line
        if self._hash is not None:
            self._hash.update(joined)
            self._hash.update(b"\n")
        self._previous = lines[-1]
        self.count += len(lines)

    def add_verified(self, lines: list[bytes], fresh: Iterable[int] = ()) -> None:
        """Count and hash the next block of a content verified before, but at ``fresh``.

        The block's lines are lines of a verified content (a held one, which
        was checked when it was accepted), in their order, less any removed,
        plus new lines at the indexes ``fresh``.  Removing lines from a valid
        content leaves it valid, so only what the new lines and the block
        edge can disturb is checked (canonical, in order, a new identity):
        each new line after the line before it, the line after it after it,
        and the block's first line after the block before.
        """
        if not lines:
            return
        first = self.count + 1
        check_content_line(lines[0], self._previous, first)
        for at in sorted(set(fresh)):
            if at > 0:
                check_content_line(lines[at], lines[at - 1], first + at)
            if at + 1 < len(lines):
                check_content_line(lines[at + 1], lines[at], first + at + 1)
        if self._hash is not None:
            self._hash.update(b"\n".join(lines))
            self._hash.update(b"\n")
        self._previous = lines[-1]
        self.count += len(lines)

    def hexdigest(self) -> str:
        """SHA-256 of the content checked so far (only with ``hashing``)."""
        if self._hash is None:
            raise RuntimeError("this ContentChecker was made without hashing")
        return self._hash.hexdigest()


class DeltaChecker:
    """Check delta lines block by block and count the adds and removes.

    ``check`` returns where the block's removes start: every line before that
    index is an add, every line from it on a remove (adds sort first).
    """

    def __init__(self) -> None:
        self._previous: bytes | None = None
        self.adds = 0
        self.removes = 0

    def check(self, lines: list[bytes]) -> int:
        """Check the next block of delta lines (without LF); the index of its first remove."""
        if not lines:
            return 0
        # If the block is valid it is sorted, "+" (0x2B) before "-" (0x2D),
        # so this is where the removes start; if it is not, a proof below fails.
        cut = bisect_left(lines, b"-")
        adds, removes = lines[:cut], lines[cut:]
        previous = self._previous
        # An add before a remove is always in order, and identities need only
        # be unique within one sign: the removes continue a remove, or nothing.
        before_removes = None if adds or previous is None or previous[:1] != b"-" else previous
        proven = (
            not adds or (adds[0][:1] == b"+" and _proves_run(adds, previous, _DELTA_RE, 1))
        ) and (
            not removes
            or (removes[0][:1] == b"-" and _proves_run(removes, before_removes, _DELTA_RE, 1))
        )
        if not proven:
            for lineno, line in enumerate(lines, self.adds + self.removes + 1):
                check_delta_line(line, previous, lineno)
                previous = line
        self._previous = lines[-1]
        self.adds += cut
        self.removes += len(lines) - cut
        return cut


def _proves_run(
    lines: list[bytes],
    previous: bytes | None,
    line_re: re.Pattern[bytes],
    sign: int,
    joined: bytes | None = None,
) -> bool:
    """True only if the lines are valid and their identities strictly increase from ``previous``.

    ``sign`` is how many bytes come before the entry (1 in a delta).  The
    proof: the first and the last line share the prefix ``[sign]<alg>:``;
    the keys (each line cut to that prefix plus the algorithm's hex length)
    strictly increase.  Keys between two keys that share a prefix share it
    too, so every line starts with the prefix.  Then every line must match
    ``line_re`` (see ``_all_canonical``), so each key is exactly its sign and
    identity; strictly increasing identities of fixed length mean strictly
    increasing lines with no identity twice.  ``previous`` (an already
    checked line) must share the prefix as well.  ``joined`` is the block
    joined with LF, if the caller has it.
    """
    first = lines[0]
    colon = first.find(b":")
    length = _HEX_LENGTHS.get(first[sign:colon])
    if length is None:
        return False
    prefix = first[: colon + 1]
    if not lines[-1].startswith(prefix):
        return False
    if previous is not None and not previous.startswith(prefix):
        return False
    width = colon + 1 + length
    if joined is None:
        joined = b"\n".join(lines)
    # Without labels (every line exactly ``width`` long, the common case)
    # each line is its own key.
    bare = _all_of_width(joined, len(lines), width)
    keys = lines if bare else [line[:width] for line in lines]
    if previous is not None and not previous[:width] < keys[0]:
        return False
    # operator.lt, not bytes.__lt__: a C function call, not a slot wrapper's.
    if not all(map(operator.lt, keys, islice(keys, 1, None))):
        return False
    return _all_canonical(lines, prefix, bare, line_re, joined)


def _all_of_width(joined: bytes, count: int, width: int) -> bool:
    """Whether the ``count`` lines joined with LF in ``joined`` are each ``width`` bytes.

    Three passes in C instead of a length per line: the block holds exactly
    the LFs that join the lines (so no line holds one), they stand every
    ``width + 1`` bytes, and the block is as long as ``count`` such lines.
    """
    separators = count - 1
    return (
        len(joined) == count * (width + 1) - 1
        and joined.count(b"\n") == separators
        and joined[width :: width + 1] == b"\n" * separators
    )


def _all_canonical(
    lines: list[bytes],
    prefix: bytes,
    bare: bool,
    line_re: re.Pattern[bytes],
    joined: bytes,
) -> bool:
    """Whether every line, each known to start with ``prefix``, matches ``line_re``.

    Lines without a label (``bare``: all exactly the prefix and the hex
    length long, the common case) are checked on the block joined with LF
    instead of one match per line: deleting every hex digit from it must
    leave exactly the prefix's own other bytes, once per line, and the LF
    between lines, and nothing else.  Labelled lines are matched one by one.
    """
    if bare:
        residue = prefix.translate(None, _HEX_DIGITS)
        return joined.translate(None, _HEX_DIGITS) == b"\n".join([residue] * len(lines))
    return all(map(line_re.fullmatch, lines))
