"""Hypothesis strategies for valid entries, manifests and keysets (all hashes synthetic)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from client.protocol.documents import Keyset, Manifest
from client.protocol.entries import ALGORITHMS, Entry
from client.protocol.keys import key_id
from client.protocol.names import SLUG_RE
from tests.protocol.factories import key_from_seed

slugs = st.from_regex(SLUG_RE, fullmatch=True)
labels = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)
digests = st.binary(min_size=32, max_size=32).map(bytes.hex)
counts = st.integers(min_value=0, max_value=10**12)
versions = st.integers(min_value=1, max_value=10**9)
# Whole seconds, UTC, in a range where every year has four digits.
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2999, 12, 31), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))
private_keys = st.binary(min_size=32, max_size=32).map(key_from_seed)


@st.composite
def entries(draw: st.DrawFn, alg: str | None = None) -> Entry:
    chosen = alg or draw(st.sampled_from(sorted(ALGORITHMS)))
    hex_ = draw(st.binary(min_size=ALGORITHMS[chosen] // 2, max_size=ALGORITHMS[chosen] // 2)).hex()
    return Entry(chosen, hex_, draw(st.none() | labels))


def unique_entries(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[list[Entry]]:
    """Entries with distinct identities: a valid set's content."""
    return st.lists(entries(), min_size=min_size, max_size=max_size, unique_by=lambda e: e.identity)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    version = draw(versions)
    adds = draw(counts)
    issued = draw(times)
    return Manifest(
        set_name=f"{draw(slugs)}/{draw(slugs)}",
        version=version,
        parent_digest=None if version == 1 else draw(digests),
        delta_digest=draw(digests),
        adds=adds,
        removes=0 if version == 1 else draw(counts),
        content_digest=draw(digests),
        count=adds if version == 1 else draw(counts),
        issued=issued,
        expires=issued + timedelta(seconds=draw(st.integers(1, 10 * 365 * 86400))),
        keyset_version=draw(versions),
        keyset_digest=draw(digests),
    )


def _key_lists() -> st.SearchStrategy[list[Ed25519PrivateKey]]:
    return st.lists(private_keys, min_size=1, max_size=4, unique_by=key_id)


@dataclass(frozen=True)
class GeneratedKeyset:
    keyset: Keyset
    roots: list[Ed25519PrivateKey]
    publishers: list[Ed25519PrivateKey]


@st.composite
def keysets(draw: st.DrawFn) -> GeneratedKeyset:
    roots = draw(_key_lists())
    publishers = draw(_key_lists())
    keyset = Keyset.build(
        draw(slugs),
        draw(versions),
        [k.public_key() for k in roots],
        draw(st.integers(1, len(roots))),
        [k.public_key() for k in publishers],
        draw(st.integers(1, len(publishers))),
        draw(times),
    )
    return GeneratedKeyset(keyset, roots, publishers)
