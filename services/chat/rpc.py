"""gRPC servicer of the chat service. It has no RPCs yet; the process already
serves grpc.health.v1 and reflection so that it can be deployed and probed."""

from __future__ import annotations

from omnihub.chat.v1 import chat_pb2, chat_pb2_grpc

from libs.grpc.server import ServiceDefinition


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    pass


def definition(servicer: ChatServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
        servicer=servicer,
        register=chat_pb2_grpc.add_ChatServiceServicer_to_server,
        access={},
    )
