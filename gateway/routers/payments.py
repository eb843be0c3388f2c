"""/api/subscription-plans, /api/payments and /api/settings/razorpay-key:
buying plans and credits with Razorpay, served by the billing service.

The purchase, as the web client makes it:
1. POST /api/payments/create-order -> a Razorpay order (amount in paise)
   and the key id to open Razorpay Checkout with.
2. The customer pays in Checkout, which hands the page the order id,
   payment id and signature. Where Razorpay is the local simulator
   (`simulated: true`), POST /api/payments/simulated-checkout pays instead.
3. POST /api/payments/verify with those three -> the new balance.
Razorpay also reports the payment to POST /api/payments/webhook; whichever
report arrives first grants the credits, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import grpc
from fastapi import APIRouter, Query, Request, Response
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.billing.v1 import billing_pb2

from gateway.deps import UpstreamDep, UserDep
from gateway.schemas.billing import credits
from gateway.schemas.payments import (
    CreateOrderBody,
    CreateOrderOut,
    PaymentHistoryOut,
    PaymentOut,
    PlanOut,
    RazorpayKeyOut,
    SimulatedCheckoutBody,
    SimulatedCheckoutOut,
    SubscriptionOut,
    VerifyBody,
    VerifyOut,
    WebhookReceivedOut,
)
from gateway.upstream import Upstream
from libs.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotConfigured,
    Unavailable,
)
from libs.logs import get_logger

log = get_logger(__name__)
router = APIRouter(tags=["payments"])

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

SIGNATURE_HEADER = "x-razorpay-signature"
EVENT_ID_HEADER = "x-razorpay-event-id"
# The billing service names fields as its RPCs do; the REST bodies do not.
_ORDER_FIELDS = {"plan_id": "planId", "billing_cycle": "billingCycle"}
_VERIFY_FIELDS = {
    "order_id": "razorpay_order_id",
    "payment_id": "razorpay_payment_id",
    "signature": "razorpay_signature",
}
_CHECKOUT_FIELDS = {"order_id": "orderId"}


async def _call(
    upstream: Upstream,
    method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
    message: RequestT,
    authorization: str,
    fields: Mapping[str, str],
) -> ResponseT:
    """upstream.call, with field violations named as in the REST body."""
    try:
        return await upstream.call(method, message, authorization)
    except InvalidArgument as error:
        violations = tuple(
            FieldViolation(fields.get(v.field, v.field), v.message)
            for v in error.violations
        )
        raise InvalidArgument(error.message, violations=violations) from None


def _moment(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _plan(plan: billing_pb2.Plan) -> PlanOut:
    return PlanOut(
        id=plan.id,
        name=plan.name,
        price_monthly=plan.price_monthly,
        price_yearly=plan.price_yearly,
        credits_per_month=plan.credits_per_month,
        features=list(plan.features),
        is_popular=int(plan.is_popular),
        display_order=plan.display_order,
    )


def _payment(payment: billing_pb2.Payment) -> PaymentOut:
    return PaymentOut(
        id=payment.id,
        order_id=payment.order_id,
        payment_id=payment.payment_id or None,
        type=payment.type,
        plan_id=payment.plan_id or None,
        billing_cycle=payment.billing_cycle or None,
        amount=payment.amount,
        currency=payment.currency,
        status=payment.status,
        credits=credits(payment.credits_micros),
        created_at=_moment(payment.created_at),
        completed_at=(
            _moment(payment.completed_at) if payment.HasField("completed_at") else None
        ),
    )


def _verified(reply: billing_pb2.VerifyPaymentResponse) -> VerifyOut:
    added = credits(reply.credits_added_micros)
    subscription = None
    if reply.type == "subscription":
        subscription = SubscriptionOut(
            plan_id=reply.plan_id,
            plan_name=reply.plan_name,
            billing_cycle=reply.billing_cycle,
            credits_added=added,
            period_end=(
                _moment(reply.period_end) if reply.HasField("period_end") else None
            ),
        )
        message = f"{reply.plan_name} plan is active. {added} credits were added."
    else:
        message = f"{added} credits were added."
    return VerifyOut(
        success=True,
        message=message,
        credits=credits(reply.balance_micros),
        credits_added=added,
        subscription=subscription,
    )


async def free_credits(upstream: Upstream) -> float | None:
    """The credits every new account gets, or None while billing is
    unreachable (the prices beside it still show)."""
    try:
        reply = await upstream.call(
            upstream.billing.GetBillingSettings,
            billing_pb2.GetBillingSettingsRequest(),
        )
    except (Unavailable, DeadlineExceeded, NotConfigured) as error:
        log.warning("billing.settings_unavailable", error=error.code)
        return None
    return credits(reply.signup_credits_micros)


@router.get("/api/subscription-plans")
async def list_plans(upstream: UpstreamDep) -> list[PlanOut]:
    """Subscription plans in display order; prices are whole rupees."""
    reply = await upstream.call(
        upstream.billing.ListPlans, billing_pb2.ListPlansRequest()
    )
    return [_plan(plan) for plan in reply.plans]


@router.post("/api/payments/create-order", status_code=201)
async def create_order(
    body: CreateOrderBody, user: UserDep, upstream: UpstreamDep
) -> CreateOrderOut:
    """A Razorpay order for a plan (`planId`, `billingCycle`) or for
    `credits`; 503 `not_configured` when the server takes no payments."""
    reply = await _call(
        upstream,
        upstream.billing.CreateOrder,
        billing_pb2.CreateOrderRequest(
            type=body.type,
            plan_id=body.plan_id or "",
            billing_cycle=body.billing_cycle or "",
            credits=body.credits or 0,
        ),
        user.authorization,
        _ORDER_FIELDS,
    )
    return CreateOrderOut(
        order_id=reply.order_id,
        amount=reply.amount,
        currency=reply.currency,
        key=reply.key_id,
        simulated=reply.simulated,
    )


@router.post("/api/payments/verify")
async def verify_payment(
    body: VerifyBody, user: UserDep, upstream: UpstreamDep
) -> VerifyOut:
    """Check what Checkout handed the page and grant the order, once; a
    second call for the same order answers the same."""
    reply = await _call(
        upstream,
        upstream.billing.VerifyPayment,
        billing_pb2.VerifyPaymentRequest(
            order_id=body.razorpay_order_id,
            payment_id=body.razorpay_payment_id,
            signature=body.razorpay_signature,
        ),
        user.authorization,
        _VERIFY_FIELDS,
    )
    return _verified(reply)


@router.post("/api/payments/webhook")
async def razorpay_webhook(
    request: Request, upstream: UpstreamDep
) -> WebhookReceivedOut:
    """Razorpay's webhook. The signature covers the body's exact bytes, so
    they go to billing as received. Events already handled, for orders
    OmniHub does not know, or that it does not act on are acknowledged too;
    a bad signature is 400."""
    await upstream.call(
        upstream.billing.HandleWebhook,
        billing_pb2.HandleWebhookRequest(
            body=await request.body(),
            signature=request.headers.get(SIGNATURE_HEADER, ""),
            event_id=request.headers.get(EVENT_ID_HEADER, ""),
        ),
    )
    return WebhookReceivedOut(received=True)


@router.get("/api/payments/history")
async def payment_history(
    user: UserDep,
    upstream: UpstreamDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
) -> PaymentHistoryOut:
    """The caller's payments, newest first; follow `nextCursor` for older."""
    reply = await upstream.call(
        upstream.billing.ListPayments,
        billing_pb2.ListPaymentsRequest(page_size=limit, page_token=cursor or ""),
        user.authorization,
    )
    response.headers["Cache-Control"] = "no-store"
    return PaymentHistoryOut(
        payments=[_payment(payment) for payment in reply.payments],
        next_cursor=reply.next_page_token or None,
    )


@router.get("/api/settings/razorpay-key")
async def razorpay_key(upstream: UpstreamDep) -> RazorpayKeyOut:
    """The public key id Razorpay Checkout opens with, or null."""
    reply = await upstream.call(
        upstream.billing.GetCheckoutConfig, billing_pb2.GetCheckoutConfigRequest()
    )
    return RazorpayKeyOut(key_id=reply.key_id or None)


@router.post("/api/payments/simulated-checkout")
async def simulated_checkout(
    body: SimulatedCheckoutBody, user: UserDep, upstream: UpstreamDep
) -> SimulatedCheckoutOut:
    """Pay one of your orders in the local Razorpay simulator, in place of
    Razorpay Checkout. Only where create-order answered `simulated: true`;
    404 elsewhere. A declined payment (`outcome: failure`) is 400."""
    reply = await _call(
        upstream,
        upstream.billing.SimulateCheckout,
        billing_pb2.SimulateCheckoutRequest(
            order_id=body.order_id, outcome=body.outcome
        ),
        user.authorization,
        _CHECKOUT_FIELDS,
    )
    return SimulatedCheckoutOut(
        razorpay_order_id=reply.order_id,
        razorpay_payment_id=reply.payment_id,
        razorpay_signature=reply.signature,
    )
