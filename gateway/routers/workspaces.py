"""/api/workspaces: workspaces, members, invites and the credits a
workspace spends, served by the workspace service.

A workspace the caller is not a member of answers 404 whatever it is; a
member without the right gets 403 (the rules: services/workspace/service.py).
The literal routes (/invite/{token}, /join/{token}) come before the
/{workspace_id} ones so that they are never taken for a workspace id.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import UTC
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from omnihub.workspace.v1 import workspace_pb2, workspace_pb2_grpc
from pydantic.alias_generators import to_camel

from gateway.deps import UserDep
from gateway.schemas.billing import credits
from gateway.schemas.workspaces import (
    AllocateBody,
    CreateWorkspaceBody,
    CreditsAddedOut,
    CreditsAllocatedOut,
    CreditsBody,
    DeletedOut,
    DoneOut,
    InviteBody,
    InviteCreatedOut,
    InviteOut,
    InvitePreviewOut,
    JoinedOut,
    MemberOut,
    MemberRoleBody,
    MemberUsageOut,
    PrivacySettingsOut,
    RemovedOut,
    RoleOut,
    TransferOwnershipBody,
    TypeUsageOut,
    UpdateWorkspaceBody,
    UsageOut,
    WorkspaceOut,
    to_micros,
)
from gateway.upstream import Upstream
from libs.config import Settings
from libs.errors import FieldViolation, InvalidArgument

router = APIRouter(prefix="/api/workspaces", tags=["workspaces"])

ReplyT = TypeVar("ReplyT")

NEXT_CURSOR_HEADER = "X-Next-Cursor"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# The workspace service names fields as its RPCs do; the REST API does not.
_REST_FIELDS = {
    "amount_micros": "amount",
    "page_size": "limit",
    "page_token": "cursor",
    "request_id": IDEMPOTENCY_HEADER,
}


class WorkspaceClient:
    """The workspace service's stub, made once per gateway."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.stub = workspace_pb2_grpc.WorkspaceServiceStub(
            upstream.runtime.upstreams.channel("workspace")
        )


async def get_workspaces(request: Request) -> WorkspaceClient:
    client: WorkspaceClient = request.app.state.workspaces
    return client


WorkspacesDep = Annotated[WorkspaceClient, Depends(get_workspaces)]
Cursor = Annotated[str | None, Query(max_length=256)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        max_length=128,
        description="Any unique string; a retry with the same key moves the "
        "credits once",
    ),
]


def _rest_field(field: str) -> str:
    return _REST_FIELDS.get(field) or ".".join(
        to_camel(part) for part in field.split(".")
    )


async def _named_as_in_rest(call: Awaitable[ReplyT]) -> ReplyT:
    """Name refused fields as the REST body does (`privacySettings.whoCanInvite`),
    not as the service's message does."""
    try:
        return await call
    except InvalidArgument as error:
        violations = tuple(
            FieldViolation(_rest_field(v.field), v.message) for v in error.violations
        )
        raise InvalidArgument(error.message, violations=violations) from None


def workspace_out(workspace: workspace_pb2.Workspace) -> WorkspaceOut:
    privacy = workspace.privacy_settings
    return WorkspaceOut(
        id=workspace.id,
        name=workspace.name,
        owner_id=workspace.owner_id,
        is_default=workspace.is_default,
        user_role=workspace.role,
        member_count=workspace.member_count,
        credits=credits(workspace.pool_micros),
        credit_mode=workspace.credit_mode,
        allocated_credits=(
            None if workspace.is_personal else credits(workspace.allocated_micros)
        ),
        privacy_settings=PrivacySettingsOut(
            who_can_invite=privacy.who_can_invite,
            who_can_allocate_credits=privacy.who_can_allocate_credits,
            who_can_be_admin=privacy.who_can_be_admin,
            chat_visibility=privacy.chat_visibility,
            image_visibility=privacy.image_visibility,
            video_visibility=privacy.video_visibility,
        ),
        created_at=workspace.created_at.ToDatetime(tzinfo=UTC),
        updated_at=workspace.updated_at.ToDatetime(tzinfo=UTC),
    )


def _member(member: workspace_pb2.Member) -> MemberOut:
    return MemberOut(
        id=member.id,
        user_id=member.user_id,
        name=member.name or None,
        email=member.email or None,
        avatar_url=member.avatar_url or None,
        role=member.role,
        allocated_credits=credits(member.allocated_micros),
        joined_at=member.joined_at.ToDatetime(tzinfo=UTC),
    )


def _invite(invite: workspace_pb2.Invite) -> InviteOut:
    return InviteOut(
        id=invite.id,
        email=invite.email or None,
        invited_by=invite.invited_by,
        created_at=invite.created_at.ToDatetime(tzinfo=UTC),
        expires_at=invite.expires_at.ToDatetime(tzinfo=UTC),
    )


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


# Invite links: the token is the whole secret.


@router.get("/invite/{token}")
async def preview_invite(
    token: str, workspaces: WorkspacesDep, response: Response
) -> InvitePreviewOut:
    """Public: where an invite link leads. 404 when it is unknown, used,
    withdrawn or expired."""
    reply = await workspaces.upstream.call(
        workspaces.stub.PreviewInvite,
        workspace_pb2.PreviewInviteRequest(token=token[:256]),
    )
    _no_store(response)
    return InvitePreviewOut(
        workspace_name=reply.workspace_name,
        inviter_name=reply.inviter_name or None,
        email_bound=reply.email_bound,
        expires_at=reply.expires_at.ToDatetime(tzinfo=UTC),
    )


@router.post("/join/{token}", status_code=status.HTTP_201_CREATED)
async def join(token: str, user: UserDep, workspaces: WorkspacesDep) -> JoinedOut:
    """Accept an invite: join its workspace as a member. An invite bound to
    an e-mail address admits only the account with that address (403)."""
    reply = await workspaces.upstream.call(
        workspaces.stub.AcceptInvite,
        workspace_pb2.AcceptInviteRequest(token=token[:256]),
        user.authorization,
    )
    return JoinedOut(workspace_id=reply.workspace_id, role=reply.role)


# Workspaces


@router.get("")
async def list_workspaces(
    user: UserDep,
    workspaces: WorkspacesDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    cursor: Cursor = None,
) -> list[WorkspaceOut]:
    """The caller's workspaces, the personal one first. More than `limit`:
    the `X-Next-Cursor` header names the next page (`cursor`)."""
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.ListWorkspaces,
            workspace_pb2.ListWorkspacesRequest(
                page_size=limit, page_token=cursor or ""
            ),
            user.authorization,
        )
    )
    _no_store(response)
    if reply.next_page_token:
        response.headers[NEXT_CURSOR_HEADER] = reply.next_page_token
    return [workspace_out(workspace) for workspace in reply.workspaces]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_workspace(
    body: CreateWorkspaceBody, user: UserDep, workspaces: WorkspacesDep
) -> WorkspaceOut:
    """A team workspace owned by the caller."""
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.CreateWorkspace,
            workspace_pb2.CreateWorkspaceRequest(name=body.name),
            user.authorization,
        )
    )
    return workspace_out(reply.workspace)


@router.get("/{workspace_id}")
async def get_workspace(
    workspace_id: str, user: UserDep, workspaces: WorkspacesDep, response: Response
) -> WorkspaceOut:
    reply = await workspaces.upstream.call(
        workspaces.stub.GetWorkspace,
        workspace_pb2.GetWorkspaceRequest(workspace_id=workspace_id),
        user.authorization,
    )
    _no_store(response)
    return workspace_out(reply.workspace)


@router.patch("/{workspace_id}")
async def update_workspace(
    workspace_id: str,
    body: UpdateWorkspaceBody,
    user: UserDep,
    workspaces: WorkspacesDep,
) -> WorkspaceOut:
    """Change the fields sent. `privacySettings` changes the keys it names
    and keeps the others."""
    privacy = body.privacy_settings
    request = workspace_pb2.UpdateWorkspaceRequest(
        workspace_id=workspace_id,
        name=body.name,
        credit_mode=body.credit_mode,
        privacy_settings=workspace_pb2.PrivacySettings(
            **(privacy.model_dump(exclude_none=True) if privacy else {})
        ),
    )
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.UpdateWorkspace, request, user.authorization
        )
    )
    return workspace_out(reply.workspace)


@router.delete("/{workspace_id}")
async def delete_workspace(
    workspace_id: str, user: UserDep, workspaces: WorkspacesDep
) -> DeletedOut:
    """Owner only, never the personal workspace. The pool and every
    allocation go back to the owner's own credits."""
    reply = await workspaces.upstream.call(
        workspaces.stub.DeleteWorkspace,
        workspace_pb2.DeleteWorkspaceRequest(workspace_id=workspace_id),
        user.authorization,
    )
    return DeletedOut(returned_credits=credits(reply.returned_micros))


@router.post("/{workspace_id}/transfer-ownership")
async def transfer_ownership(
    workspace_id: str,
    body: TransferOwnershipBody,
    user: UserDep,
    workspaces: WorkspacesDep,
) -> DoneOut:
    """Make another member the owner; the caller becomes an admin."""
    await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.TransferOwnership,
            workspace_pb2.TransferOwnershipRequest(
                workspace_id=workspace_id, user_id=body.user_id
            ),
            user.authorization,
        )
    )
    return DoneOut()


# Members


@router.get("/{workspace_id}/members")
async def list_members(
    workspace_id: str,
    user: UserDep,
    workspaces: WorkspacesDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Cursor = None,
) -> list[MemberOut]:
    """Owner first, then admins, then members by joining time. More than
    `limit`: the `X-Next-Cursor` header names the next page (`cursor`)."""
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.ListMembers,
            workspace_pb2.ListMembersRequest(
                workspace_id=workspace_id, page_size=limit, page_token=cursor or ""
            ),
            user.authorization,
        )
    )
    _no_store(response)
    if reply.next_page_token:
        response.headers[NEXT_CURSOR_HEADER] = reply.next_page_token
    return [_member(member) for member in reply.members]


@router.patch("/{workspace_id}/members/{user_id}")
async def change_role(
    workspace_id: str,
    user_id: str,
    body: MemberRoleBody,
    user: UserDep,
    workspaces: WorkspacesDep,
) -> RoleOut:
    """Make a member an admin or an admin a member (`userId` is the user's id)."""
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.UpdateMemberRole,
            workspace_pb2.UpdateMemberRoleRequest(
                workspace_id=workspace_id, user_id=user_id, role=body.role
            ),
            user.authorization,
        )
    )
    return RoleOut(role=reply.role)


@router.delete("/{workspace_id}/members/{user_id}")
async def remove_member(
    workspace_id: str, user_id: str, user: UserDep, workspaces: WorkspacesDep
) -> RemovedOut:
    """Remove a member (the caller's own id: leave). Their unspent
    allocation goes back to the pool."""
    reply = await workspaces.upstream.call(
        workspaces.stub.RemoveMember,
        workspace_pb2.RemoveMemberRequest(workspace_id=workspace_id, user_id=user_id),
        user.authorization,
    )
    return RemovedOut(returned_credits=credits(reply.returned_micros))


@router.post("/{workspace_id}/leave")
async def leave(
    workspace_id: str, user: UserDep, workspaces: WorkspacesDep
) -> RemovedOut:
    """Leave the workspace; the owner transfers ownership first (409)."""
    reply = await workspaces.upstream.call(
        workspaces.stub.LeaveWorkspace,
        workspace_pb2.LeaveWorkspaceRequest(workspace_id=workspace_id),
        user.authorization,
    )
    return RemovedOut(returned_credits=credits(reply.returned_micros))


# Invites


def _invite_link(settings: Settings, token: str) -> str:
    return f"{settings.frontend_url.rstrip('/')}/join/{token}"


@router.post("/{workspace_id}/invite", status_code=status.HTTP_201_CREATED)
async def create_invite(
    workspace_id: str,
    body: InviteBody,
    user: UserDep,
    workspaces: WorkspacesDep,
    request: Request,
) -> InviteCreatedOut:
    """A single-use invite link, valid for 7 days. With `email`, only the
    account with that address may accept it."""
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.CreateInvite,
            workspace_pb2.CreateInviteRequest(
                workspace_id=workspace_id, email=body.email or ""
            ),
            user.authorization,
        )
    )
    settings: Settings = request.app.state.settings
    return InviteCreatedOut(
        invite_link=_invite_link(settings, reply.token),
        token=reply.token,
        invite=_invite(reply.invite),
    )


@router.get("/{workspace_id}/invites")
async def list_invites(
    workspace_id: str, user: UserDep, workspaces: WorkspacesDep, response: Response
) -> list[InviteOut]:
    """Invites not yet accepted, withdrawn or expired, newest first."""
    reply = await workspaces.upstream.call(
        workspaces.stub.ListInvites,
        workspace_pb2.ListInvitesRequest(workspace_id=workspace_id),
        user.authorization,
    )
    _no_store(response)
    return [_invite(invite) for invite in reply.invites]


@router.delete("/{workspace_id}/invites/{invite_id}")
async def revoke_invite(
    workspace_id: str, invite_id: str, user: UserDep, workspaces: WorkspacesDep
) -> DoneOut:
    """Withdraw an invite; its link stops working."""
    await workspaces.upstream.call(
        workspaces.stub.RevokeInvite,
        workspace_pb2.RevokeInviteRequest(
            workspace_id=workspace_id, invite_id=invite_id
        ),
        user.authorization,
    )
    return DoneOut()


# Credits


@router.post("/{workspace_id}/credits/add", status_code=status.HTTP_201_CREATED)
async def add_credits(
    workspace_id: str,
    body: CreditsBody,
    user: UserDep,
    workspaces: WorkspacesDep,
    idempotency_key: IdempotencyKey = None,
) -> CreditsAddedOut:
    """Move credits from the caller's own balance into the pool (owner only).
    Send an `Idempotency-Key` to make a retry safe."""
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.AddCredits,
            workspace_pb2.AddCreditsRequest(
                workspace_id=workspace_id,
                amount_micros=to_micros(body.amount),
                request_id=idempotency_key or str(uuid.uuid4()),
            ),
            user.authorization,
        )
    )
    return CreditsAddedOut(
        added=credits(to_micros(body.amount)),
        workspace_credits=credits(reply.pool_micros),
        personal_credits=credits(reply.personal_micros),
    )


@router.post("/{workspace_id}/credits/allocate", status_code=status.HTTP_201_CREATED)
async def allocate_credits(
    workspace_id: str,
    body: AllocateBody,
    user: UserDep,
    workspaces: WorkspacesDep,
    idempotency_key: IdempotencyKey = None,
) -> CreditsAllocatedOut:
    """Move pool credits to a member's allocation (individual mode only).
    Send an `Idempotency-Key` to make a retry safe."""
    reply = await _named_as_in_rest(
        workspaces.upstream.call(
            workspaces.stub.AllocateCredits,
            workspace_pb2.AllocateCreditsRequest(
                workspace_id=workspace_id,
                user_id=body.user_id,
                amount_micros=to_micros(body.amount),
                request_id=idempotency_key or str(uuid.uuid4()),
            ),
            user.authorization,
        )
    )
    return CreditsAllocatedOut(
        allocated=credits(to_micros(body.amount)),
        allocated_credits=credits(reply.allocated_micros),
        workspace_credits=credits(reply.pool_micros),
    )


@router.get("/{workspace_id}/credits/usage")
async def usage(
    workspace_id: str, user: UserDep, workspaces: WorkspacesDep, response: Response
) -> UsageOut:
    """Credits charged for work in the workspace, by type and by member."""
    reply = await workspaces.upstream.call(
        workspaces.stub.GetUsage,
        workspace_pb2.GetUsageRequest(workspace_id=workspace_id),
        user.authorization,
    )
    _no_store(response)
    by_type = [
        TypeUsageOut(type=kind.type, count=kind.count, total=credits(kind.total_micros))
        for kind in reply.by_type
    ]
    return UsageOut(
        workspace_credits=credits(reply.pool_micros),
        total_used=credits(reply.total_micros),
        usage_by_type=by_type,
        by_type=by_type,
        by_member=[
            MemberUsageOut(
                user_id=member.user_id,
                name=member.name or None,
                email=member.email or None,
                used=credits(member.total_micros),
                count=member.count,
            )
            for member in reply.by_member
        ],
    )
