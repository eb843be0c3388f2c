"""/api/auth and /api/admin/login: accounts, sessions and tokens."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response, status
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.auth.v1 import auth_pb2
from omnihub.billing.v1 import billing_pb2
from omnihub.workspace.v1 import workspace_pb2

from gateway.deps import ClientDep, Principal, UpstreamDep, UserDep, principal
from gateway.me import MeAnswers
from gateway.routers.billing import own_account
from gateway.routers.workspaces import WorkspaceClient, WorkspacesDep, workspace_out
from gateway.schemas.auth import (
    AdminLoginBody,
    AdminLoginOut,
    AdminOut,
    GoogleBody,
    LoginBody,
    LogoutAllOut,
    MeOut,
    RefreshBody,
    RegisterBody,
    SessionOut,
    SignedInOut,
    SuccessOut,
    TokenPairOut,
    UserOut,
)
from gateway.schemas.billing import credits
from gateway.schemas.workspaces import WorkspaceOut
from gateway.upstream import Upstream
from libs.errors import DeadlineExceeded, Unavailable
from libs.logs import get_logger
from libs.tokens import Audience

log = get_logger(__name__)
router = APIRouter(prefix="/api/auth", tags=["auth"])
NO_STORE = {"Cache-Control": "no-store"}
admin_router = APIRouter(prefix="/api/admin", tags=["admin"])


def _datetime(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _token_pair(tokens: auth_pb2.TokenPair) -> dict[str, object]:
    return {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_in": tokens.expires_in,
        "refresh_expires_in": tokens.refresh_expires_in,
    }


def _user(user: auth_pb2.User, balance: float | None) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        nickname=user.nickname,
        avatar_url=user.avatar_url or None,
        credits=balance,
        created_at=_datetime(user.created_at),
    )


async def _balance(
    upstream: Upstream, user_id: str, authorization: str
) -> float | None:
    """The user's credits from billing; None (not a made-up 0) while billing
    cannot answer, so that signing in still works during a billing outage."""
    try:
        reply = await upstream.call(
            upstream.billing.GetBalance,
            billing_pb2.GetBalanceRequest(account=own_account(user_id)),
            authorization,
        )
    except (Unavailable, DeadlineExceeded) as exc:
        log.warning("billing.balance_unavailable", error=exc.code)
        return None
    return credits(reply.balance_micros)


async def _workspaces(
    workspaces: WorkspaceClient, authorization: str
) -> list[WorkspaceOut] | None:
    """The user's workspaces; None while the workspace service cannot
    answer, so that signing in still works during its outage."""
    try:
        reply = await workspaces.upstream.call(
            workspaces.stub.ListWorkspaces,
            workspace_pb2.ListWorkspacesRequest(),
            authorization,
        )
    except (Unavailable, DeadlineExceeded) as exc:
        log.warning("workspace.list_unavailable", error=exc.code)
        return None
    return [workspace_out(workspace) for workspace in reply.workspaces]


def _personal(workspaces: list[WorkspaceOut] | None) -> WorkspaceOut | None:
    return next((w for w in workspaces or () if w.is_default), None)


async def _signed_in(
    upstream: Upstream,
    workspaces: WorkspaceClient,
    tokens: auth_pb2.TokenPair,
    user: auth_pb2.User,
) -> SignedInOut:
    authorization = f"Bearer {tokens.access_token}"
    balance, listed = await asyncio.gather(
        _balance(upstream, user.id, authorization),
        _workspaces(workspaces, authorization),
    )
    return SignedInOut(
        **_token_pair(tokens),
        user=_user(user, balance),
        default_workspace=_personal(listed),
    )


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(
    body: RegisterBody,
    client: ClientDep,
    upstream: UpstreamDep,
    workspaces: WorkspacesDep,
) -> SignedInOut:
    """Create an e-mail account and sign it in."""
    reply = await upstream.call(
        upstream.auth.Register,
        auth_pb2.RegisterRequest(
            email=body.email, password=body.password, name=body.name, client=client
        ),
    )
    return await _signed_in(upstream, workspaces, reply.tokens, reply.user)


@router.post("/login")
async def login(
    body: LoginBody,
    client: ClientDep,
    upstream: UpstreamDep,
    workspaces: WorkspacesDep,
) -> SignedInOut:
    """Sign in with e-mail and password."""
    reply = await upstream.call(
        upstream.auth.Login,
        auth_pb2.LoginRequest(email=body.email, password=body.password, client=client),
    )
    return await _signed_in(upstream, workspaces, reply.tokens, reply.user)


@router.post("/google")
async def google(
    body: GoogleBody,
    client: ClientDep,
    upstream: UpstreamDep,
    workspaces: WorkspacesDep,
) -> SignedInOut:
    """Sign in with a Google Identity Services ID token."""
    reply = await upstream.call(
        upstream.auth.GoogleSignIn,
        auth_pb2.GoogleSignInRequest(credential=body.credential, client=client),
    )
    return await _signed_in(upstream, workspaces, reply.tokens, reply.user)


@router.post("/refresh")
async def refresh(
    body: RefreshBody, client: ClientDep, upstream: UpstreamDep
) -> TokenPairOut:
    """Exchange a refresh token for a new pair; the old one stops working."""
    reply = await upstream.call(
        upstream.auth.Refresh,
        auth_pb2.RefreshRequest(refresh_token=body.refresh_token, client=client),
    )
    return TokenPairOut(**_token_pair(reply.tokens))


@router.post("/logout")
async def logout(body: RefreshBody, upstream: UpstreamDep) -> SuccessOut:
    """End the session of a refresh token (always succeeds)."""
    await upstream.call(
        upstream.auth.Logout, auth_pb2.LogoutRequest(refresh_token=body.refresh_token)
    )
    return SuccessOut(message="Logged out successfully")


@router.post("/logout-all")
async def logout_all(user: UserDep, upstream: UpstreamDep) -> LogoutAllOut:
    """End every session of the caller, this one included."""
    reply = await upstream.call(
        upstream.auth.LogoutAll, auth_pb2.LogoutAllRequest(), user.authorization
    )
    return LogoutAllOut(
        message="Logged out from all devices successfully",
        revoked_sessions=reply.revoked_sessions,
    )


@router.get("/sessions")
async def sessions(user: UserDep, upstream: UpstreamDep) -> list[SessionOut]:
    """The caller's active sessions, newest first."""
    reply = await upstream.call(
        upstream.auth.ListSessions, auth_pb2.ListSessionsRequest(), user.authorization
    )
    return [
        SessionOut(
            id=s.id,
            created_at=_datetime(s.created_at),
            expires_at=_datetime(s.expires_at),
            last_used_at=_datetime(s.last_used_at),
            user_agent=s.user_agent or None,
            ip_address=s.ip_address or None,
            current=s.current,
        )
        for s in reply.sessions
    ]


@router.delete("/sessions/{session_id}")
async def revoke_session(
    session_id: str, user: UserDep, upstream: UpstreamDep
) -> SuccessOut:
    """End one of the caller's sessions; 404 if it is not theirs or not live."""
    await upstream.call(
        upstream.auth.RevokeSession,
        auth_pb2.RevokeSessionRequest(session_id=session_id[:64]),
        user.authorization,
    )
    return SuccessOut(message="Session revoked successfully")


@router.get("/me", response_model=MeOut)
async def me(request: Request) -> Response:
    """The signed-in user, their workspaces and their personal workspace.
    Changes made elsewhere may show up to ME_CACHE_SECONDS late (see
    gateway/me.py); the caller's own writes show at once."""
    return await fast_me(request)


async def fast_me(request: Request) -> Response:
    """GET /api/auth/me itself. The app mounts it as a plain Starlette route
    ahead of FastAPI's (which stays for the OpenAPI description): the web
    client asks for it on every page, so it skips FastAPI's parameter
    solving and serves a session's recent answer when one is kept."""
    user = principal(request, Audience.USER)
    answers: MeAnswers = request.app.state.me_answers
    session_id = user.claims.session_id

    async def read() -> tuple[bytes, bool]:
        answer, complete = await _me_answer(request, user)
        return answer.model_dump_json(by_alias=True).encode(), complete

    if session_id:
        body = await answers.answer(session_id, user.id, read)
    else:
        body, _ = await read()
    return Response(body, media_type="application/json", headers=NO_STORE)


async def _me_answer(request: Request, user: Principal) -> tuple[MeOut, bool]:
    """The answer, and whether every service contributed to it."""
    upstream: Upstream = request.app.state.upstream
    workspaces: WorkspaceClient = request.app.state.workspaces
    reply, balance, listed = await asyncio.gather(
        upstream.call(upstream.auth.GetMe, auth_pb2.GetMeRequest(), user.authorization),
        _balance(upstream, user.id, user.authorization),
        _workspaces(workspaces, user.authorization),
    )
    answer = MeOut(
        **_user(reply.user, balance).model_dump(),
        workspaces=listed or [],
        default_workspace=_personal(listed),
    )
    return answer, balance is not None and listed is not None


@admin_router.post("/login")
async def admin_login(
    body: AdminLoginBody, client: ClientDep, upstream: UpstreamDep
) -> AdminLoginOut:
    """Operator sign-in. The token works on /api/admin routes only."""
    reply = await upstream.call(
        upstream.auth.AdminLogin,
        auth_pb2.AdminLoginRequest(
            username=body.username, password=body.password, client=client
        ),
    )
    return AdminLoginOut(
        token=reply.access_token,
        expires_in=reply.expires_in,
        admin=AdminOut(id=reply.admin.id, username=reply.admin.username),
    )
