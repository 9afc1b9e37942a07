"""`hashex keygen` and `hashex keyset init`: files, key ids, exit codes, and no prompts."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from client.cli import main
from client.protocol.documents import SignedDocument, verify_keyset
from client.protocol.keys import (
    key_id,
    load_public_key_pem,
    public_key_to_pem,
    read_private_key,
    write_private_key,
)
from tests.environment import require_tool
from tests.protocol.factories import new_key

AGENCY = "example-unit"


def invoke(*args: str | Path) -> Result:
    """Run the CLI in-process with no stdin at all: a prompt would fail the test."""
    return CliRunner().invoke(main, [str(a) for a in args], input=None, catch_exceptions=False)


def keygen(path: Path) -> str:
    result = invoke("keygen", "--out", path)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def load_keyset_file(path: Path) -> SignedDocument:
    return SignedDocument.loads("keyset", path.read_text(encoding="ascii"))


def run_openssl(*args: str) -> subprocess.CompletedProcess[bytes]:
    openssl = require_tool("openssl")
    return subprocess.run(
        [openssl, *args], capture_output=True, check=False, stdin=subprocess.DEVNULL
    )


# --- keygen -------------------------------------------------------------------


def test_keygen_writes_a_0600_pkcs8_key_and_prints_its_id(tmp_path: Path) -> None:
    out = tmp_path / "root.pem"
    printed = keygen(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    key = read_private_key(out)
    assert printed == key_id(key)
    public = tmp_path / "root.pub.pem"
    assert public.read_bytes() == public_key_to_pem(key.public_key())
    assert key_id(load_public_key_pem(public.read_bytes())) == printed


def test_keygen_key_is_read_by_openssl(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    keygen(out)
    result = run_openssl("pkey", "-in", str(out), "-pubout")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (tmp_path / "k.pub.pem").read_bytes()
    der = run_openssl("pkey", "-in", str(out), "-pubout", "-outform", "DER")
    assert hashlib.sha256(der.stdout[-32:]).hexdigest() == key_id(read_private_key(out))


def test_keygen_json(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    result = invoke("keygen", "--out", out, "--json")
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload == {
        "keyid": key_id(read_private_key(out)),
        "private": str(out),
        "public": str(tmp_path / "k.pub.pem"),
    }


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    out.write_bytes(b"the only copy of a root key")
    result = invoke("keygen", "--out", out)
    assert result.exit_code == 2
    assert "already exists; refusing to overwrite" in result.stderr
    assert out.read_bytes() == b"the only copy of a root key"
    assert not (tmp_path / "k.pub.pem").exists()


def test_keygen_refuses_when_the_public_file_exists(tmp_path: Path) -> None:
    (tmp_path / "k.pub.pem").write_bytes(b"something else")
    result = invoke("keygen", "--out", tmp_path / "k.pem")
    assert result.exit_code == 2
    assert "k.pub.pem: already exists" in result.stderr
    assert not (tmp_path / "k.pem").exists()
    assert (tmp_path / "k.pub.pem").read_bytes() == b"something else"


def test_keygen_into_a_missing_directory_is_exit_2(tmp_path: Path) -> None:
    result = invoke("keygen", "--out", tmp_path / "missing" / "k.pem")
    assert result.exit_code == 2
    assert "cannot create key file" in result.stderr


def test_keygen_needs_out() -> None:
    result = invoke("keygen")
    assert result.exit_code == 2
    assert "--out" in result.stderr


def test_keygen_as_a_real_process(tmp_path: Path) -> None:
    """The installed console script, with stdin closed: no prompt can hang it."""
    script = Path(sys.executable).with_name("hashex")
    assert script.exists(), f"console script missing: {script} (pip install -e .)"
    out = tmp_path / "k.pem"
    result = subprocess.run(
        [str(script), "keygen", "--out", str(out), "--json"],
        stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=60,
        env={**os.environ, "HASHEX_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["keyid"] == key_id(read_private_key(out))
    again = subprocess.run(
        [str(script), "keygen", "--out", str(out)],
        stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert again.returncode == 2
    assert b"refusing to overwrite" in again.stderr
    assert again.stdout == b""


# --- keyset init ----------------------------------------------------------------


@pytest.fixture
def both(tmp_path: Path) -> Path:
    path = tmp_path / "both.pem"
    keygen(path)
    return path


def test_keyset_init_with_one_key(tmp_path: Path, both: Path) -> None:
    out = tmp_path / "keyset.json"
    before = datetime.now(UTC)
    result = invoke("keyset", "init", AGENCY, "--key", both, "--out", out)
    after = datetime.now(UTC)
    assert result.exit_code == 0, result.stderr
    assert f"wrote keyset 1 of {AGENCY}" in result.stdout
    obj = json.loads(out.read_text())
    assert set(obj) == {"version", "keyset", "signatures"}
    assert obj["version"] == 1
    document = load_keyset_file(out)
    keyset = verify_keyset(document.data, document.signatures, None, agency=AGENCY)
    kid = key_id(read_private_key(both))
    assert set(keyset.root_keys) == set(keyset.publish_keys) == {kid}
    assert (keyset.root_threshold, keyset.publish_threshold) == (1, 1)
    # Default expiry: one year, in whole seconds.
    assert before + timedelta(days=365) - timedelta(seconds=1) <= keyset.expires
    assert keyset.expires <= after + timedelta(days=365)
    assert [s.keyid for s in document.signatures] == [kid]


def test_keyset_file_verifies_with_openssl(tmp_path: Path, both: Path) -> None:
    out = tmp_path / "keyset.json"
    assert invoke("keyset", "init", AGENCY, "--key", both, "--out", out).exit_code == 0
    obj = json.loads(out.read_text())
    (tmp_path / "keyset.txt").write_bytes(obj["keyset"].encode("ascii"))
    (tmp_path / "sig").write_bytes(base64.b64decode(obj["signatures"][0]["sig"]))
    result = run_openssl(
        "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "both.pub.pem"), "-rawin",
        "-in", str(tmp_path / "keyset.txt"), "-sigfile", str(tmp_path / "sig"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert b"Signature Verified Successfully" in result.stdout


def test_keyset_init_json_and_expires(tmp_path: Path, both: Path) -> None:
    out = tmp_path / "keyset.json"
    result = invoke(
        "keyset", "init", AGENCY, "--key", both, "--expires", "30", "--out", out, "--json"
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    document = load_keyset_file(out)
    assert payload == {
        "agency": AGENCY,
        "version": 1,
        "file": str(out),
        "sha256": hashlib.sha256(document.data).hexdigest(),
    }
    keyset = verify_keyset(document.data, document.signatures, None, agency=AGENCY)
    assert abs(keyset.expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)


def _keys(tmp_path: Path, *names: str) -> dict[str, Path]:
    paths = {}
    for name in names:
        paths[name] = tmp_path / f"{name}.pem"
        keygen(paths[name])
    return paths


def test_keyset_init_roles_and_thresholds(tmp_path: Path) -> None:
    k = _keys(tmp_path, "r1", "r2", "r3", "p1", "p2")
    out = tmp_path / "keyset.json"
    result = invoke(
        "keyset", "init", AGENCY,
        "--root", k["r1"], "--root", k["r2"], "--root", tmp_path / "r3.pub.pem",
        "--publish", tmp_path / "p1.pub.pem", "--publish", k["p2"],
        "--root-threshold", "2", "--publish-threshold", "2", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = load_keyset_file(out)
    keyset = verify_keyset(document.data, document.signatures, None, agency=AGENCY)
    ids = {name: key_id(read_private_key(path)) for name, path in k.items()}
    assert set(keyset.root_keys) == {ids["r1"], ids["r2"], ids["r3"]}
    assert set(keyset.publish_keys) == {ids["p1"], ids["p2"]}
    assert (keyset.root_threshold, keyset.publish_threshold) == (2, 2)
    # Only the private roots sign; a public root and the publish keys do not.
    assert sorted(s.keyid for s in document.signatures) == sorted([ids["r1"], ids["r2"]])


def test_keyset_init_key_plus_extra_publisher(tmp_path: Path, both: Path) -> None:
    k = _keys(tmp_path, "p1")
    out = tmp_path / "keyset.json"
    result = invoke("keyset", "init", AGENCY, "--key", both, "--publish", k["p1"], "--out", out)
    assert result.exit_code == 0, result.stderr
    document = load_keyset_file(out)
    keyset = verify_keyset(document.data, document.signatures, None, agency=AGENCY)
    assert set(keyset.root_keys) == {key_id(read_private_key(both))}
    assert set(keyset.publish_keys) == {
        key_id(read_private_key(both)),
        key_id(read_private_key(k["p1"])),
    }


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--root-threshold", "2"], "--root-threshold 2 exceeds the 1 root key(s)"),
        (["--publish-threshold", "3"], "--publish-threshold 3 exceeds the 1 publish key(s)"),
    ],
)
def test_threshold_above_key_count_is_exit_2_naming_the_option(
    tmp_path: Path, both: Path, extra: list[str], match: str
) -> None:
    out = tmp_path / "keyset.json"
    result = invoke("keyset", "init", AGENCY, "--key", both, *extra, "--out", out)
    assert result.exit_code == 2
    assert match in result.stderr
    assert not out.exists()


def test_threshold_zero_is_a_usage_error(tmp_path: Path, both: Path) -> None:
    result = invoke(
        "keyset", "init", AGENCY, "--key", both, "--root-threshold", "0", "--out", tmp_path / "o"
    )
    assert result.exit_code == 2
    assert "--root-threshold" in result.stderr


def test_fewer_private_roots_than_threshold_is_exit_2(tmp_path: Path) -> None:
    k = _keys(tmp_path, "r1", "r2")
    out = tmp_path / "keyset.json"
    result = invoke(
        "keyset", "init", AGENCY, "--root", k["r1"], "--root", tmp_path / "r2.pub.pem",
        "--publish", k["r1"], "--root-threshold", "2", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "only 1 private root key(s) given; the root threshold 2 needs that many" in result.stderr
    assert not out.exists()


def test_only_public_roots_is_exit_2(tmp_path: Path) -> None:
    _keys(tmp_path, "r1")
    result = invoke(
        "keyset", "init", AGENCY, "--root", tmp_path / "r1.pub.pem",
        "--publish", tmp_path / "r1.pub.pem", "--out", tmp_path / "o.json",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "only 0 private root key(s)" in result.stderr


def test_missing_roles_are_exit_2(tmp_path: Path) -> None:
    k = _keys(tmp_path, "r1")
    no_publish = invoke("keyset", "init", AGENCY, "--root", k["r1"], "--out", tmp_path / "a.json")
    assert no_publish.exit_code == 2
    assert "needs at least one publish key" in no_publish.stderr
    no_root = invoke("keyset", "init", AGENCY, "--publish", k["r1"], "--out", tmp_path / "b.json")
    assert no_root.exit_code == 2
    assert "needs at least one root key" in no_root.stderr


@pytest.mark.parametrize("agency", ["Example", "-unit", "a_b", "a/b", "a" * 64, ""])
def test_bad_agency_slug_is_exit_2(tmp_path: Path, both: Path, agency: str) -> None:
    out = tmp_path / "keyset.json"
    result = invoke("keyset", "init", "--key", both, "--out", out, "--", agency)
    assert result.exit_code == 2
    assert f"agency {agency!r} must match [a-z0-9][a-z0-9-]{{0,62}}" in result.stderr
    assert not out.exists()


def test_keyset_init_refuses_to_overwrite_out(tmp_path: Path, both: Path) -> None:
    out = tmp_path / "keyset.json"
    out.write_text("keep me")
    result = invoke("keyset", "init", AGENCY, "--key", both, "--out", out)
    assert result.exit_code == 2
    assert "already exists; refusing to overwrite a keyset file" in result.stderr
    assert out.read_text() == "keep me"


def test_non_key_file_is_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello\n")
    result = invoke("keyset", "init", AGENCY, "--key", junk, "--out", tmp_path / "o.json")
    assert result.exit_code == 2
    assert f"{junk}: not a PKCS#8 private key PEM" in result.stderr
    result = invoke(
        "keyset", "init", AGENCY, "--root", junk, "--publish", junk, "--out", tmp_path / "o.json"
    )
    assert result.exit_code == 2
    assert f"{junk}: not a public key PEM" in result.stderr


def test_public_key_given_as_both_roles_is_exit_2(tmp_path: Path, both: Path) -> None:
    result = invoke(
        "keyset", "init", AGENCY, "--key", tmp_path / "both.pub.pem", "--out", tmp_path / "o"
    )
    assert result.exit_code == 2
    assert "not a PKCS#8 private key PEM" in result.stderr


def test_missing_key_file_is_exit_2(tmp_path: Path) -> None:
    result = invoke(
        "keyset", "init", AGENCY, "--key", tmp_path / "absent.pem", "--out", tmp_path / "o"
    )
    assert result.exit_code == 2
    assert "absent.pem" in result.stderr


def test_encrypted_key_is_exit_2_without_a_prompt(tmp_path: Path) -> None:
    key = tmp_path / "enc.pem"
    made = run_openssl(
        "genpkey", "-algorithm", "ed25519", "-aes256", "-pass", "pass:x", "-out", str(key)
    )
    assert made.returncode == 0, made.stderr
    for option in ("--key", "--root"):
        extra = [] if option == "--key" else ["--publish", str(key)]
        result = invoke("keyset", "init", AGENCY, option, key, *extra, "--out", tmp_path / "o.json")
        assert result.exit_code == 2
        assert f"{key}: encrypted private keys are not supported" in result.stderr
    assert not (tmp_path / "o.json").exists()


def test_openssl_key_works_with_keyset_init(tmp_path: Path) -> None:
    key = tmp_path / "ossl.pem"
    assert run_openssl("genpkey", "-algorithm", "ed25519", "-out", str(key)).returncode == 0
    out = tmp_path / "keyset.json"
    assert invoke("keyset", "init", AGENCY, "--key", key, "--out", out).exit_code == 0
    document = load_keyset_file(out)
    keyset = verify_keyset(document.data, document.signatures, None, agency=AGENCY)
    assert set(keyset.root_keys) == {key_id(read_private_key(key))}


def test_same_key_given_twice_is_listed_and_signs_once(tmp_path: Path, both: Path) -> None:
    out = tmp_path / "keyset.json"
    result = invoke("keyset", "init", AGENCY, "--key", both, "--root", both, "--out", out)
    assert result.exit_code == 0, result.stderr
    document = load_keyset_file(out)
    assert len(document.signatures) == 1
    keyset = verify_keyset(document.data, document.signatures, None, agency=AGENCY)
    assert len(keyset.root_keys) == 1


def test_keyset_init_as_a_real_process(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    write_private_key(key, new_key())
    script = Path(sys.executable).with_name("hashex")
    out = tmp_path / "keyset.json"
    result = subprocess.run(
        [str(script), "keyset", "init", AGENCY, "--key", str(key), "--out", str(out)],
        stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = load_keyset_file(out)
    assert verify_keyset(document.data, document.signatures, None, agency=AGENCY).version == 1
