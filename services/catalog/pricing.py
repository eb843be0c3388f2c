"""The one pricing rule. Quotes, charges and upscales all use it:

    price = B x M x q x (1 + m / 100) / cp

B   the model's base cost in US dollars (per job, before options),
M   the product of the price multipliers of the chosen choice of every option
    the model declares, except `num_images`,
q   the number of images: 1 to 4 for image models, exactly 1 for video models
    and upscalers,
m   the margin percentage of the model's type when it is above zero, else the
    general margin,
cp  the price of one credit in US dollars.

The result is in micro-credits, rounded half-up to the nearest millionth of a
credit. Everything is Decimal arithmetic on integer micro-amounts; no float
ever enters a price.

Options the request leaves out are priced at the model's default choice, which
is also what is sent to the provider. The original priced an omitted option
as x1 even when its default carried a multiplier (Veo's audio, on by default,
costs x2), so API clients could underpay. Anything the rule cannot price (an
unknown option, a value outside the choices, a count the model does not
allow) is refused with INVALID_ARGUMENT naming the field; nothing is ever
silently priced as x1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Protocol

from libs.errors import FieldViolation, InvalidArgument

MICROS = 1_000_000
TOKENS_PER_PRICE_UNIT = 1000
NUM_IMAGES = "num_images"
MAX_IMAGES = 4
UPSCALE_CATEGORY = "upscale"
IMAGE, VIDEO, CHAT = "image", "video", "chat"
TOGGLE_VALUES = ("true", "false")
_IMAGE_COUNT = re.compile(rf"^[1-{MAX_IMAGES}]$")
# Enough digits that no product of micro-amounts and multipliers is rounded
# before the one final rounding.
_PRECISION = 50

JsonScalar = str | bool | int | float | None


@dataclass(frozen=True, slots=True)
class Choice:
    value: str
    label: str
    multiplier: Decimal


@dataclass(frozen=True, slots=True)
class Option:
    """A provider parameter the user may choose, e.g. `resolution`."""

    key: str
    label: str
    control: str
    default: JsonScalar
    choices: tuple[Choice, ...]

    @property
    def default_text(self) -> str:
        return option_text(self.default)

    def choice(self, value: str) -> Choice | None:
        for choice in self.choices:
            if choice.value == value:
                return choice
        return None


@dataclass(frozen=True, slots=True)
class PricingSettings:
    profit_margin: Decimal
    profit_margin_image: Decimal
    profit_margin_video: Decimal
    profit_margin_chat: Decimal
    credit_price_micros: int

    def margin_for(self, model_type: str) -> Decimal:
        """The type's margin when set above zero, else the general margin.

        The original's display formula let a type margin of 0 win, so the
        general margin was never used with the seeded settings.
        """
        by_type = {
            IMAGE: self.profit_margin_image,
            VIDEO: self.profit_margin_video,
            CHAT: self.profit_margin_chat,
        }
        specific = by_type.get(model_type, Decimal(0))
        return specific if specific > 0 else self.profit_margin


class Priceable(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def base_cost_micros(self) -> int: ...
    @property
    def options(self) -> Sequence[Option]: ...


class TokenPriced(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def input_cost_micros_per_1k(self) -> int: ...
    @property
    def output_cost_micros_per_1k(self) -> int: ...


@dataclass(frozen=True)
class Quote:
    price_micros: int
    # Provider cost in micro-USD: B x M x q.
    cost_micros: int
    base_cost_micros: int
    multiplier: Decimal
    count: int
    margin_percent: Decimal
    credit_price_micros: int
    # What will be sent to the provider: every declared option, defaults
    # filled in, `num_images` set to the count when the model declares it.
    resolved_options: dict[str, str]


@dataclass(frozen=True)
class ChatQuote:
    price_micros: int
    cost_micros: int
    margin_percent: Decimal
    credit_price_micros: int


def option_text(value: JsonScalar) -> str:
    """An option value as the text choices are compared with: JSON 12 and 12.0
    read "12", true reads "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value is None:
        return ""
    return str(value)


def quote(
    model: Priceable,
    chosen: Mapping[str, str],
    count: int,
    settings: PricingSettings,
) -> Quote:
    """Price one generation or upscale of `model` with the client's options.

    `count` is the requested number of images, 0 when the request gave none.
    """
    if model.type == CHAT:
        raise InvalidArgument.for_field(
            "model_id", f"{model.name} is a chat model; it is priced per token."
        )
    violations: list[FieldViolation] = []
    margin = settings.margin_for(model.type)
    with localcontext() as context:
        context.prec = _PRECISION
        images = _image_count(model, chosen, count, violations)
        resolved, multiplier = _resolve_options(model, chosen, images, violations)
        if violations:
            raise InvalidArgument(violations[0].message, violations=tuple(violations))
        cost = model.base_cost_micros * multiplier * images
        price = _credits(cost, margin, settings.credit_price_micros)
    return Quote(
        price_micros=price,
        cost_micros=_round(cost),
        base_cost_micros=model.base_cost_micros,
        multiplier=multiplier,
        count=images,
        margin_percent=margin,
        credit_price_micros=settings.credit_price_micros,
        resolved_options=resolved,
    )


def quote_chat(
    model: TokenPriced,
    input_tokens: int,
    output_tokens: int,
    provider_cost_micros: int,
    settings: PricingSettings,
) -> ChatQuote:
    """Price a chat reply: the provider's reported cost when it gave one,
    else the tokens at the model's prices per 1,000."""
    if model.type != CHAT:
        raise InvalidArgument.for_field(
            "model_id", f"{model.id} is not a chat model; quote it with QuotePrice."
        )
    for field, amount in (
        ("input_tokens", input_tokens),
        ("output_tokens", output_tokens),
        ("provider_cost_micros", provider_cost_micros),
    ):
        if amount < 0:
            raise InvalidArgument.for_field(field, f"{field} cannot be negative.")
    margin = settings.margin_for(CHAT)
    with localcontext() as context:
        context.prec = _PRECISION
        if provider_cost_micros > 0:
            cost = Decimal(provider_cost_micros)
        else:
            cost = (
                Decimal(input_tokens * model.input_cost_micros_per_1k)
                + Decimal(output_tokens * model.output_cost_micros_per_1k)
            ) / TOKENS_PER_PRICE_UNIT
        price = _credits(cost, margin, settings.credit_price_micros)
    return ChatQuote(
        price_micros=price,
        cost_micros=_round(cost),
        margin_percent=margin,
        credit_price_micros=settings.credit_price_micros,
    )


def reference_price(model: Priceable, settings: PricingSettings) -> int:
    """What a model costs with its default options and one image; for chat
    models, one base unit (their listed price per 1,000 tokens)."""
    if model.type == CHAT:
        with localcontext() as context:
            context.prec = _PRECISION
            return _credits(
                Decimal(model.base_cost_micros),
                settings.margin_for(CHAT),
                settings.credit_price_micros,
            )
    return quote(model, {}, 0, settings).price_micros


def is_single_result(model: Priceable) -> bool:
    """Video models and upscalers make exactly one result per job."""
    return model.type == VIDEO or model.category == UPSCALE_CATEGORY


def _image_count(
    model: Priceable,
    chosen: Mapping[str, str],
    count: int,
    violations: list[FieldViolation],
) -> int:
    requested = chosen.get(NUM_IMAGES)
    if is_single_result(model):
        if requested is not None:
            violations.append(
                FieldViolation(
                    f"options.{NUM_IMAGES}",
                    f"{model.name} makes one result per job; leave out {NUM_IMAGES}.",
                )
            )
        if count not in (0, 1):
            violations.append(
                FieldViolation(
                    "count", f"{model.name} makes one result per job; count must be 1."
                )
            )
        return 1
    if count < 0 or count > MAX_IMAGES:
        violations.append(
            FieldViolation("count", f"count must be from 1 to {MAX_IMAGES}.")
        )
        return 1
    if requested is None:
        return count or 1
    if not _IMAGE_COUNT.match(requested):
        violations.append(
            FieldViolation(
                f"options.{NUM_IMAGES}",
                f"{NUM_IMAGES} must be a whole number from 1 to {MAX_IMAGES}.",
            )
        )
        return count or 1
    images = int(requested)
    if count and count != images:
        violations.append(
            FieldViolation(
                "count",
                f"count ({count}) and options.{NUM_IMAGES} ({images}) disagree; "
                "send one of them.",
            )
        )
    return images


def _resolve_options(
    model: Priceable,
    chosen: Mapping[str, str],
    images: int,
    violations: list[FieldViolation],
) -> tuple[dict[str, str], Decimal]:
    declared = {option.key: option for option in model.options}
    for key in chosen:
        if key not in declared and key != NUM_IMAGES:
            violations.append(
                FieldViolation(
                    f"options.{key}", f"{model.name} has no option named '{key}'."
                )
            )
    resolved: dict[str, str] = {}
    multiplier = Decimal(1)
    for option in model.options:
        if option.key == NUM_IMAGES:
            # The count is q in the rule, never a multiplier as well.
            resolved[option.key] = str(images)
            continue
        value = chosen.get(option.key, option.default_text)
        resolved[option.key] = value
        if not option.choices:
            if value not in TOGGLE_VALUES:
                violations.append(
                    FieldViolation(
                        f"options.{option.key}",
                        f"{option.label} must be true or false.",
                    )
                )
            continue
        choice = option.choice(value)
        if choice is None:
            allowed = ", ".join(c.value for c in option.choices)
            violations.append(
                FieldViolation(
                    f"options.{option.key}",
                    f"{option.label} must be one of: {allowed}.",
                )
            )
            continue
        multiplier *= choice.multiplier
    return resolved, multiplier


def _credits(cost_micros: Decimal, margin: Decimal, credit_price_micros: int) -> int:
    """Micro-USD of provider cost -> micro-credits after margin."""
    return _round(
        cost_micros * (1 + margin / 100) * MICROS / Decimal(credit_price_micros)
    )


def _round(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_HALF_UP))
