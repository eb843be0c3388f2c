"""The trace context of the request that created a job, so that the worker's
steps join that request's trace.

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
    op.add_column("jobs", sa.Column("trace_context", sa.Text))


def downgrade() -> None:
    op.drop_column("jobs", "trace_context")
