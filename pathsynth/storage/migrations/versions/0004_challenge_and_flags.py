"""Real-or-synthetic votes and flagged images (issue 16): what trainees think of the tiles they are shown.

Two new tables, nothing existing changes. Both keep the tile's provenance (``source`` real/generated/uploaded,
the generator ``seed``, the index in the bundled real sample or the gallery item) so an instructor can find it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NUM_TISSUES = 9  # frozen here: a migration must not change when the catalogue does


def _learner() -> sa.Column:
    return sa.Column("learner_id", sa.Integer, sa.ForeignKey("learners.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "challenge_votes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _learner(),
        sa.Column("voted_at", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("real_index", sa.Integer),
        sa.Column("tissue", sa.Integer, nullable=False),
        sa.Column("truly_synthetic", sa.Boolean, nullable=False),
        sa.Column("guessed_synthetic", sa.Boolean, nullable=False),
        sa.CheckConstraint(f"tissue BETWEEN 0 AND {NUM_TISSUES - 1}", name="challenge_votes_tissue"),
        sqlite_autoincrement=True,
    )
    op.create_index("challenge_votes_by_tissue", "challenge_votes", ["tissue"])
    op.create_table(
        "flags",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _learner(),
        sa.Column("flagged_at", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("real_index", sa.Integer),
        sa.Column("gallery_item_id", sa.Integer),
        sa.Column("tissue", sa.Integer, nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.CheckConstraint(f"tissue BETWEEN 0 AND {NUM_TISSUES - 1}", name="flags_tissue"),
        sqlite_autoincrement=True,
    )
    op.create_index("flags_by_time", "flags", ["flagged_at"])


def downgrade() -> None:
    op.drop_table("flags")
    op.drop_table("challenge_votes")
