"""Instructor galleries: round trips, validation, concurrency and crash durability (SIGKILL mid-write).

Tests taking the ``storage_url`` fixture (tests/conftest.py) run twice: on the SQLite file in the store's home
and on a fresh database of a real PostgreSQL server."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pathsynth import gallery as G
from pathsynth.gallery import GalleryItemInput, GalleryNotFoundError, GalleryStore, same_person

REPO = Path(__file__).resolve().parent.parent


def tile(value: int, size: int = 28) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def items(n: int, start: int = 0) -> list[GalleryItemInput]:
    return [GalleryItemInput(image=tile(start + i), caption=f"tile {start + i}", tissue=(start + i) % 9,
                             seed=start + i, source="generated", meta={"confidence": 0.9, "i": start + i})
            for i in range(n)]


SQLITE_FILES = {G.DB_NAME, f"{G.DB_NAME}-wal", f"{G.DB_NAME}-shm"}


@pytest.fixture
def store(tmp_path, storage_url):
    with GalleryStore(tmp_path, database_url=storage_url) as s:
        yield s


def stray_files(home: Path) -> set[str]:
    """What the store left in its home besides the SQLite database: images live in the database now."""
    return {p.name for p in home.iterdir()} - SQLITE_FILES


# --------------------------------------------------------------------------------------- basics

def test_round_trip(store, tmp_path):
    gallery_id = store.create_gallery("Week 1: colon", "Tiles for the first seminar", "dr-who", items(4))
    g = store.get_gallery(gallery_id)
    assert (g.id, g.name, g.description, g.created_by) == (gallery_id, "Week 1: colon", "Tiles for the first seminar",
                                                          "dr-who")
    assert [i.position for i in g.items] == [0, 1, 2, 3]
    for i, item in enumerate(g.items):
        assert np.array_equal(item.image, tile(i)) and item.image.dtype == np.uint8
        assert (item.caption, item.tissue, item.seed, item.source) == (f"tile {i}", i, i, "generated")
        assert item.meta == {"confidence": 0.9, "i": i}
    assert stray_files(tmp_path) == set()
    assert store.get_gallery("week 1: COLON").id == gallery_id  # names are case-insensitive
    [summary] = store.list_galleries()
    assert (summary.id, summary.name, summary.n_items) == (gallery_id, "Week 1: colon", 4)


def test_storage_settings(tmp_path):
    with GalleryStore(tmp_path) as store, store.database.read() as db:
        assert db.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert db.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert db.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert store.integrity_check() == "ok"


def test_default_home_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PATHSYNTH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PATHSYNTH_DATABASE_URL", raising=False)
    with GalleryStore() as s:
        assert s.home == tmp_path / "home" and (tmp_path / "home" / "galleries.sqlite3").is_file()


def test_database_url_from_environment(tmp_path, monkeypatch, storage_url):
    if storage_url is None:
        storage_url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("PATHSYNTH_DATABASE_URL", storage_url)
    monkeypatch.setenv("PATHSYNTH_HOME", str(tmp_path / "home"))
    with GalleryStore() as s:
        s.create_gallery("Shared", items=items(1))
    with GalleryStore(tmp_path / "other-home", database_url=storage_url) as s:  # the same database
        assert [g.name for g in s.list_galleries()] == ["Shared"]
    assert stray_files(tmp_path / "home") == set() and not (tmp_path / "home" / G.DB_NAME).exists()


def test_persists_across_reopen(tmp_path, storage_url):
    with GalleryStore(tmp_path, database_url=storage_url) as s:
        first = s.create_gallery("A", items=items(2))
        s.create_gallery("B", items=items(3, start=10))
    with GalleryStore(tmp_path, database_url=storage_url) as s:
        assert [g.name for g in s.list_galleries()] == ["A", "B"]
        assert np.array_equal(s.get_gallery(first).items[1].image, tile(1))
        assert s.removed_orphans == 0


def test_edits(store, tmp_path):
    gallery_id = store.create_gallery("Edit me", items=items(2))
    new_ids = store.add_items(gallery_id, items(2, start=5))
    g = store.get_gallery(gallery_id)
    assert [i.id for i in g.items][2:] == new_ids and [i.position for i in g.items] == [0, 1, 2, 3]
    store.update_caption(new_ids[0], "Look at the\nnuclei")
    store.set_description("Edit me", "new description")
    store.rename_gallery(gallery_id, "Edited")
    g = store.get_gallery("Edited")
    assert g.items[2].caption == "Look at the\nnuclei" and g.description == "new description"
    store.remove_item(g.items[0].id)
    assert len(store.get_gallery(gallery_id).items) == 3
    store.delete_gallery("Edited")
    assert store.list_galleries() == [] and stray_files(tmp_path) == set()
    with pytest.raises(GalleryNotFoundError):
        store.get_gallery(gallery_id)


@pytest.mark.parametrize("call", [
    lambda s: s.get_gallery(999), lambda s: s.get_gallery("nope"), lambda s: s.delete_gallery("nope"),
    lambda s: s.rename_gallery(5, "x"), lambda s: s.update_caption(12345, "x"), lambda s: s.remove_item(7),
    lambda s: s.add_items("nope", items(1)), lambda s: s.get_gallery(None), lambda s: s.get_gallery(True)])
def test_unknown_gallery_or_item(store, tmp_path, call):
    with pytest.raises(GalleryNotFoundError):
        call(store)
    assert stray_files(tmp_path) == set()


@pytest.mark.parametrize("who, owner, same", [("ana", "Ana", True), (" ANA ", "ana", True), ("ana", "bob", False),
                                               ("", "", False), (None, "ana", False), ("  ", "  ", False)])
def test_an_owner_is_recognised_in_any_case_and_nobody_owns_an_unowned_gallery(who, owner, same):
    """``same_person``: who may see a private gallery, and whose a gallery is in the assignment form's list."""
    assert same_person(who, owner) is same


def test_duplicate_names(store):
    store.create_gallery("Seminar", items=items(1))
    for name in ("Seminar", "seminar", "  SEMINAR  "):
        with pytest.raises(ValueError, match="already exists"):
            store.create_gallery(name, items=items(1))
    other = store.create_gallery("Other")
    with pytest.raises(ValueError, match="already exists"):
        store.rename_gallery(other, "seminar")
    assert [g.name for g in store.list_galleries()] == ["Seminar", "Other"]


@pytest.mark.parametrize("name,match", [("", "must not be empty"), ("   \t", "must not be empty"),
                                        ("\x00\x01", "must not be empty"), ("x" * 101, "too long"),
                                        (None, "must not be empty"), (5, "must be text"), (b"x", "must be text")])
def test_invalid_names(store, tmp_path, name, match):
    with pytest.raises(ValueError, match=match):
        store.create_gallery(name, items=items(1))
    assert store.list_galleries() == [] and stray_files(tmp_path) == set()


@pytest.mark.parametrize("bad,match", [
    ({"caption": "c" * 501}, "Caption is too long"), ({"tissue": 9}, "unknown tissue"),
    ({"tissue": "spleen"}, "unknown tissue"), ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
    ({"source": "internet"}, "source"), ({"image": np.zeros((28, 28), object)}, "numeric"),
    ({"image": np.zeros((28, 28, 5), np.uint8)}, "shape"), ({"image": np.zeros((2000, 4, 3), np.uint8)}, "pixels"),
    ({"image": np.full((4, 4, 3), np.nan)}, "NaN"), ({"meta": {"x": object()}}, "JSON"),
    ({"meta": {"x": float("inf")}}, "JSON"), ({"meta": "text"}, "dict")])
def test_invalid_items_write_nothing(store, tmp_path, bad, match):
    fields = {"image": tile(0), "caption": "", "tissue": 0, "seed": None, "source": "generated", "meta": None}
    fields.update(bad)
    with pytest.raises(ValueError, match=match):
        store.create_gallery("G", items=[*items(2), GalleryItemInput(**fields)])
    assert store.list_galleries() == [] and stray_files(tmp_path) == set()


def test_text_is_cleaned_and_unicode_kept(store):
    gallery_id = store.create_gallery("  Gewebe\u202e — 組織 🧫\x00  ", "line 1\nline 2\x07",
                                      items=[GalleryItemInput(tile(0), "Caption\twith tab\x1b[31m", tissue="TUM")])
    g = store.get_gallery(gallery_id)
    assert g.name == "Gewebe — 組織 🧫" and g.description == "line 1\nline 2"
    assert g.items[0].caption == "Caption with tab [31m" and g.items[0].tissue == 8
    with pytest.raises(ValueError, match="Caption is too long"):
        store.update_caption(g.items[0].id, "x" * 501)


def test_grayscale_rgba_and_float_images_are_stored_as_rgb(store):
    gallery_id = store.create_gallery("Formats", items=[
        GalleryItemInput(np.full((5, 6), 7, np.uint8)), GalleryItemInput(np.full((5, 6, 4), 9, np.uint8)),
        GalleryItemInput(np.full((5, 6, 3), 0.5, np.float32))])
    shapes = [(i.image.shape, int(i.image[0, 0, 0])) for i in store.get_gallery(gallery_id).items]
    assert shapes == [((5, 6, 3), 7), ((5, 6, 3), 9), ((5, 6, 3), 127)]


@pytest.mark.parametrize("name", ["../../etc/passwd", "/tmp/evil.png", "C:\\Windows\\system32", "images/x.png",
                                  "'; DROP TABLE galleries; --", "Robert'); DROP TABLE items;--", "%s %d {0}",
                                  "<script>alert(1)</script>", "name\" OR 1=1 --"])
def test_path_and_sql_like_names_are_stored_verbatim_and_harmless(store, tmp_path, name):
    gallery_id = store.create_gallery(name, description=name, items=[GalleryItemInput(tile(1), caption=name)])
    g = store.get_gallery(name)
    assert (g.id, g.name, g.description, g.items[0].caption) == (gallery_id, name, name, name)
    assert stray_files(tmp_path) == set()  # nothing on disk is named after user text
    assert store.integrity_check() == "ok" and [s.name for s in store.list_galleries()] == [name]


def test_failure_mid_write_leaves_nothing(store, tmp_path, monkeypatch):
    store.create_gallery("Keep", items=items(2))

    def fail(*args, **kwargs):
        raise OSError("disk I/O error (simulated)")

    monkeypatch.setattr(store, "_insert_items", fail)
    with pytest.raises(OSError):
        store.create_gallery("Lost", items=items(3))
    with pytest.raises(OSError):
        store.add_items("Keep", items(3))
    monkeypatch.undo()
    assert [g.name for g in store.list_galleries()] == ["Keep"]
    assert len(store.get_gallery("Keep").items) == 2 and stray_files(tmp_path) == set()


def test_leftover_image_files_are_removed_on_open(tmp_path):
    """Files a killed writer of the file-based layout left in home/images (an orphan, a temp file) go on open."""
    with GalleryStore(tmp_path) as s:
        s.create_gallery("A", items=items(2))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0123456789abcdef0123456789abcdef.png").write_bytes(b"orphan")
    (tmp_path / "images" / ".feedfacefeedfacefeedfacefeedface.png.tmp").write_bytes(b"half")
    with GalleryStore(tmp_path) as s:
        assert s.removed_orphans == 2
        assert stray_files(tmp_path) == set() and len(s.get_gallery("A").items) == 2


# ----------------------------------------------------------------------------------- concurrency

def test_concurrent_writers_lose_nothing(tmp_path, storage_url):
    # two stores = two pools of connections
    stores = [GalleryStore(tmp_path, database_url=storage_url), GalleryStore(tmp_path, database_url=storage_url)]
    shared = stores[0].create_gallery("shared")
    errors = []

    def writer(worker: int):
        try:
            store = stores[worker % 2]
            for j in range(4):
                gallery_id = store.create_gallery(f"w{worker}-g{j}", created_by=f"w{worker}", items=items(2, j))
                store.add_items(gallery_id, items(1, 100 + j))
                store.add_items(shared, items(1, 200 + j))  # every writer appends to one gallery at once
                store.list_galleries()
        except Exception as error:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    summaries = {s.name: s for s in stores[1].list_galleries()}
    assert len(summaries) == 25 and all(s.n_items == 3 for name, s in summaries.items() if name != "shared")
    positions = [item.position for item in stores[0].get_gallery(shared, with_images=False).items]
    assert positions == list(range(24))  # none lost, none doubled: appends to one gallery took turns
    assert stray_files(tmp_path) == set()
    for store in stores:
        store.close()


# ------------------------------------------------------------------------------------- properties

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_text, caption=_text)
def test_property_valid_text_round_trips_exactly(store, name, caption):
    try:
        clean = G.clean_name(name)
        clean_caption = G.clean_caption(caption)
    except ValueError:
        assume(False)
    assert G.clean_name(clean) == clean and G.clean_caption(clean_caption) == clean_caption  # idempotent
    gallery_id = store.create_gallery(name, items=[GalleryItemInput(tile(0), caption=caption)])
    try:
        g = store.get_gallery(gallery_id)
        assert g.name == clean and g.items[0].caption == clean_caption
        assert store.get_gallery(clean).id == gallery_id
    finally:
        store.delete_gallery(gallery_id)


# -------------------------------------------------------------------------------------- durability

WRITER = r"""
import sys
import numpy as np
from pathsynth.gallery import GalleryItemInput, GalleryStore

store = GalleryStore(sys.argv[1], database_url=sys.argv[3] if len(sys.argv) > 3 else None)
round_ = sys.argv[2]
for i in range(10_000):
    n = 1 + i % 5
    items = [GalleryItemInput(np.full((28, 28, 3), (i + k) % 256, np.uint8), caption=f"{i}/{k}", tissue=k % 9,
                              seed=i) for k in range(n)]
    name = f"r{round_}-g{i}-n{n}"
    print(f"start {name}", flush=True)
    gallery_id = store.create_gallery(name, items=items)
    if i % 3 == 0:
        store.add_items(gallery_id, items[:1])  # galleries named -n{n} with i % 3 == 0 end with n + 1 items
    print(f"done {name}", flush=True)
"""


def parse_name(name: str) -> tuple[int, int]:
    """``r{round}-g{i}-n{n}`` -> (i, n)."""
    return int(name.split("-g")[1].split("-n")[0]), int(name.split("-n")[1])


def run_writer_until_killed(script, home, round_: int, wait_for: int,
                            database_url: str | None = None) -> tuple[list[str], list[str]]:
    """Start the writer, SIGKILL it once it has reported ``wait_for`` galleries done, then drain everything it
    printed. Returns (done, in_flight): galleries reported committed, and the one started but not reported."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    url = [database_url] if database_url else []
    process = subprocess.Popen([sys.executable, str(script), str(home), str(round_), *url], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    while sum(line.startswith("done") for line in lines) < wait_for:
        line = process.stdout.readline()  # blocks until the writer reports; no clock involved
        if not line:
            break
        lines.append(line)
    process.send_signal(signal.SIGKILL)  # lands wherever the writer is: often inside the next write
    process.wait(timeout=300)
    lines += process.stdout.read().splitlines()  # what it printed before the kill landed counts too
    done = [line.split()[1] for line in lines if line.startswith("done")]
    started = [line.split()[1] for line in lines if line.startswith("start")]
    assert len(done) >= wait_for, process.stderr.read()[-2000:]
    return done, [name for name in started if name not in done]


def test_durability_after_sigkill(tmp_path, storage_url):
    """Kill a writer twice mid-stream: every gallery it reported done is present and whole; only the one being
    written at each kill may be missing or short of its add_items; no partial rows, no files beside the DB."""
    home = tmp_path / "home"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    committed, in_flight = [], []
    for round_, wait_for in enumerate((3, 6)):
        done, unfinished = run_writer_until_killed(script, home, round_, wait_for, storage_url)
        assert len(unfinished) <= 1, unfinished  # the writer is sequential: one write in flight at most
        committed += done
        in_flight += unfinished

    with GalleryStore(home, database_url=storage_url) as store:
        assert store.integrity_check() == "ok"
        galleries = {g.name: g for g in store.list_galleries()}
        assert set(committed) <= set(galleries)  # everything reported as done survived
        assert set(galleries) - set(committed) <= set(in_flight)  # nothing appears that was never written
        for name, summary in galleries.items():
            i, n = parse_name(name)
            whole = n + 1 if i % 3 == 0 else n
            # The in-flight one may hold its create_gallery without the add_items that followed.
            assert summary.n_items == whole or (name in in_flight and summary.n_items == n), summary
            g = store.get_gallery(summary.id)  # every row's image is there and decodes
            assert [item.caption for item in g.items][:n] == [f"{i}/{k}" for k in range(n)]
            assert all(np.array_equal(item.image, np.full((28, 28, 3), (i + k) % 256, np.uint8))
                       for k, item in enumerate(g.items[:n]))
        assert stray_files(home) == set()
