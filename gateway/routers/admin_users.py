"""/api/admin/users, /api/admin/admins and /api/admin/password: users and
operator accounts for operators, served by the admin service's
AdminUsersService.

Every route needs an operator's token (a user's token is refused with 403,
none with 401); what each role may do is checked by the admin service
(viewers read only). The client address and request id go along as
metadata for the audit trail.

PUT /api/admin/users/{id}/credits changed meaning: the original overwrote
the balance with `{"credits": n}`; it now takes a signed change
`{"amount": n, "reason": "..."}`, written to the ledger as an adjustment.
The old body is refused with a 400 that explains this.

A change another service has to make answers 202 instead of 200 when that
service could not be reached yet; the admin service retries it until it is
made, and the audit trail shows when it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import grpc
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.admin.v1 import users_pb2, users_pb2_grpc

from gateway.deps import AdminDep, Principal
from gateway.middleware import request_id_var
from gateway.schemas.admin_users import (
    ActivityOut,
    CreateOperatorBody,
    CreditsBody,
    CreditsChangeOut,
    DeletionOut,
    DeletionStepOut,
    LedgerEntryOut,
    ManagedUserOut,
    NoteBody,
    NoteOut,
    OperatorChangeOut,
    OperatorOut,
    PasswordBody,
    PasswordChangedOut,
    RecentGenerationOut,
    StatusBody,
    StatusChangeOut,
    UpdateOperatorBody,
    UserDetailOut,
)
from gateway.schemas.billing import credits
from gateway.upstream import Upstream
from libs.grpc.status import from_rpc_error

router = APIRouter(prefix="/api/admin", tags=["admin: users"])

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
NEXT_CURSOR_HEADER = "X-Next-Cursor"
# Deleting a user's data in every service, or writing every user as CSV,
# may take longer than an ordinary call.
LONG_CALL_SECONDS = 60.0
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
UserId = Annotated[str, Path(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=128)]
Search = Annotated[str | None, Query(max_length=200)]
StatusFilter = Annotated[
    str | None, Query(alias="status", pattern="^(active|suspended|banned|deleted)$")
]
ProviderFilter = Annotated[str | None, Query(pattern="^(email|google)$")]
CreatedAfter = Annotated[datetime | None, Query(alias="createdAfter")]
CreatedBefore = Annotated[datetime | None, Query(alias="createdBefore")]


class UsersClient:
    """The AdminUsersService stub and calls made as the signed-in operator."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.stub = users_pb2_grpc.AdminUsersServiceStub(
            upstream.runtime.upstreams.channel("admin")
        )

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        message: RequestT,
        admin: Principal,
    ) -> ResponseT:
        return await self.upstream.call(
            method, message, admin.authorization, admin.metadata
        )

    async def long_call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        message: RequestT,
        admin: Principal,
    ) -> ResponseT:
        try:
            return await method(
                message, timeout=LONG_CALL_SECONDS, metadata=self._metadata(admin)
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def export(
        self, message: users_pb2.ExportUsersCsvRequest, admin: Principal
    ) -> AsyncIterator[bytes]:
        """The CSV's chunks; the first is awaited before this returns, so a
        refusal is still an ordinary error response."""
        stream = self.stub.ExportUsersCsv(
            message, timeout=LONG_CALL_SECONDS, metadata=self._metadata(admin)
        )
        try:
            first = await stream.read()
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

        async def chunks() -> AsyncIterator[bytes]:
            # A failure past this point can only cut the download short.
            reply = first
            while isinstance(reply, users_pb2.ExportUsersCsvResponse):
                yield reply.chunk
                reply = await stream.read()

        return chunks()

    def _metadata(self, admin: Principal) -> tuple[tuple[str, str], ...]:
        identity = self.upstream.runtime.upstreams.metadata(
            authorization=admin.authorization, request_id=request_id_var.get()
        )
        return (*identity, *admin.metadata)


async def users_client(request: Request) -> UsersClient:
    client: UsersClient | None = getattr(request.app.state, "admin_users", None)
    if client is None:
        client = UsersClient(request.app.state.upstream)
        request.app.state.admin_users = client
    return client


UsersDep = Annotated[UsersClient, Depends(users_client)]


def _moment(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _optional_moment(message: object, field: str) -> datetime | None:
    has_field: Callable[[str], bool] = message.HasField  # type: ignore[attr-defined]
    return _moment(getattr(message, field)) if has_field(field) else None


def _user(user: users_pb2.ManagedUser) -> ManagedUserOut:
    return ManagedUserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        nickname=user.nickname,
        avatar_url=user.avatar_url or None,
        auth_provider=user.auth_provider,
        status=user.status,
        status_reason=user.status_reason or None,
        status_changed_at=_optional_moment(user, "status_changed_at"),
        credits=credits(user.balance_micros),
        held_credits=credits(user.held_micros),
        created_at=_moment(user.created_at),
    )


def _recent(generation: users_pb2.RecentGeneration) -> RecentGenerationOut:
    return RecentGenerationOut(
        id=generation.id,
        type=generation.type,
        model_name=generation.model_name,
        status=generation.status,
        credits=credits(generation.credits_micros),
        started_at=_moment(generation.started_at),
    )


def _note(note: users_pb2.UserNote) -> NoteOut:
    return NoteOut(
        id=note.id,
        user_id=note.user_id,
        author_id=note.author_id,
        author_name=note.author_name,
        body=note.body,
        created_at=_moment(note.created_at),
    )


def _entry(entry: users_pb2.LedgerEntry) -> LedgerEntryOut:
    return LedgerEntryOut(
        id=entry.id,
        type=entry.kind,
        amount=credits(entry.amount_micros),
        balance_after=credits(entry.balance_after_micros),
        reason=entry.reason,
        reference=entry.reference or None,
        tags=dict(entry.tags),
        created_at=_moment(entry.created_at),
    )


def _operator(admin: users_pb2.Operator) -> OperatorOut:
    return OperatorOut(
        id=admin.id,
        username=admin.username,
        role=admin.role,
        disabled=admin.disabled,
        created_at=_moment(admin.created_at),
        updated_at=_moment(admin.updated_at),
    )


def _filters(
    search: str | None,
    status_: str | None,
    provider: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> dict[str, object]:
    values: dict[str, object] = {
        "query": search or "",
        "status": status_ or "",
        "auth_provider": provider or "",
    }
    for name, moment in (
        ("created_after", created_after),
        ("created_before", created_before),
    ):
        if moment is not None:
            stamp = Timestamp()
            stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
            values[name] = stamp
    return values


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


def _accepted_unless(applied: bool, response: Response) -> None:
    if not applied:
        response.status_code = status.HTTP_202_ACCEPTED


# Users. The export is declared before /users/{user_id}, which would
# otherwise take "export" for an id.


@router.get(
    "/users/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The CSV file",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
# The original platform's path for the same download.
@router.get("/export/users", include_in_schema=False)
async def export_users(
    admin: AdminDep,
    users: UsersDep,
    search: Search = None,
    status_: StatusFilter = None,
    provider: ProviderFilter = None,
    created_after: CreatedAfter = None,
    created_before: CreatedBefore = None,
) -> StreamingResponse:
    """The users a filter selects, as a CSV download (RFC 4180, UTF-8).
    Cells that a spreadsheet would run as a formula start with a quote."""
    message = users_pb2.ExportUsersCsvRequest(
        **_filters(search, status_, provider, created_after, created_before)  # type: ignore[arg-type]
    )
    chunks = await users.export(message, admin)
    return StreamingResponse(
        chunks,
        media_type=CSV_MEDIA_TYPE,
        headers={
            "Content-Disposition": 'attachment; filename="users-export.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/users")
async def list_users(
    admin: AdminDep,
    users: UsersDep,
    response: Response,
    search: Search = None,
    status_: StatusFilter = None,
    provider: ProviderFilter = None,
    created_after: CreatedAfter = None,
    created_before: CreatedBefore = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> list[ManagedUserOut]:
    """Users newest first, with their credits. `search` matches part of the
    e-mail address, name or nickname; the `X-Next-Cursor` header names the
    next page (`cursor`)."""
    reply = await users.call(
        users.stub.ListUsers,
        users_pb2.ListUsersRequest(
            **_filters(search, status_, provider, created_after, created_before),  # type: ignore[arg-type]
            page_size=limit,
            page_token=cursor or "",
        ),
        admin,
    )
    _no_store(response)
    if reply.next_page_token:
        response.headers[NEXT_CURSOR_HEADER] = reply.next_page_token
    return [_user(user) for user in reply.users]


@router.get("/users/{user_id}")
async def get_user(
    user_id: UserId, admin: AdminDep, users: UsersDep, response: Response
) -> UserDetailOut:
    """One user: account, credits, sessions, generations and latest notes."""
    reply = await users.call(
        users.stub.GetUser, users_pb2.GetUserRequest(user_id=user_id), admin
    )
    _no_store(response)
    return UserDetailOut(
        **_user(reply.user).model_dump(),
        has_password=reply.has_password,
        google_linked=reply.google_linked,
        active_sessions=reply.active_sessions,
        last_seen_at=_optional_moment(reply, "last_seen_at"),
        generation_counts=dict(reply.generation_counts),
        recent_generations=[_recent(g) for g in reply.recent_generations],
        notes=[_note(note) for note in reply.notes],
    )


@router.put("/users/{user_id}/status")
async def update_user_status(
    user_id: UserId,
    body: StatusBody,
    admin: AdminDep,
    users: UsersDep,
    response: Response,
) -> StatusChangeOut:
    """Support and superadmins: `suspended` or `banned` ends every session of
    the user at once and refuses their sign-ins; `active` lets them back."""
    reply = await users.call(
        users.stub.UpdateUserStatus,
        users_pb2.UpdateUserStatusRequest(
            user_id=user_id, status=body.status, reason=body.reason
        ),
        admin,
    )
    _accepted_unless(reply.applied, response)
    return StatusChangeOut(
        id=reply.user_id,
        status=reply.status,
        previous_status=reply.previous_status or None,
        revoked_sessions=reply.revoked_sessions,
        applied=reply.applied,
        audit_id=reply.audit_id,
    )


@router.put("/users/{user_id}/credits")
async def adjust_user_credits(
    user_id: UserId,
    body: CreditsBody,
    admin: AdminDep,
    users: UsersDep,
    response: Response,
) -> CreditsChangeOut:
    """Support and superadmins: add (positive `amount`) or take away
    (negative) credits, with a reason, as a ledger `adjustment` entry. The
    balance may not end below zero. (The original route overwrote the
    balance with `{"credits": n}`; that body is refused.)"""
    reply = await users.call(
        users.stub.AdjustUserCredits,
        users_pb2.AdjustUserCreditsRequest(
            user_id=user_id, delta_micros=body.micros, reason=body.reason
        ),
        admin,
    )
    _accepted_unless(reply.applied, response)
    return CreditsChangeOut(
        entry=_entry(reply.entry) if reply.HasField("entry") else None,
        applied=reply.applied,
        audit_id=reply.audit_id,
    )


@router.post("/users/{user_id}/notes", status_code=status.HTTP_201_CREATED)
async def add_user_note(
    user_id: UserId, body: NoteBody, admin: AdminDep, users: UsersDep
) -> NoteOut:
    """Support and superadmins: a note about the user for other operators."""
    reply = await users.call(
        users.stub.AddUserNote,
        users_pb2.AddUserNoteRequest(user_id=user_id, body=body.body),
        admin,
    )
    return _note(reply.note)


@router.get("/users/{user_id}/notes")
async def list_user_notes(
    user_id: UserId,
    admin: AdminDep,
    users: UsersDep,
    response: Response,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> list[NoteOut]:
    """Notes about the user, newest first (`X-Next-Cursor` for more)."""
    reply = await users.call(
        users.stub.ListUserNotes,
        users_pb2.ListUserNotesRequest(
            user_id=user_id, page_size=limit, page_token=cursor or ""
        ),
        admin,
    )
    _no_store(response)
    if reply.next_page_token:
        response.headers[NEXT_CURSOR_HEADER] = reply.next_page_token
    return [_note(note) for note in reply.notes]


@router.get("/users/{user_id}/activity")
async def list_user_activity(
    user_id: UserId,
    admin: AdminDep,
    users: UsersDep,
    response: Response,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> ActivityOut:
    """The user's ledger entries, newest first, and (on the first page) their
    latest generations; follow `nextCursor` for older entries."""
    reply = await users.call(
        users.stub.ListUserActivity,
        users_pb2.ListUserActivityRequest(
            user_id=user_id, page_size=limit, page_token=cursor or ""
        ),
        admin,
    )
    _no_store(response)
    return ActivityOut(
        entries=[_entry(entry) for entry in reply.entries],
        recent_generations=[_recent(g) for g in reply.recent_generations],
        next_cursor=reply.next_page_token or None,
    )


@router.delete("/users/{user_id}")
async def delete_user(
    user_id: UserId, admin: AdminDep, users: UsersDep, response: Response
) -> DeletionOut:
    """Superadmins: remove or anonymise the user's data in every service
    (the credit ledger is kept as a financial record). 202 while some step
    is still being retried; asking again is harmless."""
    reply = await users.long_call(
        users.stub.DeleteUser, users_pb2.DeleteUserRequest(user_id=user_id), admin
    )
    _accepted_unless(reply.completed, response)
    return DeletionOut(
        audit_id=reply.audit_id,
        completed=reply.completed,
        steps=[
            DeletionStepOut(
                service=step.service, state=step.state, error=step.error or None
            )
            for step in reply.steps
        ],
    )


# Operator accounts


@router.get("/admins")
async def list_admins(
    admin: AdminDep, users: UsersDep, response: Response
) -> list[OperatorOut]:
    reply = await users.call(
        users.stub.ListAdmins, users_pb2.ListAdminsRequest(), admin
    )
    _no_store(response)
    return [_operator(operator) for operator in reply.admins]


@router.post("/admins", status_code=status.HTTP_201_CREATED)
async def create_admin(
    body: CreateOperatorBody, admin: AdminDep, users: UsersDep
) -> OperatorOut:
    """Superadmins: a new operator account (password of 12+ characters)."""
    reply = await users.call(
        users.stub.CreateAdmin,
        users_pb2.CreateAdminRequest(
            username=body.username, password=body.password, role=body.role
        ),
        admin,
    )
    return _operator(reply.admin)


@router.put("/admins/{admin_id}")
async def update_admin(
    admin_id: UserId,
    body: UpdateOperatorBody,
    admin: AdminDep,
    users: UsersDep,
    response: Response,
) -> OperatorChangeOut:
    """Superadmins: change an operator's role or disable them; their sessions
    end, so the next sign-in carries the new role. The last enabled
    superadmin cannot be demoted or disabled."""
    message = users_pb2.UpdateAdminRequest(admin_id=admin_id)
    if body.role is not None:
        message.role = body.role
    if body.disabled is not None:
        message.disabled = body.disabled
    reply = await users.call(users.stub.UpdateAdmin, message, admin)
    _accepted_unless(reply.applied, response)
    return OperatorChangeOut(
        **_operator(reply.admin).model_dump(),
        applied=reply.applied,
        audit_id=reply.audit_id,
    )


@router.put("/password")
async def change_own_password(
    body: PasswordBody, admin: AdminDep, users: UsersDep
) -> PasswordChangedOut:
    """Any operator: change your own password; your other sessions end."""
    reply = await users.call(
        users.stub.ChangeOwnPassword,
        users_pb2.ChangeOwnPasswordRequest(
            current_password=body.current_password, new_password=body.new_password
        ),
        admin,
    )
    return PasswordChangedOut(success=True, revoked_sessions=reply.revoked_sessions)
