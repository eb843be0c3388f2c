"""The users area of the admin service (AdminUsersService) over real gRPC,
with auth, billing, generation, workspace and chat running behind it: who
may do what, that each change reaches the owning service once, and that
the audit trail says so."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from omnihub.admin.v1 import users_pb2
from omnihub.auth.v1 import auth_pb2
from omnihub.billing.v1 import billing_pb2

from libs.config import Settings
from libs.db import create_engine, session_factory
from libs.runtime import Runtime
from services.admin.main import AdminProcess
from services.admin.models import SCHEMA as ADMIN_SCHEMA
from services.admin.tasks import AdminTasks
from services.admin.users.service import ADJUST_CREDITS, UsersService
from services.admin.users.upstream import Platform
from services.chat.main import ChatProcess
from services.generation.main import GenerationProcess
from services.workspace.main import WorkspaceProcess
from tests.services.admin.users_api import (
    CLIENT_ADDRESS,
    CREDIT,
    PASSWORD,
    UsersApi,
    account,
    failure,
)


@pytest.fixture(scope="module")
async def users(
    settings: Settings,
    admin_service: AdminProcess,
    workspace_service: WorkspaceProcess,
    generation_service: GenerationProcess,
    chat_service: ChatProcess,
) -> AsyncIterator[UsersApi]:
    client = UsersApi(settings)
    yield client
    await client.close()


# Page tokens a tampering client might send: a moment past the year 9999 and
# a digit int() cannot read. Found by tests/fuzz: both failed with INTERNAL.
TAMPERED_PAGE_TOKENS = [f"{'9' * 30}.{uuid.uuid4()}", f"\u00b2.{uuid.uuid4()}"]


class TestListUsers:
    @pytest.mark.parametrize("token", TAMPERED_PAGE_TOKENS)
    async def test_refuses_a_tampered_page_token(
        self, users: UsersApi, token: str
    ) -> None:
        code, error = await failure(
            users.stub.ListUsers(
                users_pb2.ListUsersRequest(page_token=token),
                metadata=users.operator("viewer").metadata,
            )
        )

        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == ["page_token"]

    async def test_lists_users_with_their_credits(self, users: UsersApi) -> None:
        member = await users.member()
        before, _ = await users.balance(member.id)
        await users.grant(member.id, 2 * CREDIT)

        reply = await users.stub.ListUsers(
            users_pb2.ListUsersRequest(query=member.email),
            metadata=users.operator("viewer").metadata,
        )

        assert [u.id for u in reply.users] == [member.id]
        assert reply.users[0].balance_micros == before + 2 * CREDIT
        assert reply.users[0].status == "active"

    async def test_never_carries_a_password_hash_or_token(
        self, users: UsersApi
    ) -> None:
        member = await users.member()
        stored = await users.sql(
            "auth",
            "SELECT password_hash FROM users WHERE id = :id",
            id=uuid.UUID(member.id),
        )

        reply = await users.stub.ListUsers(
            users_pb2.ListUsersRequest(query=member.email),
            metadata=users.operator("viewer").metadata,
        )
        wire = reply.SerializeToString()

        assert stored[0]["password_hash"].encode() not in wire
        assert member.access_token.encode() not in wire
        assert member.refresh_token.encode() not in wire

    async def test_a_page_holds_at_most_a_hundred(self, users: UsersApi) -> None:
        code, error = await failure(
            users.stub.ListUsers(
                users_pb2.ListUsersRequest(page_size=-1),
                metadata=users.operator("viewer").metadata,
            )
        )

        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == "page_size"

    async def test_a_users_token_is_refused(self, users: UsersApi) -> None:
        member = await users.member()

        code, _ = await failure(
            users.stub.ListUsers(
                users_pb2.ListUsersRequest(), metadata=users.user(member.access_token)
            )
        )

        assert code is grpc.StatusCode.PERMISSION_DENIED

    async def test_no_token_is_unauthenticated(self, users: UsersApi) -> None:
        code, _ = await failure(
            users.stub.ListUsers(users_pb2.ListUsersRequest(), metadata=users.service)
        )

        assert code is grpc.StatusCode.UNAUTHENTICATED


class TestGetUser:
    async def test_shows_credits_sessions_and_notes(self, users: UsersApi) -> None:
        member = await users.member()
        support = users.operator("support")
        await users.stub.AddUserNote(
            users_pb2.AddUserNoteRequest(user_id=member.id, body="Called about a bill"),
            metadata=support.metadata,
        )

        reply = await users.stub.GetUser(
            users_pb2.GetUserRequest(user_id=member.id),
            metadata=users.operator("viewer").metadata,
        )

        assert reply.user.email == member.email
        assert reply.user.balance_micros == (await users.balance(member.id))[0]
        assert reply.has_password
        assert reply.active_sessions == 1
        assert [n.body for n in reply.notes] == ["Called about a bill"]
        assert dict(reply.generation_counts) == {}

    async def test_unknown_user_is_not_found(self, users: UsersApi) -> None:
        code, _ = await failure(
            users.stub.GetUser(
                users_pb2.GetUserRequest(user_id=str(uuid.uuid4())),
                metadata=users.operator("viewer").metadata,
            )
        )

        assert code is grpc.StatusCode.NOT_FOUND


class TestUpdateUserStatus:
    async def test_a_ban_stops_the_users_token_in_other_services(
        self, users: UsersApi
    ) -> None:
        member = await users.member()
        balance = billing_pb2.GetBalanceRequest(account=account(member.id))
        await users.billing.GetBalance(
            balance, metadata=users.user(member.access_token)
        )

        reply = await users.set_status(users.operator("support"), member.id, "banned")

        assert reply.applied
        assert (reply.status, reply.previous_status) == ("banned", "active")
        assert reply.revoked_sessions == 1
        refused_at = await _refused_within(users, balance, member.access_token, 2.0)
        assert refused_at is grpc.StatusCode.UNAUTHENTICATED

    async def test_the_audit_entry_has_before_and_after(self, users: UsersApi) -> None:
        member = await users.member()
        support = users.operator("support")

        reply = await users.set_status(support, member.id, "suspended", "chargeback")

        (row,) = await users.audit_rows(member.id)
        assert row["id"] == reply.audit_id
        assert row["action"] == "user_status_changed"
        assert (row["actor_id"], row["actor_role"]) == (support.id, "support")
        assert row["before"]["status"] == "active"
        assert row["after"]["status"] == "suspended"
        assert row["after"]["reason"] == "chargeback"
        assert row["after"]["revoked_sessions"] == 1
        assert row["status"] == "applied"
        assert row["address"] == CLIENT_ADDRESS
        assert row["request_id"] == support.request_id

    async def test_a_viewer_may_not(self, users: UsersApi) -> None:
        member = await users.member()

        code, _ = await failure(
            users.set_status(users.operator("viewer"), member.id, "banned")
        )

        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert await users.audit_rows(member.id) == []

    async def test_an_unknown_user_is_not_found(self, users: UsersApi) -> None:
        user_id = str(uuid.uuid4())

        code, _ = await failure(
            users.set_status(users.operator("support"), user_id, "banned")
        )

        assert code is grpc.StatusCode.NOT_FOUND
        assert await users.audit_rows(user_id) == []


class TestAdjustUserCredits:
    async def test_writes_an_adjustment_entry_with_the_reason(
        self, users: UsersApi
    ) -> None:
        member = await users.member()
        before, _ = await users.balance(member.id)
        support = users.operator("support")

        reply = await users.adjust(support, member.id, 2_500_000, "outage refund")

        newest = (await users.ledger(member.id))[0]
        assert reply.applied
        assert newest.kind == billing_pb2.ENTRY_KIND_ADJUSTMENT
        assert newest.amount_micros == 2_500_000
        assert newest.reason == "outage refund"
        assert newest.tags["actor"] == f"admin:{support.id}"
        assert reply.entry.kind == "adjustment"
        assert reply.entry.balance_after_micros == before + 2_500_000
        assert (await users.balance(member.id))[0] == before + 2_500_000

    async def test_the_audit_entry_settles_with_the_new_balance(
        self, users: UsersApi
    ) -> None:
        member = await users.member()
        before, _ = await users.balance(member.id)

        await users.adjust(users.operator("support"), member.id, -CREDIT, "misuse")

        (row,) = await users.audit_rows(member.id)
        assert row["action"] == "credits_adjusted"
        assert row["before"] == {"balance_micros": before}
        assert int(row["after"]["balance_after_micros"]) == before - CREDIT
        assert row["after"]["reason"] == "misuse"
        assert row["status"] == "applied"

    async def test_more_than_the_balance_is_refused_and_audited(
        self, users: UsersApi
    ) -> None:
        member = await users.member()
        before, _ = await users.balance(member.id)

        code, error = await failure(
            users.adjust(users.operator("support"), member.id, -(before + 1))
        )

        assert code is grpc.StatusCode.FAILED_PRECONDITION
        assert error.code == "insufficient_credits"
        assert (await users.balance(member.id))[0] == before
        (row,) = await users.audit_rows(member.id)
        assert row["status"] == "failed"
        assert row["error"]

    async def test_a_task_run_again_adjusts_once(
        self, users: UsersApi, settings: Settings
    ) -> None:
        member = await users.member()
        await users.adjust(users.operator("support"), member.id, 3 * CREDIT)
        after, _ = await users.balance(member.id)
        (task,) = await users.sql(
            "admin",
            "SELECT id FROM admin_tasks WHERE kind = :kind"
            " AND payload->>'user_id' = :user",
            kind=ADJUST_CREDITS,
            user=member.id,
        )
        # As if the process died after billing answered, before it recorded
        # the task done: another replica finds it pending and runs it again.
        await users.sql(
            "admin",
            "UPDATE admin_tasks SET state = 'pending' WHERE id = :id",
            id=task["id"],
        )

        await _run_on_another_replica(settings, task["id"])

        adjustments = [
            e
            for e in await users.ledger(member.id)
            if e.kind == billing_pb2.ENTRY_KIND_ADJUSTMENT
        ]
        assert len(adjustments) == 1
        assert (await users.balance(member.id))[0] == after

    async def test_a_reason_is_required(self, users: UsersApi) -> None:
        member = await users.member()

        code, error = await failure(
            users.adjust(users.operator("support"), member.id, CREDIT, reason=" ")
        )

        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == "reason"
        assert await users.audit_rows(member.id) == []

    async def test_a_viewer_may_not(self, users: UsersApi) -> None:
        member = await users.member()

        code, _ = await failure(
            users.adjust(users.operator("viewer"), member.id, CREDIT)
        )

        assert code is grpc.StatusCode.PERMISSION_DENIED


class TestNotes:
    async def test_a_note_is_listed_and_audited(self, users: UsersApi) -> None:
        member = await users.member()
        support = users.operator("support")

        added = await users.stub.AddUserNote(
            users_pb2.AddUserNoteRequest(user_id=member.id, body="VIP, be gentle"),
            metadata=support.metadata,
        )
        listed = await users.stub.ListUserNotes(
            users_pb2.ListUserNotesRequest(user_id=member.id),
            metadata=users.operator("viewer").metadata,
        )

        assert [n.id for n in listed.notes] == [added.note.id]
        assert added.note.author_id == support.id
        (row,) = await users.audit_rows(member.id)
        assert row["action"] == "user_note_added"
        assert row["after"]["note_id"] == added.note.id
        assert row["status"] == "applied"

    async def test_notes_come_newest_first_in_pages(self, users: UsersApi) -> None:
        member = await users.member()
        support = users.operator("support")
        for body in ("first", "second", "third"):
            await users.stub.AddUserNote(
                users_pb2.AddUserNoteRequest(user_id=member.id, body=body),
                metadata=support.metadata,
            )

        first = await users.stub.ListUserNotes(
            users_pb2.ListUserNotesRequest(user_id=member.id, page_size=2),
            metadata=support.metadata,
        )
        rest = await users.stub.ListUserNotes(
            users_pb2.ListUserNotesRequest(
                user_id=member.id, page_size=2, page_token=first.next_page_token
            ),
            metadata=support.metadata,
        )

        assert [n.body for n in first.notes] == ["third", "second"]
        assert [n.body for n in rest.notes] == ["first"]

    @pytest.mark.parametrize("token", TAMPERED_PAGE_TOKENS)
    async def test_a_tampered_page_token_is_refused(
        self, users: UsersApi, token: str
    ) -> None:
        member = await users.member()

        code, error = await failure(
            users.stub.ListUserNotes(
                users_pb2.ListUserNotesRequest(user_id=member.id, page_token=token),
                metadata=users.operator("viewer").metadata,
            )
        )

        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == ["page_token"]

    async def test_a_viewer_may_not_add_one(self, users: UsersApi) -> None:
        member = await users.member()

        code, _ = await failure(
            users.stub.AddUserNote(
                users_pb2.AddUserNoteRequest(user_id=member.id, body="hello"),
                metadata=users.operator("viewer").metadata,
            )
        )

        assert code is grpc.StatusCode.PERMISSION_DENIED


class TestActivity:
    async def test_lists_the_ledger_newest_first(self, users: UsersApi) -> None:
        member = await users.member()
        await users.adjust(users.operator("support"), member.id, CREDIT, "welcome back")

        reply = await users.stub.ListUserActivity(
            users_pb2.ListUserActivityRequest(user_id=member.id),
            metadata=users.operator("viewer").metadata,
        )

        assert [(e.kind, e.reason) for e in reply.entries] == [
            ("adjustment", "welcome back"),
            ("grant", "Sign-up credits"),
        ]


class TestExport:
    async def test_writes_awkward_names_safely(self, users: UsersApi) -> None:
        email = f"csv-{uuid.uuid4().hex[:10]}@example.com"
        name = '=HYPERLINK("http://x"), "Ann"\nSmith'
        await users.auth.Register(
            auth_pb2.RegisterRequest(email=email, password=PASSWORD, name=name),
            metadata=users.service,
        )

        body = await users.export(users.operator("viewer"), query=email)

        header, row = list(csv.reader(io.StringIO(body.decode())))
        assert header[:3] == ["ID", "Email", "Name"]
        assert row[1] == email
        assert row[2] == "'" + name
        assert b'"\'=HYPERLINK(""http://x""), ""Ann""\nSmith"' in body


class TestOperatorAccounts:
    async def test_a_superadmin_creates_an_operator_who_can_sign_in(
        self, users: UsersApi
    ) -> None:
        username = f"ops-{uuid.uuid4().hex[:8]}"
        password = "a-long-operator-password"

        created = await users.stub.CreateAdmin(
            users_pb2.CreateAdminRequest(
                username=username, password=password, role="support"
            ),
            metadata=users.operator().metadata,
        )
        signed_in = await users.auth.AdminLogin(
            auth_pb2.AdminLoginRequest(username=username, password=password),
            metadata=users.service,
        )

        assert created.admin.role == "support"
        assert signed_in.admin.id == created.admin.id
        (row,) = await users.audit_rows(username)
        assert row["action"] == "admin_created"
        assert row["status"] == "applied"
        assert password not in json.dumps([row["before"], row["after"]])

    async def test_support_may_not_create_one(self, users: UsersApi) -> None:
        code, _ = await failure(
            users.stub.CreateAdmin(
                users_pb2.CreateAdminRequest(
                    username=f"ops-{uuid.uuid4().hex[:8]}",
                    password="a-long-operator-password",
                    role="viewer",
                ),
                metadata=users.operator("support").metadata,
            )
        )

        assert code is grpc.StatusCode.PERMISSION_DENIED

    async def test_a_role_change_is_audited(self, users: UsersApi) -> None:
        created = await users.stub.CreateAdmin(
            users_pb2.CreateAdminRequest(
                username=f"ops-{uuid.uuid4().hex[:8]}",
                password="a-long-operator-password",
                role="support",
            ),
            metadata=users.operator().metadata,
        )

        reply = await users.stub.UpdateAdmin(
            users_pb2.UpdateAdminRequest(admin_id=created.admin.id, role="viewer"),
            metadata=users.operator().metadata,
        )

        assert reply.applied
        assert reply.admin.role == "viewer"
        (row,) = await users.audit_rows(created.admin.id)
        assert (row["before"]["role"], row["after"]["role"]) == ("support", "viewer")
        assert row["status"] == "applied"

    async def test_an_operator_changes_their_own_password(
        self, users: UsersApi
    ) -> None:
        username = f"ops-{uuid.uuid4().hex[:8]}"
        old, new = "a-long-operator-password", "another-long-password"
        await users.stub.CreateAdmin(
            users_pb2.CreateAdminRequest(
                username=username, password=old, role="viewer"
            ),
            metadata=users.operator().metadata,
        )
        login = await users.auth.AdminLogin(
            auth_pb2.AdminLoginRequest(username=username, password=old),
            metadata=users.service,
        )
        own = (*users.service, ("authorization", f"Bearer {login.access_token}"))

        reply = await users.stub.ChangeOwnPassword(
            users_pb2.ChangeOwnPasswordRequest(current_password=old, new_password=new),
            metadata=own,
        )
        again = await users.auth.AdminLogin(
            auth_pb2.AdminLoginRequest(username=username, password=new),
            metadata=users.service,
        )

        assert reply.revoked_sessions == 0
        assert again.admin.id == login.admin.id
        (row,) = await users.audit_rows(login.admin.id)
        assert row["action"] == "admin_password_changed"
        assert row["status"] == "applied"
        written = json.dumps([row["before"], row["after"]])
        assert old not in written
        assert new not in written


async def _refused_within(
    users: UsersApi,
    request: billing_pb2.GetBalanceRequest,
    access_token: str,
    seconds: float,
) -> grpc.StatusCode | None:
    """Ask billing with the user's token until it refuses; the status then."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await users.billing.GetBalance(request, metadata=users.user(access_token))
        except grpc.aio.AioRpcError as error:
            return error.code()
        await asyncio.sleep(0.05)
    return None


async def _run_on_another_replica(settings: Settings, task_id: uuid.UUID) -> None:
    """Run one admin task in a second admin process's task runner."""
    engine = create_engine(settings, ADMIN_SCHEMA)
    runtime = Runtime(settings, "admin-replica")
    try:
        sessions = session_factory(engine)
        tasks = AdminTasks(sessions)
        UsersService(sessions, tasks, Platform(runtime.upstreams))
        await tasks.run(task_id)
    finally:
        await runtime.upstreams.close()
        await engine.dispose()
