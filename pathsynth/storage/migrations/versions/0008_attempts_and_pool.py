"""Nothing lost on a crash, one stock for several replicas (issue 31): attempts in progress and the image pool.

Until now a quiz lived only in the app process (``gr.State``): a crash or a redeploy lost the learner's place and an
exam's clock. ``quiz_progress`` holds each identified learner's current attempt: ``kind`` is ``'quiz'`` (the Quiz
tab's quiz or exam: its questions' images and heatmaps as a compressed NumPy archive, the rest as JSON) or
``'assignment'`` (the assignment open in the Assignments tab: its code; the answers are in ``answers`` already).
Starting another attempt of the same kind replaces the row. The learner's row owns it (``ON DELETE CASCADE``).

``pool_images`` is the verified-image pool's stock (``pathsynth.stock.DatabaseStock``): each image ready to hand
out, with its classifier record, its heatmap and the fingerprint of the classifier that verified it (``models``).
Replicas take rows (deleting them; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), the app or workers insert them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

NUM_TISSUES = 9  # PathMNIST's tissues when this revision was written (a migration never follows later code)

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quiz_progress",
        sa.Column("learner_id", sa.Integer, sa.ForeignKey("learners.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("attempt_id", sa.Text, nullable=False),
        sa.Column("saved_at", sa.Text, nullable=False),
        sa.Column("state_json", sa.Text, nullable=False),
        sa.Column("images_npz", sa.LargeBinary, nullable=False),
        sa.CheckConstraint("kind IN ('quiz', 'assignment')", name="quiz_progress_kind"),
    )
    op.create_table(
        "pool_images",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("models", sa.Text, nullable=False),
        sa.Column("tissue", sa.Integer, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("realism", sa.Float, nullable=False),
        sa.Column("made_at", sa.Text, nullable=False),
        sa.Column("record_json", sa.Text, nullable=False),
        sa.Column("image_npy", sa.LargeBinary, nullable=False),
        sa.Column("heatmap_npy", sa.LargeBinary),
        sa.CheckConstraint(f"tissue BETWEEN 0 AND {NUM_TISSUES - 1}", name="pool_images_tissue"),
        sa.Index("pool_images_by_tissue", "models", "tissue", "id"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("pool_images")
    op.drop_table("quiz_progress")
