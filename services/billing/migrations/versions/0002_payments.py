"""Plans, Razorpay payments, subscriptions, webhook events, and the price of
one credit (₹1) for credit purchases.

The three plans the web client knows by id are seeded here; prices are
whole rupees and a year costs twelve months less 20 %.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

CREDIT_PRICE_PAISE = 100

PLANS = [
    {
        "id": "starter",
        "name": "Starter",
        "price_monthly": 1350,
        "price_yearly": 12960,
        "credits_per_month": 12000,
        "is_popular": False,
        "display_order": 1,
        "features": [
            "About 5,000 chats, 1,000 images or 100 videos a month",
            "Every one of the 50+ models",
            "GPT-5, Gemini 3.0 Pro and Sora 2",
            "Support by e-mail",
            "Access to the community",
            "No watermarks",
        ],
    },
    {
        "id": "standard",
        "name": "Standard",
        "price_monthly": 2700,
        "price_yearly": 25920,
        "credits_per_month": 24000,
        "is_popular": True,
        "display_order": 2,
        "features": [
            "About 12,500 chats, 2,500 images or 250 videos a month",
            "Every model, flagship models included",
            "Priority support",
            "Work together with up to 5 people",
            "Advanced usage analytics",
            "No watermarks",
        ],
    },
    {
        "id": "professional",
        "name": "Professional",
        "price_monthly": 9000,
        "price_yearly": 86400,
        "credits_per_month": 90000,
        "is_popular": False,
        "display_order": 3,
        "features": [
            "About 25,000 chats, 5,000 images or 500 videos a month",
            "Every model, flagship models included",
            "As many team members as you need",
            "A dedicated support contact",
            "Single sign-on and advanced security",
            "Custom workflows",
        ],
    },
]


def _at(name: str, *, nullable: bool = False) -> sa.Column[object]:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True))
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=sa.func.now(),
        nullable=False,
    )


def upgrade() -> None:
    op.add_column(
        "settings",
        sa.Column(
            "credit_price_paise",
            sa.BigInteger,
            nullable=False,
            server_default=str(CREDIT_PRICE_PAISE),
        ),
    )
    op.create_check_constraint(
        "settings_credit_price_positive", "settings", "credit_price_paise > 0"
    )
    _create_plans()
    _create_payments()
    _create_subscriptions()
    op.create_table(
        "webhook_events",
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text),
        sa.Column("outcome", sa.String(32), nullable=False),
        _at("received_at"),
    )


def _create_plans() -> None:
    plans = op.create_table(
        "plans",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("price_monthly", sa.Integer, nullable=False),
        sa.Column("price_yearly", sa.Integer, nullable=False),
        sa.Column("credits_per_month", sa.BigInteger, nullable=False),
        sa.Column(
            "features", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")
        ),
        sa.Column("is_popular", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("display_order", sa.Integer, nullable=False, server_default="0"),
        _at("created_at"),
        sa.CheckConstraint(
            "price_monthly > 0 AND price_yearly > 0", name="plans_prices_positive"
        ),
        sa.CheckConstraint("credits_per_month > 0", name="plans_credits_positive"),
    )
    op.bulk_insert(plans, PLANS)


def _create_payments() -> None:
    op.create_table(
        "payments",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False, unique=True),
        sa.Column("payment_id", sa.String(64), unique=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("plan_id", sa.String(64), sa.ForeignKey("plans.id")),
        sa.Column("billing_cycle", sa.String(16)),
        sa.Column("amount_paise", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False, server_default="INR"),
        sa.Column("credits_micros", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        _at("period_end", nullable=True),
        _at("created_at"),
        _at("completed_at", nullable=True),
        sa.CheckConstraint("type IN ('subscription', 'credits')", name="payments_type"),
        sa.CheckConstraint(
            "status IN ('pending', 'completed', 'failed')", name="payments_status"
        ),
        sa.CheckConstraint(
            "(type = 'subscription') = (plan_id IS NOT NULL "
            "AND billing_cycle IS NOT NULL)",
            name="payments_plan_only_for_subscriptions",
        ),
        sa.CheckConstraint(
            "billing_cycle IS NULL OR billing_cycle IN ('monthly', 'yearly')",
            name="payments_billing_cycle",
        ),
        sa.CheckConstraint("amount_paise > 0", name="payments_amount_positive"),
        sa.CheckConstraint("credits_micros > 0", name="payments_credits_positive"),
        sa.CheckConstraint(
            "(status = 'completed') = (completed_at IS NOT NULL)",
            name="payments_completed_at",
        ),
    )
    op.create_index(
        "payments_by_user",
        "payments",
        ["user_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )


def _create_subscriptions() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("user_id", UUID, primary_key=True),
        sa.Column("plan_id", sa.String(64), sa.ForeignKey("plans.id"), nullable=False),
        sa.Column("billing_cycle", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.CheckConstraint(
            "billing_cycle IN ('monthly', 'yearly')",
            name="subscriptions_billing_cycle",
        ),
        sa.CheckConstraint(
            "status IN ('active', 'cancelled')", name="subscriptions_status"
        ),
        sa.CheckConstraint(
            "current_period_end > current_period_start",
            name="subscriptions_period_forwards",
        ),
    )


def downgrade() -> None:
    op.drop_table("webhook_events")
    op.drop_table("subscriptions")
    op.drop_table("payments")
    op.drop_table("plans")
    op.drop_constraint("settings_credit_price_positive", "settings")
    op.drop_column("settings", "credit_price_paise")
