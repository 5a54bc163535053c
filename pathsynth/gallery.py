"""Instructor galleries: named, captioned sets of tiles that survive restarts and crashes.

Layout under ``home`` (``$PATHSYNTH_HOME``, default ``~/.pathsynth``)::

    galleries.sqlite3      galleries + items (SQLite, WAL journal, synchronous=FULL, foreign keys on)
    images/<uuid>.png      one lossless PNG per item; names are random, never built from user text

**Crash safety.** A write takes SQLite's write lock first (``BEGIN IMMEDIATE``), then writes its PNGs
(temp name, fsync, ``os.replace``), then inserts the rows and commits, all in one transaction. A writer
killed at any point leaves either the whole change or none of its rows, plus at most some unreferenced
files; opening a store removes those (under the same write lock, so a live writer's files are never taken).
Deletions remove rows first and files after the commit, so a row never points at a missing file.

**Authorisation is the caller's job.** The store has no notion of users: anything holding a
``GalleryStore`` can write. The app must check the instructor (``ui_helpers.authorize``) before calling a
write method (``create_gallery``, ``add_items``, ``update_caption``, ``set_description``,
``rename_gallery``, ``remove_item``, ``delete_gallery``) and passes the authorised name as ``created_by``.
Students only ever reach ``list_galleries`` and ``get_gallery``.

Bad input raises ``ValueError`` with a message fit for the UI; an unknown gallery or item raises
``GalleryNotFoundError`` (also a ``ValueError``).
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import threading
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .tissues import tissue_index

HOME_ENV = "PATHSYNTH_HOME"
DB_NAME = "galleries.sqlite3"
IMAGES_DIR = "images"
SCHEMA_VERSION = 1
MAX_NAME_CHARS = 100
MAX_CAPTION_CHARS = 500
MAX_DESCRIPTION_CHARS = 2000
MAX_CREATOR_CHARS = 100
MAX_META_CHARS = 20_000
MAX_ITEMS_PER_GALLERY = 500
MAX_IMAGE_SIDE = 1024
MAX_SEED = 2**63 - 1  # SQLite INTEGER
SOURCES = ("generated", "real", "uploaded")
BUSY_TIMEOUT_MS = 30_000

# C0/C1 controls (newline and tab allowed only in multi-line fields), bidi overrides that can disguise text,
# lone surrogates (not encodable), BOM.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS galleries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE COLLATE NOCASE,
    description TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    gallery_id  INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    caption     TEXT NOT NULL DEFAULT '',
    tissue      INTEGER NOT NULL CHECK (tissue BETWEEN 0 AND 8),
    seed        INTEGER,
    source      TEXT NOT NULL,
    meta_json   TEXT NOT NULL DEFAULT '{}',
    image_file  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_gallery ON items (gallery_id, position);
"""


class GalleryNotFoundError(ValueError):
    """No gallery (or item) with that id or name."""


class GalleryStoreError(RuntimeError):
    """The store on disk is damaged (e.g. an image file was removed by hand)."""


@dataclass
class GalleryItemInput:
    image: np.ndarray  # uint8 (H, W, 3); (H, W), RGBA and PIL images are converted
    caption: str = ""
    tissue: int | str = 0  # index, label, abbreviation or display name
    seed: int | None = None
    source: str = "generated"  # "generated" | "real" | "uploaded"
    meta: dict | None = None  # JSON-serialisable extras (verification scores, probabilities...)


@dataclass
class GalleryItem:
    id: int
    gallery_id: int
    position: int
    caption: str
    tissue: int
    seed: int | None
    source: str
    meta: dict
    image_file: str  # file name under home/images
    created_at: str
    image: np.ndarray  # uint8 (H, W, 3)


@dataclass
class GallerySummary:
    id: int
    name: str
    description: str
    created_by: str
    n_items: int
    created_at: str
    updated_at: str


@dataclass
class Gallery:
    id: int
    name: str
    description: str
    created_by: str
    created_at: str
    updated_at: str
    items: list[GalleryItem] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ validation

def clean_text(value, *, field: str, max_chars: int, multiline: bool = False, allow_empty: bool = True) -> str:
    """``value`` NFC-normalised, control characters removed, stripped; ``ValueError`` if not valid."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text, got {type(value).__name__}")
    text = _CONTROL.sub("", value)
    if not multiline:
        text = text.replace("\n", " ").replace("\t", " ")
    # NFC after removing controls (a removed control can sit between a letter and its accent): idempotent
    text = unicodedata.normalize("NFC", text).strip()
    if not text and not allow_empty:
        raise ValueError(f"{field} must not be empty")
    if len(text) > max_chars:
        raise ValueError(f"{field} is too long ({len(text)} characters; at most {max_chars})")
    return text


def clean_name(name) -> str:
    return clean_text(name, field="Gallery name", max_chars=MAX_NAME_CHARS, allow_empty=False)


def clean_caption(caption) -> str:
    return clean_text(caption, field="Caption", max_chars=MAX_CAPTION_CHARS, multiline=True)


def _check_image(image) -> np.ndarray:
    if hasattr(image, "convert") and not isinstance(image, np.ndarray):  # PIL image
        image = np.asarray(image.convert("RGB"))
    try:
        array = np.asarray(image)
    except Exception:
        raise ValueError("image must be an array of pixels") from None
    if array.dtype == object or array.dtype.kind not in "uifb":
        raise ValueError(f"image must be numeric pixels, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"image must have shape (H, W, 3), got {array.shape}")
    if not (1 <= array.shape[0] <= MAX_IMAGE_SIDE and 1 <= array.shape[1] <= MAX_IMAGE_SIDE):
        raise ValueError(f"image must be 1 to {MAX_IMAGE_SIDE} pixels on each side, got {array.shape[:2]}")
    if array.dtype != np.uint8:
        if array.dtype.kind == "f":
            if not np.isfinite(array).all():
                raise ValueError("image contains NaN or infinite values")
            array = array * 255.0 if array.max() <= 1.0 else array
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array[..., :3])


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


@dataclass
class _PreparedItem:
    png: bytes
    caption: str
    tissue: int
    seed: int | None
    source: str
    meta_json: str


def _prepare(item: GalleryItemInput) -> _PreparedItem:
    """Validate one item and encode its PNG (outside any lock: this is the slow part)."""
    from PIL import Image

    if not isinstance(item, GalleryItemInput):
        raise ValueError(f"gallery items must be GalleryItemInput, got {type(item).__name__}")
    try:
        tissue = tissue_index(item.tissue)
    except KeyError as error:
        raise ValueError(f"unknown tissue {str(item.tissue)[:40]!r}: {error.args[0]}") from None
    seed = item.seed
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
            raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
        seed = int(seed)
    if item.source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {str(item.source)[:40]!r}")
    meta = {} if item.meta is None else item.meta
    if not isinstance(meta, dict):
        raise ValueError("meta must be a dict")
    try:
        # ASCII JSON: lone surrogates and odd code points become escapes SQLite can always store
        meta_json = json.dumps(meta, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"meta must be JSON-serialisable ({error})") from None
    if len(meta_json) > MAX_META_CHARS:
        raise ValueError(f"meta is too large ({len(meta_json)} characters; at most {MAX_META_CHARS})")
    buffer = io.BytesIO()
    Image.fromarray(_check_image(item.image)).save(buffer, format="PNG")
    return _PreparedItem(buffer.getvalue(), clean_caption(item.caption), tissue, seed, item.source, meta_json)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".pathsynth").expanduser()


# ------------------------------------------------------------------------------------------------ store

class GalleryStore:
    """Durable instructor galleries in ``home``; see the module docstring. Thread-safe, multi-process safe."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.images_dir = self.home / IMAGES_DIR
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.home / DB_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        connection = self._connection()
        connection.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the writer
        with self._write() as db:
            # statement by statement: executescript would commit our transaction first
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise GalleryStoreError(f"{self.db_path} was written by a newer PathSynth (schema {version})")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.removed_orphans = self._remove_orphans()

    # ------------------------------------------------------------------------------- plumbing
    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("this GalleryStore is closed")
        connection = getattr(self._local, "connection", None)
        if connection is None:
            # One connection per thread; autocommit mode, so transactions are exactly the ones we BEGIN.
            connection = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                         check_same_thread=False)
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA synchronous=FULL")
            self._local.connection = connection
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    def _write(self):
        return _Transaction(self._connection(), "BEGIN IMMEDIATE")

    def _read(self):
        return _Transaction(self._connection(), "BEGIN")

    def close(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
            self._closed = True

    def __enter__(self) -> "GalleryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _remove_orphans(self) -> int:
        """Delete image files no row refers to (left by a killed writer) and stray temp files."""
        removed = 0
        with self._write() as db:  # the write lock: no live writer has uncommitted files meanwhile
            referenced = {row[0] for row in db.execute("SELECT image_file FROM items")}
            for path in self.images_dir.iterdir():
                if path.name in referenced or not path.is_file():
                    continue
                try:
                    path.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def _write_files(self, prepared: Sequence[_PreparedItem]) -> list[str]:
        """Write PNGs atomically under fresh random names; returns the names (for the rows)."""
        names: list[str] = []
        try:
            for item in prepared:
                name = f"{uuid.uuid4().hex}.png"
                temporary = self.images_dir / f".{name}.tmp"
                with open(temporary, "xb") as handle:
                    handle.write(item.png)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.images_dir / name)
                names.append(name)
            _fsync_directory(self.images_dir)
        except BaseException:
            self._unlink(names)
            for leftover in self.images_dir.glob(".*.tmp"):
                _ignore_missing(leftover.unlink)
            raise
        return names

    def _unlink(self, names: Iterable[str]) -> None:
        for name in names:
            _ignore_missing((self.images_dir / name).unlink)

    def _insert_items(self, db: sqlite3.Connection, gallery_id: int, prepared: Sequence[_PreparedItem],
                      names: Sequence[str], now: str) -> list[int]:
        start = db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM items WHERE gallery_id = ?",
                           (gallery_id,)).fetchone()[0]
        ids = []
        for offset, (item, name) in enumerate(zip(prepared, names)):
            cursor = db.execute(
                "INSERT INTO items (gallery_id, position, caption, tissue, seed, source, meta_json, image_file, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (gallery_id, start + offset, item.caption, item.tissue, item.seed, item.source, item.meta_json,
                 name, now))
            ids.append(int(cursor.lastrowid))
        return ids

    def _gallery_id(self, db: sqlite3.Connection, key) -> int:
        if isinstance(key, bool) or key is None:
            raise GalleryNotFoundError(f"no gallery {key!r}")
        if isinstance(key, (int, np.integer)):
            row = db.execute("SELECT id FROM galleries WHERE id = ?", (int(key),)).fetchone()
            if row is None:
                raise GalleryNotFoundError(f"no gallery with id {int(key)}")
            return int(row[0])
        if isinstance(key, str):
            name = clean_text(key, field="Gallery name", max_chars=10 * MAX_NAME_CHARS)
            row = db.execute("SELECT id FROM galleries WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise GalleryNotFoundError(f"no gallery named {name[:MAX_NAME_CHARS]!r}")
            return int(row[0])
        raise GalleryNotFoundError(f"galleries are looked up by id or name, got {type(key).__name__}")

    def _add(self, gallery_id_or_new, prepared: list[_PreparedItem], create: dict | None) -> tuple[int, list[int]]:
        now = _now()
        names: list[str] = []
        try:
            with self._write() as db:
                if create is not None:
                    try:
                        cursor = db.execute(
                            "INSERT INTO galleries (name, description, created_by, created_at, updated_at) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (create["name"], create["description"], create["created_by"], now, now))
                    except sqlite3.IntegrityError:
                        raise ValueError(f"a gallery named {create['name']!r} already exists") from None
                    gallery_id = int(cursor.lastrowid)
                else:
                    gallery_id = self._gallery_id(db, gallery_id_or_new)
                    count = db.execute("SELECT COUNT(*) FROM items WHERE gallery_id = ?", (gallery_id,)).fetchone()[0]
                    if count + len(prepared) > MAX_ITEMS_PER_GALLERY:
                        raise ValueError(f"a gallery holds at most {MAX_ITEMS_PER_GALLERY} images "
                                         f"(it has {count}, adding {len(prepared)})")
                    db.execute("UPDATE galleries SET updated_at = ? WHERE id = ?", (now, gallery_id))
                names = self._write_files(prepared)
                ids = self._insert_items(db, gallery_id, prepared, names, now)
        except BaseException:
            self._unlink(names)  # the rows were rolled back: their files must go too
            raise
        return gallery_id, ids

    # ----------------------------------------------------------------------------------- writes
    def create_gallery(self, name: str, description: str = "", created_by: str = "",
                       items: Sequence[GalleryItemInput] = ()) -> int:
        """A new gallery with ``items`` (all or nothing); returns its id. Duplicate names -> ``ValueError``."""
        items = list(items)
        if len(items) > MAX_ITEMS_PER_GALLERY:
            raise ValueError(f"a gallery holds at most {MAX_ITEMS_PER_GALLERY} images, got {len(items)}")
        create = {"name": clean_name(name),
                  "description": clean_text(description, field="Description", max_chars=MAX_DESCRIPTION_CHARS,
                                            multiline=True),
                  "created_by": clean_text(created_by, field="Creator", max_chars=MAX_CREATOR_CHARS)}
        prepared = [_prepare(item) for item in items]
        gallery_id, _ = self._add(None, prepared, create)
        return gallery_id

    def add_items(self, gallery, items: Sequence[GalleryItemInput]) -> list[int]:
        """Append ``items`` to a gallery (all or nothing); returns the new item ids."""
        prepared = [_prepare(item) for item in items]
        if not prepared:
            return []
        return self._add(gallery, prepared, None)[1]

    def update_caption(self, item_id: int, caption: str) -> None:
        caption = clean_caption(caption)
        with self._write() as db:
            row = db.execute("SELECT gallery_id FROM items WHERE id = ?", (_item_id(item_id),)).fetchone()
            if row is None:
                raise GalleryNotFoundError(f"no gallery item with id {item_id!r}")
            db.execute("UPDATE items SET caption = ? WHERE id = ?", (caption, int(item_id)))
            db.execute("UPDATE galleries SET updated_at = ? WHERE id = ?", (_now(), row[0]))

    def set_description(self, gallery, description: str) -> None:
        description = clean_text(description, field="Description", max_chars=MAX_DESCRIPTION_CHARS, multiline=True)
        with self._write() as db:
            gallery_id = self._gallery_id(db, gallery)
            db.execute("UPDATE galleries SET description = ?, updated_at = ? WHERE id = ?",
                       (description, _now(), gallery_id))

    def rename_gallery(self, gallery, new_name: str) -> None:
        new_name = clean_name(new_name)
        with self._write() as db:
            gallery_id = self._gallery_id(db, gallery)
            try:
                db.execute("UPDATE galleries SET name = ?, updated_at = ? WHERE id = ?", (new_name, _now(), gallery_id))
            except sqlite3.IntegrityError:
                raise ValueError(f"a gallery named {new_name!r} already exists") from None

    def remove_item(self, item_id: int) -> None:
        with self._write() as db:
            row = db.execute("SELECT gallery_id, image_file FROM items WHERE id = ?", (_item_id(item_id),)).fetchone()
            if row is None:
                raise GalleryNotFoundError(f"no gallery item with id {item_id!r}")
            db.execute("DELETE FROM items WHERE id = ?", (int(item_id),))
            db.execute("UPDATE galleries SET updated_at = ? WHERE id = ?", (_now(), row[0]))
        self._unlink([row[1]])  # after the commit: a crash here leaves an orphan, never a dangling row

    def delete_gallery(self, gallery) -> None:
        with self._write() as db:
            gallery_id = self._gallery_id(db, gallery)
            files = [r[0] for r in db.execute("SELECT image_file FROM items WHERE gallery_id = ?", (gallery_id,))]
            db.execute("DELETE FROM galleries WHERE id = ?", (gallery_id,))  # items go by ON DELETE CASCADE
        self._unlink(files)

    # ------------------------------------------------------------------------------------ reads
    def list_galleries(self) -> list[GallerySummary]:
        rows = self._connection().execute(
            "SELECT g.id, g.name, g.description, g.created_by, g.created_at, g.updated_at, COUNT(i.id) AS n_items "
            "FROM galleries g LEFT JOIN items i ON i.gallery_id = g.id GROUP BY g.id ORDER BY g.created_at, g.id"
        ).fetchall()
        return [GallerySummary(id=r["id"], name=r["name"], description=r["description"], created_by=r["created_by"],
                               n_items=r["n_items"], created_at=r["created_at"], updated_at=r["updated_at"])
                for r in rows]

    def get_gallery(self, gallery, with_images: bool = True) -> Gallery:
        """A gallery by id (int) or name (str, case-insensitive), items in order, images as uint8 arrays."""
        with self._read() as db:
            gallery_id = self._gallery_id(db, gallery)
            row = db.execute("SELECT * FROM galleries WHERE id = ?", (gallery_id,)).fetchone()
            item_rows = db.execute("SELECT * FROM items WHERE gallery_id = ? ORDER BY position, id",
                                   (gallery_id,)).fetchall()
        items = []
        for r in item_rows:
            image = self._load_image(r["image_file"], gallery_id) if with_images else np.zeros((0, 0, 3), np.uint8)
            items.append(GalleryItem(id=r["id"], gallery_id=r["gallery_id"], position=r["position"],
                                     caption=r["caption"], tissue=r["tissue"], seed=r["seed"], source=r["source"],
                                     meta=json.loads(r["meta_json"]), image_file=r["image_file"],
                                     created_at=r["created_at"], image=image))
        return Gallery(id=row["id"], name=row["name"], description=row["description"], created_by=row["created_by"],
                       created_at=row["created_at"], updated_at=row["updated_at"], items=items)

    def _load_image(self, name: str, gallery_id: int) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(self.images_dir / name) as image:
                return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
        except FileNotFoundError:
            exists = self._connection().execute("SELECT 1 FROM items WHERE image_file = ?", (name,)).fetchone()
            if exists is None:  # deleted by another request while we were reading
                raise GalleryNotFoundError(f"gallery {gallery_id} was just changed or deleted; reload it") from None
            raise GalleryStoreError(f"image file {name} of gallery {gallery_id} is missing from "
                                    f"{self.images_dir}") from None

    def integrity_check(self) -> str:
        return self._connection().execute("PRAGMA integrity_check").fetchone()[0]


class _Transaction:
    """``with`` block = one SQLite transaction on an autocommit connection (commit, or roll back on error)."""

    def __init__(self, connection: sqlite3.Connection, begin: str):
        self.connection, self.begin = connection, begin

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute(self.begin)
        return self.connection

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.connection.execute("COMMIT")
        else:
            try:
                self.connection.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back (e.g. after a disk error)


def _item_id(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise GalleryNotFoundError(f"no gallery item with id {value!r}")
    return int(value)


def _fsync_directory(path: Path) -> None:
    """Make renames in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _ignore_missing(action) -> None:
    try:
        action()
    except FileNotFoundError:
        pass


def items_from_verified(results, captions: Sequence[str] | None = None) -> list[GalleryItemInput]:
    """Gallery items from ``Verifier.generate`` results, keeping the verification facts in ``meta``."""
    captions = list(captions) if captions is not None else [""] * len(results)
    items = []
    for result, caption in zip(results, captions):
        meta = {"verified": bool(result.verified), "attempts": int(result.attempts),
                "predicted": int(result.predicted), "confidence": float(result.confidence),
                "realism": float(result.realism), "probabilities": [float(p) for p in result.probabilities],
                "backend": str(getattr(result, "backend", ""))}
        items.append(GalleryItemInput(image=result.image, caption=caption, tissue=int(result.tissue),
                                      seed=int(result.seed), source="generated", meta=meta))
    return items


__all__ = ["Gallery", "GalleryItem", "GalleryItemInput", "GalleryNotFoundError", "GalleryStore", "GalleryStoreError",
           "GallerySummary", "clean_caption", "clean_name", "default_home", "items_from_verified"]
