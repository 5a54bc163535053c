"""Evaluation: the classifier, and the generator with the paper's protocol and more.

Metric building blocks are pure functions on arrays (tested on hand-made cases); ``evaluate_classifier`` and
``evaluate_generator`` combine them, draw PNGs (matplotlib's Agg canvas, no pyplot state) and return plain,
JSON-serialisable dicts. Feature-space metrics (FID, KID, nearest neighbours) use the tissue classifier's
penultimate features: an ImageNet Inception network knows nothing about 28 px H&E tiles.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from .tissues import ABBREVIATIONS, LABELS, NUM_TISSUES, TISSUES

Z95 = 1.959963984540054  # two-sided 95% normal quantile


# ============================================================================================ metrics

def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (well-behaved at 0 %, 100 % and small n, unlike Wald)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def confusion_matrix(y_true, y_pred, num_classes: int = NUM_TISSUES) -> np.ndarray:
    """Counts ``(num_classes, num_classes)``: row = true tissue, column = predicted tissue."""
    y_true, y_pred = _check_labels(y_true, y_pred, num_classes)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def classification_report(y_true, y_pred, probs=None, num_classes: int = NUM_TISSUES) -> dict:
    """Accuracy (+ Wilson 95 % interval), macro precision/recall/F1, per-tissue scores, one-vs-rest AUC.

    Macro averages run over the tissues that occur in ``y_true`` or ``y_pred`` (scikit-learn's default), so a
    test set without e.g. background is not penalised for it. ``per_class`` lists all tissues by medmnist
    label; a tissue never seen nor predicted has support 0 and ``None`` scores. ``auc_macro`` averages the
    one-vs-rest ROC AUC of the tissues that have both positives and negatives (``None`` without ``probs``).
    """
    y_true, y_pred = _check_labels(y_true, y_pred, num_classes)
    n = len(y_true)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(num_classes), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes),
                   where=(precision + recall) > 0)
    present = (support > 0) | (predicted > 0)

    auc = [None] * num_classes
    if probs is not None:
        probs = np.asarray(probs, dtype=float)
        if probs.shape != (n, num_classes):
            raise ValueError(f"probs must have shape ({n}, {num_classes}), got {probs.shape}")
        from sklearn.metrics import roc_auc_score

        for c in range(num_classes):
            positives = int((y_true == c).sum())
            if 0 < positives < n:
                auc[c] = float(roc_auc_score(y_true == c, probs[:, c]))
    auc_known = [a for a in auc if a is not None]

    correct = int(tp.sum())
    names = _class_names(num_classes)
    per_class = {}
    for c in range(num_classes):
        per_class[names[c]] = {
            "precision": float(precision[c]) if present[c] else None,
            "recall": float(recall[c]) if present[c] else None,
            "f1": float(f1[c]) if present[c] else None,
            "support": int(support[c]),
            "auc": auc[c],
        }
    return {
        "n": n,
        "accuracy": correct / n if n else float("nan"),
        "accuracy_ci95": list(wilson_interval(correct, n)),
        "macro_precision": float(precision[present].mean()) if present.any() else float("nan"),
        "macro_recall": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "auc_macro": float(np.mean(auc_known)) if auc_known else None,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of a feature set ``(N, D)``, N >= 2, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need a (N, D) feature array with N >= 2, got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    ``scipy.linalg.sqrtm`` of the product, as pytorch-fid does. With fewer samples than dimensions the
    covariances are singular and the product's square root can come back non-finite or with a large
    imaginary part; then the trace is computed the symmetric way, ``tr sqrt(A sigma2 A)`` with
    ``A = sigma1^(1/2)``, whose eigenvalues are real and non-negative.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError("means and covariances must describe Gaussians of the same dimension")
    diff = mu1 - mu2

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular input is handled below
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():  # singular product: nudge both covariances off singularity
            offset = np.eye(len(mu1)) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    trace_covmean = None
    if np.isfinite(covmean).all():
        if np.iscomplexobj(covmean):
            scale = max(1.0, float(np.abs(np.diagonal(covmean)).max()))
            if np.abs(np.diagonal(covmean).imag).max() <= 1e-3 * scale:
                trace_covmean = float(np.trace(covmean.real))
        else:
            trace_covmean = float(np.trace(covmean))
    if trace_covmean is None:
        trace_covmean = _trace_sqrt_product_symmetric(sigma1, sigma2)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)
    return max(value, 0.0)  # rounding can leave -1e-12 for identical sets


def _trace_sqrt_product_symmetric(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(feats_a, feats_b) -> float:
    """FID-style Fréchet distance between two feature sets ``(N, D)`` and ``(M, D)``."""
    mu_a, sigma_a = feature_statistics(feats_a)
    mu_b, sigma_b = feature_statistics(feats_b)
    return frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b)


def kernel_inception_distance(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / d + 1)^3``, averaged over random
    subsets; returns ``(mean, std)`` over subsets. Unbiased, so two samples of one distribution give ~0
    (it can be slightly negative) whatever the sample size — unlike FID.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature arrays must be (N, D) with the same D, got {a.shape} and {b.shape}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(max(1, subsets)):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
               - 2 * kxy.mean())
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def nearest_neighbour_distances(query, reference, chunk_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest reference row, and that row's index.

    Brute force in float64 chunks (exact: a copied row is at distance 0 up to ~1e-6), so memory stays
    ``chunk_size x len(reference)``. Works for features ``(N, D)`` or flattened pixels.
    """
    q = np.asarray(query, np.float64).reshape(len(query), -1)
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query and reference dimensions differ: {q.shape[1]} vs {r.shape[1]}")
    if len(r) == 0:
        raise ValueError("the reference set is empty")
    r_sq = (r * r).sum(1)
    distances, indices = np.empty(len(q)), np.empty(len(q), np.int64)
    for start in range(0, len(q), chunk_size):
        block = q[start:start + chunk_size]
        d2 = (block * block).sum(1)[:, None] + r_sq[None] - 2 * block @ r.T
        best = d2.argmin(1)
        indices[start:start + len(block)] = best
        distances[start:start + len(block)] = np.sqrt(np.maximum(d2[np.arange(len(block)), best], 0))
    return distances, indices


def near_copy_threshold(heldout_feats, train_feats, percentile: float = 1.0) -> float:
    """The distance to the training set that only ``percentile`` % of real *unseen* images undercut."""
    distances, _ = nearest_neighbour_distances(heldout_feats, train_feats)
    return float(np.percentile(distances, percentile))


def detect_near_copies(gen_feats, train_feats, threshold: float) -> dict:
    """Per generated image: nearest training image, its distance, and whether it is a near copy.

    A near copy lies closer to a training image than (almost) any real unseen image does; ``<=`` so an
    exact copy counts even when the threshold is 0 (duplicates in the real data).
    """
    distances, indices = nearest_neighbour_distances(gen_feats, train_feats)
    tolerance = 1e-6 * max(1.0, float(threshold))
    return {"distances": distances, "indices": indices, "is_copy": distances <= threshold + tolerance}


def near_copy_rate(gen_feats, train_feats, threshold: float) -> float:
    """Share of generated images that are near copies of a training image (see :func:`detect_near_copies`)."""
    return float(detect_near_copies(gen_feats, train_feats, threshold)["is_copy"].mean())


def _check_labels(y_true, y_pred, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    y_pred = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    for name, y in (("true labels", y_true), ("predictions", y_pred)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0-{num_classes - 1}")
    return y_true, y_pred


def _class_names(num_classes: int) -> list[str]:
    return list(LABELS) if num_classes == NUM_TISSUES else [str(c) for c in range(num_classes)]


# ============================================================================================== plots

def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)  # Agg canvas: no display, no global pyplot backend switch
    return figure


def plot_confusion_matrix(cm, path: str | Path, title: str = "") -> Path:
    """Counts in the cells, colour = row-normalised share (recall), tissue abbreviations on both axes."""
    cm = np.asarray(cm)
    k = cm.shape[0]
    names = list(ABBREVIATIONS) if k == NUM_TISSUES else [str(c) for c in range(k)]
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    figure = _figure(6.4, 5.6)
    ax = figure.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true tissue")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.55 else "black")
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true / requested")
    ax.set_title(title or "Confusion matrix")
    figure.tight_layout()
    return _save(figure, path)


def plot_f1_comparison(f1_raw: Sequence[float], f1_verified: Sequence[float], path: str | Path,
                       title: str = "") -> Path:
    """Per-tissue F1 bars, raw generator output next to the verified output."""
    x = np.arange(len(f1_raw))
    names = list(ABBREVIATIONS) if len(f1_raw) == NUM_TISSUES else [str(c) for c in x]
    figure = _figure(7.5, 3.8)
    ax = figure.add_subplot()
    ax.bar(x - 0.2, [v or 0 for v in f1_raw], 0.4, label="raw", color="#9aa5b1")
    ax.bar(x + 0.2, [v or 0 for v in f1_verified], 0.4, label="verified", color="#2b6cb0")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("F1")
    ax.legend(loc="upper center", ncol=2, frameon=False)
    ax.set_title(title or "Per-tissue F1 of generated images (classified by the tissue classifier)")
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def plot_near_copy_pairs(generated: np.ndarray, training: np.ndarray, pairs: Sequence[dict], path: str | Path,
                         scale: int = 4, title: str = "") -> Path:
    """Rows of (generated | nearest training image), upscaled with NEAREST so no detail is invented.

    Each pair dict has ``gen_index``, ``train_index``, ``distance`` and optionally ``tissue``,
    ``train_tissue`` (indices) and ``is_copy``.
    """
    from PIL import Image

    def big(image):
        image = Image.fromarray(np.asarray(image, np.uint8))
        return np.asarray(image.resize((image.width * scale, image.height * scale), Image.NEAREST))

    per_row = 2 if len(pairs) > 1 else 1  # two pairs side by side keeps 8 pairs on one readable page
    rows = max(1, math.ceil(len(pairs) / per_row))
    figure = _figure(4.4 * per_row, 2.3 * rows + 0.6)
    for k, pair in enumerate(pairs):
        tissue, train_tissue = pair.get("tissue"), pair.get("train_tissue")
        left = figure.add_subplot(rows, 2 * per_row, 2 * k + 1)
        left.imshow(big(generated[pair["gen_index"]]), interpolation="nearest")
        left.set_title(f"generated #{pair['gen_index']}" + (f" {ABBREVIATIONS[tissue]}" if tissue is not None else ""),
                       fontsize=8)
        right = figure.add_subplot(rows, 2 * per_row, 2 * k + 2)
        right.imshow(big(training[pair["train_index"]]), interpolation="nearest")
        flag = " COPY" if pair.get("is_copy") else ""
        right.set_title(f"train #{pair['train_index']}"
                        + (f" {ABBREVIATIONS[train_tissue]}" if train_tissue is not None else "")
                        + f"\nd={pair['distance']:.3g}{flag}", fontsize=8, color="red" if flag else "black")
        for ax in (left, right):
            ax.set_axis_off()
    if not pairs:
        figure.text(0.5, 0.5, "no generated images", ha="center")
    figure.suptitle(title or "Generated images nearest to a training image", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def plot_sample_grid(generated: np.ndarray, generated_labels: Sequence[int], path: str | Path,
                     real: np.ndarray | None = None, real_labels: Sequence[int] | None = None,
                     per_tissue: int = 8, scale: int = 4, title: str = "") -> Path:
    """One row per tissue: ``per_tissue`` generated images, then as many real ones when given (NEAREST
    upscaling, so no detail is invented)."""
    from PIL import Image

    def row_of(images, labels, tissue):
        picked = np.asarray(images)[np.asarray(labels).reshape(-1) == tissue][:per_tissue]
        row = np.full((28, 28 * per_tissue, 3), 255, np.uint8)
        for k, image in enumerate(picked):
            row[:, 28 * k:28 * (k + 1)] = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize((28, 28)))
        return np.asarray(Image.fromarray(row).resize((row.shape[1] * scale, 28 * scale), Image.NEAREST))

    columns = 1 if real is None else 2
    figure = _figure(0.5 * per_tissue * columns + 1.6, 0.55 * NUM_TISSUES + 0.7)
    for tissue in range(NUM_TISSUES):
        panels = [row_of(generated, generated_labels, tissue)]
        if real is not None:
            panels.append(row_of(real, real_labels, tissue))
        for column, panel in enumerate(panels):
            ax = figure.add_subplot(NUM_TISSUES, columns, tissue * columns + column + 1)
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(ABBREVIATIONS[tissue], rotation=0, ha="right", va="center", fontsize=8)
            if tissue == 0:
                ax.set_title("generated" if column == 0 else "real (held out)", fontsize=9)
    figure.suptitle(title or "Samples per tissue", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


# ======================================================================================= classifier

def _predict_proba(classifier, images, tta, batch_size: int, desc: str, progress: bool) -> np.ndarray:
    out = []
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            out.append(classifier.predict_proba(batch, tta=tta))
            bar.update(len(batch))
    return np.concatenate(out) if out else np.zeros((0, NUM_TISSUES), np.float32)


def _features(classifier, images, batch_size: int, desc: str, progress: bool) -> np.ndarray:
    out = []
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            out.append(classifier.features(batch))
            bar.update(len(batch))
    return np.concatenate(out).astype(np.float64)


def evaluate_classifier(classifier, images, labels, out_dir: str | Path | None = None, tta: bool | None = None,
                        batch_size: int = 256, progress: bool = True) -> dict:
    """Accuracy (Wilson 95 % CI), macro P/R/F1, one-vs-rest AUC, per-tissue scores and a confusion matrix.

    ``images``/``labels`` are any labelled set in medmnist layout (uint8 ``(N, H, W, 3)``, int labels).
    With ``out_dir`` the confusion-matrix PNG and ``classifier_report.json``/``.md`` are written there.
    """
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need a non-empty labelled set, got {len(images)} images and {len(labels)} labels")
    use_tta = bool(getattr(classifier, "tta", False)) if tta is None else bool(tta)
    start = time.perf_counter()
    probs = _predict_proba(classifier, images, use_tta, batch_size, "classifying", progress)
    seconds = time.perf_counter() - start
    result = classification_report(labels, probs.argmax(1), probs)
    result.update(tta=use_tta, seconds=seconds, images_per_s=len(images) / seconds if seconds > 0 else None)
    if out_dir is not None:
        out_dir = Path(out_dir)
        title = f"Classifier on {len(images)} images (acc {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f})"
        result["confusion_matrix_png"] = str(plot_confusion_matrix(result["confusion_matrix"],
                                                                   out_dir / "classifier_confusion.png", title))
        _write_json(out_dir / "classifier_report.json", result)
        (out_dir / "classifier_report.md").write_text(_classifier_markdown(result))
        result["report_json"] = str(out_dir / "classifier_report.json")
    return _jsonable(result)


def _classifier_markdown(result: dict) -> str:
    lo, hi = result["accuracy_ci95"]
    lines = [
        "# Tissue classifier evaluation", "",
        f"{result['n']} images, TTA {'on' if result['tta'] else 'off'}.", "",
        "| metric | value |", "|---|---|",
        f"| accuracy | {result['accuracy']:.4f} (95% Wilson CI {lo:.4f}-{hi:.4f}) |",
        f"| macro F1 | {result['macro_f1']:.4f} |",
        f"| macro precision | {result['macro_precision']:.4f} |",
        f"| macro recall | {result['macro_recall']:.4f} |",
        f"| one-vs-rest macro AUC | {_fmt(result['auc_macro'])} |", "",
        "| tissue | precision | recall | F1 | AUC | support |", "|---|---|---|---|---|---|",
    ]
    for label, row in result["per_class"].items():
        lines.append(f"| {label} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | {_fmt(row['f1'])} | "
                     f"{_fmt(row['auc'])} | {row['support']} |")
    return "\n".join(lines) + "\n"


# ======================================================================================== generator

def build_small_cnn(num_classes: int = NUM_TISSUES):
    """A 3-block VGG-style CNN (~0.29 M parameters): the default CAS model.

    On the bundled sample's 640 training images (2 CPU threads) 30 epochs take ~30 s and reach 0.81
    held-out accuracy, while ResNet-18 reaches 0.73 in 10 epochs (~65 s) and 0.77 in 20 (~100 s): with a few
    hundred images the small network is both faster and better, so CAS is not limited by the probe model.
    """
    from torch import nn

    def block(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                             nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                             nn.MaxPool2d(2))

    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, num_classes))


def train_quick_classifier(images: np.ndarray, labels: np.ndarray, epochs: int = 30, model: str = "small",
                           seed: int = 0, batch_size: int = 64, lr: float = 2e-3, progress: bool = True,
                           desc: str = "training"):
    """A classifier trained from scratch with the project's histology augmentation (dihedral + stain jitter),
    AdamW and a cosine schedule. Used for CAS, identically for the generated and the real training set."""
    import torch
    import torch.nn.functional as F

    from .classifier import TissueClassifier, build_resnet18, images_to_tensor
    from .data import train_augmentation

    if model not in ("resnet18", "small"):
        raise ValueError(f"model must be 'resnet18' or 'small', got {model!r}")
    torch.manual_seed(seed)
    network = build_resnet18() if model == "resnet18" else build_small_cnn()
    config = {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 28, "tta": False}
    x = images_to_tensor(images, 28)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    augment = train_augmentation()
    mean, std = torch.tensor(config["mean"]).view(1, 3, 1, 1), torch.tensor(config["std"]).view(1, 3, 1, 1)
    steps_per_epoch = max(1, math.ceil(len(x) / batch_size))
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                   pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)
    network.train()
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        order = torch.randperm(len(x), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * batch_size:(step + 1) * batch_size]
            if len(batch) >= 2:  # BatchNorm needs two samples; a lone leftover image is skipped this epoch
                logits = network((augment(x[batch]) - mean) / std)
                loss = F.cross_entropy(logits, y[batch], label_smoothing=0.05)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
            schedule.step()
    return TissueClassifier(network, config)  # .eval(); predict_proba works for either network


def _pixels(images, size: int) -> np.ndarray:
    """Flattened pixels in [0, 1] at ``size`` px (training sets may be stored at another resolution)."""
    from .classifier import images_to_tensor

    images = np.asarray(images)
    if images.shape[1:3] == (size, size):
        return images.reshape(len(images), -1).astype(np.float64) / 255.0
    return images_to_tensor(images, size).permute(0, 2, 3, 1).reshape(len(images), -1).numpy().astype(np.float64)


def _loop_statistics(verified: np.ndarray, attempts: np.ndarray) -> dict:
    first_try = verified & (attempts == 1)
    return {
        "first_try_acceptance": float(first_try.mean()),
        "mean_attempts": float(attempts.mean()),
        "max_attempts": int(attempts.max()),
        "verified_rate": float(verified.mean()),
        "never_verified_rate": float((~verified).mean()),
    }


def evaluate_generator(verifier, classifier, train_images, train_labels, heldout_images, heldout_labels,
                       per_class: int = 100, out_dir: str | Path | None = None, seed: int = 0,
                       cas_epochs: int = 30, cas_model: str = "small", cas_source: str = "verified",
                       kid_subsets: int = 100, kid_subset_size: int = 1000, near_copy_percentile: float = 1.0,
                       batch_size: int = 64, progress: bool = True) -> dict:
    """The paper's protocol (generate, classify, per-tissue F1) plus realism, memorisation and usefulness.

    ``verifier`` has ``.generator`` (``generate(tissues, seeds) -> uint8 (N, 28, 28, 3)``) and
    ``.generate(tissues, seed, progress)``; ``classifier`` grades the images (``None``: the verifier's own).
    ``train_images`` are the images the generator was trained on, ``heldout_images`` real images neither
    model saw. Steps (each timed in ``timings``):

    1. *raw*: ``per_class`` images per tissue straight from the generator, classified -> ``macro_f1_raw``.
    2. *verified*: the same request through the verify loop; every returned image is classified (unverified
       ones count as whatever the classifier says) -> ``macro_f1_verified``, plus the loop's statistics.
    3. *realism*: FID and KID in the classifier's penultimate features. The held-out set is split
       (stratified) into halves A and B; ``fid`` compares generated images with B, ``fid_real_baseline``
       compares A with B, using the same number of images per tissue on the query side (raw generated images
       are subsampled to A's per-tissue counts, capped at ``per_class``). Both sides are unseen by the
       classifier, whose features on its own training images would be tighter and bias the baseline.
    4. *memorisation*: nearest training image of each raw generated image (classifier features, and pixel
       L2 as a second view); a near copy is nearer than the ``near_copy_percentile``-th percentile of the
       held-out-real -> train nearest-neighbour distances.
    5. *CAS*: the same small model, trained the same way on (a) generated images and (b) the same number
       of real training images per tissue, tested on all held-out images.

    Returns a JSON-serialisable dict; with ``out_dir`` also writes ``report.json``, ``report.md`` and PNGs.
    """
    if per_class < 1:
        raise ValueError("per_class must be at least 1")
    if cas_source not in ("verified", "raw"):
        raise ValueError("cas_source must be 'verified' or 'raw'")
    classifier = classifier if classifier is not None else verifier.classifier
    train_images, heldout_images = np.asarray(train_images), np.asarray(heldout_images)
    train_labels = np.asarray(train_labels).reshape(-1).astype(np.int64)
    heldout_labels = np.asarray(heldout_labels).reshape(-1).astype(np.int64)
    if len(train_images) != len(train_labels) or len(heldout_images) != len(heldout_labels):
        raise ValueError("every image needs a label (train and held-out)")
    if len(heldout_images) < 4 or len(train_images) < 2:
        raise ValueError(f"need at least 4 held-out and 2 training images, got {len(heldout_images)} "
                         f"and {len(train_images)}")
    out_dir = Path(out_dir) if out_dir is not None else None
    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}
    pngs: dict[str, str] = {}
    generator = verifier.generator
    tissues = np.repeat(np.arange(NUM_TISSUES), per_class)
    n = len(tissues)

    # 1. raw generator output --------------------------------------------------------------------------
    clock = time.perf_counter()
    seeds = [seed * 1_000_003 + i for i in range(n)]
    chunks = []
    with tqdm(total=n, desc="raw generation", unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            chunks.append(np.asarray(generator.generate(tissues[start:start + batch_size].tolist(),
                                                        seeds[start:start + batch_size])))
            bar.update(len(chunks[-1]))
    raw = np.concatenate(chunks)
    timings["raw_generation_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    probs_raw = _predict_proba(classifier, raw, None, 256, "classifying raw", progress)
    report_raw = classification_report(tissues, probs_raw.argmax(1), probs_raw)
    timings["raw_classification_s"] = time.perf_counter() - clock

    # 2. the verify loop ---------------------------------------------------------------------------------
    clock = time.perf_counter()
    with tqdm(total=n, desc="verified generation", unit="img", disable=not progress) as bar:
        def report_progress(fraction: float, message: str) -> None:
            bar.n = min(n, int(round(fraction * n)))
            bar.set_postfix_str(message[:60], refresh=True)

        results = verifier.generate(tissues.tolist(), seed=seed, progress=report_progress)
    timings["verified_generation_s"] = time.perf_counter() - clock
    if len(results) != n:
        raise RuntimeError(f"the verifier returned {len(results)} images for {n} requests")
    verified_images = np.stack([np.asarray(r.image) for r in results])
    is_verified = np.array([bool(r.verified) for r in results])
    attempts = np.array([int(r.attempts) for r in results])
    probs_verified = _predict_proba(classifier, verified_images, None, 256, "classifying verified", progress)
    report_verified = classification_report(tissues, probs_verified.argmax(1), probs_verified)
    loop = _loop_statistics(is_verified, attempts)

    # 3. realism: FID / KID in classifier features -------------------------------------------------------
    clock = time.perf_counter()
    feats_raw = _features(classifier, raw, 256, "features generated", progress)
    feats_verified = _features(classifier, verified_images, 256, "features verified", progress)
    feats_heldout = _features(classifier, heldout_images, 256, "features held-out", progress)
    feats_train = _features(classifier, train_images, 256, "features train", progress)
    half_a, half_b = _stratified_halves(heldout_labels, rng)
    query_real, query_gen = [], []  # equal per-tissue counts on both query sides
    for t in range(NUM_TISSUES):
        real_t = half_a[heldout_labels[half_a] == t]
        k = min(per_class, len(real_t))
        query_real.extend(rng.choice(real_t, k, replace=False).tolist())
        query_gen.extend(np.flatnonzero(tissues == t)[:k].tolist())
    query_real, query_gen = np.array(query_real, np.int64), np.array(query_gen, np.int64)
    reference = feats_heldout[half_b]
    # Subsets of half the smaller side: with the whole set every subset is the same and the spread reads 0.
    kid_size = min(kid_subset_size, max(2, min(len(query_gen), len(reference)) // 2))
    fid = frechet_distance(feats_raw[query_gen], reference)
    fid_verified = frechet_distance(feats_verified[query_gen], reference)
    fid_baseline = frechet_distance(feats_heldout[query_real], reference)
    kid, kid_std = kernel_inception_distance(feats_raw[query_gen], reference, kid_subsets, kid_size, seed)
    kid_verified, kid_verified_std = kernel_inception_distance(feats_verified[query_gen], reference, kid_subsets,
                                                               kid_size, seed)
    kid_baseline, kid_baseline_std = kernel_inception_distance(feats_heldout[query_real], reference, kid_subsets,
                                                               kid_size, seed)
    timings["fid_kid_s"] = time.perf_counter() - clock

    # 4. memorisation -----------------------------------------------------------------------------------
    clock = time.perf_counter()
    threshold = near_copy_threshold(feats_heldout, feats_train, near_copy_percentile)
    copies = detect_near_copies(feats_raw, feats_train, threshold)
    heldout_nn, _ = nearest_neighbour_distances(feats_heldout, feats_train)
    size = raw.shape[1]
    pix_train, pix_heldout, pix_raw = _pixels(train_images, size), _pixels(heldout_images, size), _pixels(raw, size)
    pixel_threshold = near_copy_threshold(pix_heldout, pix_train, near_copy_percentile)
    pixel_copies = detect_near_copies(pix_raw, pix_train, pixel_threshold)
    heldout_pixel_nn, _ = nearest_neighbour_distances(pix_heldout, pix_train)
    order = np.argsort(copies["distances"])[:8]
    worst_pairs = [{"gen_index": int(i), "train_index": int(copies["indices"][i]),
                    "distance": float(copies["distances"][i]), "tissue": int(tissues[i]),
                    "train_tissue": int(train_labels[copies["indices"][i]]), "is_copy": bool(copies["is_copy"][i]),
                    "pixel_distance": float(np.linalg.norm(pix_raw[i] - pix_train[copies["indices"][i]]))}
                   for i in order]
    timings["memorisation_s"] = time.perf_counter() - clock

    # 5. CAS: classification accuracy score ---------------------------------------------------------------
    clock = time.perf_counter()
    cas_pool = verified_images if cas_source == "verified" else raw
    cas_gen_idx, cas_real_idx = [], []
    for t in range(NUM_TISSUES):  # same per-tissue counts for the generated and the real training set
        real_t = np.flatnonzero(train_labels == t)
        k = min(per_class, len(real_t))
        cas_real_idx.extend(rng.choice(real_t, k, replace=False).tolist())
        cas_gen_idx.extend(np.flatnonzero(tissues == t)[:k].tolist())
    cas_gen_idx, cas_real_idx = np.array(cas_gen_idx, np.int64), np.array(cas_real_idx, np.int64)
    cas_classifier = train_quick_classifier(cas_pool[cas_gen_idx], tissues[cas_gen_idx], cas_epochs, cas_model,
                                            seed, progress=progress, desc="CAS on generated")
    real_classifier = train_quick_classifier(train_images[cas_real_idx], train_labels[cas_real_idx], cas_epochs,
                                             cas_model, seed, progress=progress, desc="CAS on real")
    cas_probs = _predict_proba(cas_classifier, heldout_images, False, 256, "CAS test", progress)
    real_probs = _predict_proba(real_classifier, heldout_images, False, 256, "real test", progress)
    cas_report = classification_report(heldout_labels, cas_probs.argmax(1), cas_probs)
    real_report = classification_report(heldout_labels, real_probs.argmax(1), real_probs)
    timings["cas_s"] = time.perf_counter() - clock

    # per-tissue table -----------------------------------------------------------------------------------
    per_class_table = {}
    for t in TISSUES:
        mask = tissues == t.index
        raw_row, ver_row = report_raw["per_class"][t.label], report_verified["per_class"][t.label]
        per_class_table[t.label] = {
            "abbreviation": t.abbreviation,
            "precision_raw": raw_row["precision"], "recall_raw": raw_row["recall"], "f1_raw": raw_row["f1"],
            "precision_verified": ver_row["precision"], "recall_verified": ver_row["recall"],
            "f1_verified": ver_row["f1"],
            **_loop_statistics(is_verified[mask], attempts[mask]),
            "near_copies": int(copies["is_copy"][mask].sum()),
            "near_copies_pixel": int(pixel_copies["is_copy"][mask].sum()),
            "cas_recall": cas_report["per_class"][t.label]["recall"],
            "real_trained_recall": real_report["per_class"][t.label]["recall"],
        }

    evaluator_is_verifier = classifier is getattr(verifier, "classifier", None)
    result = {
        "generator": getattr(generator, "name", type(generator).__name__),
        "n_generated": n,
        "per_class_requested": per_class,
        "seed": seed,
        "macro_f1_raw": report_raw["macro_f1"],
        "macro_f1_verified": report_verified["macro_f1"],
        "accuracy_raw": report_raw["accuracy"],
        "accuracy_raw_ci95": report_raw["accuracy_ci95"],
        "accuracy_verified": report_verified["accuracy"],
        "accuracy_verified_ci95": report_verified["accuracy_ci95"],
        "macro_precision_raw": report_raw["macro_precision"],
        "macro_recall_raw": report_raw["macro_recall"],
        "macro_precision_verified": report_verified["macro_precision"],
        "macro_recall_verified": report_verified["macro_recall"],
        "auc_macro_raw": report_raw["auc_macro"],
        "auc_macro_verified": report_verified["auc_macro"],
        "confusion_matrix_raw": report_raw["confusion_matrix"],
        "confusion_matrix_verified": report_verified["confusion_matrix"],
        **loop,
        "per_class": per_class_table,
        "fid": fid,
        "fid_verified": fid_verified,
        "fid_real_baseline": fid_baseline,
        "kid": kid, "kid_std": kid_std,
        "kid_verified": kid_verified, "kid_verified_std": kid_verified_std,
        "kid_real_baseline": kid_baseline, "kid_real_baseline_std": kid_baseline_std,
        "fid_n_query": len(query_gen), "fid_n_reference": len(half_b), "kid_subset_size": kid_size,
        "near_copy_rate": float(copies["is_copy"].mean()),
        "near_copy_rate_pixel": float(pixel_copies["is_copy"].mean()),
        "near_copy_threshold": threshold,
        "near_copy_threshold_pixel": pixel_threshold,
        "near_copy_percentile": near_copy_percentile,
        "nn_distance_generated_median": float(np.median(copies["distances"])),
        "nn_distance_heldout_median": float(np.median(heldout_nn)),
        "nn_distance_pixel_generated_median": float(np.median(pixel_copies["distances"])),
        "nn_distance_pixel_heldout_median": float(np.median(heldout_pixel_nn)),
        "nearest_pairs": worst_pairs,
        "cas_accuracy": cas_report["accuracy"],
        "cas_accuracy_ci95": cas_report["accuracy_ci95"],
        "cas_macro_f1": cas_report["macro_f1"],
        "real_trained_accuracy": real_report["accuracy"],
        "real_trained_accuracy_ci95": real_report["accuracy_ci95"],
        "real_trained_macro_f1": real_report["macro_f1"],
        "cas_ratio": cas_report["accuracy"] / real_report["accuracy"] if real_report["accuracy"] else None,
        "cas_n_train": len(cas_gen_idx), "cas_n_test": len(heldout_images),
        "cas_model": cas_model, "cas_epochs": cas_epochs, "cas_source": cas_source,
        "n_train": len(train_images), "n_heldout": len(heldout_images),
        "evaluator_is_verifier": evaluator_is_verifier,
        "protocol": {
            "raw": "per_class images per tissue from generator.generate with seeds seed*1000003+i, no filtering",
            "verified": "verifier.generate on the same request; all returned images classified, unverified "
                        "ones count as whatever the classifier predicts",
            "fid_kid": "classifier penultimate features; held-out real split (stratified) into halves A/B; "
                       "fid = raw generated vs B, fid_real_baseline = A vs B, query sides with equal "
                       "per-tissue counts (min(per_class, |A_t|))",
            "memorisation": f"nearest training image (features; pixel L2 as second view); near copy = closer "
                            f"than percentile {near_copy_percentile:g} of the held-out->train NN distances",
            "cas": f"{cas_model} trained {cas_epochs} epochs from scratch on {cas_source} generated images vs the "
                   f"same number of real training images per tissue, same recipe; tested on all held-out images",
            "caveat": ("the grading classifier is the verifier's own, so macro_f1_verified measures agreement "
                       "with the loop's own judgement, not independent quality; macro_f1_raw, FID/KID and CAS "
                       "are the independent measures")
            if evaluator_is_verifier else "the grading classifier differs from the verifier's",
        },
        "timings": timings,
    }

    if out_dir is not None:
        clock = time.perf_counter()
        out_dir.mkdir(parents=True, exist_ok=True)
        pngs["confusion_raw"] = str(plot_confusion_matrix(
            report_raw["confusion_matrix"], out_dir / "confusion_raw.png",
            f"Raw generated images (macro-F1 {report_raw['macro_f1']:.3f})"))
        pngs["confusion_verified"] = str(plot_confusion_matrix(
            report_verified["confusion_matrix"], out_dir / "confusion_verified.png",
            f"Verified images (macro-F1 {report_verified['macro_f1']:.3f})"))
        pngs["f1_bars"] = str(plot_f1_comparison(
            [per_class_table[label]["f1_raw"] for label in LABELS],
            [per_class_table[label]["f1_verified"] for label in LABELS], out_dir / "f1_raw_vs_verified.png"))
        pngs["samples"] = str(plot_sample_grid(
            raw, tissues, out_dir / "samples_generated_vs_real.png", heldout_images, heldout_labels,
            title=f"Raw generated (left, first 8 seeds per tissue) vs held-out real images (right)"))
        pngs["near_copies"] = str(plot_near_copy_pairs(
            raw, train_images, worst_pairs, out_dir / "nearest_training_pairs.png",
            title=f"Generated images nearest to a training image\n(classifier features; near copy if "
                  f"d <= {threshold:.3g})"))
        timings["plots_s"] = time.perf_counter() - clock
    result["pngs"] = pngs
    result["timings"]["total_s"] = float(sum(timings.values()))
    result = _jsonable(result)
    if out_dir is not None:
        result["report_json"] = str(out_dir / "report.json")
        result["report_md"] = str(out_dir / "report.md")
        _write_json(out_dir / "report.json", result)
        (out_dir / "report.md").write_text(generator_markdown(result))
    return result


def _stratified_halves(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves with (nearly) the same tissue mix; odd counts alternate which half gets the extra."""
    half_a, half_b = [], []
    extra_to_a = True
    for t in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == t))
        cut = len(idx) // 2 + (len(idx) % 2 if extra_to_a else 0)
        if len(idx) % 2:
            extra_to_a = not extra_to_a
        half_a.extend(idx[:cut].tolist())
        half_b.extend(idx[cut:].tolist())
    return np.sort(np.array(half_a, np.int64)), np.sort(np.array(half_b, np.int64))


def generator_markdown(result: dict) -> str:
    """A readable markdown report of :func:`evaluate_generator`'s result."""
    r = result
    lo, hi = r["accuracy_raw_ci95"]
    lines = [
        f"# Generator evaluation ({r['generator']})", "",
        f"{r['per_class_requested']} images requested per tissue ({r['n_generated']} in all), seed {r['seed']}; "
        f"{r['n_train']} training and {r['n_heldout']} held-out real images.", "",
        "## Summary", "",
        "| measure | value | reference |", "|---|---|---|",
        f"| macro-F1, raw generator (paper protocol) | {r['macro_f1_raw']:.4f} | accuracy {r['accuracy_raw']:.4f} "
        f"(95% CI {lo:.3f}-{hi:.3f}) |",
        f"| macro-F1, verified | {r['macro_f1_verified']:.4f} | accuracy {r['accuracy_verified']:.4f} |",
        f"| first-try acceptance | {r['first_try_acceptance']:.2%} | mean attempts {r['mean_attempts']:.2f}, "
        f"max {r['max_attempts']} |",
        f"| never verified | {r['never_verified_rate']:.2%} | |",
        f"| FID (classifier features), raw | {r['fid']:.3f} | real-vs-real baseline {r['fid_real_baseline']:.3f} |",
        f"| FID, verified | {r['fid_verified']:.3f} | n = {r['fid_n_query']} vs {r['fid_n_reference']} |",
        f"| KID, raw | {r['kid']:.4f} ± {r['kid_std']:.4f} | baseline {r['kid_real_baseline']:.4f} "
        f"± {r['kid_real_baseline_std']:.4f} |",
        f"| KID, verified | {r['kid_verified']:.4f} ± {r['kid_verified_std']:.4f} | |",
        f"| near-copy rate (features) | {r['near_copy_rate']:.2%} | threshold {r['near_copy_threshold']:.4g} "
        f"(percentile {r['near_copy_percentile']:g} of held-out->train) |",
        f"| near-copy rate (pixels) | {r['near_copy_rate_pixel']:.2%} | threshold "
        f"{r['near_copy_threshold_pixel']:.4g} |",
        f"| median NN distance to train (features) | {r['nn_distance_generated_median']:.4g} | held-out real "
        f"{r['nn_distance_heldout_median']:.4g} |",
        f"| CAS accuracy (trained on generated) | {r['cas_accuracy']:.4f} | trained on real "
        f"{r['real_trained_accuracy']:.4f} ({r['cas_n_train']} images each) |",
        "",
        "## Per tissue", "",
        "| tissue | F1 raw | F1 verified | first-try | mean attempts | never verified | near copies | "
        "CAS recall | real recall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in r["per_class"].items():
        lines.append(f"| {row['abbreviation']} ({label}) | {_fmt(row['f1_raw'])} | {_fmt(row['f1_verified'])} | "
                     f"{row['first_try_acceptance']:.0%} | {row['mean_attempts']:.2f} | "
                     f"{row['never_verified_rate']:.0%} | {row['near_copies']} | {_fmt(row['cas_recall'])} | "
                     f"{_fmt(row['real_trained_recall'])} |")
    lines += ["", "## Protocol", ""] + [f"- **{k}**: {v}" for k, v in r["protocol"].items()]
    lines += ["", "## Timings", ""] + [f"- {k}: {v:.1f}" for k, v in r["timings"].items()]
    if r.get("pngs"):
        lines += ["", "## Figures", ""] + [f"![{k}]({Path(v).name})" for k, v in r["pngs"].items()]
    return "\n".join(lines) + "\n"


# ============================================================================================ helpers

def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _jsonable(value):
    """numpy scalars/arrays -> Python; NaN/inf -> None, so ``json.dumps`` gives strict JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False))
