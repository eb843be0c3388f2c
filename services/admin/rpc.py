"""gRPC servicer of the admin service. It has no RPCs yet; the process already
serves grpc.health.v1 and reflection so that it can be deployed and probed."""

from __future__ import annotations

from omnihub.admin.v1 import admin_pb2, admin_pb2_grpc

from libs.grpc.server import ServiceDefinition


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    pass


def definition(servicer: AdminServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
        servicer=servicer,
        register=admin_pb2_grpc.add_AdminServiceServicer_to_server,
        access={},
    )
