"""The hub serves exactly the bytes the agency signed, for every version, in both encodings.

One set goes through eight versions that add, remove and relabel entries of
all five algorithms (the same hex under ``sha256`` and ``pdq``; a line removed
and later added back exactly as it was; a version that changes nothing; one
that empties the set).  After the last one, every version's delta and content
is pulled, identity and gzip, and must

* hash to the digests in the manifest the hub serves for that version (whose
  signatures verify against the agency's keyset), and
* equal what a reference computation here produces from Python sets and
  ``sorted()`` alone, without the protocol library's diff or merge.

The version objects, one at a time and paged with ``after``/``limit``, must be
what was published: the manifest text byte for byte, the signatures as sent.
The hub is seeded once per database; these tests only read.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from client.protocol.documents import Manifest, verify_manifest
from client.protocol.keys import Signature
from server.services.callers import Role
from tests.conftest import make_app
from tests.server.seeding import AgencyKeys, Candidate, SetChain, add_agency, add_set, publish_body
from tests.synthetic import random_line

ALGORITHMS = ("md5", "sha1", "sha256", "sha512", "pdq")
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Published:
    """One accepted version and the reference bytes computed for it here."""

    candidate: Candidate
    delta: bytes
    content: bytes


@dataclass
class History:
    """The seeded set: its agency, its chain and every published version."""

    client: FlaskClient
    agency: AgencyKeys
    chain: SetChain
    versions: list[Published]

    def get(self, path: str, encoding: str | None = None) -> tuple[int, bytes, dict[str, str]]:
        headers = self.agency.auth(Role.READER)
        if encoding is not None:
            headers["Accept-Encoding"] = encoding
        response = self.client.get(self.chain.url + path, headers=headers)
        return response.status_code, response.get_data(), dict(response.headers)


def _reference(old: set[bytes], new: set[bytes]) -> tuple[bytes, bytes]:
    """The delta and content bytes, by the definitions in DESIGN.md and nothing else."""
    changes = [b"+" + line for line in new - old] + [b"-" + line for line in old - new]
    delta = b"".join(line + b"\n" for line in sorted(changes))
    content = b"".join(line + b"\n" for line in sorted(new))
    return delta, content


def _identity(line: bytes) -> bytes:
    return line.split(b" ", 1)[0]


def _relabel(line: bytes, label: bytes | None) -> bytes:
    return _identity(line) if label is None else _identity(line) + b" " + label


def _contents(rng: random.Random) -> list[set[bytes]]:
    """The content of each of the eight versions."""
    v1 = {random_line(rng, alg) for alg in ALGORITHMS for _ in range(12)}
    twin = rng.randbytes(32).hex().encode()
    v1 |= {b"sha256:" + twin + b" cat-a", b"pdq:" + twin}
    lines = sorted(v1)
    labelled = [line for line in lines if b" " in line]
    bare = [line for line in lines if b" " not in line]
    # v2: adds, removes, and relabels of three kinds (new label, label dropped, label added).
    v2 = set(v1) - set(bare[:4])
    v2 -= {labelled[0], labelled[1], labelled[2], bare[5]}
    v2 |= {_relabel(labelled[0], b"Zeta.9"), _relabel(labelled[1], None)}
    v2 |= {_relabel(labelled[2], b"vics-1"), _relabel(bare[5], b"cat-b")}
    v2 |= {random_line(rng, alg) for alg in ALGORITHMS for _ in range(3)}
    # v3: only removes, every md5 among them.
    v3 = {line for line in v2 if not line.startswith(b"md5:")} - set(sorted(v2)[-3:])
    # v4: only relabels.
    swapped = sorted(v3)[::4]
    v4 = (v3 - set(swapped)) | {_relabel(line, b"x_y-z") for line in swapped}
    assert len(v4) == len(v3)
    # v5: adds, among them md5 lines removed by v3 exactly as they were.
    v5 = v4 | {line for line in v1 if line.startswith(b"md5:")} | {random_line(rng, "sha1")}
    # v6: no change at all (a re-signed version, as a refresh of expiry would be).
    v6 = set(v5)
    # v7: everything removed.
    v7: set[bytes] = set()
    # v8: a fresh start, with one line of v1 back.
    v8 = {random_line(rng, alg) for alg in ALGORITHMS} | {lines[0]}
    return [v1, v2, v3, v4, v5, v6, v7, v8]


def _publish_all(client: FlaskClient, database_url: str) -> History:
    rng = random.Random()
    # Three keys, two needed: the version objects carry more than one signature.
    agency = add_agency(database_url, "alpha", keys=3, publish_threshold=2)
    chain = add_set(database_url, agency, "exact")
    history = History(client, agency, chain, [])
    old: set[bytes] = set()
    for number, new in enumerate(_contents(rng), start=1):
        signers = agency.keys if number % 2 else agency.keys[:2]
        candidate = chain.build(new, keys=signers)
        delta, content = _reference(old, new)
        # The reference agrees with the library's builder, or the test data would be wrong.
        assert candidate.delta == delta, number
        body, content_type = publish_body(candidate)
        response = client.post(
            chain.url, data=body, content_type=content_type, headers=agency.auth()
        )
        assert response.status_code == 201, (number, response.get_data(as_text=True))
        chain.accept(candidate)
        history.versions.append(Published(candidate, delta, content))
        old = new
    return history


@pytest.fixture(scope="module")
def history(shared_database_url: str) -> Iterator[History]:
    with make_app(shared_database_url) as app:
        yield _publish_all(app.test_client(), shared_database_url)


def test_the_history_covers_what_it_claims(history: History) -> None:
    manifests = [p.candidate.manifest for p in history.versions]
    assert [m.version for m in manifests] == list(range(1, 9))
    for alg in ALGORITHMS:
        assert b"\n" + alg.encode() + b":" in b"\n" + history.versions[0].content
    assert manifests[1].adds
    assert manifests[1].removes
    assert manifests[2].adds == 0
    assert manifests[2].removes
    assert manifests[3].adds == manifests[3].removes > 0
    assert (manifests[5].adds, manifests[5].removes) == (0, 0)
    assert manifests[6].count == 0
    assert history.versions[5].delta == history.versions[6].content == b""


def _served_manifest(history: History, version: int) -> Manifest:
    response = history.client.get(
        f"{history.chain.url}/{version}", headers=history.agency.auth(Role.READER)
    )
    assert response.status_code == 200
    obj = response.get_json()
    signatures = [Signature.from_json(s) for s in obj["signatures"]]
    return verify_manifest(obj["manifest"].encode("ascii"), signatures, history.agency.keyset)


@pytest.mark.parametrize("version", range(1, 9))
@pytest.mark.parametrize("kind", ["delta", "content"])
def test_every_delta_and_content_is_byte_exact(history: History, version: int, kind: str) -> None:
    published = history.versions[version - 1]
    expected = published.delta if kind == "delta" else published.content
    manifest = _served_manifest(history, version)
    digest = manifest.delta_digest if kind == "delta" else manifest.content_digest

    status, plain, headers = history.get(f"/{version}/{kind}", "identity")
    assert status == 200
    assert "Content-Encoding" not in headers
    assert hashlib.sha256(plain).hexdigest() == digest
    assert plain == expected

    status, packed, headers = history.get(f"/{version}/{kind}", "gzip")
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed) == plain


def test_entry_bodies_are_labelled_us_ascii_text(history: History) -> None:
    # DESIGN.md: text/plain; charset=us-ascii for entries, with one charset parameter.
    served = {}
    for kind in ("delta", "content"):
        for encoding in ("identity", "gzip"):
            status, _, headers = history.get(f"/2/{kind}", encoding)
            assert status == 200
            served[kind, encoding] = headers["Content-Type"]
    assert set(served.values()) == {"text/plain; charset=us-ascii"}, served


def test_a_client_without_accept_encoding_gets_identity(history: History) -> None:
    status, body, headers = history.get("/5/content")
    assert status == 200
    assert "Content-Encoding" not in headers
    assert body == history.versions[4].content


def test_single_version_objects_are_what_was_published(history: History) -> None:
    for published in history.versions:
        document = published.candidate.document
        response = history.client.get(
            f"{history.chain.url}/{document.version}", headers=history.agency.auth(Role.READER)
        )
        assert response.status_code == 200
        assert response.get_json() == document.to_json()
        assert response.get_json()["manifest"].encode("ascii") == document.data


def test_a_version_past_the_latest_is_not_found(history: History) -> None:
    for path in ("/9", "/9/delta", "/9/content", "/0", "/0/content"):
        status, _, _ = history.get(path)
        assert status == 404, path


def test_versions_pages_are_what_was_published(history: History) -> None:
    published = [p.candidate.document.to_json() for p in history.versions]
    for after in range(10):
        for limit in range(1, 10):
            response = history.client.get(
                f"{history.chain.url}?after={after}&limit={limit}",
                headers=history.agency.auth(Role.READER),
            )
            assert response.status_code == 200, (after, limit)
            assert response.get_json() == {"versions": published[after : after + limit]}
    everything = history.client.get(history.chain.url, headers=history.agency.auth(Role.READER))
    assert everything.get_json() == {"versions": published}


def test_paging_to_the_end_walks_the_whole_chain(history: History) -> None:
    # How a client that is far behind catches up: pages of two, each after the last seen.
    seen: list[int] = []
    after = 0
    for _ in range(10):
        response = history.client.get(
            f"{history.chain.url}?after={after}&limit=2", headers=history.agency.auth(Role.READER)
        )
        page = response.get_json()["versions"]
        if not page:
            break
        seen += [v["version"] for v in page]
        after = page[-1]["version"]
    assert seen == list(range(1, 9))


def test_the_publish_demo_script_verifies_three_versions(database_url: str) -> None:
    # scripts/publish-demo: three versions published to a real hub with the
    # protocol library, every delta and content pulled and checked byte for byte.
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "publish-demo"),
            "--database-url",
            database_url,
            "--entries",
            "200",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={name: value for name, value in os.environ.items() if not name.startswith("HASHEX_")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "all 3 versions verified byte for byte"
    assert "ok  v3 delta applied to v2 gives v3" in result.stdout
