"""Keys, signatures and thresholds: a key id counts once, unknown keys never count."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.protocol.errors import (
    BadSignatureError,
    FormatError,
    KeyFileError,
    ThresholdError,
    TooManySignaturesError,
    UnknownKeyError,
)
from client.protocol.keys import (
    DEFAULT_MAX_SIGNATURES,
    Signature,
    decode_base64,
    key_id,
    load_private_key_pem,
    load_public_key_pem,
    parse_signatures,
    private_key_to_pem,
    public_key_from_raw,
    public_key_raw,
    public_key_to_pem,
    read_private_key,
    read_public_key,
    sign,
    verify_threshold,
    write_private_key,
)
from tests.protocol.factories import key_id_of_raw, new_key

DATA = b"hashex-manifest/v1\nsome signed bytes\n"
A, B, C, D = (new_key() for _ in range(4))
KEYS = {key_id(k): k.public_key() for k in (A, B, C)}


def sigs(*keys: Ed25519PrivateKey, data: bytes = DATA) -> list[Signature]:
    return [sign(k, data) for k in keys]


def test_key_id_is_sha256_of_the_raw_public_key() -> None:
    raw = public_key_raw(A.public_key())
    assert len(raw) == 32
    assert key_id(A) == key_id(A.public_key()) == key_id_of_raw(raw)


def test_threshold_met_returns_the_distinct_signers() -> None:
    assert verify_threshold(DATA, sigs(A, B), KEYS, 2) == {key_id(A), key_id(B)}
    assert verify_threshold(DATA, sigs(C), KEYS, 1) == {key_id(C)}


def test_a_key_counts_once_however_often_it_signs() -> None:
    with pytest.raises(
        ThresholdError, match="1 distinct trusted signing key\\(s\\) signed, 2 required"
    ):
        verify_threshold(DATA, sigs(A, A), KEYS, 2)
    with pytest.raises(ThresholdError):
        verify_threshold(DATA, sigs(A, A, A, B), KEYS, 3)


def test_unknown_keys_are_ignored() -> None:
    assert verify_threshold(DATA, sigs(D, A, D), KEYS, 1) == {key_id(A)}
    with pytest.raises(
        UnknownKeyError, match="no signature by a trusted publish key \\(2 by unknown keys\\)"
    ):
        verify_threshold(DATA, sigs(D, D), KEYS, 1, role="publish")


def test_unknown_key_claiming_a_trusted_key_id_is_a_bad_signature() -> None:
    forged = Signature(key_id(A), D.sign(DATA))
    with pytest.raises(
        BadSignatureError, match=f"signature by root key {key_id(A)} does not verify"
    ):
        verify_threshold(DATA, [forged], KEYS, 1, role="root")


def test_bad_signature_by_a_known_key() -> None:
    with pytest.raises(BadSignatureError, match=f"signing key {key_id(B)} does not verify"):
        verify_threshold(DATA, sigs(B, data=DATA + b"x"), KEYS, 1)
    # A bad one does not spoil the threshold when enough others verify ...
    assert verify_threshold(DATA, [*sigs(B, data=b"other"), *sigs(A)], KEYS, 1) == {key_id(A)}
    # ... but short of the threshold the bad one is what is reported.
    with pytest.raises(BadSignatureError):
        verify_threshold(DATA, [*sigs(B, data=b"other"), *sigs(A)], KEYS, 2)


def test_no_signatures_at_all() -> None:
    with pytest.raises(ThresholdError, match="0 distinct trusted"):
        verify_threshold(DATA, [], KEYS, 1)


def test_threshold_below_one_is_refused() -> None:
    with pytest.raises(ThresholdError, match="threshold must be at least 1"):
        verify_threshold(DATA, sigs(A), KEYS, 0)


def test_more_signatures_than_the_cap_are_refused_unread() -> None:
    cap = DEFAULT_MAX_SIGNATURES
    assert verify_threshold(DATA, sigs(*[A] * cap), KEYS, 1) == {key_id(A)}
    with pytest.raises(TooManySignaturesError, match=f"{cap + 1} signatures given, at most {cap}"):
        verify_threshold(DATA, sigs(*[A] * (cap + 1)), KEYS, 1)
    with pytest.raises(TooManySignaturesError):
        verify_threshold(DATA, sigs(A, B, C), KEYS, 1, max_signatures=2)


def test_parse_signatures_cap_and_shape() -> None:
    wire = [s.to_json() for s in sigs(A, B)]
    assert parse_signatures(wire) == sigs(A, B)
    with pytest.raises(TooManySignaturesError, match="signatures: 3 given, at most 2 are read"):
        parse_signatures(wire + wire[:1], max_signatures=2)
    with pytest.raises(FormatError, match="expected a JSON array"):
        parse_signatures({"keyid": key_id(A)})
    with pytest.raises(FormatError, match="signatures\\[1\\]: 'keyid' must be 64 lowercase hex"):
        parse_signatures([wire[0], {**wire[1], "keyid": "x"}])


# --- Signature.from_json ------------------------------------------------------

GOOD = sign(A, DATA).to_json()


def _b64_noncanonical(raw: bytes) -> str:
    """Same bytes, other spelling: set unused low bits of the last digit."""
    text = base64.b64encode(raw).decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    pad = text.count("=")
    pos = len(text) - pad - 1
    spelled = text[:pos] + alphabet[alphabet.index(text[pos]) | 1] + text[pos + 1 :]
    if spelled == text:
        spelled = text[:pos] + alphabet[alphabet.index(text[pos]) ^ 2] + text[pos + 1 :]
    assert spelled != text
    assert base64.b64decode(spelled) == raw
    return spelled


SIG_RAW = base64.b64decode(GOOD["sig"])


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({**GOOD, "keyid": GOOD["keyid"].upper()}, "'keyid' must be 64 lowercase hex characters"),
        ({**GOOD, "keyid": GOOD["keyid"][:-1]}, "'keyid' must be 64 lowercase hex characters"),
        ({**GOOD, "keyid": GOOD["keyid"] + "0"}, "'keyid' must be 64 lowercase hex characters"),
        ({**GOOD, "keyid": 5}, "'keyid' must be 64 lowercase hex characters"),
        (
            {**GOOD, "sig": base64.b64encode(SIG_RAW[:63]).decode()},
            "'sig' must decode to 64 bytes, got 63",
        ),
        (
            {**GOOD, "sig": base64.b64encode(SIG_RAW + b"\0").decode()},
            "'sig' must decode to 64 bytes, got 65",
        ),
        ({**GOOD, "sig": _b64_noncanonical(SIG_RAW)}, "'sig' is not canonical base64"),
        ({**GOOD, "sig": GOOD["sig"].rstrip("=")}, "'sig' is not valid padded base64"),
        (
            {**GOOD, "sig": GOOD["sig"][:40] + "\n" + GOOD["sig"][40:]},
            "'sig' is not valid padded base64",
        ),
        (
            {**GOOD, "sig": base64.urlsafe_b64encode(b"\xfb" * 64).decode()},
            "'sig' is not valid padded base64",
        ),
        ({**GOOD, "sig": "é" * 88}, "'sig' is not valid padded base64"),
        ({**GOOD, "sig": None}, "'sig' must be a base64 string"),
        ({**GOOD, "extra": 1}, "expected an object with exactly 'keyid' and 'sig'"),
        ({"keyid": GOOD["keyid"]}, "expected an object with exactly 'keyid' and 'sig'"),
        ([GOOD["keyid"], GOOD["sig"]], "expected an object with exactly 'keyid' and 'sig'"),
    ],
)
def test_signature_from_json_is_strict(obj: object, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        Signature.from_json(obj)


def test_signature_json_round_trip() -> None:
    signature = Signature.from_json(GOOD)
    assert signature.to_json() == GOOD
    assert signature.sig == SIG_RAW
    assert len(signature.sig) == 64


def test_decode_base64_canonical() -> None:
    assert decode_base64("AAEC", "x") == b"\0\1\2"
    with pytest.raises(FormatError, match="x is not canonical base64"):
        decode_base64("AAF=", "x")  # "AAE=" with unused bits set: same bytes


def test_public_key_from_raw_needs_32_bytes() -> None:
    with pytest.raises(FormatError, match="public key must be 32 bytes, got 31"):
        public_key_from_raw(b"\0" * 31)


# --- key files ----------------------------------------------------------------


def test_private_key_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    write_private_key(path, A)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert key_id(read_private_key(path)) == key_id(A)
    assert key_id(read_public_key(path)) == key_id(A)


def test_write_private_key_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(b"precious")
    with pytest.raises(KeyFileError, match="already exists; refusing to overwrite a key"):
        write_private_key(path, A)
    assert path.read_bytes() == b"precious"


def test_write_private_key_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot create key file"):
        write_private_key(tmp_path / "missing" / "k.pem", A)


def test_public_key_file(tmp_path: Path) -> None:
    path = tmp_path / "k.pub.pem"
    path.write_bytes(public_key_to_pem(A.public_key()))
    assert key_id(read_public_key(path)) == key_id(A)
    with pytest.raises(KeyFileError, match="not a PKCS#8 private key PEM"):
        read_private_key(path)


def test_encrypted_private_key_is_refused() -> None:
    pem = A.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"x"),
    )
    with pytest.raises(KeyFileError, match=r"k\.pem: encrypted private keys are not supported"):
        load_private_key_pem(pem, "k.pem")


def test_non_ed25519_keys_are_refused() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    private = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_private_key_pem(private)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_public_key_pem(public)


def test_garbage_key_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="unreadable private key PEM"):
        load_private_key_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="not a public key PEM"):
        load_public_key_pem(b"hello")
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (65 * 1024))
    with pytest.raises(KeyFileError, match="too large to be a key file"):
        read_private_key(big)
    with pytest.raises(KeyFileError, match="cannot read key file"):
        read_private_key(tmp_path / "absent.pem")


def test_private_pem_is_pkcs8_unencrypted() -> None:
    pem = private_key_to_pem(A)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert key_id(load_private_key_pem(pem)) == key_id(A)
    assert b"ENCRYPTED" not in pem
