"""Ed25519 keys, key ids, signatures and threshold verification.

Keys travel as PEM exactly as ``openssl genpkey -algorithm ed25519`` writes
them (unencrypted PKCS#8 private, SubjectPublicKeyInfo public), so every
signature Hashex makes can be checked with ``openssl pkeyutl -verify -rawin``.
A key id is the lowercase hex SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from client.protocol.errors import (
    BadSignatureError,
    FormatError,
    KeyFileError,
    ThresholdError,
    TooManySignaturesError,
    UnknownKeyError,
)
from client.protocol.usertext import read_small_file

KEY_ID_RE = re.compile(r"[0-9a-f]{64}")
SIGNATURE_LENGTH = 64
PUBLIC_KEY_LENGTH = 32

# A verifier reads at most this many signatures per document by default: a
# hostile sender must not make us spend unbounded time on Ed25519 checks.
DEFAULT_MAX_SIGNATURES = 16
# A PEM key is a few hundred bytes; nothing near this is a key.
MAX_KEY_FILE_BYTES = 64 * 1024


def generate_private_key() -> Ed25519PrivateKey:
    """Make a new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key (RFC 8032 encoding)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The key id: lowercase hex SHA-256 of the raw 32-byte public key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(public_key_raw(public)).hexdigest()


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    """A public key from its 32 raw bytes."""
    if len(raw) != PUBLIC_KEY_LENGTH:
        raise FormatError(f"public key must be {PUBLIC_KEY_LENGTH} bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, as ``openssl genpkey -algorithm ed25519`` writes it."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_to_pem(key: Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM, as ``openssl pkey -pubout`` writes it."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key_pem(data: bytes, source: str = "key") -> Ed25519PrivateKey:
    """Parse an unencrypted PKCS#8 Ed25519 private key, naming ``source`` on error."""
    if b"ENCRYPTED PRIVATE KEY" in data:
        raise KeyFileError(
            f"{source}: encrypted private keys are not supported; expected an "
            "unencrypted PKCS#8 PEM (openssl genpkey -algorithm ed25519)"
        )
    if b"-----BEGIN PRIVATE KEY-----" not in data:
        raise KeyFileError(
            f"{source}: not a PKCS#8 private key PEM (expected '-----BEGIN PRIVATE KEY-----')"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source}: unreadable private key PEM ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{source}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_key_pem(data: bytes, source: str = "key") -> Ed25519PublicKey:
    """Parse a SubjectPublicKeyInfo Ed25519 public key, naming ``source`` on error."""
    if b"-----BEGIN PUBLIC KEY-----" not in data:
        raise KeyFileError(
            f"{source}: not a public key PEM (expected '-----BEGIN PUBLIC KEY-----')"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source}: unreadable public key PEM ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{source}: not an Ed25519 key ({type(key).__name__})")
    return key


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """Load a private key file, with an error that names the file."""
    return load_private_key_pem(read_key_file(path), str(path))


def read_public_key(path: Path) -> Ed25519PublicKey:
    """Load a public key from a public or a private PEM file."""
    data = read_key_file(path)
    if b"PRIVATE KEY-----" in data:
        return load_private_key_pem(data, str(path)).public_key()
    return load_public_key_pem(data, str(path))


def read_key_file(path: Path) -> bytes:
    """The bytes of a PEM key file (at most 64 KiB), or KeyFileError naming the file."""
    try:
        return read_small_file(path, MAX_KEY_FILE_BYTES)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.strerror})") from None
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}: too large to be a key file") from None


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write a private key readable only by its owner; never overwrite a file.

    Overwriting would destroy a key that may be the only copy of an agency's
    root, so an existing file is an error.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create key file ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_to_pem(key))


@dataclass(frozen=True)
class Signature:
    """One detached Ed25519 signature: who signed (key id) and the 64 raw bytes."""

    keyid: str
    sig: bytes

    def to_json(self) -> dict[str, str]:
        """The wire form ``{"keyid": ..., "sig": <padded base64>}``."""
        return {"keyid": self.keyid, "sig": base64.b64encode(self.sig).decode("ascii")}

    @classmethod
    def from_json(cls, obj: Any, where: str = "signature") -> Signature:
        """Parse the wire form strictly: lowercase hex key id, canonical padded base64."""
        if not isinstance(obj, dict) or set(obj) != {"keyid", "sig"}:
            raise FormatError(f"{where}: expected an object with exactly 'keyid' and 'sig'")
        keyid, sig = obj["keyid"], obj["sig"]
        if not isinstance(keyid, str) or not KEY_ID_RE.fullmatch(keyid):
            raise FormatError(f"{where}: 'keyid' must be 64 lowercase hex characters")
        if not isinstance(sig, str):
            raise FormatError(f"{where}: 'sig' must be a base64 string")
        raw = decode_base64(sig, f"{where}: 'sig'")
        if len(raw) != SIGNATURE_LENGTH:
            raise FormatError(
                f"{where}: 'sig' must decode to {SIGNATURE_LENGTH} bytes, got {len(raw)}"
            )
        return cls(keyid, raw)


def decode_base64(text: str, where: str) -> bytes:
    """Decode padded standard base64, refusing any non-canonical spelling."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise FormatError(f"{where} is not valid padded base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise FormatError(f"{where} is not canonical base64")
    return raw


def sign(key: Ed25519PrivateKey, data: bytes) -> Signature:
    """Sign the exact bytes ``data``."""
    return Signature(key_id(key), key.sign(data))


def parse_signatures(obj: Any, max_signatures: int = DEFAULT_MAX_SIGNATURES) -> list[Signature]:
    """Parse a JSON array of signatures, refusing more than ``max_signatures``."""
    if not isinstance(obj, list):
        raise FormatError('signatures: expected a JSON array of {"keyid", "sig"} objects')
    if len(obj) > max_signatures:
        raise TooManySignaturesError(
            f"signatures: {len(obj)} given, at most {max_signatures} are read"
        )
    return [Signature.from_json(item, f"signatures[{i}]") for i, item in enumerate(obj)]


def verify_threshold(
    data: bytes,
    signatures: Iterable[Signature],
    keys: Mapping[str, Ed25519PublicKey],
    threshold: int,
    *,
    role: str = "signing",
    max_signatures: int = DEFAULT_MAX_SIGNATURES,
) -> frozenset[str]:
    """Check that ``threshold`` distinct keys of ``keys`` signed ``data``.

    Returns the key ids whose signatures verified.  A key id counts once
    however often it appears: counting repeats is the classic way a single
    stolen key passes for a quorum.  Signatures by keys outside ``keys`` are
    ignored, never trusted because of what they claim to be.
    """
    sigs = list(signatures)
    if len(sigs) > max_signatures:
        raise TooManySignaturesError(
            f"{len(sigs)} signatures given, at most {max_signatures} are read"
        )
    if threshold < 1:
        raise ThresholdError(f"{role} threshold must be at least 1")
    good: set[str] = set()
    bad: set[str] = set()
    unknown = 0
    for signature in sigs:
        key = keys.get(signature.keyid)
        if key is None:
            unknown += 1
            continue
        if signature.keyid in good:
            continue
        try:
            key.verify(signature.sig, data)
        except InvalidSignature:
            bad.add(signature.keyid)
        else:
            good.add(signature.keyid)
    if len(good) >= threshold:
        return frozenset(good)
    if bad - good:
        raise BadSignatureError(f"signature by {role} key {sorted(bad - good)[0]} does not verify")
    if not good and unknown:
        raise UnknownKeyError(f"no signature by a trusted {role} key ({unknown} by unknown keys)")
    raise ThresholdError(f"{len(good)} distinct trusted {role} key(s) signed, {threshold} required")
