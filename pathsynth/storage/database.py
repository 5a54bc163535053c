"""Engine factory, transactions and schema upgrades for the PathSynth database.

SQLite (one file, the default) or PostgreSQL (``postgresql+psycopg://...``, for a deployment with several app
replicas). SQLite connections run in WAL mode (readers never block the writer) with ``synchronous=FULL`` (a
commit is on disk before it returns, so SIGKILL or power loss never undoes it) and foreign keys on; a write
transaction takes the write lock at its start (``BEGIN IMMEDIATE``), so two writers queue instead of failing
halfway. On PostgreSQL writes lock the rows they depend on and reads see one snapshot (REPEATABLE READ).

Opening a database upgrades it to the head revision with the Alembic migrations shipped in this package. A
database made before Alembic (tables but no ``alembic_version``) is stamped at the baseline first.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, event, inspect
from sqlalchemy.engine import Engine, URL, make_url

BUSY_TIMEOUT_S = 30
BASELINE_REVISION = "0001"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK_KEY = 0x5A7_5E17  # pg_advisory_xact_lock key: one replica migrates, the others wait
_WRITE_OPTION = "pathsynth_write"

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """The database is damaged or was written by a newer PathSynth."""


def now_stamp() -> str:
    """Now, as every timestamp in the database is stored: ISO-8601 UTC text with milliseconds (sorts in time order)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def sqlite_url(path: str | os.PathLike) -> str:
    return f"sqlite:///{Path(path)}"


def normalise_url(url: str | URL) -> URL:
    """``postgresql://`` and ``postgres://`` mean psycopg 3, the driver PathSynth installs."""
    parsed = make_url(str(url).replace("postgres://", "postgresql://", 1) if isinstance(url, str) else url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_engine(url: URL) -> Engine:
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def configure(dbapi_connection, _record):
        # Autocommit at the driver level: the "begin" hook below then decides how each transaction starts.
        dbapi_connection.isolation_level = None
        for pragma in (f"busy_timeout={BUSY_TIMEOUT_S * 1000}", "journal_mode=WAL", "synchronous=FULL",
                       "foreign_keys=ON"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def begin(connection):
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Database:
    """One engine (a pool of connections) and the two kinds of transaction the stores use."""

    def __init__(self, url: str | URL):
        self.url = normalise_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = create_engine(self.url, pool_pre_ping=True)  # replicas outlive server restarts

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        options = {_WRITE_OPTION: True} if self.is_sqlite else {}
        with self.engine.connect() as connection:
            connection.execution_options(**options)
            with connection.begin():
                yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read-only transaction over a consistent snapshot."""
        options = {} if self.is_sqlite else {"isolation_level": "REPEATABLE READ"}
        with self.engine.connect() as connection:
            connection.execution_options(**options)
            with connection.begin():
                yield connection

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` ("ok" when sound); PostgreSQL checks its own pages: "ok"."""
        if not self.is_sqlite:
            with self.read() as connection:
                connection.exec_driver_sql("SELECT 1")
            return "ok"
        with self.read() as connection:
            return str(connection.exec_driver_sql("PRAGMA integrity_check").scalar())

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(connection: Connection, legacy_images: Path | None = None) -> Config:
    """Alembic configured in code (no alembic.ini), so migrations run the same from a wheel install."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["legacy_images"] = legacy_images  # where revision 0002 finds the pre-0002 PNG files
    return config


@contextmanager
def migrating(database: Database) -> Iterator[Connection]:
    """A write transaction for schema changes. On SQLite foreign keys are off inside it (the pragma only takes
    effect outside a transaction), so a migration can rebuild a parent table (e.g. ``galleries``) without its
    ``DROP TABLE`` cascading to the child rows; every reference is checked before the commit."""
    if not database.is_sqlite:
        with database.write() as connection:
            yield connection
        return
    with database.engine.connect() as connection:
        driver = connection.connection.driver_connection  # autocommit at the driver: the pragma applies now
        driver.execute("PRAGMA foreign_keys=OFF")
        try:
            connection.execution_options(**{_WRITE_OPTION: True})
            with connection.begin():
                yield connection
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StorageError(f"a migration left {len(broken)} row(s) pointing at missing rows "
                                       f"(first: {tuple(broken[0])}); nothing was changed")
        finally:
            driver.execute("PRAGMA foreign_keys=ON")  # the pool's connections always enforce them


def upgrade(database: Database, legacy_images: Path | None = None) -> None:
    """Bring the schema to head in one transaction (SQLite and PostgreSQL both have transactional DDL)."""
    with migrating(database) as connection:
        if not database.is_sqlite:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
        config = alembic_config(connection, legacy_images)
        tables = set(inspect(connection).get_table_names())
        try:
            if "galleries" in tables and "alembic_version" not in tables:
                log.info("stamping a database made before migrations at revision %s", BASELINE_REVISION)
                command.stamp(config, BASELINE_REVISION)
            command.upgrade(config, "head")
        except CommandError as error:  # e.g. a revision this version does not know: a newer PathSynth wrote it
            raise StorageError(f"cannot upgrade the database {database.url.render_as_string()}: {error}") from None


def open_database(url: str | URL, legacy_images: Path | None = None) -> Database:
    """A ``Database`` at the head revision (migrated now if it was older)."""
    database = Database(url)
    try:
        upgrade(database, legacy_images)
    except BaseException:
        database.dispose()
        raise
    return database


def remove_legacy_images(folder: Path) -> int:
    """Delete the image folder of the pre-0002 layout once its PNGs are in the database; returns files removed.

    Run after the upgrade committed: a crash before that leaves the files for the next attempt."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.iterdir():
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    try:
        folder.rmdir()
    except OSError:  # something else lives there (a sub-folder): leave it
        pass
    return removed
