"""Accounts: users and their roles, API keys and their scopes, and authentication.

Only a key's hash is stored. A verified key is cached for a few seconds so that reads stay
cheap under load; revoking a key or deactivating a user clears this process's cache at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from triage.clock import iso
from triage.contexts.audit import AuditLog
from triage.contexts.core import ServiceCore
from triage.contexts.review import REVIEW_ROLES
from triage.errors import Conflict, Forbidden, InvalidInput, NotFound, TooManyAttempts, Unauthorized
from triage.store.tables import ApiKey, LoginAttempt, UiSession, User

SCOPES = ("ingest", "review", "admin")
ROLES = ("agent", "reviewer", "supervisor", "team_leader", "admin", "integration")
KEY_PREFIX = "tri_"
# A verified key is trusted this long without a database read; revoking a key or deactivating
# a user clears this process's cache at once, other server processes follow within this time.
AUTH_CACHE_S = 5.0
LANGUAGES = ("zh", "en")  # review desk languages (review_ui/messages.toml)
MIN_PASSWORD_CHARS = 10
_HASHER = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) parameters
# Verified against when the user does not exist, so an unknown name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("no user has this password")


class DeskSession(BaseModel):
    """A logged-in review desk session."""

    user: str
    role: str
    language: str | None
    expires_at: datetime


class UserView(BaseModel):
    id: int
    name: str
    role: str
    active: bool
    created_at: datetime


class ApiKeyView(BaseModel):
    id: int
    user: str
    prefix: str
    scopes: list[str]
    label: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class Principal(BaseModel):
    """Who is calling, with which scopes (admin implies every scope)."""

    user: str
    role: str
    scopes: list[str]
    key_id: int | None = None

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def require(self, *any_of: str) -> None:
        if not any(self.has(scope) for scope in any_of):
            raise Forbidden(
                f"API key of {self.user!r} has scopes {self.scopes}; this needs one of {list(any_of)}"
            )


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _key_view(key: ApiKey) -> ApiKeyView:
    return ApiKeyView(id=key.id, user=key.user.name, prefix=key.prefix, scopes=list(key.scopes), label=key.label,
                      created_at=key.created_at, last_used_at=key.last_used_at, revoked_at=key.revoked_at)


class Accounts:
    def __init__(self, core: ServiceCore, audit: AuditLog):
        self.core = core
        self.audit = audit
        self._auth_cache: dict[str, tuple[float, Principal]] = {}

    # ------------------------------------------------------------------ users

    def create_user(self, name: str, role: str = "agent", actor: str = "cli") -> UserView:
        name = (name or "").strip()
        if not name:
            raise InvalidInput("user name is empty", field="name")
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {list(ROLES)}, got {role!r}", field="role")
        try:
            with self.core.db.session(write=True) as session:
                user = User(name=name, role=role, active=True, created_at=self.core.now())
                session.add(user)
                session.flush()
                self.audit.write(session, actor, "user.created", "user", user.id, None, {"name": name, "role": role})
                return UserView.model_validate(user, from_attributes=True)
        except IntegrityError:
            raise Conflict(f"user {name!r} already exists") from None

    def list_users(self) -> list[UserView]:
        with self.core.db.session() as session:
            return [UserView.model_validate(u, from_attributes=True) for u in session.scalars(select(User).order_by(User.id))]

    def active_user_role(self, name: str) -> str | None:
        """The role of an active user; None for unknown or deactivated users."""
        with self.core.db.session() as session:
            return session.scalars(select(User.role).where(User.name == name, User.active)).first()

    def user_holds_scope(self, name: str, scope: str) -> bool:
        """Whether an active user holds an unrevoked key with ``scope`` (``admin`` implies all)."""
        with self.core.db.session() as session:
            held = session.scalars(
                select(ApiKey.scopes).join(User, ApiKey.user_id == User.id)
                .where(User.name == name, User.active, ApiKey.revoked_at.is_(None))
            ).all()
        return any(scope in scopes or "admin" in scopes for scopes in held)

    def set_user_active(self, name: str, active: bool, actor: str = "cli") -> UserView:
        with self.core.db.session(write=True) as session:
            user = session.scalars(select(User).where(User.name == name)).first()
            if user is None:
                raise NotFound(f"user {name!r} does not exist")
            if user.active != active:
                self.audit.write(session, actor, "user.activated" if active else "user.deactivated", "user", user.id,
                                 {"active": user.active}, {"active": active})
                user.active = active
            view = UserView.model_validate(user, from_attributes=True)
        self._auth_cache.clear()  # after the commit, so no request re-caches the old row
        return view

    # ------------------------------------------------------------------ passwords and desk sessions

    def set_password(self, name: str, password: str, actor: str = "cli") -> UserView:
        """Set the review desk password of ``name`` (argon2id hash); ends the user's open sessions."""
        if len(password or "") < MIN_PASSWORD_CHARS:
            raise InvalidInput(f"a password needs at least {MIN_PASSWORD_CHARS} characters", field="password")
        digest = _HASHER.hash(password)
        with self.core.db.session(write=True) as session:
            user = session.scalars(select(User).where(User.name == name)).first()
            if user is None:
                raise NotFound(f"user {name!r} does not exist; create it with `triage users add`")
            user.password_hash = digest
            session.execute(update(UiSession).where(UiSession.user_id == user.id, UiSession.ended_at.is_(None))
                            .values(ended_at=self.core.now()))
            self.audit.write(session, actor, "user.password_set", "user", user.id, None, {"name": name})
            return UserView.model_validate(user, from_attributes=True)

    def login_delay(self, name: str, ip: str) -> float:
        """Seconds the next log-in attempt for ``name`` or from ``ip`` must still wait (0: none).

        Failed attempts since the last success, within the window, count per user name and per
        address; after ``login_free_failures`` of them each attempt waits ``login_delay_s``,
        doubled per further failure up to ``login_delay_max_s``, counted from the last failure.
        """
        settings = self.core.settings
        now = self.core.now()
        since = now - timedelta(minutes=settings.login_failure_window_minutes)
        waits = [0.0]
        with self.core.db.session() as session:
            for column, value in ((LoginAttempt.user_name, name), (LoginAttempt.ip, ip)):
                last_ok = session.scalar(select(func.max(LoginAttempt.at)).where(column == value, LoginAttempt.ok))
                start = max(since, last_ok) if last_ok else since
                failures, last = session.execute(
                    select(func.count(), func.max(LoginAttempt.at))
                    .where(column == value, ~LoginAttempt.ok, LoginAttempt.at > start)
                ).one()
                if failures >= settings.login_free_failures and last is not None:
                    delay = min(settings.login_delay_max_s,
                                settings.login_delay_s * 2 ** (failures - settings.login_free_failures))
                    waits.append(delay - (now - last).total_seconds())
        return max(waits)

    def password_login(self, name: str, password: str, ip: str = "-") -> tuple[str, DeskSession]:
        """Check ``name``'s password and open a desk session: (cookie token, session).

        Refused (:class:`TooManyAttempts`) while the backoff runs, without looking at the
        password; every attempt is recorded, every failure audited. Only active users with a
        password and the role reviewer, supervisor or admin get in.
        """
        name = (name or "").strip()[:200]
        ip = (ip or "-")[:64]
        wait = self.login_delay(name, ip)
        if wait > 0:
            with self.core.db.session(write=True) as session:
                self.audit.write(session, f"login:{ip}", "user.login_throttled", "user", name, None,
                                 {"name": name, "ip": ip, "retry_after_s": round(wait, 1)})
            raise TooManyAttempts(f"too many failed log-ins; try again in {wait:.0f} s", retry_after=wait)
        with self.core.db.session() as session:
            user = session.scalars(select(User).where(User.name == name)).first()
            stored = user.password_hash if user is not None else None
            role, active, user_id = (user.role, user.active, user.id) if user is not None else (None, False, None)
        try:
            ok = _HASHER.verify(stored or _DUMMY_HASH, password or "") and stored is not None
        except (VerificationError, InvalidHashError):
            ok = False
        reason = None if ok else "wrong user name or password"
        if ok and not active:
            reason = "user is deactivated"
        elif ok and role not in REVIEW_ROLES:
            reason = f"role {role} may not review"
        now = self.core.now()
        with self.core.db.session(write=True) as session:
            session.add(LoginAttempt(user_name=name, ip=ip, at=now, ok=reason is None))
            # the backoff reads only the window; older attempts live on in the audit log
            keep = timedelta(minutes=max(self.core.settings.login_failure_window_minutes, 24 * 60))
            session.execute(LoginAttempt.__table__.delete().where(LoginAttempt.at < now - keep))
            if reason is not None:
                self.audit.write(session, f"login:{ip}", "user.login_failed", "user", user_id or name, None,
                                 {"name": name, "ip": ip}, reason=reason)
                failed = True
            else:
                failed = False
                if _HASHER.check_needs_rehash(stored):
                    session.execute(update(User).where(User.id == user_id).values(password_hash=_HASHER.hash(password)))
                token = secrets.token_urlsafe(32)
                expires = now + timedelta(minutes=self.core.settings.review_session_minutes)
                session.add(UiSession(token_hash=hash_key(token), user_id=user_id, created_at=now, expires_at=expires))
                self.audit.write(session, name, "user.login", "user", user_id, None, {"ip": ip})
        if failed:
            raise Unauthorized(reason)
        view = self.desk_session(token)
        assert view is not None
        return token, view

    def desk_session(self, token: str | None) -> DeskSession | None:
        """The open, unexpired session of an active user with a review role behind ``token``."""
        if not token:
            return None
        with self.core.db.session() as session:
            row = session.execute(
                select(User.name, User.role, User.language, UiSession.expires_at)
                .join(User, UiSession.user_id == User.id)
                .where(UiSession.token_hash == hash_key(token), UiSession.ended_at.is_(None), User.active)
            ).first()
        if row is None or row.expires_at <= self.core.now() or row.role not in REVIEW_ROLES:
            return None
        return DeskSession(user=row.name, role=row.role, language=row.language, expires_at=row.expires_at)

    def logout(self, token: str | None) -> None:
        """End the session behind ``token`` (nothing if there is none)."""
        if not token:
            return
        with self.core.db.session(write=True) as session:
            row = session.scalars(select(UiSession).where(UiSession.token_hash == hash_key(token))).first()
            if row is not None and row.ended_at is None:
                row.ended_at = self.core.now()
                self.audit.write(session, row.user.name, "user.logout", "user", row.user_id)

    def set_language(self, name: str, language: str | None) -> None:
        """Store the review desk language of ``name`` (None: follow the browser)."""
        if language is not None and language not in LANGUAGES:
            raise InvalidInput(f"language must be one of {list(LANGUAGES)}, got {language!r}", field="language")
        with self.core.db.session(write=True) as session:
            if not session.execute(update(User).where(User.name == name).values(language=language)).rowcount:
                raise NotFound(f"user {name!r} does not exist")

    # ------------------------------------------------------------------ API keys

    def create_api_key(self, user_name: str, scopes: Sequence[str], label: str | None = None,
                       actor: str = "cli") -> tuple[ApiKeyView, str]:
        """A new key for ``user_name``; the secret is returned once and only its hash is kept."""
        scopes = sorted(set(scopes))
        if not scopes:
            raise InvalidInput(f"give at least one scope of {list(SCOPES)}", field="scopes")
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise InvalidInput(f"unknown scopes {unknown}; expected {list(SCOPES)}", field="scopes")
        prefix = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        with self.core.db.session(write=True) as session:
            user = session.scalars(select(User).where(User.name == user_name)).first()
            if user is None:
                raise NotFound(f"user {user_name!r} does not exist; create it with `triage users add`")
            key = ApiKey(user=user, prefix=prefix, key_hash=hash_key(secret), scopes=scopes, label=label,
                         created_at=self.core.now())
            session.add(key)
            session.flush()
            self.audit.write(session, actor, "api_key.created", "api_key", key.id, None,
                             {"user": user.name, "prefix": prefix, "scopes": scopes, "label": label})
            return _key_view(key), secret

    def list_api_keys(self, user_name: str | None = None) -> list[ApiKeyView]:
        query = select(ApiKey).join(ApiKey.user).options(joinedload(ApiKey.user)).order_by(ApiKey.id)
        if user_name:
            query = query.where(User.name == user_name)
        with self.core.db.session() as session:
            return [_key_view(k) for k in session.scalars(query)]

    def revoke_api_key(self, key_id_or_prefix: str | int, actor: str = "cli") -> ApiKeyView:
        with self.core.db.session(write=True) as session:
            ref = str(key_id_or_prefix)
            query = select(ApiKey).options(joinedload(ApiKey.user))
            query = query.where(ApiKey.id == int(ref)) if ref.isdigit() else query.where(ApiKey.prefix == ref)
            key = session.scalars(query).first()
            if key is None:
                raise NotFound(f"API key {ref!r} does not exist")
            if key.revoked_at is None:
                key.revoked_at = self.core.now()
                self.audit.write(session, actor, "api_key.revoked", "api_key", key.id, {"revoked_at": None},
                                 {"revoked_at": iso(key.revoked_at)})
            view = _key_view(key)
        self._auth_cache.clear()  # after the commit, so no request re-caches the old row
        return view

    # ------------------------------------------------------------------ authentication

    def authenticate_cached(self, secret: str | None) -> Principal | None:
        """The principal if this key was verified moments ago (no I/O), else None."""
        if not secret:
            return None
        cached = self._auth_cache.get(hash_key(secret))
        return cached[1] if cached is not None and cached[0] > time.monotonic() else None

    def authenticate(self, secret: str | None) -> Principal:
        """The principal behind an API key, or Unauthorized with a reason the caller can act on."""
        if not secret:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        digest = hash_key(secret)
        cached = self._auth_cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        parts = secret.split("_")
        if not secret.startswith(KEY_PREFIX) or len(parts) < 3:
            raise Unauthorized("malformed API key")
        prefix = parts[1]
        now = self.core.now()
        db = self.core.db
        with db.session() as session:
            key = session.scalars(select(ApiKey).options(joinedload(ApiKey.user)).where(ApiKey.prefix == prefix)).first()
            if key is None or not hmac.compare_digest(key.key_hash, digest):
                raise Unauthorized("unknown API key")
            if key.revoked_at is not None:
                raise Unauthorized("API key was revoked")
            if not key.user.active:
                raise Unauthorized(f"user {key.user.name!r} is deactivated")
            principal = Principal(user=key.user.name, role=key.user.role, scopes=list(key.scopes), key_id=key.id)
            stale = key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1)
        if stale:  # at most one write a minute per key: reads stay cheap under load
            try:
                with db.session(write=True) as session:
                    session.execute(ApiKey.__table__.update().where(ApiKey.id == principal.key_id).values(last_used_at=now))
            except Exception:
                pass  # best effort; never fail a request over a usage timestamp
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[digest] = (time.monotonic() + AUTH_CACHE_S, principal)
        return principal
