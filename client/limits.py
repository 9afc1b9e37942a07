"""Every security limit of the client in one typed, frozen record.

A hostile or broken hub must not be able to make the client read without
end, wait without end, or hold more than it expects: each response has a
size bound, every connection a timeout, every sync a total deadline.
"""

from __future__ import annotations

from dataclasses import dataclass

from client.protocol.entries import MAX_WIRE_LINE


@dataclass(frozen=True)
class Limits:
    """Bounds on what the client reads from a hub and how long it waits."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    sync_deadline: float = 3600.0
    max_json_bytes: int = 16 * 1024 * 1024
    max_document_bytes: int = 64 * 1024
    max_signatures: int = 16
    versions_page: int = 1000
    bootstrap_after: int = 50
    """Take the newest content instead of deltas when this many versions behind."""

    def publish_answer_timeout(self, adds: int, removes: int) -> float:
        """How long to wait for a publish's answer once its delta is sent.

        The hub checks, merges and commits the delta before it answers: the
        read timeout, and a second more for every 20,000 lines of the delta
        (a 5,000,000-entry first version: about five minutes in all).
        """
        return self.read_timeout + (adds + removes) / 20_000

    def max_delta_bytes(self, adds: int, removes: int) -> int:
        """Most bytes a delta of these counts can take: what the manifest allows."""
        return (adds + removes) * MAX_WIRE_LINE

    def max_content_bytes(self, count: int) -> int:
        """Most bytes a content of ``count`` entries can take."""
        return count * MAX_WIRE_LINE
