"""gRPC servicer of the workspace service. It has no RPCs yet; the process already
serves grpc.health.v1 and reflection so that it can be deployed and probed."""

from __future__ import annotations

from omnihub.workspace.v1 import workspace_pb2, workspace_pb2_grpc

from libs.grpc.server import ServiceDefinition


class WorkspaceServicer(workspace_pb2_grpc.WorkspaceServiceServicer):
    pass


def definition(servicer: WorkspaceServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=workspace_pb2.DESCRIPTOR.services_by_name[
            "WorkspaceService"
        ].full_name,
        servicer=servicer,
        register=workspace_pb2_grpc.add_WorkspaceServiceServicer_to_server,
        access={},
    )
