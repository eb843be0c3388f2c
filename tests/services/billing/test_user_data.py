"""DeleteUserData for a deleted user: the holds still open on their own
account are released; the ledger, an append-only financial record, stays."""

from __future__ import annotations

import uuid

import grpc
from omnihub.billing.v1 import billing_pb2

from tests.services.billing.factories import (
    BillingClient,
    failure,
    funded_account,
    new_key,
)


async def delete_data(
    billing: BillingClient, user_id: str
) -> billing_pb2.DeleteUserDataResponse:
    reply: billing_pb2.DeleteUserDataResponse = await billing.stub.DeleteUserData(
        billing_pb2.DeleteUserDataRequest(user_id=user_id), metadata=billing.service
    )
    return reply


class TestDeleteUserData:
    async def test_open_holds_are_released_and_the_ledger_kept(
        self, billing: BillingClient
    ) -> None:
        account = await funded_account(billing, 5_000_000)
        await billing.hold(account, 2_000_000, reason="A video")
        entries = await billing.entries(account)

        released = await delete_data(billing, account.owner_id)

        assert (released.released_holds, released.released_micros) == (1, 2_000_000)
        assert await billing.balance(account) == (5_000_000, 0)
        after = await billing.entries(account)
        assert after[1:] == entries
        assert after[0].kind == billing_pb2.ENTRY_KIND_RELEASE

    async def test_a_settled_hold_is_left_alone(self, billing: BillingClient) -> None:
        account = await funded_account(billing, 5_000_000)
        hold = await billing.hold(account, 1_000_000)
        await billing.stub.Capture(
            billing_pb2.CaptureRequest(
                hold_id=hold.hold_id, amount_micros=1_000_000, idempotency_key=new_key()
            ),
            metadata=billing.service,
        )

        released = await delete_data(billing, account.owner_id)

        assert released.released_holds == 0
        assert await billing.balance(account) == (4_000_000, 0)

    async def test_a_second_run_releases_nothing(self, billing: BillingClient) -> None:
        account = await funded_account(billing, 3_000_000)
        await billing.hold(account, 1_000_000)
        await delete_data(billing, account.owner_id)

        again = await delete_data(billing, account.owner_id)

        assert (again.released_holds, again.released_micros) == (0, 0)

    async def test_a_user_never_seen_has_nothing_to_release(
        self, billing: BillingClient
    ) -> None:
        released = await delete_data(billing, str(uuid.uuid4()))

        assert released == billing_pb2.DeleteUserDataResponse()

    async def test_a_user_alone_may_not_ask(self, billing: BillingClient) -> None:
        account = await funded_account(billing, 1)

        code, _ = await failure(
            billing.stub.DeleteUserData(
                billing_pb2.DeleteUserDataRequest(user_id=account.owner_id),
                metadata=billing.user(account.owner_id),
            )
        )

        assert code is grpc.StatusCode.PERMISSION_DENIED
