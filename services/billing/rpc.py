"""gRPC servicer of the billing service: translates messages, opens the
transaction, calls the service, and raises domain errors unchanged (the
server interceptor maps them to statuses).

Access: every RPC that moves money is for services only, and so are the
batch reads GetBalances and SummarizeUsage. GetBalance and
ListTransactions are "a user for their own account, a service for any": the
ACCESS map holds one rule per method, so these two are PUBLIC there and the
service checks the verified caller itself (`service._require_readable`). A
call that carries a user token is limited to that user's account even when
a service (the gateway) forwards it; anyone else gets UNAUTHENTICATED.

Payments are a user's own (orders, verification, history); Razorpay's
webhooks reach billing only through the gateway, as a service call.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.grpc.identity import Access, current_caller
from libs.grpc.messages import timestamp
from libs.grpc.server import ServiceDefinition
from libs.periods import Period
from services.billing import plans, reports
from services.billing.models import Payment, Plan, Subscription
from services.billing.payments import OrderRequest, PaymentService
from services.billing.plans import PlanChanges
from services.billing.service import AccountRef, BillingService, Entry

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

ACCESS = {
    "GetBalance": Access.PUBLIC,
    "ListTransactions": Access.PUBLIC,
    "Grant": Access.SERVICE,
    "GrantSignupCredits": Access.SERVICE,
    "Hold": Access.SERVICE,
    "Capture": Access.SERVICE,
    "Release": Access.SERVICE,
    "Refund": Access.SERVICE,
    "Transfer": Access.SERVICE,
    "Adjust": Access.SERVICE,
    "ListPlans": Access.PUBLIC,
    "CreateOrder": Access.USER,
    "VerifyPayment": Access.USER,
    "HandleWebhook": Access.SERVICE,
    "ListPayments": Access.USER,
    "GetCheckoutConfig": Access.PUBLIC,
    "GetBillingSettings": Access.PUBLIC,
    "UpdateBillingSettings": Access.SERVICE,
    "GetActivePlan": Access.SERVICE,
    "SimulateCheckout": Access.USER,
    "GetBalances": Access.SERVICE,
    "SummarizeUsage": Access.SERVICE,
    "SummarizeRevenue": Access.SERVICE,
    "ListAllPayments": Access.SERVICE,
    "ListSubscriptions": Access.SERVICE,
    "UpdatePlan": Access.SERVICE,
    "DeleteUserData": Access.SERVICE,
}

_OWNER_TYPES: dict[billing_pb2.OwnerType.ValueType, str] = {
    billing_pb2.OWNER_TYPE_USER: "user",
    billing_pb2.OWNER_TYPE_WORKSPACE: "workspace",
    billing_pb2.OWNER_TYPE_MEMBER: "member",
}
_OWNER_TYPE_VALUES = {name: value for value, name in _OWNER_TYPES.items()}
_ENTRY_KINDS: dict[str, billing_pb2.EntryKind.ValueType] = {
    "grant": billing_pb2.ENTRY_KIND_GRANT,
    "purchase": billing_pb2.ENTRY_KIND_PURCHASE,
    "hold": billing_pb2.ENTRY_KIND_HOLD,
    "capture": billing_pb2.ENTRY_KIND_CAPTURE,
    "release": billing_pb2.ENTRY_KIND_RELEASE,
    "refund": billing_pb2.ENTRY_KIND_REFUND,
    "transfer": billing_pb2.ENTRY_KIND_TRANSFER,
    "adjustment": billing_pb2.ENTRY_KIND_ADJUSTMENT,
}


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(
        self,
        service: BillingService,
        payments: PaymentService,
        sessions: async_sessionmaker[AsyncSession],
        reads: async_sessionmaker[AsyncSession],
    ) -> None:
        self._service = service
        self._payments = payments
        self._sessions = sessions
        # Autocommit sessions for single-SELECT reads (balances on every page).
        self._reads = reads

    async def GetBalance(
        self, request: billing_pb2.GetBalanceRequest, context: Context
    ) -> billing_pb2.GetBalanceResponse:
        async with self._reads() as db:
            balance = await self._service.balance(
                db, current_caller(), _account(request.account)
            )
        return billing_pb2.GetBalanceResponse(
            balance_micros=balance.balance, held_micros=balance.held
        )

    async def GetBalances(
        self, request: billing_pb2.GetBalancesRequest, context: Context
    ) -> billing_pb2.GetBalancesResponse:
        async with self._reads() as db:
            balances = await self._service.balances(
                db, current_caller(), [_account(ref) for ref in request.accounts]
            )
        return billing_pb2.GetBalancesResponse(
            balances=[
                billing_pb2.AccountBalance(
                    account=billing_pb2.AccountRef(
                        owner_type=_OWNER_TYPE_VALUES[found.owner_type],
                        owner_id=found.owner_id,
                    ),
                    balance_micros=found.balance,
                    held_micros=found.held,
                )
                for found in balances
            ]
        )

    async def SummarizeUsage(
        self, request: billing_pb2.SummarizeUsageRequest, context: Context
    ) -> billing_pb2.SummarizeUsageResponse:
        async with self._reads() as db:
            groups = await self._service.summarize_usage(
                db, dict(request.tags), list(request.group_by)
            )
        return billing_pb2.SummarizeUsageResponse(
            groups=[
                billing_pb2.UsageGroup(
                    values=list(group.values),
                    count=group.count,
                    captured_micros=group.captured,
                )
                for group in groups
            ]
        )

    async def ListTransactions(
        self, request: billing_pb2.ListTransactionsRequest, context: Context
    ) -> billing_pb2.ListTransactionsResponse:
        async with self._reads() as db:
            page = await self._service.transactions(
                db,
                current_caller(),
                _account(request.account),
                request.page_size,
                request.page_token,
            )
        return billing_pb2.ListTransactionsResponse(
            entries=[_entry(entry) for entry in page.entries],
            next_page_token=page.next_page_token,
        )

    async def Grant(
        self, request: billing_pb2.GrantRequest, context: Context
    ) -> billing_pb2.GrantResponse:
        async with self._sessions.begin() as db:
            entry = await self._service.grant(
                db,
                _account(request.account),
                request.amount_micros,
                request.idempotency_key,
                request.reason,
            )
        return billing_pb2.GrantResponse(entry=_entry(entry))

    async def GrantSignupCredits(
        self, request: billing_pb2.GrantSignupCreditsRequest, context: Context
    ) -> billing_pb2.GrantSignupCreditsResponse:
        async with self._sessions.begin() as db:
            granted = await self._service.grant_signup_credits(db, request.user_id)
        return billing_pb2.GrantSignupCreditsResponse(
            granted_micros=granted.granted, balance_micros=granted.balance
        )

    async def Hold(
        self, request: billing_pb2.HoldRequest, context: Context
    ) -> billing_pb2.HoldResponse:
        async with self._sessions.begin() as db:
            placed = await self._service.hold(
                db,
                _account(request.account),
                request.amount_micros,
                request.idempotency_key,
                request.reason,
                request.reference,
                dict(request.tags),
            )
        return billing_pb2.HoldResponse(
            hold_id=placed.hold_id, balance_after_micros=placed.balance_after
        )

    async def Capture(
        self, request: billing_pb2.CaptureRequest, context: Context
    ) -> billing_pb2.CaptureResponse:
        async with self._sessions.begin() as db:
            captured = await self._service.capture(
                db, request.hold_id, request.amount_micros, request.idempotency_key
            )
        return billing_pb2.CaptureResponse(
            captured_micros=captured.captured,
            released_micros=captured.released,
            balance_after_micros=captured.balance_after,
        )

    async def Release(
        self, request: billing_pb2.ReleaseRequest, context: Context
    ) -> billing_pb2.ReleaseResponse:
        async with self._sessions.begin() as db:
            released = await self._service.release(
                db, request.hold_id, request.idempotency_key
            )
        return billing_pb2.ReleaseResponse(
            released_micros=released.released,
            balance_after_micros=released.balance_after,
        )

    async def Refund(
        self, request: billing_pb2.RefundRequest, context: Context
    ) -> billing_pb2.RefundResponse:
        async with self._sessions.begin() as db:
            entry = await self._service.refund(
                db,
                _account(request.account),
                request.amount_micros,
                request.idempotency_key,
                request.reason,
                request.reference,
            )
        return billing_pb2.RefundResponse(entry=_entry(entry))

    async def Transfer(
        self, request: billing_pb2.TransferRequest, context: Context
    ) -> billing_pb2.TransferResponse:
        async with self._sessions.begin() as db:
            moved = await self._service.transfer(
                db,
                _account(request.from_account),
                _account(request.to_account),
                request.amount_micros,
                request.idempotency_key,
                request.reason,
                dict(request.tags),
            )
        return billing_pb2.TransferResponse(
            from_balance_after_micros=moved.from_balance_after,
            to_balance_after_micros=moved.to_balance_after,
        )

    async def Adjust(
        self, request: billing_pb2.AdjustRequest, context: Context
    ) -> billing_pb2.AdjustResponse:
        async with self._sessions.begin() as db:
            entry = await self._service.adjust(
                db,
                _account(request.account),
                request.delta_micros,
                request.idempotency_key,
                request.reason,
                request.actor,
            )
        return billing_pb2.AdjustResponse(entry=_entry(entry))

    async def DeleteUserData(
        self, request: billing_pb2.DeleteUserDataRequest, context: Context
    ) -> billing_pb2.DeleteUserDataResponse:
        # Only open holds are released; the ledger and payments are kept.
        async with self._sessions.begin() as db:
            outcome = await self._service.release_open_holds(db, request.user_id)
        return billing_pb2.DeleteUserDataResponse(
            released_holds=outcome.holds, released_micros=outcome.released
        )

    # Payments and plans

    async def ListPlans(
        self, request: billing_pb2.ListPlansRequest, context: Context
    ) -> billing_pb2.ListPlansResponse:
        # Plans off sale are shown to OmniHub services (the admin's list) only.
        include_inactive = (
            request.include_inactive and current_caller().service is not None
        )
        listed = await self._payments.plans(include_inactive=include_inactive)
        return billing_pb2.ListPlansResponse(plans=[_plan(plan) for plan in listed])

    # Operators' reports (the admin service)

    async def SummarizeRevenue(
        self, request: billing_pb2.SummarizeRevenueRequest, context: Context
    ) -> billing_pb2.SummarizeRevenueResponse:
        period = Period.from_request(request.start, request.end, request.bucket)
        summary = await reports.summarize_revenue(self._reads, period)
        return _revenue_summary(summary)

    async def ListAllPayments(
        self, request: billing_pb2.ListAllPaymentsRequest, context: Context
    ) -> billing_pb2.ListAllPaymentsResponse:
        async with self._reads() as db:
            page = await reports.all_payments(
                db,
                request.page_size,
                request.page_token,
                user_id=request.user_id,
                status=request.status,
                kind=request.type,
            )
        return billing_pb2.ListAllPaymentsResponse(
            payments=[_payment(payment) for payment in page.rows],
            next_page_token=page.next_page_token,
        )

    async def ListSubscriptions(
        self, request: billing_pb2.ListSubscriptionsRequest, context: Context
    ) -> billing_pb2.ListSubscriptionsResponse:
        async with self._reads() as db:
            page, counts = await reports.subscriptions(
                db,
                request.page_size,
                request.page_token,
                user_id=request.user_id,
                status=request.status,
                plan_id=request.plan_id,
            )
        return billing_pb2.ListSubscriptionsResponse(
            subscriptions=[_subscription(row, name) for row, name in page.rows],
            next_page_token=page.next_page_token,
            counts_by_status=counts,
        )

    async def UpdatePlan(
        self, request: billing_pb2.UpdatePlanRequest, context: Context
    ) -> billing_pb2.UpdatePlanResponse:
        async with self._sessions.begin() as db:
            plan = await plans.update_plan(
                db, request.id, _plan_changes(request.changes), request.actor
            )
        return billing_pb2.UpdatePlanResponse(plan=_plan(plan))

    async def CreateOrder(
        self, request: billing_pb2.CreateOrderRequest, context: Context
    ) -> billing_pb2.CreateOrderResponse:
        order = await self._payments.create_order(
            current_caller(),
            OrderRequest(
                type=request.type,
                plan_id=request.plan_id,
                billing_cycle=request.billing_cycle,
                credits=request.credits,
            ),
        )
        return billing_pb2.CreateOrderResponse(
            order_id=order.order_id,
            amount=order.amount_paise,
            currency=order.currency,
            key_id=order.key_id,
            simulated=order.simulated,
        )

    async def VerifyPayment(
        self, request: billing_pb2.VerifyPaymentRequest, context: Context
    ) -> billing_pb2.VerifyPaymentResponse:
        granted = await self._payments.verify(
            current_caller(), request.order_id, request.payment_id, request.signature
        )
        return billing_pb2.VerifyPaymentResponse(
            credits_added_micros=granted.credits_added,
            balance_micros=granted.balance,
            plan_id=granted.plan_id or "",
            billing_cycle=granted.billing_cycle or "",
            period_end=_timestamp(granted.period_end),
            plan_name=granted.plan_name or "",
            type=granted.type,
        )

    async def HandleWebhook(
        self, request: billing_pb2.HandleWebhookRequest, context: Context
    ) -> billing_pb2.HandleWebhookResponse:
        applied = await self._payments.handle_webhook(
            request.body, request.signature, request.event_id
        )
        return billing_pb2.HandleWebhookResponse(applied=applied)

    async def ListPayments(
        self, request: billing_pb2.ListPaymentsRequest, context: Context
    ) -> billing_pb2.ListPaymentsResponse:
        page = await self._payments.payments(
            current_caller(), request.page_size, request.page_token
        )
        return billing_pb2.ListPaymentsResponse(
            payments=[_payment(payment) for payment in page.payments],
            next_page_token=page.next_page_token,
        )

    async def GetCheckoutConfig(
        self, request: billing_pb2.GetCheckoutConfigRequest, context: Context
    ) -> billing_pb2.GetCheckoutConfigResponse:
        config = self._payments.checkout_config()
        return billing_pb2.GetCheckoutConfigResponse(
            key_id=config.key_id, simulated=config.simulated
        )

    async def GetBillingSettings(
        self, request: billing_pb2.GetBillingSettingsRequest, context: Context
    ) -> billing_pb2.GetBillingSettingsResponse:
        async with self._reads() as db:
            found = await self._service.public_settings(db)
        return billing_pb2.GetBillingSettingsResponse(
            signup_credits_micros=found.signup_credits_micros,
            credit_price_paise=found.credit_price_paise,
        )

    async def UpdateBillingSettings(
        self, request: billing_pb2.UpdateBillingSettingsRequest, context: Context
    ) -> billing_pb2.UpdateBillingSettingsResponse:
        signup_credits = (
            request.signup_credits_micros
            if request.HasField("signup_credits_micros")
            else None
        )
        credit_price = (
            request.credit_price_paise
            if request.HasField("credit_price_paise")
            else None
        )
        async with self._sessions.begin() as db:
            found = await self._service.update_settings(
                db, signup_credits, credit_price
            )
        return billing_pb2.UpdateBillingSettingsResponse(
            signup_credits_micros=found.signup_credits_micros,
            credit_price_paise=found.credit_price_paise,
        )

    async def GetActivePlan(
        self, request: billing_pb2.GetActivePlanRequest, context: Context
    ) -> billing_pb2.GetActivePlanResponse:
        async with self._reads() as db:
            plan_id = await self._service.active_plan(db, request.user_id)
        return billing_pb2.GetActivePlanResponse(plan_id=plan_id)

    async def SimulateCheckout(
        self, request: billing_pb2.SimulateCheckoutRequest, context: Context
    ) -> billing_pb2.SimulateCheckoutResponse:
        paid = await self._payments.simulate_checkout(
            current_caller(), request.order_id, request.outcome
        )
        return billing_pb2.SimulateCheckoutResponse(
            order_id=paid.order_id, payment_id=paid.payment_id, signature=paid.signature
        )


def definition(servicer: BillingServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,
        servicer=servicer,
        register=billing_pb2_grpc.add_BillingServiceServicer_to_server,
        access=ACCESS,
    )


def _account(ref: billing_pb2.AccountRef) -> AccountRef:
    return AccountRef(_OWNER_TYPES.get(ref.owner_type, ""), ref.owner_id)


def _entry(entry: Entry) -> billing_pb2.LedgerEntry:
    return billing_pb2.LedgerEntry(
        id=str(entry.id),
        account=billing_pb2.AccountRef(
            owner_type=_OWNER_TYPE_VALUES[entry.owner_type],
            owner_id=entry.owner_id,
        ),
        kind=_ENTRY_KINDS[entry.kind],
        amount_micros=entry.amount,
        balance_after_micros=entry.balance_after,
        reason=entry.reason,
        reference=entry.reference,
        tags=entry.tags,
        created_at=timestamp(entry.created_at),
    )


def _timestamp(moment: datetime | None) -> Timestamp | None:
    return timestamp(moment) if moment is not None else None


def _plan(plan: Plan) -> billing_pb2.Plan:
    return billing_pb2.Plan(
        id=plan.id,
        name=plan.name,
        price_monthly=plan.price_monthly,
        price_yearly=plan.price_yearly,
        credits_per_month=plan.credits_per_month,
        features=list(plan.features),
        is_popular=plan.is_popular,
        display_order=plan.display_order,
        active=plan.active,
    )


def _revenue_summary(
    summary: reports.RevenueSummary,
) -> billing_pb2.SummarizeRevenueResponse:
    return billing_pb2.SummarizeRevenueResponse(
        revenue_buckets=[
            billing_pb2.RevenueBucket(
                start=_timestamp(row.start),
                currency=row.currency,
                amount=row.amount,
                payments=row.payments,
            )
            for row in summary.revenue
        ],
        credit_flow_buckets=[
            billing_pb2.CreditFlowBucket(
                start=timestamp(flow.start),
                purchased_micros=flow.purchased,
                granted_micros=flow.granted,
                refunded_micros=flow.refunded,
                adjusted_micros=flow.adjusted,
            )
            for flow in summary.credit_flow
        ],
        spend_buckets=[
            billing_pb2.SpendBucket(
                start=_timestamp(row.start),
                usage_type=row.usage_type,
                count=row.count,
                spent_micros=row.spent,
            )
            for row in summary.spend
        ],
        lifetime_revenue=[
            billing_pb2.CurrencyAmount(
                currency=row.currency, amount=row.amount, payments=row.payments
            )
            for row in summary.lifetime_revenue
        ],
        lifetime_spend=[
            billing_pb2.UsageTypeSpend(
                usage_type=row.usage_type, count=row.count, spent_micros=row.spent
            )
            for row in summary.lifetime_spend
        ],
        credits_in_circulation_micros=summary.in_circulation,
        active_subscriptions=summary.active_subscriptions,
        monthly_recurring_paise=summary.monthly_recurring_paise,
    )


def _subscription(row: Subscription, plan_name: str) -> billing_pb2.Subscription:
    return billing_pb2.Subscription(
        user_id=str(row.user_id),
        plan_id=row.plan_id,
        plan_name=plan_name,
        billing_cycle=row.billing_cycle,
        status=row.status,
        current_period_start=timestamp(row.current_period_start),
        current_period_end=timestamp(row.current_period_end),
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def _plan_changes(message: billing_pb2.PlanChanges) -> PlanChanges:
    def given(name: str) -> Any:
        return getattr(message, name) if message.HasField(name) else None  # type: ignore[arg-type]

    return PlanChanges(
        name=given("name"),
        price_monthly=given("price_monthly"),
        price_yearly=given("price_yearly"),
        credits_per_month=given("credits_per_month"),
        features=list(message.features) if message.replace_features else None,
        is_popular=given("is_popular"),
        display_order=given("display_order"),
        active=given("active"),
    )


def _payment(payment: Payment) -> billing_pb2.Payment:
    return billing_pb2.Payment(
        id=str(payment.id),
        order_id=payment.order_id,
        payment_id=payment.payment_id or "",
        type=payment.type,
        plan_id=payment.plan_id or "",
        billing_cycle=payment.billing_cycle or "",
        amount=payment.amount_paise,
        currency=payment.currency,
        status=payment.status,
        credits_micros=payment.credits_micros,
        created_at=_timestamp(payment.created_at),
        completed_at=_timestamp(payment.completed_at),
        user_id=str(payment.user_id),
    )
