"""Verified images made ahead of time, so a class of learners does not wait for the generator.

A :class:`VerifiedPool` keeps a stock of verified images per tissue, each with its explanation heatmap (the
classifier's Grad-CAM for the verified tissue) already computed, and refills it in one background thread, in
generator batches, at the lowest CPU priority. ``pool.generate(tissues)`` has the interface of
``Verifier.generate``: unseeded requests are served from stock (instantly; any tissue whose stock ran out is
generated on the spot), seeded ones are generated as asked, so a typed seed still reproduces its image.

:func:`verify_batch` is the batched form of the verify loop for concurrent *seeded* requests (e.g. Gradio's
``batch=True``): several requests, each with its own seed, share every generator batch, and each result is
exactly what ``verifier.generate([tissue], seed=seed)[0]`` gives alone.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .images import MAX_SEED
from .tissues import TISSUE_INDICES, tissue_index
from .verify import VerifiedImage, attempt_seed

logger = logging.getLogger(__name__)

DEFAULT_PER_TISSUE = 8  # stock per tissue: a class of 20 starting at once draws ~3 images per tissue
FILL_BATCH = 9  # images per background generator call: short enough that requests are not starved
LOWEST_PRIORITY = 19

Explain = Callable[[np.ndarray, int], np.ndarray]  # (image, tissue) -> heatmap in [0, 1] at the image's size


@dataclass
class ExplainedImage(VerifiedImage):
    """A verified image with its explanation heatmap for ``predicted`` (computed once, shown many times)."""

    heatmap: np.ndarray | None = None

    def to_dict(self, with_image: bool = False) -> dict:
        out = super().to_dict(with_image)
        out.pop("heatmap", None)
        return out


def gradcam_explainer(classifier) -> Explain:
    """The classifier's Grad-CAM as an :data:`Explain` function."""
    return lambda image, tissue: classifier.gradcam(image, target=tissue)


def explained(results: Sequence[VerifiedImage], explainer: Explain | None) -> list[ExplainedImage]:
    """``results`` with their heatmaps (for the predicted tissue: the verified one when verified)."""
    out = []
    for result in results:
        fields = {name: getattr(result, name) for name in VerifiedImage.__dataclass_fields__}
        heatmap = getattr(result, "heatmap", None)
        if heatmap is None and explainer is not None:
            heatmap = explainer(result.image, result.predicted)
        out.append(ExplainedImage(**fields, heatmap=heatmap))
    return out


def verify_batch(verifier, tissues: Sequence[int | str], seeds: Sequence[int | None],
                 explainer: Explain | None = None) -> list[ExplainedImage]:
    """One verified image per (tissue, seed) request, all requests sharing each generator batch.

    Result *i* equals ``verifier.generate([tissues[i]], seed=seeds[i])[0]`` (a ``None`` seed draws one), so
    batching concurrent requests changes no image. Rejected requests are retried together, attempt by attempt.
    """
    if len(tissues) != len(seeds):
        raise ValueError("one seed (or None) per requested tissue is required")
    tissues = [tissue_index(t) for t in tissues]
    seeds = [secrets.randbelow(MAX_SEED + 1) if s is None else int(s) for s in seeds]
    results: list[VerifiedImage | None] = [None] * len(tissues)
    history: list[list[dict]] = [[] for _ in tissues]  # rejected attempts, as the loop records them
    pending = list(range(len(tissues)))
    for attempt in range(1, verifier.max_attempts + 1):
        if not pending:
            break
        attempt_seeds = [attempt_seed(seeds[i], 0, attempt) for i in pending]
        wanted = [tissues[i] for i in pending]
        images = np.asarray(verifier.generator.generate(wanted, attempt_seeds))
        probabilities, realism, accepted = verifier.judge(images, wanted)
        for j, request in enumerate(pending):
            confidence = float(probabilities[j, wanted[j]])
            if not accepted[j]:
                history[request].append({"seed": attempt_seeds[j], "predicted": int(probabilities[j].argmax()),
                                         "confidence": round(confidence, 4), "realism": round(float(realism[j]), 4)})
                continue
            results[request] = VerifiedImage(
                image=images[j], tissue=wanted[j], verified=True, attempts=attempt, seed=attempt_seeds[j],
                probabilities=[float(p) for p in probabilities[j]], predicted=int(probabilities[j].argmax()),
                confidence=confidence, realism=float(realism[j]), history=history[request],
                backend=getattr(verifier.generator, "name", type(verifier.generator).__name__))
        pending = [request for request in pending if results[request] is None]
    for request in pending:  # never verified: the loop's own best try and history, exactly as alone
        results[request] = verifier.generate([tissues[request]], seed=seeds[request])[0]
    return explained(results, explainer)


class VerifiedPool:
    """A stock of verified, explained images per tissue, refilled in the background (see the module docstring)."""

    def __init__(self, verifier, explainer: Explain | None = None, per_tissue: int = DEFAULT_PER_TISSUE,
                 fill_batch: int = FILL_BATCH):
        if per_tissue < 0 or fill_batch < 1:
            raise ValueError("per_tissue must be at least 0 and fill_batch at least 1")
        self.verifier, self.explainer = verifier, explainer
        self.per_tissue, self.fill_batch = per_tissue, fill_batch
        self._stock: dict[int, deque] = {t: deque() for t in TISSUE_INDICES}
        self._lock = threading.Lock()
        self._wake = threading.Event()  # set when stock was taken (or at stop): the filler looks again
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ serving
    def generate(self, tissues: Sequence[int | str], seed: int | None = None, progress=None) -> list[ExplainedImage]:
        """``Verifier.generate``'s contract: from stock when unseeded, generated now otherwise."""
        tissues = [tissue_index(t) for t in tissues]
        if seed is not None:
            return self.make(tissues, seed, progress)
        with self._lock:
            taken = [self._stock[t].popleft() if self._stock[t] else None for t in tissues]
        self._wake.set()
        missing = [i for i, item in enumerate(taken) if item is None]
        if missing:  # stock ran out (or the pool is off): the caller waits for these only
            for i, item in zip(missing, self.make([tissues[i] for i in missing], None, progress)):
                taken[i] = item
        elif progress:
            progress(1.0, f"{len(taken)} verified image(s) from the pool")
        return taken

    def make(self, tissues: Sequence[int], seed: int | None = None, progress=None) -> list[ExplainedImage]:
        """Generated and explained now (no stock involved)."""
        return explained(self.verifier.generate(list(tissues), seed=seed, progress=progress), self.explainer)

    def stock(self) -> dict[int, int]:
        """Images in stock per tissue."""
        with self._lock:
            return {t: len(items) for t, items in self._stock.items()}

    @property
    def full(self) -> bool:
        return all(count >= self.per_tissue for count in self.stock().values())

    # ------------------------------------------------------------------------------------ filling
    def fill_once(self) -> int:
        """One generator batch for the most depleted tissues; returns the number of verified images stocked."""
        deficits = {t: self.per_tissue - n for t, n in self.stock().items() if n < self.per_tissue}
        if not deficits:
            return 0
        wanted: list[int] = []
        while len(wanted) < self.fill_batch and any(deficits.values()):
            for tissue in sorted(deficits, key=deficits.get, reverse=True):  # round-robin, neediest first
                if deficits[tissue] > 0 and len(wanted) < self.fill_batch:
                    wanted.append(tissue)
                    deficits[tissue] -= 1
        verified = [r for r in self.make(wanted) if r.verified]  # unverified tries are never stocked
        with self._lock:
            for result in verified:
                self._stock[result.tissue].append(result)
        return len(verified)

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

    def wait_full(self, timeout: float | None = None) -> bool:
        """Block until every tissue is stocked (or ``timeout`` seconds pass); returns whether it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.full and not self._stopped.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            self._stopped.wait(0.2)
        return self.full

    def _fill_forever(self) -> None:
        _lower_thread_priority()  # before the first model call: torch's worker threads inherit it
        while not self._stopped.is_set():
            try:
                added = self.fill_once()
            except Exception:  # the pool is an optimisation: requests fall back to generating on the spot
                logger.exception("the verified-image pool could not refill; retrying in 30 s")
                self._stopped.wait(30)
                continue
            if not added:  # full: wait for takers; nothing passed verification: try again much later
                self._wake.wait(5.0 if self.full else 30.0)
                self._wake.clear()


def _lower_thread_priority() -> None:
    """Make the calling thread (and threads it starts) yield the CPU to request handlers (Linux: per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
    except (AttributeError, OSError) as error:  # not Linux, or not permitted: fill at normal priority
        logger.info("pool filler keeps normal priority (%s)", error)
