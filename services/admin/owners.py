"""The services that own some platform settings: the catalog (margins and
the credit price) and billing (sign-up credits, the purchase price and the
public Razorpay key id), called as the admin service."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from libs.errors import MICROS_PER_CREDIT
from libs.grpc.client import Upstreams

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

PAISE_PER_RUPEE = 100
MICROS_PER_DOLLAR = 1_000_000
# Setting key -> field of catalog.v1.PricingSettings (decimal text).
MARGIN_FIELDS = {
    "profitMargin": "profit_margin",
    "profitMarginImage": "profit_margin_image",
    "profitMarginVideo": "profit_margin_video",
    "profitMarginChat": "profit_margin_chat",
}
CREDIT_PRICE = "creditPrice"
FREE_CREDITS = "freeCredits"
PURCHASE_PRICE = "creditPurchasePrice"
RAZORPAY_KEY_ID = "razorpayKeyId"


def pricing_values(settings: catalog_pb2.PricingSettings) -> dict[str, Decimal]:
    values = {
        key: Decimal(getattr(settings, name)) for key, name in MARGIN_FIELDS.items()
    }
    values[CREDIT_PRICE] = Decimal(settings.credit_price_micros) / MICROS_PER_DOLLAR
    return values


def billing_values(
    settings: billing_pb2.GetBillingSettingsResponse
    | billing_pb2.UpdateBillingSettingsResponse,
) -> dict[str, Decimal]:
    return {
        FREE_CREDITS: Decimal(settings.signup_credits_micros) / MICROS_PER_CREDIT,
        PURCHASE_PRICE: Decimal(settings.credit_price_paise) / PAISE_PER_RUPEE,
    }


class SettingOwners:
    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams
        self._catalog = catalog_pb2_grpc.CatalogServiceStub(
            upstreams.channel("catalog")
        )
        self._billing = billing_pb2_grpc.BillingServiceStub(
            upstreams.channel("billing")
        )

    async def pricing(self) -> dict[str, Decimal]:
        reply = await self._upstreams.call(
            self._catalog.GetPricingSettings, catalog_pb2.GetPricingSettingsRequest()
        )
        return pricing_values(reply.settings)

    async def billing(self) -> dict[str, Any]:
        settings = await self._upstreams.call(
            self._billing.GetBillingSettings, billing_pb2.GetBillingSettingsRequest()
        )
        checkout = await self._upstreams.call(
            self._billing.GetCheckoutConfig, billing_pb2.GetCheckoutConfigRequest()
        )
        return {**billing_values(settings), RAZORPAY_KEY_ID: checkout.key_id}

    async def plan_ids(self) -> set[str]:
        reply = await self._upstreams.call(
            self._billing.ListPlans, billing_pb2.ListPlansRequest()
        )
        return {plan.id for plan in reply.plans}

    async def change_pricing(
        self, changes: dict[str, Decimal], actor: str
    ) -> dict[str, Decimal]:
        """Apply the changed pricing keys over the catalog's current ones (the
        catalog takes the whole set); returns the whole new set."""
        merged = {**await self.pricing(), **changes}
        settings = catalog_pb2.PricingSettings(
            credit_price_micros=int(merged[CREDIT_PRICE] * MICROS_PER_DOLLAR),
            **{name: str(merged[key]) for key, name in MARGIN_FIELDS.items()},
        )
        reply = await self._upstreams.call(
            self._catalog.UpdatePricingSettings,
            catalog_pb2.UpdatePricingSettingsRequest(settings=settings, actor=actor),
        )
        return pricing_values(reply.settings)

    async def change_billing(self, changes: dict[str, Decimal]) -> dict[str, Decimal]:
        request = billing_pb2.UpdateBillingSettingsRequest()
        if FREE_CREDITS in changes:
            request.signup_credits_micros = int(
                changes[FREE_CREDITS] * MICROS_PER_CREDIT
            )
        if PURCHASE_PRICE in changes:
            request.credit_price_paise = int(changes[PURCHASE_PRICE] * PAISE_PER_RUPEE)
        reply = await self._upstreams.call(self._billing.UpdateBillingSettings, request)
        return billing_values(reply)
