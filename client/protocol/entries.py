"""Canonical entries, contents, deltas and their digests, all as streams.

An entry is one ASCII line ``<alg>:<lowercase hex>[ <label>]``.  Its identity
is ``<alg>:<hex>``; a set holds each identity at most once.  The *content* of
a version is its entries sorted bytewise, each ending in ``\\n``; the *delta*
is ``+<entry>``/``-<entry>`` lines sorted bytewise (so adds come first).

Everything received over the wire goes through the strict checks here and is
rejected, never repaired.  Only user input goes through ``normalise``.

Because every algorithm has a fixed hex length, sorting whole lines bytewise
puts the lines of one identity next to each other, and comparing lines with
or without their ``\\n`` gives the same order (``\\n`` sorts below the space
before a label).  The streaming checks below rely on both facts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from client.protocol.errors import (
    DeltaApplyError,
    EntryFormatError,
    SizeLimitError,
)

ALGORITHMS: dict[str, int] = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128, "pdq": 64}
"""Algorithm name → length of its lowercase hex digest."""

LABEL_RE = re.compile(rb"[A-Za-z0-9._-]{1,64}")
_WIRE_ENTRY_RE = re.compile(
    rb"(md5|sha1|sha256|sha512|pdq):([0-9a-f]+)(?: ([A-Za-z0-9._-]{1,64}))?"
)


def entry_pattern() -> bytes:
    """A regular expression matching exactly the canonical entries, lengths included."""
    hashes = b"|".join(
        name.encode() + b":[0-9a-f]{" + str(length).encode() + b"}"
        for name, length in ALGORITHMS.items()
    )
    return b"(?:" + hashes + rb")(?: [A-Za-z0-9._-]{1,64})?"


# The fast path of the streaming checks, which only fall back to parse_entry
# to explain a failure.
_VALID_ENTRY_RE = re.compile(entry_pattern())
# The longest canonical line: "sha512:" + 128 hex + " " + 64-character label.
MAX_ENTRY_LENGTH = len("sha512:") + 128 + 1 + 64
# One sign byte plus an entry plus the newline; longer lines are refused unread.
MAX_WIRE_LINE = MAX_ENTRY_LENGTH + 2


@dataclass(frozen=True, order=True)
class Entry:
    """One hash: algorithm, lowercase hex and an optional label."""

    alg: str
    hex: str
    label: str | None = None

    @property
    def identity(self) -> str:
        """``<alg>:<hex>``, the key a set holds at most once."""
        return f"{self.alg}:{self.hex}"

    def line(self) -> bytes:
        """The canonical line, without its newline."""
        text = self.identity if self.label is None else f"{self.identity} {self.label}"
        return text.encode("ascii")


def parse_entry(line: bytes, lineno: int) -> Entry:
    """Parse one canonical entry (no newline); anything else raises EntryFormatError."""
    match = _WIRE_ENTRY_RE.fullmatch(line)
    if match is None:
        raise EntryFormatError(lineno, _explain_bad_entry(line))
    alg, hex_, label = match.group(1).decode(), match.group(2).decode(), match.group(3)
    if len(hex_) != ALGORITHMS[alg]:
        raise EntryFormatError(
            lineno, f"{alg} hash has {len(hex_)} hex characters, expected {ALGORITHMS[alg]}"
        )
    return Entry(alg, hex_, label.decode() if label is not None else None)


def check_entry(line: bytes, lineno: int) -> None:
    """Raise EntryFormatError unless ``line`` is a canonical entry (no newline)."""
    if _VALID_ENTRY_RE.fullmatch(line) is None:
        parse_entry(line, lineno)
        raise EntryFormatError(lineno, "expected '<alg>:<lowercase hex>[ <label>]'")


def _explain_bad_entry(line: bytes) -> str:
    """Say precisely why a line is not a canonical entry."""
    if line.endswith(b"\r"):
        return "line ends with CR; lines must end with LF only"
    if line != line.rstrip(b" \t"):
        return "trailing whitespace"
    if not line:
        return "empty line"
    head, _, label = line.partition(b" ")
    alg, colon, hex_ = head.partition(b":")
    if not colon:
        return "expected '<alg>:<lowercase hex>[ <label>]'"
    if alg.decode("ascii", "replace") not in ALGORITHMS:
        return (
            f"unknown algorithm {alg.decode('ascii', 'replace')!r}; expected one of "
            f"{', '.join(ALGORITHMS)}"
        )
    if re.fullmatch(rb"[0-9a-fA-F]*", hex_) and hex_ != hex_.lower():
        return "hex must be lowercase"
    if not re.fullmatch(rb"[0-9a-f]+", hex_):
        return "hash is not hex"
    if not LABEL_RE.fullmatch(label):
        return "label must be 1-64 characters of A-Z a-z 0-9 . _ -, after one space"
    return "expected '<alg>:<lowercase hex>[ <label>]'"


def identity_of(line: bytes) -> bytes:
    """The ``<alg>:<hex>`` part of a canonical entry line."""
    return line.split(b" ", 1)[0]


def read_lines(
    stream: BinaryIO | Iterable[bytes], *, max_line: int = MAX_WIRE_LINE
) -> Iterator[bytes]:
    """Yield LF-terminated lines without their LF, refusing a missing final LF.

    Lines longer than any canonical line are refused before they are kept
    whole in memory, so a hostile stream cannot make us buffer without end.
    """
    pending = b""
    lineno = 0
    for chunk in _chunks(stream):
        pending += chunk
        start = 0
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            lineno += 1
            if end - start > max_line:
                raise EntryFormatError(lineno, f"line longer than {max_line} bytes")
            yield pending[start:end]
            start = end + 1
        pending = pending[start:]
        if len(pending) > max_line:
            raise EntryFormatError(lineno + 1, f"line longer than {max_line} bytes")
    if pending:
        raise EntryFormatError(lineno + 1, "last line does not end with LF")


def _chunks(stream: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    if hasattr(stream, "read"):
        while chunk := stream.read(1 << 16):
            yield chunk
    else:
        yield from stream


def check_content_line(line: bytes, previous: bytes | None, lineno: int) -> None:
    """Check one content line (no LF) after ``previous``: canonical, in order, a new identity."""
    check_entry(line, lineno)
    if previous is not None:
        _check_order(line, previous, lineno, "content")
        if identity_of(line) == identity_of(previous):
            raise EntryFormatError(
                lineno,
                f"identity {identity_of(line).decode()} appears twice with different labels",
            )


def check_delta_line(line: bytes, previous: bytes | None, lineno: int) -> None:
    """Check one delta line (no LF) after ``previous``: a sign, an entry, in order, no repeat."""
    sign, entry = line[:1], line[1:]
    if sign not in (b"+", b"-"):
        raise EntryFormatError(lineno, "delta line must start with '+' or '-'")
    check_entry(entry, lineno)
    if previous is not None:
        _check_order(line, previous, lineno, "delta")
        if previous[:1] == sign and identity_of(previous[1:]) == identity_of(entry):
            verb = "added" if sign == b"+" else "removed"
            raise EntryFormatError(lineno, f"identity {identity_of(entry).decode()} {verb} twice")


def _check_order(line: bytes, previous: bytes, lineno: int, kind: str) -> None:
    if line <= previous:
        raise EntryFormatError(
            lineno, f"{kind} lines are not in strictly increasing bytewise order (LC_ALL=C sort -u)"
        )


class ContentDigest:
    """Check and hash content lines as they stream past.

    ``add`` takes one line without its LF, checks that it is a canonical
    entry in strictly increasing bytewise order with an identity not seen
    just before, and feeds it to SHA-256.  Memory stays flat.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._previous: bytes | None = None
        self.count = 0

    def add(self, line: bytes) -> None:
        """Check and hash the next content line (without its LF)."""
        check_content_line(line, self._previous, self.count + 1)
        self._hash.update(line + b"\n")
        self._previous = line
        self.count += 1

    def hexdigest(self) -> str:
        """SHA-256 of the content bytes fed so far."""
        return self._hash.hexdigest()


class DeltaDigest:
    """Check and hash delta lines as they stream past.

    Lines are ``+entry`` then ``-entry``, each block strictly increasing, and
    no identity is added twice or removed twice.  Counts of adds and removes
    are kept for comparison with the manifest.  A line both added and
    removed is only caught when the delta is applied (``merge_delta``),
    since spotting it here would mean holding every add in memory.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._previous: bytes | None = None
        self.adds = 0
        self.removes = 0

    def add(self, line: bytes) -> tuple[str, bytes]:
        """Check and hash one delta line; return its sign and its entry line."""
        check_delta_line(line, self._previous, self.adds + self.removes + 1)
        sign, entry = line[:1], line[1:]
        self._hash.update(line + b"\n")
        self._previous = line
        if sign == b"+":
            self.adds += 1
        else:
            self.removes += 1
        return sign.decode(), entry

    def hexdigest(self) -> str:
        """SHA-256 of the delta bytes fed so far."""
        return self._hash.hexdigest()


def content_digest(lines: Iterable[bytes]) -> tuple[str, int]:
    """Digest and count of canonical content lines (given without LF)."""
    digest = ContentDigest()
    for line in lines:
        digest.add(line)
    return digest.hexdigest(), digest.count


def encode_lines(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Each line followed by LF: the wire bytes of a content or a delta."""
    for line in lines:
        yield line + b"\n"


def sha256_stream(stream: BinaryIO, *, limit: int | None = None) -> tuple[str, int]:
    """SHA-256 and length of a byte stream, read in chunks (flat memory).

    With ``limit``, reading stops with an error as soon as more bytes arrive:
    the size a manifest promises bounds what a verifier is willing to hash.
    """
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(1 << 20):
        size += len(chunk)
        if limit is not None and size > limit:
            raise SizeLimitError(f"stream longer than the {limit} bytes expected")
        digest.update(chunk)
    return digest.hexdigest(), size


def apply_delta(content: Iterable[bytes], delta: Iterable[bytes]) -> Iterator[bytes]:
    """Merge a sorted content with a sorted, checked delta into the new content.

    Convenience form of ``merge_delta`` for a delta small enough to hold in
    memory; it splits the ``+`` and ``-`` lines and sorts each block.
    """
    adds: list[bytes] = []
    removes: list[bytes] = []
    for line in delta:
        (adds if line[:1] == b"+" else removes).append(line[1:])
    adds.sort()
    removes.sort()
    yield from merge_delta(content, removes, adds)


def merge_delta(
    content: Iterable[bytes], removes: Iterable[bytes], adds: Iterable[bytes]
) -> Iterator[bytes]:
    """Stream the new content from sorted content, removes and adds (entry lines).

    A streaming three-way merge in flat memory: every removed line must be
    present exactly as written and is removed first; then every added
    identity must be absent.  A line both removed and added is refused too:
    it changes nothing, so it cannot be part of the canonical delta.
    Raises DeltaApplyError on the first line that does not apply.
    """
    removes_it, adds_it = iter(removes), iter(adds)
    remove = next(removes_it, None)
    add = next(adds_it, None)
    for line in content:
        key = identity_of(line)
        while add is not None and identity_of(add) < key:
            yield add
            add = next(adds_it, None)
        if remove is not None and remove < line:
            raise DeltaApplyError(f"removes {remove.decode()!r}, which is not in the set")
        if remove == line:
            if add == line:
                raise DeltaApplyError(f"removes and adds the same line {line.decode()!r}")
            remove = next(removes_it, None)
            continue
        if add is not None and identity_of(add) == key:
            raise DeltaApplyError(f"adds {key.decode()}, which is already in the set")
        yield line
    if remove is not None:
        raise DeltaApplyError(f"removes {remove.decode()!r}, which is not in the set")
    while add is not None:
        yield add
        add = next(adds_it, None)
