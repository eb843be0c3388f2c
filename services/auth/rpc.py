"""gRPC servicer of the auth service: translates messages, opens the
transaction, calls the service, and raises domain errors unchanged (the
server interceptor maps them to statuses)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.grpc.identity import Access, current_caller
from libs.grpc.messages import refuse_unknown_fields, timestamp
from libs.grpc.server import ServiceDefinition
from libs.periods import Period
from services.auth import reports
from services.auth.models import Admin, Session, User
from services.auth.operators import AccountOperations
from services.auth.outbox import OutboxRelay
from services.auth.repository import UserFilter, UserRecord
from services.auth.service import (
    AuthService,
    ClientInfo,
    IssuedTokens,
    ProfileUpdate,
)

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

ACCESS = {
    "SummarizeUsers": Access.SERVICE,
    "Register": Access.SERVICE,
    "Login": Access.SERVICE,
    "GoogleSignIn": Access.SERVICE,
    "Refresh": Access.SERVICE,
    "Logout": Access.SERVICE,
    "AdminLogin": Access.SERVICE,
    "ListRevokedSessions": Access.SERVICE,
    "LookupUsers": Access.SERVICE,
    "LogoutAll": Access.USER,
    "ListSessions": Access.USER,
    "RevokeSession": Access.USER,
    "GetMe": Access.USER,
    "GetProfile": Access.USER,
    "UpdateProfile": Access.USER,
    "RegenerateNickname": Access.USER,
    "ListUsers": Access.SERVICE,
    "GetUser": Access.SERVICE,
    "SetUserStatus": Access.SERVICE,
    "DeleteUserData": Access.SERVICE,
    "ListAdmins": Access.SERVICE,
    "CreateAdmin": Access.SERVICE,
    "UpdateAdmin": Access.SERVICE,
    "ChangeAdminPassword": Access.ADMIN,
}


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        service: AuthService,
        sessions: async_sessionmaker[AsyncSession],
        reads: async_sessionmaker[AsyncSession],
        read_engine: AsyncEngine,
        outbox: OutboxRelay,
        operations: AccountOperations,
    ) -> None:
        self._service = service
        self._operations = operations
        self._sessions = sessions
        # Autocommit sessions for the one-SELECT reads that run on every page.
        self._reads = reads
        # GetMe runs on every page: one Core SELECT, no ORM, no transaction.
        self._read_engine = read_engine
        self._outbox = outbox

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        client = _client(request.client)
        await self._throttle("register", address=client.ip_address)
        async with self._sessions.begin() as db:
            signed_in = await self._service.register(
                db, request.email, request.password, request.name, client
            )
        # Sign-up credits usually land before the reply; if billing is slow or
        # down, the outbox keeps retrying in the background.
        if signed_in.outbox_event_id is not None:
            await self._outbox.flush(signed_in.outbox_event_id)
        return auth_pb2.RegisterResponse(
            tokens=_token_pair(signed_in.tokens), user=_user(signed_in.user)
        )

    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        client = _client(request.client)
        await self._throttle(
            "login", address=client.ip_address, account=request.email.strip().lower()
        )
        async with self._sessions.begin() as db:
            signed_in = await self._service.login(
                db, request.email, request.password, client
            )
        return auth_pb2.LoginResponse(
            tokens=_token_pair(signed_in.tokens), user=_user(signed_in.user)
        )

    async def GoogleSignIn(
        self, request: auth_pb2.GoogleSignInRequest, context: Context
    ) -> auth_pb2.GoogleSignInResponse:
        client = _client(request.client)
        await self._throttle("google", address=client.ip_address)
        async with self._sessions.begin() as db:
            signed_in = await self._service.google_sign_in(
                db, request.credential, client
            )
        if signed_in.outbox_event_id is not None:
            await self._outbox.flush(signed_in.outbox_event_id)
        return auth_pb2.GoogleSignInResponse(
            tokens=_token_pair(signed_in.tokens),
            user=_user(signed_in.user),
            created=signed_in.created,
        )

    async def Refresh(
        self, request: auth_pb2.RefreshRequest, context: Context
    ) -> auth_pb2.RefreshResponse:
        client = _client(request.client)
        await self._throttle("refresh", address=client.ip_address)
        async with self._sessions.begin() as db:
            outcome = await self._service.refresh(db, request.refresh_token, client)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.tokens is not None
        return auth_pb2.RefreshResponse(tokens=_token_pair(outcome.tokens))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        async with self._sessions.begin() as db:
            await self._service.logout(db, request.refresh_token)
        return auth_pb2.LogoutResponse()

    async def LogoutAll(
        self, request: auth_pb2.LogoutAllRequest, context: Context
    ) -> auth_pb2.LogoutAllResponse:
        async with self._sessions.begin() as db:
            count = await self._service.logout_all(db, current_caller().user_id)
        return auth_pb2.LogoutAllResponse(revoked_sessions=count)

    async def ListSessions(
        self, request: auth_pb2.ListSessionsRequest, context: Context
    ) -> auth_pb2.ListSessionsResponse:
        caller = current_caller()
        async with self._reads() as db:
            sessions = await self._service.list_sessions(db, caller.user_id)
        return auth_pb2.ListSessionsResponse(
            sessions=[_session(s, caller.session_id) for s in sessions]
        )

    async def RevokeSession(
        self, request: auth_pb2.RevokeSessionRequest, context: Context
    ) -> auth_pb2.RevokeSessionResponse:
        async with self._sessions.begin() as db:
            await self._service.revoke_session(
                db, current_caller().user_id, request.session_id
            )
        return auth_pb2.RevokeSessionResponse()

    async def GetMe(
        self, request: auth_pb2.GetMeRequest, context: Context
    ) -> auth_pb2.GetMeResponse:
        async with self._read_engine.connect() as connection:
            user = await self._service.me_record(connection, current_caller().user_id)
        return auth_pb2.GetMeResponse(user=_user(user))

    async def GetProfile(
        self, request: auth_pb2.GetProfileRequest, context: Context
    ) -> auth_pb2.GetProfileResponse:
        async with self._reads() as db:
            user = await self._service.me(db, current_caller().user_id)
        return auth_pb2.GetProfileResponse(profile=_profile(user))

    async def UpdateProfile(
        self, request: auth_pb2.UpdateProfileRequest, context: Context
    ) -> auth_pb2.UpdateProfileResponse:
        refuse_unknown_fields(request)
        update = ProfileUpdate(
            name=request.name if request.HasField("name") else None,
            nickname=request.nickname if request.HasField("nickname") else None,
            bio=request.bio if request.HasField("bio") else None,
            avatar_url=request.avatar_url if request.HasField("avatar_url") else None,
            is_public_profile=(
                request.is_public_profile
                if request.HasField("is_public_profile")
                else None
            ),
        )
        async with self._sessions.begin() as db:
            user = await self._service.update_profile(
                db, current_caller().user_id, update
            )
        return auth_pb2.UpdateProfileResponse(profile=_profile(user))

    async def RegenerateNickname(
        self, request: auth_pb2.RegenerateNicknameRequest, context: Context
    ) -> auth_pb2.RegenerateNicknameResponse:
        async with self._sessions.begin() as db:
            user = await self._service.regenerate_nickname(db, current_caller().user_id)
        return auth_pb2.RegenerateNicknameResponse(profile=_profile(user))

    async def AdminLogin(
        self, request: auth_pb2.AdminLoginRequest, context: Context
    ) -> auth_pb2.AdminLoginResponse:
        client = _client(request.client)
        await self._throttle(
            "admin-login",
            address=client.ip_address,
            account=request.username.strip().lower(),
        )
        async with self._sessions.begin() as db:
            signed_in = await self._service.admin_login(
                db, request.username, request.password, client
            )
        return auth_pb2.AdminLoginResponse(
            access_token=signed_in.access_token,
            expires_in=signed_in.expires_in,
            admin=_admin(signed_in.admin),
            session_id=str(signed_in.session_id),
        )

    async def ListRevokedSessions(
        self,
        request: auth_pb2.ListRevokedSessionsRequest,
        context: Context,
    ) -> auth_pb2.ListRevokedSessionsResponse:
        since = (
            request.revoked_after.ToDatetime(tzinfo=UTC)
            if request.HasField("revoked_after")
            else None
        )
        async with self._reads() as db:
            session_ids, as_of = await self._service.revoked_since(db, since)
        return auth_pb2.ListRevokedSessionsResponse(
            session_ids=[str(s) for s in session_ids], as_of=timestamp(as_of)
        )

    async def SummarizeUsers(
        self, request: auth_pb2.SummarizeUsersRequest, context: Context
    ) -> auth_pb2.SummarizeUsersResponse:
        period = Period.from_request(request.start, request.end, request.bucket)
        async with self._reads() as db:
            summary = await reports.summarize_users(db, period, datetime.now(UTC))
        return auth_pb2.SummarizeUsersResponse(
            total_users=summary.total,
            users_by_status=summary.by_status,
            signups=summary.signups,
            signup_buckets=[
                auth_pb2.SignupBucket(start=timestamp(moment), count=count)
                for moment, count in summary.signup_buckets
            ],
            daily_active_users=summary.daily_active,
            weekly_active_users=summary.weekly_active,
            monthly_active_users=summary.monthly_active,
        )

    async def LookupUsers(
        self, request: auth_pb2.LookupUsersRequest, context: Context
    ) -> auth_pb2.LookupUsersResponse:
        async with self._reads() as db:
            users = await self._service.lookup_users(
                db, list(request.user_ids), request.email
            )
        return auth_pb2.LookupUsersResponse(users=[_user(u) for u in users])

    # Operators' requests, made through the admin service

    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: Context
    ) -> auth_pb2.ListUsersResponse:
        found = UserFilter(
            query=request.query,
            status=request.status,
            auth_provider=request.auth_provider,
            created_after=_moment(request, "created_after"),
            created_before=_moment(request, "created_before"),
        )
        async with self._reads() as db:
            page = await self._operations.list_users(
                db, found, request.page_size, request.page_token
            )
        return auth_pb2.ListUsersResponse(
            users=[_account(u) for u in page.users],
            next_page_token=page.next_page_token,
        )

    async def GetUser(
        self, request: auth_pb2.GetUserRequest, context: Context
    ) -> auth_pb2.GetUserResponse:
        async with self._reads() as db:
            detail = await self._operations.user_detail(db, request.user_id)
        reply = auth_pb2.GetUserResponse(
            user=_account(detail.user), active_sessions=detail.active_sessions
        )
        if detail.last_seen_at is not None:
            reply.last_seen_at.CopyFrom(timestamp(detail.last_seen_at))
        return reply

    async def SetUserStatus(
        self, request: auth_pb2.SetUserStatusRequest, context: Context
    ) -> auth_pb2.SetUserStatusResponse:
        refuse_unknown_fields(request)
        async with self._sessions.begin() as db:
            change = await self._operations.set_user_status(
                db,
                request.user_id,
                request.status,
                request.reason,
                request.idempotency_key,
            )
        return auth_pb2.SetUserStatusResponse(
            user=_account(change.user),
            previous_status=change.previous_status,
            revoked_sessions=change.revoked_sessions,
        )

    async def DeleteUserData(
        self, request: auth_pb2.DeleteUserDataRequest, context: Context
    ) -> auth_pb2.DeleteUserDataResponse:
        async with self._sessions.begin() as db:
            outcome = await self._operations.delete_user_data(db, request.user_id)
        return auth_pb2.DeleteUserDataResponse(
            anonymised=outcome.anonymised, revoked_sessions=outcome.revoked_sessions
        )

    async def ListAdmins(
        self, request: auth_pb2.ListAdminsRequest, context: Context
    ) -> auth_pb2.ListAdminsResponse:
        async with self._reads() as db:
            admins = await self._operations.list_admins(db)
        return auth_pb2.ListAdminsResponse(admins=[_admin(a) for a in admins])

    async def CreateAdmin(
        self, request: auth_pb2.CreateAdminRequest, context: Context
    ) -> auth_pb2.CreateAdminResponse:
        refuse_unknown_fields(request)
        async with self._sessions.begin() as db:
            admin = await self._operations.create_admin(
                db,
                request.username,
                request.password,
                request.role,
                request.idempotency_key,
            )
        return auth_pb2.CreateAdminResponse(admin=_admin(admin))

    async def UpdateAdmin(
        self, request: auth_pb2.UpdateAdminRequest, context: Context
    ) -> auth_pb2.UpdateAdminResponse:
        refuse_unknown_fields(request)
        async with self._sessions.begin() as db:
            change = await self._operations.update_admin(
                db,
                request.admin_id,
                request.role if request.HasField("role") else None,
                request.disabled if request.HasField("disabled") else None,
                request.idempotency_key,
            )
        previous = change.previous
        return auth_pb2.UpdateAdminResponse(
            admin=_admin(change.admin),
            previous=auth_pb2.Admin(
                id=previous.id,
                username=previous.username,
                role=previous.role,
                disabled=previous.disabled,
                created_at=timestamp(previous.created_at),
                updated_at=timestamp(previous.updated_at),
            ),
            revoked_sessions=change.revoked_sessions,
        )

    async def ChangeAdminPassword(
        self, request: auth_pb2.ChangeAdminPasswordRequest, context: Context
    ) -> auth_pb2.ChangeAdminPasswordResponse:
        caller = current_caller()
        await self._throttle("admin-password", account=caller.admin_id)
        async with self._sessions.begin() as db:
            revoked = await self._operations.change_admin_password(
                db,
                caller.admin_id,
                caller.session_id,
                request.current_password,
                request.new_password,
            )
        return auth_pb2.ChangeAdminPasswordResponse(revoked_sessions=revoked)

    async def _throttle(self, action: str, **subjects: str | None) -> None:
        async with self._sessions.begin() as db:
            await self._service.throttle(db, action, **subjects)


def definition(servicer: AuthServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
        servicer=servicer,
        register=auth_pb2_grpc.add_AuthServiceServicer_to_server,
        access=ACCESS,
    )


def _client(message: auth_pb2.ClientInfo) -> ClientInfo:
    return ClientInfo(
        ip_address=message.ip_address[:64] or None,
        user_agent=message.user_agent[:512] or None,
    )


def _token_pair(tokens: IssuedTokens) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
        refresh_expires_in=tokens.refresh_expires_in,
        session_id=str(tokens.session_id),
    )


def _user(user: User | UserRecord) -> auth_pb2.User:
    return auth_pb2.User(
        id=str(user.id),
        email=user.email,
        name=user.name,
        nickname=user.nickname,
        avatar_url=user.avatar_url or "",
        auth_provider=user.auth_provider,
        created_at=timestamp(user.created_at),
    )


def _profile(user: User) -> auth_pb2.Profile:
    return auth_pb2.Profile(
        id=str(user.id),
        email=user.email,
        name=user.name,
        nickname=user.nickname,
        bio=user.bio or "",
        avatar_url=user.avatar_url or "",
        is_public_profile=user.is_public_profile,
        created_at=timestamp(user.created_at),
        updated_at=timestamp(user.updated_at),
    )


def _session(session: Session, current_session_id: str | None) -> auth_pb2.Session:
    return auth_pb2.Session(
        id=str(session.id),
        created_at=timestamp(session.created_at),
        expires_at=timestamp(session.expires_at),
        last_used_at=timestamp(session.last_used_at),
        user_agent=session.user_agent or "",
        ip_address=session.ip_address or "",
        current=str(session.id) == current_session_id,
    )


def _admin(admin: Admin) -> auth_pb2.Admin:
    return auth_pb2.Admin(
        id=str(admin.id),
        username=admin.username,
        role=admin.role,
        disabled=admin.disabled,
        created_at=timestamp(admin.created_at),
        updated_at=timestamp(admin.updated_at),
    )


def _account(user: User) -> auth_pb2.UserAccount:
    """A user as an operator sees them: never the password hash."""
    account = auth_pb2.UserAccount(
        id=str(user.id),
        email=user.email,
        name=user.name,
        nickname=user.nickname,
        avatar_url=user.avatar_url or "",
        auth_provider=user.auth_provider,
        status=user.status,
        status_reason=user.status_reason or "",
        created_at=timestamp(user.created_at),
        updated_at=timestamp(user.updated_at),
        has_password=user.password_hash is not None,
        google_linked=user.google_id is not None,
        bio=user.bio or "",
        is_public_profile=user.is_public_profile,
    )
    if user.status_changed_at is not None:
        account.status_changed_at.CopyFrom(timestamp(user.status_changed_at))
    return account


def _moment(request: auth_pb2.ListUsersRequest, field: str) -> datetime | None:
    if not request.HasField(field):  # type: ignore[arg-type]
        return None
    stamp: Timestamp = getattr(request, field)
    return stamp.ToDatetime(tzinfo=UTC)
