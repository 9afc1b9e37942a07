"""Schemathesis against a running hub's own OpenAPI document, for the CI test and ``make fuzz``.

The configuration is the repository's ``schemathesis.toml``; the seeded
agency and set reach it through ``HASHEX_FUZZ_AGENCY`` / ``HASHEX_FUZZ_SET``.
Every check runs, with requests bounded per operation and a fixed seed, so a
failure replays.  Traffic goes to the hub's loopback URL only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "schemathesis.toml"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class FuzzRun:
    """One schemathesis run: its exit code, output, and the figures of its summary."""

    returncode: int
    output: str
    generated: int
    failures: int

    def line(self) -> str:
        """One line for a report."""
        return f"{self.generated} requests generated, {self.failures} failures"


def run_schemathesis(
    base_url: str,
    token: str,
    *,
    agency: str,
    set_name: str,
    max_examples: int,
    seed: int = 1,
    timeout: float = 900.0,
) -> FuzzRun:
    """Run every check of schemathesis on the hub at ``base_url`` as the holder of ``token``."""
    if not base_url.startswith(("http://127.0.0.1:", "https://127.0.0.1:", "http://localhost:")):
        raise ValueError(f"fuzzing goes to loopback only, not {base_url}")
    command = [
        str(BIN / "schemathesis"),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{base_url}/v1/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--generation-database",
        "none",
        # One worker: with two, schemathesis shares Hypothesis caches across
        # threads that are not safe for it (an internal KeyError, seen here).
        "--workers",
        "1",
        "--request-timeout",
        "30",
    ]
    environ = {name: value for name, value in os.environ.items() if "proxy" not in name.lower()}
    environ |= {"HASHEX_FUZZ_AGENCY": agency, "HASHEX_FUZZ_SET": set_name}
    done = subprocess.run(
        command, env=environ, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = done.stdout + done.stderr
    generated = re.search(r"(\d+) generated", output)
    failures = re.search(r"(\d+) unique failures?", output)
    return FuzzRun(
        done.returncode,
        output,
        int(generated.group(1)) if generated else 0,
        int(failures.group(1)) if failures else 0,
    )
