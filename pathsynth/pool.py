"""Verified images made ahead of time, so a class of learners does not wait for the generator.

A :class:`VerifiedPool` keeps a stock of verified images per tissue, each with its explanation heatmap (the
classifier's Grad-CAM for the verified tissue) already computed, and refills it in one background thread at the
lowest CPU priority; once stocked, it explains the images queued ``ahead`` (the app's real quiz tiles), and when
nothing else is left to do those queued ``later`` (the rest of the real sample). Pairs handed to
:meth:`~VerifiedPool.explain_soon` (a quiz's tiles without a heatmap) come before everything, refills included.
The heatmaps land in an :class:`ExplanationCache` (memory, bounded); given :class:`ExplanationFiles` it also keeps
the real tiles' maps on disk, so a restart finds them made instead of spending ~0.3 s of a core on each again.
``pool.generate(tissues)`` has the interface of ``Verifier.generate``: unseeded requests are served from stock
(instantly, marked ``VerifiedImage.from_pool``; a tissue whose stock ran out is generated on the spot), seeded ones
are generated as asked, so a typed seed still reproduces its image. ``pool.take(tissues)`` never generates: a
tissue out of stock gives ``None`` (quizzes then ask a real tile instead, and never wait for a model).

Hard quizzes ask for *borderline* images (the classifier verified them, but less than ``EASY_CONFIDENCE`` sure, or
they are as atypical as the least typical fifth of real tiles: ``learning.difficulty.fits``), and the generator
rarely makes one (about 1 verified image in 10, for some tissues almost never): a stock filled in order of arrival
would seldom hold any. So once stocked, the filler also looks for up to ``borderline`` extra borderline images per
tissue, spending at most ``HUNT_TRIES`` generator calls on a tissue until one of its borderline images is taken (a
tissue that never yields one stops costing anything).

:func:`verify_batch` serves concurrent *seeded* requests (e.g. Gradio's ``batch=True``) with one
``Verifier.generate(..., seeds=...)`` call: they share every generator batch, and each result is what
``verifier.generate([tissue], seed=seed)[0]`` gives alone (same seeds; pixels equal up to batch rounding).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .learning.difficulty import fits
from .settings import DEFAULT_POOL_PER_TISSUE
from .stock import MemoryStock
from .tissues import TISSUE_INDICES, tissue_index
from .verify import VerifiedImage

logger = logging.getLogger(__name__)

DEFAULT_PER_TISSUE = DEFAULT_POOL_PER_TISSUE
FILL_BATCH = 9  # images per background round (one generator call each): the filler checks for a stop between
LOWEST_PRIORITY = 19
EXPLANATION_CACHE_SIZE = 4096  # heatmaps kept (28x28 float32: ~3 KB each): every question of 20 quizzes and more

PREFERENCES = (None, "confident", "borderline")  # which stocked image a request takes (None: the oldest)
BORDERLINE_SHARE = 4  # default: a quarter of per_tissue extra borderline images per tissue (8 -> 2, under 4 -> 0)
HUNT_TRIES = 12  # generator calls spent per tissue looking for a borderline image, renewed when one is taken

QUIET_S = 0.25  # the filler starts a model call only after requests have been quiet this long ...
MAX_YIELD_S = 5.0  # ... or after waiting this long (a busy app's stock still refills, slowly)

Explain = Callable[[np.ndarray, int], np.ndarray]  # (image, tissue) -> heatmap in [0, 1] at the image's size


class RequestActivity:
    """Requests being served right now, and when the last one ended. The filler runs at the lowest CPU priority,
    but the GIL knows no priorities: its Python between torch ops (the tiny U-Net's steps are mostly that) still
    delays request threads, so it waits for a quiet moment before each model call (``wait_quiet``). Measured with
    20 learners at once (scripts/load_test.py): without this, refills during the class were most of the app's CPU."""

    def __init__(self):
        self._lock = threading.Lock()
        self._active = 0
        self._last_end = float("-inf")

    @contextlib.contextmanager
    def serving(self):
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                self._last_end = time.monotonic()

    def quiet(self, quiet_s: float = QUIET_S) -> bool:
        with self._lock:
            return self._active == 0 and time.monotonic() - self._last_end >= quiet_s

    def wait_quiet(self, quiet_s: float = QUIET_S, max_wait_s: float = MAX_YIELD_S,
                   stopped: threading.Event | None = None) -> bool:
        """Block until no request has run for ``quiet_s`` seconds, at most ``max_wait_s``; returns whether it was."""
        deadline = time.monotonic() + max_wait_s
        while not self.quiet(quiet_s):
            if time.monotonic() >= deadline or (stopped is not None and stopped.is_set()):
                return False
            time.sleep(0.05)
        return True


REQUESTS = RequestActivity()  # the app's handlers mark themselves (pathsynth.app.common.user_errors)


def gradcam_explainer(classifier) -> Explain:
    """The classifier's Grad-CAM as an :data:`Explain` function."""
    return lambda image, tissue: classifier.gradcam(image, target=tissue)


class ExplanationCache:
    """An :data:`Explain` that computes each (image, tissue) heatmap once: the app's answers and re-shown images
    then need no model call. Keyed by the image's bytes, bounded in memory (least recently used first out),
    thread-safe. With ``files`` (:class:`ExplanationFiles`) a map missing in memory is looked for on disk before
    it is computed, and a computed one is written there: a restart reuses them without a model call."""

    def __init__(self, explainer: Explain, max_items: int = EXPLANATION_CACHE_SIZE,
                 files: ExplanationFiles | None = None):
        self.explainer, self.max_items, self.files = explainer, max_items, files
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(image: np.ndarray, tissue: int) -> tuple:
        image = np.ascontiguousarray(image)
        return hashlib.blake2b(image.tobytes(), digest_size=16).digest(), image.shape, image.dtype.str, int(tissue)

    def get(self, image: np.ndarray, tissue: int) -> np.ndarray | None:
        key = self.key(image, tissue)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        heatmap = self.files.load(key, np.shape(image)[:2]) if self.files is not None else None
        if heatmap is not None:  # read outside the lock: a request never waits on another one's disk read
            self._remember(key, heatmap)
        return heatmap

    def put(self, image: np.ndarray, tissue: int, heatmap: np.ndarray) -> None:
        """Keep ``heatmap`` in memory (only computed maps go to disk: ``put`` also takes the pool's generated ones)."""
        self._remember(self.key(image, tissue), heatmap)

    def _remember(self, key: tuple, heatmap: np.ndarray) -> None:
        with self._lock:
            self._items[key] = heatmap
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def __call__(self, image: np.ndarray, tissue: int) -> np.ndarray:
        heatmap = self.get(image, tissue)
        if heatmap is None:  # computed outside the lock: two threads may both compute a new one, never wait
            heatmap = np.asarray(self.explainer(image, tissue), dtype=np.float32)
            key = self.key(image, tissue)
            self._remember(key, heatmap)
            if self.files is not None:
                self.files.save(key, heatmap)
        return heatmap

    def __len__(self) -> int:
        return len(self._items)


class ExplanationFiles:
    """Heatmaps kept on disk across restarts: one ``.npy`` per (image, tissue) in ``directory/explanations-<id>``.

    ``<id>``, the ``fingerprint``, names the classifier (its files' digest) and the map method, so another classifier
    never reads these maps; the file name is a hash of the image's bytes and the tissue. When ``images`` is given,
    only their maps are kept: the real sample is the same at every start, while generated images are new each run
    and keeping theirs would only grow the folder. As with the cached probabilities the files are only an
    optimisation: a missing, truncated or foreign file is a miss (the map is computed and the file rewritten), and
    a folder that cannot be written is logged once and otherwise ignored. Files appear by an atomic rename, never
    half-written.
    """

    def __init__(self, directory: str | os.PathLike, fingerprint: str, images: Sequence[np.ndarray] | None = None):
        self.folder = Path(directory) / f"explanations-{fingerprint}"
        self.images = None if images is None else {ExplanationCache.key(image, 0)[:3] for image in images}
        self._warned = False

    def path(self, key: tuple) -> Path | None:
        """The file for an :meth:`ExplanationCache.key`; ``None`` for an image whose map is not kept on disk."""
        if self.images is not None and key[:3] not in self.images:
            return None
        return self.folder / f"{hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()}.npy"

    def load(self, key: tuple, shape: tuple[int, ...]) -> np.ndarray | None:
        """The stored map of ``shape`` (the image's height and width), or ``None``."""
        path = self.path(key)
        if path is None:
            return None
        try:
            heatmap = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # not there yet, truncated, or not a .npy file at all
            return None
        if not isinstance(heatmap, np.ndarray) or heatmap.shape != tuple(shape) or heatmap.dtype != np.float32:
            return None  # something else under that name: computed again, and the file replaced
        return heatmap

    def save(self, key: tuple, heatmap: np.ndarray) -> None:
        path = self.path(key)
        if path is None:
            return
        staging = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            descriptor, staging = tempfile.mkstemp(dir=self.folder, prefix=f".{path.stem}.", suffix=".tmp")
            with os.fdopen(descriptor, "wb") as handle:
                np.save(handle, np.asarray(heatmap, np.float32))
            os.replace(staging, path)  # unique staging name: threads and processes never write into one file
        except OSError as error:
            if staging is not None:
                with contextlib.suppress(OSError):
                    os.unlink(staging)
            if not self._warned:
                self._warned = True
                logger.warning("could not keep explanation maps in %s (they are recomputed after a restart): %s",
                               self.folder, error)


def explained(results: Sequence[VerifiedImage], explainer: Explain | None) -> list[VerifiedImage]:
    """``results`` with their heatmaps (for the predicted tissue: the verified one when verified); new objects."""
    return [result if result.heatmap is not None or explainer is None
            else replace(result, heatmap=explainer(result.image, result.predicted)) for result in results]


def verify_batch(verifier, tissues: Sequence[int | str], seeds: Sequence[int | None],
                 explainer: Explain | None = None) -> list[VerifiedImage]:
    """One verified, explained image per (tissue, seed) request, all requests sharing each generator batch.

    Result *i* equals ``verifier.generate([tissues[i]], seed=seeds[i])[0]`` (a ``None`` seed draws one), so
    batching concurrent requests changes no image (``Verifier.generate(..., seeds=...)`` does the work).
    """
    return explained(verifier.generate(tissues, seeds=seeds), explainer)


class VerifiedPool:
    """A stock of verified, explained images per tissue, refilled in the background (see the module docstring)."""

    def __init__(self, verifier, explainer: Explain | None = None, per_tissue: int = DEFAULT_PER_TISSUE,
                 fill_batch: int = FILL_BATCH, ahead: Sequence[tuple[np.ndarray, int]] = (),
                 borderline: int | None = None, later: Sequence[tuple[np.ndarray, int]] = (), stock=None,
                 fills: bool = True):
        borderline = per_tissue // BORDERLINE_SHARE if borderline is None else borderline
        if per_tissue < 0 or fill_batch < 1 or borderline < 0:
            raise ValueError("per_tissue and borderline must be at least 0 and fill_batch at least 1")
        self.verifier, self.explainer = verifier, explainer
        self.per_tissue, self.fill_batch, self.borderline = per_tissue, fill_batch, borderline
        # where the images wait (pathsynth.stock: this process, or the database shared with replicas and workers);
        # without ``fills`` other processes (``pathsynth worker``) fill it and this one only takes and explains
        self._store, self.fills = (stock if stock is not None else MemoryStock()), fills
        self._hunt_tries = {t: HUNT_TRIES for t in TISSUE_INDICES}  # left per tissue (see the module docstring)
        self._lock = threading.Lock()
        self._wake = threading.Event()  # set when stock was taken (or at stop): the filler looks again
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        # other (image, tissue) pairs to explain once the stock is full: the real quiz tiles (the explainer caches)
        self._ahead = deque(ahead if explainer is not None else ())
        self._later = deque(later if explainer is not None else ())  # the same, once nothing else is left to do
        self._urgent: deque = deque()  # pairs to explain before anything else (explain_soon)

    # ------------------------------------------------------------------------------------ serving
    def generate(self, tissues: Sequence[int | str], seed: int | None = None, progress=None,
                 prefer: str | None = None) -> list[VerifiedImage]:
        """``Verifier.generate``'s contract: from stock when unseeded, generated now otherwise. ``prefer``
        (quiz difficulty) takes the stocked image of each tissue the classifier is most sure of (``"confident"``)
        or least sure of (``"borderline"``) instead of the oldest."""
        tissues = [tissue_index(t) for t in tissues]
        if seed is not None:
            _check_preference(prefer)
            return self.make(tissues, seed, progress)
        taken = self.take(tissues, prefer)
        missing = [i for i, item in enumerate(taken) if item is None]
        if missing:  # stock ran out (or the pool is off): the caller waits for these only
            for i, item in zip(missing, self.make([tissues[i] for i in missing], None, progress)):
                taken[i] = item
        elif progress:
            progress(1.0, f"{len(taken)} verified image(s) from the pool")
        return taken

    def take(self, tissues: Sequence[int | str], prefer: str | None = None) -> list[VerifiedImage | None]:
        """Stocked images only, never the generator: ``None`` for each tissue whose stock ran out (a request that
        can do without, e.g. a quiz that asks a real tile instead, never waits for a model). Wakes the filler."""
        tissues = [tissue_index(t) for t in tissues]
        _check_preference(prefer)
        taken = [self._store.take(t, prefer) for t in tissues]
        taken = [None if item is None else replace(item, from_pool=True) for item in taken]
        with self._lock:
            for item in taken:
                if item is not None and is_borderline(item):  # worth looking for another one
                    self._hunt_tries[item.tissue] = HUNT_TRIES
        self._wake.set()
        return taken

    def explain_soon(self, pairs: Sequence[tuple[np.ndarray, int]]) -> None:
        """Have the filler explain these (image, tissue) pairs next, before any refill (a quiz's tiles that were
        not explained ahead: its answers then find their heatmaps ready)."""
        if self.explainer is not None and pairs:
            self._urgent.extend(pairs)
            self._wake.set()

    def explain_later(self, ahead: Sequence[tuple[np.ndarray, int]], later: Sequence[tuple[np.ndarray, int]] = ()):
        """Queue more pairs as if given at construction (``ahead``, ``later``): the real tiles, once classified."""
        if self.explainer is not None:
            self._ahead.extend(ahead)
            self._later.extend(later)
            self._wake.set()

    def make(self, tissues: Sequence[int], seed: int | None = None, progress=None) -> list[VerifiedImage]:
        """Generated and explained now (no stock involved)."""
        return explained(self.verifier.generate(list(tissues), seed=seed, progress=progress), self.explainer)

    def stock(self) -> dict[int, int]:
        """Images in stock per tissue."""
        return self._store.counts()

    def put(self, items: Sequence[VerifiedImage]) -> None:
        """Stock verified images made elsewhere (e.g. by hand in a test); the filler stocks its own."""
        self._store.put([item for item in items if item.verified])

    def stocked(self) -> list[VerifiedImage]:
        """Every image in stock, left there (for reports and tests)."""
        return self._store.items()

    def stocked_where(self, suits: Callable[[VerifiedImage], bool]) -> dict[int, int]:
        """Images in stock per tissue that ``suits`` accepts (e.g. those that suit a quiz's difficulty); ``suits``
        reads ``confidence`` and ``realism`` only."""
        return self._store.counts(suits)

    @property
    def full(self) -> bool:
        return all(count >= self.per_tissue for count in self.stock().values())

    # ------------------------------------------------------------------------------------ filling
    def fill_once(self) -> int:
        """One round of images for the most depleted tissues; returns the number of verified images stocked."""
        deficits = {t: self.per_tissue - n for t, n in self.stock().items() if n < self.per_tissue}
        if not deficits:
            return 0
        wanted: list[int] = []
        while len(wanted) < self.fill_batch and any(deficits.values()):
            for tissue in sorted(deficits, key=deficits.get, reverse=True):  # round-robin, neediest first
                if deficits[tissue] > 0 and len(wanted) < self.fill_batch:
                    wanted.append(tissue)
                    deficits[tissue] -= 1
        added = 0
        for tissue in wanted:  # one image per generator call: batch-mates shift pixels by rounding, and a pooled
            REQUESTS.wait_quiet(stopped=self._stopped)
            verified = [r for r in self.make([tissue]) if r.verified]  # image's seed must reproduce it exactly
            self._store.put(verified)  # unverified tries are never stocked
            added += len(verified)
            if self._stopped.is_set() or self._urgent:  # a quiz waits for explanations: those first
                break
        return added

    def hunt_borderline(self) -> int:
        """One generator call for the tissue shortest of borderline images (of those with tries left); a verified
        borderline result is explained and stocked beyond ``per_tissue``, any other is dropped (the stock is full).
        Returns the number of generator calls made (0: nothing left to look for)."""
        counts = self.stocked_where(is_borderline)
        wanted = [t for t in TISSUE_INDICES if counts[t] < self.borderline and self._hunt_tries[t] > 0]
        if not wanted:
            return 0
        tissue = min(wanted, key=counts.get)
        self._hunt_tries[tissue] -= 1
        REQUESTS.wait_quiet(stopped=self._stopped)
        found = [r for r in self.verifier.generate([tissue]) if r.verified and is_borderline(r)]
        found = explained(found, self.explainer)  # only the kept ones: an explanation costs more than a try
        self._store.put(found)
        return 1

    def explain_ahead(self, queue: deque | None = None) -> int:
        """Explain the next queued (image, tissue) pair, if any (of ``queue``, by default the pairs given as
        ``ahead``), after a quiet moment unless a quiz waits for it; returns how many were explained (0 or 1)."""
        queue = self._ahead if queue is None else queue
        if queue and queue is not self._urgent:
            REQUESTS.wait_quiet(stopped=self._stopped)
        try:
            image, tissue = queue.popleft()
        except IndexError:
            return 0
        self.explainer(image, tissue)
        return 1

    def explain_urgent(self) -> int:
        """Explain every pair handed to :meth:`explain_soon`; returns how many."""
        done = 0
        while self.explain_ahead(self._urgent):
            done += 1
        return done

    @property
    def ready(self) -> bool:
        """Stocked, and every queued explanation made."""
        return self.full and not self._ahead

    def start(self) -> VerifiedPool:
        """Fill in a daemon thread (at the lowest CPU priority) until :meth:`stop`."""
        if self._thread is None and self.per_tissue > 0:
            self._thread = threading.Thread(target=self._fill_forever, name="pathsynth-pool", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_full(self, timeout: float | None = None, ahead: bool = False) -> bool:
        """Block until every tissue is stocked (with ``ahead``: and the queued explanations made), or ``timeout``
        seconds pass; returns whether it is."""
        def done():
            return self.ready if ahead else self.full

        deadline = None if timeout is None else time.monotonic() + timeout
        while not done() and not self._stopped.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            self._stopped.wait(0.2)
        return done()

    def _fill_forever(self) -> None:
        lower_thread_priority()  # before the first model call: torch's worker threads inherit it
        while not self._stopped.is_set():
            try:
                added = self.explain_urgent() or (self.fill_once() if self.fills else 0)
                if not added and (not self.fills or self.full):
                    added = (self.explain_ahead() or (self.hunt_borderline() if self.fills else 0)
                             or self.explain_ahead(self._later))
            except Exception:  # the pool is an optimisation: requests fall back to generating on the spot
                logger.exception("the verified-image pool could not refill; retrying in 30 s")
                self._stopped.wait(30)
                continue
            if not added:  # full: wait for takers; nothing passed verification: try again much later
                self._wake.wait(5.0 if self.full else 30.0)
                self._wake.clear()


def is_borderline(result: VerifiedImage) -> bool:
    """Whether a verified image suits a hard quiz (``learning.difficulty``: sound, but not a textbook case)."""
    return fits("hard", float(result.confidence), result.realism)


def _check_preference(prefer: str | None) -> None:
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {PREFERENCES}, got {prefer!r}")


def lower_thread_priority() -> None:
    """Make the calling thread (and threads it starts) yield the CPU to request handlers (Linux: per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
    except (AttributeError, OSError) as error:  # not Linux, or not permitted: fill at normal priority
        logger.info("pool filler keeps normal priority (%s)", error)
