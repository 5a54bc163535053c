"""A domain per gallery and assignment (issue 33, revision 0009): chest X-ray galleries beside histology ones, their
exports (ZIP, Anki, handout) in the film's own words, and old rows read as histology. SQLite and PostgreSQL."""

import io
import json
import sqlite3
import zipfile

import numpy as np
import pytest
from alembic import command
from alembic.migration import MigrationContext
from sqlalchemy import text

from pathsynth import assignments as A
from pathsynth import exports as E
from pathsynth import gallery as G
from pathsynth import storage
from pathsynth.gallery import GalleryItemInput, GalleryStore
from test_storage import NOW, head_revision, insert_gallery


def film(value: int) -> np.ndarray:
    """A 28 px greyscale film repeated into RGB, as the app shows one."""
    grey = np.random.default_rng(value).integers(0, 256, (28, 28), dtype=np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def film_items() -> list[GalleryItemInput]:
    return [GalleryItemInput(film(1), "clear lungs", tissue="normal", source="real"),
            GalleryItemInput(film(2), "", tissue="PNA", seed=7, source="generated"),
            GalleryItemInput(film(3), "right lower zone", tissue=1, source="generated")]


def test_a_film_gallery_keeps_its_domain_and_refuses_a_tissue(tmp_path, storage_url):
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        films = store.create_gallery("Week 3: films", created_by="ana", items=film_items(), domain="pneumoniamnist")
        tiles = store.create_gallery("Week 1: tiles", created_by="ana")
        summaries = {g.name: g.domain for g in store.list_galleries()}
        assert summaries == {"Week 3: films": "pneumoniamnist", "Week 1: tiles": "pathmnist"}
        gallery = store.get_gallery(films)
        assert gallery.domain == "pneumoniamnist" and [i.tissue for i in gallery.items] == [0, 1, 1]
        with pytest.raises(ValueError, match="unknown finding 'Adipose tissue'"):
            store.add_items(films, [GalleryItemInput(film(4), tissue="Adipose tissue")])
        with pytest.raises(ValueError, match="unknown tissue 'pneumonia'"):
            store.add_items(tiles, [GalleryItemInput(film(4), tissue="pneumonia")])
        assert store.add_items(films, [GalleryItemInput(film(5), tissue="normal")])
        with pytest.raises(ValueError, match="unknown domain 'mri'"):
            store.create_gallery("MRI", domain="mri")
        assert len(store.get_gallery(films).items) == 4 and store.list_galleries()[1].n_items == 0


def test_an_assignment_of_a_film_gallery_is_a_film_assignment(tmp_path, storage_url):
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        gallery = store.get_gallery(store.create_gallery("Films", items=film_items(), domain="pneumoniamnist"))
        made = A.create_from_gallery(store.database, gallery, seed=0)
        assert made.domain == "pneumoniamnist"
        assert A.open_assignment(store.database, made.code).domain == "pneumoniamnist"
        assert sorted(q.tissue for q in A.open_assignment(store.database, made.code).questions) == [0, 1, 1]
        with pytest.raises(ValueError, match="unknown finding"):
            A.create_assignment(store.database, "Mixed", [GalleryItemInput(film(1), tissue="Mucus")],
                                domain="pneumoniamnist")


def test_film_exports_name_findings_and_a_zip_round_trip_keeps_the_domain(tmp_path):
    with GalleryStore(tmp_path) as store:
        gallery = store.get_gallery(store.create_gallery("Films", items=film_items(), domain="pneumoniamnist"))
        data = E.export_zip(gallery)
        record = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("gallery.json"))
        assert record["gallery"]["domain"] == "pneumoniamnist"
        assert [i["tissue"] for i in record["items"]] == ["normal", "pneumonia", "pneumonia"]
        assert record["items"][1]["file"].endswith("_PNA.png")
        copy = store.get_gallery(E.import_zip(store, data, name="Films again"))
        assert copy.domain == "pneumoniamnist" and [i.tissue for i in copy.items] == [0, 1, 1]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(gallery.items, copy.items))
        handout = E.export_handout(gallery)
        assert "Pneumonia" in handout and " mm</span>" in handout and " µm" not in handout
        assert "H&amp;E" not in handout and "Adipose" not in handout
        (tmp_path / "c.anki2").write_bytes(zipfile.ZipFile(io.BytesIO(E.export_anki(gallery))).read("collection.anki2"))
        with sqlite3.connect(tmp_path / "c.anki2") as db:
            notes = [row[0].split("\x1f") for row in db.execute("SELECT flds FROM notes ORDER BY id")]
            tags = {row[0].strip() for row in db.execute("SELECT tags FROM notes")}
        assert [n[1] for n in notes] == ["Normal film", "Pneumonia", "Pneumonia"] and tags == {"pathsynth NORM", "pathsynth PNA"}


def test_a_zip_from_before_domains_imports_as_histology(tmp_path):
    with GalleryStore(tmp_path) as store:
        tiles = [GalleryItemInput(film(1), tissue="Mucus", source="real")]
        data = E.export_zip(store.get_gallery(store.create_gallery("Tiles", items=tiles)))
        archive = zipfile.ZipFile(io.BytesIO(data))
        record = json.loads(archive.read("gallery.json"))
        del record["gallery"]["domain"]
        old = io.BytesIO()
        with zipfile.ZipFile(old, "w") as rewritten:
            for name in archive.namelist():
                rewritten.writestr(name, json.dumps(record) if name == "gallery.json" else archive.read(name))
        copy = store.get_gallery(E.import_zip(store, old.getvalue(), name="Old tiles"))
        assert copy.domain == "pathmnist" and copy.items[0].tissue == 4


def test_rows_from_revision_0008_read_as_histology_and_the_downgrade_keeps_them(tmp_path, storage_url):
    url = storage_url or storage.sqlite_url(tmp_path / G.DB_NAME)
    database = storage.Database(url)
    with storage.migrating(database) as db:
        command.upgrade(storage.alembic_config(db), "0008")
    with database.write() as db:  # a gallery and an assignment as the 0008 release left them
        gallery_id = insert_gallery(db, "Old", "ana", "shared")
        db.execute(text("INSERT INTO assignments (code, title, mode, created_at) VALUES ('ABC234', 'Old', 'practice',"
                        " :now)"), {"now": NOW})
    database.dispose()
    with GalleryStore(tmp_path, database_url=storage_url) as store:  # opening upgrades to head
        with store.database.read() as db:
            assert MigrationContext.configure(db).get_current_revision() == head_revision()
        assert store.get_gallery(gallery_id).domain == "pathmnist"
        assert A.open_assignment(store.database, "ABC234").domain == "pathmnist"
        with storage.migrating(store.database) as db:
            command.downgrade(storage.alembic_config(db), "0008")
            assert db.execute(text("SELECT name FROM galleries")).scalars().all() == ["Old"]
        with storage.migrating(store.database) as db:
            command.upgrade(storage.alembic_config(db), "head")
        assert store.integrity_check() == "ok" and store.get_gallery("Old").domain == "pathmnist"
