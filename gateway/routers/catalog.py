"""/api/models, /api/chat/models, /api/upscale/models,
/api/pricing-settings and /api/settings/google-client-id: the model catalog
and prices, served from the catalog service (and, for the sign-up credits
on /api/pricing-settings, billing).

The model lists are read on every page, change rarely and are the same for
everyone, so the gateway keeps each list's rendered JSON per catalog version
and answers `If-None-Match` with 304. A catalog version confirmed less than
a second ago is trusted without asking; after that one small
ListModels(if_version) call either confirms it or brings the new models.
While the catalog service is unreachable, the last list is served as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict
from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pydantic import TypeAdapter

from gateway.deps import get_settings
from gateway.routers.payments import free_credits
from gateway.schemas.catalog import (
    ChatModelOut,
    ChoiceOut,
    GoogleClientIdOut,
    ModelOut,
    OptionOut,
    PriceBody,
    PriceBreakdownOut,
    PriceOut,
    UpscaleModelOut,
)
from gateway.schemas.payments import PricingAndSignupOut
from gateway.upstream import Upstream
from libs.config import Settings
from libs.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from libs.logs import get_logger

log = get_logger(__name__)
router = APIRouter(tags=["catalog"])

MICROS = 1_000_000
UPSCALE_CATEGORY = "upscale"
# How long a catalog version the service confirmed is trusted without asking
# again; the service itself polls its database about once a second.
VERSION_TRUST_SECONDS = 1.0
MAX_CACHED_LISTINGS = 64
MAX_CATEGORY_LENGTH = 64
ModelType = Literal["image", "video", "chat"]
MODEL_TYPES = frozenset(ModelType.__args__)  # type: ignore[attr-defined]

# --- The catalog client and its list cache --------------------------------


@dataclass(frozen=True)
class Listing:
    version: str
    etag: str
    body: bytes
    confirmed_at: float


@dataclass(frozen=True)
class ListingKey:
    view: str
    type: str
    category: str

    def etag(self, version: str) -> str:
        filters = f"{self.view}|{self.type}|{self.category}".encode()
        digest = hashlib.blake2b(filters, digest_size=6).hexdigest()
        return f'"c{version}-{digest}"'


Render = Callable[[list[catalog_pb2.Model]], bytes]


class CatalogClient:
    """Calls to the catalog service, and the rendered lists it last returned."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.stub = catalog_pb2_grpc.CatalogServiceStub(
            upstream.runtime.upstreams.channel("catalog")
        )
        self._listings: dict[ListingKey, Listing] = {}
        self._refreshing = asyncio.Lock()

    async def listing(self, key: ListingKey, render: Render) -> Listing:
        cached = self._listings.get(key)
        if cached is not None and _fresh(cached):
            return cached
        # One request asks the service; the others waiting here reuse its answer.
        async with self._refreshing:
            cached = self._listings.get(key)
            if cached is not None and _fresh(cached):
                return cached
            try:
                listing = await self._fetch(key, render, cached)
            except (Unavailable, DeadlineExceeded) as exc:
                if cached is None:
                    raise
                # The catalog changes rarely: a list a moment old beats an
                # error page. Try the service again after the trust window.
                log.warning("catalog.list_served_stale", error=exc.code)
                listing = replace(cached, confirmed_at=time.monotonic())
            self._store(key, listing)
            return listing

    async def _fetch(
        self, key: ListingKey, render: Render, cached: Listing | None
    ) -> Listing:
        reply = await self.upstream.call(
            self.stub.ListModels,
            catalog_pb2.ListModelsRequest(
                type=key.type,
                category=key.category,
                if_version=cached.version if cached else "",
            ),
        )
        now = time.monotonic()
        if reply.not_modified and cached is not None:
            return Listing(cached.version, cached.etag, cached.body, now)
        return Listing(
            reply.version, key.etag(reply.version), render(list(reply.models)), now
        )

    def _store(self, key: ListingKey, listing: Listing) -> None:
        self._listings.pop(key, None)
        if len(self._listings) >= MAX_CACHED_LISTINGS:
            # Filters are few in practice; forget the least recently refreshed.
            self._listings.pop(next(iter(self._listings)))
        self._listings[key] = listing

    async def model(self, model_id: str) -> catalog_pb2.Model:
        """An enabled model; disabled ones are not found, as for anyone else."""
        reply = await self.upstream.call(
            self.stub.GetModel, catalog_pb2.GetModelRequest(id=model_id)
        )
        if not reply.model.enabled:
            raise NotFound(f'Model "{model_id}" was not found.')
        return reply.model

    async def quote(
        self, model_id: str, options: Mapping[str, Any] | None, count: int | None
    ) -> catalog_pb2.QuotePriceResponse:
        return await self.upstream.call(
            self.stub.QuotePrice,
            catalog_pb2.QuotePriceRequest(
                model_id=model_id, options=_option_texts(options), count=count or 0
            ),
        )


def _fresh(listing: Listing) -> bool:
    return time.monotonic() - listing.confirmed_at < VERSION_TRUST_SECONDS


async def get_catalog(request: Request) -> CatalogClient:
    client: CatalogClient = request.app.state.catalog
    return client


CatalogDep = Annotated[CatalogClient, Depends(get_catalog)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

# --- Rendering ------------------------------------------------------------


def _amount(micros: int) -> float:
    """Micro-credits or micro-USD as the JSON number the client reads."""
    return micros / MICROS


def _decimal(text: str) -> float:
    return float(text) if text else 0.0


def _json(value: Any) -> Any:
    """Struct numbers arrive as floats; whole ones go back to ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json(item) for item in value]
    return value


def _value(value: struct_pb2.Value) -> Any:
    return _json(MessageToDict(value)) if value.WhichOneof("kind") else None


def _options(model: catalog_pb2.Model) -> dict[str, OptionOut]:
    return {
        option.key: OptionOut(
            # The web client draws aspect ratios as a select with a picker.
            type="select" if option.control == "aspect_ratio" else option.control,
            label=option.label,
            default=_value(option.default_value),
            choices=[
                ChoiceOut(
                    value=choice.value,
                    label=choice.label,
                    price_multiplier=_decimal(choice.price_multiplier),
                )
                for choice in option.choices
            ],
        )
        for option in model.options
    }


def _model_out(model: catalog_pb2.Model) -> ModelOut:
    return ModelOut(
        id=model.id,
        name=model.name,
        type=model.type,
        category=model.category,
        provider=model.provider,
        provider_name=model.provider_name,
        credits=_amount(model.base_cost_micros),
        base_cost=_amount(model.base_cost_micros),
        price=_amount(model.default_price_micros),
        thumbnail=model.thumbnail or None,
        image_input=model.image_input,
        max_input_images=model.max_input_images,
        video_input=model.video_input,
        options=_options(model),
        tags=list(model.tags),
        display_order=model.display_order,
        doc_url=model.doc_url or None,
        capabilities=_json(MessageToDict(model.capabilities)),
    )


def _chat_model_out(model: catalog_pb2.Model) -> ChatModelOut:
    return ChatModelOut(
        id=model.id,
        name=model.name,
        provider=model.provider,
        provider_name=model.provider_name,
        input_cost=_amount(model.input_cost_micros_per_1k),
        output_cost=_amount(model.output_cost_micros_per_1k),
        capabilities=_json(MessageToDict(model.capabilities)),
        doc_url=model.doc_url or None,
    )


def _upscale_model_out(model: catalog_pb2.Model) -> UpscaleModelOut:
    return UpscaleModelOut(
        id=model.id,
        name=model.name,
        type=model.type,
        provider=model.provider,
        provider_name=model.provider_name,
        credits=_amount(model.base_cost_micros),
        options=_options(model),
        tags=list(model.tags),
        doc_url=model.doc_url or None,
    )


_MODELS = TypeAdapter(list[ModelOut])
_CHAT_MODELS = TypeAdapter(list[ChatModelOut])
_UPSCALE_MODELS = TypeAdapter(list[UpscaleModelOut])


def _render_models(models: list[catalog_pb2.Model]) -> bytes:
    return _MODELS.dump_json([_model_out(m) for m in models], by_alias=True)


def _render_chat_models(models: list[catalog_pb2.Model]) -> bytes:
    return _CHAT_MODELS.dump_json([_chat_model_out(m) for m in models], by_alias=True)


def _render_upscale_models(models: list[catalog_pb2.Model]) -> bytes:
    return _UPSCALE_MODELS.dump_json(
        [_upscale_model_out(m) for m in models], by_alias=True
    )


def _option_texts(options: Mapping[str, Any] | None) -> dict[str, str]:
    """Option values as the text the catalog compares with its choices: JSON
    12 (or 12.0) is "12", true is "true". Lists, objects and null are refused."""
    texts: dict[str, str] = {}
    for key, value in (options or {}).items():
        if isinstance(value, bool):
            texts[key] = "true" if value else "false"
        elif isinstance(value, float) and value.is_integer():
            texts[key] = str(int(value))
        elif isinstance(value, str | int | float):
            texts[key] = str(value)
        else:
            raise InvalidArgument.for_field(
                f"options.{key}", f"options.{key} must be a string, number or boolean."
            )
    return texts


def _cached_json(request: Request, listing: Listing) -> Response:
    headers = {"ETag": listing.etag, "Cache-Control": "no-cache"}
    if _etag_matches(request.headers.get("if-none-match"), listing.etag):
        return Response(status_code=304, headers=headers)
    return Response(listing.body, media_type="application/json", headers=headers)


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _price_out(quote: catalog_pb2.QuotePriceResponse) -> PriceOut:
    margin = _decimal(quote.margin_percent)
    price_with_margin = quote.cost_micros * (1 + margin / 100) / MICROS
    return PriceOut(
        price=_amount(quote.price_micros),
        base_price=_amount(quote.cost_micros),
        base_cost=_amount(quote.base_cost_micros),
        profit_margin=margin,
        credit_price=_amount(quote.credit_price_micros),
        count=quote.count,
        breakdown=PriceBreakdownOut(
            api_cost=_amount(quote.cost_micros),
            margin_percent=margin,
            price_with_margin=round(price_with_margin, 6),
            credits_per_dollar=MICROS / quote.credit_price_micros,
            final_credits=_amount(quote.price_micros),
        ),
    )


# --- Routes ---------------------------------------------------------------

_LIST_RESPONSES: dict[int | str, dict[str, Any]] = {
    304: {"description": "The list has not changed since the ETag sent"}
}


@router.get("/api/models", response_model=list[ModelOut], responses=_LIST_RESPONSES)
async def list_models(
    request: Request,
    model_type: Annotated[ModelType | None, Query(alias="type")] = None,
    category: Annotated[str | None, Query(max_length=MAX_CATEGORY_LENGTH)] = None,
) -> Response:
    """Enabled models in display order, optionally of one type or category."""
    return await fast_list_models(request)


async def fast_list_models(request: Request) -> Response:
    """GET /api/models itself. The app mounts this as a plain Starlette route
    ahead of FastAPI's (which stays for the OpenAPI description): it is read
    on every page, and FastAPI's parameter solving would be most of its cost.
    So it checks its two query parameters itself, the same way."""
    model_type = request.query_params.get("type") or ""
    category = request.query_params.get("category") or ""
    if model_type and model_type not in MODEL_TYPES:
        raise InvalidArgument.for_field(
            "type", "type must be one of image, video or chat."
        )
    if len(category) > MAX_CATEGORY_LENGTH:
        raise InvalidArgument.for_field("category", "category is too long.")
    catalog: CatalogClient = request.app.state.catalog
    key = ListingKey("models", model_type, category)
    return _cached_json(request, await catalog.listing(key, _render_models))


@router.post("/api/models/{model_id:path}/price")
async def quote_price(model_id: str, body: PriceBody, catalog: CatalogDep) -> PriceOut:
    """What one generation with these options costs; omitted options take
    the model's default, exactly as they will be sent to the provider."""
    return _price_out(await catalog.quote(model_id, body.options, body.count))


@router.get("/api/models/{model_id:path}")
async def get_model(model_id: str, catalog: CatalogDep) -> ModelOut:
    """One enabled model. Chat model ids contain a slash (openai/gpt-4o)."""
    return _model_out(await catalog.model(model_id))


@router.get(
    "/api/chat/models", response_model=list[ChatModelOut], responses=_LIST_RESPONSES
)
async def list_chat_models(request: Request, catalog: CatalogDep) -> Response:
    """Enabled chat models with their token prices per 1,000 tokens."""
    key = ListingKey("chat", "chat", "")
    return _cached_json(request, await catalog.listing(key, _render_chat_models))


@router.get(
    "/api/upscale/models",
    response_model=list[UpscaleModelOut],
    responses=_LIST_RESPONSES,
)
async def list_upscale_models(
    request: Request,
    catalog: CatalogDep,
    source_type: Annotated[str | None, Query(alias="type", max_length=16)] = None,
) -> Response:
    """Enabled upscalers. `type` image or video keeps that kind; any other
    value lists all, as the original did (the client sends the source
    generation's type, which may be neither)."""
    model_type = source_type if source_type in ("image", "video") else ""
    key = ListingKey("upscale", model_type, UPSCALE_CATEGORY)
    return _cached_json(request, await catalog.listing(key, _render_upscale_models))


@router.get("/api/pricing-settings", response_model_exclude_none=True)
async def pricing_settings(catalog: CatalogDep) -> PricingAndSignupOut:
    """Margins (percent) and the credit price (US dollars), for previews, and
    `freeCredits`, the credits a new account starts with (from billing)."""
    reply, free = await asyncio.gather(
        catalog.upstream.call(
            catalog.stub.GetPricingSettings, catalog_pb2.GetPricingSettingsRequest()
        ),
        free_credits(catalog.upstream),
    )
    settings = reply.settings
    return PricingAndSignupOut(
        profit_margin=_decimal(settings.profit_margin),
        profit_margin_image=_decimal(settings.profit_margin_image),
        profit_margin_video=_decimal(settings.profit_margin_video),
        profit_margin_chat=_decimal(settings.profit_margin_chat),
        credit_price=_amount(settings.credit_price_micros),
        free_credits=free,
    )


@router.get("/api/settings/google-client-id")
async def google_client_id(settings: SettingsDep) -> GoogleClientIdOut:
    """The OAuth client id the web client's Google button needs, or null."""
    return GoogleClientIdOut(client_id=settings.google_client_id or None)
