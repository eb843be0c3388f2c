"""Plans as operators edit them (UpdatePlan, through the admin service).

Only the fields named in PlanChanges can change, each checked here: a name,
prices of at least ₹1 (a plan is sold through Razorpay, whose smallest
order is ₹1), credits per month of at least one, up to MAX_FEATURES
feature lines, the popular badge, the display order, and whether it is on
sale. Orders made before an edit keep the price and credits they were made
at (payments store both). Setting the same values again changes nothing
new, so a retried edit is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from libs.errors import NotFound
from libs.logs import get_logger
from services.billing import repository
from services.billing.models import Plan
from services.billing.service import NUL, Checks

log = get_logger(__name__)

MAX_NAME_LENGTH = 100
MIN_PRICE_RUPEES = 1
# Plan prices are INTEGER columns; a crore of rupees is far above any plan.
MAX_PRICE_RUPEES = 10_000_000
# A month's credits, as micro-credits, stay far below billing's largest
# single movement (10^15).
MAX_CREDITS_PER_MONTH = 100_000_000
MAX_FEATURES = 20
MAX_FEATURE_LENGTH = 200
MAX_DISPLAY_ORDER = 10_000


@dataclass(frozen=True)
class PlanChanges:
    name: str | None = None
    price_monthly: int | None = None
    price_yearly: int | None = None
    credits_per_month: int | None = None
    features: list[str] | None = None
    is_popular: bool | None = None
    display_order: int | None = None
    active: bool | None = None


async def update_plan(
    db: AsyncSession, plan_id: str, changes: PlanChanges, actor: str
) -> Plan:
    values = _plan_values(changes)
    plan = (
        await repository.update_plan(db, plan_id, values)
        if values
        else await repository.plan_by_id(db, plan_id)
    )
    if plan is None:
        raise NotFound(f'There is no plan "{plan_id}".')
    log.info(
        "billing.plan_updated", plan_id=plan_id, fields=sorted(values), actor=actor
    )
    return plan


def _plan_values(changes: PlanChanges) -> dict[str, Any]:
    """The columns to set, or every problem with the changes at once."""
    checks = Checks()
    values: dict[str, Any] = {}
    if changes.name is not None:
        values["name"] = changes.name.strip()
        checks.text("name", values["name"], MAX_NAME_LENGTH, required=True)
    for field in ("price_monthly", "price_yearly"):
        price = getattr(changes, field)
        if price is not None:
            _within(checks, field, price, MIN_PRICE_RUPEES, MAX_PRICE_RUPEES, "rupees")
            values[field] = price
    if changes.credits_per_month is not None:
        _within(
            checks,
            "credits_per_month",
            changes.credits_per_month,
            1,
            MAX_CREDITS_PER_MONTH,
            "credits",
        )
        values["credits_per_month"] = changes.credits_per_month
    if changes.features is not None:
        values["features"] = _features(checks, changes.features)
    if changes.display_order is not None:
        _within(
            checks, "display_order", changes.display_order, 0, MAX_DISPLAY_ORDER, ""
        )
        values["display_order"] = changes.display_order
    for flag in ("is_popular", "active"):
        if getattr(changes, flag) is not None:
            values[flag] = getattr(changes, flag)
    checks.done()
    return values


def _within(
    checks: Checks, field: str, value: int, low: int, high: int, unit: str
) -> None:
    if not low <= value <= high:
        checks.fail(field, f"{field} must be {low} to {high} {unit}".rstrip() + ".")


def _features(checks: Checks, features: list[str]) -> list[str]:
    cleaned = [feature.strip() for feature in features]
    if len(cleaned) > MAX_FEATURES:
        checks.fail("features", f"A plan has at most {MAX_FEATURES} features.")
    if any(not f or len(f) > MAX_FEATURE_LENGTH or NUL in f for f in cleaned):
        checks.fail(
            "features",
            f"Each feature is 1 to {MAX_FEATURE_LENGTH} characters of text.",
        )
    return cleaned
