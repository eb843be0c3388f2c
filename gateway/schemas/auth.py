"""Request and response bodies of /api/auth and /api/admin/login, in the
camelCase the web client reads."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, StrictStr

from gateway.schemas.base import RequestBody, ResponseBody
from gateway.schemas.workspaces import WorkspaceOut

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


class SignedInOut(TokenPairOut):
    user: UserOut
    default_workspace: WorkspaceOut | None = Field(
        default=None,
        description="The personal workspace; null while it cannot be read",
    )


class MeOut(UserOut):
    workspaces: list[WorkspaceOut] = Field(
        description="The caller's workspaces, the personal one first; empty "
        "while the workspace service cannot be reached"
    )
    default_workspace: WorkspaceOut | None


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
