"""Business rules of the catalog service.

The catalog changes rarely and is read on every page and every generation,
so each replica keeps all of it in memory as one immutable snapshot tagged
with the catalog version. Edits bump the version in their own transaction;
replicas poll the version about once a second and reload when it moved.
Functions that touch the database take a session and never commit; the
servicer owns the transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from libs.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from libs.logs import get_logger
from services.catalog import pricing, repository
from services.catalog.models import Model
from services.catalog.models import PricingSettings as PricingSettingsRow
from services.catalog.pricing import (
    ChatQuote,
    Choice,
    Option,
    PricingSettings,
    Quote,
)

log = get_logger(__name__)

MODEL_TYPES = (pricing.IMAGE, pricing.VIDEO, pricing.CHAT)
MAX_NAME_LENGTH = 200
MAX_URL_LENGTH = 2048
MAX_TAGS = 30
MAX_TAG_LENGTH = 40
MAX_WAIT_SECONDS = 24 * 3600
MAX_MARGIN_PERCENT = Decimal(1000)
MARGIN_DECIMAL_PLACES = 4
_URL = re.compile(r"^https?://\S+$")


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """An immutable copy of one model row, options parsed for pricing."""

    id: str
    name: str
    type: str
    category: str
    provider: str
    provider_name: str
    endpoint: str
    text_to_image_endpoint: str | None
    image_to_image_endpoint: str | None
    image_input: str
    max_input_images: int
    image_param_name: str
    image_param_type: str
    video_input: str
    max_wait_seconds: int
    base_cost_micros: int
    input_cost_micros_per_1k: int
    output_cost_micros_per_1k: int
    options: tuple[Option, ...]
    capabilities: Mapping[str, Any]
    tags: tuple[str, ...]
    display_order: int
    doc_url: str | None
    thumbnail: str | None
    enabled: bool

    @classmethod
    def from_row(cls, row: Model) -> CatalogModel:
        return cls(
            id=row.id,
            name=row.name,
            type=row.type,
            category=row.category,
            provider=row.provider,
            provider_name=row.provider_name,
            endpoint=row.endpoint,
            text_to_image_endpoint=row.text_to_image_endpoint,
            image_to_image_endpoint=row.image_to_image_endpoint,
            image_input=row.image_input,
            max_input_images=row.max_input_images,
            image_param_name=row.image_param_name,
            image_param_type=row.image_param_type,
            video_input=row.video_input,
            max_wait_seconds=row.max_wait_seconds,
            base_cost_micros=row.base_cost_micros,
            input_cost_micros_per_1k=row.input_cost_micros_per_1k,
            output_cost_micros_per_1k=row.output_cost_micros_per_1k,
            options=tuple(parse_option(option) for option in row.options),
            capabilities=MappingProxyType(dict(row.capabilities)),
            tags=tuple(row.tags),
            display_order=row.display_order,
            doc_url=row.doc_url,
            thumbnail=row.thumbnail,
            enabled=row.enabled,
        )


def parse_option(stored: Mapping[str, Any]) -> Option:
    """An option as stored in `models.options` (the seed file's layout)."""
    return Option(
        key=str(stored["key"]),
        label=str(stored.get("label") or stored["key"]),
        control=str(stored.get("control") or "select"),
        default=stored.get("default"),
        choices=tuple(
            Choice(
                value=str(choice["value"]),
                label=str(choice.get("label") or choice["value"]),
                # An absent or zero multiplier means the choice keeps the price.
                multiplier=Decimal(str(choice.get("priceMultiplier") or 1)),
            )
            for choice in stored.get("choices") or ()
        ),
    )


@dataclass(frozen=True)
class Snapshot:
    version: int
    models: tuple[CatalogModel, ...]
    settings: PricingSettings
    by_id: Mapping[str, CatalogModel] = field(init=False)
    # Micro-credits with default options and one image, per model id.
    reference_prices: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {m.id: m for m in self.models})
        object.__setattr__(
            self,
            "reference_prices",
            {m.id: _reference_price(m, self.settings) for m in self.models},
        )


@dataclass(frozen=True)
class Listing:
    version: str
    models: tuple[CatalogModel, ...]
    not_modified: bool = False


@dataclass(frozen=True)
class ModelChanges:
    """The fields an operator may edit; None leaves a field as it is."""

    name: str | None = None
    enabled: bool | None = None
    base_cost_micros: int | None = None
    input_cost_micros_per_1k: int | None = None
    output_cost_micros_per_1k: int | None = None
    display_order: int | None = None
    # An empty string removes the thumbnail.
    thumbnail: str | None = None
    max_wait_seconds: int | None = None
    # The complete new list of tags.
    tags: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PricingChanges:
    """New pricing settings as an operator typed them (decimal text)."""

    profit_margin: str
    profit_margin_image: str
    profit_margin_video: str
    profit_margin_chat: str
    credit_price_micros: int


def _reference_price(model: CatalogModel, settings: PricingSettings) -> int:
    try:
        return pricing.reference_price(model, settings)
    except InvalidArgument as exc:
        # A row edited by hand into something unpriceable must not take the
        # whole catalog down; quoting it still fails with the reason.
        log.error("catalog.model_unpriceable", model_id=model.id, error=exc.message)
        return 0


def settings_from_row(row: PricingSettingsRow) -> PricingSettings:
    return PricingSettings(
        profit_margin=row.profit_margin,
        profit_margin_image=row.profit_margin_image,
        profit_margin_video=row.profit_margin_video,
        profit_margin_chat=row.profit_margin_chat,
        credit_price_micros=row.credit_price_micros,
    )


class CatalogService:
    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            raise RuntimeError("the catalog has not been loaded yet")
        return self._snapshot

    @property
    def version(self) -> str:
        return str(self.snapshot.version)

    # Keeping the in-memory copy current

    async def refresh(self, db: AsyncSession) -> bool:
        """Reload when the stored version differs from ours; True if reloaded."""
        if (
            self._snapshot is not None
            and await repository.catalog_version(db) == self._snapshot.version
        ):
            return False
        await db.rollback()  # the snapshot read starts its own transaction
        rows = await repository.catalog_rows(db)
        current = self._snapshot
        # A slower concurrent reload must not replace a newer snapshot.
        if current is not None and rows.version <= current.version:
            return False
        self._snapshot = Snapshot(
            version=rows.version,
            models=tuple(CatalogModel.from_row(row) for row in rows.models),
            settings=settings_from_row(rows.settings),
        )
        log.info(
            "catalog.loaded",
            version=rows.version,
            models=len(rows.models),
            previous=current.version if current else None,
        )
        return True

    # Reading

    def list_models(
        self,
        model_type: str = "",
        category: str = "",
        *,
        include_disabled: bool = False,
        if_version: str = "",
    ) -> Listing:
        if model_type and model_type not in MODEL_TYPES:
            raise InvalidArgument.for_field(
                "type", f"type must be one of: {', '.join(MODEL_TYPES)}."
            )
        snapshot = self.snapshot
        version = str(snapshot.version)
        if if_version == version:
            return Listing(version, (), not_modified=True)
        models = tuple(
            model
            for model in snapshot.models
            if (include_disabled or model.enabled)
            and (not model_type or model.type == model_type)
            and (not category or model.category == category)
        )
        return Listing(version, models)

    def model(self, model_id: str) -> CatalogModel:
        model = self.snapshot.by_id.get(model_id)
        if model is None:
            raise NotFound(f'Model "{model_id}" was not found.')
        return model

    def reference_price(self, model: CatalogModel) -> int:
        return self.snapshot.reference_prices.get(model.id, 0)

    def pricing_settings(self) -> PricingSettings:
        return self.snapshot.settings

    # Pricing

    def quote(self, model_id: str, options: Mapping[str, str], count: int) -> Quote:
        model = self._enabled_model(model_id)
        return pricing.quote(model, options, count, self.snapshot.settings)

    def quote_chat(
        self,
        model_id: str,
        input_tokens: int,
        output_tokens: int,
        provider_cost_micros: int,
    ) -> ChatQuote:
        model = self._enabled_model(model_id)
        return pricing.quote_chat(
            model,
            input_tokens,
            output_tokens,
            provider_cost_micros,
            self.snapshot.settings,
        )

    def _enabled_model(self, model_id: str) -> CatalogModel:
        model = self.model(model_id)
        if not model.enabled:
            raise FailedPrecondition(f"The model {model.name} is disabled.")
        return model

    # Operator edits

    async def update_model(
        self, db: AsyncSession, model_id: str, changes: ModelChanges, actor: str
    ) -> bool:
        """Apply an operator's edit; False when it changed nothing."""
        values = _model_values(changes)
        if not values:
            if not await repository.model_exists(db, model_id):
                raise NotFound(f'Model "{model_id}" was not found.')
            return False
        row = await repository.update_model(db, model_id, values, actor or None)
        if row is None:
            raise NotFound(f'Model "{model_id}" was not found.')
        version = await repository.bump_version(db)
        log.info(
            "catalog.model_updated",
            model_id=model_id,
            fields=sorted(values),
            actor=actor,
            version=version,
        )
        return True

    async def update_pricing_settings(
        self, db: AsyncSession, changes: PricingChanges, actor: str
    ) -> PricingSettings:
        values = _pricing_values(changes)
        row = await repository.update_pricing_settings(db, values, actor or None)
        version = await repository.bump_version(db)
        log.info(
            "catalog.pricing_updated",
            actor=actor,
            version=version,
            **{key: str(value) for key, value in values.items()},
        )
        return settings_from_row(row)


def _model_values(changes: ModelChanges) -> dict[str, Any]:
    violations: list[FieldViolation] = []
    values: dict[str, Any] = {}

    def refuse(name: str, message: str) -> None:
        violations.append(FieldViolation(f"changes.{name}", message))

    if changes.name is not None:
        name = changes.name.strip()
        if not name or len(name) > MAX_NAME_LENGTH:
            refuse("name", f"The name must be 1 to {MAX_NAME_LENGTH} characters.")
        values["name"] = name
    if changes.enabled is not None:
        values["enabled"] = changes.enabled
    for cost_field in (
        "base_cost_micros",
        "input_cost_micros_per_1k",
        "output_cost_micros_per_1k",
    ):
        cost = getattr(changes, cost_field)
        if cost is not None:
            if cost < 0:
                refuse(cost_field, "A cost cannot be negative.")
            values[cost_field] = cost
    if changes.display_order is not None:
        values["display_order"] = changes.display_order
    if changes.thumbnail is not None:
        thumbnail = changes.thumbnail.strip()
        if thumbnail and (len(thumbnail) > MAX_URL_LENGTH or not _URL.match(thumbnail)):
            refuse("thumbnail", "The thumbnail must be an http(s) URL.")
        values["thumbnail"] = thumbnail or None
    if changes.max_wait_seconds is not None:
        if not 1 <= changes.max_wait_seconds <= MAX_WAIT_SECONDS:
            refuse(
                "max_wait_seconds",
                f"The wait must be 1 to {MAX_WAIT_SECONDS} seconds.",
            )
        values["max_wait_seconds"] = changes.max_wait_seconds
    if changes.tags is not None:
        values["tags"] = _tags(changes.tags, violations)
    if violations:
        raise InvalidArgument(violations[0].message, violations=tuple(violations))
    return values


def _tags(tags: Sequence[str], violations: list[FieldViolation]) -> list[str]:
    cleaned = list(dict.fromkeys(tag.strip() for tag in tags))
    if len(cleaned) > MAX_TAGS:
        violations.append(
            FieldViolation("changes.tags", f"At most {MAX_TAGS} tags are allowed.")
        )
    if any(not tag or len(tag) > MAX_TAG_LENGTH for tag in cleaned):
        violations.append(
            FieldViolation(
                "changes.tags", f"Each tag must be 1 to {MAX_TAG_LENGTH} characters."
            )
        )
    return cleaned


def _pricing_values(changes: PricingChanges) -> dict[str, Any]:
    violations: list[FieldViolation] = []
    values: dict[str, Any] = {}
    for name in (
        "profit_margin",
        "profit_margin_image",
        "profit_margin_video",
        "profit_margin_chat",
    ):
        margin = _margin(getattr(changes, name))
        if margin is None:
            violations.append(
                FieldViolation(
                    f"settings.{name}",
                    f"{name} must be a percentage from 0 to {MAX_MARGIN_PERCENT} "
                    f"with at most {MARGIN_DECIMAL_PLACES} decimal places.",
                )
            )
        values[name] = margin
    if changes.credit_price_micros <= 0:
        violations.append(
            FieldViolation(
                "settings.credit_price_micros", "The credit price must be above zero."
            )
        )
    values["credit_price_micros"] = changes.credit_price_micros
    if violations:
        raise InvalidArgument(violations[0].message, violations=tuple(violations))
    return values


def _margin(text: str) -> Decimal | None:
    try:
        margin = Decimal(text.strip())
    except InvalidOperation:
        return None
    exponent = margin.normalize().as_tuple().exponent if margin.is_finite() else 0
    if (
        not margin.is_finite()
        or not isinstance(exponent, int)
        or exponent < -MARGIN_DECIMAL_PLACES
        or not 0 <= margin <= MAX_MARGIN_PERCENT
    ):
        return None
    return margin
