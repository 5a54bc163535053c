"""Where the verified-image pool (``pathsynth.pool``) keeps its stock: in this process, or in the app's database.

:class:`DatabaseStock` (what the app uses) keeps each stocked image, its classifier record and its heatmap in the
``pool_images`` table: a restart finds the stock made, and several app replicas and ``pathsynth worker`` processes
sharing one PostgreSQL share one stock (workers fill it, replicas take from it). Taking an image deletes its row
in the same statement; on PostgreSQL the row is claimed with ``FOR UPDATE SKIP LOCKED``, so two replicas taking
at once get different images without waiting for each other; SQLite serialises writers (``BEGIN IMMEDIATE``).
Rows carry the classifier's fingerprint (``models``): a replica never serves images another classifier verified.

:class:`MemoryStock` keeps the stock in this process only (library use and tests without a database).
"""

from __future__ import annotations

import io
import json
import threading
from collections import deque
from collections.abc import Callable, Sequence
import numpy as np
from sqlalchemy import and_, case, delete, func, or_, select

from .learning.difficulty import EASY_CONFIDENCE, EASY_REALISM, SOUND_CONFIDENCE, fits
from .storage import Database, PoolImageRow, now_stamp
from .tissues import TISSUE_INDICES
from .verify import VerifiedImage

Suits = Callable[[object], bool]  # reads ``.confidence`` and ``.realism`` of a stocked image


class MemoryStock:
    """The stock in this process's memory, oldest first per tissue."""

    def __init__(self):
        self._items: dict[int, deque] = {t: deque() for t in TISSUE_INDICES}
        self._lock = threading.Lock()

    def put(self, items: Sequence[VerifiedImage]) -> None:
        with self._lock:
            for item in items:
                self._items[item.tissue].append(item)

    def take(self, tissue: int, prefer: str | None = None) -> VerifiedImage | None:
        """Remove and return the oldest image of ``tissue`` (or the one the classifier is most sure of, or a hard
        quiz's: one that suits it, the least sure first)."""
        with self._lock:
            stock = self._items[tissue]
            if not stock:
                return None
            if prefer is None:
                return stock.popleft()
            if prefer == "confident":
                index = max(range(len(stock)), key=lambda i: (stock[i].confidence, stock[i].realism))
            else:  # an atypical image the classifier is sure of suits a hard quiz, a typical 0.95-sure one does not
                index = min(range(len(stock)), key=lambda i: (not fits("hard", stock[i].confidence, stock[i].realism),
                                                               stock[i].confidence, stock[i].realism))
            item = stock[index]
            del stock[index]
            return item

    def items(self) -> list[VerifiedImage]:
        """Every stocked image, left in stock."""
        with self._lock:
            return [item for stock in self._items.values() for item in stock]

    def counts(self, suits: Suits | None = None) -> dict[int, int]:
        """Images in stock per tissue (those ``suits`` accepts, when given)."""
        with self._lock:
            return {t: sum(1 for item in items if suits is None or suits(item)) for t, items in self._items.items()}


def _array_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _array(data: bytes | None) -> np.ndarray | None:
    return None if data is None else np.load(io.BytesIO(data), allow_pickle=False)


class DatabaseStock:
    """The stock in the app's database (SQLite or PostgreSQL), shared by every process that opens it."""

    def __init__(self, database: Database, models: str):
        self.database, self.models = database, models

    def put(self, items: Sequence[VerifiedImage]) -> None:
        rows = [self._row(item) for item in items]
        if rows:
            with self.database.write() as db:
                db.execute(PoolImageRow.__table__.insert(), rows)

    def _row(self, item: VerifiedImage) -> dict:
        record = item.to_dict()
        for name in ("tissue", "seed", "confidence", "realism", "from_pool"):
            record.pop(name)
        return {"models": self.models, "tissue": int(item.tissue), "seed": int(item.seed),
                "confidence": float(item.confidence), "realism": float(item.realism),
                "made_at": now_stamp(),
                "record_json": json.dumps(record), "image_npy": _array_bytes(np.asarray(item.image, np.uint8)),
                "heatmap_npy": None if item.heatmap is None else _array_bytes(np.asarray(item.heatmap, np.float32))}

    def take(self, tissue: int, prefer: str | None = None) -> VerifiedImage | None:
        """Claim and remove one image of ``tissue`` (the oldest, or the one the classifier is most sure of, or a
        hard quiz's: one that suits it, the least sure first; as ``MemoryStock.take``); None when there is none.
        Concurrent takers never get the same image, nor wait for each other."""
        suits_hard = case((and_(PoolImageRow.confidence >= SOUND_CONFIDENCE, or_(
            PoolImageRow.confidence < EASY_CONFIDENCE, PoolImageRow.realism < EASY_REALISM)), 0), else_=1)  # fits()
        order = {None: [PoolImageRow.id],
                 "confident": [PoolImageRow.confidence.desc(), PoolImageRow.realism.desc(), PoolImageRow.id],
                 "borderline": [suits_hard, PoolImageRow.confidence, PoolImageRow.realism, PoolImageRow.id]}[prefer]
        claimed = (select(PoolImageRow.id).where(PoolImageRow.models == self.models, PoolImageRow.tissue == tissue)
                   .order_by(*order).limit(1).with_for_update(skip_locked=True).scalar_subquery())
        with self.database.write() as db:
            row = db.execute(delete(PoolImageRow).where(PoolImageRow.id == claimed)
                             .returning(*PoolImageRow.__table__.c)).first()
        return None if row is None else self._image(row)

    @staticmethod
    def _image(row) -> VerifiedImage:
        return VerifiedImage(image=_array(row.image_npy), tissue=row.tissue, seed=row.seed, confidence=row.confidence,
                             realism=row.realism, heatmap=_array(row.heatmap_npy), **json.loads(row.record_json))

    def items(self) -> list[VerifiedImage]:
        """Every stocked image (of this classifier), left in stock."""
        with self.database.read() as db:
            rows = db.execute(select(PoolImageRow).where(PoolImageRow.models == self.models)
                              .order_by(PoolImageRow.id)).all()
        return [self._image(row) for row in rows]

    def counts(self, suits: Suits | None = None) -> dict[int, int]:
        """Images in stock per tissue (those ``suits`` accepts, when given)."""
        counts = dict.fromkeys(TISSUE_INDICES, 0)
        with self.database.read() as db:
            if suits is None:
                for tissue, count in db.execute(select(PoolImageRow.tissue, func.count()).where(
                        PoolImageRow.models == self.models).group_by(PoolImageRow.tissue)):
                    counts[tissue] = count
                return counts
            rows = db.execute(select(PoolImageRow.tissue, PoolImageRow.confidence, PoolImageRow.realism)
                              .where(PoolImageRow.models == self.models)).all()
        for row in rows:
            counts[row.tissue] += bool(suits(row))
        return counts
