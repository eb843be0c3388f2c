"""Credit accounts, the append-only ledger, holds, idempotent operations and
the billing settings row (sign-up credits: 10 credits).

Payments and plans come in a later revision; the ledger already knows the
`purchase` kind they will write.

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

SIGNUP_CREDITS_MICROS = 10_000_000


def _created_at() -> sa.Column[object]:
    return sa.Column(
        "created_at",
        sa.DateTime(timezone=True),
        server_default=sa.func.now(),
        nullable=False,
    )


def _updated_at() -> sa.Column[object]:
    return sa.Column(
        "updated_at",
        sa.DateTime(timezone=True),
        server_default=sa.func.now(),
        nullable=False,
    )


def _text(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.Text, nullable=False, server_default="")


def _tags() -> sa.Column[object]:
    return sa.Column(
        "tags", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
    )


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("owner_type", sa.String(16), nullable=False),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("balance", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("held", sa.BigInteger, nullable=False, server_default="0"),
        _created_at(),
        _updated_at(),
        sa.UniqueConstraint("owner_type", "owner_id", name="accounts_owner"),
        sa.CheckConstraint(
            "owner_type IN ('user', 'workspace')", name="accounts_owner_type"
        ),
        sa.CheckConstraint("balance >= 0", name="accounts_balance_not_negative"),
        sa.CheckConstraint("held >= 0", name="accounts_held_not_negative"),
    )
    op.create_table(
        "operations",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(32), nullable=False),
        sa.Column("result", JSONB),
        _created_at(),
    )
    op.create_table(
        "holds",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("account_id", UUID, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("captured", sa.BigInteger),
        sa.Column("status", sa.String(16), nullable=False, server_default="held"),
        _text("reason"),
        _text("reference"),
        _tags(),
        _created_at(),
        sa.Column("settled_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("amount > 0", name="holds_amount_positive"),
        sa.CheckConstraint(
            "status IN ('held', 'captured', 'released')", name="holds_status"
        ),
        sa.CheckConstraint(
            "(status = 'held') = (settled_at IS NULL)", name="holds_settled_at"
        ),
        sa.CheckConstraint(
            "captured IS NULL OR captured BETWEEN 0 AND amount",
            name="holds_captured_within_amount",
        ),
    )
    op.create_index(
        "holds_open_by_account",
        "holds",
        ["account_id"],
        postgresql_where=sa.text("status = 'held'"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("account_id", UUID, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("balance_after", sa.BigInteger, nullable=False),
        _text("reason"),
        _text("reference"),
        _tags(),
        sa.Column("hold_id", UUID, sa.ForeignKey("holds.id")),
        sa.Column(
            "operation_key", sa.Text, sa.ForeignKey("operations.key"), nullable=False
        ),
        _created_at(),
        sa.CheckConstraint(
            "kind IN ('grant', 'purchase', 'hold', 'capture', 'release', "
            "'refund', 'transfer', 'adjustment')",
            name="ledger_entries_kind",
        ),
        sa.CheckConstraint(
            "balance_after >= 0", name="ledger_entries_balance_after_not_negative"
        ),
    )
    op.create_index(
        "ledger_entries_account_history",
        "ledger_entries",
        ["account_id", sa.text("id DESC")],
    )
    _refuse_ledger_changes()
    op.create_table(
        "settings",
        sa.Column("id", sa.SmallInteger, primary_key=True),
        sa.Column("signup_credits_micros", sa.BigInteger, nullable=False),
        _updated_at(),
        sa.CheckConstraint("id = 1", name="settings_single_row"),
        sa.CheckConstraint(
            "signup_credits_micros >= 0", name="settings_signup_credits_not_negative"
        ),
    )
    op.execute(
        sa.text(
            "INSERT INTO settings (id, signup_credits_micros) VALUES (1, :micros)"
        ).bindparams(micros=SIGNUP_CREDITS_MICROS)
    )


def _refuse_ledger_changes() -> None:
    """Make the ledger append-only in the database itself, whatever the code
    or an operator's console tries: corrections are new entries."""
    op.execute(
        """
        CREATE FUNCTION ledger_entries_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger entries are append-only (% refused)', TG_OP
                USING ERRCODE = 'restrict_violation';
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER ledger_entries_append_only
        BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_entries
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only()
        """
    )


def downgrade() -> None:
    op.drop_table("settings")
    op.execute("DROP TRIGGER ledger_entries_append_only ON ledger_entries")
    op.execute("DROP FUNCTION ledger_entries_append_only()")
    op.drop_table("ledger_entries")
    op.drop_table("holds")
    op.drop_table("operations")
    op.drop_table("accounts")
