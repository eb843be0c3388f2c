"""services/workspace/rpc.py over real gRPC: who may call which method, and
requests this build cannot read in full."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import Message
from omnihub.workspace.v1 import workspace_pb2

from libs.grpc.identity import AUTHORIZATION_KEY
from tests.services.workspace.factories import WorkspaceApi, failure, new_user

INTERNAL_REQUESTS = {
    "EnsurePersonalWorkspace": workspace_pb2.EnsurePersonalWorkspaceRequest(
        user_id=new_user()
    ),
    "ResolvePayer": workspace_pb2.ResolvePayerRequest(user_id=new_user()),
    "CheckVisibility": workspace_pb2.CheckVisibilityRequest(
        workspace_id=new_user(), content_type="image"
    ),
}


@pytest.mark.parametrize("method", sorted(INTERNAL_REQUESTS))
async def test_internal_methods_refuse_a_user(api: WorkspaceApi, method: str) -> None:
    user_only = next(
        (pair,) for pair in api.user(new_user()) if pair[0] == AUTHORIZATION_KEY
    )

    status, _ = await failure(
        getattr(api.stub, method)(INTERNAL_REQUESTS[method], metadata=user_only)
    )

    assert status == grpc.StatusCode.PERMISSION_DENIED


async def test_user_methods_refuse_a_service_acting_for_nobody(
    api: WorkspaceApi,
) -> None:
    status, _ = await failure(
        api.stub.ListWorkspaces(
            workspace_pb2.ListWorkspacesRequest(), metadata=api.service
        )
    )

    assert status == grpc.StatusCode.UNAUTHENTICATED


async def test_anonymous_caller_may_only_preview(api: WorkspaceApi) -> None:
    status, _ = await failure(
        api.stub.CreateWorkspace(workspace_pb2.CreateWorkspaceRequest(name="x"))
    )

    assert status == grpc.StatusCode.UNAUTHENTICATED


async def test_update_with_a_field_this_build_does_not_know_is_refused(
    api: WorkspaceApi,
) -> None:
    owner = new_user()
    workspace_id = await api.create_workspace(owner)
    request = workspace_pb2.UpdateWorkspaceRequest(workspace_id=workspace_id)
    # Field 99 stands for one a newer contract added.
    raw = request.SerializeToString() + b"\x98\x06\x01"
    newer: Message = workspace_pb2.UpdateWorkspaceRequest.FromString(raw)

    status, error = await failure(
        api.stub.UpdateWorkspace(newer, metadata=api.user(owner))
    )

    assert status == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error.violations] == ["99"]


# Found by tests/fuzz: a page token whose moment is past the year 9999, or
# whose digits int() cannot read ("²" counts as a digit), failed with INTERNAL.
TAMPERED_MICROS = ["9" * 30, "\u00b2"]


@pytest.mark.parametrize("micros", TAMPERED_MICROS)
async def test_list_workspaces_refuses_a_tampered_page_token(
    api: WorkspaceApi, micros: str
) -> None:
    token = f"0.{micros}.{new_user()}"

    status, _ = await failure(
        api.stub.ListWorkspaces(
            workspace_pb2.ListWorkspacesRequest(page_token=token),
            metadata=api.user(new_user()),
        )
    )

    assert status == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("micros", TAMPERED_MICROS)
async def test_list_members_refuses_a_tampered_page_token(
    api: WorkspaceApi, micros: str
) -> None:
    owner = new_user()
    workspace_id = await api.create_workspace(owner)

    status, _ = await failure(
        api.stub.ListMembers(
            workspace_pb2.ListMembersRequest(
                workspace_id=workspace_id, page_token=f"0.{micros}.{new_user()}"
            ),
            metadata=api.user(owner),
        )
    )

    assert status == grpc.StatusCode.INVALID_ARGUMENT
