"""Request and response bodies of /api/auth and /api/admin/login, in the
camelCase the web client reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, StrictStr

from gateway.schemas.base import RequestBody, ResponseBody

MAX_TOKEN_LENGTH = 4096


class RegisterBody(RequestBody):
    email: StrictStr = Field(max_length=254, examples=["ann@example.com"])
    password: StrictStr = Field(max_length=100)
    name: StrictStr = Field(max_length=100, examples=["Ann"])


class LoginBody(RequestBody):
    email: StrictStr = Field(max_length=254)
    password: StrictStr = Field(min_length=1, max_length=100)


class GoogleBody(RequestBody):
    credential: StrictStr = Field(min_length=1, max_length=MAX_TOKEN_LENGTH)


class RefreshBody(RequestBody):
    refresh_token: StrictStr = Field(min_length=1, max_length=256)


class AdminLoginBody(RequestBody):
    username: StrictStr = Field(min_length=1, max_length=64)
    password: StrictStr = Field(min_length=1, max_length=256)


class TokenPairOut(ResponseBody):
    access_token: str
    refresh_token: str
    expires_in: int = Field(description="Access-token lifetime in seconds")
    refresh_expires_in: int = Field(
        description="Seconds until the session must sign in again"
    )


class UserOut(ResponseBody):
    id: str
    email: str
    name: str
    nickname: str
    avatar_url: str | None
    credits: float | None = Field(
        description="Credit balance; null while billing cannot be reached"
    )
    created_at: datetime


class WorkspaceSummaryOut(ResponseBody):
    id: str
    name: str
    is_default: bool
    user_role: str
    member_count: int
    credits: float
    credit_mode: str
    allocated_credits: float | None
    owner_id: str
    privacy_settings: dict[str, Any]


class SignedInOut(TokenPairOut):
    user: UserOut
    default_workspace: WorkspaceSummaryOut | None = None


class MeOut(UserOut):
    workspaces: list[WorkspaceSummaryOut]
    default_workspace: WorkspaceSummaryOut | None


class SessionOut(ResponseBody):
    id: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime
    user_agent: str | None
    ip_address: str | None
    current: bool


class SuccessOut(ResponseBody):
    success: bool = True
    message: str


class LogoutAllOut(SuccessOut):
    revoked_sessions: int


class AdminOut(ResponseBody):
    id: str
    username: str


class AdminLoginOut(ResponseBody):
    token: str
    expires_in: int
    admin: AdminOut
