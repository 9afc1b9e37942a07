"""Running ``hashex`` on a real pseudo-terminal, as a person at a keyboard would."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from tests.environment import BIN, process_env

TERMINAL_SECONDS = 120.0


def on_a_terminal(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``hashex ARGS`` with stdout and stderr on one pseudo-terminal; exit code and output."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [str(BIN / "hashex"), *map(str, args)],
            env=env or process_env(COLUMNS="200"),
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = process.wait(timeout=TERMINAL_SECONDS)
    finally:
        os.close(leader)
    return code, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
