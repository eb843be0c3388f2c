"""DeleteUserData: a deleted user leaves every workspace under the members'
own rules. A team they own passes to the longest-standing admin, else the
longest-standing member, or is deleted when they were alone in it (its pool
going to their own credits); their personal workspace and projects go."""

from __future__ import annotations

import grpc
from omnihub.workspace.v1 import workspace_pb2

from tests.services.workspace.factories import (
    WorkspaceApi,
    failure,
    new_key,
    new_user,
    pool_account,
    user_account,
)


async def delete_data(
    api: WorkspaceApi, user_id: str
) -> workspace_pb2.DeleteUserDataResponse:
    reply: workspace_pb2.DeleteUserDataResponse = await api.stub.DeleteUserData(
        workspace_pb2.DeleteUserDataRequest(user_id=user_id), metadata=api.service
    )
    return reply


async def owner_of(api: WorkspaceApi, workspace_id: str, member: str) -> str:
    found = await api.workspace(workspace_id, member)
    return str(found.owner_id)


class TestOwnedTeams:
    async def test_an_admin_takes_over_before_an_older_member(
        self, api: WorkspaceApi
    ) -> None:
        owner, member, admin, later_admin = (new_user() for _ in range(4))
        team = await api.create_workspace(owner)
        for user in (member, admin, later_admin):
            await api.join(team, owner, user)
        await api.set_role(team, owner, admin, "admin")
        await api.set_role(team, owner, later_admin, "admin")

        deleted = await delete_data(api, owner)

        assert await owner_of(api, team, member) == admin
        assert (deleted.transferred_workspaces, deleted.left_workspaces) == (1, 1)
        assert {m.user_id for m in await api.members(team, admin)} == {
            member,
            admin,
            later_admin,
        }

    async def test_the_longest_standing_member_takes_over(
        self, api: WorkspaceApi
    ) -> None:
        owner, first, second = new_user(), new_user(), new_user()
        team = await api.create_workspace(owner)
        await api.join(team, owner, first)
        await api.join(team, owner, second)

        await delete_data(api, owner)

        assert await owner_of(api, team, second) == first

    async def test_a_team_they_were_alone_in_is_deleted_and_its_pool_returned(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        await api.fund(owner, 5)
        team = await api.create_workspace(owner)
        await api.add_credits(team, owner, 3)

        deleted = await delete_data(api, owner)

        code, _ = await failure(api.workspace(team, owner))
        assert code is grpc.StatusCode.NOT_FOUND
        assert deleted.deleted_workspaces == 1
        assert await api.balance(pool_account(team)) == 0
        assert await api.balance(user_account(owner)) == 5_000_000


class TestMemberships:
    async def test_they_leave_someone_elses_team(self, api: WorkspaceApi) -> None:
        owner, member = new_user(), new_user()
        team = await api.create_workspace(owner)
        await api.join(team, owner, member)

        deleted = await delete_data(api, member)

        assert [m.user_id for m in await api.members(team, owner)] == [owner]
        assert deleted.left_workspaces == 1

    async def test_their_allocation_goes_back_to_the_pool(
        self, api: WorkspaceApi
    ) -> None:
        owner, member = new_user(), new_user()
        await api.fund(owner, 10)
        team = await api.create_workspace(owner)
        await api.join(team, owner, member)
        await api.update(team, owner, credit_mode="individual")
        await api.add_credits(team, owner, 10)
        await api.allocate(team, owner, member, 4, request_id=new_key())

        await delete_data(api, member)

        assert await api.balance(pool_account(team)) == 10_000_000


class TestPersonalData:
    async def test_the_personal_workspace_and_projects_go(
        self, api: WorkspaceApi
    ) -> None:
        user_id, _ = await api.registered_user()
        listed = await api.stub.ListWorkspaces(
            workspace_pb2.ListWorkspacesRequest(), metadata=api.user(user_id)
        )
        personal = listed.workspaces[0].id
        await api.stub.CreateProject(
            workspace_pb2.CreateProjectRequest(workspace_id=personal, name="Refs"),
            metadata=api.user(user_id),
        )

        deleted = await delete_data(api, user_id)
        after = await api.stub.ListWorkspaces(
            workspace_pb2.ListWorkspacesRequest(), metadata=api.user(user_id)
        )

        assert (deleted.deleted_workspaces, deleted.deleted_projects) == (1, 1)
        assert list(after.workspaces) == []

    async def test_a_second_run_changes_nothing(self, api: WorkspaceApi) -> None:
        owner, member = new_user(), new_user()
        team = await api.create_workspace(owner)
        await api.join(team, owner, member)
        await delete_data(api, owner)

        again = await delete_data(api, owner)

        assert again == workspace_pb2.DeleteUserDataResponse()
        assert await owner_of(api, team, member) == member
