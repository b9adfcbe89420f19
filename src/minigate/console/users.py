"""Console users, sign-in and sessions.

* **Passwords**: Argon2id (``argon2-cffi``; RFC 9106 parameters, 64 MiB, 3 passes), hashed and checked in a
  worker thread so the event loop never waits on them; hashes are re-made when the parameters change. A sign-in
  with an unknown e-mail still checks a dummy hash, so timing does not tell which addresses exist.
* **Second factor**: optional TOTP (RFC 6238, 30 s, 6 digits, ±1 step; ``pyotp``). The secret is sealed by the
  vault. A code is accepted once (the last accepted time step is stored). Enrolment shows the secret once and
  takes effect only when a code from it is confirmed.
* **Lock-out**: ``console_login_failures`` wrong passwords or codes in a row lock the account for
  ``console_lockout_minutes``; attempts during a lock-out are refused without checking the password. Every
  failure, lock-out and sign-in is an audit entry (actor ``console:<user id>`` or ``anonymous``).
* **Sessions**: a random 256-bit token in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` behind HTTPS);
  only its SHA-256 is stored. Sessions end after ``console_idle_minutes`` without a request and after
  ``console_session_hours`` in any case, on sign-out, when the user is disabled, or when the password changes.
  Each session has its own CSRF token, required on every state-changing request.
* **Roles**: viewer (reads) < operator (refunds, closes, queries, redeliveries, sandbox) < admin (settings,
  keys, credentials, users).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from minigate.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound, RateLimited
from minigate.logging import get_logger
from minigate.services import audit
from minigate.services.ids import new_id
from minigate.services.runtime import Runtime
from minigate.store.tables import ConsoleSession, ConsoleUser

__all__ = ["ROLES", "Operator", "SignIn", "allows", "change_password", "confirm_totp", "create_user",
           "disable_totp", "end_session", "finish_totp", "list_users", "load_session", "set_disabled",
           "set_role", "sign_in", "start_totp", "update_session", "user_view", "verify_totp_step"]

log = get_logger("minigate.console")

ROLES = ("viewer", "operator", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")
MIN_PASSWORD = 12
_TOTP_CONTEXT = "console-totp"
_ISSUER = "minigate"

#: RFC 9106 "second recommended option" (memory-constrained): Argon2id, t=3, m=64 MiB, p=4
_hasher = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def allows(role: str, needed: str) -> bool:
    return _RANK.get(role, -1) >= _RANK[needed]


@dataclass(frozen=True, slots=True)
class Operator:
    """The signed-in person, as the console's pages see them."""

    user_id: str
    email: str
    name: str
    role: str
    session_id: str
    csrf_token: str
    app_id: str | None
    mode: str
    lang: str
    totp_enabled: bool

    @property
    def actor(self) -> str:
        return f"console:{self.user_id}"

    def can(self, needed: str) -> bool:
        return allows(self.role, needed)


@dataclass(frozen=True, slots=True)
class SignIn:
    """The result of a password check: a session token for the cookie, and whether a TOTP code is still owed."""

    token: str
    needs_totp: bool


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"the password must have at least {MIN_PASSWORD} characters", code="password_too_short",
                             param="password")
    if len(password) > 256:
        raise InvalidRequest("the password is too long (256 characters at most)", code="password_too_long",
                             param="password")


async def _hash(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify(stored: str, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
    return await asyncio.to_thread(check)


def user_view(row: ConsoleUser) -> dict[str, Any]:
    return {"id": row.id, "email": row.email, "name": row.name, "role": row.role,
            "totp": row.totp_sealed is not None, "disabled": row.disabled_at is not None,
            "locked_until": row.locked_until, "created_at": row.created_at, "last_login_at": row.last_login_at}


# -- users -------------------------------------------------------------------------------------------------


async def create_user(rt: Runtime, *, email: str, name: str, role: str, password: str,
                      actor: str = "cli") -> dict[str, Any]:
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise InvalidRequest("not an e-mail address", code="parameter_invalid", param="email")
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", code="parameter_invalid", param="role")
    _check_password_rules(password)
    hashed = await _hash(password)
    async with rt.db.transaction() as session:
        if (await session.execute(select(ConsoleUser.id).where(ConsoleUser.email == email))).first():
            raise Conflict("a console user with this e-mail exists", code="user_exists", param="email")
        row = ConsoleUser(id=new_id("usr"), email=email, name=name.strip()[:120] or email, role=role,
                          password_hash=hashed, failed_logins=0, created_at=rt.now())
        session.add(row)
        await session.flush()
        await audit.record(session, rt, action="console.user_created", target=row.id, actor=actor,
                           details={"role": role})
        return user_view(row)


async def list_users(rt: Runtime) -> list[dict[str, Any]]:
    async with rt.db.read() as session:
        rows = (await session.execute(select(ConsoleUser).order_by(ConsoleUser.created_at))).scalars().all()
        return [user_view(r) for r in rows]


async def _user(session: Any, user_id: str) -> ConsoleUser:
    row: ConsoleUser | None = await session.get(ConsoleUser, user_id, with_for_update=True)
    if row is None:
        raise NotFound("no such console user", code="resource_missing")
    return row


async def _admins_left(session: Any, excluding: str) -> int:
    rows = (await session.execute(select(ConsoleUser.id).where(
        ConsoleUser.role == "admin", ConsoleUser.disabled_at.is_(None), ConsoleUser.id != excluding))).all()
    return len(rows)


async def set_role(rt: Runtime, user_id: str, role: str, *, actor: str) -> dict[str, Any]:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", code="parameter_invalid", param="role")
    async with rt.db.transaction() as session:
        row = await _user(session, user_id)
        if row.role == "admin" and role != "admin" and not await _admins_left(session, row.id):
            raise Conflict("the last admin cannot lose the admin role", code="last_admin")
        previous, row.role = row.role, role
        await _revoke_sessions(session, rt, row.id)
        await audit.record(session, rt, action="console.user_role_changed", target=row.id, actor=actor,
                           details={"from": previous, "to": role})
        return user_view(row)


async def set_disabled(rt: Runtime, user_id: str, disabled: bool, *, actor: str) -> dict[str, Any]:
    async with rt.db.transaction() as session:
        row = await _user(session, user_id)
        if disabled and row.role == "admin" and not await _admins_left(session, row.id):
            raise Conflict("the last admin cannot be disabled", code="last_admin")
        row.disabled_at = rt.now() if disabled else None
        if disabled:
            await _revoke_sessions(session, rt, row.id)
        else:
            row.failed_logins, row.locked_until = 0, None
        await audit.record(session, rt, action="console.user_disabled" if disabled else "console.user_enabled",
                           target=row.id, actor=actor)
        return user_view(row)


async def change_password(rt: Runtime, user_id: str, password: str, *, actor: str,
                          current: str | None = None) -> None:
    """Set a new password (the user's own change needs the current one); every session of the user ends."""
    _check_password_rules(password)
    async with rt.db.read() as session:
        row = await session.get(ConsoleUser, user_id)
        if row is None:
            raise NotFound("no such console user", code="resource_missing")
        stored = row.password_hash
    if current is not None and not await _verify(stored, current):
        raise AuthenticationFailed("the current password is wrong", code="invalid_credentials")
    hashed = await _hash(password)
    async with rt.db.transaction() as session:
        row = await _user(session, user_id)
        row.password_hash = hashed
        row.failed_logins, row.locked_until = 0, None
        await _revoke_sessions(session, rt, row.id)
        await audit.record(session, rt, action="console.password_changed", target=row.id, actor=actor)


async def _revoke_sessions(session: Any, rt: Runtime, user_id: str) -> None:
    await session.execute(update(ConsoleSession).where(ConsoleSession.user_id == user_id,
                                                       ConsoleSession.revoked_at.is_(None))
                          .values(revoked_at=rt.now()))


# -- sign-in -----------------------------------------------------------------------------------------------


async def _new_session(session: Any, rt: Runtime, user: ConsoleUser, *, ip: str, pending_totp: bool,
                       lang: str) -> str:
    s = rt.settings
    token = secrets.token_urlsafe(32)
    now = rt.now()
    session.add(ConsoleSession(id=_digest(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
                               pending_totp=pending_totp, mode="test" if s.mode == "test" else "live", lang=lang,
                               ip=ip[:64], created_at=now, last_seen_at=now,
                               expires_at=now + timedelta(minutes=s.console_idle_minutes if not pending_totp else 5),
                               absolute_expires_at=now + timedelta(hours=s.console_session_hours)))
    return token


async def _failure(rt: Runtime, user_id: str | None, *, ip: str, reason: str) -> None:
    """Count a failed password or code; the one that reaches the limit locks the account."""
    s = rt.settings
    async with rt.db.transaction() as session:
        locked = False
        if user_id is not None:
            row = await _user(session, user_id)
            row.failed_logins += 1
            if row.failed_logins >= s.console_login_failures:
                row.locked_until = rt.now() + timedelta(minutes=s.console_lockout_minutes)
                row.failed_logins = 0
                locked = True
        await audit.record(session, rt, action="console.login_failed", target=user_id, actor="anonymous",
                           details={"reason": reason, "client_ip": ip})
        if locked:
            await audit.record(session, rt, action="console.lockout", target=user_id, actor="anonymous",
                               details={"client_ip": ip, "minutes": s.console_lockout_minutes})
    if locked:
        log.warning("console account locked after repeated sign-in failures", user_id=user_id, client_ip=ip)


def _refuse_locked(rt: Runtime, row: ConsoleUser) -> None:
    if row.locked_until is not None and row.locked_until > rt.now():
        seconds = int((row.locked_until - rt.now()).total_seconds()) + 1
        raise RateLimited("too many failed sign-ins: this account is locked for a while",
                          code="account_locked", details={"retry_after": seconds})


async def sign_in(rt: Runtime, *, email: str, password: str, ip: str, lang: str = "en") -> SignIn:
    email = email.strip().lower()[:254]
    async with rt.db.read() as session:
        row = (await session.execute(select(ConsoleUser).where(ConsoleUser.email == email))).scalar_one_or_none()
    if row is None or row.disabled_at is not None:
        await _verify(_DUMMY_HASH, password)              # same work as a real check: no user enumeration by time
        await _failure(rt, None, ip=ip, reason="unknown_user" if row is None else "disabled")
        raise AuthenticationFailed("wrong e-mail or password", code="invalid_credentials")
    _refuse_locked(rt, row)
    if not await _verify(row.password_hash, password):
        await _failure(rt, row.id, ip=ip, reason="wrong_password")
        raise AuthenticationFailed("wrong e-mail or password", code="invalid_credentials")
    rehash = await _hash(password) if _hasher.check_needs_rehash(row.password_hash) else None
    async with rt.db.transaction() as session:
        user = await _user(session, row.id)
        _refuse_locked(rt, user)
        if rehash:
            user.password_hash = rehash
        needs_totp = user.totp_sealed is not None
        token = await _new_session(session, rt, user, ip=ip, pending_totp=needs_totp, lang=lang)
        if not needs_totp:
            user.failed_logins, user.last_login_at = 0, rt.now()
            await audit.record(session, rt, action="console.login", target=user.id, actor=f"console:{user.id}",
                               details={"client_ip": ip, "second_factor": False})
    return SignIn(token, needs_totp)


def verify_totp_step(secret: str, code: str, *, at: datetime, last_step: int | None) -> int | None:
    """The time step ``code`` belongs to (now ±1 step), if it is valid and newer than ``last_step``."""
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    step = int(at.timestamp()) // totp.interval
    for candidate in (step - 1, step, step + 1):
        if last_step is not None and candidate <= last_step:
            continue
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            return candidate
    return None


async def finish_totp(rt: Runtime, token: str, code: str, *, ip: str) -> None:
    """The second step of a sign-in: a valid, unused code turns the pending session into a full one."""
    async with rt.db.transaction() as session:
        row = await session.get(ConsoleSession, _digest(token), with_for_update=True)
        if row is None or not row.pending_totp or row.revoked_at is not None or row.expires_at <= rt.now():
            raise AuthenticationFailed("the sign-in has expired; start again", code="session_expired")
        user = await _user(session, row.user_id)
        _refuse_locked(rt, user)
        secret = rt.vault.open(user.totp_sealed or "", context=_TOTP_CONTEXT)
        step = verify_totp_step(secret, code, at=rt.now(), last_step=user.totp_last_step)
        if step is not None:
            user.totp_last_step, user.failed_logins, user.last_login_at = step, 0, rt.now()
            row.pending_totp = False
            row.expires_at = rt.now() + timedelta(minutes=rt.settings.console_idle_minutes)
            await audit.record(session, rt, action="console.login", target=user.id, actor=f"console:{user.id}",
                               details={"client_ip": ip, "second_factor": True})
            return
        user_id = user.id
    await _failure(rt, user_id, ip=ip, reason="wrong_totp")
    raise AuthenticationFailed("that code is not valid", code="invalid_totp")


async def start_totp(rt: Runtime, user_id: str) -> str:
    """A new TOTP secret for the user to enrol (an ``otpauth://`` URI); active only once confirmed."""
    secret = pyotp.random_base32()
    async with rt.db.transaction() as session:
        user = await _user(session, user_id)
        user.totp_pending_sealed = rt.vault.seal(secret, context=_TOTP_CONTEXT)
        return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=_ISSUER)


async def confirm_totp(rt: Runtime, user_id: str, code: str) -> None:
    async with rt.db.transaction() as session:
        user = await _user(session, user_id)
        if user.totp_pending_sealed is None:
            raise Conflict("no second factor is being set up", code="totp_not_started")
        secret = rt.vault.open(user.totp_pending_sealed, context=_TOTP_CONTEXT)
        step = verify_totp_step(secret, code, at=rt.now(), last_step=None)
        if step is None:
            raise InvalidRequest("that code is not valid for the new secret", code="invalid_totp", param="code")
        user.totp_sealed, user.totp_pending_sealed, user.totp_last_step = user.totp_pending_sealed, None, step
        await audit.record(session, rt, action="console.totp_enabled", target=user.id, actor=f"console:{user.id}")


async def disable_totp(rt: Runtime, user_id: str, *, actor: str) -> None:
    async with rt.db.transaction() as session:
        user = await _user(session, user_id)
        user.totp_sealed = user.totp_pending_sealed = None
        user.totp_last_step = None
        await audit.record(session, rt, action="console.totp_disabled", target=user.id, actor=actor)


# -- sessions ----------------------------------------------------------------------------------------------


async def load_session(rt: Runtime, token: str | None, *, allow_pending: bool = False) -> Operator | None:
    """The operator behind a cookie token, sliding the idle expiry; None when absent, expired or revoked."""
    if not token or len(token) > 100:
        return None
    now = rt.now()
    async with rt.db.read() as session:
        row = await session.get(ConsoleSession, _digest(token))
        if row is None or row.revoked_at is not None or row.expires_at <= now or row.absolute_expires_at <= now:
            return None
        if row.pending_totp and not allow_pending:
            return None
        user = await session.get(ConsoleUser, row.user_id)
        if user is None or user.disabled_at is not None:
            return None
        op = Operator(user_id=user.id, email=user.email, name=user.name, role=user.role, session_id=row.id,
                      csrf_token=row.csrf_token, app_id=row.app_id, mode=row.mode, lang=row.lang,
                      totp_enabled=user.totp_sealed is not None)
        slide = (now - row.last_seen_at).total_seconds() > 60
    if slide and not row.pending_totp:       # at most one write a minute per session
        async with rt.db.transaction() as session:
            await session.execute(update(ConsoleSession).where(ConsoleSession.id == row.id).values(
                last_seen_at=now,
                expires_at=min(now + timedelta(minutes=rt.settings.console_idle_minutes), row.absolute_expires_at)))
    return op


async def update_session(rt: Runtime, op: Operator, **values: Any) -> None:
    """Change what the session remembers: the app, the mode, the language."""
    allowed = {k: v for k, v in values.items() if k in ("app_id", "mode", "lang")}
    async with rt.db.transaction() as session:
        await session.execute(update(ConsoleSession).where(ConsoleSession.id == op.session_id).values(**allowed))


async def end_session(rt: Runtime, op: Operator) -> None:
    async with rt.db.transaction() as session:
        await session.execute(update(ConsoleSession).where(ConsoleSession.id == op.session_id)
                              .values(revoked_at=rt.now()))
        await audit.record(session, rt, action="console.logout", target=op.user_id, actor=op.actor)
