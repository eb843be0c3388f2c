"""UpdatePlan and the plan list over real gRPC: operators' plan edits (made
through the admin service, which calls as a service), their validation, and
plans taken off sale. Each test edits a plan of its own, never the three
the web client knows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from omnihub.billing.v1 import billing_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import InvalidArgument, NotFound
from tests.services.billing.factories import BillingClient, failure, fields_of

Sessions = async_sessionmaker[AsyncSession]


PREFIX = "test-plan-"


@pytest.fixture(scope="module", autouse=True)
async def remove_test_plans(billing_db: Sessions) -> AsyncIterator[None]:
    """Other tests read the public plan list as the three seeded plans."""
    yield
    async with billing_db.begin() as db:
        await db.execute(
            text("DELETE FROM plans WHERE id LIKE :prefix"), {"prefix": f"{PREFIX}%"}
        )


async def new_plan(billing_db: Sessions) -> str:
    plan_id = f"{PREFIX}{uuid.uuid4().hex[:10]}"
    async with billing_db.begin() as db:
        await db.execute(
            text(
                "INSERT INTO plans (id, name, price_monthly, price_yearly,"
                " credits_per_month, features, display_order)"
                " VALUES (:id, 'Test plan', 500, 4800, 1000,"
                " '[\"One\"]'::jsonb, 90)"
            ),
            {"id": plan_id},
        )
    return plan_id


async def update(
    billing: BillingClient, plan_id: str, **changes: object
) -> billing_pb2.Plan:
    reply = await billing.stub.UpdatePlan(
        billing_pb2.UpdatePlanRequest(
            id=plan_id,
            changes=billing_pb2.PlanChanges(**changes),  # type: ignore[arg-type]
            actor="admin:tests",
        ),
        metadata=billing.service,
    )
    return reply.plan


async def listed(billing: BillingClient, *, include_inactive: bool) -> list[str]:
    reply = await billing.stub.ListPlans(
        billing_pb2.ListPlansRequest(include_inactive=include_inactive),
        metadata=billing.service,
    )
    return [plan.id for plan in reply.plans]


class TestUpdatePlan:
    async def test_the_fields_set_change_and_the_others_stay(
        self, billing: BillingClient, billing_db: Sessions
    ) -> None:
        plan_id = await new_plan(billing_db)

        plan = await update(
            billing,
            plan_id,
            name="  Renamed  ",
            price_monthly=650,
            credits_per_month=1500,
            features=["Fast", "Friendly"],
            replace_features=True,
            is_popular=True,
            display_order=7,
        )

        assert (plan.name, plan.price_monthly, plan.price_yearly) == (
            "Renamed",
            650,
            4800,
        )
        assert (plan.credits_per_month, list(plan.features)) == (
            1500,
            ["Fast", "Friendly"],
        )
        assert (plan.is_popular, plan.display_order, plan.active) == (True, 7, True)

    async def test_features_stay_unless_replaced(
        self, billing: BillingClient, billing_db: Sessions
    ) -> None:
        plan_id = await new_plan(billing_db)

        plan = await update(billing, plan_id, features=["Ignored"])

        assert list(plan.features) == ["One"]

    async def test_the_same_edit_twice_leaves_the_same_plan(
        self, billing: BillingClient, billing_db: Sessions
    ) -> None:
        plan_id = await new_plan(billing_db)

        first = await update(billing, plan_id, price_yearly=5000)
        second = await update(billing, plan_id, price_yearly=5000)

        assert first == second

    @pytest.mark.parametrize(
        ("changes", "fields"),
        [
            ({"price_monthly": 0}, {"price_monthly"}),
            ({"price_yearly": -5}, {"price_yearly"}),
            ({"credits_per_month": 0}, {"credits_per_month"}),
            ({"name": "   "}, {"name"}),
            ({"display_order": -1}, {"display_order"}),
            (
                {"features": ["ok", ""], "replace_features": True, "name": "x" * 101},
                {"features", "name"},
            ),
            ({"features": ["f"] * 21, "replace_features": True}, {"features"}),
        ],
    )
    async def test_values_out_of_bounds_are_refused_and_change_nothing(
        self,
        billing: BillingClient,
        billing_db: Sessions,
        changes: dict[str, object],
        fields: set[str],
    ) -> None:
        plan_id = await new_plan(billing_db)

        code, error = await failure(update(billing, plan_id, **changes))

        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error, InvalidArgument)
        assert fields_of(error) == fields
        unchanged = await update(billing, plan_id)
        assert (unchanged.name, unchanged.price_monthly) == ("Test plan", 500)

    async def test_an_unknown_plan_is_not_found(self, billing: BillingClient) -> None:
        code, error = await failure(update(billing, "platinum", name="Platinum"))

        assert code == grpc.StatusCode.NOT_FOUND
        assert isinstance(error, NotFound)

    async def test_a_user_may_not_edit_plans(
        self, billing: BillingClient, billing_db: Sessions
    ) -> None:
        plan_id = await new_plan(billing_db)

        code, _ = await failure(
            billing.stub.UpdatePlan(
                billing_pb2.UpdatePlanRequest(
                    id=plan_id, changes=billing_pb2.PlanChanges(price_monthly=1)
                ),
                metadata=billing.user(str(uuid.uuid4())),
            )
        )

        assert code == grpc.StatusCode.PERMISSION_DENIED


class TestPlansOffSale:
    async def test_an_inactive_plan_is_listed_for_services_only_when_asked(
        self, billing: BillingClient, billing_db: Sessions
    ) -> None:
        plan_id = await new_plan(billing_db)

        plan = await update(billing, plan_id, active=False)

        assert plan.active is False
        assert plan_id not in await listed(billing, include_inactive=False)
        assert plan_id in await listed(billing, include_inactive=True)

    async def test_a_user_asking_for_inactive_plans_sees_those_on_sale(
        self, billing: BillingClient, billing_db: Sessions
    ) -> None:
        plan_id = await new_plan(billing_db)
        await update(billing, plan_id, active=False)

        reply = await billing.stub.ListPlans(
            billing_pb2.ListPlansRequest(include_inactive=True),
            metadata=billing.user(str(uuid.uuid4())),
        )

        assert plan_id not in [plan.id for plan in reply.plans]
        assert {"starter", "standard", "professional"} <= {p.id for p in reply.plans}
