"""Settings, feature flags, announcements, audit trail, admin tasks, error
log, user notes and rate-limit rules.

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import INET, JSONB, UUID

revision: str = "0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

# What happened may not change; only the outcome of a pending entry may.
AUDIT_APPEND_ONLY = """
CREATE FUNCTION audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit_log is append-only';
    END IF;
    IF (NEW.actor_id, NEW.action, NEW.target_type, NEW.target_id, NEW.before,
        NEW.created_at, NEW.client_address)
       IS DISTINCT FROM
       (OLD.actor_id, OLD.action, OLD.target_type, OLD.target_id, OLD.before,
        OLD.created_at, OLD.client_address)
       OR OLD.status <> 'pending' THEN
        RAISE EXCEPTION 'audit_log is append-only';
    END IF;
    RETURN NEW;
END
$$
"""
# asyncpg runs one command per statement: the trigger is a second one.
AUDIT_APPEND_ONLY_TRIGGER = """
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_append_only()
"""


def _at(name: str, *, nullable: bool = True) -> sa.Column[object]:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True))
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def upgrade() -> None:
    _create_configuration()
    _create_audit()
    _create_records()


def _create_configuration() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", JSONB, nullable=False),
        sa.Column("updated_by", sa.Text),
        _at("updated_at", nullable=False),
    )
    op.create_table(
        "feature_flags",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("enabled", sa.Boolean, server_default=sa.false(), nullable=False),
        sa.Column("description", sa.Text, server_default="", nullable=False),
        sa.Column("updated_by", sa.Text),
        _at("updated_at", nullable=False),
    )
    op.create_table(
        "announcements",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, server_default="", nullable=False),
        sa.Column("audience", sa.String(16), server_default="all", nullable=False),
        sa.Column("severity", sa.String(16), server_default="info", nullable=False),
        sa.Column("active", sa.Boolean, server_default=sa.true(), nullable=False),
        _at("starts_at", nullable=False),
        _at("expires_at"),
        sa.Column("created_by", sa.Text, nullable=False),
        _at("created_at", nullable=False),
        _at("updated_at", nullable=False),
        sa.CheckConstraint(
            "audience IN ('all', 'users', 'admins')", name="announcement_audience"
        ),
        sa.CheckConstraint(
            "severity IN ('info', 'warning', 'error', 'critical')",
            name="announcement_severity",
        ),
    )
    op.create_index("announcements_live", "announcements", ["starts_at", "expires_at"])
    op.create_table(
        "rate_limit_rules",
        sa.Column("subject", sa.String(80), primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("window_seconds", sa.Integer, nullable=False),
        sa.Column("updated_by", sa.Text),
        _at("updated_at", nullable=False),
    )


def _create_audit() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("actor_id", sa.Text, nullable=False),
        sa.Column("actor_name", sa.Text, server_default="", nullable=False),
        sa.Column("actor_role", sa.String(16), server_default="", nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.Text, server_default="", nullable=False),
        sa.Column("before", JSONB),
        sa.Column("after", JSONB),
        sa.Column("client_address", INET),
        sa.Column("request_id", sa.Text),
        sa.Column("status", sa.String(16), server_default="applied", nullable=False),
        sa.Column("error", sa.Text),
        _at("created_at", nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'applied', 'failed')", name="audit_status"
        ),
    )
    by_time = [sa.text("created_at DESC")]
    op.create_index("audit_by_time", "audit_log", [*by_time, sa.text("id DESC")])
    op.create_index("audit_by_actor", "audit_log", ["actor_id", *by_time])
    op.create_index(
        "audit_by_target", "audit_log", ["target_type", "target_id", *by_time]
    )
    op.create_index("audit_by_action", "audit_log", ["action", *by_time])
    op.execute(AUDIT_APPEND_ONLY)
    op.execute(AUDIT_APPEND_ONLY_TRIGGER)
    op.create_table(
        "admin_tasks",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("audit_id", sa.BigInteger),
        sa.Column("state", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer, server_default="0", nullable=False),
        _at("next_attempt_at", nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("result", JSONB),
        _at("created_at", nullable=False),
        _at("done_at"),
        sa.CheckConstraint(
            "state IN ('pending', 'done', 'failed')", name="admin_task_state"
        ),
    )
    op.create_index(
        "admin_tasks_due",
        "admin_tasks",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )


def _create_records() -> None:
    op.create_table(
        "error_log",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), server_default="error", nullable=False),
        sa.Column("code", sa.String(64), server_default="", nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text),
        sa.Column("reference_id", sa.Text),
        sa.Column("details", JSONB, server_default="{}", nullable=False),
        _at("created_at", nullable=False),
        _at("resolved_at"),
        sa.Column("resolved_by", sa.Text),
        sa.CheckConstraint(
            "severity IN ('info', 'warning', 'error', 'critical')",
            name="error_severity",
        ),
    )
    op.create_index(
        "errors_by_time", "error_log", [sa.text("created_at DESC"), sa.text("id DESC")]
    )
    op.create_index(
        "errors_unresolved",
        "error_log",
        [sa.text("created_at DESC")],
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_table(
        "user_notes",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("author_id", sa.Text, nullable=False),
        sa.Column("author_name", sa.Text, server_default="", nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        _at("created_at", nullable=False),
    )
    op.create_index(
        "notes_by_user", "user_notes", ["user_id", sa.text("created_at DESC")]
    )


def downgrade() -> None:
    for table in (
        "user_notes",
        "error_log",
        "admin_tasks",
        "audit_log",
        "rate_limit_rules",
        "announcements",
        "feature_flags",
        "settings",
    ):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
