"""Profiles: a bio, whether the profile is public, and nicknames unique
regardless of letter case.

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
    op.add_column("users", sa.Column("bio", sa.String(500)))
    op.add_column(
        "users",
        sa.Column(
            "is_public_profile",
            sa.Boolean,
            nullable=False,
            server_default=sa.false(),
        ),
    )
    # "Ann" and "ann" would read as one person in the community; the
    # original unique constraint only kept exact spellings apart.
    op.create_index(
        "users_nickname_lower",
        "users",
        [sa.text("lower(nickname)")],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("users_nickname_lower", table_name="users")
    op.drop_column("users", "is_public_profile")
    op.drop_column("users", "bio")
