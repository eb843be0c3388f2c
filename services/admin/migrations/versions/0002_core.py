"""Rate-limit counters, and the feature flags the services enforce.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

# The flags some service enforces, in the state a new platform starts in.
ENFORCED_FLAGS = (
    (
        "video_generation",
        True,
        "Video generations may be started (the generation service refuses "
        "them while off).",
    ),
    (
        "community_gallery",
        True,
        "The community gallery may be read and published to (the generation "
        "service refuses while off).",
    ),
    (
        "maintenance_mode",
        False,
        "The gateway answers 503 with the maintenance message on every route "
        "but health, admin and settings while on.",
    ),
)


def upgrade() -> None:
    op.create_table(
        "rate_limit_counters",
        sa.Column("subject", sa.String(80), primary_key=True),
        sa.Column("allowed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("rate_limit_counters_idle", "rate_limit_counters", ["allowed_at"])
    flags = sa.table(
        "feature_flags",
        sa.column("key", sa.String),
        sa.column("enabled", sa.Boolean),
        sa.column("description", sa.Text),
    )
    op.bulk_insert(
        flags,
        [
            {"key": key, "enabled": enabled, "description": description}
            for key, enabled, description in ENFORCED_FLAGS
        ],
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM feature_flags WHERE key IN "
        "('video_generation', 'community_gallery', 'maintenance_mode')"
    )
    op.drop_table("rate_limit_counters")
