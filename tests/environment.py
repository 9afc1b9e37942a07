"""What the tests take from their environment, and the environments they give commands.

``IN_CI`` and ``require_tool`` decide whether a missing system tool fails or
skips a test; ``BIN`` is where the installed ``hashex`` and ``hashex-server``
scripts are.  A command a test runs never sees the test's own ``HASHEX_*``
variables: ``process_env`` is the environment of a child process,
``runner_env`` that of a click ``CliRunner`` (which must be told to unset
them).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI") == "true"
# The virtualenv's bin directory: the installed hashex and hashex-server.
BIN = Path(sys.executable).parent


def require_tool(name: str) -> str:
    """Path of a system tool; a missing one fails under CI=true and skips elsewhere.

    CI must prove that every check really ran, so a missing tool there is a
    broken install step, not a reason to skip.
    """
    path = shutil.which(name)
    if path is None:
        message = f"system tool {name!r} is not installed (.ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def process_env(**variables: str) -> dict[str, str]:
    """The test's environment without its HASHEX_* variables, plus ``variables``."""
    base = {name: value for name, value in os.environ.items() if not name.startswith("HASHEX_")}
    return base | variables


def runner_env(**variables: str) -> dict[str, str | None]:
    """A ``CliRunner`` environment: every HASHEX_* of the test's unset, ``variables`` set."""
    cleared: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith("HASHEX_")
    }
    return cleared | dict(variables)
