"""Builders shared by the protocol and client tests: keys and valid documents.

Every digest here is synthetic (``tests.synthetic``).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from client.protocol.building import build_version
from client.protocol.documents import Keyset, Manifest, SignedDocument, sign_document
from client.protocol.keys import Signature, sign
from tests.synthetic import UNSEEDED, random_hex

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
AGENCY = "example-unit"


def key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """A deterministic Ed25519 key from 32 seed bytes (so Hypothesis can shrink keys)."""
    return Ed25519PrivateKey.from_private_bytes(seed)


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def make_keyset(
    roots: Sequence[Ed25519PrivateKey | Ed25519PublicKey],
    publishers: Sequence[Ed25519PrivateKey | Ed25519PublicKey] | None = None,
    *,
    agency: str = AGENCY,
    version: int = 1,
    root_threshold: int = 1,
    publish_threshold: int = 1,
    expires: datetime | None = None,
) -> Keyset:
    """A valid keyset (its ``raw`` set) from private or public keys."""

    def public(key: Ed25519PrivateKey | Ed25519PublicKey) -> Ed25519PublicKey:
        return key.public_key() if isinstance(key, Ed25519PrivateKey) else key

    return Keyset.build(
        agency,
        version,
        [public(k) for k in roots],
        root_threshold,
        [public(k) for k in (roots if publishers is None else publishers)],
        publish_threshold,
        expires or NOW + timedelta(days=365),
    )


def signed_keyset(keyset: Keyset, signers: Sequence[Ed25519PrivateKey]) -> SignedDocument:
    return sign_document("keyset", keyset.raw, keyset.version, list(signers))


def make_manifest(
    keyset: Keyset,
    *,
    version: int = 1,
    set_name: str | None = None,
    adds: int = 3,
    removes: int = 0,
    count: int | None = None,
    issued: datetime = NOW,
    expires: datetime | None = None,
) -> Manifest:
    """A valid manifest naming ``keyset`` by version and digest."""
    return Manifest(
        set_name=set_name or f"{keyset.agency}/known-files",
        version=version,
        parent_digest=None if version == 1 else random_hex(UNSEEDED, 64),
        delta_digest=random_hex(UNSEEDED, 64),
        adds=adds,
        removes=0 if version == 1 else removes,
        content_digest=random_hex(UNSEEDED, 64),
        count=adds if version == 1 and count is None else (count if count is not None else 10),
        issued=issued,
        expires=expires or issued + timedelta(days=30),
        keyset_version=keyset.version,
        keyset_digest=keyset.digest,
    )


def sign_all(data: bytes, keys: Sequence[Ed25519PrivateKey]) -> list[Signature]:
    """One signature per key, in the order given (repeats allowed, for threshold tests)."""
    return [sign(key, data) for key in keys]


def key_id_of_raw(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def delta_between(old: Sequence[bytes], new: Sequence[bytes]) -> list[bytes]:
    """The delta lines (no LF) a publisher builds to turn ``old`` into ``new``."""
    key = new_key()
    delta = io.BytesIO()
    build_version(
        set_name=f"{AGENCY}/list",
        parent=None,
        old=old,
        new=new,
        keyset=make_keyset([key], [key]),
        keys=[key],
        issued=datetime(2026, 1, 1, tzinfo=UTC),
        expires=datetime(2027, 1, 1, tzinfo=UTC),
        delta_out=delta,
    )
    return delta.getvalue().splitlines()
