"""Building the next version of a set: its delta bytes and its signed manifest.

The new content is checked (canonical, sorted, identities unique) and hashed
a block at a time.  The delta is the lines of the new content the old one
lacks (adds) and the lines of the old content the new one lacks (removes):
a relabel is a remove of the old line and an add of the new one.  Both are
found with set lookups that keep each side's order, so no per-line merge
runs in Python; the price is holding the old content's lines in memory,
which a publisher already holds the new content's lines beside.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.protocol.blocks import BLOCK_LINES, ContentChecker
from client.protocol.documents import Keyset, Manifest, SignedDocument, sha256_hex, sign_document


def build_version(
    *,
    set_name: str,
    parent: bytes | None,
    old: Iterable[bytes],
    new: Sequence[bytes],
    keyset: Keyset,
    keys: Sequence[Ed25519PrivateKey],
    issued: datetime,
    expires: datetime,
    delta_out: BinaryIO,
) -> SignedDocument:
    """Write the delta from ``old`` to ``new`` and sign the manifest of the new version.

    ``parent`` is the previous version's manifest bytes (None for version 1);
    ``old`` and ``new`` are canonical content lines without LF, in content
    order.  ``new`` is checked; a line out of place raises EntryFormatError.
    """
    version = 1 if parent is None else Manifest.parse(parent).version + 1
    content = ContentChecker(hashing=True)
    for start in range(0, len(new), BLOCK_LINES):
        content.check(list(new[start : start + BLOCK_LINES]))
    old_lines = list(old)
    if old_lines:
        old_set, new_set = set(old_lines), set(new)
        adds = [line for line in new if line not in old_set]
        removes = [line for line in old_lines if line not in new_set]
    else:
        adds, removes = list(new), []
    delta_hash = hashlib.sha256()
    # Adds first: "+" sorts before "-".
    for sign, lines in ((b"+", adds), (b"-", removes)):
        for start in range(0, len(lines), BLOCK_LINES):
            block = sign + (b"\n" + sign).join(lines[start : start + BLOCK_LINES]) + b"\n"
            delta_out.write(block)
            delta_hash.update(block)
    manifest = Manifest(
        set_name=set_name,
        version=version,
        parent_digest=None if parent is None else sha256_hex(parent),
        delta_digest=delta_hash.hexdigest(),
        adds=len(adds),
        removes=len(removes),
        content_digest=content.hexdigest(),
        count=content.count,
        issued=issued,
        expires=expires,
        keyset_version=keyset.version,
        keyset_digest=keyset.digest,
    )
    return sign_document("manifest", manifest.encode(), version, keys)
