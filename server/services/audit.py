"""The append-only, hash-chained audit log.

Every row names who did what, to what, when, from where and with what
outcome, and carries the SHA-256 of its own fields and of the previous row's
hash.  Rows are numbered 1, 2, 3... by the writer, never by a sequence, so a
deleted row leaves a gap, an inserted or edited row breaks the hashes, and
``verify_chain`` names the first row that is wrong.

Appending happens under a database lock (PostgreSQL: an advisory lock on the
chain; SQLite: the write lock every writing transaction takes up front), so
two writers can never both chain onto the same previous row.  An accepted
change appends its row in its own transaction; a refusal appends in a
transaction of its own (``record_refusal``), so it is kept while nothing of
the refused change is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from server.engine import begin_exclusive, lock_resource
from server.errors import HubError
from server.models import AuditEvent, utcnow
from server.services.callers import Actor, Caller, Role

GENESIS_HASH = "0" * 64
CHAIN_LOCK = "audit-chain"
MAX_PAGE = 1000


class AuditChainError(HubError):
    """The stored chain is broken at ``row``: a row was edited, inserted or deleted."""

    slug = "audit-chain-broken"
    title = "Audit chain broken"

    def __init__(self, row: int, problem: str) -> None:
        super().__init__(f"audit row {row}: {problem}")
        self.row = row


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_hash(event: AuditEvent) -> str:
    """The SHA-256 that chains ``event``: over every field and the previous hash."""
    fields = {
        "id": event.id,
        "at": _timestamp(event.at),
        "actor": event.actor,
        "actor_agency": event.actor_agency,
        "action": event.action,
        "target": event.target,
        "subject_agency": event.subject_agency,
        "remote_addr": event.remote_addr,
        "outcome": event.outcome,
        "detail": event.detail,
        "prev_hash": event.prev_hash,
    }
    encoded = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    target: str | None = None,
    subject_agency: str | None = None,
    outcome: str = "ok",
    detail: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain inside the session's current transaction.

    Call it last in a transaction: the chain lock is held from here to the
    commit, and every other audited writer waits for it.
    """
    lock_resource(session, CHAIN_LOCK)
    last = session.execute(
        select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
    ).first()
    event = AuditEvent(
        id=1 if last is None else last.id + 1,
        # Microseconds kept exactly: both databases store them, and the hash
        # must come out the same when the row is read back.
        at=utcnow(),
        actor=actor.name,
        actor_agency=actor.agency,
        action=action,
        target=target,
        subject_agency=subject_agency,
        remote_addr=actor.remote_addr,
        outcome=outcome,
        detail=json.dumps(dict(detail or {}), sort_keys=True, separators=(",", ":")),
        prev_hash=GENESIS_HASH if last is None else last.hash,
    )
    event.hash = row_hash(event)
    session.add(event)
    session.flush()
    return event


def record_refusal(
    session: Session,
    actor: Actor,
    action: str,
    *,
    target: str | None,
    subject_agency: str | None,
    problem_type: str,
    detail: str,
) -> None:
    """Audit a refused change in a transaction of its own, and commit it.

    ``session`` must be fresh (not in a transaction): the refused change's
    own session has been rolled back, so nothing of it is stored.
    """
    begin_exclusive(session, CHAIN_LOCK)
    record(
        session,
        actor,
        action,
        target=target,
        subject_agency=subject_agency,
        outcome="refused",
        detail={"type": problem_type, "detail": detail[:500]},
    )
    session.commit()


@dataclass(frozen=True)
class ChainReport:
    """A verified chain: how many rows, and the hash of the last one."""

    rows: int
    head: str


def verify_chain(
    session: Session, batch: int = 1000, *, expect: tuple[int, str] | None = None
) -> ChainReport:
    """Re-check every row; raise AuditChainError naming the first wrong row.

    ``expect`` is a head recorded earlier, ``(rows, hash)``: row ``rows`` must
    still exist and carry that hash, which catches rows cut from the end.
    """
    expected_id = 1
    previous = GENESIS_HASH
    rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).yield_per(batch)
    for event in rows:
        if event.id != expected_id:
            if event.id > expected_id:
                raise AuditChainError(
                    event.id, f"rows {expected_id} to {event.id - 1} are missing (deleted)"
                )
            raise AuditChainError(event.id, "row number out of sequence")
        if event.prev_hash != previous:
            raise AuditChainError(
                event.id,
                "does not chain to the row before it (a row was inserted, replaced or "
                "the previous row was edited)",
            )
        if row_hash(event) != event.hash:
            raise AuditChainError(event.id, "its contents do not match its hash (edited)")
        if expect is not None and event.id == expect[0] and event.hash != expect[1]:
            raise AuditChainError(event.id, "does not carry the head recorded earlier")
        previous = event.hash
        expected_id += 1
    if expect is not None and expected_id - 1 < expect[0]:
        raise AuditChainError(
            expected_id,
            f"missing: the chain ends at row {expected_id - 1}, but a head was "
            f"recorded at row {expect[0]} (rows deleted from the end)",
        )
    return ChainReport(expected_id - 1, previous)


def visible_events(caller: Caller) -> Select[AuditEvent]:
    """The events ``caller`` may read, oldest first.

    The hub operator sees everything.  An agency admin sees what its agency
    did and what was done to its agency's sets and tokens; publishers and
    readers see only what their own agency did.
    """
    query = select(AuditEvent).order_by(AuditEvent.id)
    if caller.role is Role.ADMIN:
        return query
    if caller.role is Role.AGENCY_ADMIN:
        return query.where(
            or_(
                AuditEvent.actor_agency == caller.agency,
                AuditEvent.subject_agency == caller.agency,
            )
        )
    return query.where(AuditEvent.actor_agency == caller.agency)


def list_events(
    session: Session, caller: Caller, *, after: int, limit: int
) -> Sequence[AuditEvent]:
    """A page of the events ``caller`` may read with ids above ``after``."""
    query = visible_events(caller).where(AuditEvent.id > after).limit(min(limit, MAX_PAGE))
    return session.scalars(query).all()
