"""The status of held sets, read from the local store alone (no network).

Kept apart from ``client.api`` so the verbs that only read the store
(``status``, ``lookup``, ``scan``, ``export``) start without loading the
HTTP stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from client import trust
from client.protocol.documents import Keyset, Manifest
from client.store import Store
from client.trust import TrustedKeysets


@dataclass(frozen=True)
class SetStatus:
    """A held set: version, size, expiry, and why it is stale (if it is)."""

    name: str
    version: int
    count: int
    issued: datetime
    expires: datetime
    synced_at: str | None
    stale_reasons: list[str]
    content_digest: str
    keyset_version: int

    @property
    def stale(self) -> bool:
        """Whether the set is past its expiry or awaits a version under a newer keyset."""
        return bool(self.stale_reasons)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form of ``hashex status``."""
        return {
            "set": self.name,
            "version": self.version,
            "count": self.count,
            "issued": self.issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expires": self.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "synced_at": self.synced_at,
            "content_digest": f"sha256:{self.content_digest}",
            "keyset": self.keyset_version,
            "stale": self.stale,
            "stale_reasons": self.stale_reasons,
        }


def held_keysets(store: Store, agency: str) -> TrustedKeysets:
    """The agency's verified keysets as the store holds them."""
    keysets = tuple(Keyset.parse(d.data) for d in store.keyset_documents(agency))
    return TrustedKeysets(agency, keysets)


def statuses(store: Store, now: datetime) -> list[SetStatus]:
    """Every held set's status at ``now``, by name; no network."""
    result = []
    for held in store.local_sets():
        manifest = Manifest.parse(held.manifest or b"")
        keysets = held_keysets(store, manifest.agency)
        stale = trust.staleness(manifest, keysets, now) if keysets.keysets else ["no keyset"]
        result.append(
            SetStatus(
                held.name,
                held.version,
                manifest.count,
                manifest.issued,
                manifest.expires,
                held.synced_at,
                stale,
                manifest.content_digest,
                manifest.keyset_version,
            )
        )
    return result
