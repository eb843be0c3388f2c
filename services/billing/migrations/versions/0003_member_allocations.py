"""Member allocations: accounts may belong to one member of one workspace
(owner type `member`), and usage reports find captured holds by their tags.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("accounts_owner_type", "accounts", type_="check")
    op.create_check_constraint(
        "accounts_owner_type",
        "accounts",
        "owner_type IN ('user', 'workspace', 'member')",
    )
    op.create_index(
        "holds_captured_tags",
        "holds",
        ["tags"],
        postgresql_using="gin",
        postgresql_ops={"tags": "jsonb_path_ops"},
        postgresql_where=sa.text("status = 'captured'"),
    )


def downgrade() -> None:
    op.drop_index("holds_captured_tags", "holds")
    op.drop_constraint("accounts_owner_type", "accounts", type_="check")
    op.create_check_constraint(
        "accounts_owner_type", "accounts", "owner_type IN ('user', 'workspace')"
    )
