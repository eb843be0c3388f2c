"""gRPC servicer of the billing service. It has no RPCs yet; the process already
serves grpc.health.v1 and reflection so that it can be deployed and probed."""

from __future__ import annotations

from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc

from libs.grpc.server import ServiceDefinition


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    pass


def definition(servicer: BillingServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,
        servicer=servicer,
        register=billing_pb2_grpc.add_BillingServiceServicer_to_server,
        access={},
    )
