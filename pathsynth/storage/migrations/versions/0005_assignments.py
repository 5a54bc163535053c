"""Assignments: an instructor's fixed set of questions behind a share code, and answers that point at them (issue 17).

Two new tables (``assignments``, ``assignment_questions``, the images stored in the rows as gallery items are)
and three nullable columns on ``answers``: an assignment answer is an ordinary answer of the learner (so it counts
in their progress) that also names its assignment, question and whether it came after the due date. A unique
index allows one answer per learner and assignment question (NULLs, i.e. every other answer, never collide).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NUM_TISSUES = 9  # frozen here: a migration must not change when the catalogue does


def upgrade() -> None:
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("due_at", sa.Text),
        sa.Column("created_by", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("gallery_id", sa.Integer),
        sa.CheckConstraint("mode IN ('practice', 'exam')", name="assignments_mode"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "assignment_questions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("assignment_id", sa.Integer, sa.ForeignKey("assignments.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("tissue", sa.Integer, nullable=False),
        sa.Column("caption", sa.Text, nullable=False, server_default=""),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("gallery_item_id", sa.Integer),
        sa.Column("meta_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("image_png", sa.LargeBinary, nullable=False),
        sa.CheckConstraint(f"tissue BETWEEN 0 AND {NUM_TISSUES - 1}", name="assignment_questions_tissue"),
        sa.UniqueConstraint("assignment_id", "position", name="assignment_questions_position"),
        sqlite_autoincrement=True,
    )
    # no foreign keys on the new answer columns: SQLite cannot add one in place, and an answer stays in the
    # learner's history whatever happens to the assignment (as with gallery_item_id)
    op.add_column("answers", sa.Column("assignment_id", sa.Integer))
    op.add_column("answers", sa.Column("assignment_question_id", sa.Integer))
    op.add_column("answers", sa.Column("late", sa.Boolean))
    op.create_index("answers_by_assignment", "answers", ["assignment_id"])
    op.create_index("answers_one_per_assignment_question", "answers", ["learner_id", "assignment_question_id"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("answers_one_per_assignment_question", "answers")
    op.drop_index("answers_by_assignment", "answers")
    with op.batch_alter_table("answers") as batch:  # SQLite: a table copy, the portable way to drop columns
        batch.drop_column("late")
        batch.drop_column("assignment_question_id")
        batch.drop_column("assignment_id")
    op.drop_table("assignment_questions")
    op.drop_table("assignments")
