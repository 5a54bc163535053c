"""Instructor galleries: named, captioned sets of tiles that survive restarts and crashes.

Storage is ``pathsynth.storage`` (SQLAlchemy + Alembic migrations, upgraded when a store opens):

* default: ``home/galleries.sqlite3`` under ``home`` (``$PATHSYNTH_HOME``, default ``~/.pathsynth``);
  WAL journal, ``synchronous=FULL``, foreign keys on;
* ``database_url`` / ``$PATHSYNTH_DATABASE_URL`` (e.g. ``postgresql+psycopg://user:pw@host/pathsynth``): one
  PostgreSQL database shared by all replicas of a department deployment; nothing is kept on a replica's disk.

**Images live in the database** (``items.image_png``, lossless PNG), so every replica sees every tile and a row
can never point at a missing file. Stores made before that (PNGs under ``home/images``) are migrated on open:
the files move into the rows in the upgrade transaction and are deleted after it commits.

**Crash safety.** Every change is one database transaction (on SQLite it takes the write lock at its start,
``BEGIN IMMEDIATE``); PNGs are encoded before it begins. A writer killed at any point leaves the whole change
or none of it.

**Authorisation is the caller's job.** The store does not check passwords: anything holding a
``GalleryStore`` can write. The app checks the instructor (``ui_helpers.authorize``) before calling a write
method (``create_gallery``, ``add_items``, ``update_caption``, ``set_description``, ``rename_gallery``,
``set_visibility``, ``remove_item``, ``delete_gallery``) and passes the signed-in name as ``created_by`` /
``actor``; every write adds a row to the audit log (``pathsynth.instructors.record``) in its own transaction.
Students only ever reach ``list_galleries`` and ``get_gallery``.

**Visibility.** A gallery is ``"shared"`` (the default) or ``"private"``: a private gallery is listed, opened
and written only when the ``viewer``/``actor`` is its ``created_by`` (any case); to anyone else it does not
exist ("no gallery named ..."). Reads without a ``viewer`` (learners) see shared galleries only. An assignment
made from a private gallery copies its images, so learners with the code can still take it
(``pathsynth.assignments``).

**Names** (case-insensitive) are unique among shared galleries and among one owner's private galleries, and a
write is refused a name only when a gallery its ``actor`` can see has it: another instructor's private gallery
never blocks a name, so "already exists" reveals nothing private. A viewer can therefore see two galleries of one
name (their private one and a shared one someone else named so): looking that name up raises
``AmbiguousGalleryError``, which lists both with their ids; ids always pick one.

Bad input raises ``ValueError`` with a message fit for the UI; an unknown gallery or item raises
``GalleryNotFoundError`` (also a ``ValueError``).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from . import storage
from .instructors import record
from .storage import GalleryRow, ItemRow
from .images import MAX_SEED, SOURCES
from .domains import DEFAULT_DOMAIN, get_domain
from .text import clean_choice, clean_text

DB_NAME = "galleries.sqlite3"
IMAGES_DIR = "images"  # where the PNGs lived before they moved into the database (removed on open)
MAX_NAME_CHARS = 100
MAX_CAPTION_CHARS = 500
MAX_DESCRIPTION_CHARS = 2000
MAX_CREATOR_CHARS = 100
MAX_META_CHARS = 20_000
MAX_ITEMS_PER_GALLERY = 500
MAX_IMAGE_SIDE = 1024
VISIBILITIES = ("shared", "private")  # shared: everyone sees it; private: only its created_by

# C0/C1 controls (newline and tab allowed only in multi-line fields), bidi overrides that can disguise text,
# lone surrogates (not encodable), BOM.


class GalleryNotFoundError(ValueError):
    """No gallery (or item) with that id or name."""


class AmbiguousGalleryError(ValueError):
    """More than one gallery the viewer can see has that name: they choose by id."""


GalleryStoreError = storage.StorageError  # the database is damaged or newer than this PathSynth


@dataclass
class GalleryItemInput:
    image: np.ndarray  # uint8 (H, W, 3); (H, W), RGBA and PIL images are converted
    caption: str = ""
    tissue: int | str = 0  # index, label, abbreviation or display name
    seed: int | None = None
    source: str = "generated"  # "generated" | "real" | "uploaded"
    meta: dict | None = None  # JSON-serialisable extras (verification scores, probabilities...)
    created_at: str | None = None  # ISO-8601 with a time zone; None: now (set by imports, to keep the original)


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
    visibility: str = "shared"
    domain: str = DEFAULT_DOMAIN  # the imaging domain of every item (pathsynth.domains)


@dataclass
class Gallery:
    id: int
    name: str
    description: str
    created_by: str
    created_at: str
    updated_at: str
    visibility: str = "shared"
    domain: str = DEFAULT_DOMAIN  # the imaging domain of every item (pathsynth.domains)
    items: list[GalleryItem] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ validation

def clean_domain(domain) -> str:
    """A domain's flag (``pathmnist``, ``pneumoniamnist``); ``ValueError`` naming the known ones otherwise."""
    return get_domain(domain).flag


def clean_name(name) -> str:
    return clean_text(name, field="Gallery name", max_chars=MAX_NAME_CHARS, allow_empty=False)


def clean_caption(caption) -> str:
    return clean_text(caption, field="Caption", max_chars=MAX_CAPTION_CHARS, multiline=True)


def clean_visibility(value) -> str:
    return clean_choice(value, VISIBILITIES, field="Visibility")


def visible_to(viewer: str | None):
    """The SQL condition for galleries ``viewer`` may see: shared ones and their own private ones."""
    shared = GalleryRow.visibility == "shared"
    if not isinstance(viewer, str) or not viewer.strip():
        return shared
    return or_(shared, func.lower(GalleryRow.created_by) == viewer.strip().lower())


def same_person(actor, owner: str) -> bool:
    """Whether ``actor`` (a signed-in name) is ``owner`` (a gallery's ``created_by``): names match in any case."""
    return isinstance(actor, str) and bool(actor.strip()) and actor.strip().lower() == owner.strip().lower()


def _check_name_free(db: Connection, name: str, actor, other_than: int | None = None) -> None:
    """Refuse ``name`` when a gallery ``actor`` can see has it (their own, or a shared one). Galleries they cannot
    see never block it: refusing would reveal that another instructor's private gallery exists."""
    query = select(GalleryRow.visibility).where(func.lower(GalleryRow.name) == func.lower(name), visible_to(actor))
    if other_than is not None:  # the gallery being renamed may change the case of its own name
        query = query.where(GalleryRow.id != other_than)
    clash = db.scalar(query.order_by(GalleryRow.visibility).limit(1))  # "private" first: the closer clash
    if clash is not None:
        mine = " (your private gallery)" if clash == "private" else ""
        raise ValueError(f"a gallery named {name!r} already exists{mine}")


def _ambiguity_message(name: str, found, viewer) -> str:
    """Which galleries share the name, as the viewer may know them (theirs, or shared by someone)."""
    def described(row) -> str:
        whose = "yours" if same_person(viewer, row.created_by) else f"by {row.created_by or 'an instructor'}"
        return f"id {row.id} ({row.visibility}, {whose})"

    return (f"{len(found)} galleries named {name.strip()[:MAX_NAME_CHARS]!r} are open to you: "
            f"{', '.join(described(row) for row in found)}. Choose one by its id (the gallery list tells them "
            "apart), or rename yours.")


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
class PreparedItem:
    png: bytes
    caption: str
    tissue: int
    seed: int | None
    source: str
    meta_json: str
    created_at: str | None = None


def prepare_item(item: GalleryItemInput, domain: str = DEFAULT_DOMAIN) -> PreparedItem:
    """Validate one item (its class among ``domain``'s) and encode its PNG (outside any lock: the slow part)."""
    from PIL import Image

    if not isinstance(item, GalleryItemInput):
        raise ValueError(f"gallery items must be GalleryItemInput, got {type(item).__name__}")
    catalogue = get_domain(domain)
    try:
        tissue = catalogue.class_index(item.tissue)
    except KeyError as error:
        raise ValueError(f"unknown {catalogue.class_noun} {str(item.tissue)[:40]!r}: {error.args[0]}") from None
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
    return PreparedItem(buffer.getvalue(), clean_caption(item.caption), tissue, seed, item.source, meta_json,
                         clean_timestamp(item.created_at))


def clean_timestamp(value, field: str = "created_at") -> str | None:
    """An ISO-8601 time with a time zone, kept verbatim (imports restore the original), or None."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) and len(value) <= 40 else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(f"{field} must be an ISO-8601 time with a time zone, got {str(value)[:40]!r}")
    return value


def default_home() -> Path:
    from .settings import Settings

    return Settings.from_env().home


# ------------------------------------------------------------------------------------------------ store

class GalleryStore:
    """Durable instructor galleries; see the module docstring. Thread-safe, multi-process and multi-replica safe.

    ``database_url`` None: the SQLite file ``home/galleries.sqlite3``. With neither argument, both come from
    :class:`~pathsynth.settings.Settings` (``PATHSYNTH_HOME``, ``PATHSYNTH_DATABASE_URL``)."""

    def __init__(self, home: str | os.PathLike | None = None, database_url: str | None = None):
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.db_path = self.home / DB_NAME
        self.images_dir = self.home / IMAGES_DIR
        if database_url is None and home is None:  # nothing given: both from the environment's settings
            from .settings import Settings

            database_url = Settings.from_env().database_url
        # Only the home's own SQLite file owns home/images: a PostgreSQL store never reads or deletes it.
        legacy_images = self.images_dir if database_url is None else None
        self.database = storage.open_database(database_url or storage.sqlite_url(self.db_path), legacy_images)
        self.removed_orphans = storage.remove_legacy_images(legacy_images) if legacy_images is not None else 0

    def close(self) -> None:
        self.database.dispose()

    def __enter__(self) -> "GalleryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------- plumbing
    def _insert_gallery(self, db: Connection, create: dict, now: str, actor: str) -> int:
        _check_name_free(db, create["name"], actor)
        try:
            with db.begin_nested():  # a savepoint: PostgreSQL aborts the whole transaction on a violation
                # an import may bring its own times
                result = db.execute(insert(GalleryRow).values(**{"created_at": now, "updated_at": now, **create}))
        except IntegrityError:  # a concurrent writer took the name after the check above
            raise ValueError(f"a gallery named {create['name']!r} already exists") from None
        return int(result.inserted_primary_key[0])

    def _insert_items(self, db: Connection, gallery_id: int, prepared: Sequence[PreparedItem], now: str) -> list[int]:
        start = db.scalar(select(func.coalesce(func.max(ItemRow.position) + 1, 0))
                          .where(ItemRow.gallery_id == gallery_id))
        ids = []
        for offset, item in enumerate(prepared):
            result = db.execute(insert(ItemRow).values(
                gallery_id=gallery_id, position=start + offset, caption=item.caption, tissue=item.tissue,
                seed=item.seed, source=item.source, meta_json=item.meta_json, image_png=item.png,
                created_at=item.created_at or now))
            ids.append(int(result.inserted_primary_key[0]))
        return ids

    def _gallery_id(self, db: Connection, key, lock: bool = False, viewer: str | None = None) -> int:
        """The id of a gallery ``viewer`` may see, by id or (case-insensitive) name; ``lock`` holds its row until
        the commit, so concurrent writers to one gallery take turns (PostgreSQL; SQLite writers are serialised
        anyway)."""
        if isinstance(key, bool) or key is None:
            raise GalleryNotFoundError(f"no gallery {key!r}")
        if isinstance(key, (int, np.integer)):
            if not -2**63 <= int(key) < 2**63:  # beyond BIGINT: cannot exist, and would overflow the driver
                raise GalleryNotFoundError(f"no gallery with id {int(key)}")
            condition, missing = GalleryRow.id == int(key), f"no gallery with id {int(key)}"
        elif isinstance(key, str):
            name = clean_text(key, field="Gallery name", max_chars=10 * MAX_NAME_CHARS)
            condition, missing = func.lower(GalleryRow.name) == func.lower(name), \
                f"no gallery named {name[:MAX_NAME_CHARS]!r}"
        else:
            raise GalleryNotFoundError(f"galleries are looked up by id or name, got {type(key).__name__}")
        query = (select(GalleryRow.id, GalleryRow.visibility, GalleryRow.created_by)
                 .where(condition, visible_to(viewer)).order_by(GalleryRow.id))
        found = db.execute(query.with_for_update() if lock else query).all()
        if not found:
            raise GalleryNotFoundError(missing)
        if len(found) > 1:  # only by name: the viewer's private gallery and a shared one
            raise AmbiguousGalleryError(_ambiguity_message(key, found, viewer))
        return int(found[0].id)

    def _item_gallery(self, db: Connection, item_id, viewer: str | None) -> int:
        """The gallery of an item ``viewer`` may see, its row locked (see ``_gallery_id``)."""
        missing = GalleryNotFoundError(f"no gallery item with id {item_id!r}")
        gallery_id = db.scalar(select(ItemRow.gallery_id).where(ItemRow.id == _item_id(item_id)))
        if gallery_id is None:
            raise missing
        try:
            return self._gallery_id(db, int(gallery_id), lock=True, viewer=viewer)
        except GalleryNotFoundError:  # another instructor's private gallery: the item does not exist for them
            raise missing from None

    def _touch(self, db: Connection, gallery_id: int, **values) -> None:
        db.execute(update(GalleryRow).where(GalleryRow.id == gallery_id).values(**values, updated_at=storage.now_stamp()))

    def _add(self, gallery, prepared: list[PreparedItem], create: dict | None, actor: str,
             action: str) -> tuple[int, list[int]]:
        now = storage.now_stamp()
        with self.database.write() as db:
            if create is not None:
                gallery_id = self._insert_gallery(db, create, now, actor)
                detail = create["name"]
            else:
                gallery_id = self._gallery_id(db, gallery, lock=True, viewer=actor)
                count = db.scalar(select(func.count()).where(ItemRow.gallery_id == gallery_id))
                if count + len(prepared) > MAX_ITEMS_PER_GALLERY:
                    raise ValueError(f"a gallery holds at most {MAX_ITEMS_PER_GALLERY} images "
                                     f"(it has {count}, adding {len(prepared)})")
                self._touch(db, gallery_id)
                detail = f"{len(prepared)} image(s)"
            ids = self._insert_items(db, gallery_id, prepared, now)
            record(db, actor, action, "gallery", gallery_id, detail)
        return gallery_id, ids

    # ----------------------------------------------------------------------------------- writes
    def create_gallery(self, name: str, description: str = "", created_by: str = "",
                       items: Sequence[GalleryItemInput] = (), *, created_at: str | None = None,
                       updated_at: str | None = None, visibility: str = "shared", actor: str | None = None,
                       action: str = "create", domain: str = DEFAULT_DOMAIN) -> int:
        """A new gallery of one imaging ``domain`` (histology unless told) with ``items`` (all or nothing); returns
        its id. Duplicate names -> ``ValueError``.

        ``created_at``/``updated_at`` (ISO-8601 with a time zone) restore an exported gallery's times. The audit
        log names ``actor`` (default: ``created_by``) and ``action`` (``import`` for imports)."""
        items = list(items)
        if len(items) > MAX_ITEMS_PER_GALLERY:
            raise ValueError(f"a gallery holds at most {MAX_ITEMS_PER_GALLERY} images, got {len(items)}")
        create = {"name": clean_name(name),
                  "description": clean_text(description, field="Description", max_chars=MAX_DESCRIPTION_CHARS,
                                            multiline=True),
                  "created_by": clean_text(created_by, field="Creator", max_chars=MAX_CREATOR_CHARS),
                  "visibility": clean_visibility(visibility), "domain": clean_domain(domain)}
        actor = create["created_by"] if actor is None else actor
        if create["visibility"] == "private" and not create["created_by"]:
            raise ValueError("A private gallery needs its owner (created_by).")
        if create["visibility"] == "private" and not same_person(actor, create["created_by"]):
            raise ValueError("Only its owner can create a private gallery (actor and created_by differ).")
        for key, value in (("created_at", created_at), ("updated_at", updated_at)):
            if value is not None:
                create[key] = clean_timestamp(value, key)
        prepared = [prepare_item(item, create["domain"]) for item in items]
        gallery_id, _ = self._add(None, prepared, create, actor, action)
        return gallery_id

    def add_items(self, gallery, items: Sequence[GalleryItemInput], *, actor: str = "",
                  action: str = "add_items") -> list[int]:
        """Append ``items`` (of the gallery's domain) to a gallery ``actor`` may see (all or nothing); returns the
        new item ids."""
        with self.database.read() as db:  # a gallery's domain never changes: read once, outside the write
            domain = db.scalar(select(GalleryRow.domain).where(GalleryRow.id == self._gallery_id(db, gallery,
                                                                                                 viewer=actor)))
        prepared = [prepare_item(item, domain) for item in items]
        if not prepared:
            return []
        return self._add(gallery, prepared, None, actor, action)[1]

    def update_caption(self, item_id: int, caption: str, *, actor: str = "") -> None:
        caption = clean_caption(caption)
        with self.database.write() as db:
            gallery_id = self._item_gallery(db, item_id, actor)
            db.execute(update(ItemRow).where(ItemRow.id == int(item_id)).values(caption=caption))
            self._touch(db, gallery_id)
            record(db, actor, "caption", "item", int(item_id), f"gallery {gallery_id}")

    def set_description(self, gallery, description: str, *, actor: str = "") -> None:
        description = clean_text(description, field="Description", max_chars=MAX_DESCRIPTION_CHARS, multiline=True)
        with self.database.write() as db:
            gallery_id = self._gallery_id(db, gallery, lock=True, viewer=actor)
            self._touch(db, gallery_id, description=description)
            record(db, actor, "describe", "gallery", gallery_id)

    def rename_gallery(self, gallery, new_name: str, *, actor: str = "") -> int:
        """Rename a gallery ``actor`` may see; returns its id (the new name may be ambiguous to someone else)."""
        new_name = clean_name(new_name)
        with self.database.write() as db:
            gallery_id = self._gallery_id(db, gallery, lock=True, viewer=actor)
            old_name = db.scalar(select(GalleryRow.name).where(GalleryRow.id == gallery_id))
            _check_name_free(db, new_name, actor, other_than=gallery_id)
            try:
                with db.begin_nested():
                    self._touch(db, gallery_id, name=new_name)
            except IntegrityError:
                raise ValueError(f"a gallery named {new_name!r} already exists") from None
            record(db, actor, "rename", "gallery", gallery_id, f"{old_name} -> {new_name}")
        return gallery_id

    def set_visibility(self, gallery, visibility: str, *, actor: str) -> None:
        """Make a gallery ``"shared"`` or ``"private"``; only its owner (``created_by``, any case) may."""
        visibility = clean_visibility(visibility)
        with self.database.write() as db:
            gallery_id = self._gallery_id(db, gallery, lock=True, viewer=actor)
            row = db.execute(select(GalleryRow.name, GalleryRow.created_by).where(GalleryRow.id == gallery_id)).one()
            if not same_person(actor, row.created_by):
                raise PermissionError(f"Only its owner ({row.created_by or 'nobody'}) can make {row.name!r} "
                                      "private or shared.")
            _check_name_free(db, row.name, actor, other_than=gallery_id)
            try:
                with db.begin_nested():
                    self._touch(db, gallery_id, visibility=visibility)
            except IntegrityError:  # a racing writer took the name among the galleries it moves to
                raise ValueError(f"a {visibility} gallery named {row.name!r} already exists") from None
            record(db, actor, "visibility", "gallery", gallery_id, visibility)

    def remove_item(self, item_id: int, *, actor: str = "") -> None:
        with self.database.write() as db:
            gallery_id = self._item_gallery(db, item_id, actor)
            db.execute(delete(ItemRow).where(ItemRow.id == int(item_id)))
            self._touch(db, gallery_id)
            record(db, actor, "remove_item", "item", int(item_id), f"gallery {gallery_id}")

    def delete_gallery(self, gallery, *, actor: str = "") -> None:
        with self.database.write() as db:
            gallery_id = self._gallery_id(db, gallery, lock=True, viewer=actor)
            name = db.scalar(select(GalleryRow.name).where(GalleryRow.id == gallery_id))
            db.execute(delete(GalleryRow).where(GalleryRow.id == gallery_id))  # items go by ON DELETE CASCADE
            record(db, actor, "delete", "gallery", gallery_id, name)

    # ------------------------------------------------------------------------------------ reads
    def list_galleries(self, viewer: str | None = None) -> list[GallerySummary]:
        """The galleries ``viewer`` may see (None: shared ones only), oldest first."""
        n_items = func.count(ItemRow.id).label("n_items")
        query = (select(GalleryRow.id, GalleryRow.name, GalleryRow.description, GalleryRow.created_by,
                        GalleryRow.created_at, GalleryRow.updated_at, GalleryRow.visibility, GalleryRow.domain,
                        n_items)
                 .outerjoin(ItemRow, ItemRow.gallery_id == GalleryRow.id).where(visible_to(viewer))
                 .group_by(GalleryRow.id).order_by(GalleryRow.created_at, GalleryRow.id))
        with self.database.read() as db:
            return [GallerySummary(**row._asdict()) for row in db.execute(query)]

    def get_gallery(self, gallery, with_images: bool = True, *, viewer: str | None = None) -> Gallery:
        """A gallery ``viewer`` may see by id (int) or name (str, case-insensitive), items in order, images as
        uint8 arrays."""
        columns = [ItemRow.id, ItemRow.gallery_id, ItemRow.position, ItemRow.caption, ItemRow.tissue, ItemRow.seed,
                   ItemRow.source, ItemRow.meta_json, ItemRow.created_at]
        with self.database.read() as db:  # one snapshot: the gallery and its items as of one moment
            gallery_id = self._gallery_id(db, gallery, viewer=viewer)
            row = db.execute(select(*GalleryRow.__table__.c).where(GalleryRow.id == gallery_id)).one()
            if with_images:  # the PNGs are most of the bytes: fetched only when asked for
                columns.append(ItemRow.image_png)
            item_rows = db.execute(select(*columns).where(ItemRow.gallery_id == gallery_id)
                                   .order_by(ItemRow.position, ItemRow.id)).all()
        items = []
        for r in item_rows:
            fields = r._asdict()
            png, meta_json = fields.pop("image_png", None), fields.pop("meta_json")
            image = decode_png(png, r.id) if with_images else np.zeros((0, 0, 3), np.uint8)
            items.append(GalleryItem(**fields, meta=json.loads(meta_json), image=image))
        return Gallery(**row._asdict(), items=items)

    def integrity_check(self) -> str:
        return self.database.integrity_check()


def decode_png(png: bytes, item_id: int) -> np.ndarray:
    """A stored PNG as uint8 RGB; ``GalleryStoreError`` naming the item when it is damaged."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(png)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as error:
        raise GalleryStoreError(f"the image of gallery item {item_id} is damaged ({error})") from None


def _item_id(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not -2**63 <= int(value) < 2**63:
        raise GalleryNotFoundError(f"no gallery item with id {value!r}")
    return int(value)


def instructor_caption(item) -> str:
    """The instructor's own words for an item, or "" when there are none: a caption that only repeats the tissue's
    name (the batch table's old default) says nothing the tissue name does not, so it is not shown twice."""
    from .tissues import DISPLAY_NAMES

    caption = (item.caption or "").strip()
    return "" if caption.casefold() == DISPLAY_NAMES[item.tissue].casefold() else caption


def item_label(item) -> str:
    """The tissue's name, then the instructor's caption when there is one: "Mucus — pools of mucin"."""
    from .tissues import DISPLAY_NAMES

    caption = instructor_caption(item)
    return f"{DISPLAY_NAMES[item.tissue]} — {caption}" if caption else DISPLAY_NAMES[item.tissue]


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


__all__ = ["AmbiguousGalleryError", "Gallery", "GalleryItem", "GalleryItemInput", "GalleryNotFoundError",
           "GalleryStore", "GalleryStoreError", "GallerySummary", "PreparedItem", "VISIBILITIES", "clean_caption",
           "instructor_caption", "item_label",
           "clean_name", "clean_timestamp", "clean_visibility", "decode_png", "default_home", "items_from_verified",
           "prepare_item", "visible_to"]
