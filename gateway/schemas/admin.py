"""Request and response bodies of the operators' core routes (/api/admin
settings, feature flags, announcements, audit and error logs, rate limits)
and of the public /api/settings and /api/announcements, in the camelCase
the admin web page reads (web-client.md §2.12). The admin service owns the
rules; lengths here only give a quick 400."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictInt, StrictStr

from gateway.schemas.base import RequestBody, ResponseBody

Title = Annotated[StrictStr, Field(max_length=200)]
Message = Annotated[StrictStr, Field(max_length=5000)]
Choice = Annotated[StrictStr, Field(max_length=16)]


class SettingOut(ResponseBody):
    key: str
    type: str = Field(description="number, integer, text, email or secret")
    value: Any = Field(description="Secrets show only their last 4 characters")
    description: str
    public: bool
    read_only: bool
    source: str = Field(description="admin, catalog, billing or environment")
    is_set: bool


class SettingsSavedOut(ResponseBody):
    success: bool = True
    changed: list[str]
    settings: dict[str, Any]


class FlagBody(RequestBody):
    enabled: StrictBool
    description: Annotated[StrictStr, Field(max_length=500)] | None = None


class FlagOut(ResponseBody):
    key: str
    name: str = Field(description="The key again, as the original table named it")
    enabled: bool
    description: str
    updated_by: str | None
    updated_at: datetime


class CreateAnnouncementBody(RequestBody):
    title: Title
    message: Message = ""
    severity: Choice = Field(
        default="info", description="info, warning, error, critical"
    )
    audience: Choice = Field(default="all", description="all, users or admins")
    active: StrictBool = True
    starts_at: datetime | None = Field(default=None, description="Now when left out")
    expires_at: datetime | None = None


class UpdateAnnouncementBody(RequestBody):
    """The fields to change; the others keep their values. `expiresAt: null`
    removes the expiry."""

    title: Title | None = None
    message: Message | None = None
    severity: Choice | None = None
    audience: Choice | None = None
    active: StrictBool | None = None
    starts_at: datetime | None = None
    expires_at: datetime | None = None


class AnnouncementOut(ResponseBody):
    id: str
    title: str
    message: str
    severity: str
    audience: str
    active: bool
    starts_at: datetime
    expires_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class PublicAnnouncementOut(ResponseBody):
    id: str
    title: str
    message: str
    severity: str
    starts_at: datetime
    expires_at: datetime | None


class AuditEntryOut(ResponseBody):
    id: int
    action: str
    actor_id: str
    user_id: str = Field(description="The operator's id (what the web page reads)")
    actor_name: str
    actor_role: str
    target_type: str
    target_id: str
    before: Any
    after: Any
    client_address: str | None
    request_id: str | None
    status: str = Field(description="applied, pending or failed")
    error: str | None
    created_at: datetime


class ErrorEntryOut(ResponseBody):
    id: str
    service: str
    type: str
    severity: str
    code: str
    error: str = Field(description="The message (what the web page reads)")
    message: str
    user_id: str | None
    reference_id: str | None
    details: dict[str, str]
    resolved: bool
    resolved_at: datetime | None
    resolved_by: str | None
    created_at: datetime


class RateLimitBody(RequestBody):
    requests: Annotated[StrictInt, Field(ge=1, le=1_000_000)]
    window_seconds: Annotated[StrictInt, Field(ge=1, le=86_400)]


class RateLimitOut(ResponseBody):
    subject: str
    requests: int
    window_seconds: int
    updated_by: str | None
    updated_at: datetime


class SuccessOut(ResponseBody):
    success: bool = True
