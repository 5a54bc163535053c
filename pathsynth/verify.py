"""The self-validating loop: generate -> classify + realism check -> regenerate the rejected ones.

An image is *verified* when the classifier's top tissue is the requested one with probability >=
``threshold`` **and** its classifier features lie as close to real images of that tissue as real images
do to each other (colour statistics alone let a classifier agree with unrealistic images, so class
agreement is not enough). Rejected images are regenerated with new seeds, at most ``max_attempts`` times;
an image that never passes is returned with ``verified=False`` — never silently as verified.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .generators.base import MAX_SEED
from .tissues import tissue_index

ProgressCallback = Callable[[float, str], None]
REFERENCE_NAME = "realism_reference.safetensors"  # beside the classifier's weights: features of real tiles, no pixels
REFERENCE_TILES = 800  # real tiles whose features make the shipped realism reference (the 800-tile sample: all)
logger = logging.getLogger(__name__)


@dataclass
class VerifiedImage:
    image: np.ndarray  # uint8 (S, S, 3), S = the generator's output_size (28 for the shipped model)
    tissue: int  # requested tissue
    verified: bool
    attempts: int  # generations it took (1 = accepted first time)
    seed: int  # generator.generate([tissue], [seed]) reproduces the image
    probabilities: list[float]
    predicted: int
    confidence: float  # probability of the requested tissue
    realism: float  # 0..1: share of real images of the tissue at least as far from the real set
    backend: str = ""
    history: list[dict] = field(default_factory=list)  # rejected attempts: seed, predicted, confidence, realism
    heatmap: np.ndarray | None = None  # where the classifier looked for ``predicted``, when computed ahead
    from_pool: bool = False  # handed out ready-made by pathsynth.pool rather than generated for this request

    def to_dict(self, with_image: bool = False) -> dict:
        out = asdict(self)
        out.pop("heatmap")  # a float map the size of the image: not part of the JSON record
        if not with_image:
            out.pop("image")
        else:
            out["image"] = self.image.tolist()
        return out


class RealismCheck:
    """How typical an image's classifier features are for a tissue, calibrated on real images.

    For each tissue we keep the real images' features; the score of a new image is the share of real images
    of that tissue whose (leave-one-out) k-NN distance to the rest is at least the new image's k-NN distance:
    1.0 looks like the most typical real image, 0.0 lies farther out than every real one.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, k: int = 3):
        self.k = k
        self.by_tissue: dict[int, np.ndarray] = {}
        self.calibration: dict[int, np.ndarray] = {}
        for tissue in np.unique(labels).tolist():  # the classes of the reference's domain
            feats = features[labels == tissue].astype(np.float32)
            if len(feats) <= k:
                continue
            self.by_tissue[tissue] = feats
            d = _pairwise(feats, feats)
            np.fill_diagonal(d, np.inf)
            self.calibration[tissue] = np.sort(np.sort(d, axis=1)[:, :k].mean(1))

    def score(self, features: np.ndarray, tissues: Sequence[int]) -> np.ndarray:
        scores = np.ones(len(features), np.float32)
        for i, (feat, tissue) in enumerate(zip(features, tissues)):
            if tissue not in self.by_tissue:
                continue  # no reference images for this tissue: realism cannot be judged
            distance = np.sort(_pairwise(feat[None], self.by_tissue[tissue])[0])[: self.k].mean()
            reference = self.calibration[tissue]
            scores[i] = 1.0 - np.searchsorted(reference, distance, side="left") / len(reference)
        return scores


@dataclass(frozen=True)
class RealismReference:
    """What the realism check needs from real tiles: their classifier features and labels (derived numbers, no
    pixels), the tile size they were taken at and where they came from. Shipped beside the classifier."""

    features: np.ndarray  # (N, D) float
    labels: np.ndarray  # (N,) int64
    size: int  # px of the real tiles: larger generated images are shrunk to it before their features are taken
    source: str = ""

    @classmethod
    def from_tiles(cls, classifier, images: np.ndarray, labels: np.ndarray, source: str = "") -> "RealismReference":
        images = np.asarray(images)
        return cls(classifier.features(images), np.asarray(labels).reshape(-1).astype(np.int64),
                   int(images.shape[1]), source)

    def save(self, classifier_dir: str | Path) -> Path:
        """Write it beside the classifier's weights (fp16 features), named by their digest so stale ones are known."""
        import torch
        from safetensors.torch import save_file

        from .services import classifier_files_digest

        path = Path(classifier_dir) / REFERENCE_NAME
        save_file({"features": torch.from_numpy(np.ascontiguousarray(self.features, np.float16)),
                   "labels": torch.from_numpy(np.ascontiguousarray(self.labels, np.int64))}, str(path),
                  metadata={"classifier": classifier_files_digest(classifier_dir), "size": str(self.size),
                            "source": self.source})
        return path

    @classmethod
    def load(cls, classifier_dir: str | Path, classifier_digest: str | None = None) -> "RealismReference | None":
        """The reference shipped with the classifier in ``classifier_dir``; None when there is none or it was made
        for other weights (logged). ``classifier_digest``: the digest of its files, when the caller has it."""
        from safetensors import safe_open

        from .services import classifier_files_digest

        path = Path(classifier_dir) / REFERENCE_NAME
        if not path.is_file():
            return None
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
            if meta.get("classifier") != (classifier_digest or classifier_files_digest(classifier_dir)):
                logger.warning("%s was made for other classifier weights: ignored (remake it with "
                               "python train/realism_reference.py)", path)
                return None
            features, labels = handle.get_tensor("features"), handle.get_tensor("labels")
        return cls(features.astype(np.float32), labels.astype(np.int64), int(meta.get("size", 28)),
                   meta.get("source", ""))


def reference_from_splits(classifier, splits: dict, source: str = "",
                          count: int = REFERENCE_TILES) -> RealismReference:
    """The reference a training script ships: ``count`` tiles of the training data (``load_training_data``'s
    train and val splits together), in its tissue mix."""
    from .data import stratified_subset

    images = np.concatenate([splits[name][0] for name in ("train", "val")])
    labels = np.concatenate([splits[name][1] for name in ("train", "val")])
    keep = stratified_subset(labels, count)
    return RealismReference.from_tiles(classifier, images[keep], labels[keep], source)


def realism_reference(classifier_dir: str | Path, classifier, images: np.ndarray | None = None,
                      labels: np.ndarray | None = None, source: str = "",
                      classifier_digest: str | None = None) -> RealismReference | None:
    """The verifier's realism reference: the one shipped with the classifier, else one taken from real tiles when
    there are any, else None (the realism check is then off, and the log says how to turn it on)."""
    shipped = RealismReference.load(classifier_dir, classifier_digest)
    if shipped is not None:
        return shipped
    if images is not None and labels is not None and len(images):
        return RealismReference.from_tiles(classifier, images, labels, source)
    logger.warning("realism check off: %s has no %s and no real tiles are available (python "
                   "train/realism_reference.py --data PATH makes one)", classifier_dir, REFERENCE_NAME)
    return None


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0))


class Verifier:
    """Generates images of the requested tissues and keeps only those the classifier verifies."""

    def __init__(self, generator, classifier, reference_images: np.ndarray | None = None,
                 reference_labels: np.ndarray | None = None, threshold: float = 0.5,
                 realism_threshold: float = 0.01, max_attempts: int = 5, batch_size: int = 64,
                 reference: RealismReference | None = None):
        if not 0.0 <= threshold <= 1.0 or not 0.0 <= realism_threshold <= 1.0:
            raise ValueError("threshold and realism_threshold must lie in [0, 1]")
        if max_attempts < 1 or batch_size < 1:
            raise ValueError("max_attempts and batch_size must be at least 1")
        self.generator, self.classifier = generator, classifier
        self.threshold, self.realism_threshold, self.max_attempts = threshold, realism_threshold, max_attempts
        self.batch_size = batch_size  # generator calls are chunked: one huge batch runs slower on a CPU
        self.realism, self.reference_size = None, None
        if reference is None and reference_images is not None and reference_labels is not None:
            reference = RealismReference.from_tiles(classifier, reference_images, reference_labels)
        if reference is not None:  # real tiles' features: shipped with the classifier, or taken from tiles here
            self.reference_size = reference.size
            self.realism = RealismCheck(reference.features, reference.labels)

    def judge(self, images: np.ndarray, tissues: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities, realism scores, accepted mask) for images meant to show ``tissues``."""
        images = np.asarray(images)
        probabilities = self.classifier.predict_proba(images)
        if self.realism is not None:
            realism = self.realism.score(self.classifier.features(self.at_reference_size(images)), tissues)
        else:
            realism = np.ones(len(images), np.float32)
        rows = np.arange(len(images))
        tissues = np.asarray(tissues)
        accepted = ((probabilities.argmax(1) == tissues) & (probabilities[rows, tissues] >= self.threshold)
                    & (realism >= self.realism_threshold))
        return probabilities, realism, accepted

    def at_reference_size(self, images: np.ndarray) -> np.ndarray:
        """``images`` shrunk to the realism reference's tile size when larger: realism compares like with like, so
        a 64 px model checked against a 28 px reference is not scored down for being sharper than them."""
        if self.reference_size is None or images.shape[1] <= self.reference_size:
            return images
        from .images import resize_tensor, tensor_to_uint8, uint8_to_tensor

        return tensor_to_uint8(resize_tensor(uint8_to_tensor(images), self.reference_size))

    def generate(self, tissues: Sequence[int | str], seed: int | None = None,
                 progress: ProgressCallback | None = None,
                 seeds: Sequence[int | None] | None = None) -> list[VerifiedImage]:
        """One verified image per requested tissue (in order). ``seed`` makes the whole call reproducible, and
        each result's ``seed`` given back here for its tissue alone returns the same image on the first attempt.

        ``seeds`` (one per tissue, ``None`` draws one) instead treats every image as a request of its own: result
        *i* has the seeds (and, up to the generator's rounding between batch sizes, the pixels) that
        ``generate([tissues[i]], seed=seeds[i])[0]`` gives alone, so concurrent requests can share generator batches."""
        lookup = getattr(self.generator, "class_index", tissue_index)  # the generator's domain (histology by default)
        tissues = [lookup(t) for t in tissues]
        if seeds is not None:
            if seed is not None or len(seeds) != len(tissues):
                raise ValueError("give either seed or one seed (or None) per requested tissue")
            streams = [(_draw_seed(s), 0) for s in seeds]  # (base seed, slot) of each request alone
        else:
            base_seed = _draw_seed(seed)
            streams = [(base_seed, slot) for slot in range(len(tissues))]
        results: list[VerifiedImage | None] = [None] * len(tissues)
        best: dict[int, VerifiedImage] = {}  # the most convincing rejected candidate per slot
        pending = list(range(len(tissues)))
        for attempt in range(1, self.max_attempts + 1):
            if not pending:
                break
            if progress:
                progress((attempt - 1) / self.max_attempts,
                         f"attempt {attempt}/{self.max_attempts}: generating {len(pending)} image(s)")
            attempt_seeds = [attempt_seed(*streams[slot], attempt) for slot in pending]
            for slot, candidate in zip(pending, self._attempt([tissues[s] for s in pending], attempt_seeds, attempt)):
                _record(slot, candidate, results, best)
            pending = [slot for slot in pending if results[slot] is None]
        for slot in pending:  # never verified: hand back the best try, clearly marked
            best[slot].attempts = self.max_attempts
            results[slot] = best[slot]
        if progress:
            progress(1.0, f"{sum(r.verified for r in results)}/{len(results)} verified")
        return results  # type: ignore[return-value]

    def _attempt(self, tissues: list[int], seeds: list[int], attempt: int) -> list[VerifiedImage]:
        """One judged candidate per (tissue, seed), generated in chunks of ``batch_size``."""
        images = np.concatenate([
            np.asarray(self.generator.generate(tissues[i:i + self.batch_size], seeds[i:i + self.batch_size]))
            for i in range(0, len(tissues), self.batch_size)])
        probabilities, realism, accepted = self.judge(images, tissues)
        backend = getattr(self.generator, "name", type(self.generator).__name__)
        return [VerifiedImage(image=images[j], tissue=tissue, verified=bool(accepted[j]), attempts=attempt,
                              seed=seeds[j], probabilities=[float(p) for p in probabilities[j]],
                              predicted=int(probabilities[j].argmax()), confidence=float(probabilities[j, tissue]),
                              realism=float(realism[j]), backend=backend)
                for j, tissue in enumerate(tissues)]


def _record(slot: int, candidate: VerifiedImage, results: list, best: dict[int, VerifiedImage]) -> None:
    """Keep an accepted candidate as the slot's result; else log the rejection and keep the strongest try."""
    history = best[slot].history if slot in best else []
    if candidate.verified:
        candidate.history = history
        results[slot] = candidate
        return
    record = {"seed": candidate.seed, "predicted": candidate.predicted,
              "confidence": round(candidate.confidence, 4), "realism": round(candidate.realism, 4)}
    if slot not in best or _strength(candidate) > _strength(best[slot]):
        best[slot] = candidate
    best[slot].history = history + [record]


def _draw_seed(seed: int | None) -> int:
    return secrets.randbelow(MAX_SEED + 1) if seed is None else int(seed)


def _strength(candidate: VerifiedImage) -> float:
    return candidate.confidence * min(1.0, candidate.realism + 1e-3)


def attempt_seed(base_seed: int, slot: int, attempt: int) -> int:
    """The seed of one attempt: the given seed itself for the first image's first attempt, so a seed shown under
    an image (the accepted attempt's) reproduces that image, first try, when typed back in; a distinct,
    reproducible seed per (call, image, attempt) otherwise."""
    if slot == 0 and attempt == 1:
        return int(base_seed)
    return int(np.random.SeedSequence([base_seed, slot, attempt]).generate_state(1)[0] & MAX_SEED)


def default_verifier(backend: str | None = None, settings=None, domain: str = "pathmnist") -> Verifier:
    """The configured classifier + generator, checked for realism against the reference shipped with the classifier
    (:func:`realism_reference`; call once and keep it: the app's :class:`~pathsynth.services.Services` does). The
    shipped reference is of 28 px tiles: a larger generator's images are checked for realism at 28 px
    (:meth:`Verifier.at_reference_size`) and for their tissue at the classifier's own size. Another ``domain``
    (:mod:`pathsynth.domains`) gets its own shipped classifier and embedded generator."""
    from .classifier import load_classifier
    from .generators import get_generator
    from .settings import Settings

    settings = settings or Settings.from_env()
    if domain != "pathmnist":
        return _domain_verifier(backend, settings, domain)
    classifier = load_classifier(settings.classifier_dir).to(settings.device)
    reference = realism_reference(settings.classifier_dir, classifier)
    return Verifier(same_domain(get_generator(backend, settings), domain), classifier, reference=reference)


def generator_domain(generator) -> str:
    """The domain flag of the classes a generator draws (embedded: its pipeline's; Stable Diffusion: its own)."""
    domain = getattr(generator, "domain", None) or getattr(getattr(generator, "pipeline", None), "domain", None)
    return getattr(domain, "flag", domain) or "pathmnist"


def same_domain(generator, domain: str):
    """``generator``, if it draws ``domain``'s classes; otherwise a ``ValueError`` saying which model to point at (a
    film model configured where histology is expected would fail on tissue 2 with a less useful message)."""
    drawn = generator_domain(generator)
    if drawn != domain:
        raise ValueError(f"the configured generator draws {drawn} images, not {domain}: point the generator setting "
                         f"at a {domain} model")
    return generator


def _domain_verifier(backend: str | None, settings, domain: str) -> Verifier:
    """The verifier of a domain other than histology: its classifier and embedded generator under
    ``assets/models/<flag>/`` (the Stable Diffusion backend is histology's so far)."""
    from .classifier import load_classifier
    from .generators import load_embedded_generator
    from .settings import model_dir

    if (backend or "embedded").strip().lower() != "embedded":
        raise ValueError(f"the {backend} backend is histology-only so far; use --backend embedded for {domain}")
    classifier_dir = model_dir(settings, domain, "classifier")
    classifier = load_classifier(classifier_dir).to(settings.device)
    generator = load_embedded_generator(model_dir(settings, domain, "generator")).to(settings.device)
    return Verifier(same_domain(generator, domain), classifier, reference=realism_reference(classifier_dir, classifier))
