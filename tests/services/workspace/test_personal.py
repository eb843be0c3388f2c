"""The personal workspace: made once at sign-up through the auth outbox, by
EnsurePersonalWorkspace however many deliveries race, and never deleted,
given away or filled with pool credits."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from omnihub.workspace.v1 import workspace_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.services.workspace.factories import (
    WorkspaceApi,
    failure,
    new_key,
    new_user,
)


async def _personal_rows(engine: AsyncEngine, user_id: str) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT id FROM workspaces WHERE owner_id = :u AND is_personal"),
            {"u": user_id},
        )
        return [str(row[0]) for row in rows]


async def _personal(api: WorkspaceApi, user_id: str) -> workspace_pb2.Workspace:
    listed = await api.stub.ListWorkspaces(
        workspace_pb2.ListWorkspacesRequest(), metadata=api.user(user_id)
    )
    [personal] = [w for w in listed.workspaces if w.owner_id == user_id]
    return personal


async def _ensure(
    api: WorkspaceApi, user_id: str
) -> workspace_pb2.EnsurePersonalWorkspaceResponse:
    return await api.stub.EnsurePersonalWorkspace(
        workspace_pb2.EnsurePersonalWorkspaceRequest(user_id=user_id),
        metadata=api.service,
    )


class TestEnsurePersonalWorkspace:
    async def test_sign_up_makes_the_personal_workspace(
        self, api: WorkspaceApi
    ) -> None:
        user, _ = await api.registered_user(name="Noor")

        personal = await _personal(api, user)

        assert personal.is_default
        assert personal.name == "Noor's Workspace"
        assert (personal.role, personal.credit_mode) == ("owner", "user")
        assert (personal.owner_id, personal.member_count) == (user, 1)

    async def test_racing_calls_make_it_exactly_once(
        self, api: WorkspaceApi, workspace_db: AsyncEngine
    ) -> None:
        user, _ = await api.registered_user()
        async with workspace_db.begin() as connection:
            await connection.execute(
                text("DELETE FROM workspaces WHERE owner_id = :u"), {"u": user}
            )

        replies = await asyncio.gather(*(_ensure(api, user) for _ in range(8)))

        assert len({reply.workspace_id for reply in replies}) == 1
        assert sum(reply.created for reply in replies) == 1
        assert await _personal_rows(workspace_db, user) == [replies[0].workspace_id]
        assert (await _personal(api, user)).member_count == 1

    async def test_calling_again_returns_the_same_workspace(
        self, api: WorkspaceApi
    ) -> None:
        user, _ = await api.registered_user()
        personal = await _personal(api, user)

        reply = await _ensure(api, user)

        assert (reply.workspace_id, reply.created) == (personal.id, False)

    async def test_unknown_user_is_not_found(self, api: WorkspaceApi) -> None:
        status, _ = await failure(_ensure(api, new_user()))

        assert status == grpc.StatusCode.NOT_FOUND

    async def test_personal_workspace_is_listed_first(self, api: WorkspaceApi) -> None:
        user, _ = await api.registered_user()
        team = await api.create_workspace(user, "Later")

        listed = await api.stub.ListWorkspaces(
            workspace_pb2.ListWorkspacesRequest(), metadata=api.user(user)
        )

        assert [w.is_personal for w in listed.workspaces] == [True, False]
        assert listed.workspaces[1].id == team

    async def test_a_guest_in_anothers_personal_workspace_keeps_their_own_default(
        self, api: WorkspaceApi
    ) -> None:
        host, _ = await api.registered_user()
        guest, _ = await api.registered_user()
        hosts = await _personal(api, host)
        await api.join(hosts.id, host, guest)

        listed = await api.stub.ListWorkspaces(
            workspace_pb2.ListWorkspacesRequest(), metadata=api.user(guest)
        )

        assert [
            (w.owner_id, w.is_personal, w.is_default) for w in listed.workspaces
        ] == [
            (guest, True, True),
            (host, True, False),
        ]


def _delete(workspace_id: str) -> workspace_pb2.DeleteWorkspaceRequest:
    return workspace_pb2.DeleteWorkspaceRequest(workspace_id=workspace_id)


class TestPersonalWorkspaceLimits:
    async def test_it_cannot_be_deleted(
        self, api: WorkspaceApi, workspace_db: AsyncEngine
    ) -> None:
        user, _ = await api.registered_user()
        personal = await _personal(api, user)

        status, _ = await failure(
            api.stub.DeleteWorkspace(_delete(personal.id), metadata=api.user(user))
        )

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert await _personal_rows(workspace_db, user) == [personal.id]

    @pytest.mark.parametrize(
        "request_for",
        [
            pytest.param(
                lambda w, _: workspace_pb2.UpdateWorkspaceRequest(
                    workspace_id=w, credit_mode="shared"
                ),
                id="credit-mode",
            ),
            pytest.param(
                lambda w, _: workspace_pb2.AddCreditsRequest(
                    workspace_id=w, amount_micros=1, request_id=new_key()
                ),
                id="add-credits",
            ),
            pytest.param(
                lambda w, other: workspace_pb2.TransferOwnershipRequest(
                    workspace_id=w, user_id=other
                ),
                id="transfer-ownership",
            ),
        ],
    )
    async def test_it_takes_no_pool_mode_or_new_owner(
        self, api: WorkspaceApi, request_for: object
    ) -> None:
        user, _ = await api.registered_user()
        personal = await _personal(api, user)
        guest = new_user()
        await api.join(personal.id, user, guest)
        await api.fund(user, 1)
        request = request_for(personal.id, guest)  # type: ignore[operator]
        method = {
            workspace_pb2.UpdateWorkspaceRequest: api.stub.UpdateWorkspace,
            workspace_pb2.AddCreditsRequest: api.stub.AddCredits,
            workspace_pb2.TransferOwnershipRequest: api.stub.TransferOwnership,
        }[type(request)]

        status, _ = await failure(method(request, metadata=api.user(user)))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        after = await _personal(api, user)
        assert (after.credit_mode, after.role, after.pool_micros) == (
            "user",
            "owner",
            0,
        )
