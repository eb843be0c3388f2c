"""services/billing/rpc.py over real gRPC: who may call what, and how
replies are translated."""

from __future__ import annotations

import uuid

import grpc
from omnihub.billing.v1 import billing_pb2

from libs.errors import NotFound, Unauthenticated
from libs.grpc.identity import AUTHORIZATION_KEY
from tests.services.billing.factories import (
    CREDIT,
    BillingClient,
    failure,
    funded_account,
    new_key,
    user_account,
    workspace_account,
)


def _balance_request(account: billing_pb2.AccountRef) -> billing_pb2.GetBalanceRequest:
    return billing_pb2.GetBalanceRequest(account=account)


class TestGetBalance:
    async def test_user_reads_their_own_balance(self, billing: BillingClient) -> None:
        account = await funded_account(billing, 3 * CREDIT)
        await billing.hold(account, CREDIT)

        reply = await billing.stub.GetBalance(
            _balance_request(account), metadata=billing.user(account.owner_id)
        )

        assert (reply.balance_micros, reply.held_micros) == (2 * CREDIT, CREDIT)

    async def test_account_never_used_reads_as_zero(
        self, billing: BillingClient
    ) -> None:
        account = user_account()

        reply = await billing.stub.GetBalance(
            _balance_request(account), metadata=billing.user(account.owner_id)
        )

        assert (reply.balance_micros, reply.held_micros) == (0, 0)

    async def test_user_reading_another_users_balance_is_not_found(
        self, billing: BillingClient
    ) -> None:
        victim = await funded_account(billing, CREDIT)

        status, error = await failure(
            billing.stub.GetBalance(
                _balance_request(victim), metadata=billing.user(str(uuid.uuid4()))
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND
        assert isinstance(error, NotFound)

    async def test_user_reading_a_workspace_pool_is_not_found(
        self, billing: BillingClient
    ) -> None:
        pool = workspace_account()
        await billing.grant(pool, CREDIT)

        status, _ = await failure(
            billing.stub.GetBalance(
                _balance_request(pool), metadata=billing.user(pool.owner_id)
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND

    async def test_user_token_forwarded_by_a_service_still_limits_to_own_account(
        self, billing: BillingClient
    ) -> None:
        victim = await funded_account(billing, CREDIT)
        forwarded = (
            *billing.service,
            (AUTHORIZATION_KEY, f"Bearer {billing.user_token(str(uuid.uuid4()))}"),
        )

        status, _ = await failure(
            billing.stub.GetBalance(_balance_request(victim), metadata=forwarded)
        )

        assert status == grpc.StatusCode.NOT_FOUND

    async def test_service_reads_any_account(self, billing: BillingClient) -> None:
        pool = workspace_account()
        await billing.grant(pool, 4 * CREDIT)

        reply = await billing.stub.GetBalance(
            _balance_request(pool), metadata=billing.service
        )

        assert reply.balance_micros == 4 * CREDIT

    async def test_anonymous_caller_is_unauthenticated(
        self, billing: BillingClient
    ) -> None:
        status, error = await failure(
            billing.stub.GetBalance(_balance_request(user_account()))
        )

        assert status == grpc.StatusCode.UNAUTHENTICATED
        assert isinstance(error, Unauthenticated)

    async def test_forged_user_token_is_refused_even_beside_a_service_token(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, CREDIT)
        forged = (
            *billing.service,
            (AUTHORIZATION_KEY, "Bearer not.a.token"),
        )

        status, error = await failure(
            billing.stub.GetBalance(_balance_request(account), metadata=forged)
        )

        assert status == grpc.StatusCode.UNAUTHENTICATED
        assert error.code == "invalid_token"


class TestListTransactions:
    async def test_user_lists_their_own_entries(self, billing: BillingClient) -> None:
        account = await funded_account(billing, CREDIT)

        reply = await billing.stub.ListTransactions(
            billing_pb2.ListTransactionsRequest(account=account),
            metadata=billing.user(account.owner_id),
        )

        assert [entry.amount_micros for entry in reply.entries] == [CREDIT]

    async def test_user_listing_another_users_entries_is_not_found(
        self, billing: BillingClient
    ) -> None:
        victim = await funded_account(billing, CREDIT)

        status, _ = await failure(
            billing.stub.ListTransactions(
                billing_pb2.ListTransactionsRequest(account=victim),
                metadata=billing.user(str(uuid.uuid4())),
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND


class TestMoneyMovingRpcs:
    async def test_user_may_not_grant_themselves_credits(
        self, billing: BillingClient
    ) -> None:
        account = user_account()

        status, _ = await failure(
            billing.stub.Grant(
                billing_pb2.GrantRequest(
                    account=account, amount_micros=CREDIT, idempotency_key=new_key()
                ),
                metadata=billing.user(account.owner_id),
            )
        )

        assert status == grpc.StatusCode.PERMISSION_DENIED
        assert await billing.balance(account) == (0, 0)

    async def test_anonymous_caller_may_not_hold(self, billing: BillingClient) -> None:
        account = await funded_account(billing, CREDIT)

        status, _ = await failure(
            billing.stub.Hold(
                billing_pb2.HoldRequest(
                    account=account, amount_micros=CREDIT, idempotency_key=new_key()
                )
            )
        )

        assert status == grpc.StatusCode.UNAUTHENTICATED
        assert await billing.balance(account) == (CREDIT, 0)

    async def test_grant_reply_carries_the_whole_ledger_entry(
        self, billing: BillingClient
    ) -> None:
        pool = workspace_account()

        reply = await billing.stub.Grant(
            billing_pb2.GrantRequest(
                account=pool,
                amount_micros=1_500_000,
                idempotency_key=new_key(),
                reason="Launch promotion",
            ),
            metadata=billing.service,
        )

        entry = reply.entry
        assert int(entry.id) > 0
        assert entry.account.owner_type == billing_pb2.OWNER_TYPE_WORKSPACE
        assert entry.account.owner_id == pool.owner_id
        assert entry.kind == billing_pb2.ENTRY_KIND_GRANT
        assert (entry.amount_micros, entry.balance_after_micros) == (1_500_000,) * 2
        assert entry.reason == "Launch promotion"
        assert entry.HasField("created_at")
