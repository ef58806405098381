"""Bearer tokens: minted once, shown once, stored only as a SHA-256 digest and a display prefix.

A token is 32 random bytes (url-safe base64) after the marker `calib_`, so a
digest lookup is enough: with that much entropy no salt or slow hash is needed,
and the lookup is one unique-index probe per request, which lets revocation take
effect on the very next request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from shared.store.db import Database
from shared.store.models import ApiToken, UiSession, utcnow

MARKER = "calib_"
PREFIX_CHARS = len(MARKER) + 8


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Minted:
    token: str  # the only time the plaintext exists outside the client
    prefix: str
    tenant: str


def create(db: Database, tenant: str, name: str | None = None) -> Minted:
    token = MARKER + secrets.token_urlsafe(32)
    minted = Minted(token=token, prefix=token[:PREFIX_CHARS], tenant=tenant)
    with db.session(write=True) as session:
        session.add(ApiToken(tenant=tenant, prefix=minted.prefix, digest=digest(token), name=name))
    return minted


def revoke(db: Database, prefix: str) -> bool:
    with db.session(write=True) as session:
        token = session.scalars(
            sa.select(ApiToken).where(ApiToken.prefix == prefix, ApiToken.revoked_at.is_(None))
        ).first()
        if token is None:
            return False
        token.revoked_at = utcnow()
    return True


# Asked by every request, so built once (shared/store/built_once.py says why).
_TENANT_OF = sa.select(ApiToken.tenant).where(ApiToken.digest == sa.bindparam("digest"), ApiToken.revoked_at.is_(None))


def tenant_of(db: Database, token: str) -> str | None:
    """The tenant of a live token, or None for an unknown or revoked one."""
    if not token.startswith(MARKER):
        return None
    with db.reading() as session:  # one statement, one round trip
        return session.scalar(_TENANT_OF, {"digest": digest(token)})


def open_session(db: Database, token: str, lifetime: dt.timedelta) -> str | None:
    """A dashboard session for a live token: its random id (for the cookie), or None for an
    unknown or revoked token. Only the id's digest is stored."""
    session_id = secrets.token_urlsafe(32)
    with db.session(write=True) as session:
        found = session.execute(
            sa.select(ApiToken.id, ApiToken.tenant).where(
                ApiToken.digest == digest(token), ApiToken.revoked_at.is_(None)
            )
        ).first()
        if found is None:
            return None
        now = utcnow()
        session.add(
            UiSession(
                digest=digest(session_id),
                token_id=found.id,
                tenant=found.tenant,
                created_at=now,
                expires_at=now + lifetime,
            )
        )
    return session_id


def session_tenant(db: Database, session_id: str) -> str | None:
    """The tenant of a live session: not expired, and its token not revoked."""
    with db.session() as session:
        return session.scalar(
            sa.select(UiSession.tenant)
            .join(ApiToken, ApiToken.id == UiSession.token_id)
            .where(
                UiSession.digest == digest(session_id), UiSession.expires_at > utcnow(), ApiToken.revoked_at.is_(None)
            )
        )


def close_session(db: Database, session_id: str) -> None:
    """Logout: the session is deleted, so its cookie opens nothing any more, wherever it was copied."""
    with db.session(write=True) as session:
        session.execute(
            sa.delete(UiSession).where(sa.or_(UiSession.digest == digest(session_id), UiSession.expires_at <= utcnow()))
        )


def listing(db: Database) -> list[ApiToken]:
    with db.session() as session:
        rows = session.scalars(sa.select(ApiToken).order_by(ApiToken.created_at)).all()
        session.expunge_all()
        return list(rows)


LOCAL_TENANT = "local"


def ensure_local_token(db: Database, path: Path) -> str:
    """The token `calib up` leaves for the CLI on this machine: reused while it is live,
    minted again (tenant "local") when missing or revoked. The file is readable by its owner only."""
    if path.exists():
        token = path.read_text().strip()
        if tenant_of(db, token) is not None:
            return token
    minted = create(db, LOCAL_TENANT, name=f"local token in {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(minted.token + "\n")
    return minted.token


def read_local_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
