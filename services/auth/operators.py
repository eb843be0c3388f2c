"""What operators do to accounts, on the admin service's behalf: list and
inspect users, change their status, anonymise them, and keep the operator
accounts. Functions take a database session and never commit; the servicer
owns the transaction.

A status other than `active` shuts the user out at once: their sessions are
revoked in the same transaction as the change (every process stops their
access tokens within one revocation poll), and sign-in, Google sign-in and
refresh check the status (`AuthService._require_active`).

Changes arrive as admin tasks keyed by the task id. `_once` claims the key
in the change's own transaction and stores the reply's facts, so a retried
task gets the first answer and changes nothing again, even after an
operator has since changed the same account another way.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from libs.errors import (
    Conflict,
    FailedPrecondition,
    FieldViolation,
    IdempotencyKeyReused,
    InvalidArgument,
    NotFound,
)
from libs.logs import get_logger
from libs.revocation import RevocationList
from services.auth import repository
from services.auth.models import Admin, User
from services.auth.passwords import PasswordHashing
from services.auth.repository import UserFilter

log = get_logger(__name__)

SETTABLE_STATUSES = ("active", "suspended", "banned")
LISTED_STATUSES = (*SETTABLE_STATUSES, "deleted")
AUTH_PROVIDERS = ("email", "google")
ADMIN_ROLES = ("superadmin", "support", "viewer")
SUPERADMIN = "superadmin"
USERNAME_PATTERN = re.compile(r"[a-z0-9._-]{3,64}")
MIN_ADMIN_PASSWORD_LENGTH = 12
MAX_ADMIN_PASSWORD_LENGTH = 256
MAX_REASON_LENGTH = 500
MAX_KEY_LENGTH = 255
MAX_QUERY_LENGTH = 200
DEFAULT_PAGE = 50
MAX_PAGE = 1000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
NO_SUCH_USER = "No such user."
NO_SUCH_OPERATOR = "No such operator account."


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    next_page_token: str


@dataclass(frozen=True)
class UserDetail:
    user: User
    active_sessions: int
    last_seen_at: datetime | None


@dataclass(frozen=True)
class StatusChange:
    user: User
    previous_status: str
    revoked_sessions: int


@dataclass(frozen=True)
class Anonymised:
    anonymised: bool
    revoked_sessions: int


@dataclass(frozen=True)
class AdminSnapshot:
    """An operator account as it was, kept in an idempotency record."""

    id: str
    username: str
    role: str
    disabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, admin: Admin) -> AdminSnapshot:
        return cls(
            str(admin.id),
            admin.username,
            admin.role,
            admin.disabled,
            admin.created_at,
            admin.updated_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AdminSnapshot:
        return cls(
            **{
                **data,
                "created_at": datetime.fromisoformat(data["created_at"]),
                "updated_at": datetime.fromisoformat(data["updated_at"]),
            }
        )


@dataclass(frozen=True)
class AdminChange:
    admin: Admin
    previous: AdminSnapshot
    revoked_sessions: int


def _user_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(NO_SUCH_USER) from None


def _admin_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(NO_SUCH_OPERATOR) from None


def _check_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidArgument.for_field(
            "idempotency_key",
            f"idempotency_key must be 1 to {MAX_KEY_LENGTH} characters long.",
        )


def _check_reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) > MAX_REASON_LENGTH or any(
        unicodedata.category(char) == "Cc" and char not in "\n\t" for char in reason
    ):
        raise InvalidArgument.for_field(
            "reason",
            f"A reason has at most {MAX_REASON_LENGTH} characters and no control "
            "characters.",
        )
    return reason


def _check_filter(found: UserFilter) -> None:
    violations = []
    if found.status and found.status not in LISTED_STATUSES:
        violations.append(
            FieldViolation(
                "status", f"status must be one of {_listed(LISTED_STATUSES)}."
            )
        )
    if found.auth_provider and found.auth_provider not in AUTH_PROVIDERS:
        violations.append(
            FieldViolation("auth_provider", "auth_provider must be email or google.")
        )
    if len(found.query) > MAX_QUERY_LENGTH:
        violations.append(
            FieldViolation(
                "query", f"A search has at most {MAX_QUERY_LENGTH} characters."
            )
        )
    if "\x00" in found.query:
        violations.append(
            FieldViolation("query", "A search cannot hold a NUL character.")
        )
    if (
        found.created_after is not None
        and found.created_before is not None
        and found.created_after >= found.created_before
    ):
        violations.append(
            FieldViolation(
                "created_before", "created_before must be after created_after."
            )
        )
    if violations:
        raise InvalidArgument(violations[0].message, violations=tuple(violations))


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(values[:-1]) + " or " + values[-1]


def _page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument.for_field("page_size", "page_size may not be negative.")
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def _page_token(user: User) -> str:
    return f"{(user.created_at - EPOCH) // MICROSECOND}.{user.id}"


def _page_position(token: str) -> tuple[datetime, uuid.UUID] | None:
    if not token:
        return None
    micros, _, raw_id = token.partition(".")
    try:
        parsed = uuid.UUID(raw_id)
    except ValueError:
        parsed = None
    # ASCII digits only ("²".isdigit() holds) and a moment before the
    # year 5000, so that neither int() nor the datetime sum can raise.
    if not (micros.isascii() and micros.isdigit()) or len(micros) > 17:
        parsed = None
    if parsed is None:
        raise InvalidArgument.for_field(
            "page_token", "page_token is not one this service issued."
        )
    return EPOCH + int(micros) * MICROSECOND, parsed


def _fingerprint(kind: str, request: dict[str, Any]) -> bytes:
    canonical = json.dumps(
        {"kind": kind, **request}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).digest()


async def _once(
    db: AsyncSession,
    key: str,
    kind: str,
    request: dict[str, Any],
    run: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """Run an operator's change once per key and return its stored facts.
    A domain error inside `run` rolls the claim back with the change."""
    fingerprint = _fingerprint(kind, request)
    if not await repository.claim_operator_request(db, key, kind, fingerprint):
        stored = await repository.operator_request(db, key)
        if stored.fingerprint != fingerprint:
            raise IdempotencyKeyReused()
        return stored.result
    result = await run()
    await repository.record_operator_result(db, key, result)
    return result


class AccountOperations:
    def __init__(self, passwords: PasswordHashing, revocations: RevocationList) -> None:
        self._passwords = passwords
        self._revocations = revocations

    # Users

    async def list_users(
        self, db: AsyncSession, found: UserFilter, page_size: int, page_token: str
    ) -> UserPage:
        _check_filter(found)
        size = _page_size(page_size)
        after = _page_position(page_token)
        found = replace(found, query=found.query.strip())
        rows = await repository.users_page(db, found, after, size + 1)
        more = len(rows) > size
        return UserPage(rows[:size], _page_token(rows[size - 1]) if more else "")

    async def user_detail(self, db: AsyncSession, user_id: str) -> UserDetail:
        user = await repository.user_by_id(db, _user_id(user_id))
        if user is None:
            raise NotFound(NO_SUCH_USER)
        active, last_seen = await repository.session_summary(db, user.id)
        return UserDetail(user, active, last_seen)

    async def set_user_status(
        self, db: AsyncSession, user_id: str, status: str, reason: str, key: str
    ) -> StatusChange:
        parsed = _user_id(user_id)
        if status not in SETTABLE_STATUSES:
            raise InvalidArgument.for_field(
                "status", f"status must be {_listed(SETTABLE_STATUSES)}."
            )
        reason = _check_reason(reason)
        _check_key(key)

        async def run() -> dict[str, Any]:
            return await self._change_status(db, parsed, status, reason)

        request = {"user_id": str(parsed), "status": status, "reason": reason}
        facts = await _once(db, key, "user_status", request, run)
        user = await repository.user_by_id(db, parsed)
        assert user is not None
        return StatusChange(user, facts["previous_status"], facts["revoked_sessions"])

    async def _change_status(
        self, db: AsyncSession, user_id: uuid.UUID, status: str, reason: str
    ) -> dict[str, Any]:
        user = await repository.lock_user(db, user_id)
        if user is None:
            raise NotFound(NO_SUCH_USER)
        if user.status == "deleted":
            raise FailedPrecondition("This account was deleted; its status is final.")
        previous = user.status
        await repository.set_user_status(db, user_id, status, reason or None)
        revoked: list[uuid.UUID] = []
        if status != "active":
            revoked = await repository.revoke_sessions(
                db, f"account_{status}", user_id=user_id
            )
            self._remember_revoked(revoked)
        log.info(
            "user.status_changed",
            user_id=str(user_id),
            status=status,
            previous_status=previous,
            revoked_sessions=len(revoked),
        )
        return {"previous_status": previous, "revoked_sessions": len(revoked)}

    async def delete_user_data(self, db: AsyncSession, user_id: str) -> Anonymised:
        """Anonymise the account; a second call finds it anonymised already."""
        parsed = _user_id(user_id)
        user = await repository.lock_user(db, parsed)
        if user is None:
            raise NotFound(NO_SUCH_USER)
        anonymised = user.status != "deleted"
        if anonymised:
            email = user.email
            await repository.anonymise_user(db, parsed)
            await repository.forget_rate_buckets(db, email)
        revoked = await repository.revoke_sessions(
            db, "account_deleted", user_id=parsed
        )
        self._remember_revoked(revoked)
        log.info(
            "user.anonymised",
            user_id=user_id,
            first_time=anonymised,
            revoked_sessions=len(revoked),
        )
        return Anonymised(anonymised, len(revoked))

    # Operator accounts

    async def list_admins(self, db: AsyncSession) -> list[Admin]:
        return await repository.admins(db)

    async def create_admin(
        self, db: AsyncSession, username: str, password: str, role: str, key: str
    ) -> Admin:
        username = username.strip().lower()
        _check_new_admin(username, password, role)
        _check_key(key)

        async def run() -> dict[str, Any]:
            password_hash = await self._passwords.hash(password)
            admin = await repository.create_admin(db, username, password_hash, role)
            if admin is None:
                raise Conflict("An operator with this username already exists.")
            log.info("admin.created", admin_id=str(admin.id), role=role)
            return {"admin_id": str(admin.id)}

        # The password stays out of the fingerprint: it would be a fast,
        # crackable hash of it.
        request = {"username": username, "role": role}
        facts = await _once(db, key, "admin_create", request, run)
        admin = await repository.admin_by_id(db, uuid.UUID(facts["admin_id"]))
        assert admin is not None
        return admin

    async def update_admin(
        self,
        db: AsyncSession,
        admin_id: str,
        role: str | None,
        disabled: bool | None,
        key: str,
    ) -> AdminChange:
        parsed = _admin_id(admin_id)
        if role is None and disabled is None:
            raise InvalidArgument(
                "Give a new role, or whether the account is disabled."
            )
        if role is not None and role not in ADMIN_ROLES:
            raise InvalidArgument.for_field(
                "role", f"role must be {_listed(ADMIN_ROLES)}."
            )
        _check_key(key)

        async def run() -> dict[str, Any]:
            return await self._change_admin(db, parsed, role, disabled)

        request = {"admin_id": str(parsed), "role": role, "disabled": disabled}
        facts = await _once(db, key, "admin_update", request, run)
        admin = await repository.admin_by_id(db, parsed)
        assert admin is not None
        return AdminChange(
            admin, AdminSnapshot.from_json(facts["previous"]), facts["revoked_sessions"]
        )

    async def _change_admin(
        self,
        db: AsyncSession,
        admin_id: uuid.UUID,
        role: str | None,
        disabled: bool | None,
    ) -> dict[str, Any]:
        # Superadmins first, then the account: every change takes the locks
        # in this order, so two of them cannot wait on each other.
        superadmins = await repository.lock_enabled_superadmins(db)
        admin = await repository.admin_by_id(db, admin_id, lock=True)
        if admin is None:
            raise NotFound(NO_SUCH_OPERATOR)
        previous = AdminSnapshot.of(admin)
        values: dict[str, object] = {}
        if role is not None and role != admin.role:
            values["role"] = role
        if disabled is not None and disabled != admin.disabled:
            values["disabled"] = disabled
        stays_superadmin = values.get(
            "role", admin.role
        ) == SUPERADMIN and not values.get("disabled", admin.disabled)
        if superadmins == [admin.id] and not stays_superadmin:
            raise FailedPrecondition(
                "This is the last enabled superadmin. Make another one first."
            )
        revoked: list[uuid.UUID] = []
        if values:
            await repository.update_admin(db, admin_id, values)
            # The role rides in the access token: end the sessions so that the
            # next sign-in carries the new one (or, disabled, none).
            revoked = await repository.revoke_sessions(
                db, "operator_changed", admin_id=admin_id
            )
            self._remember_revoked(revoked)
            log.info("admin.changed", admin_id=str(admin_id), fields=sorted(values))
        return {"previous": previous.to_json(), "revoked_sessions": len(revoked)}

    async def change_admin_password(
        self,
        db: AsyncSession,
        admin_id: str,
        session_id: str | None,
        current_password: str,
        new_password: str,
    ) -> int:
        """Set the caller's own password; returns their other sessions ended."""
        admin = await repository.admin_by_id(db, _admin_id(admin_id), lock=True)
        if admin is None or admin.disabled:
            raise NotFound(NO_SUCH_OPERATOR)
        verification = await self._passwords.verify(
            admin.password_hash, current_password
        )
        if not verification.ok:
            raise InvalidArgument.for_field(
                "current_password", "The current password is not correct."
            )
        _check_admin_password(new_password, "new_password")
        if new_password == current_password:
            raise InvalidArgument.for_field(
                "new_password", "The new password must differ from the current one."
            )
        await repository.set_admin_password_hash(
            db, admin.id, await self._passwords.hash(new_password)
        )
        keep = uuid.UUID(session_id) if session_id else None
        revoked = await repository.revoke_sessions(
            db, "password_changed", admin_id=admin.id, keep_session_id=keep
        )
        self._remember_revoked(revoked)
        log.info(
            "admin.password_changed", admin_id=admin_id, revoked_sessions=len(revoked)
        )
        return len(revoked)

    def _remember_revoked(self, session_ids: list[uuid.UUID]) -> None:
        # This process learns at once; the others through the feed.
        for session_id in session_ids:
            self._revocations.add(str(session_id))


def _check_new_admin(username: str, password: str, role: str) -> None:
    violations = []
    if not USERNAME_PATTERN.fullmatch(username):
        violations.append(
            FieldViolation(
                "username",
                "A username has 3 to 64 characters: letters, digits, '.', '_' or '-'.",
            )
        )
    if role not in ADMIN_ROLES:
        violations.append(
            FieldViolation("role", f"role must be {_listed(ADMIN_ROLES)}.")
        )
    try:
        _check_admin_password(password, "password")
    except InvalidArgument as error:
        violations.extend(error.violations)
    if violations:
        raise InvalidArgument(violations[0].message, violations=tuple(violations))


def _check_admin_password(password: str, field: str) -> None:
    if not MIN_ADMIN_PASSWORD_LENGTH <= len(password) <= MAX_ADMIN_PASSWORD_LENGTH:
        raise InvalidArgument.for_field(
            field,
            f"An operator's password has {MIN_ADMIN_PASSWORD_LENGTH} to "
            f"{MAX_ADMIN_PASSWORD_LENGTH} characters.",
        )
