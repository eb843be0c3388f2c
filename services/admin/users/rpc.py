"""gRPC servicer of the users area (AdminUsersService): translates messages,
names the operator for the audit trail, and raises domain errors unchanged
(the server interceptor maps them to statuses). Every method is for
operators; what each role may do is checked in the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.json_format import ParseDict
from omnihub.admin.v1 import users_pb2, users_pb2_grpc
from omnihub.auth.v1 import auth_pb2
from omnihub.billing.v1 import billing_pb2
from omnihub.generation.v1 import generation_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import session_factory
from libs.grpc.identity import (
    AUTHORIZATION_KEY,
    REQUEST_ID_KEY,
    Access,
    current_caller,
)
from libs.grpc.messages import refuse_unknown_fields, timestamp
from libs.grpc.server import ServiceDefinition
from libs.runtime import Runtime
from services.admin.audit import Actor
from services.admin.models import UserNote
from services.admin.tasks import AdminTasks
from services.admin.users.service import ListedUser, Queued, UsersService
from services.admin.users.upstream import Platform

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

CLIENT_ADDRESS_KEY = "x-client-address"
_SERVICE = users_pb2.DESCRIPTOR.services_by_name["AdminUsersService"]
ACCESS = {method.name: Access.ADMIN for method in _SERVICE.methods}
_ENTRY_KIND_PREFIX = "ENTRY_KIND_"

FilteredRequest = users_pb2.ListUsersRequest | users_pb2.ExportUsersCsvRequest


class AdminUsersServicer(users_pb2_grpc.AdminUsersServiceServicer):
    def __init__(self, service: UsersService, platform: Platform) -> None:
        self._service = service
        self._platform = platform

    # Users

    async def ListUsers(
        self, request: users_pb2.ListUsersRequest, context: Context
    ) -> users_pb2.ListUsersResponse:
        query = _user_query(request)
        query.page_size = request.page_size
        query.page_token = request.page_token
        page = await self._service.list_users(query)
        return users_pb2.ListUsersResponse(
            users=[_managed(user) for user in page.users],
            next_page_token=page.next_page_token,
        )

    async def GetUser(
        self, request: users_pb2.GetUserRequest, context: Context
    ) -> users_pb2.GetUserResponse:
        detail = await self._service.user_detail(request.user_id)
        reply = users_pb2.GetUserResponse(
            user=_managed(detail.user),
            has_password=detail.auth.user.has_password,
            google_linked=detail.auth.user.google_linked,
            active_sessions=detail.auth.active_sessions,
            generation_counts=dict(detail.generations.counts),
            recent_generations=[_recent(g) for g in detail.generations.recent],
            notes=[_note(note) for note in detail.notes],
        )
        if detail.auth.HasField("last_seen_at"):
            reply.last_seen_at.CopyFrom(detail.auth.last_seen_at)
        return reply

    async def UpdateUserStatus(
        self, request: users_pb2.UpdateUserStatusRequest, context: Context
    ) -> users_pb2.UpdateUserStatusResponse:
        refuse_unknown_fields(request)
        queued = await self._service.change_status(
            await self._actor(context), request.user_id, request.status, request.reason
        )
        facts = queued.result or {}
        return users_pb2.UpdateUserStatusResponse(
            user_id=request.user_id,
            status=facts.get("status", request.status),
            previous_status=facts.get("previous_status", ""),
            revoked_sessions=facts.get("revoked_sessions", 0),
            applied=queued.applied,
            audit_id=queued.audit_id,
        )

    async def AdjustUserCredits(
        self, request: users_pb2.AdjustUserCreditsRequest, context: Context
    ) -> users_pb2.AdjustUserCreditsResponse:
        refuse_unknown_fields(request)
        queued = await self._service.adjust_credits(
            await self._actor(context),
            request.user_id,
            request.delta_micros,
            request.reason,
        )
        reply = users_pb2.AdjustUserCreditsResponse(
            applied=queued.applied, audit_id=queued.audit_id
        )
        if queued.result is not None:
            entry = ParseDict(queued.result, billing_pb2.LedgerEntry())
            reply.entry.CopyFrom(_entry(entry))
        return reply

    async def AddUserNote(
        self, request: users_pb2.AddUserNoteRequest, context: Context
    ) -> users_pb2.AddUserNoteResponse:
        refuse_unknown_fields(request)
        note = await self._service.add_note(
            await self._actor(context), request.user_id, request.body
        )
        return users_pb2.AddUserNoteResponse(note=_note(note))

    async def ListUserNotes(
        self, request: users_pb2.ListUserNotesRequest, context: Context
    ) -> users_pb2.ListUserNotesResponse:
        page = await self._service.notes(
            request.user_id, request.page_size, request.page_token
        )
        return users_pb2.ListUserNotesResponse(
            notes=[_note(note) for note in page.notes],
            next_page_token=page.next_page_token,
        )

    async def ListUserActivity(
        self, request: users_pb2.ListUserActivityRequest, context: Context
    ) -> users_pb2.ListUserActivityResponse:
        activity = await self._service.activity(
            request.user_id, request.page_size, request.page_token
        )
        return users_pb2.ListUserActivityResponse(
            entries=[_entry(entry) for entry in activity.entries],
            next_page_token=activity.next_page_token,
            recent_generations=[_recent(g) for g in activity.recent],
        )

    async def DeleteUser(
        self, request: users_pb2.DeleteUserRequest, context: Context
    ) -> users_pb2.DeleteUserResponse:
        deletion = await self._service.delete_user(
            await self._actor(context), request.user_id
        )
        return users_pb2.DeleteUserResponse(
            audit_id=deletion.audit_id,
            completed=deletion.completed,
            steps=[
                users_pb2.DeletionStep(
                    service=step.kind.rsplit(".", 1)[-1],
                    state=step.state,
                    error=step.error or "",
                )
                for step in deletion.steps
            ],
        )

    async def ExportUsersCsv(
        self, request: users_pb2.ExportUsersCsvRequest, context: Context
    ) -> AsyncIterator[users_pb2.ExportUsersCsvResponse]:
        async for chunk in self._service.export_csv(_user_query(request)):
            yield users_pb2.ExportUsersCsvResponse(chunk=chunk)

    # Operator accounts

    async def ListAdmins(
        self, request: users_pb2.ListAdminsRequest, context: Context
    ) -> users_pb2.ListAdminsResponse:
        admins = await self._service.list_admins()
        return users_pb2.ListAdminsResponse(admins=[_operator(a) for a in admins])

    async def CreateAdmin(
        self, request: users_pb2.CreateAdminRequest, context: Context
    ) -> users_pb2.CreateAdminResponse:
        refuse_unknown_fields(request)
        admin = await self._service.create_admin(
            await self._actor(context), request.username, request.password, request.role
        )
        return users_pb2.CreateAdminResponse(admin=_operator(admin))

    async def UpdateAdmin(
        self, request: users_pb2.UpdateAdminRequest, context: Context
    ) -> users_pb2.UpdateAdminResponse:
        refuse_unknown_fields(request)
        admin, queued = await self._service.update_admin(
            await self._actor(context),
            request.admin_id,
            request.role if request.HasField("role") else None,
            request.disabled if request.HasField("disabled") else None,
        )
        return _admin_update(admin, queued)

    async def ChangeOwnPassword(
        self, request: users_pb2.ChangeOwnPasswordRequest, context: Context
    ) -> users_pb2.ChangeOwnPasswordResponse:
        refuse_unknown_fields(request)
        metadata = _metadata(context)
        revoked = await self._service.change_own_password(
            await self._actor(context),
            metadata.get(AUTHORIZATION_KEY, ""),
            request.current_password,
            request.new_password,
        )
        return users_pb2.ChangeOwnPasswordResponse(revoked_sessions=revoked)

    async def _actor(self, context: Context) -> Actor:
        """The operator, where they called from (as the gateway saw it) and
        their username, for the audit trail."""
        metadata = _metadata(context)
        return Actor.current(
            client_address=metadata.get(CLIENT_ADDRESS_KEY, ""),
            request_id=metadata.get(REQUEST_ID_KEY, ""),
            name=await self._platform.operator_name(current_caller().admin_id),
        )


def build(
    runtime: Runtime, engine: AsyncEngine, tasks: AdminTasks
) -> ServiceDefinition:
    """AdminUsersService as the admin process serves it."""
    platform = Platform(runtime.upstreams)
    service = UsersService(session_factory(engine), tasks, platform)
    return ServiceDefinition(
        full_name=_SERVICE.full_name,
        servicer=AdminUsersServicer(service, platform),
        register=users_pb2_grpc.add_AdminUsersServiceServicer_to_server,
        access=ACCESS,
    )


def _metadata(context: Context) -> dict[str, str]:
    return {
        key: value
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)
    }


def _user_query(request: FilteredRequest) -> auth_pb2.ListUsersRequest:
    query = auth_pb2.ListUsersRequest(
        query=request.query, status=request.status, auth_provider=request.auth_provider
    )
    if request.HasField("created_after"):
        query.created_after.CopyFrom(request.created_after)
    if request.HasField("created_before"):
        query.created_before.CopyFrom(request.created_before)
    return query


def _managed(listed: ListedUser) -> users_pb2.ManagedUser:
    account = listed.account
    user = users_pb2.ManagedUser(
        id=account.id,
        email=account.email,
        name=account.name,
        nickname=account.nickname,
        avatar_url=account.avatar_url,
        auth_provider=account.auth_provider,
        status=account.status,
        status_reason=account.status_reason,
        created_at=account.created_at,
        balance_micros=listed.balance,
        held_micros=listed.held,
    )
    if account.HasField("status_changed_at"):
        user.status_changed_at.CopyFrom(account.status_changed_at)
    return user


def _note(note: UserNote) -> users_pb2.UserNote:
    return users_pb2.UserNote(
        id=str(note.id),
        user_id=str(note.user_id),
        author_id=note.author_id,
        author_name=note.author_name,
        body=note.body,
        created_at=timestamp(note.created_at),
    )


def _entry(entry: billing_pb2.LedgerEntry) -> users_pb2.LedgerEntry:
    kind = billing_pb2.EntryKind.Name(entry.kind).removeprefix(_ENTRY_KIND_PREFIX)
    return users_pb2.LedgerEntry(
        id=entry.id,
        kind=kind.lower(),
        amount_micros=entry.amount_micros,
        balance_after_micros=entry.balance_after_micros,
        reason=entry.reason,
        reference=entry.reference,
        tags=dict(entry.tags),
        created_at=entry.created_at,
    )


def _recent(generation: generation_pb2.Generation) -> users_pb2.RecentGeneration:
    return users_pb2.RecentGeneration(
        id=generation.id,
        type=generation.type,
        model_name=generation.model_name,
        status=generation.status,
        credits_micros=generation.credits_micros,
        started_at=generation.started_at,
    )


def _operator(admin: auth_pb2.Admin) -> users_pb2.Operator:
    return users_pb2.Operator(
        id=admin.id,
        username=admin.username,
        role=admin.role,
        disabled=admin.disabled,
        created_at=admin.created_at,
        updated_at=admin.updated_at,
    )


def _admin_update(
    admin: auth_pb2.Admin, queued: Queued
) -> users_pb2.UpdateAdminResponse:
    return users_pb2.UpdateAdminResponse(
        admin=_operator(admin), applied=queued.applied, audit_id=queued.audit_id
    )
