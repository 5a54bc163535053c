"""Several instructors (issue 17): accounts with argon2 password hashes, an audit log, private galleries.

Two new tables and one column. ``instructors`` holds local accounts (``pathsynth instructors add NAME``); names
are stored in lower case, so the plain unique constraint makes them unique without regard to case on both
backends. ``audit_log`` gets one row per instructor write (who, what, on which gallery, item, assignment or
account, when). ``galleries.visibility`` is ``'shared'`` (the default: every existing gallery stays as it was)
or ``'private'`` (listed and opened only by its ``created_by``).

The column is added with plain ``ALTER TABLE ... ADD COLUMN``, constraint included, on both backends: a batch
copy of ``galleries`` would have to recreate the release-1 ``COLLATE NOCASE`` name on SQLite.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instructors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.Text, nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.CheckConstraint("username = lower(username)", name="instructors_username_lower"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target_kind", sa.Text, nullable=False),
        sa.Column("target_id", sa.BigInteger),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Index("audit_log_by_actor", "actor"),
        sqlite_autoincrement=True,
    )
    op.execute("ALTER TABLE galleries ADD COLUMN visibility TEXT NOT NULL DEFAULT 'shared' "
               "CONSTRAINT galleries_visibility CHECK (visibility IN ('shared', 'private'))")


def downgrade() -> None:
    op.execute("ALTER TABLE galleries DROP COLUMN visibility")  # SQLite >= 3.35 drops a column in place
    op.drop_table("audit_log")
    op.drop_table("instructors")
