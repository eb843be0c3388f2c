"""services/chat/ledger.py: the idempotency keys of a reply's money."""

from __future__ import annotations

from services.chat.ledger import capture_key, hold_key, release_key


def test_each_step_of_a_reply_has_its_own_key_made_from_the_reply_id() -> None:
    keys = {hold_key("m-1"), capture_key("m-1"), release_key("m-1")}

    assert keys == {"chat:m-1:hold", "chat:m-1:capture", "chat:m-1:release"}
    assert hold_key("m-1") != hold_key("m-2")
