"""Learners and their answers: what each learner answered, for progress and spaced repetition (issue 16).

Two new tables, nothing existing changes. ``learners.key`` is ``local:<name>`` or ``hf:<username>``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NUM_TISSUES = 9  # frozen here: a migration must not change when the catalogue does


def upgrade() -> None:
    op.create_table(
        "learners",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "answers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("learner_id", sa.Integer, sa.ForeignKey("learners.id", ondelete="CASCADE"), nullable=False),
        sa.Column("answered_at", sa.Text, nullable=False),
        sa.Column("tissue", sa.Integer, nullable=False),
        sa.Column("chosen", sa.Integer, nullable=False),
        sa.Column("correct", sa.Boolean, nullable=False),
        sa.Column("seconds", sa.Float),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("quiz_id", sa.Text, nullable=False, server_default=""),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("real_index", sa.Integer),
        sa.Column("gallery_item_id", sa.Integer),
        sa.CheckConstraint(f"tissue BETWEEN 0 AND {NUM_TISSUES - 1}", name="answers_tissue"),
        sa.CheckConstraint(f"chosen BETWEEN 0 AND {NUM_TISSUES - 1}", name="answers_chosen"),
        sqlite_autoincrement=True,
    )
    op.create_index("answers_by_learner", "answers", ["learner_id", "answered_at"])


def downgrade() -> None:
    op.drop_table("answers")
    op.drop_table("learners")
