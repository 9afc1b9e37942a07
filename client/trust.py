"""The verification core: verified state in, bytes in, accept or raise.

No I/O happens here.  The sync loop hands in what it fetched, this module
decides, and only what it returns may be written to the store.  Each check
says why it exists; every one of them stands against an attack a hostile hub
could try (see docs/PROTOCOL.md):

* keys only ever come from the pinned or already verified keysets;
* keyset n+1 needs the root threshold of keyset n and of itself;
* a manifest must be exactly local + 1, name the right set, link to its
  parent's digest, carry publish-threshold signatures of a held keyset, and
  keep its counts consistent with its parent;
* a delta or content must hash to the signed digest before it is parsed;
* an equal version must be byte-identical, and versions never go down;
* an expired newest document marks a set stale, never fresh, and never
  throws the last good list away.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

from client.errors import ResponseError, RollbackError
from client.protocol.blocks import ContentChecker, DeltaChecker, read_blocks
from client.protocol.documents import (
    Keyset,
    Manifest,
    SignedDocument,
    sha256_hex,
    verify_keyset,
    verify_manifest_any,
)
from client.protocol.errors import ChainError, DigestMismatchError, FormatError


@dataclass(frozen=True)
class TrustedKeysets:
    """An agency's verified keysets, oldest first.

    The first may be the implied keyset 0 of a pinned root key; it verifies
    keyset 1 and is never used to verify a manifest (it has no publish keys).
    """

    agency: str
    keysets: tuple[Keyset, ...]

    @property
    def newest(self) -> Keyset:
        """The newest verified keyset (or the pin, before any was fetched)."""
        return self.keysets[-1]

    @property
    def signing(self) -> tuple[Keyset, ...]:
        """The keysets whose publish keys may sign manifests (version 1 and up)."""
        return tuple(k for k in self.keysets if k.version >= 1)


def update_keysets(trusted: TrustedKeysets, offered: Sequence[SignedDocument]) -> TrustedKeysets:
    """Verify keysets offered by the hub, in order, each against the one before.

    Versions at or below the newest held must be byte-identical to what is
    held (the hub may not rewrite history); each new one must be exactly the
    next version, signed by the root threshold of the previous keyset and of
    its own.  A key left out of a newer keyset is thereby revoked.
    """
    held = {k.version: k for k in trusted.keysets}
    keysets = list(trusted.keysets)
    for document in offered:
        if document.version in held and held[document.version].raw:
            if held[document.version].raw != document.data:
                raise RollbackError(
                    f"the hub serves a different keyset {document.version} of "
                    f"{trusted.agency} than the one verified before"
                )
            continue
        previous = keysets[-1]
        if document.version != previous.version + 1:
            raise ChainError(
                f"keyset {document.version} of {trusted.agency} does not follow keyset "
                f"{previous.version}"
            )
        keysets.append(
            verify_keyset(document.data, document.signatures, previous, agency=trusted.agency)
        )
    return TrustedKeysets(trusted.agency, tuple(keysets))


@dataclass(frozen=True)
class SetState:
    """What the store holds of one set: its newest verified manifest, if any."""

    name: str
    version: int = 0
    manifest: bytes | None = None

    @property
    def parsed(self) -> Manifest | None:
        """The held manifest, parsed (it was verified when stored)."""
        return None if self.manifest is None else Manifest.parse(self.manifest)


@dataclass(frozen=True)
class VerifiedVersion:
    """A manifest that links into the verified chain, with its exact bytes."""

    manifest: Manifest
    document: SignedDocument


@dataclass(frozen=True)
class ChainUpdate:
    """The verified manifests after the local version, oldest first."""

    versions: list[VerifiedVersion] = field(default_factory=list)

    @property
    def newest(self) -> VerifiedVersion | None:
        """The last verified version, or None when there is nothing new."""
        return self.versions[-1] if self.versions else None


def check_hub_latest(state: SetState, latest: int) -> None:
    """Refuse a hub whose newest version is older than what we hold (rollback)."""
    if latest < state.version:
        raise RollbackError(
            f"the hub says {state.name} is at version {latest}, but version "
            f"{state.version} was verified here before"
        )


def verify_chain(
    state: SetState,
    keysets: TrustedKeysets,
    offered: Sequence[SignedDocument],
    *,
    max_signatures: int,
) -> ChainUpdate:
    """Verify every manifest the hub offers after the local version, in order.

    Every link is checked even when its delta will be skipped for a
    bootstrap: a hub cannot drop, reorder or forge history in between.
    """
    parent_bytes = state.manifest
    parent = state.parsed
    expected = state.version + 1
    update = ChainUpdate()
    for document in offered:
        if document.version == state.version and state.manifest is not None:
            if document.data != state.manifest:
                raise RollbackError(
                    f"the hub serves a different version {state.version} of {state.name}"
                )
            continue
        if document.version != expected:
            raise ChainError(
                f"{state.name}: the hub offers version {document.version}, expected {expected}"
            )
        manifest = verify_manifest_any(
            document.data, document.signatures, keysets.signing, max_signatures=max_signatures
        )
        _check_link(state.name, manifest, parent, parent_bytes)
        update.versions.append(VerifiedVersion(manifest, document))
        parent, parent_bytes = manifest, document.data
        expected += 1
    return update


def _check_link(
    name: str, manifest: Manifest, parent: Manifest | None, parent_bytes: bytes | None
) -> None:
    if manifest.set_name != name:
        raise ChainError(f"the hub served a manifest of {manifest.set_name} for {name}")
    if parent is None or parent_bytes is None:
        if manifest.version != 1:
            raise ChainError(f"{name}: version {manifest.version} has no verified parent")
        return
    if manifest.parent_digest != sha256_hex(parent_bytes):
        raise ChainError(
            f"{name} version {manifest.version}: parent digest does not match version "
            f"{parent.version}'s manifest"
        )
    if manifest.count != parent.count + manifest.adds - manifest.removes:
        raise ChainError(
            f"{name} version {manifest.version}: count {manifest.count} does not follow "
            f"from {parent.count} + {manifest.adds} - {manifest.removes}"
        )


def staleness(manifest: Manifest, keysets: TrustedKeysets, now: datetime) -> list[str]:
    """Why the newest verified state of a set is stale at ``now`` (empty: fresh).

    Expiry applies to the newest documents only: older ones in the chain may
    have expired and still count for rollback checks.  A set whose newest
    manifest names an older keyset than the newest held is stale too: after
    a rotation, only a version signed under the new keyset is fresh.
    """
    reasons = []
    if manifest.expires <= now:
        reasons.append(f"manifest version {manifest.version} expired at {_iso(manifest.expires)}")
    newest = keysets.newest
    if newest.version >= 1 and newest.expires <= now:
        reasons.append(
            f"keyset {newest.version} of {keysets.agency} expired at {_iso(newest.expires)}"
        )
    if names_older_keyset(manifest, keysets):
        reasons.append(
            f"version {manifest.version} is signed under keyset {manifest.keyset_version}, "
            f"but keyset {newest.version} is newer"
        )
    return reasons


def names_older_keyset(manifest: Manifest, keysets: TrustedKeysets) -> bool:
    """Whether ``manifest`` is signed under an older keyset than the newest held."""
    newest = keysets.newest
    return newest.version >= 1 and manifest.keyset_version != newest.version


def check_digest(kind: str, manifest: Manifest, digest: str) -> None:
    """The raw bytes of a delta or content must hash to the signed digest."""
    expected = manifest.delta_digest if kind == "delta" else manifest.content_digest
    if digest != expected:
        raise DigestMismatchError(
            f"{manifest.set_name} version {manifest.version}: {kind} hashes to "
            f"sha256:{digest}, the manifest says sha256:{expected}"
        )


@dataclass(frozen=True)
class VerifiedDelta:
    """A delta file whose digest matched and whose every line was checked.

    Its removes and adds can then be read back separately (removes first, as
    applying a delta demands) without checking anything twice.
    """

    stream: BinaryIO
    removes_offset: int

    def remove_blocks(self) -> Iterator[list[bytes]]:
        """The removed entry lines, sorted, without sign or LF, in blocks."""
        self.stream.seek(self.removes_offset)
        for block in read_blocks(self.stream):
            yield [line[1:] for line in block]

    def add_blocks(self) -> Iterator[list[bytes]]:
        """The added entry lines, sorted, without sign or LF, in blocks."""
        self.stream.seek(0)
        for block in read_blocks(_Prefix(self.stream, self.removes_offset)):
            yield [line[1:] for line in block]


class _Prefix:
    """The first ``size`` bytes of a stream, read from where it stands."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._left = size

    def read(self, size: int) -> bytes:
        chunk = self._stream.read(min(size, self._left))
        self._left -= len(chunk)
        return chunk


def verify_delta(manifest: Manifest, stream: BinaryIO) -> VerifiedDelta:
    """Check every line of a delta whose digest already matched, and its counts.

    The lines are parsed strictly anyway: a signed but malformed delta is
    still refused, never repaired.
    """
    checker = DeltaChecker()
    removes_offset = None
    position = 0
    stream.seek(0)
    try:
        for block in read_blocks(stream):
            cut = checker.check(block)
            if removes_offset is None and cut < len(block):
                removes_offset = position + sum(map(len, block[:cut])) + cut
            position += sum(map(len, block)) + len(block)
    except FormatError as exc:
        raise ResponseError(f"{manifest.set_name} version {manifest.version} delta: {exc}") from exc
    if (checker.adds, checker.removes) != (manifest.adds, manifest.removes):
        raise ChainError(
            f"{manifest.set_name} version {manifest.version}: delta has {checker.adds} adds and "
            f"{checker.removes} removes, the manifest says {manifest.adds} and {manifest.removes}"
        )
    return VerifiedDelta(stream, position if removes_offset is None else removes_offset)


def content_blocks(manifest: Manifest, stream: BinaryIO) -> Iterator[list[bytes]]:
    """The checked lines of a content whose digest already matched, in blocks.

    The digest of the raw bytes was checked as they arrived, so the lines are
    only checked for form, order and unique identities here, not hashed again.
    """
    checker = ContentChecker()
    try:
        for block in read_blocks(stream):
            checker.check(block)
            yield block
    except FormatError as exc:
        raise ResponseError(
            f"{manifest.set_name} version {manifest.version} content: {exc}"
        ) from exc
    if checker.count != manifest.count:
        raise ChainError(
            f"{manifest.set_name} version {manifest.version}: content has {checker.count} "
            f"entries, the manifest says {manifest.count}"
        )


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
