"""services/chat/enhance.py over real gRPC: a prompt rewritten by the local
LLM, charged like a reply, and released when the provider fails."""

from __future__ import annotations

import grpc
from omnihub.chat.v1 import chat_pb2

from tests.fixtures.chat import LocalLLM
from tests.services.chat.factories import CREDIT, ChatApi, failure, user_account

PNG = "data:image/png;base64,iVBORw0KGgo="


async def test_the_rewritten_prompt_is_charged_from_the_reported_usage(
    api: ChatApi,
) -> None:
    user = await api.funded_user()

    reply = await api.stub.EnhancePrompt(
        chat_pb2.EnhancePromptRequest(prompt="a lighthouse at dusk"),
        metadata=api.user(user),
    )

    assert "a lighthouse at dusk" in reply.enhanced_prompt
    reported = reply.input_tokens + 2 * reply.output_tokens
    assert reply.credits_micros == await api.price(
        reply.input_tokens, reply.output_tokens, reported, model_id="openai/gpt-4o"
    )
    assert reply.remaining_micros == 10 * CREDIT - reply.credits_micros
    assert await api.balance(user_account(user)) == (reply.remaining_micros, 0)


async def test_an_image_is_sent_for_the_model_to_read(
    api: ChatApi, llm_simulator: LocalLLM
) -> None:
    user = await api.funded_user()

    reply = await api.stub.EnhancePrompt(
        chat_pb2.EnhancePromptRequest(image_urls=[PNG], variation_type="strong"),
        metadata=api.user(user),
    )

    assert "I saw 1 image." in reply.enhanced_prompt


async def test_a_provider_failure_releases_the_hold(
    api: ChatApi, llm_simulator: LocalLLM
) -> None:
    user = await api.funded_user()
    marker = llm_simulator.marker()
    await llm_simulator.fault("mid_stream_error", marker)

    status, error = await failure(
        api.stub.EnhancePrompt(
            chat_pb2.EnhancePromptRequest(prompt=marker), metadata=api.user(user)
        )
    )

    assert status == grpc.StatusCode.UNAVAILABLE
    assert error.message
    assert await api.balance(user_account(user)) == (10 * CREDIT, 0)


async def test_too_few_credits_is_refused_with_the_amounts(api: ChatApi) -> None:
    user = await api.funded_user()
    await api.leave_only(user, 1)

    status, error = await failure(
        api.stub.EnhancePrompt(
            chat_pb2.EnhancePromptRequest(prompt="a cat"), metadata=api.user(user)
        )
    )

    assert status == grpc.StatusCode.FAILED_PRECONDITION
    assert error.code == "insufficient_credits"
    assert error.context["available"] == "0.000001"


async def test_an_unknown_variation_is_refused(api: ChatApi) -> None:
    status, error = await failure(
        api.stub.EnhancePrompt(
            chat_pb2.EnhancePromptRequest(prompt="a cat", variation_type="wild"),
            metadata=api.user(await api.funded_user()),
        )
    )

    assert status == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violations[0].field == "variation_type"
