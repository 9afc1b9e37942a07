"""Building the next version of a set: its delta bytes and its signed manifest.

Both sides of a diff stream in canonical order; the delta is written to the
caller's file, adds first, then removes (bytewise order, since ``+`` sorts
before ``-``), and nothing is held in memory beyond the removes, which are
spooled to a temporary file until the adds are written.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.protocol.documents import Keyset, Manifest, SignedDocument, sha256_hex, sign_document
from client.protocol.entries import ContentDigest, diff_contents


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
    ``old`` and ``new`` are canonical content lines without LF.
    """
    version = 1 if parent is None else Manifest.parse(parent).version + 1
    content = ContentDigest()
    delta_hash = hashlib.sha256()
    counts = {b"+": 0, b"-": 0}
    with tempfile.TemporaryFile() as removes:
        for line in diff_contents(old, _feeding(new, content)):
            sign = line[:1]
            counts[sign] += 1
            if sign == b"+":
                delta_out.write(line + b"\n")
                delta_hash.update(line + b"\n")
            else:
                removes.write(line + b"\n")
        removes.seek(0)
        while chunk := removes.read(1 << 20):
            delta_out.write(chunk)
            delta_hash.update(chunk)
    manifest = Manifest(
        set_name=set_name,
        version=version,
        parent_digest=None if parent is None else sha256_hex(parent),
        delta_digest=delta_hash.hexdigest(),
        adds=counts[b"+"],
        removes=counts[b"-"],
        content_digest=content.hexdigest(),
        count=content.count,
        issued=issued,
        expires=expires,
        keyset_version=keyset.version,
        keyset_digest=keyset.digest,
    )
    return sign_document("manifest", manifest.encode(), version, keys)


def _feeding(lines: Iterable[bytes], digest: ContentDigest) -> Iterator[bytes]:
    for line in lines:
        digest.add(line)
        yield line
