"""Helpers shared by the test modules."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI") == "true"


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
