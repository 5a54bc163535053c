"""A domain per gallery, assignment, answer, challenge vote and flag (issue 33: chest X-rays beside histology).

Each row names the imaging domain its class indices belong to: medmnist's flag, ``'pathmnist'`` (histology, the
only domain so far, so every existing row) or ``'pneumoniamnist'`` (chest X-ray). A gallery or an assignment holds one
domain; an answer's ``tissue`` and ``chosen`` are indices into its domain's classes. No check constraint lists the
domains: adding one is a catalogue (``pathsynth.domains``), not a migration.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TABLES = ("galleries", "assignments", "answers", "challenge_votes", "flags")


def upgrade() -> None:
    for table in TABLES:  # NOT NULL with a default: SQLite's ALTER TABLE fills existing rows with it
        op.add_column(table, sa.Column("domain", sa.Text, nullable=False, server_default="pathmnist"))


def downgrade() -> None:
    for table in TABLES:  # in place (SQLite 3.35+): batch mode's table copy would lose 0007's expression indexes
        op.execute(f"ALTER TABLE {table} DROP COLUMN domain")
