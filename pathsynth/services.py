"""The process's shared, read-only resources, built once in one thread before the app serves requests.

``Services.build(settings)`` loads the classifier, ONE generator (inside the verifier), the free-text resolver,
the gallery store and the bundled real sample with its classifier probabilities (the quiz's answer keys), and on
request (``pool_per_tissue``) a pool of verified images made ahead (``pathsynth.pool``). The
probabilities take an 8x-TTA pass over 800 tiles, so they are cached on disk under ``$PATHSYNTH_HOME/cache``,
keyed by the hashes of the classifier's weight file and of the sample: a restart reads them in milliseconds.

Models are safe to call from several request threads: the classifier's inference and Grad-CAM keep no state,
the embedded generator samples with a scheduler per thread, and the sd-lora backend and the resolver's
tokenizer hold their own locks. Per-user state never lives here (``gr.State`` or the database).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .settings import Settings

logger = logging.getLogger(__name__)

CACHE_DIR = "cache"


@dataclass
class Services:
    settings: Settings
    verifier: object  # pathsynth.verify.Verifier: the generator and the classifier
    resolver: object  # pathsynth.resolver.TissueResolver
    store: object  # pathsynth.gallery.GalleryStore
    real_images: np.ndarray  # the bundled sample: uint8 (N, 28, 28, 3)
    real_labels: np.ndarray
    real_probabilities: np.ndarray  # the classifier's (N, 9) probabilities for real_images
    pool: object | None = None  # pathsynth.pool.VerifiedPool: verified images made ahead (None: generate on demand)

    @property
    def classifier(self):
        return self.verifier.classifier

    @property
    def images(self):
        """Where verified images come from: the pool when there is one, else the verifier (same ``generate``)."""
        return self.pool if self.pool is not None else self.verifier

    @property
    def explainer(self):
        """``(image, tissue) -> heatmap``: the pool's explanation function, else the classifier's Grad-CAM."""
        from .pool import gradcam_explainer

        return getattr(self.pool, "explainer", None) or gradcam_explainer(self.classifier)

    @property
    def generator(self):
        return self.verifier.generator

    @classmethod
    def build(cls, settings: Settings | None = None, pool_per_tissue: int | None = None) -> "Services":
        """Load everything; a broken model or data file raises ``ModelFileError``/``DataUnavailableError``.

        With ``pool_per_tissue`` > 0 a pool of verified images starts filling in the background (default: none).
        """
        from .classifier import WEIGHTS_NAME, load_classifier
        from .data import BUNDLED_SAMPLE, load_bundled_sample
        from .gallery import GalleryStore
        from .generators import get_generator
        from .pool import VerifiedPool, gradcam_explainer
        from .resolver import TissueResolver
        from .verify import Verifier

        settings = settings or Settings.from_env()
        started = time.perf_counter()
        classifier = load_classifier(settings.classifier_dir)
        generator = get_generator(settings=settings)
        images, labels = load_bundled_sample()
        verifier = Verifier(generator, classifier, images, labels)
        probabilities = cached_probabilities(classifier, images, settings.home / CACHE_DIR,
                                             settings.classifier_dir / WEIGHTS_NAME, BUNDLED_SAMPLE)
        resolver = TissueResolver()
        store = GalleryStore(settings.home, database_url=settings.database_url)
        # Off unless asked for: the app does not draw from the pool yet (issue 15, "a class at once").
        per_tissue = pool_per_tissue or 0
        pool = VerifiedPool(verifier, gradcam_explainer(classifier), per_tissue).start() if per_tissue else None
        logger.info("models ready after %.1f s", time.perf_counter() - started)
        return cls(settings, verifier, resolver, store, images, labels, probabilities, pool)


def file_digest(*paths: Path) -> str:
    """A short SHA-256 over the files' bytes (a cache key that changes when any of them does)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def cached_probabilities(classifier, images: np.ndarray, cache_dir: Path, *inputs: Path) -> np.ndarray:
    """``classifier.predict_proba(images)``, read from ``cache_dir`` when the ``inputs`` files are unchanged.

    The cache is only an optimisation: an unreadable or unwritable cache falls back to computing.
    """
    path = Path(cache_dir) / f"real_probabilities-{file_digest(*inputs)}.npy"
    try:
        cached = np.load(path)
        if cached.shape[0] == len(images):
            return cached
    except (OSError, ValueError):
        pass
    probabilities = classifier.predict_proba(images)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(partial, probabilities)
        os.replace(partial, path)  # never a half-written cache file
    except OSError as error:
        logger.warning("could not cache the real sample's probabilities in %s: %s", path.parent, error)
    return probabilities
