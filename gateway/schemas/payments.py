"""Bodies of /api/subscription-plans and /api/payments, as the web client
sends and reads them.

Money is in two units here: plan prices in whole rupees (what the pricing
page shows) and order amounts in paise (what Razorpay Checkout takes).
Credits are JSON numbers of credits, as everywhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StrictInt, StrictStr

from gateway.schemas.base import RequestBody, ResponseBody
from gateway.schemas.catalog import PricingSettingsOut

# The widest integer a protobuf int64 carries; the service sets the real
# limits and says what they are.
Int64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
RazorpayId = Annotated[StrictStr, Field(min_length=1, max_length=255)]


class PlanOut(ResponseBody):
    id: str
    name: str
    price_monthly: int = Field(description="Whole rupees a month")
    price_yearly: int = Field(description="Whole rupees a year")
    credits_per_month: int
    features: list[str]
    is_popular: int = Field(
        description="1 for the plan to highlight, else 0 (the web client "
        "compares it with 1)"
    )
    display_order: int


class CreateOrderBody(RequestBody):
    type: Literal["subscription", "credits"] = "subscription"
    plan_id: StrictStr | None = Field(
        default=None, description="For a subscription: starter, standard, ..."
    )
    billing_cycle: Literal["monthly", "yearly"] | None = Field(
        default=None, description="For a subscription; monthly when left out"
    )
    credits: Int64 | None = Field(
        default=None, description="For a credit purchase: how many credits"
    )


class CreateOrderOut(ResponseBody):
    order_id: str = Field(description="The Razorpay order to open Checkout with")
    amount: int = Field(description="Paise, as Razorpay Checkout takes it")
    currency: str
    key: str = Field(description="The Razorpay key id to open Checkout with")
    simulated: bool = Field(
        description="True when Razorpay is the local simulator: pay with "
        "POST /api/payments/simulated-checkout instead of Checkout"
    )


class VerifyBody(RequestBody):
    """What Razorpay Checkout hands the page, in Checkout's own spelling.

    The plan and type are accepted because the web client sends them, and
    ignored: what was bought is what the stored order says.
    """

    razorpay_order_id: RazorpayId = Field(alias="razorpay_order_id")
    razorpay_payment_id: RazorpayId = Field(alias="razorpay_payment_id")
    razorpay_signature: RazorpayId = Field(alias="razorpay_signature")
    plan_id: StrictStr | None = None
    billing_cycle: StrictStr | None = None
    type: StrictStr | None = None


class SubscriptionOut(ResponseBody):
    plan_id: str
    plan_name: str
    billing_cycle: str
    credits_added: float
    period_end: datetime | None = Field(description="Paid up to this moment")


class VerifyOut(ResponseBody):
    success: bool
    message: str
    credits: float = Field(description="The balance after the purchase")
    credits_added: float
    subscription: SubscriptionOut | None = Field(
        description="The plan paid for; null for a credit purchase"
    )


class WebhookReceivedOut(ResponseBody):
    received: bool


class PaymentOut(ResponseBody):
    id: str
    order_id: str
    payment_id: str | None
    type: str = Field(examples=["subscription", "credits"])
    plan_id: str | None
    billing_cycle: str | None
    amount: int = Field(description="Paise")
    currency: str
    status: str = Field(examples=["pending", "completed", "failed"])
    credits: float = Field(description="Credits the payment buys")
    created_at: datetime
    completed_at: datetime | None


class PaymentHistoryOut(ResponseBody):
    payments: list[PaymentOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next, older page; null on the last"
    )


class RazorpayKeyOut(ResponseBody):
    key_id: str | None = Field(description="null when payments are not configured")


class SimulatedCheckoutBody(RequestBody):
    order_id: RazorpayId
    outcome: Literal["success", "failure"] = "success"


class SimulatedCheckoutOut(ResponseBody):
    """What Checkout hands the page: send it to /api/payments/verify."""

    razorpay_order_id: str = Field(alias="razorpay_order_id")
    razorpay_payment_id: str = Field(alias="razorpay_payment_id")
    razorpay_signature: str = Field(alias="razorpay_signature")


class PricingAndSignupOut(PricingSettingsOut):
    """The catalog's prices and the credits a new account starts with."""

    free_credits: float | None = Field(
        default=None,
        description="Credits every new account gets; left out while billing "
        "is unreachable",
    )
