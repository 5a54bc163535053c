"""Gallery exports: ZIP round trips into another store (SQLite and PostgreSQL), the Anki deck and the handout."""

import csv
import io
import json
import os
import sqlite3
import tempfile
import zipfile
from contextlib import closing

import numpy as np
import pytest

from pathsynth import exports as E
from pathsynth.gallery import GalleryItemInput, GalleryStore
from pathsynth.tissues import DISPLAY_NAMES, TISSUES
from pathsynth.uploads import UploadError
from test_gallery import items, tile

EVIL = '<script>alert("x")</script> & =1+1'


def mixed_items() -> list[GalleryItemInput]:
    """Generated, real and instructor-uploaded tiles, one larger than 28 px, odd text and odd meta."""
    generated = items(3)
    real = GalleryItemInput(image=tile(50), caption="=SUM(A1:A9)", tissue="Mucus", seed=None, source="real",
                            meta={"real_index": 7})
    uploaded = GalleryItemInput(image=tile(51, size=56), caption=EVIL + "\nline two", tissue=8, source="uploaded",
                                meta={"provenance": "instructor-validated", "classifier": {"predicted": 2,
                                      "confidence": 0.61, "agrees": False}, "unicode": "µm ✓ 𝔘"})
    return [*generated, real, uploaded]


def comparable(gallery) -> dict:
    return {"name": gallery.name, "description": gallery.description, "created_by": gallery.created_by,
            "created_at": gallery.created_at, "updated_at": gallery.updated_at,
            "items": [(i.caption, i.tissue, i.seed, i.source, i.meta, i.created_at, i.image.shape, i.image.tobytes())
                      for i in gallery.items]}


def test_zip_round_trip_is_lossless(tmp_path, storage_url):
    with GalleryStore(tmp_path / "a", database_url=storage_url) as source, GalleryStore(tmp_path / "b") as target:
        gallery_id = source.create_gallery("Week 2 <b>", EVIL, "dr-who", mixed_items())
        source.remove_item(source.get_gallery(gallery_id).items[1].id)  # a gap in the positions
        original = source.get_gallery(gallery_id)
        data = E.export_zip(original)
        imported = target.get_gallery(E.import_zip(target, data))
        assert comparable(imported) == comparable(original)
        again = E.export_zip(imported)  # the PNGs are byte-identical; only the export time may differ
        first, second = zipfile.ZipFile(io.BytesIO(data)), zipfile.ZipFile(io.BytesIO(again))
        pngs = [n for n in first.namelist() if n.endswith(".png")]
        assert pngs == [n for n in second.namelist() if n.endswith(".png")] and len(pngs) == 4
        assert all(first.read(n) == second.read(n) for n in pngs)
        # and back into a store of the other kind (PostgreSQL <- SQLite when the source was PostgreSQL)
        source.delete_gallery(gallery_id)
        assert comparable(source.get_gallery(E.import_zip(source, again))) == comparable(original)


def test_zip_contents_describe_every_item(tmp_path):
    with GalleryStore(tmp_path) as store:
        gallery = store.get_gallery(store.create_gallery("Contents", "", "me", mixed_items()))
    archive = zipfile.ZipFile(io.BytesIO(E.export_zip(gallery)))
    record = json.loads(archive.read("gallery.json"))
    assert record["format"] == E.FORMAT and record["gallery"]["name"] == "Contents"
    assert [i["provenance"] for i in record["items"]] == ["generated"] * 3 + ["real", "instructor-uploaded"]
    assert record["items"][0]["verification"] == {"confidence": 0.9}
    assert record["items"][4]["verification"]["predicted"] == 2
    assert record["items"][0]["seed"] == 0 and record["items"][3]["tissue"] == "mucus"
    rows = list(csv.DictReader(io.StringIO(archive.read("metadata.csv").decode("utf-8"))))
    assert [r["file"] for r in rows] == [i["file"] for i in record["items"]]
    assert rows[3]["caption"] == "'=SUM(A1:A9)"  # no formula runs when opened in a spreadsheet
    assert rows[4]["predicted"] == "debris" and rows[4]["provenance"] == "instructor-uploaded"
    with archive.open(record["items"][4]["file"]) as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_import_refuses_damaged_or_foreign_archives(tmp_path):
    with GalleryStore(tmp_path) as store:
        gallery = store.get_gallery(store.create_gallery("Src", "", "", items(2)))
        data = E.export_zip(gallery)
        with pytest.raises(UploadError, match="already exists"):
            E.import_zip(store, data)
        assert store.get_gallery(E.import_zip(store, data, name="Copy")).name == "Copy"
        members = {n: zipfile.ZipFile(io.BytesIO(data)).read(n) for n in zipfile.ZipFile(io.BytesIO(data)).namelist()}
        png = next(n for n in members if n.endswith(".png"))
        cases = {"checksum": {**members, png: members[png][:-20]},
                 "missing": {k: v for k, v in members.items() if k != png},
                 "gallery export": {**members, "gallery.json": b'{"format": "other"}'},
                 "valid JSON": {**members, "gallery.json": b"{nope"},
                 "time zone": {**members, "gallery.json": members["gallery.json"].replace(
                     gallery.created_at.encode(), b"yesterday")}}
        for message, contents in cases.items():
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                for name, content in contents.items():
                    archive.writestr(name, content)
            with pytest.raises(UploadError, match=message):
                E.import_zip(store, buffer.getvalue(), name="Never")
        with pytest.raises(UploadError, match="not a readable ZIP"):
            E.import_zip(store, b"plain text", name="Never")
        assert [g.name for g in store.list_galleries()] == ["Src", "Copy"]


def test_anki_deck(tmp_path):
    with GalleryStore(tmp_path) as store:
        gallery = store.get_gallery(store.create_gallery("Anki <deck>", "", "", mixed_items()))
    data = E.export_anki(gallery)
    archive = zipfile.ZipFile(io.BytesIO(data))
    media = json.loads(archive.read("media"))
    assert len(media) == 5 and all(archive.read(i)[:4] == b"\x89PNG" for i in media)
    (tmp_path / "c.anki2").write_bytes(archive.read("collection.anki2"))
    with sqlite3.connect(tmp_path / "c.anki2") as db:
        notes = [row[0].split("\x1f") for row in db.execute("SELECT flds FROM notes ORDER BY id")]
        decks = json.loads(db.execute("SELECT decks FROM col").fetchone()[0])
    assert len(notes) == 5 and notes[0][1] == DISPLAY_NAMES[0] and notes[0][2] == TISSUES[0].description
    assert notes[0][0] == f'<img src="{media["0"]}">'
    assert "<script>" not in notes[4][3] and "&lt;script&gt;" in notes[4][3]
    assert decks[str(E.anki_deck_id(gallery))]["name"] == "PathSynth::Anki <deck>"  # no owner: just the name


def deck_of(apkg: bytes) -> tuple[int, str, set[str]]:
    """The PathSynth deck in an ``.apkg``: (its id, its name, its notes' guids)."""
    archive = zipfile.ZipFile(io.BytesIO(apkg))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "c.anki2")
        with open(path, "wb") as handle:
            handle.write(archive.read("collection.anki2"))
        with closing(sqlite3.connect(path)) as db:
            decks = json.loads(db.execute("SELECT decks FROM col").fetchone()[0])
            guids = {row[0] for row in db.execute("SELECT guid FROM notes")}
    (deck_id, deck), = [(int(i), d) for i, d in decks.items() if d["name"].startswith("PathSynth::")]
    return deck_id, deck["name"], guids


def test_two_instructors_galleries_of_one_name_are_two_anki_decks_each_stable_across_exports(tmp_path):
    """The deck id comes from the gallery's id, owner and creation time, never its name: the same gallery keeps
    its deck (and its notes) on every export, renamed or not; another owner's gallery of the same name is another
    deck, and its name says whose."""
    with GalleryStore(tmp_path) as store:
        ana = store.create_gallery("Week 1", created_by="Ana", items=items(2), visibility="private")
        bob = store.create_gallery("week 1", created_by="bob", items=items(2))  # the same images, even
        first = deck_of(E.export_anki(store.get_gallery(ana, viewer="ana")))
        assert deck_of(E.export_anki(store.get_gallery(ana, viewer="ana"))) == first  # exported again
        store.rename_gallery(ana, "Week 1 (colon)", actor="ana")
        renamed = store.get_gallery(ana, viewer="ana")
        assert E.anki_deck_id(renamed) == first[0] and deck_of(E.export_anki(renamed))[::2] == first[::2]
        bobs = deck_of(E.export_anki(store.get_gallery(bob)))
    assert first[1] == "PathSynth::Week 1 (Ana)" and bobs[1] == "PathSynth::week 1 (bob)"
    assert bobs[0] != first[0] and not bobs[2] & first[2]  # neither the deck nor a note is shared
    assert all(E.ANKI_DECK_BASE <= deck_id < E.ANKI_DECK_BASE + 10**8 for deck_id in (first[0], bobs[0]))


def test_handout_is_self_contained_and_escaped(tmp_path):
    with GalleryStore(tmp_path) as store:
        gallery = store.get_gallery(store.create_gallery("Hand<i>out</i>", EVIL, "", mixed_items()))
    page = E.export_handout(gallery)
    assert page.count('<img src="data:image/png;base64,') == 5 and "http" not in page.replace("http-equiv", "")
    assert "<script>" not in page and "&lt;script&gt;" in page and "Hand&lt;i&gt;out" in page
    for tissue in {item.tissue for item in gallery.items}:
        assert TISSUES[tissue].description in page
    assert TISSUES[5].description not in page  # only the tissues shown
    assert np.all([f"<b>{n}.</b>" in page for n in range(1, 6)])


def test_handout_marks_synthetic_tiles_education_only_and_a_scale_bar(tmp_path):
    """Issue 32: no mark that tiles were synthetic, no "education only" line, no scale bar; a caption that repeats
    the tissue's name printed it twice ("Lymphocytes · Lymphocytes")."""
    from pathsynth.images import UM_PER_PIXEL

    repeated = GalleryItemInput(image=tile(52), caption="Lymphocytes", tissue="LYM", seed=1, source="generated")
    with GalleryStore(tmp_path) as store:
        gallery = store.get_gallery(store.create_gallery("Week 1", "", "", [*mixed_items(), repeated]))
    page = E.export_handout(gallery)
    assert page.count('<span class="origin">synthetic</span>') == 4  # three generated + the repeated caption's
    assert page.count('<span class="origin">real tile</span>') == 1
    assert page.count("<span class=\"origin\">real: instructor&#x27;s slide</span>") == 1
    assert "For education only — not for diagnosis." in page and "Lymphocytes — Lymphocytes" not in page
    assert "<b>6.</b> Lymphocytes</figcaption>" in page
    bar_28 = 100 * E.SCALE_BAR_UM / (28 * UM_PER_PIXEL)  # 50 um of a 112 um tile
    assert f'style="width:{bar_28:.1f}%"' in page and f'style="width:{bar_28 / 2:.1f}%"' in page  # the 56 px tile
    assert "repeat(6, minmax(0, 1fr))" in page and "@media (max-width: 600px)" in page


def test_captions_are_the_instructors_words_beside_the_tissue_name():
    from pathsynth.gallery import instructor_caption, item_label

    plain = GalleryItemInput(image=tile(1), caption="", tissue=4)
    same = GalleryItemInput(image=tile(1), caption=" mucus ", tissue=4)
    own = GalleryItemInput(image=tile(1), caption="Pale pools: mucin between glands " * 3, tissue=4)
    assert item_label(plain) == item_label(same) == "Mucus" and instructor_caption(same) == ""
    assert item_label(own) == "Mucus — " + own.caption.strip()  # in full: the gallery wraps it
