"""Content and delta digests equal what ``LC_ALL=C sort | sha256sum`` gives, over random lines."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.protocol.entries import DeltaDigest, Entry, content_digest
from tests.environment import require_tool
from tests.protocol.strategies import unique_entries

pytestmark = pytest.mark.tool

C_LOCALE = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.fixture(scope="module")
def tools() -> tuple[str, str]:
    return require_tool("sort"), require_tool("sha256sum")


def coreutils(tools: tuple[str, str], lines: list[bytes], *, unique: bool) -> tuple[bytes, str]:
    """The bytes ``LC_ALL=C sort [-u]`` makes of ``lines`` and their ``sha256sum``."""
    sort, sha256sum = tools
    args = [sort, "-u"] if unique else [sort]
    sorted_bytes = subprocess.run(
        args, input=b"".join(line + b"\n" for line in lines), env=C_LOCALE,
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    summed = subprocess.run(
        [sha256sum], input=sorted_bytes, env=C_LOCALE, capture_output=True, check=True
    ).stdout.decode()
    digest, name = summed.split()
    assert name == "-"
    return sorted_bytes, digest


@settings(max_examples=30, deadline=None)
@given(unique_entries(max_size=60), st.randoms(use_true_random=False))
def test_content_digest_equals_coreutils(
    tools: tuple[str, str], chosen: list[Entry], rnd: random.Random
) -> None:
    lines = [entry.line() for entry in chosen]
    # Hand coreutils a shuffled list with some exact duplicates, which `sort -u` drops.
    shuffled = lines + rnd.sample(lines, len(lines) // 3)
    rnd.shuffle(shuffled)
    sorted_bytes, expected = coreutils(tools, shuffled, unique=True)
    ours = sorted(set(lines))
    assert b"".join(line + b"\n" for line in ours) == sorted_bytes  # same order as coreutils
    assert content_digest(ours) == (expected, len(ours))
    assert hashlib.sha256(sorted_bytes).hexdigest() == expected


@st.composite
def deltas(draw: st.DrawFn) -> list[bytes]:
    """Adds and removes with distinct identities on each side (relabels allowed)."""
    removed = draw(unique_entries(max_size=30))
    added = draw(unique_entries(max_size=30))
    relabel = draw(st.lists(st.sampled_from(removed), unique=True, max_size=5)) if removed else []
    added_ids = {a.identity for a in added}
    for entry in relabel:
        if entry.identity not in added_ids:
            new_label = "x" if entry.label == "new-label" else "new-label"
            added.append(Entry(entry.alg, entry.hex, new_label))
    return [b"+" + e.line() for e in added] + [b"-" + e.line() for e in removed]


@settings(max_examples=30, deadline=None)
@given(deltas(), st.randoms(use_true_random=False))
def test_delta_digest_equals_coreutils(
    tools: tuple[str, str], lines: list[bytes], rnd: random.Random
) -> None:
    shuffled = list(lines)
    rnd.shuffle(shuffled)
    sorted_bytes, expected = coreutils(tools, shuffled, unique=False)
    ours = sorted(lines)
    assert b"".join(line + b"\n" for line in ours) == sorted_bytes
    digest = DeltaDigest()
    for line in ours:
        digest.add(line)
    assert digest.hexdigest() == expected
    assert digest.adds == sum(1 for line in lines if line.startswith(b"+"))
    assert digest.removes == sum(1 for line in lines if line.startswith(b"-"))
    # Adds come first in bytewise order.
    signs = [line[:1] for line in ours]
    assert signs == sorted(signs)


def test_labels_sort_after_their_bare_identity_as_in_coreutils(tools: tuple[str, str]) -> None:
    """LF sorts below the space before a label; with and without LF the order is the same."""
    hex_ = os.urandom(16).hex()
    lines = [f"md5:{hex_} b".encode(), f"md5:{hex_}".encode(), f"md5:{hex_} B".encode(),
             f"md5:{hex_} -".encode(), f"md5:{hex_}-".encode()]  # fmt: skip
    sorted_bytes, _ = coreutils(tools, lines, unique=False)
    assert sorted_bytes.split(b"\n")[:-1] == sorted(lines)
