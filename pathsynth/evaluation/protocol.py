"""The evaluation protocols, as small stages that read top to bottom.

``evaluate_generator`` runs the paper's protocol (generate, classify with the project's classifier, per-tissue
F1) next to realism measured where the generator cannot cheat: every feature-space figure (FID, KID,
precision/recall, near copies) uses an **evaluator** network that neither the generator's training nor the
verify loop uses, and the classifier two-sample test (C2ST) trains a fresh discriminator on real vs generated
images and tests it on held-out real images and fresh generated ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from ..domains import get_domain
from ..images import microns_per_pixel
from ..settings import DEFAULT_EVALUATOR_DIR  # the assets root is resolved in settings
from . import metrics as M
from .probes import train_quick_classifier

C2ST_SEED_OFFSET = 500_000  # the discriminator's generated training images use seeds the protocol never uses


@dataclass
class RealSplit:
    """Real images: the generator's training fold, and a held-out fold no model was trained on, of one domain
    (:mod:`pathsynth.domains`; default histology), whose classes every stage reads."""
    train_images: np.ndarray
    train_labels: np.ndarray
    heldout_images: np.ndarray
    heldout_labels: np.ndarray
    domain: object = None

    def __post_init__(self):
        self.domain = get_domain(self.domain)
        self.train_images, self.heldout_images = np.asarray(self.train_images), np.asarray(self.heldout_images)
        self.train_labels = np.asarray(self.train_labels).reshape(-1).astype(np.int64)
        self.heldout_labels = np.asarray(self.heldout_labels).reshape(-1).astype(np.int64)
        if len(self.train_images) != len(self.train_labels) or len(self.heldout_images) != len(self.heldout_labels):
            raise ValueError("every image needs a label (train and held-out)")
        if len(self.heldout_images) < 4 or len(self.train_images) < 2:
            raise ValueError(f"need at least 4 held-out and 2 training images, got {len(self.heldout_images)} "
                             f"and {len(self.train_images)}")
        if self.train_images.shape[1:] != self.heldout_images.shape[1:]:
            raise ValueError(f"training and held-out tiles differ in size: {self.train_images.shape[1:3]} vs "
                             f"{self.heldout_images.shape[1:3]}")

    @property
    def size(self) -> int:
        """The tile size (px) of the real images."""
        return int(self.train_images.shape[1])


# The shipped evaluator's recipe (assets/models/evaluator/README.md) at another size: another seed and stain jitter.
EVALUATOR_RECIPE = ("python train/classifier.py --data medmnist --size {size} --seed 1 --stain_sigma 0.05 --epochs 60 "
                    "--export_dir runs/evaluator_{size}")


def check_sizes(generator, split: RealSplit, evaluator=None) -> int:
    """The tile size every part of a realism measurement shares (the generator's); ``ValueError`` naming the fix
    when the real images or the evaluator network are at another size (their figures would compare resized
    images, which measures the resizing, not the generator)."""
    size = int(getattr(generator, "output_size", split.size))
    if split.size != size:
        raise ValueError(f"the generator draws {size} px tiles but the real images are {split.size} px: evaluate "
                         f"with real images of {size} px (--data medmnist downloads PathMNIST at {size} px, or give "
                         f"an npz of {size} px tiles)")
    evaluator_size = getattr(evaluator, "input_size", size)
    if evaluator is not None and evaluator_size != size:
        raise ValueError(f"the evaluator network takes {evaluator_size} px tiles but the generator draws {size} px "
                         f"ones: train an evaluator at {size} px ({EVALUATOR_RECIPE.format(size=size)}) and pass "
                         f"--evaluator runs/evaluator_{size}")
    return size


def load_evaluator(path: str | Path | None = None):
    """The evaluator network (a ResNet-18 trained with another seed and recipe than the verifier)."""
    from ..classifier import TissueClassifier

    return TissueClassifier.from_pretrained(path or DEFAULT_EVALUATOR_DIR)


def in_batches(fn, images, desc: str, progress: bool, batch_size: int = 256) -> np.ndarray:
    """``fn`` over ``images`` in batches, with a progress bar."""
    out = []
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(images), batch_size):
            out.append(np.asarray(fn(images[start:start + batch_size])))
            bar.update(len(out[-1]))
    return np.concatenate(out)


def generate_raw(generator, tissues: np.ndarray, seeds: Sequence[int], progress: bool, desc: str = "raw generation",
                 batch_size: int = 64) -> np.ndarray:
    """Images straight from the generator, no filtering; image i depends only on tissues[i] and seeds[i]."""
    seeds = list(seeds)
    return in_batches(lambda idx: generator.generate(tissues[idx].tolist(), [seeds[i] for i in idx]),
                      np.arange(len(tissues)), desc, progress, batch_size)


# ---------------------------------------------------------------------------------------------- stages

def verify_stage(verifier, tissues: np.ndarray, seed: int, progress: bool) -> tuple[np.ndarray, dict, np.ndarray]:
    """The verify loop on the protocol's request: its images, its statistics, and per-image (verified, attempts)."""
    n = len(tissues)
    with tqdm(total=n, desc="verified generation", unit="img", disable=not progress) as bar:
        def report_progress(fraction: float, message: str) -> None:
            bar.n = min(n, int(round(fraction * n)))
            bar.set_postfix_str(message[:60], refresh=True)

        results = verifier.generate(tissues.tolist(), seed=seed, progress=report_progress)
    if len(results) != n:
        raise RuntimeError(f"the verifier returned {len(results)} images for {n} requests")
    verified = np.array([bool(r.verified) for r in results])
    attempts = np.array([int(r.attempts) for r in results])
    return np.stack([np.asarray(r.image) for r in results]), loop_statistics(verified, attempts), \
        np.stack([verified, attempts], 1)


def loop_statistics(verified: np.ndarray, attempts: np.ndarray) -> dict:
    return {"first_try_acceptance": float((verified & (attempts == 1)).mean()),
            "mean_attempts": float(attempts.mean()), "max_attempts": int(attempts.max()),
            "verified_rate": float(verified.mean()), "never_verified_rate": float((~verified).mean())}


def heldout_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the held-out fold with the same tissue mix (stratified when every tissue has 2)."""
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    a, b = train_test_split(np.arange(len(labels)), test_size=0.5, stratify=stratify, random_state=seed)
    return np.sort(a), np.sort(b)


def matched_query(generated_tissues: np.ndarray, real_labels: np.ndarray, cap: int,
                  num_classes: int | None = None) -> np.ndarray:
    """Indices of generated images with the real side's per-class counts (capped), so mix is not a cue."""
    picked = []
    classes = num_classes or int(max(np.max(generated_tissues, initial=0), np.max(real_labels, initial=0)) + 1)
    for t in range(classes):
        k = min(cap, int((real_labels == t).sum()))
        picked.extend(np.flatnonzero(generated_tissues == t)[:k].tolist())
    return np.array(picked, np.int64)


def evaluator_features(evaluator, images: dict[str, np.ndarray], progress: bool) -> dict[str, np.ndarray]:
    """The evaluator's features of each named image set, computed once for every feature-space stage."""
    return {name: in_batches(evaluator.features, x, f"evaluator features {name}", progress).astype(np.float64)
            for name, x in images.items()}


def feature_realism_stage(feats: dict[str, np.ndarray], tissues: np.ndarray, split: RealSplit, per_class: int,
                          seed: int, kid_subsets: int) -> dict:
    """FID, KID and precision/recall in evaluator features: each generated set (``raw``, ``verified``) vs held-out
    half B, next to the real-vs-real baseline (half A vs half B) with the same per-tissue counts on the query side."""
    half_a, half_b = heldout_halves(split.heldout_labels, seed)
    query = matched_query(tissues, split.heldout_labels[half_a], per_class, split.domain.num_classes)
    reference, baseline = feats["heldout"][half_b], feats["heldout"][half_a]
    kid_size = max(2, min(len(query), len(half_b)) // 2)  # subsets of half: with the whole set the spread is 0
    result = {"fid_n_query": len(query), "fid_n_reference": len(half_b), "kid_subset_size": kid_size}
    generated = [name for name in ("raw", "verified") if name in feats]
    sides = {name: feats[name][query] for name in generated} | {"real_baseline": baseline}
    for name, query_feats in sides.items():
        suffix = "" if name == "raw" else f"_{name}"
        result[f"fid{suffix}"] = M.frechet_distance(query_feats, reference)
        result[f"kid{suffix}"], result[f"kid{suffix}_std"] = M.kernel_inception_distance(
            query_feats, reference, kid_subsets, kid_size, seed)
        pr = M.generative_precision_recall(reference, query_feats)
        result[f"precision{suffix}"], result[f"recall{suffix}"] = pr["precision"], pr["recall"]
    result["fid_ratio"] = result["fid"] / result["fid_real_baseline"] if result["fid_real_baseline"] else None
    return result | whole_fold_fid(feats, tissues, split, per_class)


def whole_fold_fid(feats: dict[str, np.ndarray], tissues: np.ndarray, split: RealSplit, per_class: int) -> dict:
    """FID against the whole held-out fold, with every tile on the real side of the baseline.

    The half-split FID compares 80 with 80 images in a 512-d space, so a few outlying tiles swing it: the real
    training tiles themselves score 0.6-4x their baseline over different splits. Here the generated images in
    the training fold's tissue mix (up to ``per_class`` each) and as many real training tiles of each tissue are
    both compared with all held-out tiles: the same sizes, mix and reference, so the ratio is generated vs real."""
    generated = matched_query(tissues, split.train_labels, per_class, split.domain.num_classes)
    real = matched_query(split.train_labels, split.train_labels, per_class, split.domain.num_classes)
    fid = M.frechet_distance(feats["raw"][generated], feats["heldout"])
    baseline = M.frechet_distance(feats["train"][real], feats["heldout"])
    return {"fid_whole_fold": fid, "fid_whole_fold_real_baseline": baseline,
            "fid_whole_fold_ratio": fid / baseline if baseline else None, "fid_whole_fold_n_query": len(generated)}


def c2st_stage(generator, raw: np.ndarray, tissues: np.ndarray, split: RealSplit, seed: int, epochs: int,
               progress: bool) -> dict:
    """Classifier two-sample test: a fresh small CNN learns real (training fold) vs generated (fresh seeds,
    the training fold's tissue mix), then is tested on the held-out fold vs the protocol's raw images.
    Generated test images are weighted so both sides have the same tissue mix; 0.5 = indistinguishable."""
    n_train = len(split.train_labels)
    seeds = [seed * 1_000_003 + C2ST_SEED_OFFSET + i for i in range(n_train)]
    fake_train = generate_raw(generator, split.train_labels, seeds, progress, "C2ST training images")
    x = np.concatenate([split.train_images, fake_train])
    y = np.r_[np.zeros(n_train, np.int64), np.ones(n_train, np.int64)]
    discriminator = train_quick_classifier(x, y, epochs, seed=seed, num_classes=2, stain_jitter=False,
                                           progress=progress, desc="C2ST discriminator",
                                           upright=split.domain.test_time_views == "hflip")
    test_x = np.concatenate([split.heldout_images, raw])
    test_y = np.r_[np.zeros(len(split.heldout_images), np.int64), np.ones(len(raw), np.int64)]
    test_t = np.r_[split.heldout_labels, tissues]
    p_fake = in_batches(lambda b: discriminator.predict_proba(b, tta=False)[:, 1], test_x, "C2ST test", progress)
    weights = np.ones(len(test_y))
    for t in range(split.domain.num_classes):
        fake_t = (test_y == 1) & (test_t == t)
        if fake_t.any():
            weights[fake_t] = ((test_y == 0) & (test_t == t)).sum() / fake_t.sum()
    overall = M.two_sample_scores(test_y, p_fake, weights)
    per_tissue = {t.label: M.two_sample_scores(test_y[test_t == t.index], p_fake[test_t == t.index])
                  for t in split.domain.classes}
    return {"c2st_balanced_accuracy": overall["balanced_accuracy"], "c2st_auc": overall["auc"],
            "c2st_epochs": epochs, "c2st_per_tissue": per_tissue}


def memorisation_stage(feats: dict[str, np.ndarray], raw: np.ndarray, tissues: np.ndarray, split: RealSplit,
                       percentile: float) -> dict:
    """Nearest training image of each generated one, in evaluator features and in pixels."""
    copies = M.near_copies(feats["raw"], feats["train"], feats["heldout"], percentile)
    pixels = {name: np.asarray(x).reshape(len(x), -1).astype(np.float64) / 255.0
              for name, x in (("raw", raw), ("train", split.train_images), ("heldout", split.heldout_images))}
    pixel_copies = M.near_copies(pixels["raw"], pixels["train"], pixels["heldout"], percentile)
    pairs = [{"gen_index": int(i), "train_index": int(copies["indices"][i]), "distance": float(copies["distances"][i]),
              "tissue": int(tissues[i]), "train_tissue": int(split.train_labels[copies["indices"][i]]),
              "is_copy": bool(copies["is_copy"][i])} for i in np.argsort(copies["distances"])[:8]]
    return {"near_copy_rate": float(copies["is_copy"].mean()),
            "near_copy_rate_pixel": float(pixel_copies["is_copy"].mean()),
            "near_copy_threshold": copies["threshold"], "near_copy_threshold_pixel": pixel_copies["threshold"],
            "near_copy_percentile": percentile,
            "nn_distance_generated_median": float(np.median(copies["distances"])),
            "nn_distance_heldout_median": copies["heldout_median"],
            "nearest_pairs": pairs, "near_copies_per_tissue": np.bincount(
                tissues[copies["is_copy"]], minlength=split.domain.num_classes).tolist()}


def cas_stage(pool: np.ndarray, tissues: np.ndarray, split: RealSplit, per_class: int, epochs: int, model: str,
              seed: int, progress: bool) -> dict:
    """CAS: one recipe trained on generated images and on as many real ones per tissue; tested on held-out."""
    rng = np.random.default_rng(seed)
    gen_idx, real_idx = [], []
    domain = split.domain
    for t in range(domain.num_classes):
        real_t = np.flatnonzero(split.train_labels == t)
        k = min(per_class, len(real_t))
        real_idx.extend(rng.choice(real_t, k, replace=False).tolist())
        gen_idx.extend(np.flatnonzero(tissues == t)[:k].tolist())
    reports = {}
    for name, x, y in (("cas", pool[gen_idx], tissues[gen_idx]),
                       ("real_trained", split.train_images[real_idx], split.train_labels[real_idx])):
        probe = train_quick_classifier(x, y, epochs, model, seed, num_classes=domain.num_classes,
                                       stain_jitter=domain.augmentation == "histology", progress=progress,
                                       desc=f"{name} probe", upright=domain.test_time_views == "hflip")
        probs = in_batches(lambda b: probe.predict_proba(b, tta=False), split.heldout_images, f"{name} test", progress)
        reports[name] = M.classification_report(split.heldout_labels, probs.argmax(1), probs, domain.num_classes,
                                                domain.labels)
    cas, real = reports["cas"], reports["real_trained"]
    return {"cas_accuracy": cas["accuracy"], "cas_accuracy_ci95": cas["accuracy_ci95"], "cas_macro_f1": cas["macro_f1"],
            "real_trained_accuracy": real["accuracy"], "real_trained_accuracy_ci95": real["accuracy_ci95"],
            "real_trained_macro_f1": real["macro_f1"],
            "cas_ratio": cas["accuracy"] / real["accuracy"] if real["accuracy"] else None,
            "cas_n_train": len(gen_idx), "cas_model": model, "cas_epochs": epochs,
            "cas_recall": {k: v["recall"] for k, v in cas["per_class"].items()},
            "real_trained_recall": {k: v["recall"] for k, v in real["per_class"].items()}}


# ------------------------------------------------------------------------------------------ protocols

def timed(timings: dict, name: str, fn, *args, **kwargs):
    clock = time.perf_counter()
    value = fn(*args, **kwargs)
    timings[f"{name}_s"] = time.perf_counter() - clock
    return value


def per_tissue_table(reports: dict, loop_rows: np.ndarray, tissues: np.ndarray, c2st: dict, memorisation: dict,
                     cas: dict, domain=None) -> dict:
    table = {}
    for t in get_domain(domain).classes:
        mask = tissues == t.index
        raw, verified = reports["raw"]["per_class"][t.label], reports["verified"]["per_class"][t.label]
        table[t.label] = {"abbreviation": t.abbreviation, "f1_raw": raw["f1"], "precision_raw": raw["precision"],
                          "recall_raw": raw["recall"], "f1_verified": verified["f1"],
                          **loop_statistics(loop_rows[mask, 0].astype(bool), loop_rows[mask, 1]),
                          "c2st_balanced_accuracy": c2st["c2st_per_tissue"][t.label]["balanced_accuracy"],
                          "c2st_auc": c2st["c2st_per_tissue"][t.label]["auc"],
                          "near_copies": memorisation["near_copies_per_tissue"][t.index],
                          "cas_recall": cas["cas_recall"][t.label],
                          "real_trained_recall": cas["real_trained_recall"][t.label]}
    return table


def evaluate_generator(verifier, split: RealSplit, evaluator, per_class: int = 100, out_dir: str | Path | None = None,
                       seed: int = 0, cas_epochs: int = 30, cas_model: str = "small", c2st_epochs: int = 30,
                       kid_subsets: int = 100, near_copy_percentile: float = 1.0, progress: bool = True) -> dict:
    """The paper's protocol with realism measured independently; see the module docstring.

    ``verifier`` has ``.generator``, ``.classifier`` and ``.generate(tissues, seed, progress)``; the paper's
    classifier-agreement F1 uses ``verifier.classifier``; ``evaluator`` must be another network.
    """
    if per_class < 1:
        raise ValueError("per_class must be at least 1")
    if evaluator is verifier.classifier:
        raise ValueError("the evaluator must not be the verifier's classifier: the loop would grade itself")
    size = check_sizes(verifier.generator, split, evaluator)
    domain = split.domain
    timings: dict[str, float] = {}
    tissues = np.repeat(np.arange(domain.num_classes), per_class)
    raw = timed(timings, "raw_generation", generate_raw, verifier.generator, tissues,
                [seed * 1_000_003 + i for i in range(len(tissues))], progress)
    verified, loop, loop_rows = timed(timings, "verified_generation", verify_stage, verifier, tissues, seed, progress)
    reports = {}
    for name, images in (("raw", raw), ("verified", verified)):
        probs = in_batches(lambda b: verifier.classifier.predict_proba(b), images, f"classifying {name}", progress)
        reports[name] = M.classification_report(tissues, probs.argmax(1), probs, domain.num_classes, domain.labels)
    feats = timed(timings, "evaluator_features", evaluator_features, evaluator,
                  {"raw": raw, "verified": verified, "heldout": split.heldout_images, "train": split.train_images},
                  progress)
    realism = timed(timings, "fid_kid_pr", feature_realism_stage, feats, tissues, split, per_class, seed, kid_subsets)
    c2st = timed(timings, "c2st", c2st_stage, verifier.generator, raw, tissues, split, seed, c2st_epochs, progress)
    memorisation = timed(timings, "memorisation", memorisation_stage, feats, raw, tissues, split,
                         near_copy_percentile)
    cas = timed(timings, "cas", cas_stage, verified, tissues, split, per_class, cas_epochs, cas_model, seed, progress)
    result = {"generator": getattr(verifier.generator, "name", type(verifier.generator).__name__),
              "domain": domain.flag, "class_abbreviations": list(domain.abbreviations), "image_size": size,
              **({"microns_per_pixel": microns_per_pixel(size)} if domain.flag == "pathmnist" else {}),
              "classifier_input_size": getattr(verifier.classifier, "input_size", None),
              "n_generated": len(tissues), "per_class_requested": per_class, "seed": seed,
              "n_train": len(split.train_labels), "n_heldout": len(split.heldout_labels),
              **{f"{key}_{name}": reports[name][key] for name in reports
                 for key in ("macro_f1", "accuracy", "accuracy_ci95", "macro_precision", "macro_recall", "auc_macro",
                             "confusion_matrix")},
              **loop, **realism, **{k: v for k, v in c2st.items() if k != "c2st_per_tissue"},
              **{k: v for k, v in memorisation.items() if k != "near_copies_per_tissue"},
              **{k: v for k, v in cas.items() if not k.endswith("_recall")},
              "per_class": per_tissue_table(reports, loop_rows, tissues, c2st, memorisation, cas, domain),
              "protocol": PROTOCOL_TEXT, "timings": timings}
    from .report import write_generator_report

    return write_generator_report(result, out_dir, raw, tissues, split)


PROTOCOL_TEXT = {
    "agreement": "per_class raw images per tissue (seeds seed*1000003+i) classified by the project's classifier "
                 "(the verifier's): the paper's classifier-agreement F1; the verified run goes through the loop",
    "evaluator": "FID, KID, precision/recall and near copies use an evaluator network (ResNet-18, another seed and "
                 "recipe, training fold only) that neither the generator's training nor the verify loop uses",
    "fid_kid_pr": "held-out fold split (stratified) into halves A/B; generated (A's per-tissue counts) vs B, next "
                  "to the real baseline A vs B; precision/recall: k=3 nearest-neighbour manifolds (Kynkaanniemi 2019)",
    "fid_whole_fold": "generated images in the training fold's tissue mix (up to per_class each) vs all held-out "
                      "tiles, next to the real baseline: as many training-fold tiles of each tissue vs all held-out "
                      "tiles (same sizes, mix and reference; steadier than the 80-vs-80 half-split FID)",
    "c2st": "small CNN trained on the training fold vs as many fresh generated images (same tissue mix), tested "
            "on the held-out fold vs the raw images, generated side weighted to the held-out tissue mix",
    "memorisation": "nearest training image in evaluator features and in pixels; near copy = closer than the 1st "
                    "percentile of held-out real images' nearest-training distances",
    "cas": "small CNN trained on verified generated images vs as many real training images per tissue, tested "
           "on the held-out fold",
}


def evaluate_classifier(classifier, images, labels, out_dir: str | Path | None = None, tta: bool | None = None,
                        progress: bool = True, robustness: bool = True, external_dir: str | Path | None = None,
                        domain=None) -> dict:
    """Accuracy (Wilson 95 % CI), macro P/R/F1, one-vs-rest AUC, per-tissue scores and a confusion matrix.

    With ``robustness`` (and a classifier that has ``view_logits``): calibration (ECE before and after
    temperature scaling, cross-fitted), accuracy under simulated stain shifts, and accuracy on another lab's
    tiles (``external_dir`` or ``$PATHSYNTH_EXTERNAL_TILES``); see :mod:`pathsynth.evaluation.robustness`. Another
    ``domain`` (:mod:`pathsynth.domains`; default histology) gets its class names and calibration only (stains and
    the other lab's tiles are histology's).
    """
    from ..domains import get_domain

    domain = get_domain(domain)
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need a non-empty labelled set, got {len(images)} images and {len(labels)} labels")
    use_tta = bool(getattr(classifier, "tta", False)) if tta is None else bool(tta)
    start = time.perf_counter()
    probs = in_batches(lambda b: classifier.predict_proba(b, tta=use_tta), images, "classifying", progress)
    seconds = time.perf_counter() - start
    result = M.classification_report(labels, probs.argmax(1), probs, domain.num_classes, domain.labels)
    result.update(domain=domain.flag, class_abbreviations=list(domain.abbreviations), tta=use_tta, seconds=seconds,
                  images_per_s=len(images) / seconds if seconds > 0 else None,
                  input_size=getattr(classifier, "input_size", None))
    if robustness and hasattr(classifier, "view_logits"):
        from . import robustness as R

        result["calibration"] = R.calibration_stage(classifier, images, labels)
        if domain.flag == "pathmnist":
            result["stain_shift"] = R.stain_shift_stage(classifier, images, labels)
            result["external"] = R.external_tiles_stage(classifier, external_dir)
    from .report import write_classifier_report

    return write_classifier_report(result, out_dir)


def realism_point(generator, evaluator, split: RealSplit, per_class: int = 40, c2st_epochs: int = 15,
                  seed: int = 0, progress: bool = False) -> dict:
    """The cheap realism figures for one model (C2ST and evaluator FID): one point of a realism-vs-steps curve."""
    check_sizes(generator, split, evaluator)
    tissues = np.repeat(np.arange(split.domain.num_classes), per_class)
    raw = generate_raw(generator, tissues, [seed * 1_000_003 + i for i in range(len(tissues))], progress)
    c2st = c2st_stage(generator, raw, tissues, split, seed, c2st_epochs, progress)
    feats = evaluator_features(evaluator, {"raw": raw, "heldout": split.heldout_images,
                                           "train": split.train_images}, progress)
    realism = feature_realism_stage(feats, tissues, split, per_class, seed, 20)
    worst = max((v["balanced_accuracy"] or 0.0, k) for k, v in c2st["c2st_per_tissue"].items())
    return {"c2st_balanced_accuracy": c2st["c2st_balanced_accuracy"], "c2st_auc": c2st["c2st_auc"],
            "c2st_worst_tissue": worst[1], "c2st_worst_balanced_accuracy": worst[0],
            "fid": realism["fid"], "fid_real_baseline": realism["fid_real_baseline"],
            "fid_whole_fold": realism["fid_whole_fold"], "fid_whole_fold_ratio": realism["fid_whole_fold_ratio"],
            "precision": realism["precision"], "recall": realism["recall"]}


def real_split(data: str | None = None, fold: int = 0, size: int = 28, max_images: int | None = None,
               seed: int = 0, domain=None) -> RealSplit:
    """The generator's training fold and the held-out fold of the data it was trained on (default:
    ``$PATHSYNTH_DATA``, else medmnist), as ``size`` px tiles; ``max_images`` caps each side with a stratified subset (full PathMNIST has
    90,000 training tiles, and the C2ST generates as many as there are)."""
    from ..data import load_training_data, stratified_subset

    domain = get_domain(domain)
    splits = load_training_data(data, size, fold=fold, domain=domain)
    if max_images:
        for name, (images, labels) in list(splits.items()):
            keep = stratified_subset(labels, max_images, seed)
            splits[name] = (images[keep], labels[keep])
    return RealSplit(*splits["train"], *splits["val"], domain=domain)


def realism_curve(run_dir: str | Path, evaluator, split: RealSplit, step_offset: int = 0, per_class: int = 40,
                  c2st_epochs: int = 15, progress: bool = True) -> list[dict]:
    """Realism of every EMA snapshot a training run saved (``run_dir/snapshots/step_*``), appended to
    ``run_dir/realism.csv`` (snapshots already there are skipped) and drawn to ``run_dir/realism.png``."""
    import pandas as pd

    from ..generators.embedded import EmbeddedGenerator, PathSynthPipeline
    from .report import plot_realism_curve

    run_dir = Path(run_dir)
    csv = run_dir / "realism.csv"
    rows = pd.read_csv(csv).to_dict("records") if csv.exists() else []
    done = {row["snapshot"] for row in rows}
    for snapshot in tqdm(sorted((run_dir / "snapshots").glob("step_*")), desc="realism curve", disable=not progress):
        if snapshot.name in done:
            continue
        state = json.loads((snapshot / "progress.json").read_text())
        generator = EmbeddedGenerator(PathSynthPipeline.from_pretrained(str(snapshot)))
        point = realism_point(generator, evaluator, split, per_class, c2st_epochs)
        rows.append({"snapshot": snapshot.name, "step": state.get("total_step", state["step"] + step_offset),
                     "elapsed_s": state["elapsed"], **point})
        pd.DataFrame(rows).to_csv(csv, index=False)
    if rows:
        plot_realism_curve(sorted(rows, key=lambda r: r["step"]), run_dir / "realism.png")
    return rows
