"""Publishing the next version of a set from a verified local copy.

The set is synced first, so the new version is diffed against exactly what
the agency last signed; the manifest is signed with keys that must be
publish keys of the agency's newest verified keyset.  While the hub checks
the upload, the same delta is verified and applied to the local store in a
transaction that commits only once the hub has accepted the version, so the
publisher holds what it published without downloading it back, and holds
nothing new if the hub refuses.

A set may hold millions of entries, and nothing here holds a whole one:
the input files are normalised into sorted files in a spool directory (a
temporary directory), and the new version is built by streaming the held
content past them a block at a time (``client.protocol.building``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client import trust
from client.limits import Limits
from client.protocol.blocks import read_blocks
from client.protocol.building import NotHeldError, build_changed_version, build_version
from client.protocol.documents import Keyset, Manifest, SignedDocument
from client.protocol.errors import InputError
from client.protocol.keys import key_id
from client.protocol.normalise import normalise_to_file
from client.store import Store
from client.sync import Syncer
from client.transport import HubClient


@dataclass(frozen=True)
class Change:
    """What a publish asks for: the full new content, or adds and removes, or neither.

    With neither, the content stays as it is (a ``refresh``).  ``allow_empty``
    lets the new content be empty: withdrawing every entry is rarely meant,
    and an empty file is far more often a mistake.  ``refresh`` publishes
    even when the content does not change, to renew the version's expiry.
    """

    content: Path | None = None
    add: Path | None = None
    remove: Path | None = None
    alg: str | None = None
    label: str | None = None
    allow_empty: bool = False
    refresh: bool = False


@dataclass(frozen=True)
class Published:
    """The outcome of a publish (or of a dry run); ``changed`` is False when nothing was."""

    name: str
    version: int
    adds: int
    removes: int
    count: int
    dry_run: bool
    changed: bool = True

    def to_json(self) -> dict[str, object]:
        """The ``--json`` form."""
        return {
            "set": self.name,
            "version": self.version,
            "adds": self.adds,
            "removes": self.removes,
            "count": self.count,
            "dry_run": self.dry_run,
            "changed": self.changed,
        }


def read_user_lines(path: Path, change: Change) -> list[bytes]:
    """A user's hash file as publish reads it, normalised, in memory (for small files)."""
    with tempfile.TemporaryDirectory(prefix="hashex-read-") as spool:
        given = _normalised(path, change, Path(spool))
        with given.path.open("rb") as lines:
            return list(_lines(lines))


def publish(
    syncer: Syncer,
    name: str,
    keys: Sequence[Ed25519PrivateKey],
    change: Change,
    *,
    expires_days: int,
    dry_run: bool,
) -> Published:
    """Sync ``name``, build and sign its next version, upload it, record it locally.

    The input files are read first: a bad line is reported before the hub is
    asked anything.
    """
    with tempfile.TemporaryDirectory(prefix="hashex-publish-") as spool:
        return _publish(syncer, name, keys, change, Path(spool), expires_days, dry_run)


def _publish(
    syncer: Syncer,
    name: str,
    keys: Sequence[Ed25519PrivateKey],
    change: Change,
    spool: Path,
    expires_days: int,
    dry_run: bool,
) -> Published:
    agency = name.split("/", 1)[0]
    given = _read_inputs(change, spool)
    if given.content is not None and given.content.count == 0 and not change.allow_empty:
        raise _empty(name, f"{change.content} holds no hashes")
    result = syncer.sync(name)
    if result.error is not None:
        raise result.error
    keysets = syncer.keysets(agency)
    newest = keysets.newest
    unknown = [key_id(k) for k in keys if key_id(k) not in newest.publish_keys]
    if unknown:
        raise InputError(
            f"key {unknown[0]} is not a publish key of {agency}'s keyset {newest.version}"
        )
    if len({key_id(k) for k in keys}) < newest.publish_threshold:
        raise InputError(
            f"{agency}'s keyset {newest.version} needs {newest.publish_threshold} publish "
            "keys; give more --key"
        )
    store = syncer.store
    state = store.set_state(name)
    issued = syncer.now.replace(microsecond=0)
    delta_path = spool / "delta"
    with delta_path.open("wb") as delta:
        document = _build(
            store,
            state,
            given,
            _Signing(newest, keys, issued, issued + timedelta(days=expires_days)),
            delta,
        )
    manifest = Manifest.parse(document.data)
    if manifest.count == 0 and not change.allow_empty:
        raise _empty(name, f"the new content of {name} is empty")
    if manifest.version > 1 and manifest.adds == manifest.removes == 0 and not change.refresh:
        # Nothing changed: no new version, unless its expiry is to be renewed.
        return Published(name, state.version, 0, 0, manifest.count, dry_run, changed=False)
    outcome = Published(
        name, manifest.version, manifest.adds, manifest.removes, manifest.count, dry_run
    )
    if dry_run:
        return outcome
    # The hub checks and commits the upload while the same delta is
    # verified and applied here; the local transaction commits only once
    # the hub has accepted the version, and rolls back if it refuses.
    with (
        delta_path.open("rb") as upload_file,
        delta_path.open("rb") as local_file,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        upload = pool.submit(_upload, syncer.hub, name, document, upload_file, syncer.limits)
        _record(
            store,
            state,
            keysets,
            document,
            local_file,
            syncer.limits.max_signatures,
            accepted=upload.result,
        )
    return outcome


def _empty(name: str, why: str) -> InputError:
    return InputError(
        f"{why}: publishing it would withdraw every entry of {name}; "
        "give --allow-empty if that is what you mean"
    )


@dataclass(frozen=True)
class _Normalised:
    """A user's hash file, normalised: sorted, unique canonical lines in a spool file."""

    path: Path
    count: int


@dataclass(frozen=True)
class _Inputs:
    """The normalised files a publish was given."""

    content: _Normalised | None
    adds: _Normalised | None
    removes: _Normalised | None


def _read_inputs(change: Change, spool: Path) -> _Inputs:
    def read(path: Path | None) -> _Normalised | None:
        return None if path is None else _normalised(path, change, spool)

    return _Inputs(read(change.content), read(change.add), read(change.remove))


def _normalised(path: Path, change: Change, spool: Path) -> _Normalised:
    """Normalise ``path`` into a new file in ``spool``; every bad line reported with its number."""
    try:
        source = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        with source:
            handle, name = tempfile.mkstemp(prefix="normalised-", dir=spool)
            with open(handle, "wb") as out:
                count = normalise_to_file(
                    source, out, alg=change.alg, label=change.label, source=str(path), spool=spool
                )
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read it, or write it to {spool} ({exc.strerror})"
        ) from None
    return _Normalised(Path(name), count)


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines (without LF) of a file of canonical lines, read a block at a time."""
    return chain.from_iterable(read_blocks(stream))


@dataclass(frozen=True)
class _Signing:
    """What signs the new version, and the times it states."""

    keyset: Keyset
    keys: Sequence[Ed25519PrivateKey]
    issued: datetime
    expires: datetime


def _build(
    store: Store, state: trust.SetState, given: _Inputs, signing: _Signing, delta: BinaryIO
) -> SignedDocument:
    """Write the delta of the next version to ``delta``; its signed manifest.

    The new content is the given file, or the held content changed by
    adds/removes.  A removed hash is matched by identity, whatever its
    label; an added hash already held under another label is relabelled.
    Removing a hash the set does not hold is refused: it says the
    publisher's idea of the set is wrong.  With no file at all (a refresh),
    the held content stays as it is.
    """
    old = store.iter_content(state.name)
    with ExitStack() as files:
        if given.content is not None:
            return build_version(
                set_name=state.name,
                parent=state.manifest,
                old=old,
                new=_lines(files.enter_context(given.content.path.open("rb"))),
                keyset=signing.keyset,
                keys=signing.keys,
                issued=signing.issued,
                expires=signing.expires,
                delta_out=delta,
            )
        adds, removes = (
            () if part is None else _lines(files.enter_context(part.path.open("rb")))
            for part in (given.adds, given.removes)
        )
        try:
            return build_changed_version(
                set_name=state.name,
                parent=state.manifest,
                old=old,
                adds=adds,
                removes=removes,
                keyset=signing.keyset,
                keys=signing.keys,
                issued=signing.issued,
                expires=signing.expires,
                delta_out=delta,
            )
        except NotHeldError as exc:
            raise InputError(
                f"--remove lists {exc.count} hash(es) {state.name} does not hold: "
                f"{', '.join(exc.shown)}"
            ) from None


def _upload(
    hub: HubClient, name: str, document: SignedDocument, delta: BinaryIO, limits: Limits
) -> None:
    agency, set_slug = name.split("/", 1)
    manifest = Manifest.parse(document.data)
    hub.post_multipart(
        f"/v1/sets/{agency}/{set_slug}/versions",
        fields={
            "manifest": document.data,
            "signatures": json.dumps([s.to_json() for s in document.signatures]).encode(),
        },
        files={"delta": ("delta", delta)},
        answer_timeout=limits.publish_answer_timeout(manifest.adds, manifest.removes),
    )


def _record(
    store: Store,
    state: trust.SetState,
    keysets: trust.TrustedKeysets,
    document: SignedDocument,
    delta: BinaryIO,
    max_signatures: int,
    *,
    accepted: Callable[[], object],
) -> None:
    """Apply what is being published through the same checks as any sync.

    ``accepted`` waits for the hub's answer and raises if it refused: the
    version is committed locally only after it returned.
    """
    update = trust.verify_chain(state, keysets, [document], max_signatures=max_signatures)
    verified = update.versions[0]
    store.apply_delta(
        state.name,
        document,
        trust.verify_delta(verified.manifest, delta),
        before_commit=accepted,
    )
