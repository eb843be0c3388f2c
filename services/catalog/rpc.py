"""gRPC servicer of the catalog service: translates messages, opens the
transaction for edits, calls the service, and raises domain errors unchanged
(the server interceptor maps them to statuses)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import struct_pb2
from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import NotFound
from libs.grpc.identity import Access, current_caller
from libs.grpc.server import ServiceDefinition
from services.catalog.pricing import JsonScalar, Option, PricingSettings
from services.catalog.service import (
    CatalogModel,
    CatalogService,
    ModelChanges,
    PricingChanges,
)

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

# Reading the catalog and quoting are public: it is what the product page
# shows anyway. Edits come only from other OmniHub processes (the admin
# service acts for operators).
ACCESS = {
    "ListModels": Access.PUBLIC,
    "GetModel": Access.PUBLIC,
    "QuotePrice": Access.PUBLIC,
    "QuoteChat": Access.PUBLIC,
    "GetPricingSettings": Access.PUBLIC,
    "UpdatePricingSettings": Access.SERVICE,
    "UpdateModel": Access.SERVICE,
}


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(
        self, service: CatalogService, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self._service = service
        self._sessions = sessions
        # Model messages of one catalog version, built once per version.
        self._messages: tuple[int, dict[str, catalog_pb2.Model]] = (-1, {})

    async def ListModels(
        self, request: catalog_pb2.ListModelsRequest, context: Context
    ) -> catalog_pb2.ListModelsResponse:
        listing = self._service.list_models(
            request.type,
            request.category,
            include_disabled=request.include_disabled and _trusted_caller(),
            if_version=request.if_version,
        )
        return catalog_pb2.ListModelsResponse(
            models=[self._message(model) for model in listing.models],
            version=listing.version,
            not_modified=listing.not_modified,
        )

    async def GetModel(
        self, request: catalog_pb2.GetModelRequest, context: Context
    ) -> catalog_pb2.GetModelResponse:
        model = self._service.model(request.id)
        if not model.enabled and not _trusted_caller():
            raise NotFound(f'Model "{request.id}" was not found.')
        return catalog_pb2.GetModelResponse(
            model=self._message(model), version=self._service.version
        )

    async def QuotePrice(
        self, request: catalog_pb2.QuotePriceRequest, context: Context
    ) -> catalog_pb2.QuotePriceResponse:
        model = self._service.model(request.model_id)
        quote = self._service.quote(model.id, dict(request.options), request.count)
        return catalog_pb2.QuotePriceResponse(
            model_id=model.id,
            price_micros=quote.price_micros,
            cost_micros=quote.cost_micros,
            base_cost_micros=quote.base_cost_micros,
            multiplier=decimal_text(quote.multiplier),
            count=quote.count,
            margin_percent=decimal_text(quote.margin_percent),
            credit_price_micros=quote.credit_price_micros,
            resolved_options=quote.resolved_options,
            model_type=model.type,
        )

    async def QuoteChat(
        self, request: catalog_pb2.QuoteChatRequest, context: Context
    ) -> catalog_pb2.QuoteChatResponse:
        quote = self._service.quote_chat(
            request.model_id,
            request.input_tokens,
            request.output_tokens,
            request.provider_cost_micros,
        )
        return catalog_pb2.QuoteChatResponse(
            price_micros=quote.price_micros,
            margin_percent=decimal_text(quote.margin_percent),
            credit_price_micros=quote.credit_price_micros,
        )

    async def GetPricingSettings(
        self, request: catalog_pb2.GetPricingSettingsRequest, context: Context
    ) -> catalog_pb2.GetPricingSettingsResponse:
        settings = self._service.pricing_settings()
        return catalog_pb2.GetPricingSettingsResponse(
            settings=_settings_message(settings)
        )

    async def UpdatePricingSettings(
        self, request: catalog_pb2.UpdatePricingSettingsRequest, context: Context
    ) -> catalog_pb2.UpdatePricingSettingsResponse:
        changes = PricingChanges(
            profit_margin=request.settings.profit_margin,
            profit_margin_image=request.settings.profit_margin_image,
            profit_margin_video=request.settings.profit_margin_video,
            profit_margin_chat=request.settings.profit_margin_chat,
            credit_price_micros=request.settings.credit_price_micros,
        )
        async with self._sessions.begin() as db:
            settings = await self._service.update_pricing_settings(
                db, changes, request.actor
            )
        await self._reload()
        return catalog_pb2.UpdatePricingSettingsResponse(
            settings=_settings_message(settings)
        )

    async def UpdateModel(
        self, request: catalog_pb2.UpdateModelRequest, context: Context
    ) -> catalog_pb2.UpdateModelResponse:
        async with self._sessions.begin() as db:
            changed = await self._service.update_model(
                db, request.id, _model_changes(request.changes), request.actor
            )
        if changed:
            await self._reload()
        return catalog_pb2.UpdateModelResponse(
            model=self._message(self._service.model(request.id)),
            version=self._service.version,
        )

    async def _reload(self) -> None:
        """Show this replica's own edit at once; the others poll for it."""
        async with self._sessions() as db:
            await self._service.refresh(db)

    def _message(self, model: CatalogModel) -> catalog_pb2.Model:
        version, messages = self._messages
        if version != self._service.snapshot.version:
            version, messages = self._service.snapshot.version, {}
            self._messages = (version, messages)
        message = messages.get(model.id)
        if message is None:
            message = model_message(model, self._service.reference_price(model))
            messages[model.id] = message
        return message


def definition(servicer: CatalogServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
        servicer=servicer,
        register=catalog_pb2_grpc.add_CatalogServiceServicer_to_server,
        access=ACCESS,
    )


def _trusted_caller() -> bool:
    """Disabled models are shown only to OmniHub processes and operators."""
    caller = current_caller()
    return caller.service is not None or caller.admin is not None


def _model_changes(message: catalog_pb2.ModelChanges) -> ModelChanges:
    def given(name: str) -> Any:
        return getattr(message, name) if message.HasField(name) else None  # type: ignore[arg-type]

    return ModelChanges(
        name=given("name"),
        enabled=given("enabled"),
        base_cost_micros=given("base_cost_micros"),
        input_cost_micros_per_1k=given("input_cost_micros_per_1k"),
        output_cost_micros_per_1k=given("output_cost_micros_per_1k"),
        display_order=given("display_order"),
        thumbnail=given("thumbnail"),
        max_wait_seconds=given("max_wait_seconds"),
        tags=tuple(message.tags) if message.replace_tags else None,
    )


def decimal_text(value: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros: 2.4, 30, 0.5."""
    return format(value.normalize(), "f")


def model_message(model: CatalogModel, reference_price: int) -> catalog_pb2.Model:
    capabilities = struct_pb2.Struct()
    capabilities.update(dict(model.capabilities))
    return catalog_pb2.Model(
        id=model.id,
        name=model.name,
        type=model.type,
        category=model.category,
        provider=model.provider,
        provider_name=model.provider_name,
        endpoint=model.endpoint,
        text_to_image_endpoint=model.text_to_image_endpoint or "",
        image_to_image_endpoint=model.image_to_image_endpoint or "",
        image_input=model.image_input,
        max_input_images=model.max_input_images,
        image_param_name=model.image_param_name,
        image_param_type=model.image_param_type,
        video_input=model.video_input,
        max_wait_seconds=model.max_wait_seconds,
        base_cost_micros=model.base_cost_micros,
        input_cost_micros_per_1k=model.input_cost_micros_per_1k,
        output_cost_micros_per_1k=model.output_cost_micros_per_1k,
        capabilities=capabilities,
        tags=model.tags,
        display_order=model.display_order,
        doc_url=model.doc_url or "",
        thumbnail=model.thumbnail or "",
        enabled=model.enabled,
        options=[_option_message(option) for option in model.options],
        default_price_micros=reference_price,
    )


def _option_message(option: Option) -> catalog_pb2.ModelOption:
    return catalog_pb2.ModelOption(
        key=option.key,
        label=option.label,
        control=option.control,
        default_value=_value(option.default),
        choices=[
            catalog_pb2.OptionChoice(
                value=choice.value,
                label=choice.label,
                price_multiplier=decimal_text(choice.multiplier),
            )
            for choice in option.choices
        ],
    )


def _value(value: JsonScalar) -> struct_pb2.Value:
    if value is None:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, int | float):
        return struct_pb2.Value(number_value=value)
    return struct_pb2.Value(string_value=value)


def _settings_message(settings: PricingSettings) -> catalog_pb2.PricingSettings:
    return catalog_pb2.PricingSettings(
        profit_margin=decimal_text(settings.profit_margin),
        profit_margin_image=decimal_text(settings.profit_margin_image),
        profit_margin_video=decimal_text(settings.profit_margin_video),
        profit_margin_chat=decimal_text(settings.profit_margin_chat),
        credit_price_micros=settings.credit_price_micros,
    )
