"""Synthetic test data for the protocol, hub and client tests: random hashes, and the clock.

Every hash a test uses is random bytes, never a real hash list: from a seeded
``random.Random`` where a test must be replayable, from ``UNSEEDED`` (the
operating system's randomness) where it need not be.  ``now`` is the time
signed documents carry: whole seconds, aware UTC.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime

from client.protocol.entries import ALGORITHMS

# Valid entry labels, one of each shape the protocol allows.
LABELS = ("cat-a", "cat-b", "vics-1", "Zeta.9", "x_y-z", "0")
# For data no test needs to replay.
UNSEEDED = random.SystemRandom()


def now() -> datetime:
    """The current time in whole seconds, aware UTC (documents carry seconds)."""
    return datetime.now(UTC).replace(microsecond=0)


def random_hex(rng: random.Random, length: int) -> str:
    """``length`` random lower-case hex digits (``length`` even)."""
    return rng.randbytes(length // 2).hex()


def random_line(rng: random.Random, alg: str | None = None, label: str | None = "") -> bytes:
    """One canonical entry line of a random hash (of a random algorithm unless ``alg``).

    ``label`` is the line's label, None for none; ``""`` (the default) gives
    one of LABELS half the time, at random.
    """
    name = alg or rng.choice(sorted(ALGORITHMS))
    text = f"{name}:{random_hex(rng, ALGORITHMS[name])}"
    if label == "":
        label = rng.choice(LABELS) if rng.random() < 0.5 else None
    return (text if label is None else f"{text} {label}").encode("ascii")


def random_lines(rng: random.Random, count: int, alg: str | None = None) -> list[bytes]:
    """``count`` lines of distinct random hashes, sorted as content is."""
    return sorted(random_line(rng, alg) for _ in range(count))


def wire(lines: Iterable[bytes]) -> bytes:
    """Lines (without LF) as wire bytes: each ending in LF."""
    return b"".join(line + b"\n" for line in lines)
