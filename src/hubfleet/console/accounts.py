"""Console credentials kept in the store: password hashes, browser sessions and API tokens; and the
recent failed password sign-ins that lock an account out for a while (in the store too, so every console
process sharing it counts them together, and `hubfleet console-password` can lift a lock).

Accounts and their roles live in fleet.yaml (`console.accounts`); the store holds only what must not be
in files. Session ids and tokens are random; the store keeps their SHA-256, so a copy of the database
signs nobody in."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.orm import Session

from hubfleet.clock import utcnow
from hubfleet.store.api import Store
from hubfleet.store.models import ApiToken, ConsolePassword, ConsoleSession

TOKEN_PREFIX = "hf_"
MAX_TOKEN_ID = 2**31 - 1
"""The largest id every store's INTEGER column holds (PostgreSQL's is 32 bits); larger ones are refused."""
MIN_PASSWORD_LENGTH = 10
# scrypt at n=2**14, r=8: 16 MiB and ~50 ms per check, the parameters RFC 7914 gives for interactive use
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --------------------------------------------------------------------------- passwords


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(stored: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def password_problem(password: str) -> str | None:
    """Why `password` cannot be a console password, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password must have at least {MIN_PASSWORD_LENGTH} characters"
    if password.strip() != password:
        return "the password must not start or end with a space"
    return None


def set_password(store: Store, username: str, password: str) -> int:
    """Set `username`'s password, revoke the account's API tokens (whoever knew the old password may have
    made some) and lift a sign-in lock; returns how many tokens were revoked."""
    problem = password_problem(password)
    if problem:
        raise ValueError(problem)
    row = ConsolePassword(username=username, password_hash=hash_password(password), updated_at=utcnow())
    with store.session() as session, session.begin():
        session.merge(row)
        _forget_failures(session, username)
        return _revoke_tokens_of(session, username)


def check_password(store: Store, username: str, password: str) -> bool:
    """True when `username` has a password and it is `password` (a hash is computed either way, so the
    time taken does not tell whether the account has a password)."""
    with store.session() as session:
        row = session.get(ConsolePassword, username)
        stored = row.password_hash if row else None
    if stored is None:
        verify_password(_dummy_hash(), password)
        return False
    return verify_password(stored, password)


def has_password(store: Store, username: str) -> bool:
    with store.session() as session:
        return session.get(ConsolePassword, username) is not None


def remove_password(store: Store, username: str) -> bool:
    """Remove `username`'s password and revoke the account's API tokens; False if it had no password."""
    with store.session() as session, session.begin():
        removed = session.execute(delete(ConsolePassword).where(ConsolePassword.username == username))
        _forget_failures(session, username)
        _revoke_tokens_of(session, username)
        return bool(removed.rowcount)  # type: ignore[attr-defined]


@functools.cache
def _dummy_hash() -> str:
    """A hash nobody knows the password of, checked when an account has none (made on first use: 50 ms)."""
    return hash_password(secrets.token_urlsafe(16))


# --------------------------------------------------------------------------- failed sign-ins

MAX_FAILURES = 5
FAILURE_WINDOW = 15 * 60.0


FAILED = "failed"
"""The `method` of a console_sessions row that records a failed password sign-in: its id is random (no cookie
hashes to it, and lookup_session skips such rows), it expires with the failure window, and no migration was
needed to keep failures where every console process sees them."""


def begin_sign_in(store: Store, username: str) -> float:
    """Atomically: the seconds `username` stays locked, or 0 after recording this attempt as a failure
    (`sign_in_succeeded` forgets it). One INSERT ... SELECT writes the failure only while fewer than
    MAX_FAILURES are recent, so any number of concurrent attempts, from any number of console processes
    sharing the store, gets MAX_FAILURES password checks at most (SQLite runs the statement under its write
    lock; elsewhere the account's password row is locked first)."""
    username = username[:255]  # what was typed: the column's length (longer names are no account anyway)
    now = utcnow()
    window_start = now - timedelta(seconds=FAILURE_WINDOW)
    recent = (
        select(func.count())
        .select_from(ConsoleSession)
        .where(
            ConsoleSession.username == username,
            ConsoleSession.method == FAILED,
            ConsoleSession.created_at > window_start,
        )
        .scalar_subquery()
    )
    row = select(
        literal(secrets.token_hex(32)),
        literal(username),
        literal(""),
        literal(FAILED),
        literal(now, ConsoleSession.created_at.type),
        literal(now + timedelta(seconds=FAILURE_WINDOW), ConsoleSession.expires_at.type),
    ).where(recent < MAX_FAILURES)
    columns = ["id_hash", "username", "csrf_token", "method", "created_at", "expires_at"]
    with store.session() as session, session.begin():
        # failures of names tried and given up on: gone once their window has passed (expires_at is indexed)
        session.execute(
            delete(ConsoleSession).where(ConsoleSession.method == FAILED, ConsoleSession.expires_at < now)
        )
        if session.get_bind().dialect.name != "sqlite":
            session.execute(
                select(ConsolePassword.username).where(ConsolePassword.username == username).with_for_update()
            )
        if session.execute(insert(ConsoleSession).from_select(columns, row)).rowcount:  # type: ignore[attr-defined]
            return 0.0
        oldest = session.scalar(
            select(func.min(ConsoleSession.created_at)).where(
                ConsoleSession.username == username,
                ConsoleSession.method == FAILED,
                ConsoleSession.created_at > window_start,
            )
        )
    return max(FAILURE_WINDOW - (now - oldest).total_seconds(), 1.0) if oldest else 1.0


def sign_in_succeeded(store: Store, username: str) -> None:
    """The password was right: forget the account's failures."""
    with store.session() as session, session.begin():
        _forget_failures(session, username)


def unlock(store: Store, username: str) -> int:
    """Lift a sign-in lock of `username`; returns how many recent failures were forgotten."""
    with store.session() as session, session.begin():
        return _forget_failures(session, username)


def _forget_failures(session: Session, username: str) -> int:
    query = delete(ConsoleSession).where(ConsoleSession.username == username, ConsoleSession.method == FAILED)
    return int(session.execute(query).rowcount or 0)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class SessionInfo:
    username: str
    csrf_token: str
    method: str
    expires_at: datetime


def create_session(store: Store, username: str, method: str, hours: float) -> tuple[str, SessionInfo]:
    """A new session: (the cookie value, what the store knows of it)."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    info = SessionInfo(username, secrets.token_urlsafe(32), method, now + timedelta(hours=hours))
    row = ConsoleSession(
        id_hash=_sha256(session_id),
        username=username,
        csrf_token=info.csrf_token,
        method=method,
        created_at=now,
        expires_at=info.expires_at,
    )
    with store.session() as session, session.begin():
        session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
        session.add(row)
    return session_id, info


def lookup_session(store: Store, session_id: str) -> SessionInfo | None:
    with store.session() as session:
        row = session.get(ConsoleSession, _sha256(session_id))
        if row is None or row.method == FAILED or row.expires_at <= utcnow():
            return None
        return SessionInfo(row.username, row.csrf_token, row.method, row.expires_at)


def end_session(store: Store, session_id: str) -> None:
    with store.session() as session, session.begin():
        session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == _sha256(session_id)))


def end_sessions_of(store: Store, username: str) -> int:
    """Sign `username` out everywhere (after a password change or removal)."""
    with store.session() as session, session.begin():
        query = delete(ConsoleSession).where(
            ConsoleSession.username == username, ConsoleSession.method != FAILED
        )
        result = session.execute(query)
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- API tokens


@dataclass(frozen=True)
class TokenInfo:
    id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > utcnow())

    def to_dict(self) -> dict[str, object]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "username": self.username,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "last_used_at": iso(self.last_used_at),
            "revoked_at": iso(self.revoked_at),
            "active": self.active,
        }


def _token_info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        row.id,
        row.username,
        row.name,
        row.prefix,
        row.created_at,
        row.expires_at,
        row.last_used_at,
        row.revoked_at,
    )


def create_token(
    store: Store, username: str, name: str = "", expires_days: float | None = None
) -> tuple[str, TokenInfo]:
    """A new API token: (the token, shown once; what the store keeps)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiToken(
        username=username,
        name=name[:200],
        token_hash=_sha256(token),
        prefix=token[:10],
        created_at=now,
        expires_at=now + timedelta(days=expires_days) if expires_days else None,
    )
    with store.session() as session, session.begin():
        session.add(row)
        session.flush()
        info = _token_info(row)
    return token, info


def lookup_token(store: Store, token: str) -> TokenInfo | None:
    """The active token `token`, its last use noted (at most once a minute, to spare the database)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    now = utcnow()
    with store.session() as session, session.begin():
        row = session.scalars(select(ApiToken).where(ApiToken.token_hash == _sha256(token))).first()
        if row is None:
            return None
        if not _token_info(row).active:
            return None
        if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
            row.last_used_at = now
        return _token_info(row)


def _revoke_tokens_of(session: Session, username: str) -> int:
    query = update(ApiToken).where(ApiToken.username == username, ApiToken.revoked_at.is_(None))
    return int(session.execute(query.values(revoked_at=utcnow())).rowcount or 0)  # type: ignore[attr-defined]


def list_tokens(store: Store, username: str | None = None) -> list[TokenInfo]:
    query = select(ApiToken).order_by(ApiToken.id)
    if username is not None:
        query = query.where(ApiToken.username == username)
    with store.session() as session:
        return [_token_info(row) for row in session.scalars(query)]


def revoke_token(store: Store, token_id: int, username: str | None = None) -> bool:
    """Revoke token `token_id` (only if it belongs to `username`, when given); False if there is none."""
    if not 1 <= token_id <= MAX_TOKEN_ID:
        return False
    query = update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
    if username is not None:
        query = query.where(ApiToken.username == username)
    with store.session() as session, session.begin():
        return bool(session.execute(query.values(revoked_at=utcnow())).rowcount)  # type: ignore[attr-defined]
