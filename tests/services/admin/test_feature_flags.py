"""Feature flags over real gRPC: the seeded flags, changes (audited) by a
superadmin only, and the internal read the services poll."""

from __future__ import annotations

import uuid

import grpc
from omnihub.admin.v1 import admin_pb2

from tests.services.admin.api import AdminApi, failure


def new_key() -> str:
    return f"test_flag_{uuid.uuid4().hex[:10]}"


async def test_the_enforced_flags_are_seeded(api: AdminApi) -> None:
    reply = await api.stub.ListFeatureFlags(
        admin_pb2.ListFeatureFlagsRequest(), metadata=api.operator("viewer").metadata
    )

    seeded = {flag.key: flag for flag in reply.flags}
    assert seeded["video_generation"].description
    assert seeded["community_gallery"].description
    assert seeded["maintenance_mode"].description


async def test_services_read_every_flag_and_the_maintenance_message(
    api: AdminApi,
) -> None:
    reply = await api.stub.GetFeatureFlags(
        admin_pb2.GetFeatureFlagsRequest(), metadata=api.service
    )

    assert {"video_generation", "community_gallery", "maintenance_mode"} <= set(
        reply.flags
    )
    assert "maintenance" in reply.maintenance_message


async def test_the_service_read_refuses_a_user(
    api: AdminApi,
) -> None:
    status, _ = await failure(
        api.stub.GetFeatureFlags(
            admin_pb2.GetFeatureFlagsRequest(), metadata=api.user_alone()
        )
    )

    assert status == grpc.StatusCode.PERMISSION_DENIED


async def test_a_new_flag_is_created_and_audited(api: AdminApi) -> None:
    key = new_key()
    operator = api.operator()

    reply = await api.stub.SetFeatureFlag(
        admin_pb2.SetFeatureFlagRequest(key=key, enabled=True, description="Beta"),
        metadata=operator.metadata,
    )

    assert reply.flag.enabled
    assert reply.flag.updated_by == operator.id
    (row,) = await api.audit_rows("feature_flag", key)
    assert row["action"] == "feature_flag.created"
    assert row["before"] is None
    assert row["after"] == {"enabled": True, "description": "Beta"}
    assert row["request_id"] == operator.request_id


async def test_turning_a_flag_off_is_audited_and_seen_by_services(
    api: AdminApi,
) -> None:
    key = new_key()
    await api.set_flag(key, True)

    await api.set_flag(key, False)

    flags = await api.stub.GetFeatureFlags(
        admin_pb2.GetFeatureFlagsRequest(), metadata=api.service
    )
    assert flags.flags[key] is False
    rows = await api.audit_rows("feature_flag", key)
    assert [row["action"] for row in rows] == [
        "feature_flag.created",
        "feature_flag.updated",
    ]
    assert rows[1]["before"]["enabled"] is True
    assert rows[1]["after"]["enabled"] is False


async def test_setting_the_same_state_writes_nothing(api: AdminApi) -> None:
    key = new_key()
    await api.set_flag(key, True)

    await api.set_flag(key, True)

    assert len(await api.audit_rows("feature_flag", key)) == 1


async def test_the_description_is_kept_when_not_given(api: AdminApi) -> None:
    key = new_key()
    await api.stub.SetFeatureFlag(
        admin_pb2.SetFeatureFlagRequest(key=key, enabled=False, description="Kept"),
        metadata=api.operator().metadata,
    )

    reply = await api.stub.SetFeatureFlag(
        admin_pb2.SetFeatureFlagRequest(key=key, enabled=True),
        metadata=api.operator().metadata,
    )

    assert reply.flag.description == "Kept"


async def test_a_flag_key_must_be_snake_case(api: AdminApi) -> None:
    status, error = await failure(
        api.stub.SetFeatureFlag(
            admin_pb2.SetFeatureFlagRequest(key="Video Generation", enabled=True),
            metadata=api.operator().metadata,
        )
    )

    assert status == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violations[0].field == "key"


async def test_only_a_superadmin_sets_a_flag(api: AdminApi) -> None:
    key = new_key()

    for role in ("viewer", "support"):
        status, _ = await failure(
            api.stub.SetFeatureFlag(
                admin_pb2.SetFeatureFlagRequest(key=key, enabled=True),
                metadata=api.operator(role).metadata,
            )
        )
        assert status == grpc.StatusCode.PERMISSION_DENIED
    assert await api.audit_rows("feature_flag", key) == []
