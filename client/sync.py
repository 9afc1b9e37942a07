"""The sync loop: fetch, hand to the verification core, and store what it accepts.

For each set: the agency's new keysets, then the set's latest version number
(a number below ours is a rollback), then every manifest after ours, each
checked link by link.  A set that is new or far behind takes the content at
the newest version (after checking the whole chain of manifests); otherwise
each delta is applied in turn.  Every delta and content is spooled to a
temporary file while hashed and only parsed once its digest matches.  One
reference time is taken per sync, so every expiry check agrees.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

from client import trust
from client.errors import (
    EXIT_OK,
    EXIT_STALE,
    HubUnreachableError,
    ResponseError,
    exit_code,
)
from client.limits import Limits
from client.protocol.documents import Keyset, SignedDocument
from client.protocol.errors import ChainError, HashexError, InputError
from client.protocol.keys import decode_base64, key_id, load_public_key_pem, public_key_from_raw
from client.protocol.names import check_set_name
from client.store import Pin, Store
from client.transport import HubClient
from client.trust import ChainUpdate, SetState, TrustedKeysets


@dataclass(frozen=True)
class Listed:
    """A set as the hub's listing shows it: its newest version and its owner's newest keyset."""

    latest_version: int
    keyset: int


@dataclass
class SetResult:
    """What one set's sync came to: its version, staleness, or the error that stopped it."""

    name: str
    version: int = 0
    applied: list[int] = field(default_factory=list)
    bootstrapped: bool = False
    stale: list[str] = field(default_factory=list)
    error: HashexError | None = None

    @property
    def exit_code(self) -> int:
        """This set's outcome as an exit code."""
        if self.error is not None:
            return exit_code(self.error)
        return EXIT_STALE if self.stale else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form of this result."""
        return {
            "set": self.name,
            "version": self.version,
            "applied": self.applied,
            "bootstrapped": self.bootstrapped,
            "stale": bool(self.stale),
            "stale_reasons": self.stale,
            "error": None if self.error is None else str(self.error),
            "exit": self.exit_code,
        }


class Syncer:
    """Syncs sets from one hub into one store, verifying everything."""

    def __init__(
        self, hub: HubClient, store: Store, limits: Limits, *, now: datetime | None = None
    ):
        self.hub = hub
        self.store = store
        self.limits = limits
        self.now = now or datetime.now(UTC)
        self._deadline = time.monotonic() + limits.sync_deadline
        self._keysets: dict[str, TrustedKeysets] = {}
        self._listing: dict[str, Listed] | None = None

    def readable_pinned_sets(self) -> list[str]:
        """Every set the token can read whose agency is pinned here."""
        pinned = set(self.store.pinned_agencies())
        return sorted(n for n in self.listing() if n.split("/", 1)[0] in pinned)

    def listing(self) -> dict[str, Listed]:
        """The hub's listing of what the token may read, asked once per sync.

        This is the poll: one request, answered 304 when nothing changed
        since the listing remembered here (which is then used again).  The
        listing is a hint of where to look, never trusted: every version and
        keyset it points to is verified, and a number below what is held is
        a rollback.
        """
        if self._listing is not None:
            return self._listing
        remembered = self._remembered_listing()
        answer = self.hub.get_json(
            "/v1/sets",
            etag=remembered[0] if remembered is not None else None,
            deadline=self._deadline,
        )
        if answer is None:
            if remembered is None:
                raise ResponseError("the hub answered 304 to a poll that named no ETag")
            self._listing = remembered[1]
            return self._listing
        body, headers = answer
        self._listing = _parse_listing(body)
        etag = headers.get("ETag")
        if etag:
            self.store.save_listing(self.hub.base_url, etag, json.dumps(body))
        return self._listing

    def _remembered_listing(self) -> tuple[str, dict[str, Listed]] | None:
        """The last listing this hub sent and its ETag; None if none is usable."""
        remembered = self.store.listing(self.hub.base_url)
        if remembered is None:
            return None
        try:
            return remembered[0], _parse_listing(json.loads(remembered[1]))
        except (ValueError, ResponseError):
            # Only this client wrote it: a damaged copy is a reason to ask afresh.
            return None

    def sync(self, name: str) -> SetResult:
        """Sync one set; errors are caught into the result, never half-applied."""
        result = SetResult(name, self.store.set_state(name).version)
        try:
            self._sync(name, result)
        except HashexError as exc:
            result.error = exc
        return result

    def _sync(self, name: str, result: SetResult) -> None:
        try:
            agency, _ = check_set_name(name)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if self.store.pin(agency) is None:
            raise InputError(f"agency {agency} is not pinned: run 'hashex trust add {agency} FILE'")
        listed = self.listing().get(name)
        if listed is None:
            self._not_listed(name)
        keysets = self.keysets(agency)
        state = self.store.set_state(name)
        latest = listed.latest_version
        trust.check_hub_latest(state, latest)
        withheld: list[str] = []
        if latest > state.version:
            update = self._fetch_chain(state, keysets, latest)
            head = update.newest
            if head is not None and trust.names_older_keyset(head.manifest, keysets):
                # A new head must be signed under the newest keyset: after a
                # rotation, keys left out of it are revoked, and a version they
                # signed is kept out of the store (the last good list stays).
                withheld.append(
                    f"version {head.manifest.version} is signed under keyset "
                    f"{head.manifest.keyset_version}, but keyset {keysets.newest.version} is "
                    "newer: not applied until the agency publishes under it"
                )
            else:
                self._apply(state, update, result)
        held = self.store.set_state(name)
        result.version = held.version
        newest = held.parsed
        if newest is not None:
            result.stale = trust.staleness(newest, keysets, self.now)
        result.stale += withheld

    def _not_listed(self, name: str) -> NoReturn:
        """A named set the listing leaves out: the hub's own refusal says why."""
        agency, set_slug = name.split("/", 1)
        self.hub.get_json(f"/v1/sets/{agency}/{set_slug}", deadline=self._deadline)
        raise ResponseError(f"the hub shows {name} but leaves it out of its listing")

    def keysets(self, agency: str) -> TrustedKeysets:
        """The agency's verified keysets, updated from the hub at most once per sync.

        They are asked for only when none are held yet or the listing names
        a newer keyset of the agency than the newest held.
        """
        if agency in self._keysets:
            return self._keysets[agency]
        pin = self.store.pin(agency)
        if pin is None:
            raise InputError(f"agency {agency} is not pinned")
        held = [Keyset.parse(d.data) for d in self.store.keyset_documents(agency)]
        after = held[-1].version if held else 0
        listed = [s.keyset for n, s in self.listing().items() if n.split("/", 1)[0] == agency]
        offered: list[SignedDocument] = []
        if not held or any(version > after for version in listed):
            body, _ = self.hub.get_json(
                f"/v1/agencies/{agency}/keysets", {"after": after}, deadline=self._deadline
            )
            offered = [
                SignedDocument.from_json("keyset", obj, max_signatures=self.limits.max_signatures)
                for obj in _field(body, "keysets", list)
            ]
        start = _trust_start(pin, held, offered)
        trusted = trust.update_keysets(start, offered)
        self.store.save_keysets(agency, offered)
        self._keysets[agency] = trusted
        return trusted

    def _fetch_chain(self, state: SetState, keysets: TrustedKeysets, latest: int) -> ChainUpdate:
        agency, set_slug = state.name.split("/", 1)
        verified: list[trust.VerifiedVersion] = []
        cursor = state
        # One version before ours is asked for too: it must come back
        # byte-identical, so a hub cannot quietly rewrite what we hold.
        after = max(state.version - 1, 0)
        while after < latest:
            self._check_deadline()
            body, _ = self.hub.get_json(
                f"/v1/sets/{agency}/{set_slug}/versions",
                {"after": after, "limit": self.limits.versions_page},
                deadline=self._deadline,
            )
            page = [
                SignedDocument.from_json(
                    "manifest", _version_object(o), max_signatures=self.limits.max_signatures
                )
                for o in _field(body, "versions", list)
            ]
            # A version published since the listing was read is left for the
            # next sync: the listing (and what it will carry to vouch for
            # what it lists) stops at ``latest``.
            page = [document for document in page if document.version <= latest]
            if not page:
                raise ResponseError(
                    f"{state.name}: the hub says version {latest} exists "
                    f"but lists none after {after}"
                )
            # Paging goes by the last version listed: a page that does not
            # reach past ``after`` would be asked for again and again.
            if page[-1].version <= after:
                raise ResponseError(
                    f"{state.name}: asked for versions after {after}, the hub listed "
                    f"{', '.join(str(d.version) for d in page[:5])}"
                )
            # Each page is verified as it comes: a hub listing an endless,
            # unsigned history is caught on its first page, not at the deadline.
            update = trust.verify_chain(
                cursor, keysets, page, max_signatures=self.limits.max_signatures
            )
            if update.newest is not None:
                verified.extend(update.versions)
                newest = update.newest
                cursor = SetState(state.name, newest.manifest.version, newest.document.data)
            after = page[-1].version
        update = trust.ChainUpdate(verified)
        if update.newest is None or update.newest.manifest.version != latest:
            raise ChainError(f"{state.name}: the verified chain does not reach version {latest}")
        return update

    def _apply(self, state: SetState, update: ChainUpdate, result: SetResult) -> None:
        agency, set_slug = state.name.split("/", 1)
        base = f"/v1/sets/{agency}/{set_slug}/versions"
        behind = len(update.versions)
        if state.version == 0 or behind > self.limits.bootstrap_after:
            newest = update.versions[-1]
            manifest = newest.manifest
            with tempfile.TemporaryFile() as spool:
                self._download(
                    f"{base}/{manifest.version}/content",
                    spool,
                    "content",
                    manifest,
                    self.limits.max_content_bytes(manifest.count),
                )
                self.store.replace_content(
                    state.name, newest.document, trust.content_blocks(manifest, spool)
                )
            result.bootstrapped = True
            result.applied.append(manifest.version)
            return
        for verified in update.versions:
            manifest = verified.manifest
            with tempfile.TemporaryFile() as spool:
                self._download(
                    f"{base}/{manifest.version}/delta",
                    spool,
                    "delta",
                    manifest,
                    self.limits.max_delta_bytes(manifest.adds, manifest.removes),
                )
                delta = trust.verify_delta(manifest, spool)
                self.store.apply_delta(state.name, verified.document, delta)
            result.applied.append(manifest.version)

    def _download(self, path: str, spool: Any, kind: str, manifest: Any, max_bytes: int) -> None:
        self._check_deadline()
        digest, _ = self.hub.download(path, spool, max_bytes=max_bytes, deadline=self._deadline)
        trust.check_digest(kind, manifest, digest)
        spool.seek(0)

    def _check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            # Slow retrieval is an availability failure, not a forgery.
            raise HubUnreachableError("the sync took longer than its deadline; try again")


_ROOT_LINE = re.compile(r"^root ([0-9a-f]{64}) ([A-Za-z0-9+/]{43}=)$", re.MULTILINE)


def _trust_start(
    pin: Pin, held: Sequence[Keyset], offered: Sequence[SignedDocument]
) -> TrustedKeysets:
    """Where verification starts: the held keysets, or the pin's implied keyset 0."""
    if held:
        return TrustedKeysets(pin.agency, tuple(held))
    if pin.kind == "keyset":
        raise InputError(f"agency {pin.agency}: the pinned keyset is missing from the store")
    first = next((d for d in offered if d.version == 1), None)
    if first is None:
        raise ResponseError(f"the hub offers no keyset 1 of {pin.agency} to check the pin against")
    return TrustedKeysets(pin.agency, (_implied(pin, first.data),))


def _implied(pin: Pin, keyset_1: bytes) -> Keyset:
    """The implied keyset 0 of a root-key pin (a PEM, or a key id found in keyset 1)."""
    if pin.kind == "key":
        return Keyset.from_root_key(pin.agency, load_public_key_pem(pin.value.encode(), "pin"))
    # A key id pins the key whose SHA-256 it is; keyset 1 carries that key,
    # and the id binds it, so reading it before verification is safe.
    for kid, b64 in _ROOT_LINE.findall(keyset_1.decode("ascii", "replace")):
        if kid == pin.value:
            key = public_key_from_raw(decode_base64(b64, "keyset 1 root key"))
            if key_id(key) == kid:
                return Keyset.from_root_key(pin.agency, key)
    raise ChainError(f"keyset 1 of {pin.agency} has no root key {pin.value} (the pinned key id)")


def _parse_listing(body: Any) -> dict[str, Listed]:
    """The listing's sets by name, each field checked; a malformed one is the hub's fault."""
    listing: dict[str, Listed] = {}
    for item in _field(body, "sets", list):
        name = item.get("name") if isinstance(item, dict) else None
        try:
            checked = "/".join(check_set_name(name if isinstance(name, str) else ""))
        except ValueError:
            raise ResponseError(f"the hub listed a set named {name!r}") from None
        listing[checked] = Listed(_field(item, "latest_version", int), _field(item, "keyset", int))
    return listing


def _version_object(obj: Any) -> Any:
    if isinstance(obj, dict) and "manifest" in obj:
        return obj
    raise ResponseError("the hub sent a version that is not a version object")


def _field(body: Any, name: str, kind: type) -> Any:
    """``body[name]`` if it is a ``kind``, else the hub answered nonsense."""
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ResponseError(f"the hub's answer has no valid {name!r}")
    return value
