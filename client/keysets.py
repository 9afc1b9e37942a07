"""Making an agency's signed keysets from key files.

Root keys given as private PEMs sign; root keys given as public PEMs are only
listed (their holders co-sign elsewhere).  A keyset is refused here unless
enough private root keys are present to reach its own root threshold, since
the hub and every consumer would refuse it anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from client.protocol.documents import Keyset, SignedDocument, keyset_expiry, sign_document
from client.protocol.errors import FormatError, InputError
from client.protocol.keys import (
    key_id,
    load_private_key_pem,
    load_public_key_pem,
    read_key_file,
)
from client.protocol.names import check_slug


@dataclass
class KeyChoice:
    """Which keys take which role in a new keyset, and the thresholds."""

    both: list[Ed25519PrivateKey] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)
    publishers: list[Path] = field(default_factory=list)
    root_threshold: int | None = None
    publish_threshold: int | None = None


def load_any_key(path: Path) -> tuple[Ed25519PublicKey, Ed25519PrivateKey | None]:
    """A key file's public key, and its private key when the file holds one."""
    data = read_key_file(path)
    if b"PRIVATE KEY-----" in data:
        private = load_private_key_pem(data, str(path))
        return private.public_key(), private
    return load_public_key_pem(data, str(path)), None


def make_keyset(
    agency: str,
    version: int,
    choice: KeyChoice,
    expires_days: int,
    extra_signers: Sequence[Ed25519PrivateKey] = (),
) -> SignedDocument:
    """Build and sign keyset ``version`` of ``agency`` from ``choice``.

    ``extra_signers`` are keys that sign without being listed: the previous
    keyset's roots during a rotation.
    """
    try:
        check_slug(agency, "agency")
    except ValueError as exc:
        raise InputError(str(exc)) from None
    roots: dict[str, Ed25519PublicKey] = {}
    publishers: dict[str, Ed25519PublicKey] = {}
    signers: dict[str, Ed25519PrivateKey] = {}
    for private in choice.both:
        roots[key_id(private)] = publishers[key_id(private)] = private.public_key()
        signers[key_id(private)] = private
    for path in choice.roots:
        public, maybe_private = load_any_key(path)
        roots[key_id(public)] = public
        if maybe_private is not None:
            signers[key_id(public)] = maybe_private
    for path in choice.publishers:
        public, _ = load_any_key(path)
        publishers[key_id(public)] = public
    if not roots:
        raise InputError("a keyset needs at least one root key (--key or --root)")
    if not publishers:
        raise InputError("a keyset needs at least one publish key (--key or --publish)")
    root_threshold = choice.root_threshold or 1
    publish_threshold = choice.publish_threshold or 1
    if root_threshold > len(roots):
        raise InputError(f"--root-threshold {root_threshold} exceeds the {len(roots)} root key(s)")
    if publish_threshold > len(publishers):
        raise InputError(
            f"--publish-threshold {publish_threshold} exceeds the {len(publishers)} publish key(s)"
        )
    own_signers = [key for kid, key in signers.items() if kid in roots]
    if len(own_signers) < root_threshold:
        raise InputError(
            f"only {len(own_signers)} private root key(s) given; the root "
            f"threshold {root_threshold} needs that many to sign"
        )
    try:
        keyset = Keyset.build(
            agency,
            version,
            list(roots.values()),
            root_threshold,
            list(publishers.values()),
            publish_threshold,
            keyset_expiry(expires_days),
        )
    except FormatError as exc:
        raise InputError(str(exc)) from None
    return sign_document("keyset", keyset.raw, version, [*own_signers, *extra_signers])
