"""build_version / build_changed_version: streamed block by block, the delta a set difference gives.

The builders never hold a whole content; these tests hold them to the
obvious definitions (adds = new - old, removes = old - new; a change's new
content = old without removed or relabelled identities, plus the adds)
over generated contents, with blocks of a few lines so that windows,
bisections and block edges are crossed everywhere.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.protocol import building
from client.protocol.building import NotHeldError, build_changed_version, build_version
from client.protocol.documents import Manifest, SignedDocument
from client.protocol.entries import identity_of
from client.protocol.errors import EntryFormatError
from tests.protocol.factories import make_keyset, new_key
from tests.synthetic import UNSEEDED, random_hex

KEY = new_key()
KEYSET = make_keyset([KEY], [KEY])
# A small pool of identities, of two algorithms, so contents overlap a lot.
IDENTITIES = sorted(
    [f"sha256:{random_hex(UNSEEDED, 64)}" for _ in range(10)]
    + [f"md5:{random_hex(UNSEEDED, 32)}" for _ in range(6)]
)


@st.composite
def contents(draw: st.DrawFn) -> list[bytes]:
    """A valid content: some identities of the pool, each with one label or none."""
    chosen = draw(st.lists(st.sampled_from(IDENTITIES), unique=True))
    lines = [identity + draw(st.sampled_from(["", " cat-a", " cat-b"])) for identity in chosen]
    return sorted(line.encode() for line in lines)


def first(content: list[bytes]) -> bytes | None:
    """The manifest of a version 1 holding ``content``: the parent of the version built."""
    if not content:
        return None
    document = build_version(
        set_name="example-unit/list",
        parent=None,
        old=[],
        new=content,
        keyset=KEYSET,
        keys=[KEY],
        issued=datetime(2026, 1, 1, tzinfo=UTC),
        expires=datetime(2027, 1, 1, tzinfo=UTC),
        delta_out=io.BytesIO(),
    )
    return document.data


def build(old: list[bytes], new: list[bytes], *, streamed: bool) -> tuple[SignedDocument, bytes]:
    delta = io.BytesIO()
    document = build_version(
        set_name="example-unit/list",
        parent=first(old),
        old=iter(old) if streamed else old,
        new=iter(new) if streamed else new,
        keyset=KEYSET,
        keys=[KEY],
        issued=datetime(2026, 1, 1, tzinfo=UTC),
        expires=datetime(2027, 1, 1, tzinfo=UTC),
        delta_out=delta,
    )
    return document, delta.getvalue()


def change(
    old: list[bytes], adds: list[bytes], removes: list[bytes]
) -> tuple[SignedDocument, bytes]:
    delta = io.BytesIO()
    document = build_changed_version(
        set_name="example-unit/list",
        parent=first(old),
        old=(line for line in old),
        adds=adds,
        removes=iter(removes),
        keyset=KEYSET,
        keys=[KEY],
        issued=datetime(2026, 1, 1, tzinfo=UTC),
        expires=datetime(2027, 1, 1, tzinfo=UTC),
        delta_out=delta,
    )
    return document, delta.getvalue()


def expected_delta(old: list[bytes], new: list[bytes]) -> bytes:
    adds = sorted(set(new) - set(old))
    removes = sorted(set(old) - set(new))
    return b"".join(b"+" + line + b"\n" for line in adds) + b"".join(
        b"-" + line + b"\n" for line in removes
    )


def assert_version(
    document: SignedDocument, delta: bytes, old: list[bytes], new: list[bytes]
) -> None:
    manifest = Manifest.parse(document.data)
    assert delta == expected_delta(old, new)
    assert manifest.delta_digest == hashlib.sha256(delta).hexdigest()
    assert manifest.adds == len(set(new) - set(old))
    assert manifest.removes == len(set(old) - set(new))
    content = b"".join(line + b"\n" for line in new)
    assert manifest.content_digest == hashlib.sha256(content).hexdigest()
    assert manifest.count == len(new)


@settings(max_examples=300, deadline=None)
@given(old=contents(), new=contents(), block=st.integers(1, 5), streamed=st.booleans())
def test_the_delta_is_the_set_difference(
    old: list[bytes], new: list[bytes], block: int, streamed: bool
) -> None:
    with mock.patch.object(building, "BLOCK_LINES", block):
        document, delta = build(old, new, streamed=streamed)
    assert_version(document, delta, old, new)


def reference_change(old: list[bytes], adds: list[bytes], removes: list[bytes]) -> list[bytes]:
    """The new content as publish --add/--remove always defined it; KeyError lists the missing."""
    to_remove = {identity_of(line) for line in removes}
    added = {identity_of(line): line for line in adds}
    kept = []
    for line in old:
        identity = identity_of(line)
        if identity in to_remove:
            to_remove.discard(identity)
        elif identity not in added:
            kept.append(line)
    if to_remove:
        raise KeyError(sorted(to_remove))
    return sorted(kept + list(added.values()))


@settings(max_examples=300, deadline=None)
@given(
    old=contents(),
    adds=contents(),
    removes=contents(),
    # Blocks of a few lines are checked whole; of 16, mostly where adds land.
    block=st.sampled_from([1, 2, 3, 5, 16]),
)
def test_a_change_gives_the_content_publish_always_gave(
    old: list[bytes], adds: list[bytes], removes: list[bytes], block: int
) -> None:
    try:
        new = reference_change(old, adds, removes)
    except KeyError as missing:
        (identities,) = missing.args
        with (
            mock.patch.object(building, "BLOCK_LINES", block),
            pytest.raises(NotHeldError) as caught,
        ):
            change(old, adds, removes)
        assert caught.value.count == len(identities)
        assert caught.value.shown == [i.decode() for i in identities[:5]]
        return
    with mock.patch.object(building, "BLOCK_LINES", block):
        document, delta = change(old, adds, removes)
    assert_version(document, delta, old, new)


def test_a_change_of_a_big_content_touches_only_its_blocks() -> None:
    # Sizes where each block holds a few changes, as a real change does.
    old = sorted(f"sha256:{random_hex(UNSEEDED, 64)}".encode() for _ in range(3000))
    removes = old[::97]
    relabels = [line + b" cat-a" for line in old[5::101]]
    adds = sorted([f"sha256:{random_hex(UNSEEDED, 64)}".encode() for _ in range(40)] + relabels)
    with mock.patch.object(building, "BLOCK_LINES", 64):
        document, delta = change(old, adds, removes)
    assert_version(document, delta, old, reference_change(old, adds, removes))


def test_a_refresh_carries_the_content_unchanged() -> None:
    old = sorted(f"md5:{random_hex(UNSEEDED, 32)}".encode() for _ in range(50))
    document, delta = change(old, [], [])
    assert delta == b""
    assert_version(document, delta, old, old)


@pytest.mark.parametrize(
    "new",
    [
        [b"sha256:" + b"a" * 64, b"md5:" + b"b" * 32],  # out of order
        [b"md5:" + b"b" * 32, b"md5:" + b"b" * 32 + b" cat-a"],  # one identity twice
        [b"md5:" + b"B" * 32],  # not canonical
    ],
)
def test_a_new_content_out_of_place_is_refused(new: list[bytes]) -> None:
    with pytest.raises(EntryFormatError):
        build([], new, streamed=True)


def test_the_old_content_is_read_once_as_it_streams() -> None:
    old = sorted(f"md5:{random_hex(UNSEEDED, 32)}".encode() for _ in range(100))
    read: list[bytes] = []

    def stream() -> Iterator[bytes]:
        for line in old:
            read.append(line)
            yield line

    new = old[10:]
    delta = io.BytesIO()
    with mock.patch.object(building, "BLOCK_LINES", 7):
        build_version(
            set_name="example-unit/list",
            parent=first(old),
            old=stream(),
            new=iter(new),
            keyset=KEYSET,
            keys=[KEY],
            issued=datetime(2026, 1, 1, tzinfo=UTC),
            expires=datetime(2027, 1, 1, tzinfo=UTC),
            delta_out=delta,
        )
    assert read == old
    assert delta.getvalue() == expected_delta(old, new)
