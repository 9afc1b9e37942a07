"""The hub's transparency-log signing key, kept in the database.

Every gunicorn node reads the same key from the database, so ``init`` makes
it once, under a writer lock, and any number of nodes or repeated ``init``
runs agree on it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from client.protocol.keys import (
    generate_private_key,
    key_id,
    private_key_to_pem,
    public_key_from_raw,
    public_key_raw,
    public_key_to_pem,
)
from server.engine import begin_exclusive
from server.models import HubKey, utcnow

_LOCK = "hub-keys"


def current_hub_key(session: Session) -> HubKey | None:
    """The hub's current log key (the newest), or None before ``init``."""
    return session.scalars(select(HubKey).order_by(HubKey.id.desc()).limit(1)).first()


def ensure_hub_key(session: Session) -> tuple[HubKey, bool]:
    """The current hub key, made and committed first if there is none.

    Returns the key and whether this call made it.  The session must not be
    in a transaction: the check and the insert run under the hub-keys writer
    lock, so two nodes running ``init`` at once cannot both make a key.
    """
    begin_exclusive(session, _LOCK)
    existing = current_hub_key(session)
    if existing is not None:
        # Commit, not rollback: a rollback would expire the row we return.
        session.commit()
        return existing, False
    private = generate_private_key()
    row = HubKey(
        keyid=key_id(private),
        public_key=public_key_raw(private.public_key()),
        private_pem=private_key_to_pem(private).decode("ascii"),
        created_at=utcnow(),
    )
    session.add(row)
    session.commit()
    return row, True


def public_key_pem(key: HubKey) -> str:
    """The key's public half as SubjectPublicKeyInfo PEM, as consumers pin it."""
    return public_key_to_pem(public_key_from_raw(key.public_key)).decode("ascii")
