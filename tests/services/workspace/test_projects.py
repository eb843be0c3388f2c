"""Projects and their assets over real gRPC: who sees and changes a project
(NOT_FOUND for everyone else), which fields are accepted, and saving a
generation twice keeping one asset."""

from __future__ import annotations

import uuid

import grpc
import pytest
from omnihub.workspace.v1 import workspace_pb2

from tests.services.workspace.factories import (
    Team,
    WorkspaceApi,
    build_team,
    failure,
    new_user,
)

IMAGE = "https://cdn.example.com/a.png"


async def _project(
    api: WorkspaceApi, owner: str, workspace_id: str, *, shared: bool = False
) -> workspace_pb2.Project:
    reply = await api.stub.CreateProject(
        workspace_pb2.CreateProjectRequest(
            workspace_id=workspace_id, name="Moodboard", shared_with_workspace=shared
        ),
        metadata=api.user(owner),
    )
    return reply.project


async def _add(
    api: WorkspaceApi, by: str, project_id: str, **fields: str
) -> workspace_pb2.AddProjectAssetResponse:
    request = workspace_pb2.AddProjectAssetRequest(project_id=project_id, **fields)
    return await api.stub.AddProjectAsset(request, metadata=api.user(by))


async def _listed(api: WorkspaceApi, by: str) -> list[str]:
    reply = await api.stub.ListProjects(
        workspace_pb2.ListProjectsRequest(), metadata=api.user(by)
    )
    return [project.id for project in reply.projects]


@pytest.fixture(scope="module")
async def team(api: WorkspaceApi) -> Team:
    return await build_team(api)


class TestCreateProject:
    async def test_defaults_to_the_personal_workspace(self, api: WorkspaceApi) -> None:
        user, _ = await api.registered_user()
        project = await _project(api, user, "")

        personal = await api.stub.ListWorkspaces(
            workspace_pb2.ListWorkspacesRequest(), metadata=api.user(user)
        )
        assert project.workspace_id == personal.workspaces[0].id
        assert (project.color, project.asset_count) == ("#8b5cf6", 0)

    async def test_in_a_workspace_of_others_is_not_found(
        self, api: WorkspaceApi, team: Team
    ) -> None:
        code, _ = await failure(_project(api, team.outsider, team.workspace_id))
        assert code is grpc.StatusCode.NOT_FOUND

    @pytest.mark.parametrize("name", ["", "   ", "x" * 101])
    async def test_refuses_a_bad_name(
        self, api: WorkspaceApi, team: Team, name: str
    ) -> None:
        request = workspace_pb2.CreateProjectRequest(
            workspace_id=team.workspace_id, name=name
        )
        code, error = await failure(
            api.stub.CreateProject(request, metadata=api.user(team.owner))
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == "name"


class TestVisibility:
    async def test_member_sees_a_shared_project_only(
        self, api: WorkspaceApi, team: Team
    ) -> None:
        shared = await _project(api, team.admin, team.workspace_id, shared=True)
        private = await _project(api, team.admin, team.workspace_id)

        listed = await _listed(api, team.member)
        assert shared.id in listed
        assert private.id not in listed

    async def test_outsider_gets_not_found_on_every_call(
        self, api: WorkspaceApi, team: Team
    ) -> None:
        project = await _project(api, team.member, team.workspace_id, shared=True)
        as_outsider = api.user(team.outsider)
        calls = [
            api.stub.UpdateProject(
                workspace_pb2.UpdateProjectRequest(project_id=project.id, name="x"),
                metadata=as_outsider,
            ),
            api.stub.DeleteProject(
                workspace_pb2.DeleteProjectRequest(project_id=project.id),
                metadata=as_outsider,
            ),
            api.stub.ListProjectAssets(
                workspace_pb2.ListProjectAssetsRequest(project_id=project.id),
                metadata=as_outsider,
            ),
            _add(api, team.outsider, project.id, kind="image", url=IMAGE),
        ]
        for call in calls:
            code, _ = await failure(call)
            assert code is grpc.StatusCode.NOT_FOUND
        assert project.id not in await _listed(api, team.outsider)

    async def test_member_cannot_change_a_shared_project(
        self, api: WorkspaceApi, team: Team
    ) -> None:
        project = await _project(api, team.admin, team.workspace_id, shared=True)
        request = workspace_pb2.UpdateProjectRequest(project_id=project.id, name="x")

        code, _ = await failure(
            api.stub.UpdateProject(request, metadata=api.user(team.member))
        )
        assert code is grpc.StatusCode.NOT_FOUND

    async def test_workspace_owner_may_delete_a_shared_project(
        self, api: WorkspaceApi, team: Team
    ) -> None:
        project = await _project(api, team.member, team.workspace_id, shared=True)
        await api.stub.DeleteProject(
            workspace_pb2.DeleteProjectRequest(project_id=project.id),
            metadata=api.user(team.owner),
        )
        assert project.id not in await _listed(api, team.member)

    async def test_unknown_project_id_is_not_found(self, api: WorkspaceApi) -> None:
        request = workspace_pb2.ListProjectAssetsRequest(project_id=str(uuid.uuid4()))
        code, _ = await failure(
            api.stub.ListProjectAssets(request, metadata=api.user(new_user()))
        )
        assert code is grpc.StatusCode.NOT_FOUND


class TestUpdateProject:
    async def test_changes_only_the_fields_set(
        self, api: WorkspaceApi, team: Team
    ) -> None:
        project = await _project(api, team.member, team.workspace_id)
        reply = await api.stub.UpdateProject(
            workspace_pb2.UpdateProjectRequest(
                project_id=project.id, description="refs", shared_with_workspace=True
            ),
            metadata=api.user(team.member),
        )
        changed = reply.project
        assert (changed.name, changed.description) == ("Moodboard", "refs")
        assert changed.shared_with_workspace


class TestAssets:
    async def test_added_asset_is_listed(self, api: WorkspaceApi, team: Team) -> None:
        project = await _project(api, team.member, team.workspace_id)
        added = await _add(api, team.member, project.id, kind="image", url=IMAGE)

        reply = await api.stub.ListProjectAssets(
            workspace_pb2.ListProjectAssetsRequest(project_id=project.id),
            metadata=api.user(team.member),
        )
        assert [asset.url for asset in reply.assets] == [IMAGE]
        assert reply.assets[0].id == added.asset.id

    @pytest.mark.parametrize(
        "url",
        ["data:image/png;base64,AAAA", "javascript:alert(1)", "https://", "x" * 10],
    )
    async def test_refuses_an_address_that_is_not_http(
        self, api: WorkspaceApi, team: Team, url: str
    ) -> None:
        project = await _project(api, team.member, team.workspace_id)
        code, error = await failure(
            _add(api, team.member, project.id, kind="image", url=url)
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == "url"

    async def test_saving_a_generation_twice_keeps_one_asset(
        self, api: WorkspaceApi, team: Team
    ) -> None:
        project = await _project(api, team.member, team.workspace_id)
        generation = str(uuid.uuid4())
        first = await _add(
            api, team.member, project.id, kind="generation", generation_id=generation
        )
        again = await _add(
            api, team.member, project.id, kind="generation", generation_id=generation
        )

        assert (first.created, again.created) == (True, False)
        assert first.asset.id == again.asset.id
