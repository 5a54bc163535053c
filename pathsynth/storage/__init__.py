"""Persistence for PathSynth: SQLAlchemy models, the engine factory and the Alembic migrations shipped here.

``open_database(url)`` returns a ``Database`` upgraded to the head revision. The URL is a SQLite file by
default (``sqlite:////home/.../galleries.sqlite3``) or PostgreSQL for a deployment with several replicas
(``postgresql+psycopg://user:password@host/db``). Domain rules (validation, what a gallery is) stay in the
modules that use this package, e.g. ``pathsynth.gallery``.
"""

from .database import (BASELINE_REVISION, Database, StorageError, alembic_config, migrating, normalise_url,
                       now_stamp, open_database, remove_legacy_images, sqlite_url, upgrade)
from .models import (AnswerRow, AssignmentQuestionRow, AssignmentRow, AuditRow, Base, ChallengeVoteRow, FlagRow,
                     GalleryRow, InstructorRow, ItemRow, LearnerRow, PoolImageRow, QuizProgressRow)

__all__ = ["AnswerRow", "AssignmentQuestionRow", "AssignmentRow", "AuditRow", "BASELINE_REVISION", "Base",
           "ChallengeVoteRow", "Database", "FlagRow", "GalleryRow", "InstructorRow", "ItemRow", "LearnerRow",
           "PoolImageRow", "QuizProgressRow", "StorageError", "alembic_config", "migrating", "normalise_url",
           "now_stamp", "open_database", "remove_legacy_images", "sqlite_url", "upgrade"]
