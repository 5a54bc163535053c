"""pathsynth.storage: migrations (from the pre-Alembic release too), schema = models, concurrent opening.

``storage_url`` (tests/conftest.py) runs a test on SQLite and on a real PostgreSQL server."""

import hashlib
import importlib
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from PIL import Image
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from pathsynth import gallery as G
from pathsynth import storage
from pathsynth.gallery import GalleryStore

REPO = Path(__file__).resolve().parent.parent

# The schema of the first release (PNG files under home/images) is the baseline migration's, verbatim: that
# revision is frozen, and this digest of it fails the test if anyone edits it.
BASELINE = importlib.import_module("pathsynth.storage.migrations.versions.0001_baseline")
RELEASE_1_SCHEMA = ";\n".join(BASELINE.SQLITE_SCHEMA) + ";"
RELEASE_1_SHA256 = "20ec8afac1fbbe2a8c1409e6cc255f82403adeeb6c590a3031546c929c3c7a1b"
NOW = "2026-01-02T03:04:05.678+00:00"


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 5, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_release_1_store(home: Path, galleries: dict[str, list[str]]) -> None:
    """A home as the first release left it: WAL database (user_version 1) + one PNG file per item."""
    (home / "images").mkdir(parents=True)
    with sqlite3.connect(home / G.DB_NAME) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(RELEASE_1_SCHEMA)
        db.execute("PRAGMA user_version = 1")
        for name, captions in galleries.items():
            gallery_id = db.execute("INSERT INTO galleries (name, description, created_by, created_at, updated_at) "
                                    "VALUES (?, ?, 'dr-who', ?, ?)", (name, f"about {name}", NOW, NOW)).lastrowid
            for position, caption in enumerate(captions):
                file = f"{gallery_id:016x}{position:016x}.png"
                (home / "images" / file).write_bytes(png(gallery_id * 10 + position))
                db.execute("INSERT INTO items (gallery_id, position, caption, tissue, seed, source, meta_json, "
                           "image_file, created_at) VALUES (?, ?, ?, ?, ?, 'generated', ?, ?, ?)",
                           (gallery_id, position, caption, position % 9, 2**63 - 1 - position,
                            json.dumps({"confidence": 0.5}), file, NOW))
    db.close()



def test_baseline_revision_is_frozen():
    assert hashlib.sha256("\n".join(BASELINE.SQLITE_SCHEMA).encode()).hexdigest() == RELEASE_1_SHA256

def test_release_1_store_is_migrated_with_every_gallery(tmp_path):
    make_release_1_store(tmp_path, {"Week 1": ["a", "b", "c"], "Week 2": ["d"], "Empty": []})
    (tmp_path / "images" / "feedfacefeedfacefeedfacefeedface.png").write_bytes(b"orphan of a killed writer")
    with GalleryStore(tmp_path) as store:
        assert store.removed_orphans == 5  # four moved into the database, one orphan
        assert [(g.name, g.n_items, g.created_at) for g in store.list_galleries()] == [
            ("Week 1", 3, NOW), ("Week 2", 1, NOW), ("Empty", 0, NOW)]
        week1 = store.get_gallery("week 1")
        assert (week1.description, week1.created_by) == ("about Week 1", "dr-who")
        assert [(i.caption, i.position, i.tissue, i.seed, i.meta) for i in week1.items] == [
            (c, k, k, 2**63 - 1 - k, {"confidence": 0.5}) for k, c in enumerate("abc")]
        assert all(np.array_equal(i.image, np.full((6, 5, 3), 10 + k, np.uint8)) for k, i in enumerate(week1.items))
        store.add_items("Week 2", [G.GalleryItemInput(np.zeros((4, 4, 3), np.uint8))])  # usable after migrating
        assert [i.position for i in store.get_gallery("Week 2").items] == [0, 1]
        assert store.integrity_check() == "ok"
        with store.database.read() as db:
            assert MigrationContext.configure(db).get_current_revision() == head_revision()
    assert not (tmp_path / "images").exists()
    with GalleryStore(tmp_path) as store:  # reopening at head changes nothing
        assert store.removed_orphans == 0 and len(store.list_galleries()) == 3


def test_release_1_item_whose_file_is_gone_is_dropped(tmp_path):
    make_release_1_store(tmp_path, {"A": ["keep", "lost"]})
    lost = [p for p in (tmp_path / "images").iterdir() if p.name.endswith("1.png")]
    lost[0].unlink()
    with GalleryStore(tmp_path) as store:
        assert [i.caption for i in store.get_gallery("A").items] == ["keep"]


def test_database_from_a_newer_pathsynth_is_refused(tmp_path, storage_url):
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        store.create_gallery("A")
        with store.database.write() as db:
            db.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(G.GalleryStoreError, match="9999"):
        GalleryStore(tmp_path, database_url=storage_url)


def head_revision() -> str:
    return ScriptDirectory(str(storage.database.MIGRATIONS)).get_current_head()


def test_migrations_are_one_line_shipped_in_the_package():
    script = ScriptDirectory(str(storage.database.MIGRATIONS))
    assert storage.database.MIGRATIONS.is_relative_to(Path(storage.__file__).parent)
    assert script.get_heads() == [head_revision()]
    assert [r.revision for r in script.walk_revisions()][-1] == storage.BASELINE_REVISION


def test_migrated_schema_matches_the_models(tmp_path, storage_url):
    """Migrations and models agree, so the next revision can be autogenerated from the models (SQLite cannot
    reflect the expression indexes on gallery names: ``test_gallery_name_indexes`` checks those on both)."""
    with GalleryStore(tmp_path, database_url=storage_url) as store, store.database.read() as db:
        differences = compare_metadata(MigrationContext.configure(db), storage.Base.metadata)
    assert differences == []


def insert_gallery(db, name: str, owner: str, visibility: str) -> int:
    return db.execute(text("INSERT INTO galleries (name, created_by, visibility, created_at, updated_at) "
                           "VALUES (:name, :owner, :visibility, :now, :now) RETURNING id"),
                      {"name": name, "owner": owner, "visibility": visibility, "now": NOW}).scalar()


@pytest.mark.parametrize("first, second, allowed", [
    (("Week 1", "ana", "shared"), ("WEEK 1", "bob", "shared"), False),  # one shared name, any case
    (("Week 1", "ana", "private"), ("week 1", "Ana", "private"), False),  # one owner's private names
    (("Week 1", "ana", "private"), ("Week 1", "bob", "private"), True),  # two owners
    (("Week 1", "ana", "private"), ("Week 1", "bob", "shared"), True),  # a private name never blocks a shared one
])
def test_gallery_name_indexes(tmp_path, storage_url, first, second, allowed):
    """Revision 0007's partial unique indexes, checked in SQL on both backends (the app checks names first)."""
    with GalleryStore(tmp_path, database_url=storage_url) as store, store.database.write() as db:
        insert_gallery(db, *first)
        if allowed:
            with db.begin_nested():
                insert_gallery(db, *second)
        else:
            with pytest.raises(IntegrityError), db.begin_nested():
                insert_gallery(db, *second)


def gallery_names(db) -> list[tuple]:
    query = text("SELECT id, name, created_by, visibility FROM galleries ORDER BY id")
    return [tuple(row) for row in db.execute(query)]


def test_a_database_at_revision_0006_is_upgraded_to_0007(tmp_path, storage_url):
    """Names unique across every gallery become unique per owner and among shared ones; ids, items and the id
    counter survive SQLite's table rebuild; the downgrade refuses while two galleries share a name."""
    url = storage_url or storage.sqlite_url(tmp_path / G.DB_NAME)
    database = storage.Database(url)
    with database.write() as db:  # the schema and galleries as the 0006 release left them
        command.upgrade(storage.alembic_config(db), "0006")
        ids = [insert_gallery(db, name, "ana", visibility)
               for name, visibility in (("Secret", "private"), ("Open", "shared"), ("Deleted", "shared"))]
        db.execute(text("INSERT INTO items (gallery_id, position, tissue, source, image_png, created_at) "
                        "VALUES (:id, 0, 3, 'real', :png, :now)"), {"id": ids[0], "png": png(1), "now": NOW})
        db.execute(text("DELETE FROM galleries WHERE id = :id"), {"id": ids[2]})
    database.dispose()
    with GalleryStore(tmp_path, database_url=storage_url) as store:  # opening upgrades to head
        with store.database.read() as db:
            assert MigrationContext.configure(db).get_current_revision() == head_revision()
            assert gallery_names(db) == [(ids[0], "Secret", "ana", "private"), (ids[1], "Open", "ana", "shared")]
        assert len(store.get_gallery(ids[0], viewer="ana").items) == 1  # the rebuild kept the items
        copy = store.create_gallery("secret", created_by="bob", visibility="private")  # another owner's name
        assert copy > ids[2]  # a deleted gallery's id is never handed out again
        assert store.integrity_check() == "ok"
        refused = pytest.raises(RuntimeError, match=r"(?i)'secret' \(2 galleries\); rename those galleries first")
        with refused, storage.migrating(store.database) as db:
            command.downgrade(storage.alembic_config(db), "0006")
        store.rename_gallery(copy, "Bob's", actor="bob")
        with storage.migrating(store.database) as db:  # names unique again: back down, keeping everything
            command.downgrade(storage.alembic_config(db), "0006")
            assert [row[1] for row in gallery_names(db)] == ["Secret", "Open", "Bob's"]
            with pytest.raises(IntegrityError), db.begin_nested():  # one name across all galleries, as in 0006
                insert_gallery(db, "OPEN", "carol", "private")
            assert db.execute(text("SELECT count(*) FROM items")).scalar() == 1


OPENER = r"""
import sys
from pathsynth.gallery import GalleryItemInput, GalleryStore
import numpy as np

with GalleryStore(sys.argv[1], database_url=sys.argv[3] if len(sys.argv) > 3 else None) as store:
    for j in range(3):
        store.create_gallery(f"p{sys.argv[2]}-{j}", items=[GalleryItemInput(np.zeros((4, 4, 3), np.uint8))])
        store.add_items("shared", [GalleryItemInput(np.ones((4, 4, 3), np.uint8))])
"""


def test_processes_opening_and_writing_at_once(tmp_path, storage_url):
    """Several processes (replicas) open a database made by release 1 or a fresh one at the same moment: one
    migrates, the others wait for it; then all write, and nothing is lost."""
    if storage_url is None:
        make_release_1_store(tmp_path, {"shared": ["x"]})
    else:
        with GalleryStore(tmp_path, database_url=storage_url) as store:
            store.create_gallery("shared", items=[G.GalleryItemInput(np.ones((4, 4, 3), np.uint8))])
    script = tmp_path / "opener.py"
    script.write_text(OPENER)
    url = [storage_url] if storage_url else []
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    processes = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(p), *url], env=env,
                                  stderr=subprocess.PIPE, text=True) for p in range(4)]
    failures = [process.stderr.read()[-1500:] for process in processes if process.wait(timeout=300) != 0]
    assert failures == []
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        summaries = {g.name: g.n_items for g in store.list_galleries()}
        assert summaries == {"shared": 13, **{f"p{p}-{j}": 1 for p in range(4) for j in range(3)}}
        assert [i.position for i in store.get_gallery("shared", with_images=False).items] == list(range(13))


def test_postgres_urls_use_psycopg_3():
    assert storage.normalise_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"
    assert storage.normalise_url("postgresql://h/db").drivername == "postgresql+psycopg"
    assert storage.normalise_url("sqlite:////tmp/x.db").drivername == "sqlite"
