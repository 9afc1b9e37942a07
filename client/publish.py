"""Publishing the next version of a set from a verified local copy.

The set is synced first, so the new version is diffed against exactly what
the agency last signed; the manifest is signed with keys that must be
publish keys of the agency's newest verified keyset.  While the hub checks
the upload, the same delta is verified and applied to the local store in a
transaction that commits only once the hub has accepted the version, so the
publisher holds what it published without downloading it back, and holds
nothing new if the hub refuses.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client import trust
from client.protocol.building import build_version
from client.protocol.documents import Manifest, SignedDocument
from client.protocol.entries import identity_of
from client.protocol.errors import InputError
from client.protocol.keys import key_id
from client.protocol.normalise import normalise_file
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
    """A user's hash file, normalised; every bad line reported with its number."""
    try:
        with path.open("rb") as handle:
            return normalise_file(handle, alg=change.alg, label=change.label, source=str(path))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


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
    agency = name.split("/", 1)[0]
    given = _read_inputs(change)
    if given.content == [] and not change.allow_empty:
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
    new_lines = _new_content(store, name, given)
    if not new_lines and not change.allow_empty:
        raise _empty(name, f"the new content of {name} is empty")
    issued = syncer.now.replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="hashex-publish-") as spool:
        delta_path = Path(spool) / "delta"
        with delta_path.open("wb") as delta:
            document = build_version(
                set_name=name,
                parent=state.manifest,
                old=store.iter_content(name),
                new=new_lines,
                keyset=newest,
                keys=keys,
                issued=issued,
                expires=issued + timedelta(days=expires_days),
                delta_out=delta,
            )
        manifest = Manifest.parse(document.data)
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
            upload = pool.submit(_upload, syncer.hub, name, document, upload_file)
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
class _Inputs:
    """The normalised lines of the files a publish was given."""

    content: list[bytes] | None
    adds: list[bytes]
    removes: list[bytes]


def _read_inputs(change: Change) -> _Inputs:
    def read(path: Path | None) -> list[bytes] | None:
        return None if path is None else read_user_lines(path, change)

    return _Inputs(read(change.content), read(change.add) or [], read(change.remove) or [])


def _new_content(store: Store, name: str, given: _Inputs) -> list[bytes]:
    """The full new content: the given file, or the held content changed by adds/removes.

    A removed hash is matched by identity, whatever its label; an added hash
    already held under another label is relabelled.  Removing a hash the set
    does not hold is refused: it says the publisher's idea of the set is wrong.
    With no file at all (a refresh), the held content stays as it is.
    """
    if given.content is not None:
        return given.content
    adds, removes = given.adds, given.removes
    to_remove = {identity_of(line) for line in removes}
    added = {identity_of(line): line for line in adds}
    kept: list[bytes] = []
    for line in store.iter_content(name):
        identity = identity_of(line)
        if identity in to_remove:
            to_remove.discard(identity)
        elif identity not in added:
            kept.append(line)
    if to_remove:
        missing = ", ".join(sorted(i.decode() for i in to_remove)[:5])
        raise InputError(
            f"--remove lists {len(to_remove)} hash(es) {name} does not hold: {missing}"
        )
    return sorted(kept + list(added.values()))


def _upload(hub: HubClient, name: str, document: SignedDocument, delta: BinaryIO) -> None:
    agency, set_slug = name.split("/", 1)
    hub.post_multipart(
        f"/v1/sets/{agency}/{set_slug}/versions",
        fields={
            "manifest": document.data,
            "signatures": json.dumps([s.to_json() for s in document.signatures]).encode(),
        },
        files={"delta": ("delta", delta)},
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
