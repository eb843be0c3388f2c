"""Settings over real gRPC: types and validators, secrets that are
write-only, settings owned by the catalog and billing changed through them
(with their audit entries), and who may change what."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from omnihub.admin.v1 import admin_pb2
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from libs.config import Settings
from services.admin.settings import DEFINITIONS
from tests.services.admin.api import CLIENT_ADDRESS, AdminApi, failure

# Settings a test may change; put back as they were after each test.
RESTORED = (
    "siteName",
    "supportEmail",
    "maintenanceMessage",
    "profitMargin",
    "profitMarginImage",
    "creditPrice",
    "freeCredits",
    "creditPurchasePrice",
    "falApiKey",
)


@pytest.fixture
async def restored(api: AdminApi) -> AsyncIterator[None]:
    before = await api.settings()
    yield
    secrets = {key for key in RESTORED if key.endswith("ApiKey")}
    await api.update_settings(
        {key: before[key] for key in RESTORED if key not in secrets}
        | {key: "" for key in secrets if not before[key]}
    )


class TestReading:
    async def test_every_setting_is_listed_with_its_type_and_owner(
        self, api: AdminApi
    ) -> None:
        reply = await api.stub.GetSettings(
            admin_pb2.GetSettingsRequest(), metadata=api.operator("viewer").metadata
        )

        listed = {setting.key: setting for setting in reply.settings}
        assert list(listed) == [d.key for d in DEFINITIONS]
        assert listed["profitMargin"].source == "catalog"
        assert listed["profitMargin"].type == "number"
        assert listed["freeCredits"].source == "billing"
        assert listed["googleClientId"].read_only
        assert listed["falApiKey"].type == "secret"
        assert "changes nothing at runtime" in listed["falApiKey"].description

    async def test_values_come_from_their_owners(
        self, api: AdminApi, settings: Settings
    ) -> None:
        shown = await api.settings()

        assert shown["googleClientId"] == settings.google_client_id
        assert shown["maxUploadMb"] == settings.max_body_bytes // (1024 * 1024)
        assert isinstance(shown["profitMargin"], int | float)
        assert isinstance(shown["freeCredits"], int | float)

    async def test_a_user_cannot_read_them(self, api: AdminApi) -> None:
        status, _ = await failure(
            api.stub.GetSettings(admin_pb2.GetSettingsRequest(), metadata=api.user())
        )

        assert status == grpc.StatusCode.PERMISSION_DENIED

    async def test_public_settings_hold_no_secret_or_price(
        self, api: AdminApi, restored: None
    ) -> None:
        await api.update_settings({"falApiKey": "fal-secret-0001", "siteName": "Pub"})

        reply = await api.stub.GetPublicSettings(admin_pb2.GetPublicSettingsRequest())

        shown = json_format.MessageToDict(reply.settings)
        assert shown["siteName"] == "Pub"
        assert shown["maintenanceMode"] is False
        assert set(shown) == {
            "siteName",
            "supportEmail",
            "maintenanceMessage",
            "googleClientId",
            "maxUploadMb",
            "maintenanceMode",
        }
        assert "fal-secret-0001" not in str(reply)


# (setting, refused value, words of the reason)
REFUSALS = [
    ("profitMargin", -1, "at least 0"),
    ("profitMargin", 1000.5, "at most 1000"),
    ("profitMargin", 1.23456, "4 decimal places"),
    ("profitMargin", "a lot", "must be a number"),
    ("profitMargin", True, "must be a number"),
    ("profitMarginImage", -0.5, "at least 0"),
    ("profitMarginVideo", 2000, "at most 1000"),
    ("profitMarginChat", {"value": 1}, "must be a number"),
    ("creditPrice", 0, "above 0"),
    ("creditPrice", 1001, "at most 1000"),
    ("creditPrice", 0.0000001, "6 decimal places"),
    ("freeCredits", -1, "at least 0"),
    ("freeCredits", 1_000_001, "at most 1000000"),
    ("freeCredits", 0.1234567, "6 decimal places"),
    ("freeCredits", "ten", "must be a number"),
    ("creditPurchasePrice", 0, "above 0"),
    ("creditPurchasePrice", 1.234, "2 decimal places"),
    ("siteName", "", "1 to 80 characters"),
    ("siteName", "x" * 81, "1 to 80 characters"),
    ("siteName", "bad\x07name", "control characters"),
    ("siteName", 42, "must be text"),
    ("supportEmail", "not-an-address", "e-mail address"),
    ("supportEmail", 7, "e-mail address"),
    ("maintenanceMessage", " ", "1 to 500 characters"),
    ("maintenanceMessage", "m" * 501, "1 to 500 characters"),
    ("googleClientId", "another.apps.googleusercontent.com", "cannot be changed"),
    ("razorpayKeyId", "rzp_live_other", "cannot be changed"),
    ("maxUploadMb", 500, "cannot be changed"),
    ("falApiKey", "short", "8 to 512 characters"),
    ("openrouterApiKey", "has a space in it", "8 to 512 characters"),
    ("razorpayKeySecret", 12345678, "must be text"),
    ("falApiKey", "••••9999", "is masked"),
    ("noSuchSetting", 1, "is not a setting"),
]


class TestValidation:
    @pytest.mark.parametrize(
        ("key", "value", "reason"),
        REFUSALS,
        ids=[f"{key}-{reason}" for key, _, reason in REFUSALS],
    )
    async def test_refused_value(
        self, api: AdminApi, key: str, value: Any, reason: str
    ) -> None:
        before = await api.settings()

        status, error = await failure(api.update_settings({key: value}))

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == [key]
        assert reason in error.violations[0].message
        assert await api.settings() == before

    async def test_one_bad_value_changes_nothing(
        self, api: AdminApi, restored: None
    ) -> None:
        before = await api.settings()

        status, error = await failure(
            api.update_settings(
                {"siteName": "Changed", "profitMargin": 5, "freeCredits": -3}
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == ["freeCredits"]
        assert await api.settings() == before

    async def test_every_refusal_is_reported_at_once(self, api: AdminApi) -> None:
        _, error = await failure(
            api.update_settings({"siteName": "", "creditPrice": 0, "unknown": 1})
        )

        assert sorted(v.field for v in error.violations) == [
            "creditPrice",
            "siteName",
            "unknown",
        ]

    async def test_numeric_text_is_accepted_for_a_number(
        self, api: AdminApi, restored: None
    ) -> None:
        reply = await api.update_settings({"profitMarginImage": "12.5"})

        assert list(reply.changed) == ["profitMarginImage"]
        assert (await api.settings())["profitMarginImage"] == 12.5

    async def test_the_whole_object_sent_back_changes_only_the_edits(
        self, api: AdminApi, restored: None
    ) -> None:
        await api.update_settings({"falApiKey": "fal-key-abcd1234"})
        shown = await api.settings()

        reply = await api.update_settings({**shown, "siteName": "Edited"})

        assert list(reply.changed) == ["siteName"]
        after = await api.settings()
        assert after["falApiKey"] == "••••1234"
        assert after == {**shown, "siteName": "Edited"}


class TestRoles:
    @pytest.mark.parametrize("role", ["viewer", "support"])
    async def test_only_a_superadmin_changes_settings(
        self, api: AdminApi, role: str
    ) -> None:
        status, _ = await failure(
            api.update_settings({"siteName": "Nope"}, api.operator(role))
        )

        assert status == grpc.StatusCode.PERMISSION_DENIED
        assert (await api.settings())["siteName"] != "Nope"

    async def test_a_user_token_is_not_an_operator(self, api: AdminApi) -> None:
        status, _ = await failure(
            api.stub.UpdateSettings(
                admin_pb2.UpdateSettingsRequest(), metadata=api.user()
            )
        )

        assert status == grpc.StatusCode.PERMISSION_DENIED


class TestSecrets:
    async def test_a_secret_is_shown_only_masked(
        self, api: AdminApi, restored: None
    ) -> None:
        await api.update_settings({"falApiKey": "fal-secret-value-9876"})

        reply = await api.stub.GetSettings(
            admin_pb2.GetSettingsRequest(), metadata=api.operator().metadata
        )

        assert "fal-secret-value" not in str(reply)
        assert (await api.settings())["falApiKey"] == "••••9876"

    async def test_an_unset_secret_shows_empty(self, api: AdminApi) -> None:
        assert (await api.settings())["openrouterApiKey"] == ""

    async def test_sending_the_mask_back_keeps_the_secret(
        self, api: AdminApi, restored: None
    ) -> None:
        await api.update_settings({"falApiKey": "fal-secret-keep-5555"})

        reply = await api.update_settings({"falApiKey": "••••5555"})

        assert list(reply.changed) == []
        rows = await api.sql("SELECT value FROM settings WHERE key = 'falApiKey'")
        assert rows[0]["value"] == "fal-secret-keep-5555"

    async def test_an_empty_value_removes_the_secret(
        self, api: AdminApi, restored: None
    ) -> None:
        await api.update_settings({"falApiKey": "fal-secret-gone-4444"})

        await api.update_settings({"falApiKey": ""})

        assert (await api.settings())["falApiKey"] == ""

    async def test_the_audit_entry_never_holds_the_secret(
        self, api: AdminApi, restored: None
    ) -> None:
        operator = api.operator()
        await api.update_settings({"falApiKey": "fal-secret-audit-3210"}, operator)

        rows = await api.sql(
            "SELECT before, after FROM audit_log WHERE request_id = :r",
            r=operator.request_id,
        )

        assert rows
        assert "fal-secret-audit" not in str(rows)
        assert "3210" not in str(rows)
        assert rows[0]["after"]["falApiKey"] == "********"


class TestAudit:
    async def test_an_admin_setting_change_is_audited_with_before_and_after(
        self, api: AdminApi, restored: None
    ) -> None:
        before = (await api.settings())["supportEmail"]
        operator = api.operator()

        await api.update_settings({"supportEmail": "help@example.com"}, operator)

        rows = await api.sql(
            "SELECT *, host(client_address) AS address FROM audit_log"
            " WHERE request_id = :r",
            r=operator.request_id,
        )
        (row,) = rows
        assert row["action"] == "settings.updated"
        assert (row["target_type"], row["target_id"]) == ("settings", "admin")
        assert row["actor_id"] == operator.id
        assert row["actor_role"] == "superadmin"
        assert row["before"] == {"supportEmail": before}
        assert row["after"] == {"supportEmail": "help@example.com"}
        assert row["address"] == CLIENT_ADDRESS
        assert row["status"] == "applied"

    async def test_nothing_changed_writes_no_entry(self, api: AdminApi) -> None:
        operator = api.operator()
        shown = await api.settings()

        await api.update_settings({"siteName": shown["siteName"]}, operator)

        rows = await api.sql(
            "SELECT id FROM audit_log WHERE request_id = :r", r=operator.request_id
        )
        assert rows == []


class TestOwnedElsewhere:
    async def test_a_margin_is_changed_in_the_catalog(
        self, api: AdminApi, settings: Settings, restored: None
    ) -> None:
        operator = api.operator()

        await api.update_settings({"profitMargin": 7.5}, operator)

        async with grpc.aio.insecure_channel(settings.catalog_address) as channel:
            catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
            reply = await catalog.GetPricingSettings(
                catalog_pb2.GetPricingSettingsRequest(), metadata=api.service
            )
        assert float(reply.settings.profit_margin) == 7.5
        (row,) = await api.sql(
            "SELECT * FROM audit_log WHERE request_id = :r", r=operator.request_id
        )
        assert (row["target_type"], row["target_id"]) == ("settings", "catalog")
        assert row["status"] == "applied"
        assert row["after"] == {"profitMargin": 7.5}
        (task,) = await api.sql(
            "SELECT state, kind FROM admin_tasks WHERE audit_id = :a", a=row["id"]
        )
        assert task == {"state": "done", "kind": "settings.catalog"}

    async def test_the_credit_price_keeps_the_other_prices(
        self, api: AdminApi, restored: None
    ) -> None:
        await api.update_settings({"profitMarginImage": 3})

        await api.update_settings({"creditPrice": 0.5})

        shown = await api.settings()
        assert shown["creditPrice"] == 0.5
        assert shown["profitMarginImage"] == 3

    async def test_the_next_sign_up_gets_the_new_free_credits(
        self, api: AdminApi, settings: Settings, restored: None
    ) -> None:
        await api.update_settings({"freeCredits": 3.25})

        balance = await _signup_balance(api, settings)

        assert balance == 3_250_000

    async def test_the_purchase_price_is_changed_in_billing(
        self, api: AdminApi, settings: Settings, restored: None
    ) -> None:
        await api.update_settings({"creditPurchasePrice": 2.5})

        async with grpc.aio.insecure_channel(settings.billing_address) as channel:
            billing = billing_pb2_grpc.BillingServiceStub(channel)
            reply = await billing.GetBillingSettings(
                billing_pb2.GetBillingSettingsRequest()
            )
        assert reply.credit_price_paise == 250


class TestLateRetries:
    async def test_a_late_retry_does_not_undo_a_newer_change(
        self, api: AdminApi, restored: None
    ) -> None:
        """An older pricing task (its service was down) retried after a newer
        change of the same setting went through changes nothing."""
        old_task = str(uuid.uuid4())
        await api.sql(
            "INSERT INTO admin_tasks (id, kind, payload, created_at, next_attempt_at)"
            " VALUES (:id, 'settings.catalog', CAST(:payload AS jsonb),"
            " now() - interval '1 minute', now() + interval '1 second')",
            id=old_task,
            payload='{"values": {"profitMarginImage": "5"}, "actor": "earlier"}',
        )

        await api.update_settings({"profitMarginImage": 7})

        deadline = time.monotonic() + 8
        while (await _task(api, old_task))["state"] == "pending":
            assert time.monotonic() < deadline, "the old task was never retried"
            await asyncio.sleep(0.1)
        assert (await _task(api, old_task))["result"] == {"superseded": True}
        assert (await api.settings())["profitMarginImage"] == 7


async def _task(api: AdminApi, task_id: str) -> dict[str, Any]:
    (row,) = await api.sql("SELECT * FROM admin_tasks WHERE id = :id", id=task_id)
    return row


async def _signup_balance(api: AdminApi, settings: Settings) -> int:
    """The balance of a new account once its sign-up credits arrive."""
    async with (
        grpc.aio.insecure_channel(settings.auth_address) as auth_channel,
        grpc.aio.insecure_channel(settings.billing_address) as billing_channel,
    ):
        auth = auth_pb2_grpc.AuthServiceStub(auth_channel)
        billing = billing_pb2_grpc.BillingServiceStub(billing_channel)
        reply = await auth.Register(
            auth_pb2.RegisterRequest(
                email=f"settings-{uuid.uuid4().hex[:10]}@example.com",
                password="a-good-password",
                name="New Account",
            ),
            metadata=api.service,
        )
        account = billing_pb2.AccountRef(
            owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=reply.user.id
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = await billing.GetBalances(
                billing_pb2.GetBalancesRequest(accounts=[account]),
                metadata=api.service,
            )
            if found.balances[0].balance_micros:
                return found.balances[0].balance_micros
            await asyncio.sleep(0.05)
    raise AssertionError("no sign-up credits arrived")
