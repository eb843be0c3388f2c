"""Workspaces and their members over real gRPC: creating and changing a
workspace, the member list and its pages, roles and ownership transfer."""

from __future__ import annotations

import grpc
import pytest
from omnihub.workspace.v1 import workspace_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.services.workspace.factories import (
    WorkspaceApi,
    build_team,
    failure,
    new_user,
)


class TestCreateAndUpdate:
    async def test_creator_is_the_only_member_and_owner(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()

        reply = await api.stub.CreateWorkspace(
            workspace_pb2.CreateWorkspaceRequest(name="  Studio  "),
            metadata=api.user(owner),
        )

        workspace = reply.workspace
        assert (workspace.name, workspace.owner_id) == ("Studio", owner)
        assert (workspace.role, workspace.member_count) == ("owner", 1)
        assert (workspace.is_personal, workspace.credit_mode) == (False, "shared")
        assert workspace.privacy_settings == workspace_pb2.PrivacySettings(
            who_can_invite="admins",
            who_can_allocate_credits="owner_only",
            who_can_be_admin="owner_only",
            chat_visibility="private",
            image_visibility="private",
            video_visibility="private",
        )

    @pytest.mark.parametrize("name", ["", "   ", "x" * 101, "tab\there"])
    async def test_unusable_name_is_invalid(self, api: WorkspaceApi, name: str) -> None:
        status, error = await failure(
            api.stub.CreateWorkspace(
                workspace_pb2.CreateWorkspaceRequest(name=name),
                metadata=api.user(new_user()),
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == ["name"]

    async def test_privacy_update_changes_only_the_settings_named(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)

        updated = await api.update(
            workspace_id,
            owner,
            privacy={"who_can_invite": "all_members", "chat_visibility": "workspace"},
        )

        assert updated.privacy_settings.who_can_invite == "members"
        assert updated.privacy_settings.chat_visibility == "members"
        assert updated.privacy_settings.image_visibility == "private"
        assert updated.privacy_settings.who_can_be_admin == "owner_only"

    async def test_unknown_privacy_value_is_invalid_and_changes_nothing(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)

        status, error = await failure(
            api.update(
                workspace_id,
                owner,
                name="Changed",
                privacy={"who_can_invite": "everyone", "video_visibility": "public"},
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == [
            "privacy_settings.who_can_invite"
        ]
        unchanged = await api.workspace(workspace_id, owner)
        assert unchanged.name == "Team"
        assert unchanged.privacy_settings.video_visibility == "private"

    async def test_unknown_credit_mode_is_invalid(self, api: WorkspaceApi) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)

        status, _ = await failure(api.update(workspace_id, owner, credit_mode="user"))

        assert status == grpc.StatusCode.INVALID_ARGUMENT


class TestListMembers:
    async def test_owner_then_admins_then_members_by_joining(
        self, api: WorkspaceApi
    ) -> None:
        team = await build_team(api)

        members = await api.members(team.workspace_id, team.member)

        assert [(m.user_id, m.role) for m in members] == [
            (team.owner, "owner"),
            (team.admin, "admin"),
            (team.admin2, "admin"),
            (team.member, "member"),
            (team.member2, "member"),
        ]

    async def test_pages_cover_every_member_once(self, api: WorkspaceApi) -> None:
        team = await build_team(api)
        seen: list[str] = []
        token = ""
        pages = 0

        while True:
            reply = await api.stub.ListMembers(
                workspace_pb2.ListMembersRequest(
                    workspace_id=team.workspace_id, page_size=2, page_token=token
                ),
                metadata=api.user(team.owner),
            )
            seen += [m.user_id for m in reply.members]
            pages += 1
            token = reply.next_page_token
            if not token:
                break

        assert pages == 3
        assert seen == [
            m.user_id for m in await api.members(team.workspace_id, team.owner)
        ]

    async def test_members_joined_at_one_moment_are_paged_once(
        self, api: WorkspaceApi, workspace_db: AsyncEngine
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        async with workspace_db.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO members (id, workspace_id, user_id, role, joined_at) "
                    "SELECT gen_random_uuid(), :w, gen_random_uuid(), 'member', "
                    "'2025-01-01T00:00:00.123457Z' FROM generate_series(1, 7)"
                ),
                {"w": workspace_id},
            )
        seen: list[str] = []
        token = ""

        while True:
            reply = await api.stub.ListMembers(
                workspace_pb2.ListMembersRequest(
                    workspace_id=workspace_id, page_size=3, page_token=token
                ),
                metadata=api.user(owner),
            )
            seen += [m.user_id for m in reply.members]
            token = reply.next_page_token
            if not token:
                break

        assert len(seen) == len(set(seen)) == 8

    async def test_names_and_addresses_come_from_auth(self, api: WorkspaceApi) -> None:
        owner, email = await api.registered_user(name="Olu")
        workspace_id = await api.create_workspace(owner)

        [member] = await api.members(workspace_id, owner)

        assert (member.name, member.email) == ("Olu", email)

    async def test_foreign_page_token_is_invalid(self, api: WorkspaceApi) -> None:
        team = await build_team(api)

        status, error = await failure(
            api.stub.ListMembers(
                workspace_pb2.ListMembersRequest(
                    workspace_id=team.workspace_id, page_token="garbage"
                ),
                metadata=api.user(team.owner),
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == ["page_token"]


class TestRoles:
    @pytest.mark.parametrize("role", ["owner", "boss", ""])
    async def test_only_admin_and_member_can_be_given(
        self, api: WorkspaceApi, role: str
    ) -> None:
        team = await build_team(api)

        status, _ = await failure(
            api.set_role(team.workspace_id, team.owner, team.member, role)
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT

    async def test_the_owners_role_cannot_be_changed(self, api: WorkspaceApi) -> None:
        team = await build_team(api)

        status, _ = await failure(
            api.set_role(team.workspace_id, team.owner, team.owner, "member")
        )

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert (await api.workspace(team.workspace_id, team.owner)).role == "owner"

    async def test_role_of_a_non_member_is_not_found(self, api: WorkspaceApi) -> None:
        team = await build_team(api)

        status, _ = await failure(
            api.set_role(team.workspace_id, team.owner, team.outsider, "admin")
        )

        assert status == grpc.StatusCode.NOT_FOUND

    async def test_removing_a_non_member_is_not_found(self, api: WorkspaceApi) -> None:
        team = await build_team(api)

        status, _ = await failure(
            api.stub.RemoveMember(
                workspace_pb2.RemoveMemberRequest(
                    workspace_id=team.workspace_id, user_id=team.outsider
                ),
                metadata=api.user(team.owner),
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND


class TestTransferOwnership:
    async def test_ownership_moves_and_the_old_owner_becomes_an_admin(
        self, api: WorkspaceApi
    ) -> None:
        team = await build_team(api)

        await api.stub.TransferOwnership(
            workspace_pb2.TransferOwnershipRequest(
                workspace_id=team.workspace_id, user_id=team.member
            ),
            metadata=api.user(team.owner),
        )

        workspace = await api.workspace(team.workspace_id, team.member)
        roles = {
            m.user_id: m.role for m in await api.members(team.workspace_id, team.member)
        }
        assert (workspace.owner_id, workspace.role) == (team.member, "owner")
        assert (roles[team.owner], roles[team.member]) == ("admin", "owner")
        assert list(roles.values()).count("owner") == 1

    async def test_the_new_owner_holds_the_owners_rights(
        self, api: WorkspaceApi
    ) -> None:
        team = await build_team(api)
        await api.stub.TransferOwnership(
            workspace_pb2.TransferOwnershipRequest(
                workspace_id=team.workspace_id, user_id=team.member
            ),
            metadata=api.user(team.owner),
        )

        refused, _ = await failure(
            api.stub.DeleteWorkspace(
                workspace_pb2.DeleteWorkspaceRequest(workspace_id=team.workspace_id),
                metadata=api.user(team.owner),
            )
        )
        await api.stub.DeleteWorkspace(
            workspace_pb2.DeleteWorkspaceRequest(workspace_id=team.workspace_id),
            metadata=api.user(team.member),
        )

        assert refused == grpc.StatusCode.PERMISSION_DENIED

    async def test_transfer_to_a_non_member_is_not_found(
        self, api: WorkspaceApi
    ) -> None:
        team = await build_team(api)

        status, _ = await failure(
            api.stub.TransferOwnership(
                workspace_pb2.TransferOwnershipRequest(
                    workspace_id=team.workspace_id, user_id=team.outsider
                ),
                metadata=api.user(team.owner),
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND
        assert (await api.workspace(team.workspace_id, team.owner)).role == "owner"

    async def test_transfer_to_oneself_is_invalid(self, api: WorkspaceApi) -> None:
        team = await build_team(api)

        status, _ = await failure(
            api.stub.TransferOwnership(
                workspace_pb2.TransferOwnershipRequest(
                    workspace_id=team.workspace_id, user_id=team.owner
                ),
                metadata=api.user(team.owner),
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
