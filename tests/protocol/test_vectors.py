"""The committed wire-format vectors, checked with standard tools and with the library.

The first half uses only ``openssl``, ``sort``, ``sha256sum`` and plain Python
(no Hashex code), so it shows that the format can be verified without Hashex
and that the vectors really are what docs/PROTOCOL.md says.  The second half
checks that the protocol library agrees byte for byte.

Every check runs twice: on the committed vectors (the reference) and on a
fresh set made by ``scripts/make-vectors``, so the generator keeps working
as the library changes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.protocol.documents import (
    Keyset,
    Kind,
    Manifest,
    SignedDocument,
    verify_keyset,
    verify_manifest,
)
from client.protocol.entries import (
    ContentDigest,
    DeltaDigest,
    apply_delta,
    read_lines,
)
from client.protocol.errors import BadSignatureError
from client.protocol.keys import Signature, key_id, read_public_key
from tests.environment import require_tool

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "vectors"
GENERATOR = REPO / "scripts" / "make-vectors"
AGENCY = "example-agency"
SET_NAME = "example-agency/known-hashes"

TEXT_FILES = [
    "public.pem",
    "keyset",
    "keyset.json",
    "content-1",
    "delta-1",
    "manifest-1",
    "content",
    "delta",
    "manifest",
    "manifest.json",
]
SIGNED = [("manifest", "manifest.sig"), ("manifest-1", "manifest-1.sig"), ("keyset", "keyset.sig")]
# (manifest, content, delta) of each version.
VERSIONS = [("manifest-1", "content-1", "delta-1"), ("manifest", "content", "delta")]


def run_generator(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module", params=["committed", "regenerated"])
def vectors(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of vectors under test."""
    if request.param == "committed":
        return VECTORS
    out = tmp_path_factory.mktemp("vectors")
    result = run_generator(out)
    assert result.returncode == 0, result.stderr
    return out


def fields(manifest: bytes) -> dict[str, list[str]]:
    """A manifest's lines by first word, parsed with nothing but str.split."""
    out: dict[str, list[str]] = {}
    for line in manifest.decode("ascii").split("\n")[:-1]:
        word, _, rest = line.partition(" ")
        assert word not in out, f"line {word!r} repeated"
        out[word] = rest.split(" ")
    return out


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256sum(directory: Path, *names: str) -> dict[str, str]:
    """Run the real ``sha256sum`` on files; {file name: hex digest}."""
    tool = require_tool("sha256sum")
    result = subprocess.run(
        [tool, "--", *names], cwd=directory, capture_output=True, check=True, text=True
    )
    sums = {}
    for line in result.stdout.splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    assert set(sums) == set(names)
    return sums


def openssl_verify(public_pem: Path, data: Path, sig: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("openssl")
    return subprocess.run(
        [
            tool,
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(public_pem),
            "-rawin",
            "-in",
            str(data),
            "-sigfile",
            str(sig),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def lines_of(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def identity(entry: bytes) -> bytes:
    return entry.split(b" ", 1)[0]


# --- the files themselves -------------------------------------------------------


def test_every_vector_file_is_there(vectors: Path) -> None:
    names = {p.name for p in vectors.iterdir()} - {"README.md", ".gitattributes"}
    expected = set(TEXT_FILES) | {sig for _, sig in SIGNED}
    assert names == expected


@pytest.mark.parametrize("name", TEXT_FILES)
def test_text_files_are_plain_ascii_lines(vectors: Path, name: str) -> None:
    data = (vectors / name).read_bytes()
    assert data.isascii()
    assert data.endswith(b"\n")
    assert b"\r" not in data
    assert all(line == line.rstrip() for line in data.split(b"\n"))
    assert b"PRIVATE KEY" not in data


@pytest.mark.parametrize("sig", [sig for _, sig in SIGNED])
def test_signatures_are_64_raw_bytes(vectors: Path, sig: str) -> None:
    assert len((vectors / sig).read_bytes()) == 64


def test_vectors_cover_every_algorithm_and_the_labels(vectors: Path) -> None:
    content = lines_of(vectors / "content")
    algorithms = {line.split(b":", 1)[0] for line in content}
    assert algorithms == {b"md5", b"sha1", b"sha256", b"sha512", b"pdq"}
    labels = {line.split(b" ", 1)[1] for line in content if b" " in line}
    assert {b"cat-a", b"cat-b", b"vics-1"} <= labels
    assert any(b" " not in line for line in content), "no unlabelled entry"


# --- standard tools only --------------------------------------------------------


@pytest.mark.tool
@pytest.mark.parametrize(("document", "sig"), SIGNED)
def test_openssl_verifies_the_signature(vectors: Path, document: str, sig: str) -> None:
    result = openssl_verify(vectors / "public.pem", vectors / document, vectors / sig)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Signature Verified Successfully" in result.stdout


@pytest.mark.tool
@pytest.mark.parametrize(("document", "sig"), SIGNED)
@pytest.mark.parametrize("flip", ["document", "signature"])
def test_openssl_refuses_a_flipped_byte(
    vectors: Path, tmp_path: Path, document: str, sig: str, flip: str
) -> None:
    data = bytearray((vectors / document).read_bytes())
    signature = bytearray((vectors / sig).read_bytes())
    target = data if flip == "document" else signature
    target[len(target) // 2] ^= 0x01
    (tmp_path / "doc").write_bytes(data)
    (tmp_path / "sig").write_bytes(signature)
    result = openssl_verify(vectors / "public.pem", tmp_path / "doc", tmp_path / "sig")
    assert result.returncode != 0
    assert "Signature Verified Successfully" not in result.stdout


@pytest.mark.tool
def test_key_id_is_sha256_of_the_raw_public_key(vectors: Path) -> None:
    """openssl's DER of an Ed25519 public key ends in the 32 raw key bytes."""
    tool = require_tool("openssl")
    der = subprocess.run(
        [tool, "pkey", "-pubin", "-in", str(vectors / "public.pem"), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert len(der) == 44
    raw = der[-32:]
    kid = sha256_of(raw)
    keyset = lines_of(vectors / "keyset")
    b64 = base64.b64encode(raw)
    assert b"root " + kid.encode() + b" " + b64 in keyset
    assert b"publish " + kid.encode() + b" " + b64 in keyset
    for name in ("keyset.json", "manifest.json"):
        obj = json.loads((vectors / name).read_text(encoding="ascii"))
        assert [s["keyid"] for s in obj["signatures"]] == [kid]


@pytest.mark.tool
@pytest.mark.parametrize(("manifest", "content", "delta"), VERSIONS)
def test_sha256sum_matches_the_manifest(
    vectors: Path, manifest: str, content: str, delta: str
) -> None:
    sums = sha256sum(vectors, content, delta)
    lines = fields((vectors / manifest).read_bytes())
    assert lines["content"][0] == f"sha256:{sums[content]}"
    assert lines["delta"][0] == f"sha256:{sums[delta]}"


@pytest.mark.tool
@pytest.mark.parametrize("name", ["content", "delta", "content-1", "delta-1"])
def test_lc_all_c_sort_leaves_the_bytes_unchanged(vectors: Path, name: str) -> None:
    tool = require_tool("sort")
    env = {**os.environ, "LC_ALL": "C"}
    data = (vectors / name).read_bytes()
    assert len(set(data.splitlines())) > 1, "a one-line file proves nothing about order"
    for flags in ([], ["-u"]):
        result = subprocess.run(
            [tool, *flags, str(vectors / name)], capture_output=True, check=True, env=env
        )
        assert result.stdout == data, f"sort {' '.join(flags)} changed {name}"


@pytest.mark.tool
@pytest.mark.parametrize("manifest", ["manifest", "manifest-1"])
def test_keyset_line_names_the_keyset_by_its_sha256(vectors: Path, manifest: str) -> None:
    sums = sha256sum(vectors, "keyset")
    assert fields((vectors / manifest).read_bytes())["keyset"] == ["1", f"sha256:{sums['keyset']}"]
    assert fields((vectors / "keyset").read_bytes())["version"] == ["1"]


@pytest.mark.tool
def test_parent_lines_chain_version_2_to_version_1(vectors: Path) -> None:
    sums = sha256sum(vectors, "manifest-1")
    v1 = fields((vectors / "manifest-1").read_bytes())
    v2 = fields((vectors / "manifest").read_bytes())
    assert v1["version"] == ["1"]
    assert v1["parent"] == ["0", "none"]
    assert v2["version"] == ["2"]
    assert v2["parent"] == ["1", f"sha256:{sums['manifest-1']}"]
    assert v1["set"] == v2["set"] == [SET_NAME]


@pytest.mark.parametrize(("manifest", "content", "delta"), VERSIONS)
def test_counts_equal_the_line_counts(
    vectors: Path, manifest: str, content: str, delta: str
) -> None:
    lines = fields((vectors / manifest).read_bytes())
    delta_lines = lines_of(vectors / delta)
    adds = sum(1 for line in delta_lines if line.startswith(b"+"))
    removes = sum(1 for line in delta_lines if line.startswith(b"-"))
    assert adds + removes == len(delta_lines)
    assert lines["delta"][1:] == ["adds", str(adds), "removes", str(removes)]
    assert lines["content"][1:] == ["count", str(len(lines_of(vectors / content)))]


def apply_by_hand(content: list[bytes], delta: list[bytes]) -> list[bytes]:
    """The contract's rule, with sets: removes exactly as written first, then adds."""
    entries = set(content)
    for line in delta:
        if line.startswith(b"-"):
            assert line[1:] in entries, f"removes {line[1:]!r}, which is absent"
            entries.remove(line[1:])
    identities = {identity(entry) for entry in entries}
    for line in delta:
        if line.startswith(b"+"):
            assert identity(line[1:]) not in identities, f"adds {line[1:]!r}, already present"
            identities.add(identity(line[1:]))
            entries.add(line[1:])
    return sorted(entries)


def test_delta_1_builds_content_1_from_nothing(vectors: Path) -> None:
    assert apply_by_hand([], lines_of(vectors / "delta-1")) == lines_of(vectors / "content-1")


def test_delta_turns_content_1_into_content(vectors: Path) -> None:
    delta = lines_of(vectors / "delta")
    result = apply_by_hand(lines_of(vectors / "content-1"), delta)
    assert result == lines_of(vectors / "content")


def test_delta_holds_adds_removes_and_a_relabel(vectors: Path) -> None:
    delta = lines_of(vectors / "delta")
    added = {identity(line[1:]) for line in delta if line.startswith(b"+")}
    removed = {identity(line[1:]) for line in delta if line.startswith(b"-")}
    relabelled = added & removed
    assert len(relabelled) == 1
    assert added - relabelled
    assert removed - relabelled


def test_json_objects_carry_the_same_bytes(vectors: Path) -> None:
    for name, kind, document, sig in [
        ("keyset.json", "keyset", "keyset", "keyset.sig"),
        ("manifest.json", "manifest", "manifest", "manifest.sig"),
    ]:
        obj = json.loads((vectors / name).read_text(encoding="ascii"))
        assert set(obj) == {"version", kind, "signatures"}
        assert obj[kind].encode("ascii") == (vectors / document).read_bytes()
        assert base64.b64decode(obj["signatures"][0]["sig"]) == (vectors / sig).read_bytes()
    assert json.loads((vectors / "manifest.json").read_text())["version"] == 2
    assert json.loads((vectors / "keyset.json").read_text())["version"] == 1


# --- the library agrees -----------------------------------------------------------


def signature(vectors: Path, sig: str) -> Signature:
    public = read_public_key(vectors / "public.pem")
    return Signature(key_id(public), (vectors / sig).read_bytes())


@pytest.fixture
def keyset(vectors: Path) -> Keyset:
    """Keyset 1, verified against the pinned root key (the implied keyset 0)."""
    pinned = Keyset.from_root_key(AGENCY, read_public_key(vectors / "public.pem"))
    data = (vectors / "keyset").read_bytes()
    return verify_keyset(data, [signature(vectors, "keyset.sig")], pinned, agency=AGENCY)


def test_library_verifies_the_keyset_from_the_pinned_key(vectors: Path, keyset: Keyset) -> None:
    kid = key_id(read_public_key(vectors / "public.pem"))
    assert keyset.version == 1
    assert keyset.agency == AGENCY
    assert set(keyset.root_keys) == set(keyset.publish_keys) == {kid}
    assert (keyset.root_threshold, keyset.publish_threshold) == (1, 1)
    assert keyset.raw == (vectors / "keyset").read_bytes()


@pytest.mark.parametrize(("manifest", "content", "delta"), VERSIONS)
def test_library_verifies_each_manifest(
    vectors: Path, keyset: Keyset, manifest: str, content: str, delta: str
) -> None:
    data = (vectors / manifest).read_bytes()
    parsed = verify_manifest(data, [signature(vectors, f"{manifest}.sig")], keyset)
    assert parsed.set_name == SET_NAME
    assert (parsed.keyset_version, parsed.keyset_digest) == (1, keyset.digest)

    digest = ContentDigest()
    with (vectors / content).open("rb") as stream:
        for line in read_lines(stream):
            digest.add(line)
    assert (digest.hexdigest(), digest.count) == (parsed.content_digest, parsed.count)

    delta_digest = DeltaDigest()
    with (vectors / delta).open("rb") as stream:
        for line in read_lines(stream):
            delta_digest.add(line)
    assert (delta_digest.hexdigest(), delta_digest.adds, delta_digest.removes) == (
        parsed.delta_digest,
        parsed.adds,
        parsed.removes,
    )


def test_library_chains_version_2_to_version_1(vectors: Path, keyset: Keyset) -> None:
    v1 = (vectors / "manifest-1").read_bytes()
    v2 = verify_manifest(
        (vectors / "manifest").read_bytes(), [signature(vectors, "manifest.sig")], keyset
    )
    assert v2.version == 2
    assert v2.parent_digest == sha256_of(v1)


def test_library_applies_the_delta(vectors: Path) -> None:
    def stream(name: str) -> Iterator[bytes]:
        yield from read_lines([(vectors / name).read_bytes()])

    assert list(apply_delta(stream("content-1"), stream("delta"))) == lines_of(vectors / "content")


def test_library_re_encodes_byte_identically(vectors: Path) -> None:
    for name in ("manifest", "manifest-1"):
        data = (vectors / name).read_bytes()
        assert Manifest.parse(data).encode() == data
    data = (vectors / "keyset").read_bytes()
    assert Keyset.parse(data).encode() == data


@pytest.mark.parametrize("kind", ["keyset", "manifest"])
def test_library_reads_and_writes_the_json_objects(vectors: Path, kind: Kind) -> None:
    text = (vectors / f"{kind}.json").read_text(encoding="ascii")
    doc = SignedDocument.loads(kind, text)
    assert doc.kind == kind
    assert doc.data == (vectors / kind).read_bytes()
    assert [s.sig for s in doc.signatures] == [(vectors / f"{kind}.sig").read_bytes()]
    assert doc.dumps() == text


def flipped(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    return bytes(changed)


def test_library_refuses_a_manifest_with_a_flipped_byte(vectors: Path, keyset: Keyset) -> None:
    data = flipped((vectors / "manifest").read_bytes())
    sig = signature(vectors, "manifest.sig")
    with pytest.raises(BadSignatureError):
        verify_manifest(data, [sig], keyset)


def test_library_refuses_a_keyset_with_a_flipped_byte(vectors: Path) -> None:
    data = flipped((vectors / "keyset").read_bytes())
    sig = signature(vectors, "keyset.sig")
    pinned = Keyset.from_root_key(AGENCY, read_public_key(vectors / "public.pem"))
    with pytest.raises(BadSignatureError):
        verify_keyset(data, [sig], pinned, agency=AGENCY)


# --- the generator --------------------------------------------------------------


def test_generator_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    (tmp_path / "manifest").write_bytes(b"keep me\n")
    refused = run_generator(tmp_path)
    assert refused.returncode != 0
    assert "--force" in refused.stderr
    assert (tmp_path / "manifest").read_bytes() == b"keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest"]

    forced = run_generator(tmp_path, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "manifest").read_bytes().startswith(b"hashex-manifest/v1\n")


# --- docs/PROTOCOL.md shows these very files ------------------------------------

PROTOCOL_MD = REPO / "docs" / "PROTOCOL.md"
SHOWN_IN_DOCS = [
    "public.pem",
    "keyset",
    "keyset.json",
    "content-1",
    "manifest-1",
    "delta",
    "content",
    "manifest",
]


@pytest.mark.parametrize("name", SHOWN_IN_DOCS)
def test_protocol_md_shows_the_committed_file(name: str) -> None:
    doc = PROTOCOL_MD.read_text(encoding="utf-8")
    text = (VECTORS / name).read_text(encoding="ascii")
    assert f"```\n{text}```" in doc or f"```json\n{text}```" in doc


def test_protocol_md_sha256sum_outputs_are_true() -> None:
    doc = PROTOCOL_MD.read_text(encoding="utf-8")
    outputs = re.findall(r"^([0-9a-f]{64})  ([a-z][\w.-]*)$", doc, re.MULTILINE)
    assert len(outputs) >= 5
    for digest, name in outputs:
        assert sha256_of((VECTORS / name).read_bytes()) == digest, name
