"""The tables at the head revision, as typed SQLAlchemy models (the migrations in ``migrations/`` build them).

Timestamps are ISO-8601 text (UTC, milliseconds), as the first version stored them, so old rows need no rewrite.
Gallery names are unique without regard to case: ``COLLATE NOCASE`` on SQLite, a unique index on ``lower(name)``
on PostgreSQL; both fold ASCII letters only, and lookups use ``lower()`` on both.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, LargeBinary, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..tissues import NUM_TISSUES


class Base(DeclarativeBase):
    pass


class GalleryRow(Base):
    __tablename__ = "galleries"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused: links to a deleted gallery stay dead

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    created_by: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    created_at: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[str] = mapped_column(Text, nullable=False)


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
