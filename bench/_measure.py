"""Timing commands, and the outcome of each benchmark against its target.

Every figure is wall-clock time around a whole child process (``hashex``,
``curl``, ``sqlite3``, ``sha256sum``), so interpreter start-up counts as a
user would feel it.  Cheap measurements are repeated and their median kept,
since other work may share the machine.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from _hub import BenchError, clean_env


def timed(
    command: Sequence[str | Path],
    env: dict[str, str] | None = None,
    *,
    exits: Collection[int] = (0,),
) -> float:
    """Seconds ``command`` took; its stdout is discarded, a bad exit is a BenchError."""
    args = [str(part) for part in command]
    start = time.perf_counter()
    done = subprocess.run(
        args,
        env=clean_env(env or {}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode not in exits:
        raise BenchError(
            f"{' '.join(args[:3])} ... exited {done.returncode}:\n"
            f"{done.stderr.decode(errors='replace')[-2000:]}"
        )
    return seconds


def note(message: str) -> None:
    """A progress line on stderr: the whole run takes minutes."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Outcome:
    """One benchmark's figure, what it is held against, and whether it meets its target.

    ``ratio`` is measured over reference (or over the target rate); the
    target is met when it is at most ``limit``, or at least ``limit`` for
    figures where more is better.
    """

    name: str
    measured: str
    reference: str
    ratio: float
    limit: float
    more_is_better: bool = False

    @property
    def passed(self) -> bool:
        """Whether the target is met."""
        return self.ratio >= self.limit if self.more_is_better else self.ratio <= self.limit

    @property
    def target(self) -> str:
        """The target as text, e.g. ``<= 1.5x``."""
        return f"{'>=' if self.more_is_better else '<='} {self.limit:g}x"

    def line(self) -> str:
        """One sentence for the log as soon as the benchmark ends."""
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{self.name}: {self.measured} against {self.reference}: "
            f"{self.ratio:.2f}x (target {self.target}) {verdict}"
        )


def table(outcomes: Sequence[Outcome]) -> str:
    """The final table: benchmark | measured | floor/target | ratio | pass/fail."""
    header = ("benchmark", "measured", "floor/target", "ratio", "pass/fail")
    rows = [header] + [
        (
            o.name,
            o.measured,
            f"{o.reference}, target {o.target}",
            f"{o.ratio:.2f}x",
            "pass" if o.passed else "FAIL",
        )
        for o in outcomes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
