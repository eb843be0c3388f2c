"""Operators' requests to the auth service (the admin service makes them):
the user list and detail, status changes that shut a user out at once,
anonymising a deleted user, and operator accounts.

Everything goes over the real gRPC interface with the metadata the admin
service sends (its internal token; an operator's token for the password
change), against the suite's PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.auth.v1 import auth_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.config import Settings
from libs.db import create_engine
from libs.tokens import Audience
from services.auth.main import AuthProcess
from services.auth.models import SCHEMA
from services.billing.main import BillingProcess
from services.workspace.main import WorkspaceProcess
from tests.services.auth.test_rpc import (
    AuthClient,
    Metadata,
    auth_client,
    field_violations,
    reason,
    refusal,
    refused_within,
    sql,
    unique_email,
)

OPERATOR_PASSWORD = "operator-password-long"


@pytest.fixture(scope="module")
async def auth(
    settings: Settings,
    auth_service: AuthProcess,
    billing_service: BillingProcess,
    workspace_service: WorkspaceProcess,
) -> AsyncIterator[AuthClient]:
    # Billing and workspace take the sign-up side effects, so that signing
    # up does not wait for the outbox to give up on them.
    async for client in auth_client(settings.auth_address, settings):
        yield client


@pytest.fixture(scope="module")
async def database(
    settings: Settings, auth_service: AuthProcess
) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, SCHEMA)
    yield engine
    await engine.dispose()


def key() -> str:
    return f"admin-task:{uuid.uuid4()}"


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


async def list_users(auth: AuthClient, **fields: object) -> auth_pb2.ListUsersResponse:
    reply: auth_pb2.ListUsersResponse = await auth.stub.ListUsers(
        auth_pb2.ListUsersRequest(**fields),  # type: ignore[arg-type]
        metadata=auth.internal(),
        timeout=10,
    )
    return reply


async def user(auth: AuthClient, user_id: str) -> auth_pb2.GetUserResponse:
    reply: auth_pb2.GetUserResponse = await auth.stub.GetUser(
        auth_pb2.GetUserRequest(user_id=user_id), metadata=auth.internal(), timeout=10
    )
    return reply


async def set_status(
    auth: AuthClient,
    user_id: str,
    status: str,
    reason_text: str = "",
    idempotency_key: str | None = None,
) -> auth_pb2.SetUserStatusResponse:
    reply: auth_pb2.SetUserStatusResponse = await auth.stub.SetUserStatus(
        auth_pb2.SetUserStatusRequest(
            user_id=user_id,
            status=status,
            reason=reason_text,
            idempotency_key=idempotency_key or key(),
        ),
        metadata=auth.internal(),
        timeout=10,
    )
    return reply


async def delete_data(
    auth: AuthClient, user_id: str
) -> auth_pb2.DeleteUserDataResponse:
    reply: auth_pb2.DeleteUserDataResponse = await auth.stub.DeleteUserData(
        auth_pb2.DeleteUserDataRequest(user_id=user_id),
        metadata=auth.internal(),
        timeout=10,
    )
    return reply


async def create_admin(
    auth: AuthClient,
    role: str = "support",
    username: str | None = None,
    idempotency_key: str | None = None,
) -> auth_pb2.Admin:
    reply: auth_pb2.CreateAdminResponse = await auth.stub.CreateAdmin(
        auth_pb2.CreateAdminRequest(
            username=username or f"ops-{uuid.uuid4().hex[:10]}",
            password=OPERATOR_PASSWORD,
            role=role,
            idempotency_key=idempotency_key or key(),
        ),
        metadata=auth.internal(),
        timeout=10,
    )
    return reply.admin


async def update_admin(
    auth: AuthClient, admin_id: str, **fields: object
) -> auth_pb2.UpdateAdminResponse:
    reply: auth_pb2.UpdateAdminResponse = await auth.stub.UpdateAdmin(
        auth_pb2.UpdateAdminRequest(
            admin_id=admin_id,
            idempotency_key=str(fields.pop("idempotency_key", key())),
            **fields,  # type: ignore[arg-type]
        ),
        metadata=auth.internal(),
        timeout=10,
    )
    return reply


def as_admin(auth: AuthClient, access_token: str) -> Metadata:
    return auth.as_user(access_token)


async def change_password(
    auth: AuthClient, access_token: str, current: str, new: str
) -> auth_pb2.ChangeAdminPasswordResponse:
    reply: auth_pb2.ChangeAdminPasswordResponse = await auth.stub.ChangeAdminPassword(
        auth_pb2.ChangeAdminPasswordRequest(current_password=current, new_password=new),
        metadata=as_admin(auth, access_token),
        timeout=10,
    )
    return reply


class TestListUsers:
    async def test_lists_newest_first_in_pages(self, auth: AuthClient) -> None:
        marker = f"list-{uuid.uuid4().hex[:8]}"
        made = [(await auth.register(unique_email(marker))).user.id for _ in range(3)]

        first = await list_users(auth, query=marker, page_size=2)
        second = await list_users(
            auth, query=marker, page_size=2, page_token=first.next_page_token
        )

        assert [u.id for u in first.users] == [made[2], made[1]]
        assert [u.id for u in second.users] == [made[0]]
        assert second.next_page_token == ""

    async def test_search_matches_the_nickname_in_any_case(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()

        found = await list_users(auth, query=registered.user.nickname.upper())

        assert registered.user.id in [u.id for u in found.users]

    async def test_search_takes_wildcards_literally(self, auth: AuthClient) -> None:
        marker = f"wild-{uuid.uuid4().hex[:8]}"
        await auth.register(unique_email(marker))

        found = await list_users(auth, query=f"{marker}%")

        assert list(found.users) == []

    async def test_filters_by_status(self, auth: AuthClient) -> None:
        marker = f"status-{uuid.uuid4().hex[:8]}"
        banned = await auth.register(unique_email(marker))
        await auth.register(unique_email(marker))
        await set_status(auth, banned.user.id, "banned")

        found = await list_users(auth, query=marker, status="banned")

        assert [u.id for u in found.users] == [banned.user.id]
        assert found.users[0].status == "banned"

    async def test_filters_by_creation_time(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        marker = f"time-{uuid.uuid4().hex[:8]}"
        old = await auth.register(unique_email(marker))
        new = await auth.register(unique_email(marker))
        await sql(
            database,
            "UPDATE auth.users SET created_at = now() - interval '10 days'"
            " WHERE id = :id",
            id=uuid.UUID(old.user.id),
        )
        since = datetime.now(UTC) - timedelta(days=1)

        recent = await list_users(auth, query=marker, created_after=stamp(since))
        earlier = await list_users(auth, query=marker, created_before=stamp(since))

        assert [u.id for u in recent.users] == [new.user.id]
        assert [u.id for u in earlier.users] == [old.user.id]

    async def test_never_carries_a_password_hash_or_token(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        registered = await auth.register()
        stored_hash = await sql(
            database,
            "SELECT password_hash FROM auth.users WHERE id = :id",
            id=uuid.UUID(registered.user.id),
        )

        found = await list_users(auth, query=registered.user.email)
        wire = found.SerializeToString()

        assert found.users[0].has_password
        assert stored_hash.encode() not in wire
        assert registered.tokens.access_token.encode() not in wire
        assert registered.tokens.refresh_token.encode() not in wire
        fields = {f.name for f in auth_pb2.UserAccount.DESCRIPTOR.fields}
        assert not {
            name for name in fields if "password_hash" in name or "token" in name
        }

    async def test_refuses_an_unknown_status(self, auth: AuthClient) -> None:
        error = await refusal(list_users(auth, status="sleeping"))

        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "status" in field_violations(error)

    async def test_needs_the_calling_services_token(self, auth: AuthClient) -> None:
        error = await refusal(
            auth.stub.ListUsers(auth_pb2.ListUsersRequest(), timeout=10)
        )

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED


class TestGetUser:
    async def test_counts_live_sessions(self, auth: AuthClient) -> None:
        registered = await auth.register()
        await auth.login(registered.user.email)

        detail = await user(auth, registered.user.id)

        assert detail.user.email == registered.user.email
        assert detail.active_sessions == 2
        assert detail.HasField("last_seen_at")

    async def test_unknown_user_is_not_found(self, auth: AuthClient) -> None:
        error = await refusal(user(auth, str(uuid.uuid4())))

        assert error.code() is grpc.StatusCode.NOT_FOUND


class TestSetUserStatus:
    async def test_ban_ends_every_session_at_once(self, auth: AuthClient) -> None:
        registered = await auth.register()
        await auth.login(registered.user.email)

        changed = await set_status(auth, registered.user.id, "banned", "spam")

        assert changed.previous_status == "active"
        assert changed.revoked_sessions == 2
        assert changed.user.status == "banned"
        assert changed.user.status_reason == "spam"
        error = await refused_within(
            2.0, lambda: auth.me(registered.tokens.access_token)
        )
        assert error is not None

    async def test_banned_user_is_told_so_at_sign_in(self, auth: AuthClient) -> None:
        registered = await auth.register()
        await set_status(auth, registered.user.id, "banned")

        error = await refusal(auth.login(registered.user.email))

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert reason(error) == "account_disabled"
        assert "This account is banned." in (error.details() or "")

    async def test_suspended_user_cannot_refresh(self, auth: AuthClient) -> None:
        registered = await auth.register()
        await set_status(auth, registered.user.id, "suspended")

        error = await refusal(auth.refresh(registered.tokens.refresh_token))

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "This account is suspended." in (error.details() or "")

    async def test_suspension_message_names_it(self, auth: AuthClient) -> None:
        registered = await auth.register()
        await set_status(auth, registered.user.id, "suspended")

        error = await refusal(auth.login(registered.user.email))

        assert "This account is suspended." in (error.details() or "")

    async def test_reactivated_user_signs_in_again(self, auth: AuthClient) -> None:
        registered = await auth.register()
        await set_status(auth, registered.user.id, "suspended")

        changed = await set_status(auth, registered.user.id, "active")
        signed_in = await auth.login(registered.user.email)

        assert changed.previous_status == "suspended"
        assert changed.revoked_sessions == 0
        assert signed_in.user.id == registered.user.id

    async def test_a_retried_key_changes_nothing_again(self, auth: AuthClient) -> None:
        registered = await auth.register()
        ban = key()
        await set_status(auth, registered.user.id, "banned", idempotency_key=ban)
        await set_status(auth, registered.user.id, "active")

        retried = await set_status(
            auth, registered.user.id, "banned", idempotency_key=ban
        )

        assert retried.previous_status == "active"
        assert retried.revoked_sessions == 1
        assert retried.user.status == "active"

    async def test_a_key_reused_for_another_change_is_refused(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()
        used = key()
        await set_status(auth, registered.user.id, "banned", idempotency_key=used)

        error = await refusal(
            set_status(auth, registered.user.id, "suspended", idempotency_key=used)
        )

        assert error.code() is grpc.StatusCode.ALREADY_EXISTS
        assert reason(error) == "idempotency_key_reused"

    async def test_refuses_a_status_operators_cannot_set(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()

        error = await refusal(set_status(auth, registered.user.id, "deleted"))

        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT

    async def test_unknown_user_is_not_found(self, auth: AuthClient) -> None:
        error = await refusal(set_status(auth, str(uuid.uuid4()), "banned"))

        assert error.code() is grpc.StatusCode.NOT_FOUND


class TestDeleteUserData:
    async def test_anonymises_the_account(self, auth: AuthClient) -> None:
        registered = await auth.register()

        deleted = await delete_data(auth, registered.user.id)
        account = (await user(auth, registered.user.id)).user

        assert deleted.anonymised
        assert deleted.revoked_sessions == 1
        assert account.email == f"deleted-{registered.user.id}@deleted.invalid"
        assert account.name == ""
        assert account.nickname == f"deleted-{uuid.UUID(registered.user.id).hex}"
        assert (account.bio, account.avatar_url) == ("", "")
        assert not account.has_password
        assert not account.google_linked
        assert account.status == "deleted"

    async def test_nobody_can_sign_in_to_it(self, auth: AuthClient) -> None:
        registered = await auth.register()
        await delete_data(auth, registered.user.id)

        login = await refusal(auth.login(registered.user.email))
        refresh = await refusal(auth.refresh(registered.tokens.refresh_token))

        assert reason(login) == "invalid_credentials"
        assert refresh.code() is grpc.StatusCode.UNAUTHENTICATED

    async def test_the_address_may_sign_up_again_as_someone_new(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()
        await delete_data(auth, registered.user.id)

        again = await auth.register(registered.user.email)

        assert again.user.id != registered.user.id

    async def test_a_second_run_changes_nothing(self, auth: AuthClient) -> None:
        registered = await auth.register()
        await delete_data(auth, registered.user.id)

        repeated = await delete_data(auth, registered.user.id)

        assert not repeated.anonymised
        assert repeated.revoked_sessions == 0

    async def test_its_status_is_final(self, auth: AuthClient) -> None:
        registered = await auth.register()
        await delete_data(auth, registered.user.id)

        error = await refusal(set_status(auth, registered.user.id, "active"))

        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION


class TestOperatorAccounts:
    async def test_a_new_operator_signs_in_with_their_role(
        self, auth: AuthClient
    ) -> None:
        admin = await create_admin(auth, role="viewer")

        listed = (
            await auth.stub.ListAdmins(
                auth_pb2.ListAdminsRequest(), metadata=auth.internal(), timeout=10
            )
        ).admins
        signed_in = await auth.admin_login(admin.username, OPERATOR_PASSWORD)
        claims = auth.signer.verify(signed_in.access_token, Audience.ADMIN)

        assert (admin.role, admin.disabled) == ("viewer", False)
        assert admin.id in [a.id for a in listed]
        assert claims.role == "viewer"

    async def test_a_retried_creation_answers_the_same_account(
        self, auth: AuthClient
    ) -> None:
        username = f"ops-{uuid.uuid4().hex[:10]}"
        same = key()
        first = await create_admin(auth, username=username, idempotency_key=same)

        again = await create_admin(auth, username=username, idempotency_key=same)

        assert again.id == first.id

    async def test_a_taken_username_is_a_conflict(self, auth: AuthClient) -> None:
        admin = await create_admin(auth)

        error = await refusal(create_admin(auth, username=admin.username))

        assert error.code() is grpc.StatusCode.ALREADY_EXISTS

    async def test_a_short_password_is_refused(self, auth: AuthClient) -> None:
        error = await refusal(
            auth.stub.CreateAdmin(
                auth_pb2.CreateAdminRequest(
                    username=f"ops-{uuid.uuid4().hex[:8]}",
                    password="short",
                    role="viewer",
                    idempotency_key=key(),
                ),
                metadata=auth.internal(),
                timeout=10,
            )
        )

        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "password" in field_violations(error)

    async def test_a_role_change_ends_their_sessions(self, auth: AuthClient) -> None:
        admin = await create_admin(auth, role="support")
        token = (await auth.admin_login(admin.username, OPERATOR_PASSWORD)).access_token

        changed = await update_admin(auth, admin.id, role="viewer")
        error = await refused_within(
            2.0,
            lambda: change_password(
                auth, token, OPERATOR_PASSWORD, "another-password-long"
            ),
        )

        assert changed.previous.role == "support"
        assert changed.admin.role == "viewer"
        assert changed.revoked_sessions == 1
        assert error is not None
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED

    async def test_a_disabled_operator_cannot_sign_in(self, auth: AuthClient) -> None:
        admin = await create_admin(auth)
        await update_admin(auth, admin.id, disabled=True)

        error = await refusal(auth.admin_login(admin.username, OPERATOR_PASSWORD))

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "disabled" in (error.details() or "")

    async def test_the_last_superadmin_stays(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        admin = await create_admin(auth, role="superadmin")
        others = await sql(
            database,
            "SELECT array_agg(id) FROM auth.admins WHERE role = 'superadmin'"
            " AND NOT disabled AND id <> :id",
            id=uuid.UUID(admin.id),
        )
        await sql(
            database,
            "UPDATE auth.admins SET disabled = true WHERE id = ANY(:ids)",
            ids=others or [],
        )
        try:
            error = await refusal(update_admin(auth, admin.id, role="support"))
        finally:
            await sql(
                database,
                "UPDATE auth.admins SET disabled = false WHERE id = ANY(:ids)",
                ids=others or [],
            )

        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION

    async def test_own_password_change_ends_the_other_sessions(
        self, auth: AuthClient
    ) -> None:
        admin = await create_admin(auth)
        kept = (await auth.admin_login(admin.username, OPERATOR_PASSWORD)).access_token
        await auth.admin_login(admin.username, OPERATOR_PASSWORD)
        new_password = "a-new-operator-password"

        changed = await change_password(auth, kept, OPERATOR_PASSWORD, new_password)
        signed_in = await auth.admin_login(admin.username, new_password)
        old = await refusal(auth.admin_login(admin.username, OPERATOR_PASSWORD))

        assert changed.revoked_sessions == 1
        assert signed_in.admin.id == admin.id
        assert reason(old) == "invalid_credentials"

    async def test_a_wrong_current_password_is_refused(self, auth: AuthClient) -> None:
        admin = await create_admin(auth)
        token = (await auth.admin_login(admin.username, OPERATOR_PASSWORD)).access_token

        error = await refusal(
            change_password(auth, token, "not-the-password", "a-new-operator-password")
        )

        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "current_password" in field_violations(error)

    async def test_a_user_token_cannot_change_an_operator_password(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()

        error = await refusal(
            change_password(
                auth,
                registered.tokens.access_token,
                OPERATOR_PASSWORD,
                "a-new-operator-password",
            )
        )

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
