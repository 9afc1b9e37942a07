"""Who is asking: roles, authenticated callers and the actors the audit log names."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    """A token's one role.

    Within an agency ``agency-admin`` includes ``publisher``, which includes
    ``reader``.  ``admin`` is the hub operator, outside that chain: it manages
    agencies, tokens and groups and reads the whole audit log, but reads sets
    only as its own agency may, and neither creates sets nor publishes.
    """

    ADMIN = "admin"
    AGENCY_ADMIN = "agency-admin"
    PUBLISHER = "publisher"
    READER = "reader"

    def includes(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may, within its own agency."""
        if self is Role.ADMIN or needed is Role.ADMIN:
            return self is needed or needed is Role.READER
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.READER: 0, Role.PUBLISHER: 1, Role.AGENCY_ADMIN: 2}


@dataclass(frozen=True)
class Actor:
    """Who the audit log names: ``token:<id>`` or ``cli:<user>``, agency, address."""

    name: str
    agency: str | None = None
    remote_addr: str | None = None


@dataclass(frozen=True)
class Caller:
    """An authenticated API caller: its token, its agency and its role."""

    token_id: int
    agency_id: int
    agency: str
    role: Role
    remote_addr: str | None = None

    @property
    def actor(self) -> Actor:
        """The caller as the audit log names it."""
        return Actor(f"token:{self.token_id}", self.agency, self.remote_addr)
