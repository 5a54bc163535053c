"""The process's shared, read-only resources, built once in one thread before the app serves requests.

``Services.build(settings)`` loads the classifier, ONE generator (inside the verifier), the free-text resolver,
the gallery store and the real quiz tiles with their classifier probabilities (the quiz's answer keys), and
by default a pool of verified images made ahead (``pathsynth.pool``, ``$PATHSYNTH_POOL_PER_TISSUE``), whose
filler also explains the real tiles ahead (a few per tissue first, then the whole sample), so quizzes and answers
find every heatmap made. The real tiles are those of the generator's size (``load_real_tiles``): up to 800 tiles of
a local PathMNIST file (``$PATHSYNTH_DATA``, else medmnist's download), from its test split when it has one; for a
larger generator with only a 28 px file, those upsampled, with a note saying they show less detail
(``real_tiles_note``); with no file at all, none: what needs real tiles says why it is off (``real_tiles_off``),
everything else works, and the verifier's realism check uses the reference shipped with the classifier. The
probabilities take an 8x-TTA pass of the ensemble over 800 tiles (minutes on a laptop), so they are cached on disk
(``shared_cache_dir``), keyed by the hashes of the classifier's files and of the tiles: a restart reads them in
milliseconds; the app (``serve_first``) computes missing ones in the background after its page is up
(:class:`AnswerKeys`), and each start-up stage logs a line with its time (:func:`start_up_stage`). The real tiles' heatmaps
(~0.3 s of a core each, ~4 min for the sample) are kept there too, one file per tile, keyed by the classifier's
files and the map method (``explanation_fingerprint``) and the tile's bytes: a restart reads each instead of
calling the model, and a retrained classifier computes its own.

Models are safe to call from several request threads: the classifier's inference and Grad-CAM keep no state,
the embedded generator samples with a scheduler per thread, and the sd-lora backend and the resolver's
tokenizer hold their own locks. Per-user state never lives here (``gr.State`` or the database).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .settings import DATA_ENV, Settings
from .tissues import NUM_TISSUES

logger = logging.getLogger(__name__)

CACHE_DIR = "cache"
REAL_AHEAD_PER_TISSUE = 5  # real quiz tiles explained first per tissue (an explanation takes ~0.3 s on one core)
REAL_TILE_SIZE = 28  # px of the shipped models' tiles and of the smallest PathMNIST file
DIGEST_LENGTH = 20  # hex digits of a cache key
UPSAMPLED_NOTE = ("The real tiles are {source} px tiles upsampled to {size} px: they show less detail than the "
                  "generated ones.")


@dataclass
class Services:
    settings: Settings
    verifier: object  # pathsynth.verify.Verifier: the generator and the classifier
    resolver: object  # pathsynth.resolver.TissueResolver
    store: object  # pathsynth.gallery.GalleryStore
    real_images: np.ndarray  # the real quiz tiles at the generator's size: uint8 (N, S, S, 3); N = 0 without data
    real_labels: np.ndarray
    real_probabilities: np.ndarray  # the classifier's (N, 9) probabilities for real_images
    pool: object | None = None  # pathsynth.pool.VerifiedPool: verified images made ahead (None: generate on demand)
    explanations: object | None = None  # pathsynth.pool.ExplanationCache: each heatmap computed once (made if None)
    real_tiles_note: str = ""  # for the app: what to know about the real tiles (set when they are upsampled)
    real_tiles_off: str = ""  # for the app: why there are no real tiles and how to get them ("": there are)

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
        given) when there are at least ``minimum`` of them (a quiz then computes no heatmap), else the whole sample;
        never a tile not classified yet (start-up's :class:`AnswerKeys` still at work)."""
        probabilities = self.real_probabilities.copy()  # rows fill in while AnswerKeys works: one consistent view
        classified = np.isfinite(probabilities).all(1)
        answers = np.where(classified, np.nan_to_num(probabilities).argmax(1), -1)
        wanted = classified & (np.isin(answers, list(tissues)) if tissues else True)
        ready = [int(i) for i in np.flatnonzero(wanted)
                 if self.explanations.get(self.real_images[i], answers[i]) is not None]
        if len(ready) < minimum:  # too few explained: every classified tile (quizzes explain what they draw)
            ready = [int(i) for i in np.flatnonzero(classified)]
            if len(ready) == len(probabilities):
                return dict(real_images=self.real_images, real_labels=self.real_labels,
                            real_probabilities=probabilities)
        return dict(real_images=self.real_images[ready], real_labels=self.real_labels[ready],
                    real_probabilities=probabilities[ready], real_ids=ready)

    @property
    def generator(self):
        return self.verifier.generator

    @classmethod
    def build(cls, settings: Settings | None = None, pool_per_tissue: int | None = None,
              serve_first: bool = False) -> "Services":
        """Load everything; a broken model or data file raises ``ModelFileError``/``DataUnavailableError``.

        The real tiles' answer keys (the classifier's probabilities: an 8x-TTA pass of the ensemble, minutes on a
        laptop) are read from the cache, else computed now. A pool of ``pool_per_tissue`` verified images per
        tissue (default: ``settings.pool_per_tissue``; 0: none) starts filling in the background, so unseeded
        requests (``services.images``) need not wait for the generator.

        With ``serve_first`` (the app) the page comes first: the real tiles and the database are read now, the
        models load in a background thread (:class:`Loading`: a request that needs one waits for it; a model file
        that cannot be loaded stops the process with one line), and the answer keys are computed after that
        (:class:`AnswerKeys`): until a tile is classified its ``real_probabilities`` row is NaN and quizzes do not
        ask it. Only where the tile size is known without loading the generator (:func:`expected_tile_size`).
        """
        settings = settings or Settings.from_env()
        per_tissue = settings.pool_per_tissue if pool_per_tissue is None else pool_per_tissue
        started = time.perf_counter()
        with start_up_stage("importing the libraries request handlers use (matplotlib, captum, scikit-learn, ...)"):
            warm_imports()
        size = expected_tile_size(settings) if serve_first else None
        if size is None:
            parts = load_parts(settings, per_tissue, answer_keys_later=serve_first)
            logger.info("start-up: models ready after %.1f s (pool: %s per tissue)", time.perf_counter() - started,
                        per_tissue)
            return cls(**parts)
        from .gallery import GalleryStore

        with start_up_stage("reading the real tiles and opening the database"):
            real = load_real_tiles(settings, size)
            store = GalleryStore(settings.home, database_url=settings.database_url)
        known = np.full((len(real.images), NUM_TISSUES), np.nan, np.float32)  # filled in place once classified
        ready = threading.Event()
        pending = {name: Loading(ready) for name in LOADED_LATER}
        services = cls(settings, pending["verifier"], pending["resolver"], store, real.images, real.labels, known,
                       pending["pool"] if per_tissue else None, pending["explanations"], real.note, real.off)
        threading.Thread(target=services._load_models, args=(per_tissue, real, known, ready, started),
                         name="pathsynth-models", daemon=True).start()
        return services

    def _load_models(self, per_tissue: int, real, known: np.ndarray, ready: threading.Event, started: float):
        """The background half of a ``serve_first`` build: load the models, then put them in place of their
        :class:`Loading` stand-ins. A file that cannot be loaded stops the app with one line, as before serving."""
        from .errors import DataUnavailableError, ModelFileError

        try:
            parts = load_parts(self.settings, per_tissue, answer_keys_later=True, real=real, store=self.store,
                               known=known)
        except BaseException as error:  # noqa: BLE001 - the app cannot work without its models: say why, stop
            if not isinstance(error, (ModelFileError, DataUnavailableError, ValueError)):
                logger.exception("the models could not be loaded")
            print(f"PathSynth cannot start: {error}", file=sys.stderr, flush=True)
            os._exit(1)
        for name in LOADED_LATER:
            stand_in = getattr(self, name)
            if isinstance(stand_in, Loading):  # for whoever kept the stand-in itself (e.g. an event's closure)
                stand_in._loading_part = parts[name]
            setattr(self, name, parts[name])
        ready.set()
        logger.info("start-up: models ready after %.1f s (pool: %s per tissue), loaded while serving",
                    time.perf_counter() - started, per_tissue)


LOADED_LATER = ("verifier", "resolver", "pool", "explanations")  # what a serve-first start loads after serving


@dataclass
class DomainModels:
    """What one imaging domain other than histology needs to generate, verify, explain and quiz: its verifier (its
    classifier and generator), resolver, explanations and real images with their answer keys. Histology's are the
    :class:`Services`' own fields; :meth:`DomainModels.load` makes another domain's (:func:`domain_models`)."""

    domain: object  # pathsynth.domains.Domain
    verifier: object
    resolver: object
    explanations: object
    real_images: np.ndarray  # uint8 (N, S, S, 3), display-ready (films repeated into RGB); N = 0 without data
    real_labels: np.ndarray
    real_probabilities: np.ndarray  # the classifier's (N, classes) probabilities: the answer keys
    real_split: str = ""  # which split the real images are ("" with none)
    real_off: str = ""  # why there are no real images and how to get them ("": there are)

    @property
    def classifier(self):
        return self.verifier.classifier

    @classmethod
    def load(cls, settings: Settings, flag: str) -> "DomainModels":
        """The shipped models of domain ``flag`` and its real images: the official test split where the data has
        one, else val (never train: the models learnt from it). No data: no real images, ``real_off`` says why."""
        from .data import load_domain
        from .domains import get_domain
        from .errors import DataUnavailableError
        from .pool import ExplanationCache, gradcam_explainer
        from .resolver import TissueResolver
        from .verify import default_verifier

        domain = get_domain(flag)
        with start_up_stage(f"loading the {domain.name.lower()} models"):
            verifier = default_verifier("embedded", settings, domain.flag)
        images, labels, split, off = np.zeros((0, domain.size, domain.size, 3), np.uint8), np.zeros(0, int), "", ""
        for split in ("test", "val"):
            try:
                images, labels = load_domain(domain, split, download=False)
                break
            except (DataUnavailableError, KeyError, ValueError, OSError) as error:
                off = f"No real {domain.image_noun}s: {error}"
        split = split if len(images) else ""
        probabilities = (verifier.classifier.predict_proba(images) if len(images)
                         else np.zeros((0, domain.num_classes), np.float32))
        return cls(domain, verifier, TissueResolver(domain=domain),
                   ExplanationCache(gradcam_explainer(verifier.classifier)), images, labels,
                   np.asarray(probabilities, np.float32), split, "" if len(images) else off)


_domain_models: dict[str, DomainModels] = {}
_domain_models_lock = threading.Lock()


def domain_models(settings: Settings, flag: str) -> DomainModels:
    """Domain ``flag``'s :class:`DomainModels`, loaded on first use and then shared by every request of the process
    (one load even when several requests ask at once)."""
    with _domain_models_lock:
        key = f"{flag}:{settings.assets}"
        if key not in _domain_models:
            _domain_models[key] = DomainModels.load(settings, flag)
        return _domain_models[key]


class Loading:
    """A part of the services still loading in the background (a ``serve_first`` start): using it waits until the
    part is loaded, then acts as the part itself (the services then hold the part, not this stand-in)."""

    def __init__(self, ready: threading.Event):
        self._loading_ready = ready

    def __getattr__(self, attribute):
        if attribute.startswith("_loading"):
            raise AttributeError(attribute)
        self._loading_ready.wait()
        return getattr(self._loading_part, attribute)

    def __call__(self, *args, **kwargs):
        self._loading_ready.wait()
        return self._loading_part(*args, **kwargs)

    def __len__(self) -> int:
        self._loading_ready.wait()
        return len(self._loading_part)


def loaded(part):
    """``part`` when it is loaded, None while it is a :class:`Loading` stand-in still loading (never waits)."""
    return None if isinstance(part, Loading) and not part._loading_ready.is_set() else part


def expected_tile_size(settings: Settings) -> int | None:
    """The embedded generator's tile size from its UNet's config (``sample_size``), without loading it; None for
    another backend, or a config that cannot tell (then everything loads before serving)."""
    if settings.backend != "embedded":
        return None
    try:
        size = json.loads((Path(settings.generator_dir) / "unet" / "config.json").read_text())["sample_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return size if isinstance(size, int) and size > 0 else None


def load_parts(settings: Settings, per_tissue: int, answer_keys_later: bool, real=None, store=None,
               known: np.ndarray | None = None) -> dict:
    """The :class:`Services` constructor's arguments: the models loaded, the real tiles (``real``: read already)
    and their answer keys (``known``: filled in place), the database (``store``: opened already), the pool."""
    from .classifier import load_classifier, model_files
    from .gallery import GalleryStore
    from .generators import get_generator
    from .resolver import TissueResolver
    from .stock import DatabaseStock
    from .verify import Verifier, realism_reference

    with start_up_stage("loading the classifier"):
        classifier = load_classifier(settings.classifier_dir).to(settings.device)
    with start_up_stage("loading the generator"):
        generator = get_generator(settings=settings)
    with start_up_stage(("" if real else "reading the real tiles, ") + "the realism reference and cached maps"):
        real = real or load_real_tiles(settings, int(getattr(generator, "output_size", REAL_TILE_SIZE)))
        classifier_hash = hashed_files(*model_files(settings.classifier_dir))  # read once: it names the caches
        reference = realism_reference(settings.classifier_dir, classifier,
                                      *(real.reference or (real.images, real.labels)), source=real.source,
                                      classifier_digest=classifier_hash.hexdigest()[:DIGEST_LENGTH])
        verifier = Verifier(generator, classifier, reference=reference)
        keys_path = probabilities_path(shared_cache_dir(settings), real_tiles_digest(classifier_hash, real))
        probabilities = read_probabilities(keys_path, len(real.images))
        fingerprint = explanation_fingerprint(settings.classifier_dir, classifier_hash.hexdigest()[:DIGEST_LENGTH])
        explanations = real_explanations(settings, classifier, real.images, fingerprint)  # the pool's land too
    stage = "loading the free-text resolver" + ("" if store else " and opening the database")
    with start_up_stage(stage):  # a serve-first start opened the database before serving
        resolver = TissueResolver()
        store = store or GalleryStore(settings.home, database_url=settings.database_url)
    if probabilities is None and not answer_keys_later:
        with start_up_stage(f"classifying the {len(real.images)} real tiles (their answer keys)"):
            probabilities = classify_and_keep(classifier, real.images, keys_path)
    if known is None:
        known = np.full((len(real.images), NUM_TISSUES), np.nan, np.float32)
    if probabilities is not None:
        known[:] = probabilities
    stock = DatabaseStock(store.database, models=fingerprint)  # kept across restarts, shared by replicas
    pool = start_pool(verifier, explanations, per_tissue, real.images, real.labels, known, stock,
                      fills=settings.pool_filler == "app") if per_tissue else None
    if probabilities is None:  # after the page is up: quizzes use the tiles classified so far (Services.real_sample)
        AnswerKeys(classifier, real.images, real.labels, known, keys_path, pool).start()
    return dict(settings=settings, verifier=verifier, resolver=resolver, store=store, real_images=real.images,
                real_labels=real.labels, real_probabilities=known, pool=pool, explanations=explanations,
                real_tiles_note=real.note, real_tiles_off=real.off)


@contextlib.contextmanager
def start_up_stage(what: str):
    """Say in the terminal what start-up is doing, then how long it took (a fresh machine's start is watched)."""
    logger.info("start-up: %s ...", what)
    started = time.perf_counter()
    yield
    logger.info("start-up: %s: done in %.1f s", what, time.perf_counter() - started)


# Modules the library imports lazily inside request handlers and the pool's filler. Two threads importing one of
# them at once can see it half-initialised (matplotlib, through captum, once failed a fresh start's first
# instructor request with "module 'matplotlib' has no attribute 'get_data_path'"): import them before serving.
LAZY_MODULES = ("matplotlib", "matplotlib.figure", "matplotlib.colors", "captum.attr", "genanki", "torchstain",
                "sklearn.metrics", "sklearn.model_selection", "scipy.stats", "scipy.optimize", "fsrs")


def warm_imports(modules=LAZY_MODULES) -> None:
    """Import ``modules`` now, in this one thread, so no two request threads ever import one at the same time."""
    import importlib

    for name in modules:
        importlib.import_module(name)


def start_pool(verifier, explanations, per_tissue: int, images: np.ndarray, labels: np.ndarray,
               probabilities: np.ndarray, stock=None, fills: bool = True):
    """A :class:`~pathsynth.pool.VerifiedPool` of ``per_tissue`` images per tissue, filling ``stock`` (default: in
    memory) in the background unless ``fills`` is False (``pathsynth worker`` processes fill it); its thread explains
    the real quiz tiles too: enough for quizzes to draw explained ones only first, the rest later."""
    from .pool import VerifiedPool

    ahead, later = explanation_queues(images, labels, probabilities)
    return VerifiedPool(verifier, explanations, per_tissue, ahead=ahead, later=later, stock=stock,
                        fills=fills).start()


def explanation_queues(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> tuple[list, list]:
    """(image, answer) pairs of the real tiles to explain ahead (``quiz_tiles_ahead``), then the rest; none while
    the tiles are not classified yet (NaN probabilities: :class:`AnswerKeys` queues them when done)."""
    if not len(labels) or not np.isfinite(probabilities).all():
        return [], []
    first = quiz_tiles_ahead(labels, probabilities)
    every, done_first = quiz_tiles_ahead(labels, probabilities, per_tissue=len(labels)), set(first)
    rest = [i for i in every if i not in done_first]  # each tile once, tissues interleaved
    pairs = lambda indices: [(images[i], int(probabilities[i].argmax())) for i in indices]  # noqa: E731
    return pairs(first), pairs(rest)


@dataclass(frozen=True)
class RealTiles:
    """The real tiles quizzes show beside generated ones, at the generator's tile size (none without data)."""

    images: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray
    source: str  # the file and split they were read from ("upsampled to S px" added), or "none"
    note: str = ""  # what a trainee should know about them ("": nothing)
    reference: tuple | None = None  # the verifier's realism reference (images, labels) when not these tiles
    off: str = ""  # why there are none and how to get them ("": there are)


def load_real_tiles(settings: Settings, size: int) -> RealTiles:
    """Real tiles of ``size`` px (:func:`~pathsynth.data.load_display_tiles`: up to 800 of a file's test split, else
    val, else train) from a local PathMNIST file of that size (``settings.data``, else medmnist's download; nothing
    is downloaded here); else those of a 28 px file upsampled (logged, with a note for the app: a trainee compares
    real and generated tiles at one magnification, if with less detail in the real ones); else none, with the
    line that says how to get them."""
    from .data import DataUnavailableError, local_pathmnist_file, load_display_tiles, no_real_tiles_message
    from .images import resize_batch

    reasons = []
    for file_size in dict.fromkeys((size, REAL_TILE_SIZE)):
        try:
            path = local_pathmnist_file(file_size, settings.data, settings.medmnist_root)
            images, labels, split = load_display_tiles(path, file_size)
        except DataUnavailableError as error:
            reasons.append(str(error))
            continue
        source = f"{path} ({split} split)"
        if file_size == size:
            logger.info("real quiz tiles: %d %d px tiles of %s", len(images), size, source)
            return RealTiles(images, labels, source)
        logger.warning("real quiz tiles: %d px tiles of %s upsampled to %d px (%s). For real %d px tiles, set %s to an "
                       "npz of them or let medmnist download them once.", file_size, source, size, reasons[0], size,
                       DATA_ENV)
        # realism is judged against the 28 px tiles themselves (Verifier.at_reference_size), not blurred copies
        return RealTiles(resize_batch(images, size), labels, f"{source}, upsampled to {size} px",
                         UPSAMPLED_NOTE.format(size=size, source=file_size), reference=(images, labels))
    off = no_real_tiles_message(size)
    logger.warning("%s (%s)", off, "; ".join(reasons))
    return RealTiles(np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64), "none", off=off)


def real_tiles_digest(classifier_hash, real: RealTiles) -> str:
    """The real tiles' probabilities cache key: the classifier's files and the tiles' size, bytes and labels."""
    digest = classifier_hash.copy()
    digest.update(repr(real.images.shape).encode())
    digest.update(np.ascontiguousarray(real.images).tobytes())
    digest.update(np.asarray(real.labels, np.int64).tobytes())
    return digest.hexdigest()[:DIGEST_LENGTH]


def real_explanations(settings: Settings, classifier, images: np.ndarray, fingerprint: str | None = None):
    """The app's :class:`~pathsynth.pool.ExplanationCache`: the classifier's maps, in memory, and those of the real
    tiles (``images``) also on disk under ``shared_cache_dir``, for this classifier only: after a restart a
    quiz finds them made, and the pool's filler reads them instead of calling the model. ``fingerprint``:
    :func:`explanation_fingerprint`'s, when the caller has it already."""
    from .pool import ExplanationCache, ExplanationFiles, gradcam_explainer

    fingerprint = fingerprint or explanation_fingerprint(settings.classifier_dir)
    files = ExplanationFiles(shared_cache_dir(settings), fingerprint, images)
    return ExplanationCache(gradcam_explainer(classifier), files=files)


def explanation_fingerprint(classifier_dir: Path, classifier_digest: str | None = None) -> str:
    """Names the maps a classifier draws: the digest of its files (weights, config with its temperature; computed
    unless given as ``classifier_digest``) and the map method, so a retrained classifier or a changed method never
    reads older maps."""
    from .explain import APP_MAP_SIGNATURE

    return f"{classifier_digest or classifier_files_digest(classifier_dir)}-{APP_MAP_SIGNATURE}"


def classifier_files_digest(classifier_dir: Path) -> str:
    """:func:`file_digest` of a classifier's files (config and weights): names what was computed with it."""
    from .classifier import model_files

    return file_digest(*model_files(classifier_dir))


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
    return hashed_files(*paths).hexdigest()[:DIGEST_LENGTH]


def hashed_files(*paths: Path, digest=None):
    """A SHA-256 object fed the files' bytes in order (after whatever ``digest``, when given, was fed already):
    ``.copy()`` it to extend a key without reading its files again."""
    digest = digest or hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest


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


def probabilities_path(cache_dir: Path, key: str) -> Path:
    """Where the real tiles' probabilities under ``key`` (:func:`real_tiles_digest`) are kept."""
    return Path(cache_dir) / f"real_probabilities-{key}.npy"


def read_probabilities(path: Path, count: int) -> np.ndarray | None:
    """The kept probabilities of ``count`` tiles, or None (none kept, or another sample's). No tiles: none needed."""
    if not count:
        return np.zeros((0, NUM_TISSUES), np.float32)
    try:
        cached = np.load(path)
    except (OSError, ValueError):
        return None
    return cached if cached.shape[0] == count else None


def classify_and_keep(classifier, images: np.ndarray, path: Path) -> np.ndarray:
    """``classifier.predict_proba(images)``, kept at ``path`` (an unwritable cache is logged, not fatal)."""
    probabilities = classifier.predict_proba(images)
    keep_probabilities(probabilities, path)
    return probabilities


def keep_probabilities(probabilities: np.ndarray, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(partial, probabilities)
        os.replace(partial, path)  # never a half-written cache file
    except OSError as error:
        logger.warning("could not cache the real tiles' probabilities in %s: %s", path.parent, error)


def cached_probabilities(classifier, images: np.ndarray, cache_dir: Path, *inputs: Path,
                         key: str | None = None) -> np.ndarray:
    """``classifier.predict_proba(images)``, read from ``cache_dir`` when the ``inputs`` files are unchanged (or,
    given a ``key`` naming the classifier and the images, under that key).

    The cache is only an optimisation: an unreadable or unwritable cache falls back to computing.
    """
    path = probabilities_path(cache_dir, key or file_digest(*inputs))
    cached = read_probabilities(path, len(images))
    return cached if cached is not None else classify_and_keep(classifier, images, path)


ANSWER_KEYS_DONE = "classified"  # in the line AnswerKeys logs when done (tests wait for it: tests/conftest.py)


class AnswerKeys:
    """Classifies the real tiles in the background after the page is up, a chunk at a time, each after a quiet
    moment of requests and at the lowest CPU priority, filling ``probabilities`` (NaN rows until then) in place;
    when done, keeps them on disk (the next start reads them) and queues the tiles' explanations in the pool."""

    MAX_WAIT_S = 30.0  # a busy class gets the cores first (the pool's filler waits 5 s: its stock is wanted sooner)
    CHUNK = 8  # tiles per call: ~1.5 s of the ensemble's 8x TTA on 2 cores, so a class never waits long behind one

    def __init__(self, classifier, images, labels, probabilities: np.ndarray, path: Path, pool=None):
        self.classifier, self.images, self.labels, self.path, self.pool = classifier, images, labels, path, pool
        self.probabilities = probabilities

    def start(self) -> threading.Thread:
        logger.info("classifying the %d real tiles in the background (their answer keys; quizzes use each as soon "
                    "as it is done)", len(self.images))
        thread = threading.Thread(target=self.run, name="pathsynth-answer-keys", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        from .pool import REQUESTS, lower_thread_priority

        lower_thread_priority()
        started, total = time.perf_counter(), len(self.images)
        for first in range(0, total, self.CHUNK):
            REQUESTS.wait_quiet(max_wait_s=self.MAX_WAIT_S)
            chunk = slice(first, min(first + self.CHUNK, total))
            self.probabilities[chunk] = self.classifier.predict_proba(self.images[chunk])
        keep_probabilities(self.probabilities, self.path)
        logger.info("the %d real tiles are %s (%.0f s in the background)", total, ANSWER_KEYS_DONE,
                    time.perf_counter() - started)
        if self.pool is not None:
            self.pool.explain_later(*explanation_queues(self.images, self.labels, self.probabilities))
