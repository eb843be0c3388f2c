"""Operators' reports and plan editing: plans can be taken off sale
(`active`), and indexes let revenue and credit figures of a day or a month
read that range instead of the whole table, and let every user's payments
and the subscriptions be listed newest first.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

# Ledger kinds that bring credits in; holds, captures, releases and
# transfers (the bulk of the ledger) are reported from the holds instead.
INFLOW_KINDS = "kind IN ('purchase', 'grant', 'refund', 'adjustment')"


def upgrade() -> None:
    op.add_column(
        "plans",
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_index(
        "payments_completed",
        "payments",
        ["completed_at"],
        postgresql_where=sa.text("status = 'completed'"),
    )
    op.create_index(
        "payments_newest_first",
        "payments",
        [sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ledger_entries_inflow_by_time",
        "ledger_entries",
        ["created_at"],
        postgresql_where=sa.text(INFLOW_KINDS),
    )
    op.create_index(
        "holds_captured_by_time",
        "holds",
        ["settled_at"],
        postgresql_where=sa.text("status = 'captured'"),
    )
    op.create_index(
        "subscriptions_recently_changed",
        "subscriptions",
        [sa.text("updated_at DESC"), sa.text("user_id DESC")],
    )


def downgrade() -> None:
    op.drop_index("subscriptions_recently_changed", table_name="subscriptions")
    op.drop_index("holds_captured_by_time", table_name="holds")
    op.drop_index("ledger_entries_inflow_by_time", table_name="ledger_entries")
    op.drop_index("payments_newest_first", table_name="payments")
    op.drop_index("payments_completed", table_name="payments")
    op.drop_column("plans", "active")
