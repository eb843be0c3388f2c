"""gRPC servicer of the generation service. It has no RPCs yet; the process already
serves grpc.health.v1 and reflection so that it can be deployed and probed."""

from __future__ import annotations

from omnihub.generation.v1 import generation_pb2, generation_pb2_grpc

from libs.grpc.server import ServiceDefinition


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    pass


def definition(servicer: GenerationServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=generation_pb2.DESCRIPTOR.services_by_name[
            "GenerationService"
        ].full_name,
        servicer=servicer,
        register=generation_pb2_grpc.add_GenerationServiceServicer_to_server,
        access={},
    )
