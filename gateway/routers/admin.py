"""/api/admin settings, feature flags, announcements, audit and error logs
and rate limits (operators only), and the public /api/settings and
/api/announcements: served by the admin service.

Every operator call carries the operator's token, client address and the
request id (AdminDep's metadata), which the admin service writes into the
audit trail with each change. Role checks (viewers read only) are the
service's. Lists are bare arrays, as the admin page reads them; the next
page's cursor is in the X-Next-Cursor header.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from google.protobuf import json_format, struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.admin.v1 import admin_pb2, admin_pb2_grpc
from omnihub.billing.v1 import billing_pb2

from gateway.deps import AdminDep, Principal
from gateway.routers.community import ViewerDep
from gateway.schemas.admin import (
    AnnouncementOut,
    AuditEntryOut,
    CreateAnnouncementBody,
    ErrorEntryOut,
    FlagBody,
    FlagOut,
    PublicAnnouncementOut,
    RateLimitBody,
    RateLimitOut,
    SettingOut,
    SettingsSavedOut,
    SuccessOut,
    UpdateAnnouncementBody,
)
from gateway.upstream import Upstream
from libs.errors import DeadlineExceeded, InvalidArgument, NotConfigured, Unavailable
from libs.logs import get_logger

log = get_logger(__name__)

router = APIRouter(prefix="/api/admin", tags=["admin"])
public_router = APIRouter(tags=["settings"])

NEXT_CURSOR_HEADER = "X-Next-Cursor"
MAX_SETTINGS_IN_BODY = 100
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
Cursor = Annotated[str | None, Query(max_length=200)]
Text = Annotated[str | None, Query(max_length=100)]


class AdminClient:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.stub = admin_pb2_grpc.AdminServiceStub(
            upstream.runtime.upstreams.channel("admin")
        )

    async def call(self, method: Any, message: Any, caller: Principal | None) -> Any:
        if caller is None:
            return await self.upstream.call(method, message)
        return await self.upstream.call(
            method, message, caller.authorization, caller.metadata
        )


async def get_admin_client(request: Request) -> AdminClient:
    state = request.app.state
    client: AdminClient | None = getattr(state, "admin", None)
    if client is None:
        client = state.admin = AdminClient(state.upstream)
    return client


AdminClientDep = Annotated[AdminClient, Depends(get_admin_client)]


def _limit(requested: int | None) -> int:
    """The spec's rule for admin lists: 100 when absent, else 1 to 1000."""
    if requested is None:
        return DEFAULT_LIMIT
    return max(1, min(requested, MAX_LIMIT))


def _moment(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _optional_moment(message: Any, field: str) -> datetime | None:
    return _moment(getattr(message, field)) if message.HasField(field) else None


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return stamp


def _json(value: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(value) if value.WhichOneof("kind") else None


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


# Settings


@router.get("/settings")
async def get_settings(
    caller: AdminDep, admin: AdminClientDep, response: Response
) -> dict[str, Any]:
    """Every setting as one flat object, the way the admin page reads it.
    Secrets show only "••••" and their last four characters."""
    reply = await admin.call(
        admin.stub.GetSettings, admin_pb2.GetSettingsRequest(), caller
    )
    _no_store(response)
    return {setting.key: _json(setting.value) for setting in reply.settings}


@router.get("/settings/definitions")
async def describe_settings(
    caller: AdminDep, admin: AdminClientDep, response: Response
) -> list[SettingOut]:
    """Each setting's type, description, where it lives and whether it is
    public or read-only, with its current value."""
    reply = await admin.call(
        admin.stub.GetSettings, admin_pb2.GetSettingsRequest(), caller
    )
    _no_store(response)
    return [_setting(setting) for setting in reply.settings]


@router.put("/settings")
async def update_settings(
    caller: AdminDep,
    admin: AdminClientDep,
    values: Annotated[dict[str, Any], Body()],
) -> SettingsSavedOut:
    """Change settings (superadmin): a flat object of some or all of them,
    e.g. the whole object GET returned with edits. Every value is checked
    before any is changed; a secret sent back masked, or a read-only value
    sent back unchanged, changes nothing."""
    if len(values) > MAX_SETTINGS_IN_BODY:
        raise InvalidArgument("Too many settings in one request.")
    struct = struct_pb2.Struct()
    struct.update(values)
    reply = await admin.call(
        admin.stub.UpdateSettings,
        admin_pb2.UpdateSettingsRequest(values=struct),
        caller,
    )
    return SettingsSavedOut(
        changed=list(reply.changed),
        settings={setting.key: _json(setting.value) for setting in reply.settings},
    )


def _setting(setting: admin_pb2.Setting) -> SettingOut:
    return SettingOut(
        key=setting.key,
        type=setting.type,
        value=_json(setting.value),
        description=setting.description,
        public=setting.public,
        read_only=setting.read_only,
        source=setting.source,
        is_set=setting.is_set,
    )


@public_router.get("/api/settings")
async def public_settings(admin: AdminClientDep) -> dict[str, Any]:
    """The settings anyone may read: site name, support address, whether
    maintenance mode is on and its message, the Google client id, the
    upload limit, and the Razorpay key id (null while billing is
    unreachable). Prices are at /api/pricing-settings."""
    reply = await admin.call(
        admin.stub.GetPublicSettings, admin_pb2.GetPublicSettingsRequest(), None
    )
    shown = json_format.MessageToDict(reply.settings)
    if isinstance(shown.get("maxUploadMb"), float):
        shown["maxUploadMb"] = int(shown["maxUploadMb"])
    shown["razorpayKeyId"] = await _razorpay_key_id(admin.upstream)
    return shown


async def _razorpay_key_id(upstream: Upstream) -> str | None:
    try:
        reply = await upstream.call(
            upstream.billing.GetCheckoutConfig, billing_pb2.GetCheckoutConfigRequest()
        )
    except (Unavailable, DeadlineExceeded, NotConfigured) as error:
        log.warning("billing.checkout_config_unavailable", error=error.code)
        return None
    return reply.key_id or None


# Feature flags


def _flag(flag: admin_pb2.FeatureFlag) -> FlagOut:
    return FlagOut(
        key=flag.key,
        name=flag.key,
        enabled=flag.enabled,
        description=flag.description,
        updated_by=flag.updated_by or None,
        updated_at=_moment(flag.updated_at),
    )


@router.get("/feature-flags")
async def list_flags(
    caller: AdminDep, admin: AdminClientDep, response: Response
) -> list[FlagOut]:
    reply = await admin.call(
        admin.stub.ListFeatureFlags, admin_pb2.ListFeatureFlagsRequest(), caller
    )
    _no_store(response)
    return [_flag(flag) for flag in reply.flags]


@router.put("/feature-flags/{key}")
async def set_flag(
    key: str, body: FlagBody, caller: AdminDep, admin: AdminClientDep
) -> FlagOut:
    """Turn a flag on or off, creating it if new (superadmin). Every
    process sees the change within a couple of seconds."""
    request = admin_pb2.SetFeatureFlagRequest(key=key, enabled=body.enabled)
    if body.description is not None:
        request.description = body.description
    reply = await admin.call(admin.stub.SetFeatureFlag, request, caller)
    return _flag(reply.flag)


# Announcements


def _announcement(row: admin_pb2.Announcement) -> AnnouncementOut:
    return AnnouncementOut(
        id=row.id,
        title=row.title,
        message=row.body,
        severity=row.severity,
        audience=row.audience,
        active=row.active,
        starts_at=_moment(row.starts_at),
        expires_at=_optional_moment(row, "expires_at"),
        created_by=row.created_by,
        created_at=_moment(row.created_at),
        updated_at=_moment(row.updated_at),
    )


@router.get("/announcements")
async def list_announcements(
    caller: AdminDep,
    admin: AdminClientDep,
    response: Response,
    limit: Annotated[int | None, Query()] = None,
    cursor: Cursor = None,
) -> list[AnnouncementOut]:
    """Every announcement, live or not, newest first."""
    reply = await admin.call(
        admin.stub.ListAnnouncements,
        admin_pb2.ListAnnouncementsRequest(
            page_size=min(_limit(limit), 200), page_token=cursor or ""
        ),
        caller,
    )
    _page(response, reply.next_page_token)
    return [_announcement(row) for row in reply.announcements]


@router.post("/announcements", status_code=201)
async def create_announcement(
    body: CreateAnnouncementBody, caller: AdminDep, admin: AdminClientDep
) -> AnnouncementOut:
    request = admin_pb2.CreateAnnouncementRequest(
        title=body.title,
        body=body.message,
        audience=body.audience,
        severity=body.severity,
        active=body.active,
    )
    if body.starts_at is not None:
        request.starts_at.CopyFrom(_stamp(body.starts_at))
    if body.expires_at is not None:
        request.expires_at.CopyFrom(_stamp(body.expires_at))
    reply = await admin.call(admin.stub.CreateAnnouncement, request, caller)
    return _announcement(reply.announcement)


@router.put("/announcements/{announcement_id}")
async def update_announcement(
    announcement_id: str,
    body: UpdateAnnouncementBody,
    caller: AdminDep,
    admin: AdminClientDep,
) -> AnnouncementOut:
    request = admin_pb2.UpdateAnnouncementRequest(id=announcement_id)
    for name, field in (
        ("title", "title"),
        ("message", "body"),
        ("severity", "severity"),
        ("audience", "audience"),
        ("active", "active"),
    ):
        if (value := getattr(body, name)) is not None:
            setattr(request, field, value)
    if body.starts_at is not None:
        request.starts_at.CopyFrom(_stamp(body.starts_at))
    if body.expires_at is not None:
        request.expires_at.CopyFrom(_stamp(body.expires_at))
    elif "expires_at" in body.model_fields_set:
        request.clear_expiry = True
    reply = await admin.call(admin.stub.UpdateAnnouncement, request, caller)
    return _announcement(reply.announcement)


@router.delete("/announcements/{announcement_id}")
async def delete_announcement(
    announcement_id: str, caller: AdminDep, admin: AdminClientDep
) -> AnnouncementOut:
    """Deactivate an announcement (it stays in the list, inactive)."""
    reply = await admin.call(
        admin.stub.DeleteAnnouncement,
        admin_pb2.DeleteAnnouncementRequest(id=announcement_id),
        caller,
    )
    return _announcement(reply.announcement)


@public_router.get("/api/announcements")
async def public_announcements(
    admin: AdminClientDep, viewer: ViewerDep, response: Response
) -> list[PublicAnnouncementOut]:
    """Live announcements: audience "all" for anyone, and "users" too for a
    signed-in user; most severe first."""
    reply = await admin.upstream.call(
        admin.stub.ListPublicAnnouncements,
        admin_pb2.ListPublicAnnouncementsRequest(),
        viewer,
    )
    response.headers["Cache-Control"] = (
        "private, max-age=30" if viewer else "max-age=30"
    )
    return [
        PublicAnnouncementOut(
            id=row.id,
            title=row.title,
            message=row.body,
            severity=row.severity,
            starts_at=_moment(row.starts_at),
            expires_at=_optional_moment(row, "expires_at"),
        )
        for row in reply.announcements
    ]


# Audit and error logs


def _page(response: Response, token: str) -> None:
    _no_store(response)
    if token:
        response.headers[NEXT_CURSOR_HEADER] = token


def _audit_entry(entry: admin_pb2.AuditEntry) -> AuditEntryOut:
    return AuditEntryOut(
        id=entry.id,
        action=entry.action,
        actor_id=entry.actor_id,
        user_id=entry.actor_id,
        actor_name=entry.actor_name,
        actor_role=entry.actor_role,
        target_type=entry.target_type,
        target_id=entry.target_id,
        before=_json(entry.before),
        after=_json(entry.after),
        client_address=entry.client_address or None,
        request_id=entry.request_id or None,
        status=entry.status,
        error=entry.error or None,
        created_at=_moment(entry.created_at),
    )


@router.get("/audit-logs")
async def list_audit_logs(
    caller: AdminDep,
    admin: AdminClientDep,
    response: Response,
    limit: Annotated[int | None, Query()] = None,
    cursor: Cursor = None,
    actor_id: Annotated[str | None, Query(alias="actorId", max_length=64)] = None,
    action: Text = None,
    target_type: Annotated[str | None, Query(alias="targetType", max_length=32)] = None,
    target_id: Annotated[str | None, Query(alias="targetId", max_length=200)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEntryOut]:
    """Operators' actions, newest first: who, what, on which target, the
    target before and after (secrets masked) and from which address.
    `limit` is 100 by default, at most 1000."""
    request = admin_pb2.ListAuditLogsRequest(
        actor_id=actor_id or "",
        action=action or "",
        target_type=target_type or "",
        target_id=target_id or "",
        page_size=_limit(limit),
        page_token=cursor or "",
    )
    if since is not None:
        request.since.CopyFrom(_stamp(since))
    if until is not None:
        request.until.CopyFrom(_stamp(until))
    reply = await admin.call(admin.stub.ListAuditLogs, request, caller)
    _page(response, reply.next_page_token)
    return [_audit_entry(entry) for entry in reply.entries]


def _error_entry(entry: admin_pb2.ErrorEntry) -> ErrorEntryOut:
    return ErrorEntryOut(
        id=entry.id,
        service=entry.service,
        type=entry.kind,
        severity=entry.severity,
        code=entry.code,
        error=entry.message,
        message=entry.message,
        user_id=entry.user_id or None,
        reference_id=entry.reference_id or None,
        details=dict(entry.details),
        resolved=entry.resolved,
        resolved_at=_optional_moment(entry, "resolved_at"),
        resolved_by=entry.resolved_by or None,
        created_at=_moment(entry.created_at),
    )


@router.get("/error-logs")
async def list_error_logs(
    caller: AdminDep,
    admin: AdminClientDep,
    response: Response,
    limit: Annotated[int | None, Query()] = None,
    cursor: Cursor = None,
    resolved: bool | None = None,
    service: Annotated[str | None, Query(max_length=32)] = None,
    severity: Annotated[str | None, Query(max_length=16)] = None,
) -> list[ErrorEntryOut]:
    """Failures the services reported, newest first."""
    request = admin_pb2.ListErrorLogsRequest(
        service=service or "",
        severity=severity or "",
        page_size=_limit(limit),
        page_token=cursor or "",
    )
    if resolved is not None:
        request.resolved = resolved
    reply = await admin.call(admin.stub.ListErrorLogs, request, caller)
    _page(response, reply.next_page_token)
    return [_error_entry(entry) for entry in reply.entries]


@router.post("/error-logs/{error_id}/resolve")
async def resolve_error(
    error_id: str, caller: AdminDep, admin: AdminClientDep
) -> ErrorEntryOut:
    """Mark an error resolved (support or superadmin)."""
    reply = await admin.call(
        admin.stub.ResolveError, admin_pb2.ResolveErrorRequest(id=error_id), caller
    )
    return _error_entry(reply.entry)


# Rate limits


def _rule(rule: admin_pb2.RateLimitRule) -> RateLimitOut:
    return RateLimitOut(
        subject=rule.subject,
        requests=rule.requests,
        window_seconds=rule.window_seconds,
        updated_by=rule.updated_by or None,
        updated_at=_moment(rule.updated_at),
    )


@router.get("/rate-limits")
async def list_rate_limits(
    caller: AdminDep, admin: AdminClientDep, response: Response
) -> list[RateLimitOut]:
    reply = await admin.call(
        admin.stub.ListRateLimits, admin_pb2.ListRateLimitsRequest(), caller
    )
    _no_store(response)
    return [_rule(rule) for rule in reply.rules]


@router.put("/rate-limits/{subject}")
async def set_rate_limit(
    subject: str, body: RateLimitBody, caller: AdminDep, admin: AdminClientDep
) -> RateLimitOut:
    """Allow `requests` per `windowSeconds` on the expensive routes
    (generate, upscale, chat messages, prompt enhancement) to a subject:
    `user:<user id>`, `tier:<plan id>` or `tier:free` (superadmin). A
    user's own rule wins over their tier's."""
    reply = await admin.call(
        admin.stub.SetRateLimit,
        admin_pb2.SetRateLimitRequest(
            subject=subject,
            requests=body.requests,
            window_seconds=body.window_seconds,
        ),
        caller,
    )
    return _rule(reply.rule)


@router.delete("/rate-limits/{subject}")
async def delete_rate_limit(
    subject: str, caller: AdminDep, admin: AdminClientDep
) -> SuccessOut:
    await admin.call(
        admin.stub.DeleteRateLimit,
        admin_pb2.DeleteRateLimitRequest(subject=subject),
        caller,
    )
    return SuccessOut()
