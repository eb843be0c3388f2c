"""gRPC servicer of the workspace service: translates messages, opens the
transaction, calls the service, and raises domain errors unchanged (the
server interceptor maps them to statuses).

Users call for themselves (the gateway forwards their token); the auth
service (personal workspaces) and the services that charge for work
(ResolvePayer, CheckVisibility) call as services. PreviewInvite is public:
holding the token is what entitles one to see where it leads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from omnihub.workspace.v1 import workspace_pb2, workspace_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.grpc.identity import Access, current_caller
from libs.grpc.messages import refuse_unknown_fields, timestamp
from libs.grpc.server import ServiceDefinition
from services.workspace.models import Invite, Project, ProjectAsset
from services.workspace.roles import PRIVACY_CHOICES
from services.workspace.service import (
    MemberView,
    NewAsset,
    ProjectChanges,
    ProjectService,
    ProjectView,
    WorkspaceService,
    WorkspaceUpdate,
    WorkspaceView,
)

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

ACCESS = {
    "ListWorkspaces": Access.USER,
    "CreateWorkspace": Access.USER,
    "GetWorkspace": Access.USER,
    "UpdateWorkspace": Access.USER,
    "DeleteWorkspace": Access.USER,
    "ListMembers": Access.USER,
    "UpdateMemberRole": Access.USER,
    "RemoveMember": Access.USER,
    "LeaveWorkspace": Access.USER,
    "TransferOwnership": Access.USER,
    "CreateInvite": Access.USER,
    "ListInvites": Access.USER,
    "RevokeInvite": Access.USER,
    "PreviewInvite": Access.PUBLIC,
    "AcceptInvite": Access.USER,
    "AddCredits": Access.USER,
    "AllocateCredits": Access.USER,
    "GetUsage": Access.USER,
    "EnsurePersonalWorkspace": Access.SERVICE,
    "ResolvePayer": Access.SERVICE,
    "CheckVisibility": Access.SERVICE,
    "DeleteUserData": Access.SERVICE,
    "ListProjects": Access.USER,
    "CreateProject": Access.USER,
    "UpdateProject": Access.USER,
    "DeleteProject": Access.USER,
    "ListProjectAssets": Access.USER,
    "AddProjectAsset": Access.USER,
}


class WorkspaceServicer(workspace_pb2_grpc.WorkspaceServiceServicer):
    def __init__(
        self,
        service: WorkspaceService,
        sessions: async_sessionmaker[AsyncSession],
        reads: async_sessionmaker[AsyncSession],
    ) -> None:
        self._service = service
        self._projects = ProjectService()
        self._sessions = sessions
        # Autocommit sessions for reads that lock nothing.
        self._reads = reads

    # Workspaces

    async def ListWorkspaces(
        self, request: workspace_pb2.ListWorkspacesRequest, context: Context
    ) -> workspace_pb2.ListWorkspacesResponse:
        async with self._reads() as db:
            page = await self._service.list_workspaces(
                db, current_caller().user_id, request.page_size, request.page_token
            )
        return workspace_pb2.ListWorkspacesResponse(
            workspaces=[_workspace(view) for view in page.workspaces],
            next_page_token=page.next_page_token,
        )

    async def CreateWorkspace(
        self, request: workspace_pb2.CreateWorkspaceRequest, context: Context
    ) -> workspace_pb2.CreateWorkspaceResponse:
        async with self._sessions.begin() as db:
            view = await self._service.create_workspace(
                db, current_caller().user_id, request.name
            )
        return workspace_pb2.CreateWorkspaceResponse(workspace=_workspace(view))

    async def GetWorkspace(
        self, request: workspace_pb2.GetWorkspaceRequest, context: Context
    ) -> workspace_pb2.GetWorkspaceResponse:
        async with self._reads() as db:
            view = await self._service.get_workspace(
                db, current_caller().user_id, request.workspace_id
            )
        return workspace_pb2.GetWorkspaceResponse(workspace=_workspace(view))

    async def UpdateWorkspace(
        self, request: workspace_pb2.UpdateWorkspaceRequest, context: Context
    ) -> workspace_pb2.UpdateWorkspaceResponse:
        refuse_unknown_fields(request)
        update = WorkspaceUpdate(
            name=request.name if request.HasField("name") else None,
            credit_mode=(
                request.credit_mode if request.HasField("credit_mode") else None
            ),
            privacy={
                key: getattr(request.privacy_settings, key) for key in PRIVACY_CHOICES
            },
        )
        async with self._sessions.begin() as db:
            view = await self._service.update_workspace(
                db, current_caller().user_id, request.workspace_id, update
            )
        return workspace_pb2.UpdateWorkspaceResponse(workspace=_workspace(view))

    async def DeleteWorkspace(
        self, request: workspace_pb2.DeleteWorkspaceRequest, context: Context
    ) -> workspace_pb2.DeleteWorkspaceResponse:
        async with self._sessions.begin() as db:
            returned = await self._service.delete_workspace(
                db, current_caller().user_id, request.workspace_id
            )
        return workspace_pb2.DeleteWorkspaceResponse(returned_micros=returned)

    # Members

    async def ListMembers(
        self, request: workspace_pb2.ListMembersRequest, context: Context
    ) -> workspace_pb2.ListMembersResponse:
        async with self._reads() as db:
            page = await self._service.list_members(
                db,
                current_caller().user_id,
                request.workspace_id,
                request.page_size,
                request.page_token,
            )
        return workspace_pb2.ListMembersResponse(
            members=[_member(view) for view in page.members],
            next_page_token=page.next_page_token,
        )

    async def UpdateMemberRole(
        self, request: workspace_pb2.UpdateMemberRoleRequest, context: Context
    ) -> workspace_pb2.UpdateMemberRoleResponse:
        async with self._sessions.begin() as db:
            role = await self._service.change_role(
                db,
                current_caller().user_id,
                request.workspace_id,
                request.user_id,
                request.role,
            )
        return workspace_pb2.UpdateMemberRoleResponse(role=role)

    async def RemoveMember(
        self, request: workspace_pb2.RemoveMemberRequest, context: Context
    ) -> workspace_pb2.RemoveMemberResponse:
        async with self._sessions.begin() as db:
            returned = await self._service.remove_member(
                db, current_caller().user_id, request.workspace_id, request.user_id
            )
        return workspace_pb2.RemoveMemberResponse(returned_micros=returned)

    async def LeaveWorkspace(
        self, request: workspace_pb2.LeaveWorkspaceRequest, context: Context
    ) -> workspace_pb2.LeaveWorkspaceResponse:
        async with self._sessions.begin() as db:
            returned = await self._service.leave(
                db, current_caller().user_id, request.workspace_id
            )
        return workspace_pb2.LeaveWorkspaceResponse(returned_micros=returned)

    async def TransferOwnership(
        self, request: workspace_pb2.TransferOwnershipRequest, context: Context
    ) -> workspace_pb2.TransferOwnershipResponse:
        async with self._sessions.begin() as db:
            await self._service.transfer_ownership(
                db, current_caller().user_id, request.workspace_id, request.user_id
            )
        return workspace_pb2.TransferOwnershipResponse()

    # Invites

    async def CreateInvite(
        self, request: workspace_pb2.CreateInviteRequest, context: Context
    ) -> workspace_pb2.CreateInviteResponse:
        async with self._sessions.begin() as db:
            created = await self._service.create_invite(
                db, current_caller().user_id, request.workspace_id, request.email
            )
        return workspace_pb2.CreateInviteResponse(
            invite=_invite(created.invite), token=created.token
        )

    async def ListInvites(
        self, request: workspace_pb2.ListInvitesRequest, context: Context
    ) -> workspace_pb2.ListInvitesResponse:
        async with self._reads() as db:
            invites = await self._service.list_invites(
                db, current_caller().user_id, request.workspace_id
            )
        return workspace_pb2.ListInvitesResponse(
            invites=[_invite(invite) for invite in invites]
        )

    async def RevokeInvite(
        self, request: workspace_pb2.RevokeInviteRequest, context: Context
    ) -> workspace_pb2.RevokeInviteResponse:
        async with self._sessions.begin() as db:
            await self._service.revoke_invite(
                db, current_caller().user_id, request.workspace_id, request.invite_id
            )
        return workspace_pb2.RevokeInviteResponse()

    async def PreviewInvite(
        self, request: workspace_pb2.PreviewInviteRequest, context: Context
    ) -> workspace_pb2.PreviewInviteResponse:
        async with self._reads() as db:
            preview = await self._service.preview_invite(db, request.token)
        return workspace_pb2.PreviewInviteResponse(
            workspace_name=preview.workspace_name,
            inviter_name=preview.inviter_name,
            email_bound=preview.email_bound,
            expires_at=timestamp(preview.expires_at),
        )

    async def AcceptInvite(
        self, request: workspace_pb2.AcceptInviteRequest, context: Context
    ) -> workspace_pb2.AcceptInviteResponse:
        async with self._sessions.begin() as db:
            joined = await self._service.accept_invite(
                db, current_caller().user_id, request.token
            )
        return workspace_pb2.AcceptInviteResponse(
            workspace_id=joined.workspace_id, role=joined.role
        )

    # Credits

    async def AddCredits(
        self, request: workspace_pb2.AddCreditsRequest, context: Context
    ) -> workspace_pb2.AddCreditsResponse:
        async with self._sessions.begin() as db:
            added = await self._service.add_credits(
                db,
                current_caller().user_id,
                request.workspace_id,
                request.amount_micros,
                request.request_id,
            )
        return workspace_pb2.AddCreditsResponse(
            pool_micros=added.pool, personal_micros=added.personal
        )

    async def AllocateCredits(
        self, request: workspace_pb2.AllocateCreditsRequest, context: Context
    ) -> workspace_pb2.AllocateCreditsResponse:
        async with self._sessions.begin() as db:
            allocation = await self._service.allocate_credits(
                db,
                current_caller().user_id,
                request.workspace_id,
                request.user_id,
                request.amount_micros,
                request.request_id,
            )
        return workspace_pb2.AllocateCreditsResponse(
            pool_micros=allocation.pool, allocated_micros=allocation.allocated
        )

    async def GetUsage(
        self, request: workspace_pb2.GetUsageRequest, context: Context
    ) -> workspace_pb2.GetUsageResponse:
        async with self._reads() as db:
            usage = await self._service.usage(
                db, current_caller().user_id, request.workspace_id
            )
        return workspace_pb2.GetUsageResponse(
            pool_micros=usage.pool,
            total_micros=usage.total,
            by_type=[
                workspace_pb2.UsageByType(
                    type=kind.type, count=kind.count, total_micros=kind.total
                )
                for kind in usage.by_type
            ],
            by_member=[
                workspace_pb2.UsageByMember(
                    user_id=member.user_id,
                    name=member.person.name if member.person else "",
                    email=member.person.email if member.person else "",
                    count=member.count,
                    total_micros=member.total,
                )
                for member in usage.by_member
            ],
        )

    # Internal

    async def EnsurePersonalWorkspace(
        self,
        request: workspace_pb2.EnsurePersonalWorkspaceRequest,
        context: Context,
    ) -> workspace_pb2.EnsurePersonalWorkspaceResponse:
        async with self._sessions.begin() as db:
            ensured = await self._service.ensure_personal_workspace(db, request.user_id)
        return workspace_pb2.EnsurePersonalWorkspaceResponse(
            workspace_id=ensured.workspace_id, created=ensured.created
        )

    async def ResolvePayer(
        self, request: workspace_pb2.ResolvePayerRequest, context: Context
    ) -> workspace_pb2.ResolvePayerResponse:
        async with self._reads() as db:
            choice = await self._service.resolve_payer(
                db, request.workspace_id, request.user_id, request.amount_micros
            )
        return workspace_pb2.ResolvePayerResponse(
            payers=[
                workspace_pb2.Payer(
                    account=payer.account,
                    source=payer.source,
                    balance_micros=payer.balance,
                )
                for payer in choice.payers
            ],
            covered=choice.covering_index is not None,
            covering_index=choice.covering_index or 0,
            tags=choice.tags,
        )

    async def CheckVisibility(
        self, request: workspace_pb2.CheckVisibilityRequest, context: Context
    ) -> workspace_pb2.CheckVisibilityResponse:
        async with self._reads() as db:
            visible = await self._service.check_visibility(
                db,
                request.workspace_id,
                request.viewer_id,
                request.author_id,
                request.content_type,
            )
        return workspace_pb2.CheckVisibilityResponse(visible=visible)

    async def DeleteUserData(
        self, request: workspace_pb2.DeleteUserDataRequest, context: Context
    ) -> workspace_pb2.DeleteUserDataResponse:
        async with self._sessions.begin() as db:
            outcome = await self._service.delete_user_data(db, request.user_id)
        return workspace_pb2.DeleteUserDataResponse(
            left_workspaces=outcome.left_workspaces,
            transferred_workspaces=outcome.transferred_workspaces,
            deleted_workspaces=outcome.deleted_workspaces,
            deleted_projects=outcome.deleted_projects,
            deleted_invites=outcome.deleted_invites,
        )

    # Projects

    async def ListProjects(
        self, request: workspace_pb2.ListProjectsRequest, context: Context
    ) -> workspace_pb2.ListProjectsResponse:
        async with self._reads() as db:
            views = await self._projects.list_projects(
                db, current_caller().user_id, request.workspace_id, request.page_size
            )
        return workspace_pb2.ListProjectsResponse(
            projects=[_project(view) for view in views]
        )

    async def CreateProject(
        self, request: workspace_pb2.CreateProjectRequest, context: Context
    ) -> workspace_pb2.CreateProjectResponse:
        changes = ProjectChanges(
            name=request.name,
            description=request.description,
            color=request.color,
            shared_with_workspace=request.shared_with_workspace,
        )
        async with self._sessions.begin() as db:
            view = await self._projects.create_project(
                db, current_caller().user_id, request.workspace_id, changes
            )
        return workspace_pb2.CreateProjectResponse(project=_project(view))

    async def UpdateProject(
        self, request: workspace_pb2.UpdateProjectRequest, context: Context
    ) -> workspace_pb2.UpdateProjectResponse:
        refuse_unknown_fields(request)
        changes = ProjectChanges(
            name=request.name if request.HasField("name") else None,
            description=(
                request.description if request.HasField("description") else None
            ),
            color=request.color if request.HasField("color") else None,
            shared_with_workspace=(
                request.shared_with_workspace
                if request.HasField("shared_with_workspace")
                else None
            ),
        )
        async with self._sessions.begin() as db:
            view = await self._projects.update_project(
                db, current_caller().user_id, request.project_id, changes
            )
        return workspace_pb2.UpdateProjectResponse(project=_project(view))

    async def DeleteProject(
        self, request: workspace_pb2.DeleteProjectRequest, context: Context
    ) -> workspace_pb2.DeleteProjectResponse:
        async with self._sessions.begin() as db:
            await self._projects.delete_project(
                db, current_caller().user_id, request.project_id
            )
        return workspace_pb2.DeleteProjectResponse()

    async def ListProjectAssets(
        self, request: workspace_pb2.ListProjectAssetsRequest, context: Context
    ) -> workspace_pb2.ListProjectAssetsResponse:
        async with self._reads() as db:
            assets = await self._projects.list_assets(
                db, current_caller().user_id, request.project_id, request.page_size
            )
        return workspace_pb2.ListProjectAssetsResponse(
            assets=[_asset(asset) for asset in assets]
        )

    async def AddProjectAsset(
        self, request: workspace_pb2.AddProjectAssetRequest, context: Context
    ) -> workspace_pb2.AddProjectAssetResponse:
        asset = NewAsset(
            kind=request.kind,
            url=request.url,
            generation_id=request.generation_id,
            title=request.title,
        )
        async with self._sessions.begin() as db:
            saved = await self._projects.add_asset(
                db, current_caller().user_id, request.project_id, asset
            )
        return workspace_pb2.AddProjectAssetResponse(
            asset=_asset(saved.asset), created=saved.created
        )


def definition(servicer: WorkspaceServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=workspace_pb2.DESCRIPTOR.services_by_name[
            "WorkspaceService"
        ].full_name,
        servicer=servicer,
        register=workspace_pb2_grpc.add_WorkspaceServiceServicer_to_server,
        access=ACCESS,
    )


def _workspace(view: WorkspaceView) -> workspace_pb2.Workspace:
    workspace = view.workspace
    return workspace_pb2.Workspace(
        id=str(workspace.id),
        name=workspace.name,
        owner_id=str(workspace.owner_id),
        is_personal=workspace.is_personal,
        is_default=view.is_default,
        credit_mode=workspace.credit_mode,
        privacy_settings=workspace_pb2.PrivacySettings(**view.privacy),
        member_count=view.member_count,
        role=view.role,
        pool_micros=view.pool,
        allocated_micros=view.allocated,
        created_at=timestamp(workspace.created_at),
        updated_at=timestamp(workspace.updated_at),
    )


def _member(view: MemberView) -> workspace_pb2.Member:
    member, person = view.member, view.person
    return workspace_pb2.Member(
        id=str(member.id),
        user_id=str(member.user_id),
        role=member.role,
        allocated_micros=view.allocated,
        joined_at=timestamp(member.joined_at),
        name=person.name if person else "",
        email=person.email if person else "",
        avatar_url=person.avatar_url if person else "",
    )


def _invite(invite: Invite) -> workspace_pb2.Invite:
    return workspace_pb2.Invite(
        id=str(invite.id),
        workspace_id=str(invite.workspace_id),
        email=invite.email or "",
        invited_by=str(invite.invited_by),
        created_at=timestamp(invite.created_at),
        expires_at=timestamp(invite.expires_at),
    )


def _project(view: ProjectView) -> workspace_pb2.Project:
    project: Project = view.project
    return workspace_pb2.Project(
        id=str(project.id),
        workspace_id=str(project.workspace_id),
        owner_id=str(project.owner_id),
        name=project.name,
        description=project.description,
        color=project.color,
        shared_with_workspace=project.shared_with_workspace,
        asset_count=view.asset_count,
        created_at=timestamp(project.created_at),
        updated_at=timestamp(project.updated_at),
    )


def _asset(asset: ProjectAsset) -> workspace_pb2.ProjectAsset:
    return workspace_pb2.ProjectAsset(
        id=str(asset.id),
        project_id=str(asset.project_id),
        added_by=str(asset.added_by),
        kind=asset.kind,
        url=asset.url or "",
        generation_id=str(asset.generation_id or ""),
        title=asset.title,
        created_at=timestamp(asset.created_at),
    )
