"""Request and response bodies of the model catalog and pricing routes, in
the camelCase the web client reads. Money is always a JSON number: US dollars
for provider costs, credits for prices."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from gateway.schemas.base import RequestBody, ResponseBody

INT32_MAX = 2**31 - 1
MAX_OPTIONS = 50

OptionValue = str | bool | int | float | None


class ChoiceOut(ResponseBody):
    value: str
    label: str
    price_multiplier: float


class OptionOut(ResponseBody):
    type: str = Field(description='"select" or "toggle"')
    label: str
    default: OptionValue
    choices: list[ChoiceOut]


class ModelOut(ResponseBody):
    id: str
    name: str
    type: str = Field(description='"image", "video" or "chat"')
    category: str
    provider: str = Field(description="The platform that runs it, e.g. Fal.ai")
    provider_name: str = Field(description="The model's maker")
    credits: float = Field(
        description="Base cost in US dollars per job, before options, margin "
        "and credit price: what the web client's estimate starts from"
    )
    base_cost: float = Field(description="Base cost in US dollars per job")
    price: float = Field(
        description="Credits for one job with the default options, as charged"
    )
    thumbnail: str | None
    image_input: str = Field(description='"none", "optional" or "required"')
    max_input_images: int
    video_input: str = Field(description='"none", "optional" or "required"')
    options: dict[str, OptionOut]
    tags: list[str]
    display_order: int
    doc_url: str | None
    capabilities: dict[str, Any]


class ChatModelOut(ResponseBody):
    id: str
    name: str
    provider: str
    provider_name: str
    input_cost: float = Field(description="US dollars per 1,000 input tokens")
    output_cost: float = Field(description="US dollars per 1,000 output tokens")
    capabilities: dict[str, Any]
    doc_url: str | None


class UpscaleModelOut(ResponseBody):
    id: str
    name: str
    type: str
    provider: str
    provider_name: str
    credits: float = Field(description="Base cost in US dollars per job")
    options: dict[str, OptionOut]
    tags: list[str]
    doc_url: str | None


class PriceBody(RequestBody):
    options: dict[str, Any] | None = Field(
        default=None,
        max_length=MAX_OPTIONS,
        description="Option key -> value; omitted options take their default",
    )
    count: int | None = Field(
        default=None, ge=1, le=INT32_MAX, description="Images (1-4, image models)"
    )


class PriceBreakdownOut(ResponseBody):
    api_cost: float = Field(description="Provider cost in US dollars")
    margin_percent: float
    price_with_margin: float = Field(description="US dollars after the margin")
    credits_per_dollar: float
    final_credits: float


class PriceOut(ResponseBody):
    price: float = Field(description="Credits charged")
    base_price: float = Field(
        description="Provider cost in US dollars: base cost x options x count"
    )
    base_cost: float = Field(description="Base cost in US dollars per job")
    profit_margin: float
    credit_price: float = Field(description="US dollars per credit")
    count: int
    breakdown: PriceBreakdownOut


class PricingSettingsOut(ResponseBody):
    profit_margin: float
    profit_margin_image: float
    profit_margin_video: float
    profit_margin_chat: float
    credit_price: float = Field(description="US dollars per credit")


class GoogleClientIdOut(ResponseBody):
    client_id: str | None
