"""Response bodies of /api/credits, in the camelCase the web client reads.

Credits travel between services as integer micro-credits; here, at the
edge, they become JSON numbers of credits (1500000 -> 1.5).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from gateway.schemas.base import ResponseBody
from libs.errors import MICROS_PER_CREDIT


def credits(micros: int) -> int | float:
    """Micro-credits as a number of credits: whole numbers stay integers.

    Dividing two integers below 2**53 rounds once, so the float is the
    nearest one to the exact decimal (what format_credits prints).
    """
    whole, fraction = divmod(micros, MICROS_PER_CREDIT)
    return whole if fraction == 0 else micros / MICROS_PER_CREDIT


class CreditBalanceOut(ResponseBody):
    credits: float = Field(description="Credits the caller may spend now")
    held: float = Field(
        description="Credits reserved for work in progress, not in `credits`"
    )


class CreditTransactionOut(ResponseBody):
    id: str
    type: str = Field(
        description="grant, purchase, hold, capture, release, refund, transfer "
        "or adjustment",
        examples=["hold"],
    )
    amount: float = Field(description="Signed change of the balance, in credits")
    balance_after: float
    description: str
    reference: str | None = Field(
        description="What the entry is about: a generation, message or payment id"
    )
    created_at: datetime


class CreditHistoryOut(ResponseBody):
    transactions: list[CreditTransactionOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next, older page; null on the last"
    )
