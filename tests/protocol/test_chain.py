"""Keyset chains and manifest trust, table-driven in the manner of python-tuf's rotation tests.

Each row says which keys sign keyset n+1, which keyset it is checked
against, and whether it must be accepted (or which error it must raise).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.protocol.documents import (
    Keyset,
    sign_document,
    verify,
    verify_keyset,
    verify_manifest,
    verify_manifest_any,
)
from client.protocol.errors import (
    BadSignatureError,
    ChainError,
    SignatureError,
    ThresholdError,
    UnknownKeyError,
    VerificationError,
)
from client.protocol.keys import key_id, sign
from tests.protocol.factories import AGENCY, NOW, make_keyset, make_manifest, new_key

KEY = {name: new_key() for name in "ABCDEFPQ"}


def keys(names: str) -> list[Ed25519PrivateKey]:
    return [KEY[n] for n in names]


def verified(keyset: Keyset, signers: str, previous: Keyset | None) -> Keyset:
    document = sign_document("keyset", keyset.raw, keyset.version, keys(signers))
    return verify_keyset(document.data, document.signatures, previous, agency=keyset.agency)


# Keyset 1 of the rotation rows: roots A and B, threshold 2.
KS1 = make_keyset(keys("AB"), keys("P"), root_threshold=2)
KS1_VERIFIED = verified(KS1, "AB", None)


@dataclass(frozen=True)
class Row:
    id: str
    roots: str  # root keys of the new keyset
    threshold: int  # its root threshold
    signers: str  # who signs it (letters may repeat)
    error: type[VerificationError] | None  # None: accepted


ROTATION = [
    Row("old-and-new-roots-sign", "CD", 2, "ABCD", None),
    Row("same-roots-re-signed", "AB", 2, "AB", None),
    Row("one-root-replaced", "AC", 2, "ABC", None),
    Row("lower-threshold", "CD", 1, "ABC", None),
    Row("unknown-extra-signer-ignored", "CD", 2, "ABCDE", None),
    Row("only-new-roots", "CD", 2, "CD", UnknownKeyError),
    Row("one-old-root-short-of-threshold", "CD", 2, "ACD", ThresholdError),
    Row("old-root-repeated-counts-once", "CD", 2, "AACD", ThresholdError),
    Row("old-roots-but-not-new-threshold", "CD", 2, "ABC", ThresholdError),
    Row("old-roots-but-no-new-root", "CD", 1, "AB", UnknownKeyError),
    Row("new-root-repeated-counts-once", "CD", 2, "ABCC", ThresholdError),
    Row("nobody-signs", "CD", 1, "", ThresholdError),
]


@pytest.mark.parametrize("row", ROTATION, ids=[r.id for r in ROTATION])
def test_keyset_2_rotation(row: Row) -> None:
    ks2 = make_keyset(keys(row.roots), keys("Q"), version=2, root_threshold=row.threshold)
    if row.error is None:
        accepted = verified(ks2, row.signers, KS1_VERIFIED)
        assert accepted.version == 2
        assert set(accepted.root_keys) == {key_id(k) for k in keys(row.roots)}
        assert accepted.raw == ks2.raw
    else:
        with pytest.raises(row.error):
            verified(ks2, row.signers, KS1_VERIFIED)
        assert issubclass(row.error, SignatureError)


def test_bad_signature_by_a_previous_root() -> None:
    ks2 = make_keyset(keys("CD"), version=2, root_threshold=1)
    signatures = [sign(KEY["A"], ks2.raw + b"x"), sign(KEY["B"], ks2.raw), sign(KEY["C"], ks2.raw)]
    with pytest.raises(BadSignatureError, match=f"previous root key {key_id(KEY['A'])}"):
        verify_keyset(ks2.raw, signatures, KS1_VERIFIED, agency=AGENCY)


@dataclass(frozen=True)
class FirstRow:
    id: str
    pin: str | None  # None: registration (no previous); else the pinned root key
    roots: str
    signers: str
    error: type[VerificationError] | None
    threshold: int = 1


FIRST = [
    FirstRow("self-signed-registration", None, "A", "A", None),
    FirstRow("self-signed-two-roots", None, "AB", "AB", None),
    FirstRow("registration-unsigned", None, "A", "", ThresholdError),
    FirstRow("registration-signed-by-stranger", None, "A", "E", UnknownKeyError),
    FirstRow("pin-is-the-root", "A", "A", "A", None),
    FirstRow("pin-signs-new-roots", "A", "BC", "AB", None),
    FirstRow("pin-did-not-sign", "A", "B", "B", UnknownKeyError),
    FirstRow("pin-signed-but-own-root-did-not", "A", "B", "A", UnknownKeyError),
    FirstRow("own-root-repeated-counts-once", "A", "AB", "AA", ThresholdError, threshold=2),
]


@pytest.mark.parametrize("row", FIRST, ids=[r.id for r in FIRST])
def test_keyset_1_against_registration_or_pin(row: FirstRow) -> None:
    ks1 = make_keyset(keys(row.roots), keys("P"), root_threshold=row.threshold)
    previous = None if row.pin is None else Keyset.from_root_key(AGENCY, KEY[row.pin].public_key())
    if row.error is None:
        assert verified(ks1, row.signers, previous).version == 1
    else:
        with pytest.raises(row.error):
            verified(ks1, row.signers, previous)


def test_pinned_root_key_is_an_implied_keyset_0() -> None:
    pin = Keyset.from_root_key(AGENCY, KEY["A"].public_key())
    assert (pin.version, pin.root_threshold) == (0, 1)
    assert set(pin.root_keys) == {key_id(KEY["A"])}
    assert pin.publish_keys == {}


def test_wrong_agency_is_a_chain_error() -> None:
    other = make_keyset(keys("A"), agency="other-unit")
    document = sign_document("keyset", other.raw, 1, keys("A"))
    with pytest.raises(ChainError, match="keyset is for agency other-unit, expected example-unit"):
        verify_keyset(document.data, document.signatures, None, agency=AGENCY)
    pin = Keyset.from_root_key(AGENCY, KEY["A"].public_key())
    with pytest.raises(ChainError, match="keyset is for agency other-unit"):
        verify_keyset(document.data, document.signatures, pin, agency=AGENCY)


def test_previous_keyset_of_another_agency_is_a_chain_error() -> None:
    foreign = Keyset.from_root_key("other-unit", KEY["A"].public_key())
    ks1 = make_keyset(keys("A"))
    document = sign_document("keyset", ks1.raw, 1, keys("A"))
    with pytest.raises(ChainError, match="previous keyset is for agency other-unit"):
        verify_keyset(document.data, document.signatures, foreign, agency=AGENCY)


@pytest.mark.parametrize(("version", "previous"), [(2, None), (3, "ks1"), (1, "ks1"), (2, "pin")])
def test_wrong_version_is_a_chain_error(version: int, previous: str | None) -> None:
    prior = {
        None: None,
        "ks1": verified(make_keyset(keys("A")), "A", None),
        "pin": Keyset.from_root_key(AGENCY, KEY["A"].public_key()),
    }[previous]
    expected = 1 if prior is None else prior.version + 1
    keyset = make_keyset(keys("A"), version=version)
    with pytest.raises(ChainError, match=f"keyset version {version}, expected {expected}"):
        verified(keyset, "A", prior)


def test_three_keyset_chain_with_full_rotation() -> None:
    ks1 = verified(make_keyset(keys("A")), "A", None)
    ks2 = verified(make_keyset(keys("BC"), version=2, root_threshold=2), "ABC", ks1)
    ks3 = verified(make_keyset(keys("D"), version=3), "BCD", ks2)
    assert [k.version for k in (ks1, ks2, ks3)] == [1, 2, 3]
    # A revoked root (A) can no longer sign keyset 4, even with the current one.
    ks4 = make_keyset(keys("E"), version=4)
    with pytest.raises(UnknownKeyError):
        verified(ks4, "AE", ks3)
    assert verified(ks4, "DE", ks3).version == 4


def test_verify_dispatches_keysets() -> None:
    ks1 = make_keyset(keys("A"))
    document = sign_document("keyset", ks1.raw, 1, keys("A"))
    result = verify("keyset", document.data, document.signatures, None, agency=AGENCY)
    assert isinstance(result, Keyset)
    with pytest.raises(TypeError):
        verify("keyset", document.data, document.signatures, [result], agency=AGENCY)


# --- manifests ----------------------------------------------------------------

# Keyset 1: publish P; keyset 2: publish Q. Both with root A.
HELD_1 = verified(make_keyset(keys("A"), keys("P")), "A", None)
HELD_2 = verified(make_keyset(keys("A"), keys("Q"), version=2), "A", HELD_1)


def manifest_bytes(keyset: Keyset, **kwargs: Any) -> bytes:
    return make_manifest(keyset, **kwargs).encode()


def test_manifest_verifies_against_the_keyset_it_names() -> None:
    data = manifest_bytes(HELD_1)
    manifest = verify_manifest(data, [sign(KEY["P"], data)], HELD_1)
    assert (manifest.keyset_version, manifest.keyset_digest) == (1, HELD_1.digest)


def test_manifest_naming_another_keyset_version_is_a_chain_error() -> None:
    data = manifest_bytes(HELD_2)  # names keyset 2 ...
    with pytest.raises(ChainError, match=r"manifest names keyset 2 sha256:.* with keyset 1"):
        verify_manifest(data, [sign(KEY["P"], data)], HELD_1)  # ... signed by keyset 1's key


def test_manifest_naming_another_keyset_digest_is_a_chain_error() -> None:
    twin = make_keyset(keys("A"), keys("P"), expires=NOW + timedelta(days=5))  # also version 1
    assert twin.digest != HELD_1.digest
    data = manifest_bytes(twin)
    with pytest.raises(ChainError, match=f"manifest names keyset 1 sha256:{twin.digest}"):
        verify_manifest(data, [sign(KEY["P"], data)], HELD_1)


def test_manifest_of_another_agency_is_a_chain_error() -> None:
    data = manifest_bytes(HELD_1, set_name="other-unit/known-files")
    with pytest.raises(
        ChainError, match="manifest of agency other-unit verified with the keyset of"
    ):
        verify_manifest(data, [sign(KEY["P"], data)], HELD_1)


def test_root_key_alone_cannot_sign_a_manifest() -> None:
    data = manifest_bytes(HELD_1)
    with pytest.raises(UnknownKeyError, match="publish key"):
        verify_manifest(data, [sign(KEY["A"], data)], HELD_1)


def test_publish_threshold_counts_distinct_keys() -> None:
    held = verified(make_keyset(keys("A"), keys("PQ"), publish_threshold=2), "A", None)
    data = manifest_bytes(held)
    with pytest.raises(ThresholdError):
        verify_manifest(data, [sign(KEY["P"], data), sign(KEY["P"], data)], held)
    assert verify_manifest(data, [sign(KEY["Q"], data), sign(KEY["P"], data)], held).version == 1


def test_verify_manifest_any_picks_the_keyset_that_signed() -> None:
    old = manifest_bytes(HELD_1)
    new = manifest_bytes(HELD_2, version=2)
    held = [HELD_2, HELD_1]
    assert verify_manifest_any(old, [sign(KEY["P"], old)], held).keyset_version == 1
    assert verify_manifest_any(new, [sign(KEY["Q"], new)], held).keyset_version == 2
    assert verify_manifest_any(old, [sign(KEY["P"], old)], list(reversed(held))).keyset_version == 1
    assert verify("manifest", new, [sign(KEY["Q"], new)], held).version == 2


def test_verify_manifest_any_refuses_a_key_that_names_another_keyset() -> None:
    # Signed by keyset 1's publish key but naming keyset 2: keys come from
    # state, never from the manifest's claim.
    data = manifest_bytes(HELD_2)
    with pytest.raises(ChainError):
        verify_manifest_any(data, [sign(KEY["P"], data)], [HELD_1, HELD_2])


def test_verify_manifest_any_with_no_good_signature() -> None:
    data = manifest_bytes(HELD_1)
    with pytest.raises(SignatureError):
        verify_manifest_any(data, [sign(KEY["E"], data)], [HELD_1, HELD_2])
    with pytest.raises(SignatureError, match="no trusted keyset"):
        verify_manifest_any(data, [sign(KEY["P"], data)], [])


def test_verify_manifest_any_when_keysets_share_a_publish_key() -> None:
    """Older manifests may name older keysets, also when the publish key did not change.

    A rotation that only replaces a root key or extends ``expires`` keeps the
    publish key; a manifest under keyset 1 must still verify while keyset 2
    is also held.
    """
    ks1 = verified(make_keyset(keys("A"), keys("P")), "A", None)
    ks2 = verified(make_keyset(keys("B"), keys("P"), version=2), "AB", ks1)
    old = manifest_bytes(ks1)
    assert verify_manifest(old, [sign(KEY["P"], old)], ks1).keyset_version == 1
    assert verify_manifest_any(old, [sign(KEY["P"], old)], [ks1, ks2]).keyset_version == 1
