"""The tables at the head revision, as typed SQLAlchemy models (the migrations in ``migrations/`` build them).

Timestamps are ISO-8601 text (UTC, milliseconds), as the first version stored them, so old rows need no rewrite.
Gallery names are unique without regard to case among shared galleries, and among each owner's private ones
(revision 0007: partial unique indexes on ``lower(...)``, which folds ASCII letters only; lookups use ``lower()``
too). Another instructor's private gallery never blocks a name, so a refused name reveals nothing private.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, LargeBinary, Text,
                        UniqueConstraint, false, func, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..tissues import NUM_TISSUES


class Base(DeclarativeBase):
    pass


class GalleryRow(Base):
    __tablename__ = "galleries"
    __table_args__ = (CheckConstraint("visibility IN ('shared', 'private')", name="galleries_visibility"),
                      {"sqlite_autoincrement": True})  # ids are never reused: links to a deleted gallery stay dead

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    created_by: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    created_at: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[str] = mapped_column(Text, nullable=False)
    # revision 0006: "shared" (everyone) or "private" (listed and opened by its ``created_by`` only)
    visibility: Mapped[str] = mapped_column(Text, nullable=False, server_default="shared")
    # revision 0009: the imaging domain (medmnist flag) its class indices belong to
    domain: Mapped[str] = mapped_column(Text, nullable=False, server_default="pathmnist")


def _where(condition: str) -> dict:
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


# revision 0007: names unique among shared galleries, and among one owner's private galleries
Index("galleries_shared_name", func.lower(GalleryRow.name), unique=True, **_where("visibility = 'shared'"))
Index("galleries_private_name", func.lower(GalleryRow.created_by), func.lower(GalleryRow.name), unique=True,
      **_where("visibility = 'private'"))


class ItemRow(Base):
    __tablename__ = "items"
    __table_args__ = (CheckConstraint(f"tissue BETWEEN 0 AND {NUM_TISSUES - 1}"), Index("items_by_gallery", "gallery_id", "position"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    gallery_id: Mapped[int] = mapped_column(Integer, ForeignKey("galleries.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    caption: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    tissue: Mapped[int] = mapped_column(Integer, nullable=False)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    meta_json: Mapped[str] = mapped_column(Text, nullable=False, server_default="{}")
    # The lossless PNG itself: every replica of a PostgreSQL deployment sees it, and a row and its image are
    # written in one transaction, so neither can exist without the other (revision 0002 moved the files here).
    image_png: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[str] = mapped_column(Text, nullable=False)


class LearnerRow(Base):
    """Someone practising: ``key`` is ``local:<name>`` (a name typed in the app, no password) or ``hf:<username>``
    (a Hugging Face login on Spaces), case-folded so "Ana" and "ana" are one learner."""

    __tablename__ = "learners"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    display_name: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[str] = mapped_column(Text, nullable=False)


class AnswerRow(Base):
    """One answered quiz question: what was shown (provenance), the key, the choice and how long it took."""

    __tablename__ = "answers"
    __table_args__ = (CheckConstraint(f"tissue BETWEEN 0 AND {NUM_TISSUES - 1}", name="answers_tissue"),
                      CheckConstraint(f"chosen BETWEEN 0 AND {NUM_TISSUES - 1}", name="answers_chosen"),
                      Index("answers_by_learner", "learner_id", "answered_at"),
                      Index("answers_by_assignment", "assignment_id"),
                      Index("answers_one_per_assignment_question", "learner_id", "assignment_question_id", unique=True),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    learner_id: Mapped[int] = mapped_column(Integer, ForeignKey("learners.id", ondelete="CASCADE"), nullable=False)
    answered_at: Mapped[str] = mapped_column(Text, nullable=False)
    tissue: Mapped[int] = mapped_column(Integer, nullable=False)  # the answer key
    chosen: Mapped[int] = mapped_column(Integer, nullable=False)
    correct: Mapped[bool] = mapped_column(Boolean, nullable=False)
    seconds: Mapped[float | None] = mapped_column(Float)  # time taken; None when unknown
    mode: Mapped[str] = mapped_column(Text, nullable=False)  # practice, weak, gallery, retry
    quiz_id: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    source: Mapped[str] = mapped_column(Text, nullable=False)  # real, generated, uploaded
    seed: Mapped[int | None] = mapped_column(BigInteger)  # regenerates a generated tile
    real_index: Mapped[int | None] = mapped_column(Integer)  # index in the real tiles the app showed (Services.real_images)
    # no foreign key: the answer stays in the learner's history when an instructor deletes the gallery item
    gallery_item_id: Mapped[int | None] = mapped_column(Integer)
    # revision 0005: set for answers to an assignment (no foreign keys, as above); one per learner and question
    assignment_id: Mapped[int | None] = mapped_column(Integer)
    assignment_question_id: Mapped[int | None] = mapped_column(Integer)
    late: Mapped[bool | None] = mapped_column(Boolean)  # answered after the assignment's due date
    # revision 0009: the imaging domain (medmnist flag) its class indices belong to
    domain: Mapped[str] = mapped_column(Text, nullable=False, server_default="pathmnist")


class QuizProgressRow(Base):
    """A learner's attempt in progress (revision 0008), so a crash or a restart loses none of it: ``kind`` 'quiz'
    (the Quiz tab's quiz or exam: images and heatmaps in ``images_npz``, the rest in ``state_json``) or
    'assignment' (the open assignment's code; its answers are ``AnswerRow`` rows). One row per learner and kind."""

    __tablename__ = "quiz_progress"
    __table_args__ = (CheckConstraint("kind IN ('quiz', 'assignment')", name="quiz_progress_kind"),)

    learner_id: Mapped[int] = mapped_column(Integer, ForeignKey("learners.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    attempt_id: Mapped[str] = mapped_column(Text, nullable=False)  # the quiz's id, or the assignment's code
    saved_at: Mapped[str] = mapped_column(Text, nullable=False)
    state_json: Mapped[str] = mapped_column(Text, nullable=False)
    images_npz: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class PoolImageRow(Base):
    """One verified image in the pool's stock (revision 0008, ``pathsynth.stock.DatabaseStock``): ready to hand out,
    with its classifier record (JSON), its heatmap, and the fingerprint of the classifier that verified it."""

    __tablename__ = "pool_images"
    __table_args__ = (CheckConstraint(f"tissue BETWEEN 0 AND {NUM_TISSUES - 1}", name="pool_images_tissue"),
                      Index("pool_images_by_tissue", "models", "tissue", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    models: Mapped[str] = mapped_column(Text, nullable=False)
    tissue: Mapped[int] = mapped_column(Integer, nullable=False)
    seed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    confidence: Mapped[float] = mapped_column(Float, nullable=False)
    realism: Mapped[float] = mapped_column(Float, nullable=False)
    made_at: Mapped[str] = mapped_column(Text, nullable=False)
    record_json: Mapped[str] = mapped_column(Text, nullable=False)  # VerifiedImage.to_dict() without the above
    image_npy: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # uint8 (S, S, 3), ``np.save``
    heatmap_npy: Mapped[bytes | None] = mapped_column(LargeBinary)  # float32, ``np.save``; None: not explained


class AssignmentRow(Base):
    """An instructor's assignment: a title, practice or exam, an optional due date and the code learners type."""

    __tablename__ = "assignments"
    __table_args__ = (CheckConstraint("mode IN ('practice', 'exam')", name="assignments_mode"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    mode: Mapped[str] = mapped_column(Text, nullable=False)
    due_at: Mapped[str | None] = mapped_column(Text)  # ISO-8601 UTC; None: no due date
    created_by: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    created_at: Mapped[str] = mapped_column(Text, nullable=False)
    gallery_id: Mapped[int | None] = mapped_column(Integer)  # where the questions came from (provenance only)
    # revision 0009: the imaging domain (medmnist flag) its class indices belong to
    domain: Mapped[str] = mapped_column(Text, nullable=False, server_default="pathmnist")


class AssignmentQuestionRow(Base):
    """One fixed question of an assignment: its image (PNG, copied in, so every learner gets the same one) and key."""

    __tablename__ = "assignment_questions"
    __table_args__ = (CheckConstraint(f"tissue BETWEEN 0 AND {NUM_TISSUES - 1}", name="assignment_questions_tissue"),
                      UniqueConstraint("assignment_id", "position", name="assignment_questions_position"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assignment_id: Mapped[int] = mapped_column(Integer, ForeignKey("assignments.id", ondelete="CASCADE"),
                                               nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    tissue: Mapped[int] = mapped_column(Integer, nullable=False)
    caption: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    source: Mapped[str] = mapped_column(Text, nullable=False)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    gallery_item_id: Mapped[int | None] = mapped_column(Integer)
    meta_json: Mapped[str] = mapped_column(Text, nullable=False, server_default="{}")
    image_png: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class ChallengeVoteRow(Base):
    """One "real or synthetic?" guess: which tile it was (provenance), its tissue, the truth and the guess."""

    __tablename__ = "challenge_votes"
    __table_args__ = (CheckConstraint(f"tissue BETWEEN 0 AND {NUM_TISSUES - 1}", name="challenge_votes_tissue"),
                      Index("challenge_votes_by_tissue", "tissue"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    learner_id: Mapped[int] = mapped_column(Integer, ForeignKey("learners.id", ondelete="CASCADE"), nullable=False)
    voted_at: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)  # real, generated
    seed: Mapped[int | None] = mapped_column(BigInteger)
    real_index: Mapped[int | None] = mapped_column(Integer)
    tissue: Mapped[int] = mapped_column(Integer, nullable=False)
    truly_synthetic: Mapped[bool] = mapped_column(Boolean, nullable=False)
    guessed_synthetic: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # revision 0009: the imaging domain (medmnist flag) its class indices belong to
    domain: Mapped[str] = mapped_column(Text, nullable=False, server_default="pathmnist")


class FlagRow(Base):
    """An image a learner flagged as wrong or odd, with their note (stored verbatim, escaped when shown)."""

    __tablename__ = "flags"
    __table_args__ = (CheckConstraint(f"tissue BETWEEN 0 AND {NUM_TISSUES - 1}", name="flags_tissue"),
                      Index("flags_by_time", "flagged_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    learner_id: Mapped[int] = mapped_column(Integer, ForeignKey("learners.id", ondelete="CASCADE"), nullable=False)
    flagged_at: Mapped[str] = mapped_column(Text, nullable=False)
    context: Mapped[str] = mapped_column(Text, nullable=False)  # where it was flagged: quiz, challenge
    source: Mapped[str] = mapped_column(Text, nullable=False)  # real, generated, uploaded
    seed: Mapped[int | None] = mapped_column(BigInteger)
    real_index: Mapped[int | None] = mapped_column(Integer)
    gallery_item_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key, as answers.gallery_item_id
    tissue: Mapped[int] = mapped_column(Integer, nullable=False)  # the tile's answer key when it was flagged
    # revision 0009: the imaging domain (medmnist flag) its class indices belong to
    domain: Mapped[str] = mapped_column(Text, nullable=False, server_default="pathmnist")
    note: Mapped[str] = mapped_column(Text, nullable=False, server_default="")


class InstructorRow(Base):
    """A local instructor account (``pathsynth instructors add``): the name in lower case, an argon2 hash."""

    __tablename__ = "instructors"
    __table_args__ = (CheckConstraint("username = lower(username)", name="instructors_username_lower"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    created_at: Mapped[str] = mapped_column(Text, nullable=False)


class AuditRow(Base):
    """One instructor write: who (the signed-in name), what, on which gallery/item/assignment/account, when."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("audit_log_by_actor", "actor"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[str] = mapped_column(Text, nullable=False)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[str] = mapped_column(Text, nullable=False)  # create, rename, delete, add_items, caption...
    target_kind: Mapped[str] = mapped_column(Text, nullable=False)  # gallery, item, assignment, account
    target_id: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
