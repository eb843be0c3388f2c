"""gRPC servicer of the catalog service. It has no RPCs yet; the process already
serves grpc.health.v1 and reflection so that it can be deployed and probed."""

from __future__ import annotations

from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from libs.grpc.server import ServiceDefinition


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    pass


def definition(servicer: CatalogServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
        servicer=servicer,
        register=catalog_pb2_grpc.add_CatalogServiceServicer_to_server,
        access={},
    )
