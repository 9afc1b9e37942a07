"""Bearer tokens: made, shown once, kept only as SHA-256, looked up by that hash.

A token is ``hxt_`` followed by 32 random bytes in unpadded base64url.  The
hub stores only the SHA-256 of the whole string and finds a token by that
hash through a unique index: no secret is ever compared or scanned, so
neither timing nor a database dump reveals a usable token.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from server.engine import begin_exclusive
from server.errors import NotFoundError, UnauthorizedError
from server.models import Agency, Token, utcnow
from server.services import audit
from server.services.agencies import get_agency
from server.services.callers import Actor, Caller, Role
from server.services.generations import GenerationCache
from server.services.text import MAX_NAME_LENGTH, check_text

TOKEN_PREFIX = "hxt_"  # noqa: S105 - a public marker that helps secret scanners, not a secret
TOKEN_RE = re.compile(r"hxt_[A-Za-z0-9_-]{43}")
# last_used_at is written at most this often per token: a busy tool polling
# every few seconds must not turn every read into a database write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Token ids are 32-bit integer keys on every database.
MAX_TOKEN_ID = 2**31 - 1
_BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hashex"'}


def new_secret() -> str:
    """A fresh token string: the prefix and 32 random bytes, base64url."""
    raw = secrets.token_bytes(32)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def secret_hash(secret: str) -> str:
    """The SHA-256 under which a token is stored and looked up."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create_token(
    session: Session,
    actor: Actor,
    agency_slug: str,
    role: Role,
    *,
    name: str | None,
    expires_days: int | None,
) -> tuple[Token, str]:
    """Make a token for ``agency_slug``; return its row and the secret, shown once."""
    if name is not None:
        name = check_text("name", name, max_length=MAX_NAME_LENGTH, required=False) or None
    begin_exclusive(session, "tokens")
    agency = get_agency(session, agency_slug)
    now = utcnow()
    secret = new_secret()
    token = Token(
        agency_id=agency.id,
        role=role.value,
        name=name,
        secret_sha256=secret_hash(secret),
        created_at=now,
        expires_at=None if expires_days is None else now + timedelta(days=expires_days),
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        actor,
        "token.create",
        target=f"token:{token.id}",
        subject_agency=agency.slug,
        detail={"role": role.value, "name": name, "expires_at": _iso(token.expires_at)},
    )
    session.commit()
    return token, secret


@dataclass(frozen=True)
class TokenView:
    """A token as its managers see it: who holds it and when, never its secret."""

    id: int
    agency: str
    role: str
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


def list_tokens(session: Session) -> list[TokenView]:
    """Every token with its agency's slug, oldest first (never the secret)."""
    rows = session.execute(
        select(Token, Agency.slug).join(Agency, Token.agency_id == Agency.id).order_by(Token.id)
    ).all()
    return [
        TokenView(
            id=token.id,
            agency=slug,
            role=token.role,
            name=token.name,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            last_used_at=token.last_used_at,
        )
        for token, slug in rows
    ]


def revoke_token(session: Session, actor: Actor, token_id: int) -> Token:
    """Revoke a token now; revoking a revoked token changes nothing."""
    if not 1 <= token_id <= MAX_TOKEN_ID:
        raise NotFoundError(f"there is no token {token_id}")
    begin_exclusive(session, "tokens")
    token = session.get(Token, token_id)
    if token is None:
        raise NotFoundError(f"there is no token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        agency = session.get(Agency, token.agency_id)
        audit.record(
            session,
            actor,
            "token.revoke",
            target=f"token:{token.id}",
            subject_agency=agency.slug if agency else None,
        )
    session.commit()
    return token


@dataclass(frozen=True)
class TokenRecord:
    """What the hub knows of a token when it checks one: never its secret."""

    id: int
    agency_id: int
    agency: str
    role: Role
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


TokenCache = GenerationCache[str, TokenRecord]
"""Token records by secret hash, tagged with the tokens generation they were read at.

Revoking, expiring or re-roling a token, or changing its agency, moves that
number in the same transaction (see :mod:`server.services.generations`), so
a revoked token is refused by the very next request on every node.  Expiry
is still checked against the clock on every use.  Unknown tokens are never
remembered: a probe with random tokens costs a lookup, not memory.
"""
MAX_REMEMBERED_TOKENS = 100_000


def authenticate(
    session: Session,
    authorization: str | None,
    *,
    remote_addr: str | None,
    now: datetime,
    cache: TokenCache | None = None,
    generation: int = 0,
) -> tuple[Caller, bool]:
    """The caller an ``Authorization: Bearer`` header proves, or 401.

    Returns the caller and whether its last-used time is due for a write
    (the caller then writes it with :func:`touch`).  With a ``cache``, a
    token checked at the same tokens ``generation`` is not looked up again.
    """
    if not authorization:
        raise UnauthorizedError("a bearer token is required", headers=_BEARER_CHALLENGE)
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not TOKEN_RE.fullmatch(secret.strip()):
        raise UnauthorizedError(
            "malformed Authorization header; expected 'Bearer hxt_<43 base64url characters>'",
            headers=_BEARER_CHALLENGE,
        )
    digest = secret_hash(secret.strip())
    record = cache.get(digest, generation) if cache is not None else None
    if record is None:
        record = _lookup(session, digest)
        if record is not None and cache is not None:
            cache.put(digest, generation, record)
    if record is None:
        raise UnauthorizedError("unknown token", headers=_BEARER_CHALLENGE)
    if record.revoked_at is not None:
        raise UnauthorizedError("this token has been revoked", headers=_BEARER_CHALLENGE)
    if record.expires_at is not None and record.expires_at <= now:
        raise UnauthorizedError("this token has expired", headers=_BEARER_CHALLENGE)
    due = record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION
    if due and cache is not None:
        # The caller writes the time now; remembering it keeps the next
        # minute of this token's requests from each asking to write it again.
        cache.put(digest, generation, dataclasses.replace(record, last_used_at=now))
    caller = Caller(record.id, record.agency_id, record.agency, record.role, remote_addr)
    return caller, due


def _lookup(session: Session, digest: str) -> TokenRecord | None:
    row = session.execute(
        select(
            Token.id,
            Token.agency_id,
            Agency.slug,
            Token.role,
            Token.expires_at,
            Token.revoked_at,
            Token.last_used_at,
        )
        .join(Agency, Token.agency_id == Agency.id)
        .where(Token.secret_sha256 == digest)
    ).first()
    if row is None:
        return None
    return TokenRecord(
        row.id,
        row.agency_id,
        row.slug,
        Role(row.role),
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
    )


def touch(session: Session, token_id: int, now: datetime) -> None:
    """Record that a token was used, unless that was written under a minute ago.

    The condition sits in the UPDATE itself, so concurrent requests of one
    token write at most once however they interleave.
    """
    session.execute(
        update(Token)
        .where(Token.id == token_id)
        .where(or_(Token.last_used_at.is_(None), Token.last_used_at <= now - LAST_USED_RESOLUTION))
        .values(last_used_at=now)
    )
    session.commit()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")
