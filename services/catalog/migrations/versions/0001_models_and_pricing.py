"""Models, the pricing settings row and the catalog version counter.

The models themselves are not inserted here: `python -m services.catalog.main
migrate` seeds them after the upgrade, inserting only the ones missing.

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def _margin(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.Numeric(9, 4), nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("provider_name", sa.String(128), nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("text_to_image_endpoint", sa.Text),
        sa.Column("image_to_image_endpoint", sa.Text),
        sa.Column("image_input", sa.String(16), nullable=False, server_default="none"),
        sa.Column("max_input_images", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "image_param_name",
            sa.String(64),
            nullable=False,
            server_default="image_url",
        ),
        sa.Column(
            "image_param_type", sa.String(16), nullable=False, server_default="single"
        ),
        sa.Column("video_input", sa.String(16), nullable=False, server_default="none"),
        sa.Column("max_wait_seconds", sa.Integer, nullable=False),
        sa.Column("base_cost_micros", sa.BigInteger, nullable=False),
        sa.Column(
            "input_cost_micros_per_1k",
            sa.BigInteger,
            nullable=False,
            server_default="0",
        ),
        sa.Column(
            "output_cost_micros_per_1k",
            sa.BigInteger,
            nullable=False,
            server_default="0",
        ),
        sa.Column("options", JSONB, nullable=False, server_default="[]"),
        sa.Column("capabilities", JSONB, nullable=False, server_default="{}"),
        sa.Column("tags", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("display_order", sa.Integer, nullable=False, server_default="100"),
        sa.Column("doc_url", sa.Text),
        sa.Column("thumbnail", sa.Text),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default="true"),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.Column("updated_by", sa.String(200)),
        sa.CheckConstraint("type IN ('image', 'video', 'chat')", name="models_type"),
        sa.CheckConstraint(
            "image_input IN ('none', 'optional', 'required')", name="models_image_input"
        ),
        sa.CheckConstraint(
            "video_input IN ('none', 'optional', 'required')", name="models_video_input"
        ),
        sa.CheckConstraint(
            "image_param_type IN ('single', 'array')", name="models_image_param_type"
        ),
        sa.CheckConstraint(
            "base_cost_micros >= 0 AND input_cost_micros_per_1k >= 0 "
            "AND output_cost_micros_per_1k >= 0",
            name="models_costs_not_negative",
        ),
        sa.CheckConstraint("max_wait_seconds > 0", name="models_max_wait_positive"),
    )
    op.create_index("models_type_order", "models", ["type", "display_order"])

    op.create_table(
        "pricing_settings",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        _margin("profit_margin"),
        _margin("profit_margin_image"),
        _margin("profit_margin_video"),
        _margin("profit_margin_chat"),
        sa.Column(
            "credit_price_micros",
            sa.BigInteger,
            nullable=False,
            server_default="1000000",
        ),
        _timestamp("updated_at"),
        sa.Column("updated_by", sa.String(200)),
        sa.CheckConstraint("id = 1", name="pricing_settings_single_row"),
        sa.CheckConstraint(
            "credit_price_micros > 0", name="pricing_settings_credit_price_positive"
        ),
    )
    # Margins 0 %, one US dollar per credit: the original's seeded settings.
    op.execute("INSERT INTO pricing_settings (id) VALUES (1)")

    op.create_table(
        "catalog_state",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="catalog_state_single_row"),
    )
    op.execute("INSERT INTO catalog_state (id, version) VALUES (1, 1)")


def downgrade() -> None:
    op.drop_table("catalog_state")
    op.drop_table("pricing_settings")
    op.drop_table("models")
