"""The signed documents: manifests and keysets, their strict parsing and verification.

Both are strict ASCII lines ending in LF, in a fixed order, with no other
lines.  A verifier is told which kind it expects and checks, in this order:

* manifest: the publish-threshold signatures by a trusted keyset's publish
  keys, then the strict parse, then that the manifest names that very keyset
  (version and digest), then that re-encoding gives the received bytes;
* keyset: root-threshold signatures by the *previous* keyset's root keys
  (keyset 1: the pinned root key, or, when first registering an agency, its
  own roots), then the strict parse, then root-threshold signatures by its
  *own* root keys, then re-encoding.

Signatures are checked before a single line is parsed, so a parser bug can
only ever be reached with bytes an agency really signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from client.protocol.errors import (
    ChainError,
    FormatError,
    SignatureError,
    WrongKindError,
)
from client.protocol.keys import (
    DEFAULT_MAX_SIGNATURES,
    Signature,
    decode_base64,
    key_id,
    parse_signatures,
    public_key_from_raw,
    public_key_raw,
    sign,
    verify_threshold,
)
from client.protocol.names import check_set_name, check_slug

Kind = Literal["manifest", "keyset"]
MANIFEST_HEADER = "hashex-manifest/v1"
KEYSET_HEADER = "hashex-keyset/v1"
HEADERS: dict[str, Kind] = {MANIFEST_HEADER: "manifest", KEYSET_HEADER: "keyset"}

# A signed document is a few hundred bytes; a keyset with many keys a few KB.
MAX_DOCUMENT_BYTES = 64 * 1024

_NUMBER = r"(0|[1-9][0-9]{0,17})"
_HEX64 = r"([0-9a-f]{64})"
_TIME = r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)"
_B64KEY = r"([A-Za-z0-9+/]{43}=)"


def format_time(moment: datetime) -> str:
    """UTC RFC 3339 with seconds and ``Z``, the only time form in documents."""
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}Z"


def parse_time(text: str, where: str) -> datetime:
    """Parse ``YYYY-MM-DDTHH:MM:SSZ`` strictly (a real date and time, UTC)."""
    if not re.fullmatch(_TIME, text):
        raise FormatError(f"{where}: expected a UTC time like 2026-01-31T12:00:00Z")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise FormatError(f"{where}: {text} is not a valid date and time") from None


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _utc_seconds(moment: datetime) -> datetime:
    # A naive time would silently mean the machine's local zone.
    if moment.tzinfo is None:
        raise ValueError("naive datetime given; documents need an aware UTC time")
    return moment.astimezone(UTC).replace(microsecond=0)


class _Lines:
    """A cursor over a document's lines that names the line on every error."""

    def __init__(self, kind: str, data: bytes) -> None:
        self.kind = kind
        if not data.endswith(b"\n"):
            raise FormatError(f"{kind}: must end with a newline")
        if b"\r" in data:
            raise FormatError(f"{kind}: contains CR; lines must end with LF only")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{kind}: byte {exc.start} is not ASCII") from None
        self.lines = text[:-1].split("\n")
        self.index = 0

    def where(self) -> str:
        return f"{self.kind} line {self.index + 1}"

    def peek(self) -> str | None:
        return self.lines[self.index] if self.index < len(self.lines) else None

    def take(self, pattern: str, expected: str) -> tuple[str, ...]:
        """Match the next line fully against ``pattern`` or say what was expected."""
        line = self.peek()
        if line is None:
            raise FormatError(f"{self.where()}: missing; expected {expected!r}")
        if line != line.rstrip():
            raise FormatError(f"{self.where()}: trailing whitespace")
        match = re.fullmatch(pattern, line)
        if match is None:
            raise FormatError(f"{self.where()}: expected {expected!r}, got {line[:80]!r}")
        self.index += 1
        return match.groups()

    def end(self) -> None:
        if self.index != len(self.lines):
            raise FormatError(f"{self.where()}: unexpected line {self.lines[self.index][:80]!r}")


def _check_header(kind: Kind, data: bytes) -> None:
    """Refuse a document of another kind before anything else is read."""
    first = data.split(b"\n", 1)[0]
    if first.endswith(b"\r"):
        raise FormatError(f"{kind} line 1: ends with CR; lines must end with LF only")
    header = MANIFEST_HEADER if kind == "manifest" else KEYSET_HEADER
    if first != header.encode():
        other = HEADERS.get(first.decode("ascii", "replace"))
        if other is not None:
            raise WrongKindError(f"expected a {kind}, got a {other}")
        raise WrongKindError(f"{kind} line 1: expected {header!r}")


@dataclass(frozen=True)
class Manifest:
    """One version of one set, as signed by its agency."""

    set_name: str
    version: int
    parent_digest: str | None
    delta_digest: str
    adds: int
    removes: int
    content_digest: str
    count: int
    issued: datetime
    expires: datetime
    keyset_version: int
    keyset_digest: str

    @property
    def agency(self) -> str:
        """The owning agency's slug (the part of the set name before the slash)."""
        return self.set_name.split("/", 1)[0]

    def encode(self) -> bytes:
        """The canonical bytes of this manifest."""
        if self.version == 1:
            parent = "parent 0 none"
        else:
            parent = f"parent {self.version - 1} sha256:{self.parent_digest}"
        lines = [
            MANIFEST_HEADER,
            f"set {self.set_name}",
            f"version {self.version}",
            parent,
            f"delta sha256:{self.delta_digest} adds {self.adds} removes {self.removes}",
            f"content sha256:{self.content_digest} count {self.count}",
            f"issued {format_time(self.issued)}",
            f"expires {format_time(self.expires)}",
            f"keyset {self.keyset_version} sha256:{self.keyset_digest}",
        ]
        return ("\n".join(lines) + "\n").encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        """Parse canonical manifest bytes strictly; anything else raises FormatError."""
        _check_header("manifest", data)
        lines = _Lines("manifest", data)
        lines.take(re.escape(MANIFEST_HEADER), MANIFEST_HEADER)
        (set_name,) = lines.take(r"set (\S+)", "set <agency>/<set>")
        try:
            check_set_name(set_name)
        except ValueError as exc:
            raise FormatError(f"manifest line 2: {exc}") from None
        (version_text,) = lines.take(f"version {_NUMBER}", "version <n>")
        version = int(version_text)
        if version < 1:
            raise FormatError("manifest line 3: version must be at least 1")
        parent_digest = cls._parse_parent(lines, version)
        delta_digest, adds, removes = lines.take(
            f"delta sha256:{_HEX64} adds {_NUMBER} removes {_NUMBER}",
            "delta sha256:<hex> adds <count> removes <count>",
        )
        if version == 1 and int(removes) != 0:
            raise FormatError("manifest line 5: version 1 cannot remove entries")
        content_digest, count = lines.take(
            f"content sha256:{_HEX64} count {_NUMBER}", "content sha256:<hex> count <count>"
        )
        if version == 1 and int(count) != int(adds):
            raise FormatError("manifest line 6: version 1 must count exactly its adds")
        (issued_text,) = lines.take(f"issued {_TIME}", "issued <UTC RFC 3339>")
        issued = parse_time(issued_text, "manifest line 7")
        (expires_text,) = lines.take(f"expires {_TIME}", "expires <UTC RFC 3339>")
        expires = parse_time(expires_text, "manifest line 8")
        if expires <= issued:
            raise FormatError("manifest line 8: expires must be after issued")
        keyset_version, keyset_digest = lines.take(
            f"keyset {_NUMBER} sha256:{_HEX64}", "keyset <n> sha256:<hex>"
        )
        if int(keyset_version) < 1:
            raise FormatError("manifest line 9: keyset version must be at least 1")
        lines.end()
        manifest = cls(
            set_name,
            version,
            parent_digest,
            delta_digest,
            int(adds),
            int(removes),
            content_digest,
            int(count),
            issued,
            expires,
            int(keyset_version),
            keyset_digest,
        )
        _check_reencoding("manifest", manifest.encode(), data)
        return manifest

    @staticmethod
    def _parse_parent(lines: _Lines, version: int) -> str | None:
        if version == 1:
            lines.take(r"parent 0 none", "parent 0 none")
            return None
        parent_version, parent_digest = lines.take(
            f"parent {_NUMBER} sha256:{_HEX64}", f"parent {version - 1} sha256:<hex>"
        )
        if int(parent_version) != version - 1:
            raise FormatError(
                f"manifest line 4: parent must be version {version - 1}, got {parent_version}"
            )
        return parent_digest


@dataclass(frozen=True)
class Keyset:
    """An agency's keys: root keys sign keysets, publish keys sign manifests.

    Version 0 never appears on the wire: it is the implied keyset of a pinned
    root key (``Keyset.from_root_key``), one root key with threshold 1.
    """

    agency: str
    version: int
    root_threshold: int
    root_keys: Mapping[str, Ed25519PublicKey]
    publish_threshold: int
    publish_keys: Mapping[str, Ed25519PublicKey]
    expires: datetime
    raw: bytes = field(default=b"", compare=False)

    @property
    def digest(self) -> str:
        """SHA-256 of the keyset's signed bytes, as a manifest names it."""
        return sha256_hex(self.raw)

    @classmethod
    def from_root_key(cls, agency: str, key: Ed25519PublicKey) -> Keyset:
        """The implied keyset 0 of a pinned root key: that key alone, threshold 1."""
        check_slug(agency, "agency")
        return cls(agency, 0, 1, {key_id(key): key}, 1, {}, datetime.max.replace(tzinfo=UTC))

    @classmethod
    def build(
        cls,
        agency: str,
        version: int,
        roots: Sequence[Ed25519PublicKey],
        root_threshold: int,
        publishers: Sequence[Ed25519PublicKey],
        publish_threshold: int,
        expires: datetime,
    ) -> Keyset:
        """Make a keyset from keys, validated exactly as a parsed one would be."""
        keyset = cls(
            agency,
            version,
            root_threshold,
            _keys_by_id(roots),
            publish_threshold,
            _keys_by_id(publishers),
            _utc_seconds(expires),
        )
        raw = keyset.encode()
        return cls.parse(raw)

    def encode(self) -> bytes:
        """The canonical bytes of this keyset."""
        lines = [
            KEYSET_HEADER,
            f"agency {self.agency}",
            f"version {self.version}",
            f"root-threshold {self.root_threshold}",
        ]
        lines += [f"root {kid} {_b64_key(key)}" for kid, key in sorted(self.root_keys.items())]
        lines.append(f"publish-threshold {self.publish_threshold}")
        lines += [
            f"publish {kid} {_b64_key(key)}" for kid, key in sorted(self.publish_keys.items())
        ]
        lines.append(f"expires {format_time(self.expires)}")
        return ("\n".join(lines) + "\n").encode("ascii")

    @classmethod
    def parse(cls, data: bytes, *, check_encoding: bool = True) -> Keyset:
        """Parse canonical keyset bytes strictly; anything else raises FormatError.

        ``check_encoding=False`` leaves the re-encoding comparison to the
        caller, so ``verify_keyset`` can check its own roots' signatures first,
        in the order the protocol fixes.
        """
        _check_header("keyset", data)
        lines = _Lines("keyset", data)
        lines.take(re.escape(KEYSET_HEADER), KEYSET_HEADER)
        (agency,) = lines.take(r"agency (\S+)", "agency <slug>")
        try:
            check_slug(agency, "agency")
        except ValueError as exc:
            raise FormatError(f"keyset line 2: {exc}") from None
        (version_text,) = lines.take(f"version {_NUMBER}", "version <n>")
        if int(version_text) < 1:
            raise FormatError("keyset line 3: version must be at least 1")
        (root_threshold,) = lines.take(f"root-threshold {_NUMBER}", "root-threshold <t>")
        roots = _parse_key_lines(lines, "root")
        _check_threshold("root", int(root_threshold), len(roots))
        (publish_threshold,) = lines.take(f"publish-threshold {_NUMBER}", "publish-threshold <t>")
        publishers = _parse_key_lines(lines, "publish")
        _check_threshold("publish", int(publish_threshold), len(publishers))
        expires_where = lines.where()
        (expires_text,) = lines.take(f"expires {_TIME}", "expires <UTC RFC 3339>")
        expires = parse_time(expires_text, expires_where)
        lines.end()
        keyset = cls(
            agency,
            int(version_text),
            int(root_threshold),
            roots,
            int(publish_threshold),
            publishers,
            expires,
            raw=data,
        )
        if check_encoding:
            _check_reencoding("keyset", keyset.encode(), data)
        return keyset


def _b64_key(key: Ed25519PublicKey) -> str:
    return base64.b64encode(public_key_raw(key)).decode("ascii")


def _keys_by_id(keys: Sequence[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    return {key_id(key): key for key in keys}


def _parse_key_lines(lines: _Lines, role: str) -> dict[str, Ed25519PublicKey]:
    """Read consecutive ``<role> <keyid> <base64>`` lines, sorted and unique."""
    keys: dict[str, Ed25519PublicKey] = {}
    previous = ""
    while (line := lines.peek()) is not None and line.startswith(f"{role} "):
        where = lines.where()
        kid, b64 = lines.take(
            f"{role} {_HEX64} {_B64KEY}", f"{role} <keyid> <base64 of the raw public key>"
        )
        key = public_key_from_raw(decode_base64(b64, f"{where}: key"))
        if key_id(key) != kid:
            raise FormatError(f"{where}: key id {kid} is not the SHA-256 of the key")
        if kid <= previous:
            what = "repeated" if kid == previous else "not sorted by key id"
            raise FormatError(f"{where}: {role} key {kid} {what}")
        keys[kid] = key
        previous = kid
    return keys


def _check_threshold(role: str, threshold: int, count: int) -> None:
    if count == 0:
        raise FormatError(f"keyset: at least one {role} key is required")
    if not 1 <= threshold <= count:
        raise FormatError(
            f"keyset: {role}-threshold {threshold} must be between 1 and the "
            f"number of {role} keys ({count})"
        )


def _check_reencoding(kind: str, encoded: bytes, received: bytes) -> None:
    """The last line of defence: only one spelling of a document is accepted."""
    if encoded != received:
        raise FormatError(f"{kind}: not in canonical form (re-encoding differs)")


@dataclass(frozen=True)
class SignedDocument:
    """A document's exact bytes with its detached signatures: the API object.

    Its JSON form is ``{"version": n, "<kind>": "<text>", "signatures": [...]}``,
    which is also the keyset file that ``keyset init`` writes.
    """

    kind: Kind
    version: int
    data: bytes
    signatures: tuple[Signature, ...]

    def to_json(self) -> dict[str, Any]:
        """The API object for this document."""
        return {
            "version": self.version,
            self.kind: self.data.decode("ascii"),
            "signatures": [s.to_json() for s in self.signatures],
        }

    def dumps(self) -> str:
        """The API object as JSON text with a trailing newline."""
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def from_json(
        cls, kind: Kind, obj: Any, *, max_signatures: int = DEFAULT_MAX_SIGNATURES
    ) -> SignedDocument:
        """Read an API object of ``kind``; its ``version`` must match the text's."""
        if not isinstance(obj, dict) or set(obj) != {"version", kind, "signatures"}:
            raise FormatError(
                f"expected a {kind} object with exactly 'version', '{kind}' and 'signatures'"
            )
        version, text = obj["version"], obj[kind]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise FormatError(f"{kind} object: 'version' must be a positive integer")
        if not isinstance(text, str) or not text.isascii():
            raise FormatError(f"{kind} object: '{kind}' must be ASCII text")
        data = text.encode("ascii")
        if len(data) > MAX_DOCUMENT_BYTES:
            raise FormatError(f"{kind} object: larger than {MAX_DOCUMENT_BYTES} bytes")
        signatures = tuple(parse_signatures(obj["signatures"], max_signatures))
        if not re.search(rf"^version {version}$", text, re.MULTILINE):
            raise FormatError(f"{kind} object: 'version' {version} differs from the text")
        return cls(kind, version, data, signatures)

    @classmethod
    def loads(cls, kind: Kind, text: str | bytes) -> SignedDocument:
        """Parse the JSON text of an API object or keyset file."""
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"{kind} object: not valid JSON ({exc})") from None
        return cls.from_json(kind, obj)


def sign_document(
    kind: Kind, data: bytes, version: int, keys: Sequence[Ed25519PrivateKey]
) -> SignedDocument:
    """Sign ``data`` with each key (each key once) into a SignedDocument."""
    unique = {key_id(key): key for key in keys}
    signatures = tuple(sign(key, data) for _, key in sorted(unique.items()))
    return SignedDocument(kind, version, data, signatures)


def verify_manifest(
    data: bytes,
    signatures: Sequence[Signature],
    keyset: Keyset,
    *,
    max_signatures: int = DEFAULT_MAX_SIGNATURES,
) -> Manifest:
    """Verify a manifest against one trusted keyset and return it parsed.

    The manifest must be signed by ``keyset``'s publish threshold, then be
    canonical (strict parse and byte-identical re-encoding), then name
    exactly that keyset by version and digest: keys are
    only ever taken from the verifier's state, never from what a manifest
    claims.
    """
    _check_header("manifest", data)
    _check_size("manifest", data)
    verify_threshold(
        data,
        signatures,
        keyset.publish_keys,
        keyset.publish_threshold,
        role="publish",
        max_signatures=max_signatures,
    )
    manifest = Manifest.parse(data)
    return _check_names_keyset(manifest, keyset)


def _check_names_keyset(manifest: Manifest, keyset: Keyset) -> Manifest:
    """The manifest must belong to the keyset's agency and name that very keyset."""
    if manifest.agency != keyset.agency:
        raise ChainError(
            f"manifest of agency {manifest.agency} verified with the keyset of {keyset.agency}"
        )
    if (manifest.keyset_version, manifest.keyset_digest) != (keyset.version, keyset.digest):
        raise ChainError(
            f"manifest names keyset {manifest.keyset_version} "
            f"sha256:{manifest.keyset_digest}, verified with keyset "
            f"{keyset.version} sha256:{keyset.digest}"
        )
    return manifest


def verify_manifest_any(
    data: bytes,
    signatures: Sequence[Signature],
    keysets: Sequence[Keyset],
    *,
    max_signatures: int = DEFAULT_MAX_SIGNATURES,
) -> Manifest:
    """Verify a manifest against whichever held keyset it names.

    Older manifests in a chain may name older keysets, but the verifier must
    not read the keyset line before the signatures.  So the signatures are
    checked against each held keyset first; only bytes that some trusted
    publish quorum signed are parsed, and the keyset the manifest names must
    be one of those quorums (a publish key kept across a rotation signs for
    several keysets at once).
    """
    if not keysets:
        raise SignatureError("no trusted keyset to verify the manifest with")
    _check_header("manifest", data)
    _check_size("manifest", data)
    signed_by: list[Keyset] = []
    first_error: SignatureError | None = None
    for keyset in sorted(keysets, key=lambda k: k.version, reverse=True):
        try:
            verify_threshold(
                data,
                signatures,
                keyset.publish_keys,
                keyset.publish_threshold,
                role="publish",
                max_signatures=max_signatures,
            )
        except SignatureError as exc:
            first_error = first_error or exc
        else:
            signed_by.append(keyset)
    if not signed_by:
        assert first_error is not None
        raise first_error
    manifest = Manifest.parse(data)
    for keyset in signed_by:
        if (manifest.keyset_version, manifest.keyset_digest) == (keyset.version, keyset.digest):
            return _check_names_keyset(manifest, keyset)
    return _check_names_keyset(manifest, signed_by[0])


def verify_keyset(
    data: bytes,
    signatures: Sequence[Signature],
    previous: Keyset | None,
    *,
    agency: str,
    max_signatures: int = DEFAULT_MAX_SIGNATURES,
) -> Keyset:
    """Verify keyset n+1 against verified keyset n and return it parsed.

    ``previous`` is keyset n (version 0: the implied keyset of a pinned root
    key).  ``previous=None`` is registration by the hub of a new agency: a
    keyset 1 is then checked only against its own root keys, since nothing
    older exists to vouch for it.
    """
    _check_header("keyset", data)
    _check_size("keyset", data)
    if previous is not None:
        verify_threshold(
            data,
            signatures,
            previous.root_keys,
            previous.root_threshold,
            role="previous root",
            max_signatures=max_signatures,
        )
    keyset = Keyset.parse(data, check_encoding=False)
    verify_threshold(
        data,
        signatures,
        keyset.root_keys,
        keyset.root_threshold,
        role="root",
        max_signatures=max_signatures,
    )
    _check_reencoding("keyset", keyset.encode(), data)
    if keyset.agency != agency:
        raise ChainError(f"keyset is for agency {keyset.agency}, expected {agency}")
    expected = 1 if previous is None else previous.version + 1
    if keyset.version != expected:
        raise ChainError(f"keyset version {keyset.version}, expected {expected}")
    if previous is not None and previous.agency != agency:
        raise ChainError(f"previous keyset is for agency {previous.agency}, expected {agency}")
    return keyset


def verify(
    kind: Kind,
    data: bytes,
    signatures: Sequence[Signature],
    trusted: Keyset | Sequence[Keyset] | None,
    *,
    agency: str | None = None,
) -> Manifest | Keyset:
    """Verify a document of the expected ``kind``; any other kind is refused.

    For a manifest, ``trusted`` is the keyset (or held keysets) whose publish
    keys must sign it.  For a keyset, ``trusted`` is the previous keyset (or
    None when registering keyset 1) and ``agency`` the agency it must be for.
    """
    if kind == "manifest":
        if trusted is None:
            raise SignatureError("a manifest needs a trusted keyset to verify against")
        keysets = [trusted] if isinstance(trusted, Keyset) else list(trusted)
        return verify_manifest_any(data, signatures, keysets)
    if not (trusted is None or isinstance(trusted, Keyset)):
        raise TypeError("a keyset is verified against one previous keyset")
    if agency is None:
        raise TypeError("verify('keyset', ...) needs the agency it must belong to")
    return verify_keyset(data, signatures, trusted, agency=agency)


def _check_size(kind: str, data: bytes) -> None:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FormatError(f"{kind}: larger than {MAX_DOCUMENT_BYTES} bytes")


def keyset_expiry(days: int, now: datetime | None = None) -> datetime:
    """``now`` plus ``days``, truncated to whole seconds (documents carry seconds)."""
    return _utc_seconds((now or datetime.now(UTC)) + timedelta(days=days))


__all__ = [
    "Keyset",
    "Manifest",
    "SignedDocument",
    "format_time",
    "keyset_expiry",
    "parse_time",
    "sha256_hex",
    "sign_document",
    "verify",
    "verify_keyset",
    "verify_manifest",
    "verify_manifest_any",
]
