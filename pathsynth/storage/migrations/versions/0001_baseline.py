"""Baseline: the schema of the first release (galleries + items, PNGs as files under ``home/images``).

On SQLite these are exactly the statements that release ran, so a database it made matches this revision and is
stamped here without change. PostgreSQL gets the same tables; case-insensitive unique names come from a unique
index on ``lower(name)`` (PostgreSQL has no NOCASE collation).

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS galleries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE COLLATE NOCASE,
    description TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS items (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery_id  INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    caption     TEXT NOT NULL DEFAULT '',
    tissue      INTEGER NOT NULL CHECK (tissue BETWEEN 0 AND 8),
    seed        INTEGER,
    source      TEXT NOT NULL,
    meta_json   TEXT NOT NULL DEFAULT '{}',
    image_file  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS items_by_gallery ON items (gallery_id, position)",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_SCHEMA:
            op.execute(statement)
        return
    op.create_table(
        "galleries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_by", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_index("galleries_name_key", "galleries", [sa.text("lower(name)")], unique=True)
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("gallery_id", sa.Integer, sa.ForeignKey("galleries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("caption", sa.Text, nullable=False, server_default=""),
        sa.Column("tissue", sa.Integer, sa.CheckConstraint("tissue BETWEEN 0 AND 8"), nullable=False),
        sa.Column("seed", sa.BigInteger),  # the first release allowed seeds up to 2**63 - 1
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("meta_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("image_file", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.Text, nullable=False),
    )
    op.create_index("items_by_gallery", "items", ["gallery_id", "position"])


def downgrade() -> None:
    op.drop_table("items")
    op.drop_table("galleries")
