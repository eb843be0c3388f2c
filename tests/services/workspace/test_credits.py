"""A workspace's credits over real gRPC: the pool and the allocations are
billing accounts, every move is a billing Transfer, and no credit is made or
lost, also when moves race each other, members leave or the workspace is
deleted. (After the module the billing books must balance: conftest.)"""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from omnihub.billing.v1 import billing_pb2
from omnihub.workspace.v1 import workspace_pb2

from tests.services.workspace.factories import (
    CREDIT,
    WorkspaceApi,
    allocation_account,
    build_team,
    failure,
    new_key,
    new_user,
    pool_account,
    user_account,
)


async def _individual_team(api: WorkspaceApi, pool_credits: int) -> tuple[str, str]:
    """A workspace in individual mode with `pool_credits` in its pool;
    returns its id and its owner."""
    owner = new_user()
    workspace_id = await api.create_workspace(owner)
    await api.update(workspace_id, owner, credit_mode="individual")
    if pool_credits:
        await api.fund(owner, pool_credits)
        await api.add_credits(workspace_id, owner, pool_credits)
    return workspace_id, owner


class TestAddCredits:
    async def test_credits_move_from_the_owner_to_the_pool(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        await api.fund(owner, 10)

        reply = await api.add_credits(workspace_id, owner, 4)

        assert (reply.pool_micros, reply.personal_micros) == (4 * CREDIT, 6 * CREDIT)
        assert await api.balance(pool_account(workspace_id)) == 4 * CREDIT
        assert await api.balance(user_account(owner)) == 6 * CREDIT

    async def test_the_move_is_a_tagged_ledger_transfer(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        await api.fund(owner, 10)

        await api.add_credits(workspace_id, owner, 4)

        entries = await api.billing.ListTransactions(
            billing_pb2.ListTransactionsRequest(account=pool_account(workspace_id)),
            metadata=api.service,
        )
        [entry] = entries.entries
        assert entry.kind == billing_pb2.ENTRY_KIND_TRANSFER
        assert entry.amount_micros == 4 * CREDIT
        assert entry.tags["workspace_id"] == workspace_id

    async def test_a_retry_with_the_same_request_id_moves_once(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        await api.fund(owner, 10)
        request_id = new_key()

        await asyncio.gather(
            *(api.add_credits(workspace_id, owner, 3, request_id) for _ in range(3))
        )

        assert await api.balance(pool_account(workspace_id)) == 3 * CREDIT
        assert await api.balance(user_account(owner)) == 7 * CREDIT

    async def test_a_request_id_reused_for_another_amount_is_refused(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        await api.fund(owner, 10)
        request_id = new_key()
        await api.add_credits(workspace_id, owner, 3, request_id)

        status, error = await failure(
            api.add_credits(workspace_id, owner, 4, request_id)
        )

        assert status == grpc.StatusCode.ALREADY_EXISTS
        assert error.code == "idempotency_key_reused"
        assert await api.balance(pool_account(workspace_id)) == 3 * CREDIT

    async def test_more_than_the_owner_has_is_refused_and_moves_nothing(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        await api.fund(owner, 2)

        status, error = await failure(api.add_credits(workspace_id, owner, 3))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert error.code == "insufficient_credits"
        assert await api.balance(user_account(owner)) == 2 * CREDIT

    @pytest.mark.parametrize("amount", [0, -1, 10**16])
    async def test_amount_out_of_range_is_invalid(
        self, api: WorkspaceApi, amount: int
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)

        status, error = await failure(
            api.stub.AddCredits(
                workspace_pb2.AddCreditsRequest(
                    workspace_id=workspace_id,
                    amount_micros=amount,
                    request_id=new_key(),
                ),
                metadata=api.user(owner),
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == ["amount_micros"]


class TestAllocateCredits:
    async def test_allocation_moves_pool_credits_to_the_member(
        self, api: WorkspaceApi
    ) -> None:
        workspace_id, owner = await _individual_team(api, 10)
        member = new_user()
        await api.join(workspace_id, owner, member)

        reply = await api.allocate(workspace_id, owner, member, 4)

        membership = await api.membership_id(workspace_id, owner, member)
        assert (reply.pool_micros, reply.allocated_micros) == (6 * CREDIT, 4 * CREDIT)
        assert await api.balance(allocation_account(membership)) == 4 * CREDIT
        seen = await api.workspace(workspace_id, member)
        assert (seen.pool_micros, seen.allocated_micros) == (6 * CREDIT, 4 * CREDIT)

    async def test_member_list_shows_each_allocation(self, api: WorkspaceApi) -> None:
        workspace_id, owner = await _individual_team(api, 10)
        funded, unfunded = new_user(), new_user()
        for member in (funded, unfunded):
            await api.join(workspace_id, owner, member)
        await api.allocate(workspace_id, owner, funded, 3)

        members = await api.members(workspace_id, owner)

        assert [(m.user_id, m.allocated_micros) for m in members] == [
            (owner, 0),
            (funded, 3 * CREDIT),
            (unfunded, 0),
        ]

    async def test_a_member_cannot_read_their_allocation_account_in_billing(
        self, api: WorkspaceApi
    ) -> None:
        workspace_id, owner = await _individual_team(api, 5)
        member = new_user()
        await api.join(workspace_id, owner, member)
        await api.allocate(workspace_id, owner, member, 2)
        membership = await api.membership_id(workspace_id, owner, member)

        status, _ = await failure(
            api.billing.GetBalance(
                billing_pb2.GetBalanceRequest(account=allocation_account(membership)),
                metadata=api.user(member),
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND

    async def test_allocation_in_shared_mode_is_refused(
        self, api: WorkspaceApi
    ) -> None:
        owner, member = new_user(), new_user()
        workspace_id = await api.create_workspace(owner)
        await api.join(workspace_id, owner, member)
        await api.fund(owner, 5)
        await api.add_credits(workspace_id, owner, 5)

        status, _ = await failure(api.allocate(workspace_id, owner, member, 1))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert await api.balance(pool_account(workspace_id)) == 5 * CREDIT

    async def test_more_than_the_pool_holds_is_refused(self, api: WorkspaceApi) -> None:
        workspace_id, owner = await _individual_team(api, 3)
        member = new_user()
        await api.join(workspace_id, owner, member)

        status, error = await failure(api.allocate(workspace_id, owner, member, 4))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert error.code == "insufficient_credits"
        assert error.message.startswith("The workspace pool has 3 credits")

    async def test_allocation_to_a_non_member_is_not_found(
        self, api: WorkspaceApi
    ) -> None:
        workspace_id, owner = await _individual_team(api, 3)

        status, _ = await failure(api.allocate(workspace_id, owner, new_user(), 1))

        assert status == grpc.StatusCode.NOT_FOUND
        assert await api.balance(pool_account(workspace_id)) == 3 * CREDIT


class TestReturningCredits:
    async def test_removing_a_member_returns_their_allocation_to_the_pool(
        self, api: WorkspaceApi
    ) -> None:
        workspace_id, owner = await _individual_team(api, 10)
        member = new_user()
        await api.join(workspace_id, owner, member)
        await api.allocate(workspace_id, owner, member, 4)
        membership = await api.membership_id(workspace_id, owner, member)

        reply = await api.stub.RemoveMember(
            workspace_pb2.RemoveMemberRequest(
                workspace_id=workspace_id, user_id=member
            ),
            metadata=api.user(owner),
        )

        assert reply.returned_micros == 4 * CREDIT
        assert await api.balance(pool_account(workspace_id)) == 10 * CREDIT
        assert await api.balance(allocation_account(membership)) == 0

    async def test_leaving_returns_the_allocation_to_the_pool(
        self, api: WorkspaceApi
    ) -> None:
        workspace_id, owner = await _individual_team(api, 10)
        member = new_user()
        await api.join(workspace_id, owner, member)
        await api.allocate(workspace_id, owner, member, 4)

        reply = await api.stub.LeaveWorkspace(
            workspace_pb2.LeaveWorkspaceRequest(workspace_id=workspace_id),
            metadata=api.user(member),
        )

        assert reply.returned_micros == 4 * CREDIT
        assert await api.balance(pool_account(workspace_id)) == 10 * CREDIT

    async def test_deleting_a_workspace_returns_pool_and_allocations_to_the_owner(
        self, api: WorkspaceApi
    ) -> None:
        workspace_id, owner = await _individual_team(api, 10)
        members = [new_user(), new_user()]
        for member in members:
            await api.join(workspace_id, owner, member)
            await api.allocate(workspace_id, owner, member, 3)

        reply = await api.stub.DeleteWorkspace(
            workspace_pb2.DeleteWorkspaceRequest(workspace_id=workspace_id),
            metadata=api.user(owner),
        )

        assert reply.returned_micros == 10 * CREDIT
        assert await api.balance(user_account(owner)) == 10 * CREDIT
        assert await api.balance(pool_account(workspace_id)) == 0
        status, _ = await failure(api.workspace(workspace_id, owner))
        assert status == grpc.StatusCode.NOT_FOUND

    async def test_deleting_while_work_holds_pool_credits_is_refused(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        await api.fund(owner, 5)
        await api.add_credits(workspace_id, owner, 5)
        await api.billing.Hold(
            billing_pb2.HoldRequest(
                account=pool_account(workspace_id),
                amount_micros=CREDIT,
                idempotency_key=new_key(),
            ),
            metadata=api.service,
        )

        status, _ = await failure(
            api.stub.DeleteWorkspace(
                workspace_pb2.DeleteWorkspaceRequest(workspace_id=workspace_id),
                metadata=api.user(owner),
            )
        )

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert (await api.workspace(workspace_id, owner)).pool_micros == 4 * CREDIT


class TestConcurrentMoves:
    async def test_racing_adds_allocations_and_removals_lose_no_credit(
        self, api: WorkspaceApi
    ) -> None:
        workspace_id, owner = await _individual_team(api, 0)
        await api.fund(owner, 60)
        members = [new_user() for _ in range(4)]
        for member in members:
            await api.join(workspace_id, owner, member)
        memberships = [
            await api.membership_id(workspace_id, owner, member) for member in members
        ]
        removed = members[:2]
        rng = random.Random(4)
        operations = [api.add_credits(workspace_id, owner, 5) for _ in range(12)]
        operations += [
            api.allocate(workspace_id, owner, rng.choice(members), 2) for _ in range(16)
        ]
        operations += [
            api.stub.RemoveMember(
                workspace_pb2.RemoveMemberRequest(
                    workspace_id=workspace_id, user_id=member
                ),
                metadata=api.user(owner),
            )
            for member in removed
        ]
        rng.shuffle(operations)

        outcomes = await asyncio.gather(*operations, return_exceptions=True)

        refusals = {o.code() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)}
        assert refusals <= {
            grpc.StatusCode.NOT_FOUND,  # allocation to a member already removed
            grpc.StatusCode.FAILED_PRECONDITION,  # allocation beyond the pool
        }
        balances = [
            await api.balance(account)
            for account in (
                user_account(owner),
                pool_account(workspace_id),
                *(allocation_account(m) for m in memberships),
            )
        ]
        assert sum(balances) == 60 * CREDIT
        assert min(balances) >= 0
        assert balances[2:4] == [0, 0]  # removed members keep nothing


class TestResolvePayer:
    async def _resolve(
        self, api: WorkspaceApi, workspace_id: str, user: str, credits: int
    ) -> workspace_pb2.ResolvePayerResponse:
        return await api.stub.ResolvePayer(
            workspace_pb2.ResolvePayerRequest(
                workspace_id=workspace_id, user_id=user, amount_micros=credits * CREDIT
            ),
            metadata=api.service,
        )

    async def test_work_outside_workspaces_is_paid_from_own_credits(
        self, api: WorkspaceApi
    ) -> None:
        user = new_user()
        await api.fund(user, 2)

        reply = await self._resolve(api, "", user, 1)

        assert [(p.source, p.balance_micros) for p in reply.payers] == [
            ("personal", 2 * CREDIT)
        ]
        assert (reply.covered, reply.covering_index) == (True, 0)
        assert dict(reply.tags) == {}

    async def test_shared_mode_pays_from_the_pool_first(
        self, api: WorkspaceApi
    ) -> None:
        team = await build_team(api)
        await api.fund(team.owner, 5)
        await api.add_credits(team.workspace_id, team.owner, 5)

        reply = await self._resolve(api, team.workspace_id, team.member, 3)

        assert [p.source for p in reply.payers] == [
            "workspace",
            "allocated",
            "personal",
        ]
        assert reply.payers[0].account == pool_account(team.workspace_id)
        assert (reply.covered, reply.covering_index) == (True, 0)
        assert dict(reply.tags) == {
            "workspace_id": team.workspace_id,
            "member_id": team.member,
        }

    async def test_shared_mode_falls_back_to_own_credits(
        self, api: WorkspaceApi
    ) -> None:
        team = await build_team(api)
        await api.fund(team.member, 4)

        reply = await self._resolve(api, team.workspace_id, team.member, 3)

        assert (reply.covered, reply.covering_index) == (True, 2)
        assert reply.payers[2].account == user_account(team.member)

    async def test_individual_mode_pays_from_the_allocation_first(
        self, api: WorkspaceApi
    ) -> None:
        workspace_id, owner = await _individual_team(api, 5)
        member = new_user()
        await api.join(workspace_id, owner, member)
        await api.allocate(workspace_id, owner, member, 2)

        reply = await self._resolve(api, workspace_id, member, 2)

        membership = await api.membership_id(workspace_id, owner, member)
        assert [p.source for p in reply.payers] == ["allocated", "personal"]
        assert reply.payers[0].account == allocation_account(membership)
        assert (reply.covered, reply.covering_index) == (True, 0)

    async def test_nobody_covering_the_amount_is_reported(
        self, api: WorkspaceApi
    ) -> None:
        team = await build_team(api)

        reply = await self._resolve(api, team.workspace_id, team.member, 1)

        assert not reply.covered

    async def test_personal_workspace_pays_from_own_credits(
        self, api: WorkspaceApi
    ) -> None:
        user, _ = await api.registered_user()
        listed = await api.stub.ListWorkspaces(
            workspace_pb2.ListWorkspacesRequest(), metadata=api.user(user)
        )

        reply = await self._resolve(api, listed.workspaces[0].id, user, 1)

        assert [p.source for p in reply.payers] == ["personal"]

    async def test_outsider_is_not_found(self, api: WorkspaceApi) -> None:
        team = await build_team(api)

        status, _ = await failure(
            self._resolve(api, team.workspace_id, team.outsider, 1)
        )

        assert status == grpc.StatusCode.NOT_FOUND


class TestUsage:
    async def test_captured_work_is_summed_by_type_and_by_member(
        self, api: WorkspaceApi
    ) -> None:
        team = await build_team(api)
        await api.fund(team.owner, 20)
        await api.add_credits(team.workspace_id, team.owner, 20)
        pool = pool_account(team.workspace_id)
        tags = {"workspace_id": team.workspace_id}
        await api.charge(pool, 3, **tags, member_id=team.member, usage_type="image")
        await api.charge(pool, 6, **tags, member_id=team.member, usage_type="video")
        await api.charge(pool, 2, **tags, member_id=team.admin, usage_type="image")
        await api.fund(team.member, 1)
        await api.charge(user_account(team.member), 1, usage_type="image")

        reply = await api.stub.GetUsage(
            workspace_pb2.GetUsageRequest(workspace_id=team.workspace_id),
            metadata=api.user(team.member),
        )

        assert reply.pool_micros == 9 * CREDIT
        assert reply.total_micros == 11 * CREDIT
        assert [(t.type, t.count, t.total_micros) for t in reply.by_type] == [
            ("video", 1, 6 * CREDIT),
            ("image", 2, 5 * CREDIT),
        ]
        assert [(m.user_id, m.count, m.total_micros) for m in reply.by_member] == [
            (team.member, 2, 9 * CREDIT),
            (team.admin, 1, 2 * CREDIT),
        ]

    async def test_released_work_is_not_counted(self, api: WorkspaceApi) -> None:
        team = await build_team(api)
        await api.fund(team.owner, 5)
        await api.add_credits(team.workspace_id, team.owner, 5)
        hold = await api.billing.Hold(
            billing_pb2.HoldRequest(
                account=pool_account(team.workspace_id),
                amount_micros=CREDIT,
                idempotency_key=new_key(),
                tags={"workspace_id": team.workspace_id, "usage_type": "chat"},
            ),
            metadata=api.service,
        )
        await api.billing.Release(
            billing_pb2.ReleaseRequest(hold_id=hold.hold_id, idempotency_key=new_key()),
            metadata=api.service,
        )

        reply = await api.stub.GetUsage(
            workspace_pb2.GetUsageRequest(workspace_id=team.workspace_id),
            metadata=api.user(team.owner),
        )

        assert (reply.total_micros, list(reply.by_type)) == (0, [])
