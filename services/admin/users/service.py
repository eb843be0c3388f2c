"""Business rules of the users area: who may do what to users and operator
accounts, how each change reaches the service that owns the data, and what
the audit trail says about it.

Reads go straight to the owning services. A change to their data is an
admin task (services/admin/tasks.py): the task and a pending audit entry are
written in one transaction, the task runs at once, and if the owning service
cannot be reached the background loop retries it. The task id is the owning
service's idempotency key, so a retried task never changes anything twice.

Operator-account changes that carry a password (creating an account,
changing one's own password) are not queued, because the password would
rest in the task table: they are made at once, between a pending audit
entry and its settlement.

Deleting a user is a saga of one task per service that holds their data.
The auth step, which makes the account anonymous and unusable, runs only
when every other step is done, and settles the audit entry with what each
step did. Every step is idempotent, so asking again is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from omnihub.auth.v1 import auth_pb2
from omnihub.billing.v1 import billing_pb2
from omnihub.chat.v1 import chat_pb2
from omnihub.generation.v1 import generation_pb2
from omnihub.workspace.v1 import workspace_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from libs.logs import get_logger
from services.admin import audit
from services.admin.audit import Actor
from services.admin.models import UserNote
from services.admin.roles import ROLES, SUPERADMIN, SUPPORT_OR_ABOVE, require
from services.admin.tasks import AdminTasks, Handler, TaskFailed
from services.admin.users import repository
from services.admin.users.export import HEADER, csv_lines, user_row
from services.admin.users.repository import StepState
from services.admin.users.upstream import Platform, user_account

log = get_logger(__name__)

ReplyT = TypeVar("ReplyT")

SETTABLE_STATUSES = ("active", "suspended", "banned")
MAX_REASON_LENGTH = 500
MAX_NOTE_LENGTH = 5000
# 10^15 micro-credits is a billion credits, billing's own ceiling.
MAX_ADJUSTMENT_MICROS = 10**15
DEFAULT_USER_PAGE = 50
MAX_USER_PAGE = 100
DEFAULT_NOTE_PAGE = 50
MAX_NOTE_PAGE = 100
NOTES_IN_DETAIL = 10
RECENT_GENERATIONS = 10
EXPORT_PAGE = 500
# A service deleting a user's data may have much to go through.
DELETION_STEP_SECONDS = 60.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

SET_STATUS = "users.set_status"
ADJUST_CREDITS = "users.adjust_credits"
UPDATE_ADMIN = "users.update_admin"
# The deletion saga: these in any order, then auth.
DELETION_STEPS = (
    "users.delete.generation",
    "users.delete.chat",
    "users.delete.workspace",
    "users.delete.billing",
)
DELETE_AUTH = "users.delete.auth"


@dataclass(frozen=True)
class ListedUser:
    account: auth_pb2.UserAccount
    balance: int
    held: int


@dataclass(frozen=True)
class UserPage:
    users: list[ListedUser]
    next_page_token: str


@dataclass(frozen=True)
class UserDetail:
    user: ListedUser
    auth: auth_pb2.GetUserResponse
    generations: generation_pb2.GetUserGenerationSummaryResponse
    notes: list[UserNote]


@dataclass(frozen=True)
class NotePage:
    notes: list[UserNote]
    next_page_token: str


@dataclass(frozen=True)
class Activity:
    entries: list[billing_pb2.LedgerEntry]
    next_page_token: str
    recent: list[generation_pb2.Generation]


@dataclass(frozen=True)
class Queued:
    """A change made through an admin task: applied already (with the
    owning service's answer), or still pending and retried by itself."""

    audit_id: int
    applied: bool
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class Deletion:
    audit_id: int
    completed: bool
    steps: list[StepState]


def step_service(kind: str) -> str:
    return kind.rsplit(".", 1)[-1]


def _facts(reply: Message) -> dict[str, Any]:
    return MessageToDict(
        reply,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def _check_text(field: str, value: str, limit: int, *, required: bool) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidArgument.for_field(field, f"{field} is required.")
    if len(value) > limit:
        raise InvalidArgument.for_field(
            field, f"{field} must be at most {limit} characters long."
        )
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in value):
        raise InvalidArgument.for_field(
            field, f"{field} must not contain control characters."
        )
    return value


def _page_size(requested: int, default: int, maximum: int) -> int:
    if requested < 0:
        raise InvalidArgument.for_field("page_size", "page_size may not be negative.")
    return min(requested or default, maximum)


def _note_token(note: UserNote) -> str:
    return f"{(note.created_at - EPOCH) // MICROSECOND}.{note.id}"


def _note_position(token: str) -> tuple[datetime, uuid.UUID] | None:
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


def _parse_user_id(user_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(user_id)
    except ValueError:
        raise NotFound("No such user.") from None


class UsersService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tasks: AdminTasks,
        platform: Platform,
    ) -> None:
        self._sessions = sessions
        self._tasks = tasks
        self._platform = platform
        handlers: dict[str, Handler] = {
            SET_STATUS: self._set_status,
            ADJUST_CREDITS: self._adjust_credits,
            UPDATE_ADMIN: self._update_admin,
            "users.delete.generation": self._delete_generation_data,
            "users.delete.chat": self._delete_chat_data,
            "users.delete.workspace": self._delete_workspace_data,
            "users.delete.billing": self._delete_billing_data,
            DELETE_AUTH: self._delete_auth_data,
        }
        for kind, handler in handlers.items():
            tasks.register(kind, handler)

    # Reading

    async def list_users(self, query: auth_pb2.ListUsersRequest) -> UserPage:
        query.page_size = _page_size(query.page_size, DEFAULT_USER_PAGE, MAX_USER_PAGE)
        return await self._users_page(query)

    async def _users_page(self, query: auth_pb2.ListUsersRequest) -> UserPage:
        reply = await self._platform.call(self._platform.auth.ListUsers, query)
        balances = await self._platform.balances([u.id for u in reply.users])
        users = [ListedUser(u, *balances.get(u.id, (0, 0))) for u in reply.users]
        return UserPage(users, reply.next_page_token)

    async def user_detail(self, user_id: str) -> UserDetail:
        account = await self._account(user_id)
        balances, generations, notes = await asyncio.gather(
            self._platform.balances([account.user.id]),
            self._generation_summary(account.user.id),
            self.notes(account.user.id, NOTES_IN_DETAIL, ""),
        )
        listed = ListedUser(account.user, *balances.get(account.user.id, (0, 0)))
        return UserDetail(listed, account, generations, notes.notes)

    async def notes(self, user_id: str, page_size: int, page_token: str) -> NotePage:
        parsed = _parse_user_id(user_id)
        size = _page_size(page_size, DEFAULT_NOTE_PAGE, MAX_NOTE_PAGE)
        after = _note_position(page_token)
        async with self._sessions() as db:
            rows = await repository.notes_page(db, parsed, after, size + 1)
        more = len(rows) > size
        return NotePage(rows[:size], _note_token(rows[size - 1]) if more else "")

    async def activity(self, user_id: str, page_size: int, page_token: str) -> Activity:
        account = await self._account(user_id)
        reply = await self._platform.call(
            self._platform.billing.ListTransactions,
            billing_pb2.ListTransactionsRequest(
                account=user_account(account.user.id),
                page_size=page_size,
                page_token=page_token,
            ),
        )
        recent: list[generation_pb2.Generation] = []
        if not page_token:
            recent = list((await self._generation_summary(account.user.id)).recent)
        return Activity(list(reply.entries), reply.next_page_token, recent)

    async def export_csv(
        self, query: auth_pb2.ListUsersRequest
    ) -> AsyncIterator[bytes]:
        """The header with the first page, then one chunk per page, so that a
        refused filter fails before anything is sent."""
        query.page_size = EXPORT_PAGE
        query.page_token = ""
        header = csv_lines([HEADER])
        while True:
            page = await self._users_page(query)
            yield header + csv_lines(_csv_row(user) for user in page.users)
            if not page.next_page_token:
                return
            header = b""
            query.page_token = page.next_page_token

    async def _account(self, user_id: str) -> auth_pb2.GetUserResponse:
        _parse_user_id(user_id)
        return await self._platform.call(
            self._platform.auth.GetUser, auth_pb2.GetUserRequest(user_id=user_id)
        )

    async def _generation_summary(
        self, user_id: str
    ) -> generation_pb2.GetUserGenerationSummaryResponse:
        return await self._platform.call(
            self._platform.generation.GetUserGenerationSummary,
            generation_pb2.GetUserGenerationSummaryRequest(
                user_id=user_id, recent_limit=RECENT_GENERATIONS
            ),
        )

    # Changing users

    async def change_status(
        self, actor: Actor, user_id: str, status: str, reason: str
    ) -> Queued:
        require(*SUPPORT_OR_ABOVE)
        if status not in SETTABLE_STATUSES:
            raise InvalidArgument.for_field(
                "status", "status must be active, suspended or banned."
            )
        reason = _check_text("reason", reason, MAX_REASON_LENGTH, required=False)
        account = (await self._account(user_id)).user
        return await self._queue(
            actor,
            SET_STATUS,
            {"user_id": account.id, "status": status, "reason": reason},
            action="user_status_changed",
            target=("user", account.id),
            before={"status": account.status, "reason": account.status_reason},
            after={"status": status, "reason": reason},
        )

    async def adjust_credits(
        self, actor: Actor, user_id: str, delta: int, reason: str
    ) -> Queued:
        require(*SUPPORT_OR_ABOVE)
        if delta == 0 or abs(delta) > MAX_ADJUSTMENT_MICROS:
            raise InvalidArgument.for_field(
                "delta_micros",
                "The change must be non-zero and at most a billion credits either way.",
            )
        reason = _check_text("reason", reason, MAX_REASON_LENGTH, required=True)
        account = (await self._account(user_id)).user
        if account.status == "deleted":
            raise FailedPrecondition("This account was deleted.")
        balance, _ = (await self._platform.balances([account.id]))[account.id]
        return await self._queue(
            actor,
            ADJUST_CREDITS,
            {
                "user_id": account.id,
                "delta_micros": delta,
                "reason": reason,
                "actor": f"admin:{actor.id}",
            },
            action="credits_adjusted",
            target=("user", account.id),
            before={"balance_micros": balance},
            after={"delta_micros": delta, "reason": reason},
        )

    async def add_note(self, actor: Actor, user_id: str, body: str) -> UserNote:
        require(*SUPPORT_OR_ABOVE)
        body = _check_text("body", body, MAX_NOTE_LENGTH, required=True)
        account = (await self._account(user_id)).user
        async with self._sessions.begin() as db:
            note = await repository.insert_note(
                db, uuid.UUID(account.id), actor.id, actor.name, body
            )
            await audit.record(
                db,
                actor,
                "user_note_added",
                "user",
                account.id,
                after={"note_id": str(note.id), "body": body},
            )
        return note

    async def delete_user(self, actor: Actor, user_id: str) -> Deletion:
        require(SUPERADMIN)
        account = (await self._account(user_id)).user
        async with self._sessions.begin() as db:
            # The trail keeps no e-mail or name of someone being erased.
            audit_id = await audit.record(
                db,
                actor,
                "user_deleted",
                "user",
                account.id,
                before={
                    "status": account.status,
                    "auth_provider": account.auth_provider,
                },
                pending=True,
            )
            payload = {"user_id": account.id, "deletion": audit_id}
            steps = [
                await self._tasks.enqueue(db, kind, payload, None)
                for kind in DELETION_STEPS
            ]
            last = await self._tasks.enqueue(db, DELETE_AUTH, payload, audit_id)
        await asyncio.gather(*(self._attempt(task_id) for task_id in steps))
        await self._attempt(last)
        async with self._sessions() as db:
            states = await repository.deletion_steps(db, audit_id)
        completed = all(step.state == "done" for step in states)
        log.info("user.deletion_run", user_id=account.id, completed=completed)
        return Deletion(audit_id, completed, states)

    async def _queue(
        self,
        actor: Actor,
        kind: str,
        payload: dict[str, Any],
        *,
        action: str,
        target: tuple[str, str],
        before: Any,
        after: Any,
    ) -> Queued:
        async with self._sessions.begin() as db:
            audit_id = await audit.record(
                db, actor, action, *target, before=before, after=after, pending=True
            )
            task_id = await self._tasks.enqueue(db, kind, payload, audit_id)
        try:
            result = await self._tasks.run(task_id)
        except TaskFailed as failure:
            raise failure.error from None
        except (Unavailable, DeadlineExceeded):
            log.warning("admin_task.left_pending", kind=kind, task_id=str(task_id))
            return Queued(audit_id, applied=False)
        return Queued(audit_id, applied=True, result=result)

    async def _attempt(self, task_id: uuid.UUID) -> None:
        """Run a task now; how it went is read from its row afterwards."""
        with contextlib.suppress(TaskFailed, Unavailable, DeadlineExceeded):
            await self._tasks.run(task_id)

    # Operator accounts

    async def list_admins(self) -> list[auth_pb2.Admin]:
        reply = await self._platform.call(
            self._platform.auth.ListAdmins, auth_pb2.ListAdminsRequest()
        )
        return list(reply.admins)

    async def create_admin(
        self, actor: Actor, username: str, password: str, role: str
    ) -> auth_pb2.Admin:
        require(SUPERADMIN)
        if role not in ROLES:
            raise InvalidArgument.for_field(
                "role", "role must be superadmin, support or viewer."
            )
        username = username.strip().lower()
        audit_id = await self._record_pending(
            actor,
            "admin_created",
            ("admin", username),
            {"username": username, "role": role},
        )
        request = auth_pb2.CreateAdminRequest(
            username=username,
            password=password,
            role=role,
            idempotency_key=f"admin-audit:{audit_id}",
        )
        reply = await self._settled(
            audit_id, self._platform.call(self._platform.auth.CreateAdmin, request)
        )
        await self._settle(audit_id, after=_operator_facts(reply.admin))
        return reply.admin

    async def update_admin(
        self, actor: Actor, admin_id: str, role: str | None, disabled: bool | None
    ) -> tuple[auth_pb2.Admin, Queued]:
        require(SUPERADMIN)
        if role is None and disabled is None:
            raise InvalidArgument(
                "Give a new role, or whether the account is disabled."
            )
        if role is not None and role not in ROLES:
            raise InvalidArgument.for_field(
                "role", "role must be superadmin, support or viewer."
            )
        current = await self._operator(admin_id)
        change: dict[str, Any] = {"admin_id": current.id}
        if role is not None:
            change["role"] = role
        if disabled is not None:
            change["disabled"] = disabled
        queued = await self._queue(
            actor,
            UPDATE_ADMIN,
            change,
            action="admin_updated",
            target=("admin", current.id),
            before=_operator_facts(current),
            after={k: v for k, v in change.items() if k != "admin_id"},
        )
        return (await self._operator(admin_id) if queued.applied else current), queued

    async def change_own_password(
        self, actor: Actor, authorization: str, current: str, new: str
    ) -> int:
        audit_id = await self._record_pending(
            actor, "admin_password_changed", ("admin", actor.id), None
        )
        reply = await self._settled(
            audit_id,
            self._platform.call(
                self._platform.auth.ChangeAdminPassword,
                auth_pb2.ChangeAdminPasswordRequest(
                    current_password=current, new_password=new
                ),
                authorization=authorization,
            ),
        )
        await self._settle(audit_id, after={"revoked_sessions": reply.revoked_sessions})
        return reply.revoked_sessions

    async def _operator(self, admin_id: str) -> auth_pb2.Admin:
        for admin in await self.list_admins():
            if admin.id == admin_id:
                return admin
        raise NotFound("No such operator account.")

    async def _record_pending(
        self, actor: Actor, action: str, target: tuple[str, str], after: Any
    ) -> int:
        async with self._sessions.begin() as db:
            return await audit.record(
                db, actor, action, *target, after=after, pending=True
            )

    async def _settled(self, audit_id: int, call: Awaitable[ReplyT]) -> ReplyT:
        """Await `call`; a refusal settles the pending entry as failed."""
        try:
            return await call
        except DomainError as error:
            await self._settle(audit_id, error=error.message)
            raise

    async def _settle(
        self, audit_id: int, *, after: Any = None, error: str | None = None
    ) -> None:
        async with self._sessions.begin() as db:
            await audit.settle(db, audit_id, after=after, error=error)

    # Admin task handlers: (task id, payload) -> what the audit entry records.

    async def _set_status(self, task_id: str, payload: dict[str, Any]) -> Any:
        reply = await self._platform.call(
            self._platform.auth.SetUserStatus,
            auth_pb2.SetUserStatusRequest(
                user_id=payload["user_id"],
                status=payload["status"],
                reason=payload["reason"],
                idempotency_key=f"admin-task:{task_id}",
            ),
        )
        return {
            "status": reply.user.status,
            "reason": reply.user.status_reason,
            "previous_status": reply.previous_status,
            "revoked_sessions": reply.revoked_sessions,
        }

    async def _adjust_credits(self, task_id: str, payload: dict[str, Any]) -> Any:
        reply = await self._platform.call(
            self._platform.billing.Adjust,
            billing_pb2.AdjustRequest(
                account=user_account(payload["user_id"]),
                delta_micros=payload["delta_micros"],
                idempotency_key=f"admin-task:{task_id}",
                reason=payload["reason"],
                actor=payload["actor"],
            ),
        )
        return _facts(reply.entry)

    async def _update_admin(self, task_id: str, payload: dict[str, Any]) -> Any:
        request = auth_pb2.UpdateAdminRequest(
            admin_id=payload["admin_id"], idempotency_key=f"admin-task:{task_id}"
        )
        if "role" in payload:
            request.role = payload["role"]
        if "disabled" in payload:
            request.disabled = payload["disabled"]
        reply = await self._platform.call(self._platform.auth.UpdateAdmin, request)
        return {
            **_operator_facts(reply.admin),
            "revoked_sessions": reply.revoked_sessions,
        }

    async def _delete_generation_data(
        self, task_id: str, payload: dict[str, Any]
    ) -> Any:
        reply = await self._platform.call(
            self._platform.generation.DeleteUserData,
            generation_pb2.DeleteUserDataRequest(user_id=payload["user_id"]),
            seconds=DELETION_STEP_SECONDS,
        )
        return _facts(reply)

    async def _delete_chat_data(self, task_id: str, payload: dict[str, Any]) -> Any:
        reply = await self._platform.call(
            self._platform.chat.DeleteUserData,
            chat_pb2.DeleteUserDataRequest(user_id=payload["user_id"]),
            seconds=DELETION_STEP_SECONDS,
        )
        return _facts(reply)

    async def _delete_workspace_data(
        self, task_id: str, payload: dict[str, Any]
    ) -> Any:
        reply = await self._platform.call(
            self._platform.workspace.DeleteUserData,
            workspace_pb2.DeleteUserDataRequest(user_id=payload["user_id"]),
            seconds=DELETION_STEP_SECONDS,
        )
        return _facts(reply)

    async def _delete_billing_data(self, task_id: str, payload: dict[str, Any]) -> Any:
        reply = await self._platform.call(
            self._platform.billing.DeleteUserData,
            billing_pb2.DeleteUserDataRequest(user_id=payload["user_id"]),
            seconds=DELETION_STEP_SECONDS,
        )
        return _facts(reply)

    async def _delete_auth_data(self, task_id: str, payload: dict[str, Any]) -> Any:
        """The last step: only once every other one is done, because an
        anonymised account can no longer be told apart."""
        async with self._sessions() as db:
            steps = await repository.deletion_steps(db, payload["deletion"])
        others = [step for step in steps if step.kind != DELETE_AUTH]
        for step in others:
            if step.state == "failed":
                raise FailedPrecondition(
                    f"Deleting the user's {step_service(step.kind)} data failed: "
                    f"{step.error}"
                )
        if any(step.state == "pending" for step in others):
            raise Unavailable("Other steps of this deletion have not finished yet.")
        reply = await self._platform.call(
            self._platform.auth.DeleteUserData,
            auth_pb2.DeleteUserDataRequest(user_id=payload["user_id"]),
        )
        return {
            "auth": _facts(reply),
            **{step_service(step.kind): step.result for step in others},
        }


def _csv_row(user: ListedUser) -> tuple[str, ...]:
    account = user.account
    return user_row(
        account.id,
        account.email,
        account.name,
        account.nickname,
        account.status,
        account.status_reason,
        account.auth_provider,
        user.balance,
        user.held,
        account.created_at.ToDatetime(tzinfo=UTC),
    )


def _operator_facts(admin: auth_pb2.Admin) -> dict[str, Any]:
    return {
        "id": admin.id,
        "username": admin.username,
        "role": admin.role,
        "disabled": admin.disabled,
    }
