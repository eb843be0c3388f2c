"""/api/projects: a user's projects and their assets, served by the
workspace service.

A project the caller may not see answers 404 on every route, whoever owns
it (the rules: the Projects section of services/workspace/service.py).
Lists are bare arrays, as the web client reads them.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Response, status
from omnihub.generation.v1 import generation_pb2
from omnihub.workspace.v1 import workspace_pb2
from pydantic.alias_generators import to_camel

from gateway.deps import UserDep
from gateway.routers.generations import GenerationsDep, generation_id_of
from gateway.routers.workspaces import WorkspacesDep
from gateway.schemas.projects import (
    AddAssetBody,
    AssetOut,
    CreateProjectBody,
    ProjectDeletedOut,
    ProjectOut,
    SavedItemOut,
    SaveItemBody,
    UpdateProjectBody,
)
from libs.errors import FieldViolation, InvalidArgument

router = APIRouter(prefix="/api/projects", tags=["projects"])

ReplyT = TypeVar("ReplyT")
Limit = Annotated[int, Query(ge=1, le=100)]
# The service names asset fields as its messages do; the REST body does not.
_ASSET_FIELDS = {"url": "assetUrl", "kind": "assetType", "title": "name"}


async def _named_as_in_rest(call: Awaitable[ReplyT]) -> ReplyT:
    """Name refused asset fields as the REST body does (`assetUrl`)."""
    try:
        return await call
    except InvalidArgument as error:
        violations = tuple(
            FieldViolation(_ASSET_FIELDS.get(v.field, to_camel(v.field)), v.message)
            for v in error.violations
        )
        raise InvalidArgument(error.message, violations=violations) from None


def _project(project: workspace_pb2.Project) -> ProjectOut:
    return ProjectOut(
        id=project.id,
        workspace_id=project.workspace_id,
        owner_id=project.owner_id,
        name=project.name,
        description=project.description,
        color=project.color,
        shared_with_workspace=project.shared_with_workspace,
        asset_count=project.asset_count,
        created_at=project.created_at.ToDatetime(tzinfo=UTC),
        updated_at=project.updated_at.ToDatetime(tzinfo=UTC),
    )


def _asset(asset: workspace_pb2.ProjectAsset) -> AssetOut:
    return AssetOut(
        id=asset.id,
        project_id=asset.project_id,
        asset_url=asset.url or None,
        asset_type=asset.kind,
        name=asset.title,
        generation_id=asset.generation_id or None,
        added_by=asset.added_by,
        created_at=asset.created_at.ToDatetime(tzinfo=UTC),
    )


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


@router.get("")
async def list_projects(
    user: UserDep,
    workspaces: WorkspacesDep,
    response: Response,
    workspace_id: Annotated[
        str | None, Query(alias="workspaceId", max_length=64)
    ] = None,
    limit: Limit = 50,
) -> list[ProjectOut]:
    """The caller's projects and the shared ones of their workspaces, newest
    first."""
    reply = await workspaces.upstream.call(
        workspaces.stub.ListProjects,
        workspace_pb2.ListProjectsRequest(
            workspace_id=workspace_id or "", page_size=limit
        ),
        user.authorization,
    )
    _no_store(response)
    return [_project(project) for project in reply.projects]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_project(
    body: CreateProjectBody, user: UserDep, workspaces: WorkspacesDep
) -> ProjectOut:
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.CreateProject,
            workspace_pb2.CreateProjectRequest(
                workspace_id=body.workspace_id or "",
                name=body.name,
                description=body.description,
                color=body.color or "",
                shared_with_workspace=body.shared_with_workspace,
            ),
            user.authorization,
        )
    )
    return _project(reply.project)


@router.put("/{project_id}")
async def update_project(
    project_id: str, body: UpdateProjectBody, user: UserDep, workspaces: WorkspacesDep
) -> ProjectOut:
    """Change the fields sent: name, description, color, sharedWithWorkspace.
    The owner, or the workspace owner for a shared project."""
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.UpdateProject,
            workspace_pb2.UpdateProjectRequest(
                project_id=project_id, **body.model_dump(exclude_none=True)
            ),
            user.authorization,
        )
    )
    return _project(reply.project)


@router.delete("/{project_id}")
async def delete_project(
    project_id: str, user: UserDep, workspaces: WorkspacesDep
) -> ProjectDeletedOut:
    """Deletes the project and its assets."""
    await workspaces.upstream.call(
        workspaces.stub.DeleteProject,
        workspace_pb2.DeleteProjectRequest(project_id=project_id),
        user.authorization,
    )
    return ProjectDeletedOut()


@router.get("/{project_id}/assets")
async def list_assets(
    project_id: str,
    user: UserDep,
    workspaces: WorkspacesDep,
    response: Response,
    limit: Limit = 50,
) -> list[AssetOut]:
    """Newest first."""
    reply = await workspaces.upstream.call(
        workspaces.stub.ListProjectAssets,
        workspace_pb2.ListProjectAssetsRequest(project_id=project_id, page_size=limit),
        user.authorization,
    )
    _no_store(response)
    return [_asset(asset) for asset in reply.assets]


@router.post("/{project_id}/assets", status_code=status.HTTP_201_CREATED)
async def add_asset(
    project_id: str, body: AddAssetBody, user: UserDep, workspaces: WorkspacesDep
) -> AssetOut:
    """An http(s) address of an image, video or text."""
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.AddProjectAsset,
            workspace_pb2.AddProjectAssetRequest(
                project_id=project_id,
                kind=body.asset_type,
                url=body.asset_url,
                title=body.name,
            ),
            user.authorization,
        )
    )
    return _asset(reply.asset)


@router.post("/{project_id}/items", status_code=status.HTTP_201_CREATED)
async def save_item(
    project_id: str,
    body: SaveItemBody,
    user: UserDep,
    workspaces: WorkspacesDep,
    generations: GenerationsDep,
    response: Response,
) -> SavedItemOut:
    """Save a generation to the project ("save to project"). Saving it again
    answers 200 with the same asset. Only a generation the caller may see
    can be saved: another user's answers 404, as it does everywhere."""
    await generations.call(
        generations.stub.GetGeneration,
        generation_pb2.GetGenerationRequest(id=generation_id_of(body.generation_id)),
        user.authorization,
    )
    # TODO: keep the generation's result URL and type with the asset too;
    # only the id is kept, and the web client looks the rest up.
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.AddProjectAsset,
            workspace_pb2.AddProjectAssetRequest(
                project_id=project_id,
                kind="generation",
                generation_id=body.generation_id,
            ),
            user.authorization,
        )
    )
    if not reply.created:
        response.status_code = status.HTTP_200_OK
    return SavedItemOut(id=reply.asset.id, created=reply.created)
