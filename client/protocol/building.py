"""Building the next version of a set: its delta bytes and its signed manifest.

A set may hold millions of entries, so nothing here holds a whole content:
the old and the new content stream past a block of lines at a time, and
the new one is checked (canonical, sorted, identities unique), counted and
hashed block by block as it goes.

``build_version`` diffs two whole contents.  Each block of the new content
is set against the window of the old content that ends where the block
ends (found by bisection), and the two are differenced as sets, in C: the
lines of the block the window lacks are adds, the lines of the window the
block lacks are removes; a window equal to its block costs one comparison.
A relabel is a remove of the old line and an add of the new one.

``build_changed_version`` takes a change instead of a new content: adds,
and removes by identity.  It finds each changed identity in the old
content's block by bisection, so the content is only carried past, counted
and hashed: the old content is a verified one (as a sync trusts it when it
applies a delta), so only the new lines are checked, where they stand.
What it costs beyond that is what the change costs.

Adds are written to the delta as they are found; removes (which sort after
every add) are spooled and appended at the end.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import filterfalse
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.protocol.blocks import BLOCK_LINES, ContentChecker, in_blocks
from client.protocol.documents import Keyset, Manifest, SignedDocument, sha256_hex, sign_document
from client.protocol.entries import identity_of
from client.protocol.errors import InputError

# Removes stay in memory up to this many bytes, then go to a temporary file.
_SPOOL_BYTES = 8 * 1024 * 1024
_COPY_BYTES = 1 << 20
# The identity at the start of each line of a joined block of entry lines.
_IDENTITY_RE = re.compile(rb"^[^ \n]+", re.MULTILINE)
# One more than any byte that may follow an identity in a line: a space.
_AFTER_IDENTITY = b"!"
_NOT_HELD_SHOWN = 5
# A changed block of the held content is checked whole when more than one
# line in this many is new; else only the new lines, where they stand.
_FRESH_SHARE = 8


class NotHeldError(InputError):
    """A change removes identities the old content does not hold.

    ``count`` is how many; ``shown`` the first few of them, in content order.
    """

    def __init__(self, count: int, shown: list[str]) -> None:
        self.count = count
        self.shown = shown
        super().__init__(f"removes {count} identities not held: {', '.join(shown)}")


def build_version(
    *,
    set_name: str,
    parent: bytes | None,
    old: Iterable[bytes],
    new: Iterable[bytes],
    keyset: Keyset,
    keys: Sequence[Ed25519PrivateKey],
    issued: datetime,
    expires: datetime,
    delta_out: BinaryIO,
) -> SignedDocument:
    """Write the delta from ``old`` to ``new`` and sign the manifest of the new version.

    ``parent`` is the previous version's manifest bytes (None for version 1);
    ``old`` and ``new`` are canonical content lines without LF, in content
    order, taken as they stream.  ``new`` is checked; a line out of place
    raises EntryFormatError (with what is written of the delta so far left
    in ``delta_out``).
    """
    content = ContentChecker(hashing=True)
    olds = _Cursor(in_blocks(old, BLOCK_LINES))
    with _Delta(delta_out) as delta:
        for block in in_blocks(new, BLOCK_LINES):
            content.check(block)
            # Every old line up to the block's last line: b"\0" follows nothing.
            window = olds.below(block[-1] + b"\0")
            if window == block:
                continue
            if not window:
                delta.add(block)
                continue
            delta.add(list(filterfalse(set(window).__contains__, block)))
            delta.remove(list(filterfalse(set(block).__contains__, window)))
        for rest in olds.rest():
            delta.remove(rest)
        return _sign(set_name, parent, content, delta, keyset, keys, issued, expires)


def build_changed_version(
    *,
    set_name: str,
    parent: bytes | None,
    old: Iterable[bytes],
    adds: Iterable[bytes],
    removes: Iterable[bytes],
    keyset: Keyset,
    keys: Sequence[Ed25519PrivateKey],
    issued: datetime,
    expires: datetime,
    delta_out: BinaryIO,
) -> SignedDocument:
    """Write the delta of a change to ``old`` and sign the manifest of the new version.

    The new content is ``old`` without every line whose identity ``removes``
    names or ``adds`` gives (whatever its label), plus ``adds``: an add of an
    identity held under another label relabels it, an add of a line held
    exactly changes nothing.  ``old`` is a verified content (a held one:
    it is counted and hashed, and only the adds are checked where they
    land), ``adds`` canonical content lines and ``removes`` entry
    lines (their labels are ignored), each in content order.  Removing an
    identity ``old`` does not hold raises NotHeldError, once the whole
    change has been seen.
    """
    content = ContentChecker(hashing=True)
    added = _Cursor(in_blocks(adds, BLOCK_LINES))
    removed = _Cursor(_identity_blocks(in_blocks(removes, BLOCK_LINES)))
    missing = _Missing()
    with _Delta(delta_out) as delta:
        for block in in_blocks(old, BLOCK_LINES):
            bound = identity_of(block[-1]) + _AFTER_IDENTITY
            adds_here, removes_here = added.below(bound), removed.below(bound)
            if not adds_here and not removes_here:
                # The held content was checked when it was accepted.
                content.add_verified(block)
                continue
            changed, fresh = _change(block, adds_here, removes_here, delta, missing)
            if len(fresh) * _FRESH_SHARE > len(changed):
                content.check(changed)
            else:
                content.add_verified(changed, fresh)
        for rest in added.rest():
            content.check(rest)
            delta.add(rest)
        for rest in removed.rest():
            missing.extend(rest)
        if missing.count:
            raise NotHeldError(missing.count, missing.shown)
        return _sign(set_name, parent, content, delta, keyset, keys, issued, expires)


def _change(
    block: list[bytes],
    adds: list[bytes],
    removes: list[bytes],
    delta: _Delta,
    missing: _Missing,
) -> tuple[list[bytes], list[int]]:
    """``block`` of the old content, changed: removes and relabels out, adds in, in order.

    Also where in the changed block its new lines are.
    """
    dropped: set[int] = set()
    for identity in removes:
        at = _find(block, identity)
        if at is None:
            missing.extend([identity])
        else:
            dropped.add(at)
    new: list[bytes] = []
    for line in adds:
        at = _find(block, identity_of(line))
        if at is None:
            new.append(line)
        elif block[at] == line:
            # Held exactly: kept, even if removed and added back.
            dropped.discard(at)
        else:
            dropped.add(at)
            new.append(line)
    delta.add(new)
    changed = block[:]
    gone = sorted(dropped)
    delta.remove([block[at] for at in gone])
    for at in reversed(gone):
        del changed[at]
    changed += new
    # Two sorted runs: Timsort merges them in about one pass.
    changed.sort()
    return changed, [bisect_left(changed, line) for line in new]


def _find(block: list[bytes], identity: bytes) -> int | None:
    """Where in the sorted ``block`` the line of ``identity`` is, if it is there."""
    at = bisect_left(block, identity)
    if at < len(block):
        line = block[at]
        if line.startswith(identity) and line[len(identity) : len(identity) + 1] in (b"", b" "):
            return at
    return None


class _Missing:
    """Identities removed but not held: how many, and the first few."""

    def __init__(self) -> None:
        self.count = 0
        self.shown: list[str] = []

    def extend(self, identities: list[bytes]) -> None:
        self.count += len(identities)
        room = _NOT_HELD_SHOWN - len(self.shown)
        self.shown += [identity.decode("ascii") for identity in identities[:room]]


class _Cursor:
    """A sorted stream of lines in blocks, taken a window at a time."""

    def __init__(self, blocks: Iterator[list[bytes]]) -> None:
        self._blocks = blocks
        self._block: list[bytes] = []
        self._at = 0

    def below(self, bound: bytes) -> list[bytes]:
        """Every line not yet taken that sorts before ``bound``."""
        taken: list[bytes] = []
        while True:
            block, at = self._block, self._at
            cut = bisect_left(block, bound, at)
            taken += block[at:cut]
            self._at = cut
            if cut < len(block):
                return taken
            following = next(self._blocks, None)
            if following is None:
                self._block, self._at = [], 0
                return taken
            self._block, self._at = following, 0

    def rest(self) -> Iterator[list[bytes]]:
        """Every line not yet taken, in blocks."""
        if self._at < len(self._block):
            yield self._block[self._at :]
        self._block, self._at = [], 0
        yield from self._blocks


class _Delta:
    """The delta as it is found: adds written at once, removes spooled until the end."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self._removes = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        self.adds = 0
        self.removes = 0

    def __enter__(self) -> _Delta:
        return self

    def __exit__(self, *exc: object) -> None:
        self._removes.close()

    def add(self, lines: list[bytes]) -> None:
        if lines:
            data = b"+" + b"\n+".join(lines) + b"\n"
            self._out.write(data)
            self._hash.update(data)
            self.adds += len(lines)

    def remove(self, lines: list[bytes]) -> None:
        if lines:
            self._removes.write(b"-" + b"\n-".join(lines) + b"\n")
            self.removes += len(lines)

    def finish(self) -> str:
        """Append the removes after the adds; the SHA-256 of the whole delta."""
        self._removes.seek(0)
        while chunk := self._removes.read(_COPY_BYTES):
            self._out.write(chunk)
            self._hash.update(chunk)
        return self._hash.hexdigest()


def _identity_blocks(blocks: Iterator[list[bytes]]) -> Iterator[list[bytes]]:
    """Blocks of entry lines as blocks of their identities."""
    for block in blocks:
        yield _IDENTITY_RE.findall(b"\n".join(block))


def _sign(
    set_name: str,
    parent: bytes | None,
    content: ContentChecker,
    delta: _Delta,
    keyset: Keyset,
    keys: Sequence[Ed25519PrivateKey],
    issued: datetime,
    expires: datetime,
) -> SignedDocument:
    version = 1 if parent is None else Manifest.parse(parent).version + 1
    manifest = Manifest(
        set_name=set_name,
        version=version,
        parent_digest=None if parent is None else sha256_hex(parent),
        delta_digest=delta.finish(),
        adds=delta.adds,
        removes=delta.removes,
        content_digest=content.hexdigest(),
        count=content.count,
        issued=issued,
        expires=expires,
        keyset_version=keyset.version,
        keyset_digest=keyset.digest,
    )
    return sign_document("manifest", manifest.encode(), version, keys)
