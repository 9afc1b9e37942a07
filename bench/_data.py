"""Synthetic inputs for the benchmarks: random SHA-256 hashes and files of random bytes.

Nothing here is, or is derived from, a real hash list: every hash is drawn
from a seeded generator, and every scanned file is noise.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

HASH_BYTES = 32
READ_CHUNK = 1 << 20


def random_hashes(rng: random.Random, count: int) -> list[str]:
    """``count`` random SHA-256 digests as lowercase hex (distinct with overwhelming odds)."""
    digits = rng.randbytes(HASH_BYTES * count).hex()
    width = 2 * HASH_BYTES
    return [digits[i : i + width] for i in range(0, len(digits), width)]


def write_entries(path: Path, hashes: Iterable[str]) -> Path:
    """A ``publish`` input file: one ``sha256:<hex>`` line per hash, in the order given."""
    with path.open("w", encoding="ascii") as out:
        out.writelines(f"sha256:{h}\n" for h in hashes)
    return path


def write_bare(path: Path, hashes: Iterable[str]) -> Path:
    """A ``lookup --file`` input: one bare hex hash per line, as tools print them."""
    with path.open("w", encoding="ascii") as out:
        out.writelines(f"{h}\n" for h in hashes)
    return path


@dataclass
class EvolvingSet:
    """A set's current hashes, and the changes drawn from them one version at a time.

    The hashes are in random order, so removing them front to back removes
    entries scattered all over the sorted content, as real changes are.
    """

    hashes: list[str]
    rng: random.Random
    removed: int = 0

    def change(self, adds: int, removes: int) -> tuple[list[str], list[str]]:
        """The next change: ``adds`` new random hashes and ``removes`` held ones."""
        gone = self.hashes[self.removed : self.removed + removes]
        if len(gone) != removes:
            raise ValueError(f"cannot remove {removes} of the {len(self.hashes)} hashes left")
        self.removed += removes
        added = random_hashes(self.rng, adds)
        self.hashes.extend(added)
        return added, gone

    def held(self) -> list[str]:
        """The hashes the set holds now."""
        return self.hashes[self.removed :]


def write_random_files(directory: Path, files: int, size: int) -> int:
    """``files`` files of ``size`` random bytes each under ``directory``; the total size."""
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(files):
        (directory / f"file-{number:05d}.bin").write_bytes(os.urandom(size))
    return files * size


def read_all(directory: Path) -> None:
    """Read every file under ``directory`` once, so later runs find them in the page cache."""
    for path in sorted(directory.iterdir()):
        with path.open("rb") as handle:
            while handle.read(READ_CHUNK):
                pass
