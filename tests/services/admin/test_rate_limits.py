"""Rate-limit rules (superadmin, audited) and the shared counter the
gateways spend from: one PostgreSQL statement per check, correct under
concurrency."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from omnihub.admin.v1 import admin_pb2

from tests.services.admin.api import AdminApi, failure


def user_subject() -> str:
    return f"user:{uuid.uuid4()}"


async def set_rule(
    api: AdminApi, subject: str, requests: int, window_seconds: int = 60
) -> admin_pb2.RateLimitRule:
    reply = await api.stub.SetRateLimit(
        admin_pb2.SetRateLimitRequest(
            subject=subject, requests=requests, window_seconds=window_seconds
        ),
        metadata=api.operator().metadata,
    )
    return reply.rule


async def check(api: AdminApi, subject: str) -> admin_pb2.CheckRateLimitResponse:
    reply: admin_pb2.CheckRateLimitResponse = await api.stub.CheckRateLimit(
        admin_pb2.CheckRateLimitRequest(subject=subject, cost=1), metadata=api.service
    )
    return reply


class TestRules:
    async def test_a_rule_is_set_listed_and_audited(self, api: AdminApi) -> None:
        subject = user_subject()

        rule = await set_rule(api, subject, 5, 60)

        assert (rule.requests, rule.window_seconds) == (5, 60)
        listed = await api.stub.GetRateLimits(
            admin_pb2.GetRateLimitsRequest(), metadata=api.service
        )
        assert subject in {r.subject for r in listed.rules}
        (row,) = await api.audit_rows("rate_limit", subject)
        assert row["action"] == "rate_limit.set"
        assert row["before"] is None
        assert row["after"] == {"requests": 5, "windowSeconds": 60}

    async def test_replacing_a_rule_records_the_old_one(self, api: AdminApi) -> None:
        subject = user_subject()
        await set_rule(api, subject, 5, 60)

        await set_rule(api, subject, 9, 30)

        rows = await api.audit_rows("rate_limit", subject)
        assert rows[-1]["before"] == {"requests": 5, "windowSeconds": 60}
        assert rows[-1]["after"] == {"requests": 9, "windowSeconds": 30}

    async def test_a_rule_is_deleted_and_audited(self, api: AdminApi) -> None:
        subject = user_subject()
        await set_rule(api, subject, 5)

        await api.stub.DeleteRateLimit(
            admin_pb2.DeleteRateLimitRequest(subject=subject),
            metadata=api.operator().metadata,
        )

        assert (await check(api, subject)).limited is False
        rows = await api.audit_rows("rate_limit", subject)
        assert rows[-1]["action"] == "rate_limit.deleted"

    async def test_deleting_a_missing_rule_is_not_found(self, api: AdminApi) -> None:
        status, _ = await failure(
            api.stub.DeleteRateLimit(
                admin_pb2.DeleteRateLimitRequest(subject=user_subject()),
                metadata=api.operator().metadata,
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND

    @pytest.mark.parametrize(
        ("subject", "requests", "window", "field"),
        [
            ("everyone", 5, 60, "subject"),
            ("user:not-a-uuid", 5, 60, "subject"),
            ("tier:no-such-plan", 5, 60, "subject"),
            ("tier:free", 0, 60, "requests"),
            ("tier:free", 5, 86_401, "window_seconds"),
        ],
    )
    async def test_invalid_rules_are_refused(
        self, api: AdminApi, subject: str, requests: int, window: int, field: str
    ) -> None:
        status, error = await failure(set_rule(api, subject, requests, window))

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == field

    async def test_a_plan_tier_is_accepted(self, api: AdminApi) -> None:
        rule = await set_rule(api, "tier:starter", 50)
        try:
            assert rule.subject == "tier:starter"
        finally:
            await api.stub.DeleteRateLimit(
                admin_pb2.DeleteRateLimitRequest(subject="tier:starter"),
                metadata=api.operator().metadata,
            )

    @pytest.mark.parametrize("role", ["viewer", "support"])
    async def test_only_a_superadmin_sets_rules(self, api: AdminApi, role: str) -> None:
        status, _ = await failure(
            api.stub.SetRateLimit(
                admin_pb2.SetRateLimitRequest(
                    subject=user_subject(), requests=1, window_seconds=1
                ),
                metadata=api.operator(role).metadata,
            )
        )

        assert status == grpc.StatusCode.PERMISSION_DENIED


class TestCounter:
    async def test_the_allowance_runs_out_and_says_when_it_comes_back(
        self, api: AdminApi
    ) -> None:
        subject = user_subject()
        await set_rule(api, subject, 3, 60)

        answers = [await check(api, subject) for _ in range(4)]

        assert [a.allowed for a in answers] == [True, True, True, False]
        assert all(a.limited for a in answers)
        # One request comes back every 60 / 3 seconds.
        assert 19 < answers[-1].retry_after_seconds <= 20

    async def test_a_subject_without_a_rule_is_not_limited(self, api: AdminApi) -> None:
        answer = await check(api, user_subject())

        assert answer.allowed
        assert not answer.limited

    async def test_concurrent_checks_never_exceed_the_allowance(
        self, api: AdminApi
    ) -> None:
        subject = user_subject()
        await set_rule(api, subject, 5, 60)

        answers = await asyncio.gather(*(check(api, subject) for _ in range(20)))

        assert sum(a.allowed for a in answers) == 5

    async def test_a_changed_rule_starts_a_fresh_allowance(self, api: AdminApi) -> None:
        subject = user_subject()
        await set_rule(api, subject, 1, 60)
        await check(api, subject)
        assert not (await check(api, subject)).allowed

        await set_rule(api, subject, 2, 60)

        assert (await check(api, subject)).allowed

    async def test_the_allowance_refills_with_time(self, api: AdminApi) -> None:
        subject = user_subject()
        await set_rule(api, subject, 2, 1)
        await check(api, subject)
        await check(api, subject)
        refused = await check(api, subject)

        await asyncio.sleep(refused.retry_after_seconds + 0.05)

        assert (await check(api, subject)).allowed

    async def test_only_services_spend(self, api: AdminApi) -> None:
        status, _ = await failure(
            api.stub.CheckRateLimit(
                admin_pb2.CheckRateLimitRequest(subject=user_subject()),
                metadata=api.user_alone(),
            )
        )

        assert status == grpc.StatusCode.PERMISSION_DENIED
