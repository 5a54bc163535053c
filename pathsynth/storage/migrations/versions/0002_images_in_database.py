"""Images in the database: ``items.image_png`` holds each tile's PNG; the ``image_file`` column goes.

Why: with several app replicas on PostgreSQL, a file on one replica's disk is missing on the others; a row and
its image in one transaction also cannot drift apart after a crash. The PNGs of an existing SQLite store are read
from ``home/images`` (passed in as the ``legacy_images`` attribute) inside the upgrade transaction; the files
are deleted by the store only after that transaction committed. A row whose file is already gone (removed by
hand) cannot be restored: it is dropped with a warning, which also makes its gallery readable again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)
_items = sa.table("items", sa.column("id", sa.Integer), sa.column("image_file", sa.Text),
                  sa.column("image_png", sa.LargeBinary))


def _items_table_during_upgrade() -> sa.Table:
    """The 0001 ``items`` table plus the new column: SQLite batch mode rebuilds the table from this, keeping the
    CHECK constraint, AUTOINCREMENT and the index that reflection would not carry over."""
    metadata = sa.MetaData()
    sa.Table("galleries", metadata, sa.Column("id", sa.Integer, primary_key=True))
    return sa.Table(
        "items", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("gallery_id", sa.Integer, sa.ForeignKey("galleries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("caption", sa.Text, nullable=False, server_default=""),
        sa.Column("tissue", sa.Integer, sa.CheckConstraint("tissue BETWEEN 0 AND 8"), nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("meta_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("image_file", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("image_png", sa.LargeBinary, nullable=True),
        sa.Index("items_by_gallery", "gallery_id", "position"),
        sqlite_autoincrement=True,
    )


def _copy_files_into_rows(connection: sa.Connection, folder: Path | None) -> None:
    rows = connection.execute(sa.select(_items.c.id, _items.c.image_file)).all()
    if rows and folder is None:  # only a store's own SQLite file has its images folder to read from
        raise RuntimeError(f"{len(rows)} gallery items have their images in files, but no image folder was given")
    for item_id, name in rows:
        path = folder / name
        # Names were random hex made by the store; never follow one that points elsewhere.
        if Path(name).name != name or not path.is_file():
            log.warning("gallery item %s: image file %r is missing; dropping the item", item_id, name)
            connection.execute(sa.delete(_items).where(_items.c.id == item_id))
            continue
        png = path.read_bytes()
        connection.execute(sa.update(_items).where(_items.c.id == item_id).values(image_png=png))


def upgrade() -> None:
    op.add_column("items", sa.Column("image_png", sa.LargeBinary, nullable=True))
    _copy_files_into_rows(op.get_bind(), context.config.attributes.get("legacy_images"))
    with op.batch_alter_table("items", copy_from=_items_table_during_upgrade()) as batch:
        batch.alter_column("image_png", existing_type=sa.LargeBinary, nullable=False)
        batch.drop_column("image_file")


def downgrade() -> None:
    raise NotImplementedError("revision 0002 moved the image files into the database; there is no way back")
