"""The hub's merge of a delta into the held content, a block at a time.

The hub hashes the held content a block of rows at a time, and merges line
by line only the blocks a remove or an add falls into.  With blocks of three
rows, every kind of change lands on a block's edges: before the first line,
between blocks, on a block's last line, after the last line; relabels,
removes and adds together.  Each version must be accepted exactly when the
publisher's own digest of it agrees, and a remove of a line not held, or an
add of an identity held, must be refused wherever it falls.
"""

from __future__ import annotations

import random

import pytest
from flask.testing import FlaskClient

from server.errors import problem_type
from server.services import publishing
from tests.server.seeding import SetChain, add_agency, add_set, for_delta, publish_body
from tests.synthetic import random_line


def _post(client: FlaskClient, chain: SetChain, candidate: object) -> int:
    body, content_type = publish_body(candidate)  # type: ignore[arg-type]
    answer = client.post(
        chain.url, data=body, content_type=content_type, headers=chain.agency.auth()
    )
    return answer.status_code


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publishing, "INSERT_BATCH", 3)


@pytest.mark.usefixtures("small_blocks")
def test_changes_on_every_block_edge_merge_to_the_publishers_digest(
    database_url: str, client: FlaskClient
) -> None:
    rng = random.Random(1405)
    alpha = add_agency(database_url, "alpha")
    chain = add_set(database_url, alpha, "list")
    lines = sorted({random_line(rng, "sha256", None) for _ in range(20)})
    for _ in range(12):
        candidate = chain.build(lines)
        assert _post(client, chain, candidate) == 201
        chain.accept(candidate)
        kept = [line for line in lines if rng.random() > 0.2]
        relabelled = [line.split(b" ")[0] + b" r1" if rng.random() < 0.1 else line for line in kept]
        added = [random_line(rng, "sha256", None) for _ in range(rng.randrange(0, 6))]
        # The extremes too: an add before everything held, and after it.
        added += [b"sha256:" + b"0" * 63 + bytes([48 + rng.randrange(10)])] * (rng.random() < 0.3)
        added += [b"sha256:" + b"f" * 63 + bytes([48 + rng.randrange(10)])] * (rng.random() < 0.3)
        by_identity = {line.split(b" ")[0]: line for line in relabelled + added}
        lines = sorted(by_identity.values())


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("where", range(0, 10))
def test_a_change_that_does_not_apply_is_refused_wherever_it_falls(
    database_url: str, client: FlaskClient, where: int
) -> None:
    rng = random.Random(where)
    alpha = add_agency(database_url, "alpha")
    chain = add_set(database_url, alpha, "list")
    lines = sorted({random_line(rng, "sha256", None) for _ in range(9)})
    first = chain.build(lines)
    assert _post(client, chain, first) == 201
    chain.accept(first)
    candidate = chain.build(lines)
    held = lines[where % len(lines)]
    # An add of a held identity under a new label (a relabel without its
    # remove), or a remove of a line just past a held one (never held).
    identity, hex_ = held.split(b":")
    never_held = identity + b":" + hex_[:-1] + (b"0" if hex_[-1:] != b"0" else b"1")
    bad = b"+" + held + b" zz\n" if where % 2 else b"-" + never_held + b"\n"
    refused = for_delta(candidate, alpha.keys, bad)
    body, content_type = publish_body(refused)
    answer = client.post(chain.url, data=body, content_type=content_type, headers=alpha.auth())
    assert answer.status_code == 422
    assert answer.get_json()["type"] == problem_type("delta-not-applicable")
