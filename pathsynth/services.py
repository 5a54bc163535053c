"""The process's shared, read-only resources, built once in one thread before the app serves requests.

``Services.build(settings)`` loads the classifier, ONE generator (inside the verifier), the free-text resolver,
the gallery store and the bundled real sample with its classifier probabilities (the quiz's answer keys), and
by default a pool of verified images made ahead (``pathsynth.pool``, ``$PATHSYNTH_POOL_PER_TISSUE``), whose
filler also explains the real tiles ahead (a few per tissue first, then the whole sample), so quizzes and answers
find every heatmap made. The
probabilities take an 8x-TTA pass over 800 tiles, so they are cached on disk (``shared_cache_dir``), keyed by the
hashes of the classifier's files and of the sample: a restart reads them in milliseconds. The real tiles' heatmaps
(~3 s of a core each, ~40 min for the sample) are kept there too, one file per tile, keyed by the classifier's
files and the map method (``explanation_fingerprint``) and the tile's bytes: a restart reads each instead of
calling the model, and a retrained classifier computes its own.

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
REAL_AHEAD_PER_TISSUE = 5  # real quiz tiles explained first per tissue (an explanation takes ~3 s on one core)


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
    explanations: object | None = None  # pathsynth.pool.ExplanationCache: each heatmap computed once (made if None)

    def __post_init__(self):
        if self.explanations is None:
            from .pool import ExplanationCache, gradcam_explainer

            self.explanations = ExplanationCache(getattr(self.pool, "explainer", None)
                                                 or gradcam_explainer(self.classifier))

    @property
    def classifier(self):
        return self.verifier.classifier

    @property
    def images(self):
        """Where verified images come from: the pool when there is one, else the verifier (same ``generate``)."""
        return self.pool if self.pool is not None else self.verifier

    @property
    def explainer(self):
        """``(image, tissue) -> heatmap`` (the classifier's Grad-CAM), each computed once (``explanations``)."""
        return self.explanations

    def real_sample(self, minimum: int, tissues=None) -> dict:
        """``build_quiz``'s real-tile arguments: only tiles already explained (of ``tissues`` by answer key, when
        given) when there are at least ``minimum`` of them (a quiz then computes no heatmap), else the whole sample."""
        answers = self.real_probabilities.argmax(1)
        wanted = np.isin(answers, list(tissues)) if tissues else np.ones(len(answers), bool)
        ready = [int(i) for i in np.flatnonzero(wanted)
                 if self.explanations.get(self.real_images[i], answers[i]) is not None]
        if len(ready) < minimum:
            return dict(real_images=self.real_images, real_labels=self.real_labels,
                        real_probabilities=self.real_probabilities)
        return dict(real_images=self.real_images[ready], real_labels=self.real_labels[ready],
                    real_probabilities=self.real_probabilities[ready], real_ids=ready)

    @property
    def generator(self):
        return self.verifier.generator

    @classmethod
    def build(cls, settings: Settings | None = None, pool_per_tissue: int | None = None) -> "Services":
        """Load everything; a broken model or data file raises ``ModelFileError``/``DataUnavailableError``.

        A pool of ``pool_per_tissue`` verified images per tissue (default: ``settings.pool_per_tissue``; 0: none)
        starts filling in the background, so unseeded requests (``services.images``) need not wait for the generator.
        """
        from .classifier import load_classifier, model_files
        from .data import BUNDLED_SAMPLE, load_bundled_sample
        from .gallery import GalleryStore
        from .generators import get_generator
        from .pool import VerifiedPool
        from .resolver import TissueResolver
        from .verify import Verifier

        settings = settings or Settings.from_env()
        started = time.perf_counter()
        classifier = load_classifier(settings.classifier_dir)
        generator = get_generator(settings=settings)
        images, labels = load_bundled_sample()
        verifier = Verifier(generator, classifier, images, labels)
        probabilities = cached_probabilities(classifier, images, shared_cache_dir(settings),
                                             *model_files(settings.classifier_dir), BUNDLED_SAMPLE)
        resolver = TissueResolver()
        store = GalleryStore(settings.home, database_url=settings.database_url)
        explanations = real_explanations(settings, classifier, images)  # the pool's heatmaps land in it too
        per_tissue = settings.pool_per_tissue if pool_per_tissue is None else pool_per_tissue
        # real tiles to explain: enough for quizzes to draw explained ones only, first; the rest of the sample later
        first = quiz_tiles_ahead(labels, probabilities)
        every, done_first = quiz_tiles_ahead(labels, probabilities, per_tissue=len(labels)), set(first)
        rest = [i for i in every if i not in done_first]  # each tile once, tissues interleaved
        pairs = lambda indices: [(images[i], int(probabilities[i].argmax())) for i in indices]  # noqa: E731
        pool = (VerifiedPool(verifier, explanations, per_tissue, ahead=pairs(first), later=pairs(rest)).start()
                if per_tissue else None)
        logger.info("models ready after %.1f s (pool: %s per tissue)", time.perf_counter() - started, per_tissue)
        return cls(settings, verifier, resolver, store, images, labels, probabilities, pool, explanations)


def real_explanations(settings: Settings, classifier, images: np.ndarray):
    """The app's :class:`~pathsynth.pool.ExplanationCache`: the classifier's maps, in memory, and those of the real
    sample (``images``) also on disk under ``shared_cache_dir``, for this classifier only: after a restart a
    quiz finds them made, and the pool's filler reads them instead of calling the model."""
    from .pool import ExplanationCache, ExplanationFiles, gradcam_explainer

    files = ExplanationFiles(shared_cache_dir(settings), explanation_fingerprint(settings.classifier_dir), images)
    return ExplanationCache(gradcam_explainer(classifier), files=files)


def explanation_fingerprint(classifier_dir: Path) -> str:
    """Names the maps a classifier draws: the digest of its files (weights, config with its temperature) and the
    map method, so a retrained classifier or a changed method never reads older maps."""
    from .classifier import model_files
    from .explain import APP_MAP_SIGNATURE

    return f"{file_digest(*model_files(classifier_dir))}-{APP_MAP_SIGNATURE}"


def quiz_tiles_ahead(labels: np.ndarray, probabilities: np.ndarray, per_tissue: int = REAL_AHEAD_PER_TISSUE,
                     seed: int = 0) -> list[int]:
    """Real tiles to explain ahead, ``per_tissue`` per answer key (the classifier's label), those where it agrees
    with the dataset preferred (as quizzes prefer them), confident and borderline ones in turn (easy quizzes ask
    the first, hard ones the second, and a quiz draws only tiles explained ahead once there are enough), tissues
    interleaved so a partial warm-up covers all."""
    from .learning.difficulty import fits

    answers, rng = probabilities.argmax(1), np.random.default_rng(seed)
    by_tissue = []
    for tissue in range(probabilities.shape[1]):
        candidates = rng.permutation(np.flatnonzero(answers == tissue))
        agreeing = candidates[labels.reshape(-1)[candidates] == tissue]
        hard = np.array([fits("hard", probabilities[i, tissue]) for i in agreeing], bool)
        alternating = _alternate(list(agreeing[~hard]), list(agreeing[hard]))
        by_tissue.append([*alternating, *candidates[~np.isin(candidates, agreeing)]][:per_tissue])
    return [int(group[k]) for k in range(per_tissue) for group in by_tissue if k < len(group)]


def _alternate(first: list, second: list) -> list:
    """first[0], second[0], first[1], second[1], ... then what is left of the longer list."""
    pairs = [item for pair in zip(first, second) for item in pair]
    shorter = min(len(first), len(second))
    return pairs + first[shorter:] + second[shorter:]


def file_digest(*paths: Path) -> str:
    """A short SHA-256 over the files' bytes (a cache key that changes when any of them does)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def shared_cache_dir(settings: Settings) -> Path:
    """Where results that depend only on model and data files go: one per-user cache shared by every PathSynth
    home on the machine (file names carry the inputs' digest), so a second home or a test app starts fast too;
    ``settings.home`` when no user cache folder can be found."""
    base = os.environ.get("XDG_CACHE_HOME")
    try:
        base = base or (Path.home() / ".cache" if Path.home().is_dir() else None)
    except (KeyError, RuntimeError):  # no home directory known for this user
        base = None
    return Path(base) / "pathsynth" if base else settings.home / CACHE_DIR


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
