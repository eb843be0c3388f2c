"""Request and response bodies of /api/chat and /api/enhance-prompt, in the
camelCase the web client reads (web-client.md §2.7, §2.6). Credits are JSON
numbers of credits. Lengths are checked here for a quick 400 and again by
the chat service, which owns the rules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StrictBool, StrictInt, StrictStr

from gateway.schemas.base import RequestBody, ResponseBody

ModelId = Annotated[StrictStr, Field(max_length=200, examples=["openai/gpt-4o-mini"])]
Title = Annotated[StrictStr, Field(max_length=200)]
SystemPrompt = Annotated[StrictStr, Field(max_length=8000)]
WorkspaceId = Annotated[StrictStr, Field(max_length=64)]
# An http(s) address or a base64 data: URL of up to 5 MB of image.
ImageUrl = Annotated[StrictStr, Field(max_length=7_200_000)]
ImageUrls = Annotated[list[ImageUrl], Field(max_length=4)]
# The widths of the chat service's fields: a larger number is a 400 here, not
# a failure to build the call. The service checks the real ranges.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class CreateConversationBody(RequestBody):
    model_id: ModelId | None = Field(
        default=None, description="A chat model; openai/gpt-4o-mini when left out"
    )
    title: Title | None = None
    workspace_id: WorkspaceId | None = Field(
        default=None,
        description="A workspace the caller belongs to, whose credits pay for "
        "the replies; the caller's own credits when left out",
    )
    system_prompt: SystemPrompt | None = None


class UpdateConversationBody(RequestBody):
    """The fields to change; the others keep their values."""

    title: Title | None = None
    model_id: ModelId | None = None
    system_prompt: SystemPrompt | None = None


class ShareConversationBody(RequestBody):
    shared_with_workspace: StrictBool
    workspace_id: WorkspaceId | None = Field(
        default=None,
        description="Move the conversation into this workspace (the caller's) "
        "first; an empty string takes it out of its workspace",
    )


class SendMessageBody(RequestBody):
    content: Annotated[StrictStr, Field(max_length=32_000)]
    image_urls: ImageUrls | None = None
    web_search: StrictBool | None = Field(
        default=None,
        description="Search the web first, when the model can (capabilities."
        "webSearch); ignored otherwise",
    )


class EstimateBody(RequestBody):
    model_id: ModelId
    input_text: Annotated[StrictStr, Field(max_length=32_000)] = ""
    image_count: Annotated[StrictInt, Field(ge=0, le=INT32_MAX)] | None = None
    context_tokens: Annotated[StrictInt, Field(ge=0, le=INT64_MAX)] | None = Field(
        default=None, description="Tokens of the earlier messages the reply reads"
    )


class EnhancePromptBody(RequestBody):
    prompt: Annotated[StrictStr, Field(max_length=4000)] | None = None
    image_urls: ImageUrls | None = None
    variation_type: (
        Annotated[
            StrictStr,
            Field(
                max_length=32,
                description="enhance (default), slight_variation (or subtle), "
                "strong_variation (or strong)",
            ),
        ]
        | None
    ) = None


class EnhanceEstimateBody(RequestBody):
    prompt: Annotated[StrictStr, Field(max_length=4000)] = ""
    image_count: Annotated[StrictInt, Field(ge=0, le=INT32_MAX)] = 0


class ConversationOut(ResponseBody):
    id: str
    user_id: str
    workspace_id: str | None
    shared_with_workspace: bool
    title: str
    model_id: str
    model_name: str
    system_prompt: str
    message_count: int
    total_input_tokens: int
    total_output_tokens: int
    total_credits: float
    created_at: datetime
    updated_at: datetime


class MessageOut(ResponseBody):
    id: str
    conversation_id: str
    role: str = Field(examples=["assistant"])
    content: str
    image_urls: list[str]
    input_tokens: int
    output_tokens: int
    credits: float
    status: str = Field(
        description="complete, or cut_off for a reply stopped before its end",
        examples=["complete"],
    )
    web_search_used: bool
    created_at: datetime


class ConversationDetailOut(ConversationOut):
    messages: list[MessageOut] = Field(
        description="The newest messages (or those before `before`), oldest first"
    )
    messages_cursor: str | None = Field(
        description="Pass as `before` for the older messages; null when there are none"
    )
    is_owner: bool = Field(
        description="False for a conversation another member shared with a "
        "workspace: it can be read, not changed"
    )


class UpdatedConversationOut(ConversationOut):
    success: bool = True


class DeletedOut(ResponseBody):
    success: bool = True


class SentUserMessageOut(ResponseBody):
    id: str
    role: str = "user"
    content: str
    image_urls: list[str]


class SentAssistantMessageOut(ResponseBody):
    id: str
    role: str = "assistant"
    content: str
    input_tokens: int
    output_tokens: int
    credits: float
    finish_reason: str


class MessageSentOut(ResponseBody):
    """The whole reply, for a client that asked with `Accept: application/json`."""

    user_message: SentUserMessageOut
    assistant_message: SentAssistantMessageOut
    credits: float = Field(description="What the reply cost")
    user_credits: float = Field(description="The caller's own balance after it")
    title: str


class ChatEstimateOut(ResponseBody):
    model_id: str
    estimated_input_tokens: int
    text_tokens: int
    image_tokens: int
    context_tokens: int
    estimated_output_tokens: int
    estimated_cost: float = Field(description="A reply of estimatedOutputTokens")
    min_cost: float = Field(description="A short reply")
    max_cost: float = Field(description="The longest reply the model writes")
    max_output_tokens: int


class EnhancedPromptOut(ResponseBody):
    enhanced_prompt: str
    credits: float
    input_tokens: int
    output_tokens: int
    remaining_credits: float


class EnhanceEstimateOut(ResponseBody):
    estimated_cost: float
    input_tokens: int
    output_tokens: int
