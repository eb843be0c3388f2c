"""Request and response bodies of /api/generate, /api/generations, /api/upscale,
the workspace gallery and the fal webhook, in the camelCase the web client
reads (web-client.md §2.3, §2.4, §2.14).

A generation also carries the snake_case names the original NestJS API sent
(`visible_id`, `started_at`, ...), so that nothing written against it breaks.
Credits are JSON numbers; times are ISO-8601 in UTC with milliseconds and Z.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC
from typing import Annotated, Any, Literal

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    WithJsonSchema,
    computed_field,
    field_validator,
)

from gateway.schemas.base import RequestBody, ResponseBody

# Long enough for the most detailed prompts people write for these models,
# short enough that a prompt never becomes a way to store documents.
MAX_PROMPT_LENGTH = 4000
MAX_MODELS = 4
MAX_IMAGES = 4
MAX_INPUT_IMAGES = 4
MAX_OPTIONS = 50
MAX_OPTION_KEY_LENGTH = 64
MAX_OPTION_VALUE_LENGTH = 1000
MAX_MODEL_ID_LENGTH = 200
MAX_ID_LENGTH = 64
MAX_BULK_DELETE = 100
MAX_LIST_LIMIT = 1000
MAX_GALLERY_LIMIT = 100
MAX_CURSOR_LENGTH = 512
INT32_MAX = 2**31 - 1

GenerationStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]


def _absent(value: object) -> bool:
    return value is None


def _without_nul(text: str) -> str:
    # PostgreSQL text cannot hold U+0000 (see RequestBody._refuse_nul, which
    # sees only top-level strings).
    if "\x00" in text:
        raise ValueError("must not contain a NUL character.")
    return text


# Made from the service's timestamps by the router, already in the form
# the original API sent: ISO-8601 in UTC with milliseconds and Z.
Moment = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


def moment(stamp: Timestamp) -> str:
    """ISO-8601 in UTC with milliseconds and Z, as the original API sent."""
    text = stamp.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def optional_moment(stamp: Timestamp, present: bool) -> str | None:
    return moment(stamp) if present else None


ModelId = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=MAX_MODEL_ID_LENGTH),
    AfterValidator(_without_nul),
]
ModelIds = Annotated[list[ModelId], Field(min_length=1, max_length=MAX_MODELS)]


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


# One model id or a list of them; one id is a list of one.
OneOrMoreModelIds = Annotated[
    ModelIds,
    BeforeValidator(_as_list),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_MODEL_ID_LENGTH},
                {
                    "type": "array",
                    "items": {"type": "string", "maxLength": MAX_MODEL_ID_LENGTH},
                    "minItems": 1,
                    "maxItems": MAX_MODELS,
                },
            ]
        }
    ),
]
Prompt = Annotated[
    StrictStr,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_PROMPT_LENGTH
    ),
]
InputImage = Annotated[StrictStr, Field(min_length=1), AfterValidator(_without_nul)]
ShortId = Annotated[StrictStr, Field(max_length=MAX_ID_LENGTH)]
OptionTexts = dict[str, str]


def option_text(key: str, value: object) -> str:
    """An option value as the text the catalog compares with its choices:
    JSON 12 (or 12.0) is "12", true is "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        if len(value) > MAX_OPTION_VALUE_LENGTH:
            raise ValueError(f"{key} is too long.")
        return _without_nul(value)
    raise ValueError(f"{key} must be a string, number or boolean.")


def _option_key(key: object, limit: int = MAX_OPTION_KEY_LENGTH) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= limit:
        raise ValueError(f"option names are 1 to {limit} characters.")
    return _without_nul(key)


def _option_texts(options: object) -> OptionTexts:
    if not isinstance(options, dict):
        raise ValueError("must be an object of option name -> value.")
    if len(options) > MAX_OPTIONS:
        raise ValueError(f"at most {MAX_OPTIONS} options.")
    return {_option_key(key): option_text(key, value) for key, value in options.items()}


# --- Requests -------------------------------------------------------------


class GenerateBody(RequestBody):
    """Both shapes the web client sends. The generate page: `model` (one id,
    or several), `options` (option -> value). The dashboard: `modelId` (one id
    or several), `options` keyed by model id, `numImages`."""

    type: Literal["image", "video"] | None = Field(
        default=None, description="Checked against each model's type"
    )
    model: OneOrMoreModelIds | None = Field(
        default=None, description="A model id, or up to 4 for a multi-model run"
    )
    models: ModelIds | None = Field(default=None, description="Same as `model`")
    model_id: OneOrMoreModelIds | None = Field(
        default=None, description="Same as `model` (the dashboard's name)"
    )
    prompt: Prompt = Field(description=f"1 to {MAX_PROMPT_LENGTH} characters")
    options: dict[str, str | OptionTexts] | None = Field(
        default=None,
        description="Option -> value for every model, or model id -> "
        "{option -> value}. Numbers and booleans are taken as their text; "
        "omitted options take the model's default",
    )
    num_images: StrictInt | None = Field(default=None, ge=1, le=MAX_IMAGES)
    input_images: list[InputImage] | None = Field(
        default=None,
        max_length=MAX_INPUT_IMAGES,
        description="Reference images: http(s) URLs or data: URLs",
    )
    workspace_id: ShortId | None = None

    @field_validator("options", mode="before")
    @classmethod
    def _options_as_text(cls, options: object) -> object:
        if options is None or not isinstance(options, dict):
            return options
        if len(options) > MAX_OPTIONS:
            raise ValueError(f"at most {MAX_OPTIONS} options.")
        # A model id is longer than an option name may be.
        return {
            _option_key(key, MAX_MODEL_ID_LENGTH): (
                _option_texts(value)
                if isinstance(value, dict)
                else option_text(key, value)
            )
            for key, value in options.items()
        }


class UpscaleQuoteBody(RequestBody):
    generation_id: ShortId = Field(description="The generation to upscale")
    model_id: ModelId | None = Field(
        default=None, description="An upscaler; by default the one for its type"
    )
    options: OptionTexts | None = None

    @field_validator("options", mode="before")
    @classmethod
    def _options_as_text(cls, options: object) -> object:
        return None if options is None else _option_texts(options)


class UpscaleBody(UpscaleQuoteBody):
    workspace_id: ShortId | None = None


class BulkDeleteBody(RequestBody):
    ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BULK_DELETE)

    @field_validator("ids")
    @classmethod
    def _unique(cls, ids: list[uuid.UUID]) -> list[uuid.UUID]:
        if len(set(ids)) != len(ids):
            raise ValueError("ids must not repeat.")
        return ids


class GenerationsQuery(RequestBody):
    """GET /api/generations. Unknown parameters are refused like unknown
    body fields."""

    type: str | None = Field(
        default=None, max_length=16, description="image, video or upscale"
    )
    workspace_id: str | None = Field(
        default=None,
        max_length=MAX_ID_LENGTH,
        description="Absent or empty: work outside team workspaces",
    )
    status: GenerationStatus | None = None
    limit: int = Field(default=50, ge=1, le=MAX_LIST_LIMIT)
    offset: int = Field(default=0, ge=0, le=INT32_MAX)
    cursor: str | None = Field(
        default=None,
        max_length=MAX_CURSOR_LENGTH,
        description="`nextCursor` of the page before; wins over offset",
    )


class GalleryQuery(RequestBody):
    type: str | None = Field(default=None, max_length=16)
    limit: int = Field(default=50, ge=1, le=MAX_GALLERY_LIMIT)
    cursor: str | None = Field(default=None, max_length=MAX_CURSOR_LENGTH)


class ShareBody(RequestBody):
    shared_with_workspace: StrictBool = Field(
        description="Show it in the workspace gallery once completed"
    )


# --- Responses ------------------------------------------------------------


class GenerationOut(ResponseBody):
    id: str
    visible_id: str = Field(description="The first 8 characters of id")
    user_id: str
    workspace_id: str | None
    shared_with_workspace: bool
    type: str = Field(description='"image", "video" or "upscale"')
    model: str = Field(description="The model's id")
    model_id: str
    model_name: str
    prompt: str
    options: dict[str, Any] = Field(
        description="Options as sent to the provider, plus inputImages, "
        "imageIndex, creditSource and, for upscales, sourceGenerationId"
    )
    credits: float = Field(description="Credits this generation costs")
    status: str = Field(
        description="pending, processing, completed, failed or cancelled"
    )
    result: str | None = Field(description="URL of the output once completed")
    thumbnail_url: str | None
    error: str | None = Field(description="A sentence for the user when failed")
    error_type: str | None = Field(
        description="content_violation, timeout, cancelled, rate_limit, "
        "api_error, invalid_input or unknown"
    )
    started_at: Moment | None
    queued_at: Moment | None
    completed_at: Moment | None
    cancelled_at: Moment | None
    max_wait_time: int = Field(description="Seconds before it times out")
    external_request_id: str | None = Field(description="The provider's job id")
    source_generation_id: str | None = Field(description="What an upscale upscales")
    credit_source: str | None = Field(
        description="personal, workspace, allocated or personal_fallback"
    )
    image_index: int = Field(description="Its place among the images of one job")
    simulated: bool = Field(description="Made by the local fal simulator")
    queue_position: int | None = Field(
        description="While queued at the provider: 0 at the head"
    )
    progress: str | None = Field(description="The provider's last log line")

    # The original API's names, kept for clients written against it.

    @computed_field(alias="visible_id")  # type: ignore[prop-decorator]
    @property
    def nest_visible_id(self) -> str:
        return self.visible_id

    @computed_field(alias="user_id")  # type: ignore[prop-decorator]
    @property
    def nest_user_id(self) -> str:
        return self.user_id

    @computed_field(alias="workspace_id")  # type: ignore[prop-decorator]
    @property
    def nest_workspace_id(self) -> str | None:
        return self.workspace_id

    @computed_field(alias="model_name")  # type: ignore[prop-decorator]
    @property
    def nest_model_name(self) -> str:
        return self.model_name

    @computed_field(alias="thumbnail_url")  # type: ignore[prop-decorator]
    @property
    def nest_thumbnail_url(self) -> str | None:
        return self.thumbnail_url

    @computed_field(alias="error_type")  # type: ignore[prop-decorator]
    @property
    def nest_error_type(self) -> str | None:
        return self.error_type

    @computed_field(alias="started_at")  # type: ignore[prop-decorator]
    @property
    def nest_started_at(self) -> Moment | None:
        return self.started_at

    @computed_field(alias="completed_at")  # type: ignore[prop-decorator]
    @property
    def nest_completed_at(self) -> Moment | None:
        return self.completed_at

    @computed_field(alias="shared_with_workspace")  # type: ignore[prop-decorator]
    @property
    def nest_shared_with_workspace(self) -> bool:
        return self.shared_with_workspace


class GenerationsCreatedOut(ResponseBody):
    """What POST /api/generate and POST /api/upscale answer. `userCredits`
    and `newCredits` are there only when the caller's own credits paid."""

    generations: list[GenerationOut]
    status: Literal["pending"] = "pending"
    credits: float = Field(description="Credits held for all of them together")
    remaining_credits: float = Field(
        description="Balance of the account that paid, afterwards"
    )
    credit_source: str = Field(
        description="personal, workspace, allocated or personal_fallback"
    )
    id: str = Field(description="The first generation's id")
    visible_id: str = Field(description="The first generation's visibleId")
    # Absent, not null, when another account paid: the web client keeps the
    # balance it shows when the key is missing, and would show null as none.
    user_credits: float | None = Field(
        default=None,
        exclude_if=_absent,
        description="The caller's own balance, afterwards",
    )
    new_credits: float | None = Field(
        default=None,
        exclude_if=_absent,
        description="Same as userCredits (the dashboard's name)",
    )


class GenerationListOut(ResponseBody):
    generations: list[GenerationOut]
    counts: dict[str, int] = Field(
        description="Generations per type in the same workspace, any status"
    )
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next, older page; null on the last"
    )


class GalleryOut(ResponseBody):
    generations: list[GenerationOut]
    next_cursor: str | None


class GenerationDeletedOut(ResponseBody):
    success: Literal[True] = True
    message: str = "Generation deleted"


class GenerationsDeletedOut(ResponseBody):
    success: Literal[True] = True
    deleted: int


class GenerationCancelledOut(ResponseBody):
    success: Literal[True] = True
    message: str = "Generation cancelled, credits refunded"
    credits_refunded: float
    generation: GenerationOut


class SharingOut(ResponseBody):
    success: Literal[True] = True
    shared_with_workspace: bool


class UpscaleQuoteOut(ResponseBody):
    price: float = Field(description="Credits charged")
    base_price: float = Field(description="The upscaler's base cost per job")
    model: str = Field(description="The upscaler's name")
    model_id: str
    source_type: str = Field(description="Type of the source generation")


class WebhookAcceptedOut(ResponseBody):
    ok: Literal[True] = True
