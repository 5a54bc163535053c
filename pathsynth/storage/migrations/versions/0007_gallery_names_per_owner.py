"""Gallery names no longer collide with other instructors' private galleries (issue 17).

Until now a name was unique across every gallery, private ones included, so "a gallery named ... already exists"
told an instructor that someone else had a private gallery of that name. Now two partial unique indexes, the same
statements on both backends (case-insensitive through ``lower()``, as lookups are):

* ``galleries_shared_name``: shared galleries' names are unique among shared galleries (everyone sees them);
* ``galleries_private_name``: a private gallery's name is unique among its owner's private galleries.

The app also refuses a name that a gallery the writer can see already has (``GalleryStore``), so the indexes are
the backstop for concurrent writers, and never reject a name because of a gallery the writer cannot see.

PostgreSQL drops its ``lower(name)`` index. SQLite's release-1 ``UNIQUE COLLATE NOCASE`` is part of the column,
so the table is rebuilt (``storage.migrating`` turns foreign keys off, so the ``DROP TABLE`` does not cascade to
the items, and checks them before the commit); the AUTOINCREMENT counter is carried over, so ids of deleted
galleries are still never reused.

Downgrading needs the names unique again: it refuses, naming them, while two galleries share one.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = "id, name, description, created_by, created_at, updated_at, visibility"
VISIBILITY = ("visibility TEXT NOT NULL DEFAULT 'shared' CONSTRAINT galleries_visibility "
              "CHECK (visibility IN ('shared', 'private'))")
NAME_INDEXES = (
    "CREATE UNIQUE INDEX galleries_shared_name ON galleries (lower(name)) WHERE visibility = 'shared'",
    "CREATE UNIQUE INDEX galleries_private_name ON galleries (lower(created_by), lower(name)) "
    "WHERE visibility = 'private'",
)


def _sqlite_table(name_column: str) -> str:
    return f"""CREATE TABLE galleries_rebuilt (
    id          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    {name_column},
    description TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    {VISIBILITY}
)"""


def _rebuild_sqlite_galleries(name_column: str) -> None:
    """Copy ``galleries`` into a table whose ``name`` is ``name_column``, keeping ids and the id counter."""
    connection = op.get_bind()
    if connection.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("rebuilding galleries with foreign keys on would delete every item: run migrations "
                           "through pathsynth.storage.upgrade()")
    counter = connection.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'galleries'").scalar()
    op.execute(_sqlite_table(name_column))
    op.execute(f"INSERT INTO galleries_rebuilt ({COLUMNS}) SELECT {COLUMNS} FROM galleries")
    op.execute("DROP TABLE galleries")
    op.execute("ALTER TABLE galleries_rebuilt RENAME TO galleries")
    if counter is not None:  # the copy set it to the largest id left; deleted galleries' ids stay used
        op.execute(sa.text("UPDATE sqlite_sequence SET seq = max(seq, :counter) WHERE name = 'galleries'")
                   .bindparams(counter=counter))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_galleries("name        TEXT NOT NULL")
    else:
        op.drop_index("galleries_name_key", "galleries")
    for statement in NAME_INDEXES:
        op.execute(statement)


def _refuse_duplicate_names() -> None:
    duplicates = op.get_bind().exec_driver_sql(
        "SELECT min(name), count(*) FROM galleries GROUP BY lower(name) HAVING count(*) > 1 ORDER BY 1").all()
    if duplicates:
        listed = ", ".join(f"{name!r} ({count} galleries)" for name, count in duplicates[:10])
        raise RuntimeError(f"cannot downgrade below revision 0007 while gallery names are shared: {listed}; "
                           "rename those galleries first")


def downgrade() -> None:
    _refuse_duplicate_names()
    op.drop_index("galleries_private_name", "galleries")
    op.drop_index("galleries_shared_name", "galleries")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_galleries("name        TEXT NOT NULL UNIQUE COLLATE NOCASE")
    else:
        op.create_index("galleries_name_key", "galleries", [sa.text("lower(name)")], unique=True)
