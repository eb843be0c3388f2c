"""Every cell of the permission matrix (services/workspace/service.py), over
real gRPC: the roles that may do a thing do it, a member without the right
is refused with PERMISSION_DENIED and changes nothing, and an outsider gets
NOT_FOUND, as for a workspace that does not exist.

Each case builds its own team: an owner, two admins, two members and an
outsider, with the privacy settings the case names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from omnihub.workspace.v1 import workspace_pb2

from tests.services.workspace.factories import (
    Team,
    WorkspaceApi,
    build_team,
    failure,
    new_key,
    new_user,
    pool_account,
)

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
MISSING = grpc.StatusCode.NOT_FOUND
REFUSED_STATE = grpc.StatusCode.FAILED_PRECONDITION
CALLERS = ("owner", "admin", "member", "outsider")

Prepared = Awaitable[Any]
Action = Callable[[WorkspaceApi, Team, str], Awaitable[Prepared]]


async def _view(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return api.stub.GetWorkspace(
        workspace_pb2.GetWorkspaceRequest(workspace_id=team.workspace_id),
        metadata=api.user(caller),
    )


async def _list_members(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return api.stub.ListMembers(
        workspace_pb2.ListMembersRequest(workspace_id=team.workspace_id),
        metadata=api.user(caller),
    )


async def _usage(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return api.stub.GetUsage(
        workspace_pb2.GetUsageRequest(workspace_id=team.workspace_id),
        metadata=api.user(caller),
    )


def _update(api: WorkspaceApi, team: Team, caller: str, **fields: Any) -> Prepared:
    return api.stub.UpdateWorkspace(
        workspace_pb2.UpdateWorkspaceRequest(workspace_id=team.workspace_id, **fields),
        metadata=api.user(caller),
    )


async def _rename(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return _update(api, team, caller, name="Renamed")


async def _change_credit_mode(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return _update(api, team, caller, credit_mode="individual")


async def _change_privacy(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    privacy = workspace_pb2.PrivacySettings(image_visibility="public")
    return _update(api, team, caller, privacy_settings=privacy)


async def _delete(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return api.stub.DeleteWorkspace(
        workspace_pb2.DeleteWorkspaceRequest(workspace_id=team.workspace_id),
        metadata=api.user(caller),
    )


async def _transfer_ownership(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return api.stub.TransferOwnership(
        workspace_pb2.TransferOwnershipRequest(
            workspace_id=team.workspace_id, user_id=team.member
        ),
        metadata=api.user(caller),
    )


async def _invite(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return api.stub.CreateInvite(
        workspace_pb2.CreateInviteRequest(workspace_id=team.workspace_id),
        metadata=api.user(caller),
    )


async def _list_invites(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return api.stub.ListInvites(
        workspace_pb2.ListInvitesRequest(workspace_id=team.workspace_id),
        metadata=api.user(caller),
    )


async def _revoke_invite(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    created = await api.stub.CreateInvite(
        workspace_pb2.CreateInviteRequest(workspace_id=team.workspace_id),
        metadata=api.user(team.owner),
    )
    return api.stub.RevokeInvite(
        workspace_pb2.RevokeInviteRequest(
            workspace_id=team.workspace_id, invite_id=created.invite.id
        ),
        metadata=api.user(caller),
    )


def _set_role(
    api: WorkspaceApi, team: Team, caller: str, target: str, role: str
) -> Prepared:
    return api.stub.UpdateMemberRole(
        workspace_pb2.UpdateMemberRoleRequest(
            workspace_id=team.workspace_id, user_id=target, role=role
        ),
        metadata=api.user(caller),
    )


async def _promote(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return _set_role(api, team, caller, team.member2, "admin")


async def _demote(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return _set_role(api, team, caller, team.admin2, "member")


def _remove(api: WorkspaceApi, team: Team, caller: str, target: str) -> Prepared:
    return api.stub.RemoveMember(
        workspace_pb2.RemoveMemberRequest(
            workspace_id=team.workspace_id, user_id=target
        ),
        metadata=api.user(caller),
    )


async def _remove_member(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    # A member removing "a member" names another one, not themself.
    return _remove(api, team, caller, team.member2)


async def _remove_admin(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return _remove(api, team, caller, team.admin2)


async def _remove_owner(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return _remove(api, team, caller, team.owner)


async def _leave(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    return api.stub.LeaveWorkspace(
        workspace_pb2.LeaveWorkspaceRequest(workspace_id=team.workspace_id),
        metadata=api.user(caller),
    )


async def _add_credits(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    await api.fund(caller, 5)
    return api.stub.AddCredits(
        workspace_pb2.AddCreditsRequest(
            workspace_id=team.workspace_id,
            amount_micros=2_000_000,
            request_id=new_key(),
        ),
        metadata=api.user(caller),
    )


async def _allocate(api: WorkspaceApi, team: Team, caller: str) -> Prepared:
    await api.update(team.workspace_id, team.owner, credit_mode="individual")
    await api.fund(team.owner, 5)
    await api.add_credits(team.workspace_id, team.owner, 5)
    return api.stub.AllocateCredits(
        workspace_pb2.AllocateCreditsRequest(
            workspace_id=team.workspace_id,
            user_id=team.member2,
            amount_micros=2_000_000,
            request_id=new_key(),
        ),
        metadata=api.user(caller),
    )


ACTIONS: dict[str, Action] = {
    "view": _view,
    "list-members": _list_members,
    "usage": _usage,
    "rename": _rename,
    "change-credit-mode": _change_credit_mode,
    "change-privacy": _change_privacy,
    "delete": _delete,
    "transfer-ownership": _transfer_ownership,
    "invite": _invite,
    "list-invites": _list_invites,
    "revoke-invite": _revoke_invite,
    "promote": _promote,
    "demote": _demote,
    "remove-member": _remove_member,
    "remove-admin": _remove_admin,
    "remove-owner": _remove_owner,
    "leave": _leave,
    "add-credits": _add_credits,
    "allocate": _allocate,
}


@dataclass(frozen=True)
class Row:
    """One row of the matrix: the outcome for owner, admin, member, outsider."""

    action: str
    outcomes: tuple[grpc.StatusCode, grpc.StatusCode, grpc.StatusCode, grpc.StatusCode]
    privacy: dict[str, str] = field(default_factory=dict)


MATRIX = (
    Row("view", (OK, OK, OK, MISSING)),
    Row("list-members", (OK, OK, OK, MISSING)),
    Row("usage", (OK, OK, OK, MISSING)),
    Row("rename", (OK, OK, DENIED, MISSING)),
    Row("change-credit-mode", (OK, DENIED, DENIED, MISSING)),
    Row("change-privacy", (OK, DENIED, DENIED, MISSING)),
    Row("delete", (OK, DENIED, DENIED, MISSING)),
    Row("transfer-ownership", (OK, DENIED, DENIED, MISSING)),
    Row("invite", (OK, OK, DENIED, MISSING)),
    Row("invite", (OK, DENIED, DENIED, MISSING), {"who_can_invite": "owner_only"}),
    Row("invite", (OK, OK, OK, MISSING), {"who_can_invite": "members"}),
    Row("list-invites", (OK, OK, DENIED, MISSING)),
    Row(
        "list-invites",
        (OK, DENIED, DENIED, MISSING),
        {"who_can_invite": "owner_only"},
    ),
    Row("list-invites", (OK, OK, OK, MISSING), {"who_can_invite": "members"}),
    Row("revoke-invite", (OK, OK, DENIED, MISSING)),
    Row(
        "revoke-invite",
        (OK, DENIED, DENIED, MISSING),
        {"who_can_invite": "owner_only"},
    ),
    Row("revoke-invite", (OK, OK, OK, MISSING), {"who_can_invite": "members"}),
    Row("promote", (OK, DENIED, DENIED, MISSING)),
    Row(
        "promote",
        (OK, OK, DENIED, MISSING),
        {"who_can_be_admin": "admins_can_promote"},
    ),
    Row("demote", (OK, DENIED, DENIED, MISSING)),
    Row(
        "demote",
        (OK, DENIED, DENIED, MISSING),
        {"who_can_be_admin": "admins_can_promote"},
    ),
    Row("remove-member", (OK, OK, DENIED, MISSING)),
    Row("remove-admin", (OK, DENIED, DENIED, MISSING)),
    Row("remove-owner", (REFUSED_STATE, DENIED, DENIED, MISSING)),
    Row("leave", (REFUSED_STATE, OK, OK, MISSING)),
    Row("add-credits", (OK, DENIED, DENIED, MISSING)),
    Row("allocate", (OK, DENIED, DENIED, MISSING)),
    Row(
        "allocate",
        (OK, OK, DENIED, MISSING),
        {"who_can_allocate_credits": "admins"},
    ),
    Row(
        "allocate",
        (DENIED, DENIED, DENIED, MISSING),
        {"who_can_allocate_credits": "none"},
    ),
)


def _cells() -> list[Any]:
    cells = []
    for row in MATRIX:
        setting = "-".join(f"{k}={v}" for k, v in row.privacy.items()) or "default"
        for caller, expected in zip(CALLERS, row.outcomes, strict=True):
            cells.append(
                pytest.param(
                    row.action,
                    caller,
                    row.privacy,
                    expected,
                    id=f"{row.action}-{caller}-{setting}-{expected.name.lower()}",
                )
            )
    return cells


async def _state(api: WorkspaceApi, team: Team) -> tuple[Any, ...]:
    """What the owner sees: the workspace, every member's role, the pool."""
    workspace = await api.workspace(team.workspace_id, team.owner)
    roles = sorted(
        (m.user_id, m.role) for m in await api.members(team.workspace_id, team.owner)
    )
    invites = await api.stub.ListInvites(
        workspace_pb2.ListInvitesRequest(workspace_id=team.workspace_id),
        metadata=api.user(team.owner),
    )
    workspace.ClearField("updated_at")
    pool = await api.balance(pool_account(team.workspace_id))
    return workspace.SerializeToString(), roles, len(invites.invites), pool


@pytest.mark.parametrize(("action", "caller", "privacy", "expected"), _cells())
async def test_permission_cell(
    api: WorkspaceApi,
    action: str,
    caller: str,
    privacy: dict[str, str],
    expected: grpc.StatusCode,
) -> None:
    team = await build_team(api, **privacy)
    call = await ACTIONS[action](api, team, team.by_role(caller))

    if expected is OK:
        await call
        return
    before = await _state(api, team)
    status, _ = await failure(call)

    assert status == expected
    assert await _state(api, team) == before


async def test_unknown_workspace_is_not_found_like_a_foreign_one(
    api: WorkspaceApi,
) -> None:
    status, error = await failure(
        api.stub.GetWorkspace(
            workspace_pb2.GetWorkspaceRequest(workspace_id=new_user()),
            metadata=api.user(new_user()),
        )
    )

    assert status == MISSING
    assert error.message == "No such workspace."


async def test_malformed_workspace_id_is_not_found(api: WorkspaceApi) -> None:
    status, _ = await failure(
        api.stub.GetWorkspace(
            workspace_pb2.GetWorkspaceRequest(workspace_id="not-a-uuid"),
            metadata=api.user(new_user()),
        )
    )

    assert status == MISSING


VISIBILITY = [
    ("private", "author", True),
    ("private", "member", False),
    ("private", "outsider", False),
    ("private", "anonymous", False),
    ("members", "author", True),
    ("members", "member", True),
    ("members", "outsider", False),
    ("members", "anonymous", False),
    ("public", "author", True),
    ("public", "member", True),
    ("public", "outsider", True),
    ("public", "anonymous", True),
]


@pytest.mark.parametrize(
    ("setting", "viewer", "visible"),
    [pytest.param(*case, id=f"{case[0]}-{case[1]}") for case in VISIBILITY],
)
async def test_visibility_cell(
    api: WorkspaceApi, setting: str, viewer: str, visible: bool
) -> None:
    team = await build_team(api, video_visibility=setting)
    viewers = {
        "author": team.member,
        "member": team.member2,
        "outsider": team.outsider,
        "anonymous": "",
    }

    reply = await api.stub.CheckVisibility(
        workspace_pb2.CheckVisibilityRequest(
            workspace_id=team.workspace_id,
            viewer_id=viewers[viewer],
            author_id=team.member,
            content_type="video",
        ),
        metadata=api.service,
    )

    assert reply.visible is visible


async def test_visibility_settings_are_per_content_type(api: WorkspaceApi) -> None:
    team = await build_team(api, chat_visibility="members")

    replies = [
        await api.stub.CheckVisibility(
            workspace_pb2.CheckVisibilityRequest(
                workspace_id=team.workspace_id,
                viewer_id=team.member2,
                author_id=team.member,
                content_type=content_type,
            ),
            metadata=api.service,
        )
        for content_type in ("chat", "image")
    ]

    assert [reply.visible for reply in replies] == [True, False]
