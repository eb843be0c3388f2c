"""services/workspace/roles.py: privacy settings are checked against the
known keys and values, and stored under one spelling."""

from __future__ import annotations

import pytest

from libs.errors import InvalidArgument
from services.workspace.roles import DEFAULT_PRIVACY, changed_privacy, complete_privacy


def test_empty_values_change_nothing() -> None:
    assert changed_privacy(DEFAULT_PRIVACY, {"who_can_invite": ""}) == DEFAULT_PRIVACY


@pytest.mark.parametrize(
    ("key", "sent", "stored"),
    [
        ("who_can_invite", "all_members", "members"),
        ("image_visibility", "workspace", "members"),
        ("who_can_be_admin", "admins_can_promote", "admins_can_promote"),
    ],
)
def test_known_values_and_their_aliases_are_stored_one_way(
    key: str, sent: str, stored: str
) -> None:
    assert changed_privacy(DEFAULT_PRIVACY, {key: sent})[key] == stored


def test_every_unknown_key_and_value_is_named() -> None:
    with pytest.raises(InvalidArgument) as refused:
        changed_privacy(
            DEFAULT_PRIVACY,
            {"who_can_allocate_credits": "members", "secret_mode": "on"},
        )

    assert [v.field for v in refused.value.violations] == [
        "privacy_settings.who_can_allocate_credits",
        "privacy_settings.secret_mode",
    ]


def test_settings_saved_before_a_key_existed_read_with_its_default() -> None:
    assert complete_privacy({"who_can_invite": "members"}) == {
        **DEFAULT_PRIVACY,
        "who_can_invite": "members",
    }
