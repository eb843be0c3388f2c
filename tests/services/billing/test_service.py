"""The money rules of services/billing/service.py, exercised over real gRPC
against PostgreSQL: holds, captures, releases, grants, refunds, transfers and
adjustments; idempotency under retries and retry storms; concurrency; and
input validation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from omnihub.billing.v1 import billing_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import (
    FailedPrecondition,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidArgument,
    NotFound,
)
from libs.grpc.status import from_rpc_error
from services.billing.main import BillingProcess
from tests.services.billing.factories import (
    CREDIT,
    BillingClient,
    failure,
    fields_of,
    funded_account,
    new_key,
    user_account,
    workspace_account,
)

STORM = 20


async def _storm(call: Callable[[], Awaitable[Any]], times: int = STORM) -> list[Any]:
    """The same request sent `times` times at once, as a retrying client would."""
    return list(await asyncio.gather(*(call() for _ in range(times))))


def _identical(replies: list[Any]) -> bool:
    return len({reply.SerializeToString(deterministic=True) for reply in replies}) == 1


class TestGrant:
    async def test_grant_creates_the_account_and_writes_a_grant_entry(
        self, billing: BillingClient
    ) -> None:
        account = user_account()

        reply = await billing.grant(account, 5 * CREDIT, reason="Promotion")

        assert await billing.balance(account) == (5 * CREDIT, 0)
        entry = reply.entry
        assert entry.kind == billing_pb2.ENTRY_KIND_GRANT
        assert entry.amount_micros == 5 * CREDIT
        assert entry.balance_after_micros == 5 * CREDIT
        assert entry.reason == "Promotion"
        assert entry.account == account
        assert entry.created_at.seconds > 0
        assert [e.id for e in await billing.entries(account)] == [entry.id]

    async def test_grant_adds_to_the_existing_balance(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 2 * CREDIT)

        reply = await billing.grant(account, 3 * CREDIT)

        assert reply.entry.balance_after_micros == 5 * CREDIT
        assert await billing.balance(account) == (5 * CREDIT, 0)

    async def test_grant_retried_with_its_key_moves_money_once(
        self, billing: BillingClient
    ) -> None:
        request = billing_pb2.GrantRequest(
            account=user_account(), amount_micros=CREDIT, idempotency_key=new_key()
        )

        first = await billing.stub.Grant(request, metadata=billing.service)
        again = await billing.stub.Grant(request, metadata=billing.service)

        assert again == first
        assert await billing.balance(request.account) == (CREDIT, 0)

    async def test_grant_retry_storm_moves_money_once_with_identical_replies(
        self, billing: BillingClient
    ) -> None:
        request = billing_pb2.GrantRequest(
            account=user_account(), amount_micros=CREDIT, idempotency_key=new_key()
        )

        replies = await _storm(
            lambda: billing.stub.Grant(request, metadata=billing.service)
        )

        assert _identical(replies)
        assert await billing.balance(request.account) == (CREDIT, 0)
        assert len(await billing.entries(request.account)) == 1

    async def test_same_key_with_another_amount_is_refused(
        self, billing: BillingClient
    ) -> None:
        account = user_account()
        key = new_key()
        await billing.stub.Grant(
            billing_pb2.GrantRequest(
                account=account, amount_micros=CREDIT, idempotency_key=key
            ),
            metadata=billing.service,
        )

        status, error = await failure(
            billing.stub.Grant(
                billing_pb2.GrantRequest(
                    account=account, amount_micros=2 * CREDIT, idempotency_key=key
                ),
                metadata=billing.service,
            )
        )

        assert status == grpc.StatusCode.ALREADY_EXISTS
        assert isinstance(error, IdempotencyKeyReused)
        assert await billing.balance(account) == (CREDIT, 0)

    async def test_grant_key_reused_for_a_hold_is_refused(
        self, billing: BillingClient
    ) -> None:
        account = user_account()
        key = new_key()
        await billing.stub.Grant(
            billing_pb2.GrantRequest(
                account=account, amount_micros=CREDIT, idempotency_key=key
            ),
            metadata=billing.service,
        )

        status, error = await failure(
            billing.stub.Hold(
                billing_pb2.HoldRequest(
                    account=account, amount_micros=CREDIT, idempotency_key=key
                ),
                metadata=billing.service,
            )
        )

        assert status == grpc.StatusCode.ALREADY_EXISTS
        assert error.code == "idempotency_key_reused"
        assert await billing.balance(account) == (CREDIT, 0)


class TestGrantSignupCredits:
    async def test_new_user_gets_the_configured_ten_credits(
        self, billing: BillingClient
    ) -> None:
        account = user_account()

        reply = await billing.stub.GrantSignupCredits(
            billing_pb2.GrantSignupCreditsRequest(user_id=account.owner_id),
            metadata=billing.service,
        )

        assert reply.granted_micros == 10 * CREDIT
        assert reply.balance_micros == 10 * CREDIT
        [entry] = await billing.entries(account)
        assert entry.kind == billing_pb2.ENTRY_KIND_GRANT
        assert entry.reason == "Sign-up credits"

    async def test_signup_credits_are_granted_once_however_often_asked(
        self, billing: BillingClient
    ) -> None:
        account = user_account()
        request = billing_pb2.GrantSignupCreditsRequest(user_id=account.owner_id)

        replies = await _storm(
            lambda: billing.stub.GrantSignupCredits(request, metadata=billing.service),
            times=10,
        )
        later = await billing.stub.GrantSignupCredits(request, metadata=billing.service)

        assert _identical([*replies, later])
        assert await billing.balance(account) == (10 * CREDIT, 0)

    async def test_signup_grant_follows_the_billing_setting(
        self,
        billing: BillingClient,
        billing_service: BillingProcess,
        billing_db: async_sessionmaker[AsyncSession],
    ) -> None:
        account = user_account()
        async with billing_db.begin() as db:
            await billing_service.service.set_signup_credits(db, 25 * CREDIT)
        try:
            reply = await billing.stub.GrantSignupCredits(
                billing_pb2.GrantSignupCreditsRequest(user_id=account.owner_id),
                metadata=billing.service,
            )
        finally:
            async with billing_db.begin() as db:
                await billing_service.service.set_signup_credits(db, 10 * CREDIT)

        assert reply.granted_micros == 25 * CREDIT
        assert await billing.balance(account) == (25 * CREDIT, 0)

    async def test_signup_grant_for_a_bad_user_id_is_invalid(
        self, billing: BillingClient
    ) -> None:
        status, error = await failure(
            billing.stub.GrantSignupCredits(
                billing_pb2.GrantSignupCreditsRequest(user_id="not-a-uuid"),
                metadata=billing.service,
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert fields_of(error) == {"user_id"}


class TestHold:
    async def test_hold_moves_credits_from_the_balance_into_held(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)

        reply = await billing.hold(
            account,
            2 * CREDIT,
            reason="Image generation",
            reference="generation-1",
            tags={"usage_type": "image"},
        )

        assert reply.hold_id
        assert reply.balance_after_micros == 3 * CREDIT
        assert await billing.balance(account) == (3 * CREDIT, 2 * CREDIT)
        entry = (await billing.entries(account))[0]
        assert entry.kind == billing_pb2.ENTRY_KIND_HOLD
        assert entry.amount_micros == -2 * CREDIT
        assert entry.balance_after_micros == 3 * CREDIT
        assert entry.reference == "generation-1"
        assert dict(entry.tags) == {"usage_type": "image"}

    async def test_hold_beyond_the_balance_fails_and_changes_nothing(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, CREDIT)

        status, error = await failure(billing.hold(account, 3 * CREDIT // 2))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert isinstance(error, InsufficientCredits)
        assert error.context == {"required": "1.5", "available": "1"}
        assert await billing.balance(account) == (CREDIT, 0)
        assert len(await billing.entries(account)) == 1

    async def test_hold_on_an_account_never_credited_is_insufficient(
        self, billing: BillingClient
    ) -> None:
        status, error = await failure(billing.hold(user_account(), 1))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert error.code == "insufficient_credits"
        assert error.context["available"] == "0"

    async def test_failed_hold_leaves_its_key_free_for_a_later_attempt(
        self, billing: BillingClient
    ) -> None:
        account = user_account()
        request = billing_pb2.HoldRequest(
            account=account, amount_micros=CREDIT, idempotency_key=new_key()
        )
        status, _ = await failure(billing.stub.Hold(request, metadata=billing.service))
        await billing.grant(account, CREDIT)

        reply = await billing.stub.Hold(request, metadata=billing.service)

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert reply.balance_after_micros == 0
        assert await billing.balance(account) == (0, CREDIT)

    async def test_fifty_concurrent_holds_against_room_for_ten_admit_exactly_ten(
        self, billing: BillingClient
    ) -> None:
        price = 3 * CREDIT
        account = await funded_account(billing, 10 * price + price // 2)

        outcomes = await asyncio.gather(
            *(billing.hold(account, price) for _ in range(50)),
            return_exceptions=True,
        )

        held = [o for o in outcomes if isinstance(o, billing_pb2.HoldResponse)]
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(held) == 10
        assert len(refused) == 40
        for error in refused:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert from_rpc_error(error).code == "insufficient_credits"
        balances = sorted(reply.balance_after_micros for reply in held)
        assert balances == [price // 2 + n * price for n in range(10)]
        assert await billing.balance(account) == (price // 2, 10 * price)
        assert all(e.balance_after_micros >= 0 for e in await billing.entries(account))

    async def test_hold_retry_storm_holds_once_with_identical_replies(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        request = billing_pb2.HoldRequest(
            account=account, amount_micros=CREDIT, idempotency_key=new_key()
        )

        replies = await _storm(
            lambda: billing.stub.Hold(request, metadata=billing.service)
        )

        assert _identical(replies)
        assert await billing.balance(account) == (4 * CREDIT, CREDIT)

    async def test_hold_key_reused_with_other_tags_is_refused(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        request = billing_pb2.HoldRequest(
            account=account,
            amount_micros=CREDIT,
            idempotency_key=new_key(),
            tags={"usage_type": "image"},
        )
        await billing.stub.Hold(request, metadata=billing.service)
        request.tags["usage_type"] = "video"

        status, error = await failure(
            billing.stub.Hold(request, metadata=billing.service)
        )

        assert status == grpc.StatusCode.ALREADY_EXISTS
        assert isinstance(error, IdempotencyKeyReused)


async def _capture(
    billing: BillingClient, hold_id: str, amount: int, key: str | None = None
) -> billing_pb2.CaptureResponse:
    return await billing.stub.Capture(
        billing_pb2.CaptureRequest(
            hold_id=hold_id, amount_micros=amount, idempotency_key=key or new_key()
        ),
        metadata=billing.service,
    )


async def _release(
    billing: BillingClient, hold_id: str, key: str | None = None
) -> billing_pb2.ReleaseResponse:
    return await billing.stub.Release(
        billing_pb2.ReleaseRequest(hold_id=hold_id, idempotency_key=key or new_key()),
        metadata=billing.service,
    )


class TestCapture:
    async def test_capturing_the_whole_hold_charges_it_and_returns_nothing(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, 2 * CREDIT)

        reply = await _capture(billing, hold.hold_id, 2 * CREDIT)

        assert (reply.captured_micros, reply.released_micros) == (2 * CREDIT, 0)
        assert reply.balance_after_micros == 3 * CREDIT
        assert await billing.balance(account) == (3 * CREDIT, 0)
        settlement = (await billing.entries(account))[0]
        assert settlement.kind == billing_pb2.ENTRY_KIND_CAPTURE
        assert settlement.amount_micros == 0

    async def test_partial_capture_returns_the_rest_to_the_balance(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, 2 * CREDIT)

        reply = await _capture(billing, hold.hold_id, CREDIT // 2)

        assert reply.captured_micros == CREDIT // 2
        assert reply.released_micros == 3 * CREDIT // 2
        assert reply.balance_after_micros == 9 * CREDIT // 2
        assert await billing.balance(account) == (9 * CREDIT // 2, 0)

    async def test_capturing_zero_returns_the_whole_hold(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, 2 * CREDIT)

        reply = await _capture(billing, hold.hold_id, 0)

        assert (reply.captured_micros, reply.released_micros) == (0, 2 * CREDIT)
        assert await billing.balance(account) == (5 * CREDIT, 0)

    async def test_capture_entry_carries_the_holds_reason_reference_and_tags(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(
            account,
            CREDIT,
            reason="Chat message",
            reference="message-7",
            tags={"workspace_id": "w-1"},
        )

        await _capture(billing, hold.hold_id, CREDIT // 4)

        settlement = (await billing.entries(account))[0]
        assert settlement.reason == "Chat message"
        assert settlement.reference == "message-7"
        assert dict(settlement.tags) == {"workspace_id": "w-1"}

    async def test_capturing_more_than_held_is_invalid_and_keeps_the_hold(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, CREDIT)

        status, error = await failure(_capture(billing, hold.hold_id, CREDIT + 1))

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert fields_of(error) == {"amount_micros"}
        assert await billing.balance(account) == (4 * CREDIT, CREDIT)
        assert (await _capture(billing, hold.hold_id, CREDIT)).captured_micros == CREDIT

    async def test_capture_retry_storm_settles_once_with_identical_replies(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, 2 * CREDIT)
        key = new_key("capture")

        replies = await _storm(lambda: _capture(billing, hold.hold_id, CREDIT, key))

        assert _identical(replies)
        assert await billing.balance(account) == (4 * CREDIT, 0)
        kinds = [e.kind for e in await billing.entries(account)]
        assert kinds.count(billing_pb2.ENTRY_KIND_CAPTURE) == 1

    async def test_capture_retried_after_settlement_returns_the_first_result(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, 2 * CREDIT)
        key = new_key("capture")
        first = await _capture(billing, hold.hold_id, CREDIT, key)
        await billing.grant(account, CREDIT)

        again = await _capture(billing, hold.hold_id, CREDIT, key)

        assert again == first

    async def test_capturing_a_captured_hold_with_a_new_key_is_a_failed_precondition(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, 2 * CREDIT)
        await _capture(billing, hold.hold_id, CREDIT)

        status, error = await failure(_capture(billing, hold.hold_id, CREDIT))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert isinstance(error, FailedPrecondition)
        assert error.code == "failed_precondition"
        assert "already captured" in error.message
        assert await billing.balance(account) == (4 * CREDIT, 0)

    async def test_capturing_a_released_hold_is_a_failed_precondition(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, 2 * CREDIT)
        await _release(billing, hold.hold_id)

        status, error = await failure(_capture(billing, hold.hold_id, CREDIT))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert "already released" in error.message
        assert await billing.balance(account) == (5 * CREDIT, 0)

    async def test_capturing_an_unknown_hold_is_not_found(
        self, billing: BillingClient
    ) -> None:
        status, error = await failure(
            _capture(billing, "6b1f3c2e-0000-4000-8000-000000000000", 0)
        )

        assert status == grpc.StatusCode.NOT_FOUND
        assert isinstance(error, NotFound)


class TestRelease:
    async def test_release_returns_the_whole_hold(self, billing: BillingClient) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, 2 * CREDIT, reference="generation-9")

        reply = await _release(billing, hold.hold_id)

        assert reply.released_micros == 2 * CREDIT
        assert reply.balance_after_micros == 5 * CREDIT
        assert await billing.balance(account) == (5 * CREDIT, 0)
        settlement = (await billing.entries(account))[0]
        assert settlement.kind == billing_pb2.ENTRY_KIND_RELEASE
        assert settlement.amount_micros == 2 * CREDIT
        assert settlement.reference == "generation-9"

    async def test_release_retry_storm_releases_once_with_identical_replies(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, 2 * CREDIT)
        key = new_key("release")

        replies = await _storm(lambda: _release(billing, hold.hold_id, key))

        assert _identical(replies)
        assert await billing.balance(account) == (5 * CREDIT, 0)

    async def test_releasing_a_captured_hold_is_a_failed_precondition(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, 2 * CREDIT)
        await _capture(billing, hold.hold_id, 2 * CREDIT)

        status, error = await failure(_release(billing, hold.hold_id))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert "already captured" in error.message
        assert await billing.balance(account) == (3 * CREDIT, 0)

    async def test_capture_and_release_racing_settle_the_hold_once(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5 * CREDIT)
        hold = await billing.hold(account, 2 * CREDIT)

        outcomes = await asyncio.gather(
            _capture(billing, hold.hold_id, 2 * CREDIT),
            _release(billing, hold.hold_id),
            return_exceptions=True,
        )

        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(refused) == 1
        assert refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
        balance, held = await billing.balance(account)
        assert held == 0
        assert balance in (3 * CREDIT, 5 * CREDIT)


class TestRefund:
    async def test_refund_credits_the_account_with_its_reference(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, CREDIT)

        reply = await billing.stub.Refund(
            billing_pb2.RefundRequest(
                account=account,
                amount_micros=CREDIT // 2,
                idempotency_key=new_key(),
                reason="Generation failed",
                reference="generation-3",
            ),
            metadata=billing.service,
        )

        assert reply.entry.kind == billing_pb2.ENTRY_KIND_REFUND
        assert reply.entry.reference == "generation-3"
        assert await billing.balance(account) == (3 * CREDIT // 2, 0)

    async def test_refund_retry_storm_refunds_once(
        self, billing: BillingClient
    ) -> None:
        account = user_account()
        request = billing_pb2.RefundRequest(
            account=account, amount_micros=CREDIT, idempotency_key=new_key()
        )

        replies = await _storm(
            lambda: billing.stub.Refund(request, metadata=billing.service)
        )

        assert _identical(replies)
        assert await billing.balance(account) == (CREDIT, 0)


async def _transfer(
    billing: BillingClient,
    source: billing_pb2.AccountRef,
    target: billing_pb2.AccountRef,
    amount: int,
) -> billing_pb2.TransferResponse:
    return await billing.stub.Transfer(
        billing_pb2.TransferRequest(
            from_account=source,
            to_account=target,
            amount_micros=amount,
            idempotency_key=new_key("transfer"),
            reason="Top up the pool",
        ),
        metadata=billing.service,
    )


class TestTransfer:
    async def test_transfer_moves_credits_and_writes_an_entry_on_each_side(
        self, billing: BillingClient
    ) -> None:
        user = await funded_account(billing, 5 * CREDIT)
        pool = workspace_account()

        reply = await _transfer(billing, user, pool, 2 * CREDIT)

        assert reply.from_balance_after_micros == 3 * CREDIT
        assert reply.to_balance_after_micros == 2 * CREDIT
        assert await billing.balance(user) == (3 * CREDIT, 0)
        assert await billing.balance(pool) == (2 * CREDIT, 0)
        [out] = (await billing.entries(user))[:1]
        [into] = await billing.entries(pool)
        assert (out.kind, out.amount_micros) == (
            billing_pb2.ENTRY_KIND_TRANSFER,
            -2 * CREDIT,
        )
        assert (into.kind, into.amount_micros) == (
            billing_pb2.ENTRY_KIND_TRANSFER,
            2 * CREDIT,
        )
        assert out.reference == f"workspace:{pool.owner_id}"
        assert into.reference == f"user:{user.owner_id}"

    async def test_transfer_beyond_the_balance_changes_neither_side(
        self, billing: BillingClient
    ) -> None:
        user = await funded_account(billing, CREDIT)
        pool = workspace_account()
        await billing.grant(pool, CREDIT)

        status, error = await failure(_transfer(billing, user, pool, 2 * CREDIT))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert isinstance(error, InsufficientCredits)
        assert await billing.balance(user) == (CREDIT, 0)
        assert await billing.balance(pool) == (CREDIT, 0)
        assert len(await billing.entries(pool)) == 1

    async def test_concurrent_transfers_in_both_directions_do_not_deadlock(
        self, billing: BillingClient
    ) -> None:
        user = await funded_account(billing, 20 * CREDIT)
        pool = workspace_account()
        await billing.grant(pool, 20 * CREDIT)

        outcomes = await asyncio.gather(
            *(_transfer(billing, user, pool, CREDIT) for _ in range(15)),
            *(_transfer(billing, pool, user, CREDIT) for _ in range(15)),
            return_exceptions=True,
        )

        assert [o for o in outcomes if isinstance(o, BaseException)] == []
        assert await billing.balance(user) == (20 * CREDIT, 0)
        assert await billing.balance(pool) == (20 * CREDIT, 0)

    async def test_transfer_to_the_same_account_is_invalid(
        self, billing: BillingClient
    ) -> None:
        user = await funded_account(billing, CREDIT)

        status, error = await failure(_transfer(billing, user, user, CREDIT))

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert fields_of(error) == {"to_account"}


async def _adjust(
    billing: BillingClient,
    account: billing_pb2.AccountRef,
    delta: int,
    reason: str = "Support correction",
    actor: str = "admin-1",
) -> billing_pb2.AdjustResponse:
    return await billing.stub.Adjust(
        billing_pb2.AdjustRequest(
            account=account,
            delta_micros=delta,
            idempotency_key=new_key("adjust"),
            reason=reason,
            actor=actor,
        ),
        metadata=billing.service,
    )


class TestAdjust:
    async def test_positive_adjustment_credits_and_names_the_actor(
        self, billing: BillingClient
    ) -> None:
        account = user_account()

        reply = await _adjust(billing, account, 2 * CREDIT)

        assert reply.entry.kind == billing_pb2.ENTRY_KIND_ADJUSTMENT
        assert reply.entry.amount_micros == 2 * CREDIT
        assert reply.entry.reason == "Support correction"
        assert dict(reply.entry.tags) == {"actor": "admin-1"}
        assert await billing.balance(account) == (2 * CREDIT, 0)

    async def test_negative_adjustment_debits(self, billing: BillingClient) -> None:
        account = await funded_account(billing, 3 * CREDIT)

        reply = await _adjust(billing, account, -CREDIT)

        assert reply.entry.amount_micros == -CREDIT
        assert await billing.balance(account) == (2 * CREDIT, 0)

    async def test_adjustment_below_zero_is_insufficient_credits(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, CREDIT)

        status, error = await failure(_adjust(billing, account, -2 * CREDIT))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert error.context == {"required": "2", "available": "1"}
        assert await billing.balance(account) == (CREDIT, 0)

    async def test_adjustment_needs_a_reason_an_actor_and_a_delta(
        self, billing: BillingClient
    ) -> None:
        status, error = await failure(
            _adjust(billing, user_account(), 0, reason=" ", actor="")
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert fields_of(error) == {"delta_micros", "reason", "actor"}


def _grant(**fields: Any) -> Callable[[BillingClient], Awaitable[Any]]:
    def call(billing: BillingClient) -> Awaitable[Any]:
        request = billing_pb2.GrantRequest(
            account=user_account(),
            amount_micros=CREDIT,
            idempotency_key=new_key(),
        )
        for name, value in fields.items():
            if name == "account":
                request.account.CopyFrom(value)
            else:
                setattr(request, name, value)
        return billing.stub.Grant(request, metadata=billing.service)

    return call


def _hold(**fields: Any) -> Callable[[BillingClient], Awaitable[Any]]:
    def call(billing: BillingClient) -> Awaitable[Any]:
        request = billing_pb2.HoldRequest(
            account=user_account(), amount_micros=CREDIT, idempotency_key=new_key()
        )
        for name, value in fields.items():
            if name == "tags":
                request.tags.update(value)
            else:
                setattr(request, name, value)
        return billing.stub.Hold(request, metadata=billing.service)

    return call


def _refund(amount: int) -> Callable[[BillingClient], Awaitable[Any]]:
    def call(billing: BillingClient) -> Awaitable[Any]:
        return billing.stub.Refund(
            billing_pb2.RefundRequest(
                account=user_account(), amount_micros=amount, idempotency_key=new_key()
            ),
            metadata=billing.service,
        )

    return call


def _capture_of(hold_id: str, amount: int) -> Callable[[BillingClient], Awaitable[Any]]:
    def call(billing: BillingClient) -> Awaitable[Any]:
        return _capture(billing, hold_id, amount)

    return call


def _transfer_of(amount: int) -> Callable[[BillingClient], Awaitable[Any]]:
    def call(billing: BillingClient) -> Awaitable[Any]:
        return _transfer(billing, user_account(), workspace_account(), amount)

    return call


HOLD_ID = "6b1f3c2e-0000-4000-8000-000000000001"


class TestValidation:
    @pytest.mark.parametrize(
        ("call", "field"),
        [
            pytest.param(_grant(amount_micros=-1), "amount_micros", id="negative"),
            pytest.param(_grant(amount_micros=0), "amount_micros", id="grant-zero"),
            pytest.param(_hold(amount_micros=0), "amount_micros", id="hold-zero"),
            pytest.param(_refund(0), "amount_micros", id="refund-zero"),
            pytest.param(_transfer_of(0), "amount_micros", id="transfer-zero"),
            pytest.param(
                _grant(amount_micros=10**16), "amount_micros", id="ten-to-the-16"
            ),
            pytest.param(
                _hold(amount_micros=10**15 + 1), "amount_micros", id="hold-too-big"
            ),
            pytest.param(_capture_of(HOLD_ID, -1), "amount_micros", id="capture-neg"),
            pytest.param(
                _grant(
                    account=billing_pb2.AccountRef(
                        owner_type=billing_pb2.OWNER_TYPE_USER, owner_id="12345"
                    )
                ),
                "account.owner_id",
                id="bad-uuid",
            ),
            pytest.param(
                _grant(
                    account=billing_pb2.AccountRef(
                        owner_id="6b1f3c2e-0000-4000-8000-000000000002"
                    )
                ),
                "account.owner_type",
                id="no-owner-type",
            ),
            pytest.param(_grant(idempotency_key=""), "idempotency_key", id="no-key"),
            pytest.param(
                _grant(idempotency_key="k" * 256), "idempotency_key", id="long-key"
            ),
            pytest.param(_capture_of("not-a-hold", 0), "hold_id", id="bad-hold-id"),
            pytest.param(_hold(reference="r" * 256), "reference", id="long-reference"),
            pytest.param(
                _grant(idempotency_key="k\x00"), "idempotency_key", id="nul-key"
            ),
            pytest.param(_grant(reason="a\x00b"), "reason", id="nul-reason"),
            pytest.param(_hold(tags={"a": "b\x00"}), "tags", id="nul-tag"),
        ],
    )
    async def test_bad_input_is_invalid_argument_naming_the_field(
        self,
        billing: BillingClient,
        call: Callable[[BillingClient], Awaitable[Any]],
        field: str,
    ) -> None:
        status, error = await failure(call(billing))

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error, InvalidArgument)
        assert fields_of(error) == {field}

    async def test_every_violation_of_a_request_is_reported(
        self, billing: BillingClient
    ) -> None:
        status, error = await failure(
            billing.stub.Hold(
                billing_pb2.HoldRequest(
                    account=billing_pb2.AccountRef(owner_id="x"),
                    amount_micros=-5,
                    tags={"": "empty name"},
                ),
                metadata=billing.service,
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert fields_of(error) == {
            "account.owner_type",
            "account.owner_id",
            "amount_micros",
            "idempotency_key",
            "tags",
        }


class TestListTransactions:
    async def test_entries_come_newest_first_a_page_at_a_time(
        self, billing: BillingClient
    ) -> None:
        account = user_account()
        granted = [(await billing.grant(account, n * CREDIT)).entry for n in (1, 2, 3)]
        pages: list[list[str]] = []
        token = ""

        while True:
            reply = await billing.stub.ListTransactions(
                billing_pb2.ListTransactionsRequest(
                    account=account, page_size=2, page_token=token
                ),
                metadata=billing.service,
            )
            pages.append([entry.id for entry in reply.entries])
            token = reply.next_page_token
            if not token:
                break

        assert pages == [[granted[2].id, granted[1].id], [granted[0].id]]

    async def test_listed_entry_equals_the_entry_the_grant_returned(
        self, billing: BillingClient
    ) -> None:
        account = user_account()
        granted = await billing.grant(account, CREDIT, reason="Welcome")

        assert await billing.entries(account) == [granted.entry]

    async def test_account_never_used_has_no_entries(
        self, billing: BillingClient
    ) -> None:
        reply = await billing.stub.ListTransactions(
            billing_pb2.ListTransactionsRequest(account=user_account()),
            metadata=billing.service,
        )

        assert list(reply.entries) == []
        assert reply.next_page_token == ""

    @pytest.mark.parametrize(
        ("page_size", "page_token", "field"),
        [(-1, "", "page_size"), (10, "abc", "page_token")],
    )
    async def test_bad_paging_is_invalid_argument(
        self, billing: BillingClient, page_size: int, page_token: str, field: str
    ) -> None:
        status, error = await failure(
            billing.stub.ListTransactions(
                billing_pb2.ListTransactionsRequest(
                    account=user_account(), page_size=page_size, page_token=page_token
                ),
                metadata=billing.service,
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert fields_of(error) == {field}
