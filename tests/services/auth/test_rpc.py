"""The auth service over its real gRPC interface, backed by PostgreSQL.

Calls carry the metadata the gateway sends: an internal token naming the
calling process and, for user methods, the user's bearer token. Each service
checks both itself, so these tests call the service directly.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import bcrypt
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.config import RateLimit, Settings
from libs.db import create_engine
from libs.errors import InvalidArgument
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY
from libs.tokens import Audience, TokenSigner
from services.auth.main import AuthProcess, ensure_admin
from services.auth.models import SCHEMA
from tests.fakes.google import FakeGoogle
from tests.suite import free_port, run_service

PASSWORD = "a-good-password"
Metadata = tuple[tuple[str, str], ...]


def unique_email(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


@dataclass
class AuthClient:
    """A caller of one auth process, holding what the gateway would send."""

    stub: auth_pb2_grpc.AuthServiceAsyncStub
    signer: TokenSigner

    def internal(self) -> Metadata:
        token = self.signer.issue(Audience.INTERNAL, "tests", 60)
        return ((INTERNAL_TOKEN_KEY, token),)

    def as_user(self, access_token: str) -> Metadata:
        """The gateway's call on behalf of a signed-in user."""
        return (*self.internal(), (AUTHORIZATION_KEY, f"Bearer {access_token}"))

    async def register(
        self, email: str | None = None, password: str = PASSWORD
    ) -> auth_pb2.RegisterResponse:
        response: auth_pb2.RegisterResponse = await self.stub.Register(
            auth_pb2.RegisterRequest(
                email=email or unique_email(), password=password, name="Test User"
            ),
            metadata=self.internal(),
            timeout=10,
        )
        return response

    async def login(
        self, email: str, password: str = PASSWORD
    ) -> auth_pb2.LoginResponse:
        response: auth_pb2.LoginResponse = await self.stub.Login(
            auth_pb2.LoginRequest(email=email, password=password),
            metadata=self.internal(),
            timeout=10,
        )
        return response

    async def refresh(self, refresh_token: str) -> auth_pb2.TokenPair:
        response: auth_pb2.RefreshResponse = await self.stub.Refresh(
            auth_pb2.RefreshRequest(refresh_token=refresh_token),
            metadata=self.internal(),
            timeout=10,
        )
        return response.tokens

    async def logout(self, refresh_token: str) -> None:
        await self.stub.Logout(
            auth_pb2.LogoutRequest(refresh_token=refresh_token),
            metadata=self.internal(),
            timeout=10,
        )

    async def me(self, access_token: str) -> auth_pb2.User:
        response: auth_pb2.GetMeResponse = await self.stub.GetMe(
            auth_pb2.GetMeRequest(), metadata=self.as_user(access_token), timeout=10
        )
        return response.user

    async def admin_login(
        self, username: str, password: str
    ) -> auth_pb2.AdminLoginResponse:
        response: auth_pb2.AdminLoginResponse = await self.stub.AdminLogin(
            auth_pb2.AdminLoginRequest(username=username, password=password),
            metadata=self.internal(),
            timeout=10,
        )
        return response


async def auth_client(address: str, settings: Settings) -> AsyncIterator[AuthClient]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield AuthClient(
            auth_pb2_grpc.AuthServiceStub(channel),
            TokenSigner(settings.signing_secret()),
        )


@pytest.fixture(scope="module")
async def auth(
    settings: Settings, auth_service: AuthProcess
) -> AsyncIterator[AuthClient]:
    async for client in auth_client(settings.auth_address, settings):
        yield client


@pytest.fixture(scope="module")
async def strict_auth(settings: Settings) -> AsyncIterator[AuthClient]:
    """A second auth process on the same database, with a one-second session
    lifetime and three sign-in attempts per account a minute: what the
    suite's lenient process cannot show."""
    strict = settings.model_copy(
        update={
            "auth_address": f"127.0.0.1:{free_port()}",
            "refresh_token_expiry": 1,
            "auth_rate_limit_account": RateLimit(3, 60),
        }
    )
    running = await run_service(AuthProcess(), strict)
    async for client in auth_client(strict.auth_address, strict):
        yield client
    await running.stop(grace=0)


@pytest.fixture(scope="module")
async def database(
    settings: Settings, auth_service: AuthProcess
) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, SCHEMA)
    yield engine
    await engine.dispose()


async def sql(engine: AsyncEngine, statement: str, **values: Any) -> Any:
    """Run one statement in its own transaction; the first column of the
    first row, if it returns rows."""
    async with engine.begin() as connection:
        result = await connection.execute(text(statement), values)
        return result.scalar() if result.returns_rows else None


async def refusal(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def reason(error: grpc.aio.AioRpcError) -> str:
    """The stable error code (google.rpc.ErrorInfo.reason) of a failed call."""
    for detail in _rich_status(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError("no ErrorInfo in the status")


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    for detail in _rich_status(error).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return {v.field: v.description for v in bad.field_violations}
    return {}


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    for detail in _rich_status(error).details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return float(retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9)
    return None


def _rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    status: status_pb2.Status | None = rpc_status.from_call(error)
    assert status is not None, "the call carried no rich status"
    return status


async def refused_within(
    seconds: float, call: Callable[[], Awaitable[object]]
) -> grpc.aio.AioRpcError | None:
    """Repeat `call()` until it fails; the failure, or None if it never did."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            return error
        await asyncio.sleep(0.05)
    return None


async def suspend(database: AsyncEngine, email: str) -> None:
    await sql(
        database, "UPDATE auth.users SET status = 'suspended' WHERE email = :e", e=email
    )


async def signed_in_admin(settings: Settings, auth: AuthClient) -> str:
    """An operator's access token, for an operator made the way `make run` does."""
    username = f"ops-{uuid.uuid4().hex[:8]}"
    password = "operator-password-long"
    await ensure_admin(
        settings.model_copy(
            update={"admin_username": username, "admin_password": SecretStr(password)}
        )
    )
    return (await auth.admin_login(username, password)).access_token


class TestAccessRules:
    async def test_login_without_internal_token_is_refused(
        self, auth: AuthClient
    ) -> None:
        error = await refusal(
            auth.stub.Login(
                auth_pb2.LoginRequest(email=unique_email(), password=PASSWORD),
                timeout=10,
            )
        )

        assert error.code() in {
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        }

    async def test_login_with_only_a_user_token_is_permission_denied(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()

        error = await refusal(
            auth.stub.Login(
                auth_pb2.LoginRequest(email=registered.user.email, password=PASSWORD),
                metadata=(
                    (AUTHORIZATION_KEY, f"Bearer {registered.tokens.access_token}"),
                ),
                timeout=10,
            )
        )

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED

    async def test_internal_token_of_another_secret_is_unauthenticated(
        self, auth: AuthClient
    ) -> None:
        forged = TokenSigner("not-our-secret-" + "f" * 32).issue(
            Audience.INTERNAL, "gateway", 60
        )

        error = await refusal(
            auth.stub.Login(
                auth_pb2.LoginRequest(email=unique_email(), password=PASSWORD),
                metadata=((INTERNAL_TOKEN_KEY, forged),),
                timeout=10,
            )
        )

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert reason(error) == "invalid_token"

    async def test_get_me_without_user_token_is_unauthenticated(
        self, auth: AuthClient
    ) -> None:
        error = await refusal(
            auth.stub.GetMe(
                auth_pb2.GetMeRequest(), metadata=auth.internal(), timeout=10
            )
        )

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED

    async def test_get_me_without_any_token_is_unauthenticated(
        self, auth: AuthClient
    ) -> None:
        error = await refusal(auth.stub.GetMe(auth_pb2.GetMeRequest(), timeout=10))

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED

    async def test_get_me_with_admin_token_is_permission_denied(
        self, settings: Settings, auth: AuthClient
    ) -> None:
        admin_token = await signed_in_admin(settings, auth)

        error = await refusal(auth.me(admin_token))

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED

    async def test_list_revoked_sessions_refuses_a_user(self, auth: AuthClient) -> None:
        registered = await auth.register()
        user_only = ((AUTHORIZATION_KEY, f"Bearer {registered.tokens.access_token}"),)

        error = await refusal(
            auth.stub.ListRevokedSessions(
                auth_pb2.ListRevokedSessionsRequest(), metadata=user_only, timeout=10
            )
        )

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED

    async def test_list_revoked_sessions_answers_a_service(
        self, auth: AuthClient
    ) -> None:
        response = await auth.stub.ListRevokedSessions(
            auth_pb2.ListRevokedSessionsRequest(), metadata=auth.internal(), timeout=10
        )

        assert response.HasField("as_of")


class TestRegister:
    async def test_email_is_stored_trimmed_and_lower_cased(
        self, auth: AuthClient
    ) -> None:
        local = f"Mixed.Case-{uuid.uuid4().hex[:8]}"

        registered = await auth.register(email=f"  {local}@Example.COM ")

        assert registered.user.email == f"{local.lower()}@example.com"

    async def test_email_in_another_spelling_is_taken(self, auth: AuthClient) -> None:
        email = unique_email("taken")
        await auth.register(email=email)

        error = await refusal(auth.register(email=email.upper()))

        assert error.code() is grpc.StatusCode.ALREADY_EXISTS
        assert reason(error) == "email_taken"

    async def test_invalid_fields_come_back_as_field_violations(
        self, auth: AuthClient
    ) -> None:
        error = await refusal(
            auth.stub.Register(
                auth_pb2.RegisterRequest(
                    email="not-an-email", password="123", name=" "
                ),
                metadata=auth.internal(),
                timeout=10,
            )
        )

        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert reason(error) == "invalid_argument"
        assert set(field_violations(error)) == {"email", "password", "name"}

    async def test_new_account_is_signed_in(
        self, settings: Settings, auth: AuthClient
    ) -> None:
        registered = await auth.register()

        me = await auth.me(registered.tokens.access_token)

        assert me.id == registered.user.id
        assert registered.tokens.expires_in == settings.access_token_expiry
        assert registered.tokens.refresh_expires_in == settings.refresh_token_expiry


class TestLogin:
    async def test_any_spelling_of_the_email_signs_in(self, auth: AuthClient) -> None:
        email = unique_email("spelling")
        registered = await auth.register(email=email)

        signed_in = await auth.login(f" {email.upper()} ")

        assert signed_in.user.id == registered.user.id

    async def test_each_login_opens_a_new_session(self, auth: AuthClient) -> None:
        registered = await auth.register()

        signed_in = await auth.login(registered.user.email)

        assert signed_in.tokens.session_id != registered.tokens.session_id

    async def test_wrong_password_is_invalid_credentials(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()

        error = await refusal(auth.login(registered.user.email, "wrong-password"))

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert reason(error) == "invalid_credentials"

    async def test_unknown_email_reads_like_a_wrong_password(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()
        wrong_password = await refusal(auth.login(registered.user.email, "wrong"))

        unknown = await refusal(auth.login(unique_email("nobody")))

        assert unknown.code() is wrong_password.code()
        assert unknown.details() == wrong_password.details()
        assert reason(unknown) == reason(wrong_password)

    async def test_legacy_bcrypt_hash_signs_in_and_is_replaced_by_argon2id(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        email = unique_email("legacy")
        legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
        assert legacy.startswith("$2b$10$")
        await sql(
            database,
            "INSERT INTO auth.users (id, email, name, nickname, password_hash) "
            "VALUES (:id, :email, 'Legacy', :nickname, :hash)",
            id=uuid.uuid4(),
            email=email,
            nickname=f"Legacy{uuid.uuid4().hex[:10]}",
            hash=legacy,
        )

        await auth.login(email)

        stored = await sql(
            database, "SELECT password_hash FROM auth.users WHERE email = :e", e=email
        )
        assert stored.startswith("$argon2id$")
        assert (await auth.login(email)).user.email == email

    async def test_wrong_password_leaves_a_legacy_hash_alone(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        email = unique_email("legacy")
        legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
        await sql(
            database,
            "INSERT INTO auth.users (id, email, name, nickname, password_hash) "
            "VALUES (:id, :email, 'Legacy', :nickname, :hash)",
            id=uuid.uuid4(),
            email=email,
            nickname=f"Legacy{uuid.uuid4().hex[:10]}",
            hash=legacy,
        )

        await refusal(auth.login(email, "wrong-password"))

        stored = await sql(
            database, "SELECT password_hash FROM auth.users WHERE email = :e", e=email
        )
        assert stored == legacy

    @pytest.mark.parametrize("password", ["", "any-password"])
    async def test_google_only_account_cannot_sign_in_with_a_password(
        self,
        auth: AuthClient,
        google: FakeGoogle,
        database: AsyncEngine,
        password: str,
    ) -> None:
        email = unique_email("google-only")
        await auth.stub.GoogleSignIn(
            auth_pb2.GoogleSignInRequest(credential=google.id_token(email=email)),
            metadata=auth.internal(),
            timeout=10,
        )
        assert (
            await sql(
                database,
                "SELECT password_hash IS NULL FROM auth.users WHERE email = :e",
                e=email,
            )
            is True
        )

        error = await refusal(auth.login(email, password))

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert reason(error) == "invalid_credentials"

    async def test_suspended_user_cannot_sign_in(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        registered = await auth.register()
        await suspend(database, registered.user.email)

        error = await refusal(auth.login(registered.user.email))

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert reason(error) == "account_disabled"

    async def test_suspension_is_not_revealed_without_the_password(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        registered = await auth.register()
        await suspend(database, registered.user.email)

        error = await refusal(auth.login(registered.user.email, "wrong-password"))

        assert reason(error) == "invalid_credentials"

    async def test_attempts_beyond_the_account_limit_are_rate_limited(
        self, auth: AuthClient, strict_auth: AuthClient
    ) -> None:
        registered = await auth.register()
        for _ in range(3):  # failed attempts count too
            await refusal(strict_auth.login(registered.user.email, "wrong"))

        error = await refusal(strict_auth.login(registered.user.email))

        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(error) == "rate_limited"
        delay = retry_delay(error)
        assert delay is not None
        assert 1 <= delay <= 20


class TestRefresh:
    async def test_refresh_rotates_the_token_within_the_session(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()

        rotated = await auth.refresh(registered.tokens.refresh_token)

        assert rotated.refresh_token != registered.tokens.refresh_token
        assert rotated.session_id == registered.tokens.session_id
        assert (await auth.me(rotated.access_token)).id == registered.user.id

    async def test_unknown_refresh_token_is_unauthenticated(
        self, auth: AuthClient
    ) -> None:
        error = await refusal(auth.refresh("never-issued-" + uuid.uuid4().hex))

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert reason(error) == "invalid_token"

    async def test_two_refreshes_inside_the_grace_both_succeed_in_one_session(
        self, auth: AuthClient
    ) -> None:
        # Two browser tabs refreshing with the same token at the same moment.
        registered = await auth.register()
        token = registered.tokens.refresh_token

        first, second = await asyncio.gather(auth.refresh(token), auth.refresh(token))

        assert first.session_id == second.session_id == registered.tokens.session_id
        assert first.refresh_token != second.refresh_token
        assert (await auth.refresh(second.refresh_token)).session_id == (
            registered.tokens.session_id
        )

    async def test_token_two_generations_old_is_reuse_and_ends_the_session(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()
        first = await auth.refresh(registered.tokens.refresh_token)
        second = await auth.refresh(first.refresh_token)

        error = await refusal(auth.refresh(registered.tokens.refresh_token))

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert (await refusal(auth.refresh(second.refresh_token))).code() is (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert (await refusal(auth.me(second.access_token))).code() is (
            grpc.StatusCode.UNAUTHENTICATED
        )

    async def test_suspended_user_cannot_refresh(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        registered = await auth.register()
        await suspend(database, registered.user.email)

        error = await refusal(auth.refresh(registered.tokens.refresh_token))

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert reason(error) == "account_disabled"

    async def test_refresh_after_the_absolute_expiry_fails(
        self, strict_auth: AuthClient
    ) -> None:
        registered = await strict_auth.register()

        await asyncio.sleep(1.5)

        error = await refusal(strict_auth.refresh(registered.tokens.refresh_token))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED

    async def test_rotation_does_not_extend_the_absolute_expiry(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        registered = await auth.register()
        expires_at = "SELECT expires_at FROM auth.sessions WHERE id = :id"
        before = await sql(database, expires_at, id=registered.tokens.session_id)

        rotated = await auth.refresh(registered.tokens.refresh_token)

        after = await sql(database, expires_at, id=registered.tokens.session_id)
        assert after == before
        assert rotated.refresh_expires_in < registered.tokens.refresh_expires_in


class TestLogout:
    async def test_service_itself_refuses_the_ended_sessions_token(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()
        access_token = registered.tokens.access_token
        await auth.me(access_token)

        await auth.logout(registered.tokens.refresh_token)

        error = await refused_within(2.0, lambda: auth.me(access_token))
        assert error is not None, "the access token still worked after 2 s"
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert reason(error) == "invalid_token"

    async def test_another_process_refuses_the_ended_sessions_token_within_2s(
        self, auth: AuthClient, strict_auth: AuthClient
    ) -> None:
        registered = await auth.register()
        access_token = registered.tokens.access_token
        await strict_auth.me(access_token)

        await auth.logout(registered.tokens.refresh_token)

        error = await refused_within(2.0, lambda: strict_auth.me(access_token))
        assert error is not None, "the other process accepted it after 2 s"
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED

    async def test_ended_sessions_refresh_token_is_refused(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()

        await auth.logout(registered.tokens.refresh_token)

        error = await refusal(auth.refresh(registered.tokens.refresh_token))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED

    async def test_logout_with_an_unknown_token_is_harmless(
        self, auth: AuthClient
    ) -> None:
        await auth.logout("never-issued-" + uuid.uuid4().hex)

    async def test_logout_leaves_other_sessions_alone(self, auth: AuthClient) -> None:
        registered = await auth.register()
        other = await auth.login(registered.user.email)

        await auth.logout(registered.tokens.refresh_token)

        assert (await auth.me(other.tokens.access_token)).id == registered.user.id


class TestSessions:
    async def test_list_marks_the_callers_session(self, auth: AuthClient) -> None:
        registered = await auth.register()
        other = await auth.login(registered.user.email)

        response = await auth.stub.ListSessions(
            auth_pb2.ListSessionsRequest(),
            metadata=auth.as_user(registered.tokens.access_token),
            timeout=10,
        )

        current = {s.id: s.current for s in response.sessions}
        assert current == {
            registered.tokens.session_id: True,
            other.tokens.session_id: False,
        }

    async def test_logout_all_ends_every_session(self, auth: AuthClient) -> None:
        registered = await auth.register()
        other = await auth.login(registered.user.email)

        response = await auth.stub.LogoutAll(
            auth_pb2.LogoutAllRequest(),
            metadata=auth.as_user(registered.tokens.access_token),
            timeout=10,
        )

        assert response.revoked_sessions == 2
        assert (await refusal(auth.me(other.tokens.access_token))).code() is (
            grpc.StatusCode.UNAUTHENTICATED
        )

    async def test_revoking_another_users_session_is_not_found(
        self, auth: AuthClient
    ) -> None:
        mine = await auth.register()
        theirs = await auth.register()

        error = await refusal(
            auth.stub.RevokeSession(
                auth_pb2.RevokeSessionRequest(session_id=theirs.tokens.session_id),
                metadata=auth.as_user(mine.tokens.access_token),
                timeout=10,
            )
        )

        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert (await auth.me(theirs.tokens.access_token)).id == theirs.user.id

    async def test_revoking_a_malformed_session_id_is_not_found(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()

        error = await refusal(
            auth.stub.RevokeSession(
                auth_pb2.RevokeSessionRequest(session_id="not-a-uuid"),
                metadata=auth.as_user(registered.tokens.access_token),
                timeout=10,
            )
        )

        assert error.code() is grpc.StatusCode.NOT_FOUND


class TestGetMe:
    async def test_user_token_alone_is_enough(self, auth: AuthClient) -> None:
        registered = await auth.register()

        response = await auth.stub.GetMe(
            auth_pb2.GetMeRequest(),
            metadata=((AUTHORIZATION_KEY, f"Bearer {registered.tokens.access_token}"),),
            timeout=10,
        )

        assert response.user.email == registered.user.email

    async def test_suspended_users_token_is_refused(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        registered = await auth.register()
        await suspend(database, registered.user.email)

        error = await refusal(auth.me(registered.tokens.access_token))

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert reason(error) == "account_disabled"


class TestGoogleSignIn:
    async def sign_in(
        self, auth: AuthClient, credential: str
    ) -> auth_pb2.GoogleSignInResponse:
        response: auth_pb2.GoogleSignInResponse = await auth.stub.GoogleSignIn(
            auth_pb2.GoogleSignInRequest(credential=credential),
            metadata=auth.internal(),
            timeout=10,
        )
        return response

    async def test_first_sign_in_creates_the_account_and_later_ones_reuse_it(
        self, auth: AuthClient, google: FakeGoogle
    ) -> None:
        subject, email = uuid.uuid4().hex, unique_email("google")

        first = await self.sign_in(auth, google.id_token(subject=subject, email=email))
        again = await self.sign_in(auth, google.id_token(subject=subject, email=email))

        assert (first.created, again.created) == (True, False)
        assert first.user.id == again.user.id
        assert first.user.auth_provider == "google"

    async def test_existing_email_account_is_linked_not_duplicated(
        self, auth: AuthClient, google: FakeGoogle
    ) -> None:
        registered = await auth.register()

        linked = await self.sign_in(
            auth, google.id_token(email=registered.user.email.upper())
        )

        assert not linked.created
        assert linked.user.id == registered.user.id
        assert (await auth.login(registered.user.email)).user.id == registered.user.id

    async def test_unverified_google_email_is_refused(
        self, auth: AuthClient, google: FakeGoogle
    ) -> None:
        credential = google.id_token(email=unique_email(), email_verified=False)

        error = await refusal(self.sign_in(auth, credential))

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED


class TestAdmin:
    async def test_admin_login_issues_an_operator_token(
        self, settings: Settings, auth: AuthClient
    ) -> None:
        token = await signed_in_admin(settings, auth)

        claims = TokenSigner(settings.signing_secret()).verify(token, Audience.ADMIN)

        assert claims.role == "superadmin"

    async def test_ensure_admin_refuses_a_password_under_12_characters(
        self, settings: Settings, auth: AuthClient
    ) -> None:
        username = f"ops-{uuid.uuid4().hex[:8]}"
        short = settings.model_copy(
            update={
                "admin_username": username,
                "admin_password": SecretStr("elevenchars"),
            }
        )

        with pytest.raises(InvalidArgument):
            await ensure_admin(short)

        error = await refusal(auth.admin_login(username, "elevenchars"))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED

    async def test_ensure_admin_does_not_overwrite_an_existing_admin(
        self, settings: Settings, auth: AuthClient
    ) -> None:
        username = f"ops-{uuid.uuid4().hex[:8]}"

        for password in ("first-password-long", "second-password-long"):
            await ensure_admin(
                settings.model_copy(
                    update={
                        "admin_username": username,
                        "admin_password": SecretStr(password),
                    }
                )
            )

        assert (await auth.admin_login(username, "first-password-long")).access_token
        error = await refusal(auth.admin_login(username, "second-password-long"))
        assert reason(error) == "invalid_credentials"


class TestLookupUsers:
    async def test_returns_users_by_id_and_by_email(self, auth: AuthClient) -> None:
        first = (await auth.register()).user
        second = (await auth.register()).user
        found = await auth.stub.LookupUsers(
            auth_pb2.LookupUsersRequest(user_ids=[first.id, second.id, "not-a-uuid"]),
            metadata=auth.internal(),
        )
        assert {u.id for u in found.users} == {first.id, second.id}
        by_email = await auth.stub.LookupUsers(
            auth_pb2.LookupUsersRequest(email=second.email.upper()),
            metadata=auth.internal(),
        )
        assert [u.id for u in by_email.users] == [second.id]

    async def test_needs_a_service_identity(self, auth: AuthClient) -> None:
        error = await refusal(
            auth.stub.LookupUsers(auth_pb2.LookupUsersRequest(email="x@example.com"))
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED

    async def test_refuses_more_than_500_ids(self, auth: AuthClient) -> None:
        ids = [str(uuid.uuid4()) for _ in range(501)]
        error = await refusal(
            auth.stub.LookupUsers(
                auth_pb2.LookupUsersRequest(user_ids=ids), metadata=auth.internal()
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


class TestListRevokedSessions:
    # Found by tests/fuzz: a Timestamp naming no instant failed with INTERNAL.
    async def test_refuses_a_timestamp_that_names_no_instant(
        self, auth: AuthClient
    ) -> None:
        request = auth_pb2.ListRevokedSessionsRequest()
        request.revoked_after.seconds = 1_700_000_000
        request.revoked_after.nanos = -1

        error = await refusal(
            auth.stub.ListRevokedSessions(request, metadata=auth.internal(), timeout=10)
        )

        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(error) == {"revoked_after": "Not a valid timestamp."}

    async def test_refuses_a_year_past_9999(self, auth: AuthClient) -> None:
        request = auth_pb2.ListRevokedSessionsRequest()
        request.revoked_after.seconds = 253_402_300_800

        error = await refusal(
            auth.stub.ListRevokedSessions(request, metadata=auth.internal(), timeout=10)
        )

        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
