"""The verification core (``client.trust``), table-driven, with no I/O at all.

Keysets follow python-tuf's key rotation tests: each row says which keys are
the roots of each keyset, its threshold, which keys sign it, and whether the
client must end up trusting it or raise exactly which error.  Manifests,
staleness, digests and deltas are tables of the same kind.  Keys come from
fixed seeds, so every row is reproducible; every hash is synthetic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.errors import ResponseError, RollbackError
from client.protocol.documents import Keyset, Manifest, SignedDocument, sha256_hex, sign_document
from client.protocol.errors import (
    BadSignatureError,
    ChainError,
    DigestMismatchError,
    FormatError,
    SignatureError,
    ThresholdError,
    TooManySignaturesError,
    UnknownKeyError,
)
from client.protocol.keys import Signature, sign
from client.trust import (
    SetState,
    TrustedKeysets,
    check_digest,
    check_hub_latest,
    content_blocks,
    staleness,
    update_keysets,
    verify_chain,
    verify_delta,
)

AGENCY = "unit-a"
SET = "unit-a/list"
NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
# Fixed keys: KEYS[i] is the same key in every run.
KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(10)]
PUBLISHER = 9


def digest(text: str) -> str:
    """A synthetic SHA-256 hex."""
    return hashlib.sha256(text.encode()).hexdigest()


# -- keyset rotation ----------------------------------------------------------------------


@dataclass(frozen=True)
class KS:
    """One keyset of a rotation table: its roots, threshold, and who signs it.

    ``signers`` sign in order (a repeated index signs twice); ``forged``
    adds a signature under that key's id made by a key outside the table.
    """

    roots: tuple[int, ...]
    threshold: int = 1
    signers: tuple[int, ...] | None = None
    forged: tuple[int, ...] = ()
    version: int | None = None
    agency: str = AGENCY


def keyset_document(spec: KS, version: int) -> SignedDocument:
    keyset = Keyset.build(
        spec.agency,
        spec.version or version,
        [KEYS[i].public_key() for i in spec.roots],
        spec.threshold,
        [KEYS[PUBLISHER].public_key()],
        1,
        NOW + timedelta(days=365),
    )
    signatures = [sign(KEYS[i], keyset.raw) for i in (spec.signers or spec.roots)]
    stranger = Ed25519PrivateKey.from_private_bytes(b"\xee" * 32)
    for i in spec.forged:
        signatures.append(Signature(sign(KEYS[i], b"").keyid, stranger.sign(keyset.raw)))
    return SignedDocument("keyset", spec.version or version, keyset.raw, tuple(signatures))


Expected = int | type[Exception]

# (id, keyset 1, keysets offered after it, newest version trusted or the error)
ROTATIONS: list[tuple[str, KS, list[KS], Expected]] = [
    ("same root signs the next", KS((0,)), [KS((0,))], 2),
    ("rotation signed by old and new root", KS((0,)), [KS((1,), signers=(0, 1))], 2),
    ("only the new root signs", KS((0,)), [KS((1,), signers=(1,))], UnknownKeyError),
    ("only the old root signs", KS((0,)), [KS((1,), signers=(0,))], UnknownKeyError),
    ("new threshold 2, both new sign", KS((0,)), [KS((1, 2), 2, (0, 1, 2))], 2),
    ("new threshold 2, one new signs", KS((0,)), [KS((1, 2), 2, (0, 1))], ThresholdError),
    ("new threshold 2, one signs twice", KS((0,)), [KS((1, 2), 2, (0, 1, 1))], ThresholdError),
    ("old threshold 2, both sign", KS((0, 1), 2), [KS((0, 1), 2, (0, 1))], 2),
    ("old threshold 2, one of them", KS((0, 1), 2), [KS((2,), 1, (0, 2))], ThresholdError),
    ("old threshold 2, one twice", KS((0, 1), 2), [KS((2,), 1, (0, 0, 2))], ThresholdError),
    ("threshold lowered by a quorum", KS((0, 1), 2), [KS((0, 1), 1, (0, 1))], 2),
    (
        "two rotations in a row",
        KS((0,)),
        [KS((1, 2), 2, (0, 1, 2)), KS((3,), 1, (1, 2, 3))],
        3,
    ),
    (
        "second rotation short of the old quorum",
        KS((0,)),
        [KS((1, 2), 2, (0, 1, 2)), KS((3,), 1, (1, 3))],
        ThresholdError,
    ),
    (
        "a revoked root cannot vouch",
        KS((0,)),
        [KS((1,), 1, (0, 1)), KS((2,), 1, (0, 2))],
        UnknownKeyError,
    ),
    (
        "a root kept across a rotation still vouches",
        KS((0,)),
        [KS((0, 1), 1, (0, 1)), KS((1,), 1, (1,))],
        3,
    ),
    (
        "a forged signature under the old root's id",
        KS((0,)),
        [KS((0,), signers=(5,), forged=(0,))],
        BadSignatureError,
    ),
    ("a forged signature beside a good one", KS((0,)), [KS((0,), forged=(0,))], 2),
    ("a version skipped", KS((0,)), [KS((0,), version=3)], ChainError),
    ("another agency's keyset", KS((0,)), [KS((0,), agency="unit-b")], ChainError),
]


@pytest.mark.parametrize(
    ("first", "offered", "expected"),
    [
        pytest.param(first, offered, expected, id=name)
        for name, first, offered, expected in ROTATIONS
    ],
)
def test_keyset_rotation(first: KS, offered: list[KS], expected: Expected) -> None:
    held = Keyset.parse(keyset_document(first, 1).data)
    trusted = TrustedKeysets(AGENCY, (held,))
    documents = [keyset_document(spec, version) for version, spec in enumerate(offered, 2)]
    if isinstance(expected, int):
        updated = update_keysets(trusted, documents)
        assert [k.version for k in updated.keysets] == list(range(1, expected + 1))
        assert [k.raw for k in updated.keysets[1:]] == [d.data for d in documents]
        assert set(updated.newest.root_keys) == {
            sign(KEYS[i], b"").keyid for i in offered[-1].roots
        }
    else:
        with pytest.raises(expected) as raised:
            update_keysets(trusted, documents)
        assert type(raised.value) is expected


# Pinned by a root key: an implied keyset 0 of that key, threshold 1.
PINNED_ROTATIONS: list[tuple[str, int, KS, Expected]] = [
    ("keyset 1 of the pinned key", 0, KS((0,)), 1),
    ("keyset 1 moving away from the pinned key", 0, KS((1,), 1, (0, 1)), 1),
    ("keyset 1 without the pinned key's signature", 0, KS((1,)), UnknownKeyError),
    ("keyset 1 short of its own threshold", 0, KS((0, 1), 2, (0,)), ThresholdError),
    ("keyset 1 of another pinned key", 3, KS((0,)), UnknownKeyError),
]


@pytest.mark.parametrize(
    ("pinned", "first", "expected"),
    [pytest.param(p, f, e, id=name) for name, p, f, e in PINNED_ROTATIONS],
)
def test_keyset_1_against_a_pinned_root_key(pinned: int, first: KS, expected: Expected) -> None:
    trusted = TrustedKeysets(AGENCY, (Keyset.from_root_key(AGENCY, KEYS[pinned].public_key()),))
    document = keyset_document(first, 1)
    if isinstance(expected, int):
        updated = update_keysets(trusted, [document])
        assert [k.version for k in updated.keysets] == [0, 1]
        assert [k.version for k in updated.signing] == [1]
    else:
        with pytest.raises(expected) as raised:
            update_keysets(trusted, [document])
        assert type(raised.value) is expected


def test_held_keysets_offered_again_must_be_byte_identical() -> None:
    first = keyset_document(KS((0,)), 1)
    trusted = TrustedKeysets(AGENCY, (Keyset.parse(first.data),))
    second = keyset_document(KS((0,)), 2)
    updated = update_keysets(trusted, [first, second])
    assert [k.version for k in updated.keysets] == [1, 2]
    # Keyset 1 again, validly signed, but other bytes: the hub rewrites history.
    rewritten = keyset_document(KS((0, 1), 1, (0, 1)), 1)
    with pytest.raises(RollbackError):
        update_keysets(trusted, [rewritten, second])
    with pytest.raises(RollbackError):
        update_keysets(updated, [first, keyset_document(KS((0, 1), 1, (0, 1)), 2)])
    # The same bytes with other signatures are the same keyset.
    again = update_keysets(updated, [first, keyset_document(KS((0,), signers=(0, 0)), 2)])
    assert [k.raw for k in again.keysets] == [k.raw for k in updated.keysets]


# -- manifest chains -------------------------------------------------------------------------


def keyset_with(version: int, publishers: Sequence[int], threshold: int = 2) -> Keyset:
    return Keyset.build(
        AGENCY,
        version,
        [KEYS[0].public_key()],
        1,
        [KEYS[i].public_key() for i in publishers],
        threshold,
        NOW + timedelta(days=365),
    )


# Keyset 1: publishers 5 and 6, both needed; keyset 2 revokes 5 for 7.
KEYSET_1 = keyset_with(1, (5, 6))
KEYSET_2 = keyset_with(2, (6, 7))
TRUSTED = TrustedKeysets(AGENCY, (KEYSET_1, KEYSET_2))


def manifest_doc(
    version: int,
    parent: SignedDocument | None,
    *,
    signers: Sequence[int] | None = None,
    keyset: Keyset | None = None,
    **changes: object,
) -> SignedDocument:
    """Version ``version`` after ``parent``: 2 adds and 1 remove after version 1."""
    keyset = keyset or (KEYSET_1 if version <= 2 else KEYSET_2)
    parent_count = 0 if parent is None else Manifest.parse(parent.data).count
    adds, removes = (5, 0) if version == 1 else (2, 1)
    manifest = Manifest(
        set_name=SET,
        version=version,
        parent_digest=None if parent is None else sha256_hex(parent.data),
        delta_digest=digest(f"delta {version}"),
        adds=adds,
        removes=removes,
        content_digest=digest(f"content {version}"),
        count=parent_count + adds - removes,
        issued=NOW - timedelta(days=10 - version),
        expires=NOW + timedelta(days=20 + version),
        keyset_version=keyset.version,
        keyset_digest=keyset.digest,
    )
    manifest = dataclasses.replace(manifest, **changes)
    default = (5, 6) if keyset.version == 1 else (6, 7)
    keys = [KEYS[i] for i in (default if signers is None else signers)]
    return sign_document("manifest", manifest.encode(), manifest.version, keys)


def honest_chain() -> list[SignedDocument]:
    """Versions 1 to 4: the first two under keyset 1, the last two under keyset 2."""
    chain: list[SignedDocument] = []
    for version in range(1, 5):
        chain.append(manifest_doc(version, chain[-1] if chain else None))
    return chain


CHAIN = honest_chain()


def duplicated(document: SignedDocument, index: int = 0) -> SignedDocument:
    signature = document.signatures[index]
    return dataclasses.replace(document, signatures=(signature, signature))


# (id, local version, what the hub offers, versions accepted or the error)
CHAINS: list[tuple[str, int, Callable[[], list[SignedDocument]], list[int] | type[Exception]]] = [
    ("bootstrap through a rotation", 0, lambda: CHAIN, [1, 2, 3, 4]),
    ("next versions after the held one", 2, lambda: CHAIN[1:], [3, 4]),
    ("next versions without the held one", 2, lambda: CHAIN[2:], [3, 4]),
    ("nothing new", 2, lambda: CHAIN[1:2], []),
    (
        "a held version with other bytes",
        2,
        lambda: [manifest_doc(2, CHAIN[0], count=4)],
        RollbackError,
    ),
    ("a skipped version", 2, lambda: [CHAIN[3]], ChainError),
    ("an old version as the next", 2, lambda: [CHAIN[0]], ChainError),
    ("reordered", 0, lambda: [CHAIN[1], CHAIN[0]], ChainError),
    ("bootstrap missing version 1", 0, lambda: CHAIN[1:], ChainError),
    (
        "a forged parent, signed",
        2,
        lambda: [manifest_doc(3, CHAIN[1], parent_digest=digest("forged"))],
        ChainError,
    ),
    (
        "another set, signed",
        2,
        lambda: [manifest_doc(3, CHAIN[1], set_name="unit-a/other")],
        ChainError,
    ),
    ("counts that do not follow", 2, lambda: [manifest_doc(3, CHAIN[1], count=99)], ChainError),
    (
        "a signed manifest with a wrong digest for the next",
        3,
        lambda: [manifest_doc(4, manifest_doc(3, CHAIN[1], issued=NOW - timedelta(days=3)))],
        ChainError,
    ),
    (
        "bytes changed after signing",
        2,
        lambda: [dataclasses.replace(CHAIN[2], data=CHAIN[2].data.replace(b"adds 2", b"adds 3"))],
        BadSignatureError,
    ),
    (
        "one publish key of two",
        2,
        lambda: [manifest_doc(3, CHAIN[1], signers=(6,))],
        ThresholdError,
    ),
    ("one publish key twice", 2, lambda: [duplicated(CHAIN[2])], ThresholdError),
    ("keys nobody pinned", 2, lambda: [manifest_doc(3, CHAIN[1], signers=(1, 2))], UnknownKeyError),
    (
        "a revoked key signs for the new keyset",
        2,
        lambda: [manifest_doc(3, CHAIN[1], signers=(5, 6))],
        ChainError,
    ),
    (
        "the old keyset still signs the next version",
        2,
        lambda: [manifest_doc(3, CHAIN[1], keyset=KEYSET_1)],
        [3],
    ),
    (
        "a keyset the client does not hold",
        2,
        lambda: [manifest_doc(3, CHAIN[1], keyset=keyset_with(3, (6, 7)))],
        ChainError,
    ),
    (
        "more signatures than are read",
        2,
        lambda: [
            dataclasses.replace(
                CHAIN[2], signatures=(*CHAIN[2].signatures, *duplicated(CHAIN[2]).signatures)
            )
        ],
        TooManySignaturesError,
    ),
]


@pytest.mark.parametrize(
    ("local", "offered", "expected"),
    [pytest.param(local, offer, expected, id=name) for name, local, offer, expected in CHAINS],
)
def test_verify_chain(
    local: int,
    offered: Callable[[], list[SignedDocument]],
    expected: list[int] | type[Exception],
) -> None:
    state = SetState(SET, local, CHAIN[local - 1].data if local else None)
    documents = offered()
    if isinstance(expected, list):
        update = verify_chain(state, TRUSTED, documents, max_signatures=3)
        assert [v.manifest.version for v in update.versions] == expected
        assert [v.document for v in update.versions] == [
            d for d in documents if d.version in expected
        ]
        newest = update.newest
        assert (newest.manifest.version if newest else None) == (expected[-1] if expected else None)
    else:
        with pytest.raises(expected) as raised:
            verify_chain(state, TRUSTED, documents, max_signatures=3)
        assert type(raised.value) is expected


def test_the_pin_alone_verifies_no_manifest() -> None:
    pinned = TrustedKeysets(AGENCY, (Keyset.from_root_key(AGENCY, KEYS[0].public_key()),))
    document = manifest_doc(1, None, signers=(0,))
    with pytest.raises(SignatureError) as raised:
        verify_chain(SetState(SET), pinned, [document], max_signatures=3)
    assert type(raised.value) is SignatureError


@pytest.mark.parametrize(
    ("local", "latest", "refused"),
    [(0, 0, False), (0, 5, False), (3, 3, False), (3, 4, False), (3, 2, True), (1, 0, True)],
)
def test_check_hub_latest(local: int, latest: int, refused: bool) -> None:
    state = SetState(SET, local, CHAIN[local - 1].data if local else None)
    if refused:
        with pytest.raises(RollbackError):
            check_hub_latest(state, latest)
    else:
        check_hub_latest(state, latest)


# -- staleness -----------------------------------------------------------------------------


def stale_case(
    manifest_expires: timedelta, keyset_expires: timedelta, names: int
) -> tuple[Manifest, TrustedKeysets]:
    newest = Keyset.build(
        AGENCY,
        2,
        [KEYS[0].public_key()],
        1,
        [KEYS[6].public_key()],
        1,
        NOW + keyset_expires,
    )
    older = Keyset.build(
        AGENCY, 1, [KEYS[0].public_key()], 1, [KEYS[5].public_key()], 1, NOW - timedelta(days=1)
    )
    named = older if names == 1 else newest
    manifest = Manifest.parse(
        manifest_doc(
            1,
            None,
            keyset=named,
            issued=NOW + manifest_expires - timedelta(days=30),
            expires=NOW + manifest_expires,
        ).data
    )
    return manifest, TrustedKeysets(AGENCY, (older, newest))


SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)
# (id, manifest expires after NOW, newest keyset expires after NOW, keyset named, reasons)
STALENESS: list[tuple[str, timedelta, timedelta, int, list[str]]] = [
    ("fresh (an older keyset expired does not matter)", DAY, DAY, 2, []),
    ("manifest expires a second from now", SECOND, DAY, 2, []),
    ("manifest expires exactly now", timedelta(0), DAY, 2, ["manifest version 1 expired"]),
    ("manifest expired", -DAY, DAY, 2, ["manifest version 1 expired"]),
    ("newest keyset expired", DAY, -SECOND, 2, ["keyset 2 of unit-a expired"]),
    ("manifest under the older keyset", DAY, DAY, 1, ["keyset 2 is newer"]),
    (
        "everything at once",
        -DAY,
        -DAY,
        1,
        ["manifest version 1 expired", "keyset 2 of unit-a expired", "keyset 2 is newer"],
    ),
]


@pytest.mark.parametrize(
    ("manifest_expires", "keyset_expires", "names", "reasons"),
    [pytest.param(m, k, n, r, id=name) for name, m, k, n, r in STALENESS],
)
def test_staleness(
    manifest_expires: timedelta, keyset_expires: timedelta, names: int, reasons: list[str]
) -> None:
    manifest, keysets = stale_case(manifest_expires, keyset_expires, names)
    found = staleness(manifest, keysets, NOW)
    assert len(found) == len(reasons), found
    for reason, text in zip(reasons, found, strict=True):
        assert reason in text


# -- digests ---------------------------------------------------------------------------------


DELTA_BYTES = b"+md5:" + b"1" * 32 + b"\n"
CONTENT_BYTES = b"md5:" + b"1" * 32 + b"\n"


@pytest.mark.parametrize(
    ("kind", "data", "matches"),
    [
        ("delta", DELTA_BYTES, True),
        ("content", CONTENT_BYTES, True),
        ("delta", CONTENT_BYTES, False),
        ("content", DELTA_BYTES, False),
        ("delta", DELTA_BYTES[:-1], False),
        ("content", CONTENT_BYTES + b"\n", False),
    ],
)
def test_check_digest(kind: str, data: bytes, matches: bool) -> None:
    manifest = Manifest.parse(
        manifest_doc(
            1,
            None,
            delta_digest=sha256_hex(DELTA_BYTES),
            content_digest=sha256_hex(CONTENT_BYTES),
            adds=1,
            count=1,
        ).data
    )
    if matches:
        check_digest(kind, manifest, sha256_hex(data))
    else:
        with pytest.raises(DigestMismatchError):
            check_digest(kind, manifest, sha256_hex(data))


# -- deltas and contents, once their digest matched -----------------------------------------------

A = b"md5:" + b"a" * 32
B = b"sha1:" + b"b" * 40
C = b"sha256:" + b"c" * 64
D = b"sha512:" + b"d" * 128
P = b"pdq:" + b"e" * 64

# (id, delta bytes, manifest adds and removes, (adds, removes) read back or the error)
DELTAS: list[
    tuple[str, bytes, tuple[int, int], tuple[list[bytes], list[bytes]] | type[Exception]]
] = [
    ("adds and removes", b"+%s\n+%s\n-%s\n" % (A, C, B), (2, 1), ([A, C], [B])),
    ("adds only", b"+%s\n+%s cat-a\n" % (P, D), (2, 0), ([P, D + b" cat-a"], [])),
    ("removes only", b"-%s\n-%s\n" % (A, B), (0, 2), ([], [A, B])),
    ("empty", b"", (0, 0), ([], [])),
    ("a relabel", b"+%s cat-b\n-%s cat-a\n" % (A, A), (1, 1), ([A + b" cat-b"], [A + b" cat-a"])),
    ("counts above the manifest's", b"+%s\n+%s\n" % (A, B), (1, 0), ChainError),
    ("counts below the manifest's", b"+%s\n" % A, (1, 1), ChainError),
    ("removes before adds", b"-%s\n+%s\n" % (A, B), (1, 1), ResponseError),
    ("adds out of order", b"+%s\n+%s\n" % (C, A), (2, 0), ResponseError),
    ("an identity added twice", b"+%s cat-a\n+%s cat-b\n" % (A, A), (2, 0), ResponseError),
    ("an identity removed twice", b"-%s cat-a\n-%s cat-b\n" % (A, A), (0, 2), ResponseError),
    ("a line repeated", b"+%s\n+%s\n" % (A, A), (2, 0), ResponseError),
    ("uppercase hex", b"+md5:" + b"A" * 32 + b"\n", (1, 0), ResponseError),
    ("a short hash", b"+md5:" + b"a" * 31 + b"\n", (1, 0), ResponseError),
    ("an unknown algorithm", b"+sha3:" + b"a" * 64 + b"\n", (1, 0), ResponseError),
    ("no sign", A + b"\n", (1, 0), ResponseError),
    ("another sign", b"*" + A + b"\n", (1, 0), ResponseError),
    ("a blank line", b"+%s\n\n" % A, (1, 0), ResponseError),
    ("CRLF", b"+%s\r\n" % A, (1, 0), ResponseError),
    ("no final LF", b"+%s" % A, (1, 0), ResponseError),
    ("a bad label", b"+%s cat a\n" % A, (1, 0), ResponseError),
    ("an overlong line", b"+%s %s\n" % (A, b"x" * 5000), (1, 0), ResponseError),
]


@pytest.mark.parametrize(
    ("data", "counts", "expected"),
    [pytest.param(d, c, e, id=name) for name, d, c, e in DELTAS],
)
def test_verify_delta(
    data: bytes,
    counts: tuple[int, int],
    expected: tuple[list[bytes], list[bytes]] | type[Exception],
) -> None:
    manifest = dataclasses.replace(
        Manifest.parse(CHAIN[1].data),
        adds=counts[0],
        removes=counts[1],
        delta_digest=sha256_hex(data),
    )
    stream = io.BytesIO(data)
    if isinstance(expected, tuple):
        delta = verify_delta(manifest, stream)
        # Read back the way the store applies a delta: removes, then adds; twice.
        for _ in range(2):
            assert [line for block in delta.remove_blocks() for line in block] == expected[1]
            assert [line for block in delta.add_blocks() for line in block] == expected[0]
    else:
        with pytest.raises(expected) as raised:
            verify_delta(manifest, stream)
        assert type(raised.value) is expected
        if expected is ResponseError:
            assert isinstance(raised.value.__cause__, FormatError)


CONTENTS: list[tuple[str, bytes, int, type[Exception] | None]] = [
    ("sorted", b"%s\n%s cat-a\n%s\n" % (A, P, B), 3, None),
    ("empty", b"", 0, None),
    ("a count above the manifest's", b"%s\n" % A, 2, ChainError),
    ("a count below the manifest's", b"%s\n%s\n" % (A, B), 1, ChainError),
    ("unsorted", b"%s\n%s\n" % (B, A), 2, ResponseError),
    ("an identity twice", b"%s cat-a\n%s cat-b\n" % (A, A), 2, ResponseError),
    ("a delta line", b"+%s\n" % A, 1, ResponseError),
    ("no final LF", A, 1, ResponseError),
]


@pytest.mark.parametrize(
    ("data", "count", "error"),
    [pytest.param(d, c, e, id=name) for name, d, c, e in CONTENTS],
)
def test_content_blocks(data: bytes, count: int, error: type[Exception] | None) -> None:
    manifest = dataclasses.replace(Manifest.parse(CHAIN[1].data), count=count)
    blocks = content_blocks(manifest, io.BytesIO(data))
    if error is None:
        assert [line for block in blocks for line in block] == data.splitlines()
    else:
        with pytest.raises(error) as raised:
            list(blocks)
        assert type(raised.value) is error
