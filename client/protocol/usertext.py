"""A user's text file (a hash list) as lines of ASCII: what the bytes may and may not be.

Hash lists come from every kind of tool.  Windows tools start a file with a
UTF-8 byte-order mark and end lines with CRLF: both are read as if they
were not there.  Anything else that is not plain ASCII text is refused,
line by line and with the line's number, never guessed at: a NUL byte (a
binary file, or UTF-16 without its mark), a byte that is not ASCII, a line
longer than :data:`MAX_USER_LINE` characters.  A UTF-16 file is recognised
by its mark and refused as a whole, with the fix.

The file is read in chunks, so a file of one endless line costs one chunk
of memory, and a file of millions of good lines is split in C.
``read_user_text`` gives the whole file; ``iter_user_text`` gives it in
pieces of a bounded number of lines, by the same rules, so a list of
millions of lines can be taken a piece at a time.
"""

from __future__ import annotations

import codecs
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from client.protocol.errors import LineProblem

# Far longer than any entry, md5sum line or label: room for long file names
# in md5sum output, and a bound on what one line may cost.
MAX_USER_LINE = 8192
_CHUNK = 4 * 1024 * 1024
_UTF16_MARKS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# NUL, CR, and the bytes str.splitlines() also splits at besides LF: a block
# holding any of them (or a byte that is not ASCII) takes the line-by-line path.
_IRREGULAR = (b"\x00", b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e")


@dataclass
class UserText:
    """The lines of a user's file, each ending in LF; a bad line stands as a blank one.

    Bad lines keep their place, so every later line keeps its number; each
    one is reported in ``problems``.  A piece of a file (``iter_user_text``)
    starts after ``start`` lines: its problems carry the file's line numbers.
    """

    lines: list[str] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)
    start: int = 0

    def bad(self, message: str) -> None:
        """Record the next line as bad, keeping its place."""
        self.problems.append(LineProblem(self.start + len(self.lines) + 1, message))
        self.lines.append("\n")

    def split(self, count: int) -> UserText:
        """Take the first ``count`` lines off as a piece of their own; this keeps the rest."""
        end = self.start + count
        head = UserText(self.lines[:count], [p for p in self.problems if p.line <= end], self.start)
        del self.lines[:count]
        self.problems = [p for p in self.problems if p.line > end]
        self.start = end
        return head


def read_user_text(stream: BinaryIO) -> UserText:
    """Read a user's text file from ``stream`` (see the module doc)."""
    text = UserText()
    for _ in _read(stream, text):
        pass
    return text


def iter_user_text(stream: BinaryIO, lines: int) -> Iterator[UserText]:
    """Read a user's text file in pieces of ``lines`` lines (the last may be shorter).

    The same rules as ``read_user_text``: joined, the pieces are what it
    gives.  An empty file gives no piece.
    """
    if lines < 1:
        raise ValueError("a piece holds at least one line")
    text = UserText()
    for _ in _read(stream, text):
        if len(text.lines) >= lines:
            yield from _pieces(text.split(len(text.lines) // lines * lines), lines)
    if text.lines:
        yield text


def _pieces(text: UserText, size: int) -> Iterator[UserText]:
    """``text`` cut into pieces of ``size`` lines, each with its own problems."""
    numbers = [problem.line for problem in text.problems]
    for at in range(0, len(text.lines), size):
        start = text.start + at
        low, high = bisect_right(numbers, start), bisect_right(numbers, start + size)
        yield UserText(text.lines[at : at + size], text.problems[low:high], start)


def _read(stream: BinaryIO, text: UserText) -> Iterator[None]:
    """Read ``stream`` into ``text``, pausing after each block: ``text`` may be split then."""
    head = stream.read(_CHUNK)
    if head.startswith(_UTF16_MARKS):
        text.bad("the file is UTF-16; save it as UTF-8 or ASCII text and try again")
        yield
        return
    pending = head.removeprefix(codecs.BOM_UTF8)
    skipping = False
    ended = not head
    # Until the stream ends, not until nothing is pending: a chunk may end
    # exactly at the end of a line, and the file go on.
    while pending or not ended:
        chunk = b"" if ended else stream.read(_CHUNK)
        ended = not chunk
        if skipping:
            # The rest of an over-long line, already reported, is dropped.
            end = pending.find(b"\n")
            if end < 0:
                pending = chunk
                continue
            pending, skipping = pending[end + 1 :], False
        data = pending + chunk
        cut = data.rfind(b"\n") + 1 if chunk else len(data)
        _add_block(text, data[:cut])
        pending = data[cut:]
        if len(pending) > MAX_USER_LINE:
            text.bad(f"line is longer than {MAX_USER_LINE} characters")
            skipping = True
        yield


def read_small_file(path: Path, limit: int) -> bytes:
    """The bytes of a small file a user gives (a key, a keyset), without a byte-order mark.

    Raises OSError if it cannot be read, ValueError if it holds more than
    ``limit`` bytes (only ``limit + 1`` are ever read).
    """
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data.removeprefix(codecs.BOM_UTF8)


def _add_block(text: UserText, block: bytes) -> None:
    """Add whole lines (the last may lack its LF at the end of the file)."""
    if not block:
        return
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n")
    if block.isascii() and not any(byte in block for byte in _IRREGULAR):
        lines = block.decode("ascii").splitlines(keepends=True)
        if max(map(len, lines)) <= MAX_USER_LINE + 1:
            text.lines.extend(lines)
            return
    for raw in block.splitlines(keepends=True):
        _add_line(text, raw)


def _add_line(text: UserText, raw: bytes) -> None:
    line = raw.rstrip(b"\n").removesuffix(b"\r")
    nul = line.find(b"\x00")
    if nul >= 0:
        text.bad(f"contains a NUL byte at column {nul + 1}: not a text file")
    elif not line.isascii():
        column, byte = next((i, b) for i, b in enumerate(line) if b > 0x7F)
        text.bad(f"contains the non-ASCII byte 0x{byte:02x} at column {column + 1}")
    elif len(line) > MAX_USER_LINE:
        text.bad(f"line is longer than {MAX_USER_LINE} characters")
    else:
        text.lines.append(line.decode("ascii") + "\n")
