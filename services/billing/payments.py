"""Payment rules: Razorpay orders for a plan or for credits, and granting
what was paid for exactly once.

A payment is reported twice or more: by the browser after Checkout
(VerifyPayment) and by Razorpay itself (the payment.captured and order.paid
webhooks, each possibly redelivered). Any of them may come first or at the
same moment; all of them end in `_grant`, which flips the payment to
completed with a conditional UPDATE and credits the ledger (kind
`purchase`) under the idempotency key `payment:<order id>`. Whoever comes
second finds the payment completed and gets the first grant's result.

Unlike the ledger rules in service.py, these methods open their own
transactions: calls to Razorpay sit between reading a payment and granting
it, and no transaction or pooled connection is held while Razorpay answers.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import (
    MICROS_PER_CREDIT,
    FailedPrecondition,
    InvalidArgument,
    NotConfigured,
    NotFound,
    PaymentFailed,
    Unauthenticated,
    format_credits,
)
from libs.grpc.identity import Caller
from libs.logs import get_logger
from services.billing import repository
from services.billing.checkout_simulator import CheckoutResult, CheckoutSimulator
from services.billing.models import BILLING_CYCLES, PAYMENT_TYPES, Payment, Plan
from services.billing.razorpay import (
    RazorpayClient,
    WebhookEvent,
    parse_webhook,
    verify_webhook_signature,
)
from services.billing.service import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    BillingService,
    Checks,
)

log = get_logger(__name__)

RAZORPAY_API = "https://api.razorpay.com"
CURRENCY = "INR"
PAISE_PER_RUPEE = 100
# Razorpay refuses orders under one rupee.
MIN_ORDER_PAISE = 100
MIN_CREDITS = 1
MAX_CREDITS = 100_000
MAX_ID_LENGTH = 64
MAX_SIGNATURE_LENGTH = 128
MAX_EVENT_ID_LENGTH = 255
CHECKOUT_OUTCOMES = ("success", "failure")
# With automatic capture (Razorpay's default for orders) an authorized
# payment is captured moments later; both mean the customer has paid.
CONFIRMED_STATUSES = frozenset({"captured", "authorized"})
GRANTING_EVENTS = frozenset({"payment.captured", "order.paid"})
HANDLED_EVENTS = GRANTING_EVENTS | {"payment.failed"}
# Webhook outcomes that changed a payment; the rest are acknowledged no-ops.
APPLIED_OUTCOMES = frozenset({"completed", "failed"})
NOT_CONFIGURED = "Payments are not configured on this server."
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def is_simulated(base_url: str) -> bool:
    """Whether the Razorpay billing talks to is a stand-in.

    Billing is the one process that knows where Razorpay is: anything but
    Razorpay's own API (the local simulator `make run` starts, or a test's)
    is taken as the simulator. GetCheckoutConfig reports it, so the gateway
    and the web client can say payments are simulated, and only then may
    SimulateCheckout pay orders.
    """
    return base_url.rstrip("/") != RAZORPAY_API


@dataclass(frozen=True)
class OrderRequest:
    """What the caller wants to buy, as sent."""

    type: str
    plan_id: str
    billing_cycle: str
    credits: int


@dataclass(frozen=True)
class CreatedOrder:
    order_id: str
    amount_paise: int
    currency: str
    key_id: str
    simulated: bool


@dataclass(frozen=True)
class Granted:
    """What a completed payment gave its buyer."""

    type: str
    credits_added: int
    balance: int
    plan_id: str | None
    plan_name: str | None
    billing_cycle: str | None
    period_end: datetime | None


@dataclass(frozen=True)
class CheckoutConfig:
    key_id: str
    simulated: bool


@dataclass(frozen=True)
class PaymentPage:
    payments: list[Payment]
    next_page_token: str


@dataclass(frozen=True)
class _Order:
    """An order request that passed validation."""

    type: str
    plan_id: str | None
    billing_cycle: str | None
    credits: int


class PaymentService:
    def __init__(
        self,
        ledger: BillingService,
        sessions: async_sessionmaker[AsyncSession],
        razorpay: RazorpayClient | None,
        *,
        webhook_secret: str = "",
        simulator: CheckoutSimulator | None = None,
    ) -> None:
        self._ledger = ledger
        self._sessions = sessions
        self._razorpay = razorpay
        self._webhook_secret = webhook_secret
        self._simulator = simulator

    def checkout_config(self) -> CheckoutConfig:
        if self._razorpay is None:
            return CheckoutConfig("", False)
        return CheckoutConfig(self._razorpay.key_id, self._simulator is not None)

    async def plans(self, *, include_inactive: bool = False) -> list[Plan]:
        """Plans on sale; with `include_inactive`, those off sale too."""
        async with self._sessions() as db:
            return await repository.plans(db, include_inactive=include_inactive)

    # Orders

    async def create_order(self, caller: Caller, request: OrderRequest) -> CreatedOrder:
        """Price the request, create the Razorpay order, then store it as a
        pending payment. If Razorpay fails nothing is stored; an order
        Razorpay made but that was not stored cannot be paid, since only
        the reply carries its id."""
        razorpay = self._configured()
        user_id = _user_id(caller)
        order = _checked_order(request)
        async with self._sessions() as db:
            amount_paise, credits_micros = await _price(db, order)

        payment_id = uuid.uuid4()
        created = await razorpay.create_order(
            amount_paise, CURRENCY, str(payment_id), _notes(user_id, order)
        )

        async with self._sessions.begin() as db:
            await repository.insert_payment(
                db,
                payment_id=payment_id,
                user_id=user_id,
                order_id=created.id,
                type=order.type,
                plan_id=order.plan_id,
                billing_cycle=order.billing_cycle,
                amount_paise=amount_paise,
                currency=CURRENCY,
                credits_micros=credits_micros,
            )
        log.info(
            "payment.order_created",
            payment_id=str(payment_id),
            order_id=created.id,
            type=order.type,
            plan_id=order.plan_id,
            amount_paise=amount_paise,
        )
        return CreatedOrder(
            created.id,
            amount_paise,
            CURRENCY,
            razorpay.key_id,
            self._simulator is not None,
        )

    # The browser's report

    async def verify(
        self, caller: Caller, order_id: str, payment_id: str, signature: str
    ) -> Granted:
        """Grant the caller's own order once its Checkout signature checks
        out against the stored order id and Razorpay confirms the payment."""
        razorpay = self._configured()
        user_id = _user_id(caller)
        checks = Checks()
        checks.text("order_id", order_id, MAX_ID_LENGTH, required=True)
        checks.text("payment_id", payment_id, MAX_ID_LENGTH, required=True)
        checks.text("signature", signature, MAX_SIGNATURE_LENGTH, required=True)
        checks.done()

        async with self._sessions() as db:
            payment = await repository.payment_of_user(db, user_id, order_id)
        if payment is None:
            raise NotFound("No such order.")
        if not razorpay.verify_checkout(payment.order_id, payment_id, signature):
            log.warning(
                "payment.signature_invalid",
                order_id=payment.order_id,
                user_id=str(user_id),
            )
            raise PaymentFailed("Invalid payment signature.")
        if payment.status != "completed":
            await _confirm(razorpay, payment, payment_id)

        async with self._sessions.begin() as db:
            granted, _ = await self._grant(db, payment, payment_id)
        return granted

    # Razorpay's report

    async def handle_webhook(self, body: bytes, signature: str, event_id: str) -> bool:
        """Act on a signed webhook once per event id; True if it changed a
        payment. Duplicates, unknown orders and events billing does not act
        on are recorded and acknowledged, so Razorpay stops sending them."""
        if not self._webhook_secret:
            raise NotConfigured("Razorpay webhooks are not configured on this server.")
        if not verify_webhook_signature(body, signature, self._webhook_secret):
            log.warning("payment.webhook_signature_invalid")
            raise PaymentFailed("Invalid webhook signature.")
        event = parse_webhook(body)
        event_id = _event_id(event_id, body)

        async with self._sessions.begin() as db:
            claimed = await repository.claim_webhook_event(
                db, event_id, event.event, event.order_id
            )
            if not claimed:
                log.info(
                    "payment.webhook_duplicate", event_id=event_id, webhook=event.event
                )
                return False
            outcome = await self._apply(db, event)
            await repository.set_webhook_outcome(db, event_id, outcome)
        log.info(
            "payment.webhook_handled",
            event_id=event_id,
            webhook=event.event,
            order_id=event.order_id,
            outcome=outcome,
        )
        return outcome in APPLIED_OUTCOMES

    async def _apply(self, db: AsyncSession, event: WebhookEvent) -> str:
        if event.event not in HANDLED_EVENTS:
            return "ignored"
        payment = (
            await repository.payment_by_order(db, event.order_id)
            if event.order_id
            else None
        )
        if payment is None:
            log.warning(
                "payment.webhook_unknown_order",
                webhook=event.event,
                order_id=event.order_id,
            )
            return "unknown_order"
        if event.event == "payment.failed":
            failed = await repository.fail_payment(db, payment.id, event.payment_id)
            if failed:
                log.info("payment.failed", order_id=payment.order_id)
            return "failed" if failed else "not_pending"
        if event.amount is not None and event.amount != payment.amount_paise:
            log.error(
                "payment.amount_mismatch",
                order_id=payment.order_id,
                expected_paise=payment.amount_paise,
                reported_paise=event.amount,
            )
            return "amount_mismatch"
        _, completed = await self._grant(db, payment, event.payment_id)
        return "completed" if completed else "already_completed"

    # The one grant path

    async def _grant(
        self, db: AsyncSession, payment: Payment, razorpay_payment_id: str | None
    ) -> tuple[Granted, bool]:
        """Complete a payment and credit what it bought; the bool says
        whether this call completed it. The flip comes first: it waits for
        any transaction completing the same payment, so the subscription
        is extended once, and the ledger key makes the credit once."""
        completed = await repository.complete_payment(
            db, payment.id, razorpay_payment_id
        )
        plan = (
            await repository.plan_by_id(db, payment.plan_id)
            if payment.plan_id
            else None
        )
        entry = await self._ledger.purchase(
            db,
            payment.user_id,
            payment.credits_micros,
            f"payment:{payment.order_id}",
            reason=_reason(payment, plan),
            reference=str(payment.id),
            tags=_tags(payment),
        )
        period_end = await _subscription_period(db, payment, completed=completed)
        if completed:
            log.info(
                "payment.completed",
                payment_id=str(payment.id),
                order_id=payment.order_id,
                type=payment.type,
                credits_micros=payment.credits_micros,
            )
        granted = Granted(
            type=payment.type,
            credits_added=payment.credits_micros,
            balance=entry.balance_after,
            plan_id=payment.plan_id,
            plan_name=plan.name if plan else None,
            billing_cycle=payment.billing_cycle,
            period_end=period_end,
        )
        return granted, completed

    # Reading

    async def payments(
        self, caller: Caller, page_size: int, page_token: str
    ) -> PaymentPage:
        user_id = _user_id(caller)
        checks = Checks()
        if page_size < 0:
            checks.fail("page_size", "page_size may not be negative.")
        after = _page_position(checks, page_token)
        checks.done()
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        async with self._sessions() as db:
            rows = await repository.payments_page(db, user_id, after, size + 1)
        page = rows[:size]
        more = len(rows) > size
        return PaymentPage(page, _page_token(page[-1]) if more else "")

    # The simulator's Checkout

    async def simulate_checkout(
        self, caller: Caller, order_id: str, outcome: str
    ) -> CheckoutResult:
        """Pay the caller's own order in the Razorpay simulator, as the
        customer would in Checkout. The simulator delivers the webhooks
        before it answers, so by the time this returns the payment is
        usually granted already; VerifyPayment then reports the grant."""
        if self._simulator is None:
            raise NotFound("Simulated checkout is not available on this server.")
        user_id = _user_id(caller)
        outcome = outcome or "success"
        checks = Checks()
        checks.text("order_id", order_id, MAX_ID_LENGTH, required=True)
        if outcome not in CHECKOUT_OUTCOMES:
            checks.fail("outcome", 'outcome must be "success" or "failure".')
        checks.done()
        async with self._sessions() as db:
            payment = await repository.payment_of_user(db, user_id, order_id)
        if payment is None:
            raise NotFound("No such order.")
        if payment.status == "completed":
            raise FailedPrecondition("This order is already paid.")
        log.info("payment.simulated_checkout", order_id=order_id, outcome=outcome)
        return await self._simulator.pay(payment.order_id, outcome)

    def _configured(self) -> RazorpayClient:
        if self._razorpay is None:
            raise NotConfigured(NOT_CONFIGURED)
        return self._razorpay


def _user_id(caller: Caller) -> uuid.UUID:
    if caller.token_error is not None:
        raise caller.token_error
    if caller.user is None:
        raise Unauthenticated()
    try:
        return uuid.UUID(caller.user.subject)
    except ValueError:
        raise Unauthenticated() from None


def _checked_order(request: OrderRequest) -> _Order:
    """The order with its defaults (a monthly subscription), or every
    problem with it at once."""
    kind = request.type or "subscription"
    if kind not in PAYMENT_TYPES:
        raise InvalidArgument.for_field(
            "type", 'type must be "subscription" or "credits".'
        )
    checks = Checks()
    if kind == "credits":
        if not MIN_CREDITS <= request.credits <= MAX_CREDITS:
            checks.fail(
                "credits",
                f"Buy between {MIN_CREDITS} and {MAX_CREDITS} credits at a time.",
            )
        if request.plan_id or request.billing_cycle:
            checks.fail("plan_id", "A credit purchase has no plan or billing cycle.")
        checks.done()
        return _Order("credits", None, None, request.credits)
    cycle = request.billing_cycle or "monthly"
    checks.text("plan_id", request.plan_id, MAX_ID_LENGTH, required=True)
    if cycle not in BILLING_CYCLES:
        checks.fail("billing_cycle", 'billing_cycle must be "monthly" or "yearly".')
    if request.credits:
        checks.fail("credits", "A subscription comes with its plan's credits.")
    checks.done()
    return _Order(kind, request.plan_id, cycle, 0)


async def _price(db: AsyncSession, order: _Order) -> tuple[int, int]:
    """The order's amount in paise and the micro-credits it buys."""
    if order.plan_id is not None:
        plan = await repository.plan_by_id(db, order.plan_id)
        if plan is None or not plan.active:
            raise InvalidArgument.for_field(
                "plan_id", f'There is no plan "{order.plan_id}".'
            )
        yearly = order.billing_cycle == "yearly"
        rupees = plan.price_yearly if yearly else plan.price_monthly
        # TODO: a yearly plan grants one month's credits at purchase, as the
        # original did; the other eleven need a monthly re-grant job.
        return rupees * PAISE_PER_RUPEE, plan.credits_per_month * MICROS_PER_CREDIT
    price = await repository.credit_price_paise(db)
    amount = order.credits * price
    if amount < MIN_ORDER_PAISE:
        fewest = math.ceil(MIN_ORDER_PAISE / price)
        raise InvalidArgument.for_field(
            "credits", f"The smallest purchase is ₹1, which is {fewest} credits."
        )
    return amount, order.credits * MICROS_PER_CREDIT


def _notes(user_id: uuid.UUID, order: _Order) -> dict[str, str]:
    """Shown beside the order in Razorpay's dashboard."""
    notes = {"user_id": str(user_id), "type": order.type}
    if order.plan_id is not None:
        notes["plan_id"] = order.plan_id
    return notes


async def _confirm(razorpay: RazorpayClient, payment: Payment, payment_id: str) -> None:
    """Ask Razorpay whether this payment really paid this order in full; a
    valid signature alone says only that Checkout saw it."""
    info = await razorpay.fetch_payment(payment_id)
    problem = None
    if info.order_id != payment.order_id:
        problem = "another_order"
    elif info.status not in CONFIRMED_STATUSES:
        problem = f"status_{info.status}"
    elif (info.amount, info.currency) != (payment.amount_paise, payment.currency):
        problem = "amount_differs"
    if problem is not None:
        log.warning(
            "payment.not_confirmed",
            order_id=payment.order_id,
            payment_id=payment_id,
            problem=problem,
        )
        raise PaymentFailed("Razorpay does not confirm this payment.")


async def _subscription_period(
    db: AsyncSession, payment: Payment, *, completed: bool
) -> datetime | None:
    """The end of the period a subscription payment paid for: extended now
    if this call completed the payment, else as the first grant stored it."""
    if payment.type != "subscription":
        return None
    if not completed:
        return await repository.period_end_of(db, payment.id)
    assert payment.plan_id is not None
    assert payment.billing_cycle is not None
    period_end = await repository.extend_subscription(
        db, payment.user_id, payment.plan_id, payment.billing_cycle
    )
    await repository.set_period_end(db, payment.id, period_end)
    return period_end


def _reason(payment: Payment, plan: Plan | None) -> str:
    if plan is not None:
        return f"{plan.name} plan, {payment.billing_cycle}"
    return f"{format_credits(payment.credits_micros)} credits bought"


def _tags(payment: Payment) -> dict[str, str]:
    tags = {"order_id": payment.order_id, "payment_type": payment.type}
    if payment.plan_id is not None:
        tags["plan_id"] = payment.plan_id
    return tags


def _event_id(given: str, body: bytes) -> str:
    """Razorpay's event id; Razorpay always sends one, but an event without
    it is still told apart from others by its body."""
    if not given:
        return "body:" + hashlib.sha256(body).hexdigest()
    checks = Checks()
    checks.text("event_id", given, MAX_EVENT_ID_LENGTH)
    checks.done()
    return given


def _page_token(payment: Payment) -> str:
    micros = (payment.created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{payment.id}"


def _page_position(
    checks: Checks, page_token: str
) -> tuple[datetime, uuid.UUID] | None:
    """The created_at and id a page token continues after."""
    if not page_token:
        return None
    micros, _, payment_id = page_token.partition(".")
    try:
        if not micros.isdigit() or len(micros) > 19:
            raise ValueError(micros)
        return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(payment_id)
    except (ValueError, OverflowError):
        checks.fail("page_token", "page_token is not one this service issued.")
        return None
