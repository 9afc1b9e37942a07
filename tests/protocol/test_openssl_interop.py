"""Interoperability with OpenSSL, both ways: what we sign, openssl verifies, and the reverse."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from client.protocol.documents import Keyset, sign_document, verify_keyset, verify_manifest
from client.protocol.errors import BadSignatureError
from client.protocol.keys import (
    Signature,
    key_id,
    load_public_key_pem,
    private_key_to_pem,
    public_key_raw,
    public_key_to_pem,
    read_private_key,
    read_public_key,
    sign,
    verify_threshold,
)
from tests.environment import require_tool
from tests.protocol.factories import AGENCY, make_keyset, make_manifest, new_key

pytestmark = pytest.mark.tool


@pytest.fixture(scope="module")
def openssl() -> str:
    return require_tool("openssl")


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, check=False, stdin=subprocess.DEVNULL)


def openssl_verify(openssl: str, tmp: Path, data: bytes, sig: bytes, public_pem: bytes) -> bool:
    (tmp / "data").write_bytes(data)
    (tmp / "sig").write_bytes(sig)
    (tmp / "pub.pem").write_bytes(public_pem)
    result = run(
        openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp / "pub.pem"),
        "-rawin", "-in", str(tmp / "data"), "-sigfile", str(tmp / "sig"),
    )  # fmt: skip
    return result.returncode == 0 and b"Signature Verified Successfully" in result.stdout


@pytest.fixture(scope="module")
def openssl_key(openssl: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private key written by ``openssl genpkey``, with its public half beside it."""
    directory = tmp_path_factory.mktemp("openssl-key")
    key = directory / "key.pem"
    assert run(openssl, "genpkey", "-algorithm", "ed25519", "-out", str(key)).returncode == 0
    pub = run(openssl, "pkey", "-in", str(key), "-pubout")
    assert pub.returncode == 0
    (directory / "pub.pem").write_bytes(pub.stdout)
    return key


def openssl_sign(openssl: str, key: Path, tmp: Path, data: bytes) -> bytes:
    (tmp / "to-sign").write_bytes(data)
    result = run(
        openssl, "pkeyutl", "-sign", "-inkey", str(key), "-rawin",
        "-in", str(tmp / "to-sign"), "-out", str(tmp / "sig.bin"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sig = (tmp / "sig.bin").read_bytes()
    assert len(sig) == 64
    return sig


def test_openssl_verifies_our_signature(openssl: str, tmp_path: Path) -> None:
    key = new_key()
    keyset = make_keyset([key])
    data = make_manifest(keyset).encode()
    signature = sign(key, data)
    pem = public_key_to_pem(key.public_key())
    assert openssl_verify(openssl, tmp_path, data, signature.sig, pem)
    # The check can fail: one changed byte and openssl refuses too.
    assert not openssl_verify(
        openssl, tmp_path, data.replace(b"version 1", b"version 2"), signature.sig, pem
    )


def test_openssl_verifies_a_signed_keyset_document(openssl: str, tmp_path: Path) -> None:
    roots = [new_key(), new_key()]
    keyset = make_keyset(roots, root_threshold=2)
    document = sign_document("keyset", keyset.raw, 1, roots)
    by_id = {key_id(k): k for k in roots}
    for signature in document.signatures:
        pem = public_key_to_pem(by_id[signature.keyid].public_key())
        wire = Signature.from_json(signature.to_json())
        assert openssl_verify(openssl, tmp_path, document.data, wire.sig, pem)


def test_openssl_reads_our_private_key(openssl: str, tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "ours.pem"
    path.write_bytes(private_key_to_pem(key))
    result = run(openssl, "pkey", "-in", str(path), "-pubout")
    assert result.returncode == 0, result.stderr
    assert result.stdout == public_key_to_pem(key.public_key())


def test_we_verify_a_signature_made_by_openssl(
    openssl: str, openssl_key: Path, tmp_path: Path
) -> None:
    private = read_private_key(openssl_key)
    public = load_public_key_pem((openssl_key.parent / "pub.pem").read_bytes())
    assert key_id(private) == key_id(public) == key_id(read_public_key(openssl_key))
    data = b"hashex: any bytes\n"
    sig = openssl_sign(openssl, openssl_key, tmp_path, data)
    keys = {key_id(public): public}
    assert verify_threshold(data, [Signature(key_id(public), sig)], keys, 1) == {key_id(public)}
    # Ed25519 is deterministic: openssl and we make the very same signature.
    assert sign(private, data).sig == sig
    with pytest.raises(BadSignatureError):
        verify_threshold(data + b"x", [Signature(key_id(public), sig)], keys, 1)


def test_documents_signed_by_openssl_verify(
    openssl: str, openssl_key: Path, tmp_path: Path
) -> None:
    public = load_public_key_pem((openssl_key.parent / "pub.pem").read_bytes())
    keyset = make_keyset([public])
    keyset_sig = openssl_sign(openssl, openssl_key, tmp_path, keyset.raw)
    pin = Keyset.from_root_key(AGENCY, public)
    held = verify_keyset(keyset.raw, [Signature(key_id(public), keyset_sig)], pin, agency=AGENCY)
    manifest = make_manifest(held).encode()
    manifest_sig = openssl_sign(openssl, openssl_key, tmp_path, manifest)
    assert verify_manifest(manifest, [Signature(key_id(public), manifest_sig)], held).version == 1


def test_key_id_of_openssl_key_is_sha256_of_its_raw_public_bytes(
    openssl: str, openssl_key: Path
) -> None:
    der = run(
        openssl, "pkey", "-pubin", "-in", str(openssl_key.parent / "pub.pem"), "-outform", "DER"
    )
    assert der.returncode == 0
    assert len(der.stdout) == 44  # 12-byte SubjectPublicKeyInfo prefix + 32 raw bytes
    raw = der.stdout[-32:]
    public = load_public_key_pem((openssl_key.parent / "pub.pem").read_bytes())
    assert public_key_raw(public) == raw
    assert key_id(public) == hashlib.sha256(raw).hexdigest()
    assert key_id(read_private_key(openssl_key)) == hashlib.sha256(raw).hexdigest()
