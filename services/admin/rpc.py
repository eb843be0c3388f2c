"""gRPC servicer of AdminService, the operators' core area: translates
messages, opens the transaction, calls the service, and raises domain
errors unchanged (the server interceptor maps them to statuses).

Operator methods are ADMIN; the role checks are in service.py. The
operator's client address and the request id come as metadata
(`x-client-address`, `x-request-id`) and go into the audit trail. Services
call GetFeatureFlags, GetRateLimits, CheckRateLimit and RecordError with
their internal token; anyone may read the public settings and
announcements.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format, struct_pb2
from omnihub.admin.v1 import admin_pb2, admin_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.db import read_session_factory, session_factory
from libs.grpc.identity import REQUEST_ID_KEY, Access, current_caller
from libs.grpc.messages import refuse_unknown_fields, timestamp
from libs.grpc.server import ServiceDefinition
from libs.runtime import Runtime
from services.admin import settings as catalogue
from services.admin.audit import Actor
from services.admin.models import (
    Announcement,
    AuditEntry,
    ErrorEntry,
    FeatureFlag,
    RateLimitRule,
)
from services.admin.owners import SettingOwners
from services.admin.repository import AuditFilter, ErrorFilter
from services.admin.service import (
    AnnouncementDraft,
    AnnouncementService,
    AuditService,
    ErrorLogService,
    ErrorReport,
    FlagService,
    RateLimitService,
    SettingsService,
    SettingView,
)
from services.admin.tasks import AdminTasks

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

CLIENT_ADDRESS_KEY = "x-client-address"

ACCESS = {
    "GetSettings": Access.ADMIN,
    "UpdateSettings": Access.ADMIN,
    "GetPublicSettings": Access.PUBLIC,
    "ListFeatureFlags": Access.ADMIN,
    "SetFeatureFlag": Access.ADMIN,
    "GetFeatureFlags": Access.SERVICE,
    "ListAnnouncements": Access.ADMIN,
    "CreateAnnouncement": Access.ADMIN,
    "UpdateAnnouncement": Access.ADMIN,
    "DeleteAnnouncement": Access.ADMIN,
    "ListPublicAnnouncements": Access.PUBLIC,
    "ListAuditLogs": Access.ADMIN,
    "RecordError": Access.SERVICE,
    "ListErrorLogs": Access.ADMIN,
    "ResolveError": Access.ADMIN,
    "ListRateLimits": Access.ADMIN,
    "SetRateLimit": Access.ADMIN,
    "DeleteRateLimit": Access.ADMIN,
    "GetRateLimits": Access.SERVICE,
    "CheckRateLimit": Access.SERVICE,
}


def actor(context: Context) -> Actor:
    """The operator of this call, with where the gateway says it came from."""
    metadata = {
        key: value
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)
    }
    return Actor.current(
        client_address=metadata.get(CLIENT_ADDRESS_KEY, ""),
        request_id=metadata.get(REQUEST_ID_KEY, ""),
    )


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        settings: SettingsService,
        rate_limits: RateLimitService,
        sessions: async_sessionmaker[AsyncSession],
        reads: async_sessionmaker[AsyncSession],
    ) -> None:
        self._settings = settings
        self._flags = FlagService()
        self._announcements = AnnouncementService()
        self._audit = AuditService()
        self._errors = ErrorLogService()
        self._rate_limits = rate_limits
        self._sessions = sessions
        # Autocommit sessions for reads that lock nothing.
        self._reads = reads

    # Settings

    async def GetSettings(
        self, request: admin_pb2.GetSettingsRequest, context: Context
    ) -> admin_pb2.GetSettingsResponse:
        async with self._reads() as db:
            views = await self._settings.describe(db)
        return admin_pb2.GetSettingsResponse(settings=[_setting(v) for v in views])

    async def UpdateSettings(
        self, request: admin_pb2.UpdateSettingsRequest, context: Context
    ) -> admin_pb2.UpdateSettingsResponse:
        refuse_unknown_fields(request)
        values = json_format.MessageToDict(request.values)
        async with self._sessions.begin() as db:
            staged = await self._settings.stage(db, actor(context), values)
        await self._settings.apply(staged)
        async with self._reads() as db:
            views = await self._settings.describe(db)
        return admin_pb2.UpdateSettingsResponse(
            settings=[_setting(v) for v in views], changed=staged.changed
        )

    async def GetPublicSettings(
        self, request: admin_pb2.GetPublicSettingsRequest, context: Context
    ) -> admin_pb2.GetPublicSettingsResponse:
        async with self._reads() as db:
            shown = await self._settings.public(db)
        settings = struct_pb2.Struct()
        settings.update(shown)
        return admin_pb2.GetPublicSettingsResponse(settings=settings)

    # Feature flags

    async def ListFeatureFlags(
        self, request: admin_pb2.ListFeatureFlagsRequest, context: Context
    ) -> admin_pb2.ListFeatureFlagsResponse:
        async with self._reads() as db:
            flags = await self._flags.all(db)
        return admin_pb2.ListFeatureFlagsResponse(flags=[_flag(f) for f in flags])

    async def SetFeatureFlag(
        self, request: admin_pb2.SetFeatureFlagRequest, context: Context
    ) -> admin_pb2.SetFeatureFlagResponse:
        refuse_unknown_fields(request)
        description = request.description if request.HasField("description") else None
        async with self._sessions.begin() as db:
            flag = await self._flags.set(
                db, actor(context), request.key, request.enabled, description
            )
        return admin_pb2.SetFeatureFlagResponse(flag=_flag(flag))

    async def GetFeatureFlags(
        self, request: admin_pb2.GetFeatureFlagsRequest, context: Context
    ) -> admin_pb2.GetFeatureFlagsResponse:
        async with self._reads() as db:
            states = await self._flags.states(db)
            message = await self._settings.maintenance_message(db)
        return admin_pb2.GetFeatureFlagsResponse(
            flags=states, maintenance_message=message
        )

    # Announcements

    async def ListAnnouncements(
        self, request: admin_pb2.ListAnnouncementsRequest, context: Context
    ) -> admin_pb2.ListAnnouncementsResponse:
        async with self._reads() as db:
            page = await self._announcements.page(
                db, request.page_size, request.page_token
            )
        return admin_pb2.ListAnnouncementsResponse(
            announcements=[_announcement(a) for a in page.announcements],
            next_page_token=page.next_page_token,
        )

    async def CreateAnnouncement(
        self, request: admin_pb2.CreateAnnouncementRequest, context: Context
    ) -> admin_pb2.CreateAnnouncementResponse:
        refuse_unknown_fields(request)
        draft = AnnouncementDraft(
            title=request.title,
            body=request.body,
            audience=request.audience or "all",
            severity=request.severity or "info",
            active=request.active if request.HasField("active") else True,
            starts_at=(
                request.starts_at.ToDatetime(tzinfo=UTC)
                if request.HasField("starts_at")
                else None
            ),
            expires_at=(
                request.expires_at.ToDatetime(tzinfo=UTC)
                if request.HasField("expires_at")
                else None
            ),
        )
        async with self._sessions.begin() as db:
            row = await self._announcements.create(db, actor(context), draft)
        return admin_pb2.CreateAnnouncementResponse(announcement=_announcement(row))

    async def UpdateAnnouncement(
        self, request: admin_pb2.UpdateAnnouncementRequest, context: Context
    ) -> admin_pb2.UpdateAnnouncementResponse:
        refuse_unknown_fields(request)
        async with self._sessions.begin() as db:
            row = await self._announcements.update(
                db, actor(context), request.id, _changes(request)
            )
        return admin_pb2.UpdateAnnouncementResponse(announcement=_announcement(row))

    async def DeleteAnnouncement(
        self, request: admin_pb2.DeleteAnnouncementRequest, context: Context
    ) -> admin_pb2.DeleteAnnouncementResponse:
        async with self._sessions.begin() as db:
            row = await self._announcements.deactivate(db, actor(context), request.id)
        return admin_pb2.DeleteAnnouncementResponse(announcement=_announcement(row))

    async def ListPublicAnnouncements(
        self, request: admin_pb2.ListPublicAnnouncementsRequest, context: Context
    ) -> admin_pb2.ListPublicAnnouncementsResponse:
        signed_in = current_caller().user is not None
        async with self._reads() as db:
            rows = await self._announcements.live(db, signed_in)
        return admin_pb2.ListPublicAnnouncementsResponse(
            announcements=[_announcement(row) for row in rows]
        )

    # Audit trail

    async def ListAuditLogs(
        self, request: admin_pb2.ListAuditLogsRequest, context: Context
    ) -> admin_pb2.ListAuditLogsResponse:
        where = AuditFilter(
            actor_id=request.actor_id,
            action=request.action,
            target_type=request.target_type,
            target_id=request.target_id,
            since=(
                request.since.ToDatetime(tzinfo=UTC)
                if request.HasField("since")
                else None
            ),
            until=(
                request.until.ToDatetime(tzinfo=UTC)
                if request.HasField("until")
                else None
            ),
        )
        async with self._reads() as db:
            page = await self._audit.page(
                db, where, request.page_size, request.page_token
            )
        return admin_pb2.ListAuditLogsResponse(
            entries=[_audit_entry(entry) for entry in page.entries],
            next_page_token=page.next_page_token,
        )

    # Error log

    async def RecordError(
        self, request: admin_pb2.RecordErrorRequest, context: Context
    ) -> admin_pb2.RecordErrorResponse:
        service = current_caller().service or "unknown"
        report = ErrorReport(
            kind=request.kind,
            severity=request.severity,
            code=request.code,
            message=request.message,
            user_id=request.user_id,
            reference_id=request.reference_id,
            details=dict(request.details),
        )
        async with self._sessions.begin() as db:
            error_id = await self._errors.record(db, service, report)
        return admin_pb2.RecordErrorResponse(id=str(error_id))

    async def ListErrorLogs(
        self, request: admin_pb2.ListErrorLogsRequest, context: Context
    ) -> admin_pb2.ListErrorLogsResponse:
        where = ErrorFilter(
            resolved=request.resolved if request.HasField("resolved") else None,
            service=request.service,
            severity=request.severity,
        )
        async with self._reads() as db:
            page = await self._errors.page(
                db, where, request.page_size, request.page_token
            )
        return admin_pb2.ListErrorLogsResponse(
            entries=[_error_entry(entry) for entry in page.entries],
            next_page_token=page.next_page_token,
        )

    async def ResolveError(
        self, request: admin_pb2.ResolveErrorRequest, context: Context
    ) -> admin_pb2.ResolveErrorResponse:
        async with self._sessions.begin() as db:
            entry = await self._errors.resolve(db, actor(context), request.id)
        return admin_pb2.ResolveErrorResponse(entry=_error_entry(entry))

    # Rate limits

    async def ListRateLimits(
        self, request: admin_pb2.ListRateLimitsRequest, context: Context
    ) -> admin_pb2.ListRateLimitsResponse:
        async with self._reads() as db:
            rules = await self._rate_limits.all(db)
        return admin_pb2.ListRateLimitsResponse(rules=[_rule(r) for r in rules])

    async def SetRateLimit(
        self, request: admin_pb2.SetRateLimitRequest, context: Context
    ) -> admin_pb2.SetRateLimitResponse:
        refuse_unknown_fields(request)
        async with self._sessions.begin() as db:
            rule = await self._rate_limits.set(
                db,
                actor(context),
                request.subject,
                request.requests,
                request.window_seconds,
            )
        return admin_pb2.SetRateLimitResponse(rule=_rule(rule))

    async def DeleteRateLimit(
        self, request: admin_pb2.DeleteRateLimitRequest, context: Context
    ) -> admin_pb2.DeleteRateLimitResponse:
        async with self._sessions.begin() as db:
            await self._rate_limits.delete(db, actor(context), request.subject)
        return admin_pb2.DeleteRateLimitResponse()

    async def GetRateLimits(
        self, request: admin_pb2.GetRateLimitsRequest, context: Context
    ) -> admin_pb2.GetRateLimitsResponse:
        async with self._reads() as db:
            rules = await self._rate_limits.all(db)
        return admin_pb2.GetRateLimitsResponse(rules=[_rule(r) for r in rules])

    async def CheckRateLimit(
        self, request: admin_pb2.CheckRateLimitRequest, context: Context
    ) -> admin_pb2.CheckRateLimitResponse:
        # Each statement of a check is atomic on its own (the counter moves
        # in one INSERT ... ON CONFLICT): autocommit spares the BEGIN and
        # COMMIT round trips on a path every limited request takes.
        async with self._reads() as db:
            spent = await self._rate_limits.check(db, request.subject, request.cost)
        return admin_pb2.CheckRateLimitResponse(
            allowed=spent.allowed,
            retry_after_seconds=spent.retry_after,
            limited=spent.limited,
        )


def definition(servicer: AdminServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
        servicer=servicer,
        register=admin_pb2_grpc.add_AdminServiceServicer_to_server,
        access=ACCESS,
    )


def build(
    runtime: Runtime, engine: AsyncEngine, tasks: AdminTasks
) -> ServiceDefinition:
    """AdminService as the admin process serves it."""
    owners = SettingOwners(runtime.upstreams)
    sessions = session_factory(engine)
    servicer = AdminServicer(
        SettingsService(owners, runtime.settings, tasks, sessions),
        RateLimitService(owners),
        sessions,
        read_session_factory(engine),
    )
    return definition(servicer)


def _changes(request: admin_pb2.UpdateAnnouncementRequest) -> AnnouncementDraft:
    def given(name: str) -> Any:
        return getattr(request, name) if request.HasField(name) else None  # type: ignore[arg-type]

    return AnnouncementDraft(
        title=given("title"),
        body=given("body"),
        audience=given("audience"),
        severity=given("severity"),
        active=given("active"),
        starts_at=(
            request.starts_at.ToDatetime(tzinfo=UTC)
            if request.HasField("starts_at")
            else None
        ),
        expires_at=(
            request.expires_at.ToDatetime(tzinfo=UTC)
            if request.HasField("expires_at")
            else None
        ),
        clear_expiry=request.clear_expiry,
    )


def _value(value: Any) -> struct_pb2.Value:
    return json_format.ParseDict(value, struct_pb2.Value())


def _setting(view: SettingView) -> admin_pb2.Setting:
    definition = view.definition
    return admin_pb2.Setting(
        key=definition.key,
        type=definition.type,
        value=_value(catalogue.display(definition, view.value)),
        description=definition.description,
        public=definition.public,
        read_only=definition.read_only,
        source=definition.source,
        is_set=bool(view.value) if definition.type == catalogue.SECRET else True,
    )


def _flag(flag: FeatureFlag) -> admin_pb2.FeatureFlag:
    return admin_pb2.FeatureFlag(
        key=flag.key,
        enabled=flag.enabled,
        description=flag.description,
        updated_by=flag.updated_by or "",
        updated_at=timestamp(flag.updated_at),
    )


def _announcement(row: Announcement) -> admin_pb2.Announcement:
    message = admin_pb2.Announcement(
        id=str(row.id),
        title=row.title,
        body=row.body,
        audience=row.audience,
        severity=row.severity,
        active=row.active,
        starts_at=timestamp(row.starts_at),
        created_by=row.created_by,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )
    if row.expires_at is not None:
        message.expires_at.CopyFrom(timestamp(row.expires_at))
    return message


def _audit_entry(entry: AuditEntry) -> admin_pb2.AuditEntry:
    return admin_pb2.AuditEntry(
        id=entry.id,
        actor_id=entry.actor_id,
        actor_name=entry.actor_name,
        actor_role=entry.actor_role,
        action=entry.action,
        target_type=entry.target_type,
        target_id=entry.target_id,
        before=_value(entry.before),
        after=_value(entry.after),
        client_address=str(entry.client_address or ""),
        request_id=entry.request_id or "",
        status=entry.status,
        error=entry.error or "",
        created_at=timestamp(entry.created_at),
    )


def _error_entry(entry: ErrorEntry) -> admin_pb2.ErrorEntry:
    message = admin_pb2.ErrorEntry(
        id=str(entry.id),
        service=entry.service,
        kind=entry.kind,
        severity=entry.severity,
        code=entry.code,
        message=entry.message,
        user_id=entry.user_id or "",
        reference_id=entry.reference_id or "",
        details={str(k): str(v) for k, v in (entry.details or {}).items()},
        created_at=timestamp(entry.created_at),
        resolved=entry.resolved_at is not None,
        resolved_by=entry.resolved_by or "",
    )
    if entry.resolved_at is not None:
        message.resolved_at.CopyFrom(timestamp(entry.resolved_at))
    return message


def _rule(rule: RateLimitRule) -> admin_pb2.RateLimitRule:
    return admin_pb2.RateLimitRule(
        subject=rule.subject,
        requests=rule.requests,
        window_seconds=rule.window_seconds,
        updated_by=rule.updated_by or "",
        updated_at=timestamp(rule.updated_at),
    )
