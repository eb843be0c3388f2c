"""services/chat/workspaces.py: choosing among the accounts that may pay."""

from __future__ import annotations

from omnihub.billing.v1 import billing_pb2

from services.chat.workspaces import Payer, PayerChoice


def _payer(source: str, balance: int) -> Payer:
    return Payer(billing_pb2.AccountRef(owner_id=source), source, balance)


def test_the_richest_payer_is_the_first_of_equals() -> None:
    choice = PayerChoice(
        [_payer("workspace", 5), _payer("allocated", 9), _payer("personal", 9)],
        covering=None,
        tags={},
    )

    assert choice.richest.source == "allocated"
    assert choice.personal_balance == 9


def test_no_personal_payer_means_no_personal_balance() -> None:
    choice = PayerChoice([_payer("workspace", 5)], covering=None, tags={})

    assert choice.personal_balance is None
