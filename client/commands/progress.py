"""Progress on long work: shown on stderr when stdout is a terminal, nothing in a pipe.

A person at a terminal wants to see that a million-line publish or a scan of
a seized disk is moving; a tool reading a pipe wants clean output and no
escape codes, so there the display is never created.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    """What the verbs tell a display: a new line of text to show."""

    def update(self, text: str) -> None:
        """Show ``text`` as the current state of the work."""


class _Quiet:
    def update(self, text: str) -> None:
        """Nothing to show in a pipe."""


class _Spinner:
    def __init__(self, status: object) -> None:
        self._status = status

    def update(self, text: str) -> None:
        """Replace the spinner's text."""
        self._status.update(text)  # type: ignore[attr-defined]


@contextmanager
def progress(text: str) -> Iterator[Progress]:
    """A live line on stderr for the length of the block, only when stdout is a terminal."""
    if not sys.stdout.isatty():
        yield _Quiet()
        return
    # Imported here: in a pipe, rich is never loaded.
    from rich.console import Console

    with Console(stderr=True).status(text) as status:
        yield _Spinner(status)
