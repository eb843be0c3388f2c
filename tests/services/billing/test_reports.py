"""Billing's reports for operators over real gRPC: SummarizeRevenue,
ListAllPayments and ListSubscriptions.

The period figures are read for days of 2003, into which the tests write
their own payments, ledger entries and captured holds straight into the
billing schema (a ledger cannot be back-dated through the service). Every
account written here balances (its balance is the sum of its ledger), so
the suite's check of the books still holds. All-time figures are compared
before and after a test adds its rows.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.billing.v1 import billing_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import InvalidArgument
from tests.services.billing.factories import BillingClient, failure, fields_of

Sessions = async_sessionmaker[AsyncSession]
DAY = timedelta(days=1)


def a_day_in_2003(day: int) -> datetime:
    return datetime(2003, 2, day, tzinfo=UTC)


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


async def summarize(
    billing: BillingClient, start: datetime, end: datetime, bucket: str = ""
) -> billing_pb2.SummarizeRevenueResponse:
    reply: billing_pb2.SummarizeRevenueResponse = await billing.stub.SummarizeRevenue(
        billing_pb2.SummarizeRevenueRequest(
            start=stamp(start), end=stamp(end), bucket=bucket
        ),
        metadata=billing.service,
    )
    return reply


class Books:
    """Rows written straight into the billing schema, each account balanced."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def sql(self, statement: str, **values: Any) -> Any:
        """Run one statement; what it returns, if it has a RETURNING clause."""
        async with self._sessions.begin() as db:
            result = await db.execute(text(statement), values)
            return result.scalar() if "RETURNING" in statement else None

    async def payment(
        self,
        completed_at: datetime | None,
        amount_paise: int,
        *,
        user_id: uuid.UUID | None = None,
        kind: str = "credits",
        created_at: datetime | None = None,
    ) -> uuid.UUID:
        payment_id = uuid.uuid4()
        await self.sql(
            "INSERT INTO payments (id, user_id, order_id, type, plan_id,"
            " billing_cycle, amount_paise, credits_micros, status, created_at,"
            " completed_at)"
            " VALUES (:id, :user_id, :order_id, :type, :plan, :cycle, :amount,"
            " 1000000, :status, :created_at, :completed_at)",
            id=payment_id,
            user_id=user_id or uuid.uuid4(),
            order_id=f"order_{payment_id.hex[:20]}",
            type=kind,
            plan="starter" if kind == "subscription" else None,
            cycle="monthly" if kind == "subscription" else None,
            amount=amount_paise,
            status="completed" if completed_at else "pending",
            created_at=created_at or completed_at or datetime.now(UTC),
            completed_at=completed_at,
        )
        return payment_id

    async def account(self) -> uuid.UUID:
        account_id = uuid.uuid4()
        await self.sql(
            "INSERT INTO accounts (id, owner_type, owner_id) VALUES (:id, 'user', :o)",
            id=account_id,
            o=uuid.uuid4(),
        )
        return account_id

    async def entry(
        self,
        account_id: uuid.UUID,
        kind: str,
        amount: int,
        at: datetime,
        hold_id: uuid.UUID | None = None,
    ) -> None:
        """A ledger entry at `at` and the balance change it explains."""
        key = f"test:report:{uuid.uuid4()}"
        balance = await self.sql(
            "UPDATE accounts SET balance = balance + :amount WHERE id = :id"
            " RETURNING balance",
            id=account_id,
            amount=amount,
        )
        await self.sql(
            "INSERT INTO operations (key, kind, fingerprint, result)"
            " VALUES (:key, :kind, :fingerprint, '{}'::jsonb)",
            key=key,
            kind=kind,
            fingerprint=hashlib.sha256(key.encode()).digest(),
        )
        await self.sql(
            "INSERT INTO ledger_entries (account_id, kind, amount, balance_after,"
            " operation_key, hold_id, created_at)"
            " VALUES (:account, :kind, :amount, :balance, :key, :hold, :at)",
            account=account_id,
            kind=kind,
            amount=amount,
            balance=balance,
            key=key,
            hold=hold_id,
            at=at,
        )

    async def captured_hold(
        self,
        account_id: uuid.UUID,
        amount: int,
        captured: int,
        at: datetime,
        usage_type: str | None,
    ) -> None:
        """A hold placed and captured at `at`: the hold entry takes `amount`,
        the capture entry gives back what was not charged."""
        hold_id = uuid.uuid4()
        tags = {"usage_type": usage_type} if usage_type else {}
        await self.sql(
            "INSERT INTO holds (id, account_id, amount, captured, status, tags,"
            " created_at, settled_at)"
            " VALUES (:id, :account, :amount, :captured, 'captured',"
            " CAST(:tags AS jsonb), :at, :at)",
            id=hold_id,
            account=account_id,
            amount=amount,
            captured=captured,
            tags=json.dumps(tags),
            at=at,
        )
        await self.entry(account_id, "hold", -amount, at, hold_id)
        await self.entry(account_id, "capture", amount - captured, at, hold_id)

    async def subscription(
        self, plan_id: str, cycle: str, status: str, ends_in: timedelta
    ) -> uuid.UUID:
        user_id = uuid.uuid4()
        await self.sql(
            "INSERT INTO subscriptions (user_id, plan_id, billing_cycle, status,"
            " current_period_start, current_period_end, updated_at)"
            " VALUES (:user, :plan, :cycle, :status, now() - interval '40 days',"
            " now() + CAST(:ends_in AS interval), now())",
            user=user_id,
            plan=plan_id,
            cycle=cycle,
            status=status,
            ends_in=ends_in,
        )
        return user_id


@pytest.fixture(scope="module")
def books(billing_db: Sessions) -> Books:
    return Books(billing_db)


def moment(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


class TestRevenue:
    async def test_completed_payments_are_summed_per_day_of_completion(
        self, billing: BillingClient, books: Books
    ) -> None:
        start = a_day_in_2003(1)
        await books.payment(start + timedelta(hours=1), 135_000)
        await books.payment(start + timedelta(hours=20), 10_000)
        await books.payment(start + 2 * DAY, 270_000, kind="subscription")
        await books.payment(None, 999_900, created_at=start + DAY)
        await books.payment(start + 3 * DAY, 50_000)

        reply = await summarize(billing, start, start + 3 * DAY)

        assert [
            (moment(b.start), b.currency, b.amount, b.payments)
            for b in reply.revenue_buckets
        ] == [
            (start, "INR", 145_000, 2),
            (start + 2 * DAY, "INR", 270_000, 1),
        ]

    async def test_lifetime_revenue_counts_every_completed_payment(
        self, billing: BillingClient, books: Books
    ) -> None:
        start = a_day_in_2003(5)
        before = await summarize(billing, start, start + DAY)
        await books.payment(start, 12_345)
        await books.payment(None, 99_999)

        after = await summarize(billing, start, start + DAY)

        def inr(reply: billing_pb2.SummarizeRevenueResponse) -> tuple[int, int]:
            found = [r for r in reply.lifetime_revenue if r.currency == "INR"]
            return (found[0].amount, found[0].payments) if found else (0, 0)

        assert inr(after)[0] - inr(before)[0] == 12_345
        assert inr(after)[1] - inr(before)[1] == 1


class TestCredits:
    async def test_credits_brought_in_are_summed_per_day_and_kind(
        self, billing: BillingClient, books: Books
    ) -> None:
        start = a_day_in_2003(8)
        account = await books.account()
        await books.entry(account, "purchase", 12_000_000, start)
        await books.entry(account, "grant", 10_000_000, start + timedelta(hours=3))
        await books.entry(account, "adjustment", -2_000_000, start + timedelta(hours=4))
        await books.entry(account, "refund", 500_000, start + DAY)
        await books.entry(account, "grant", 7, start + 2 * DAY)

        reply = await summarize(billing, start, start + 2 * DAY)

        assert [
            (
                moment(f.start),
                f.purchased_micros,
                f.granted_micros,
                f.refunded_micros,
                f.adjusted_micros,
            )
            for f in reply.credit_flow_buckets
        ] == [
            (start, 12_000_000, 10_000_000, 0, -2_000_000),
            (start + DAY, 0, 0, 500_000, 0),
        ]

    async def test_spending_is_what_captures_charged_per_usage_type(
        self, billing: BillingClient, books: Books
    ) -> None:
        start = a_day_in_2003(12)
        account = await books.account()
        await books.entry(account, "grant", 100_000_000, start)
        await books.captured_hold(account, 4_000_000, 4_000_000, start, "image")
        await books.captured_hold(account, 4_000_000, 1_000_000, start, "image")
        await books.captured_hold(account, 9_000_000, 9_000_000, start, "video")
        await books.captured_hold(account, 300_000, 250_000, start + DAY, "chat")
        await books.captured_hold(account, 1_000, 1_000, start + DAY, None)

        reply = await summarize(billing, start, start + 2 * DAY)

        assert sorted(
            (moment(s.start), s.usage_type, s.count, s.spent_micros)
            for s in reply.spend_buckets
        ) == [
            (start, "image", 2, 5_000_000),
            (start, "video", 1, 9_000_000),
            (start + DAY, "", 1, 1_000),
            (start + DAY, "chat", 1, 250_000),
        ]

    async def test_lifetime_spending_and_circulation_follow_the_books(
        self, billing: BillingClient, books: Books
    ) -> None:
        start = a_day_in_2003(15)
        before = await summarize(billing, start, start + DAY)
        account = await books.account()
        await books.entry(account, "grant", 20_000_000, start)
        await books.captured_hold(account, 6_000_000, 5_000_000, start, "upscale")

        after = await summarize(billing, start, start + DAY)

        def upscale(reply: billing_pb2.SummarizeRevenueResponse) -> tuple[int, int]:
            found = [s for s in reply.lifetime_spend if s.usage_type == "upscale"]
            return (found[0].count, found[0].spent_micros) if found else (0, 0)

        assert upscale(after)[0] - upscale(before)[0] == 1
        assert upscale(after)[1] - upscale(before)[1] == 5_000_000
        circulation = (
            after.credits_in_circulation_micros - before.credits_in_circulation_micros
        )
        assert circulation == 15_000_000


class TestSubscriptions:
    async def test_recurring_revenue_counts_paid_up_active_subscriptions(
        self, billing: BillingClient, books: Books
    ) -> None:
        start = a_day_in_2003(18)
        before = await summarize(billing, start, start + DAY)
        await books.subscription("standard", "monthly", "active", DAY)
        await books.subscription("professional", "yearly", "active", 30 * DAY)
        await books.subscription("standard", "monthly", "active", -DAY)
        await books.subscription("starter", "monthly", "cancelled", DAY)

        after = await summarize(billing, start, start + DAY)

        assert after.active_subscriptions - before.active_subscriptions == 2
        grown = after.monthly_recurring_paise - before.monthly_recurring_paise
        assert grown == 2700 * 100 + 86400 * 100 // 12

    async def test_listing_filters_and_counts_per_status(
        self, billing: BillingClient, books: Books
    ) -> None:
        user = await books.subscription("starter", "yearly", "cancelled", DAY)

        reply = await billing.stub.ListSubscriptions(
            billing_pb2.ListSubscriptionsRequest(user_id=str(user)),
            metadata=billing.service,
        )
        cancelled = await billing.stub.ListSubscriptions(
            billing_pb2.ListSubscriptionsRequest(status="cancelled", page_size=200),
            metadata=billing.service,
        )

        assert [
            (s.user_id, s.plan_id, s.plan_name, s.billing_cycle, s.status)
            for s in reply.subscriptions
        ] == [(str(user), "starter", "Starter", "yearly", "cancelled")]
        assert reply.counts_by_status["cancelled"] >= 1
        assert {s.status for s in cancelled.subscriptions} == {"cancelled"}


class TestListAllPayments:
    async def test_a_users_payments_are_listed_newest_first_across_pages(
        self, billing: BillingClient, books: Books
    ) -> None:
        user = uuid.uuid4()
        start = a_day_in_2003(20)
        made = [
            await books.payment(start + n * timedelta(hours=1), 100 + n, user_id=user)
            for n in range(5)
        ]

        pages: list[billing_pb2.ListAllPaymentsResponse] = []
        token = ""
        for _ in range(3):
            page = await billing.stub.ListAllPayments(
                billing_pb2.ListAllPaymentsRequest(
                    user_id=str(user), page_size=2, page_token=token
                ),
                metadata=billing.service,
            )
            pages.append(page)
            token = page.next_page_token

        listed = [p.id for page in pages for p in page.payments]
        assert listed == [str(payment) for payment in reversed(made)]
        assert {p.user_id for page in pages for p in page.payments} == {str(user)}
        assert token == ""

    async def test_status_and_type_filters_apply(
        self, billing: BillingClient, books: Books
    ) -> None:
        user = uuid.uuid4()
        start = a_day_in_2003(22)
        paid = await books.payment(start, 500, user_id=user, kind="subscription")
        await books.payment(None, 600, user_id=user, created_at=start)

        completed = await billing.stub.ListAllPayments(
            billing_pb2.ListAllPaymentsRequest(user_id=str(user), status="completed"),
            metadata=billing.service,
        )
        credits = await billing.stub.ListAllPayments(
            billing_pb2.ListAllPaymentsRequest(user_id=str(user), type="credits"),
            metadata=billing.service,
        )

        assert [p.id for p in completed.payments] == [str(paid)]
        assert [p.amount for p in credits.payments] == [600]

    async def test_unknown_filters_are_invalid(self, billing: BillingClient) -> None:
        code, error = await failure(
            billing.stub.ListAllPayments(
                billing_pb2.ListAllPaymentsRequest(
                    status="refunded", type="gift", user_id="x", page_token="?"
                ),
                metadata=billing.service,
            )
        )

        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error, InvalidArgument)
        assert fields_of(error) == {"status", "type", "user_id", "page_token"}

    async def test_a_user_may_not_list_everyones_payments(
        self, billing: BillingClient
    ) -> None:
        code, _ = await failure(
            billing.stub.ListAllPayments(
                billing_pb2.ListAllPaymentsRequest(),
                metadata=billing.user(str(uuid.uuid4())),
            )
        )

        assert code == grpc.StatusCode.PERMISSION_DENIED
