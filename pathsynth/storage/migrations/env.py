"""Alembic environment: migrations run on the connection (and transaction) that ``storage.upgrade`` opened.

A new revision is written from Python: ``alembic.command.revision(storage.alembic_config(connection),
message=..., autogenerate=True)`` with a connection to a database at head.
"""

from alembic import context

from pathsynth.storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run PathSynth migrations through pathsynth.storage.upgrade(), which supplies a connection")

# render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table instead.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():  # joins the caller's transaction: the whole upgrade commits or none of it
    context.run_migrations()
