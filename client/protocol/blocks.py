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
import re
from bisect import bisect_left
from collections.abc import Iterator
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
    stream: Readable, *, size: int = BLOCK_LINES, max_line: int = MAX_WIRE_LINE
) -> Iterator[list[bytes]]:
    """Yield the stream's LF-terminated lines, without LF, in lists of ``size``.

    The last list may be shorter.  A missing final LF is refused, and so is a
    line longer than any canonical line, before it is kept whole in memory.
    The lines before such a line are yielded first, so that a checker reading
    the blocks reports the first bad line of the stream, whatever is wrong.
    """
    pending: list[bytes] = []
    tail = b""
    lineno = 0
    while chunk := stream.read(_READ_BYTES):
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        if len(tail) > max_line or max(map(len, lines), default=0) > max_line:
            # The first line too long: a complete one, else the unfinished tail.
            long_lines = (i for i, line in enumerate(lines) if len(line) > max_line)
            overlong = next(long_lines, len(lines))
            pending.extend(lines[:overlong])
            yield from _cut(pending, size)
            raise EntryFormatError(lineno + overlong + 1, f"line longer than {max_line} bytes")
        lineno += len(lines)
        pending.extend(lines)
        while len(pending) >= size:
            yield pending[:size]
            del pending[:size]
    yield from _cut(pending, size)
    if tail:
        raise EntryFormatError(lineno + 1, "last line does not end with LF")


def _cut(lines: list[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(lines), size):
        yield lines[start : start + size]


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
        if not _proves_run(lines, self._previous, _ENTRY_RE, 0):
            previous = self._previous
            for lineno, line in enumerate(lines, self.count + 1):
                check_content_line(line, previous, lineno)
                previous = line
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
    lines: list[bytes], previous: bytes | None, line_re: re.Pattern[bytes], sign: int
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
    checked line) must share the prefix as well.
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
    keys = [line[:width] for line in lines]
    if previous is not None and not previous[:width] < keys[0]:
        return False
    if not all(map(bytes.__lt__, keys, islice(keys, 1, None))):
        return False
    return _all_canonical(lines, prefix, width, line_re)


def _all_canonical(
    lines: list[bytes], prefix: bytes, width: int, line_re: re.Pattern[bytes]
) -> bool:
    """Whether every line, each known to start with ``prefix``, matches ``line_re``.

    Lines without a label (all exactly ``width`` long, the common case) are
    checked on the joined block instead of one match per line: each line is
    the prefix and then ``width - len(prefix)`` bytes, so deleting every hex
    digit from the block must leave exactly the prefix's own other bytes,
    once per line, and nothing else.  Labelled lines are matched one by one.
    """
    if set(map(len, lines)) == {width}:
        residue = prefix.translate(None, _HEX_DIGITS)
        return b"".join(lines).translate(None, _HEX_DIGITS) == residue * len(lines)
    return all(map(line_re.fullmatch, lines))
