"""Metric building blocks: thin, tested wrappers over scikit-learn, SciPy and torchmetrics.

Everything here is a pure function on arrays (labels, probabilities or feature vectors). Feature vectors come
from an *evaluator* network (see :mod:`pathsynth.evaluation.protocol`): neither the generator's training nor the
verify loop uses it, so the generator cannot be tuned against these numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import binomtest
from sklearn.metrics import (balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support,
                             roc_auc_score)
from sklearn.metrics.pairwise import pairwise_distances
from sklearn.neighbors import NearestNeighbors
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ..tissues import LABELS, NUM_TISSUES


def accuracy_interval(successes: int, n: int) -> tuple[float, float]:
    """Wilson 95 % interval for a proportion (well-behaved at 0 %, 100 % and small n)."""
    if n <= 0:
        return (0.0, 1.0)
    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(interval.low), float(interval.high))


def _check_labels(y_true, y_pred, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred differ in length ({len(y_true)} vs {len(y_pred)})")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} must hold integer class indices in [0, {num_classes})")
    return y_true.astype(np.int64), y_pred.astype(np.int64)


def class_names(num_classes: int, names=None) -> list[str]:
    if names is not None:
        return list(names)
    return list(LABELS) if num_classes == NUM_TISSUES else [str(c) for c in range(num_classes)]


def classification_report(y_true, y_pred, probs=None, num_classes: int = NUM_TISSUES, names=None) -> dict:
    """Accuracy (+ Wilson 95 % interval), macro precision/recall/F1, per-class scores, one-vs-rest AUC.

    Macro averages run over the classes present in ``y_true`` or ``y_pred`` (scikit-learn's default); a class
    neither present nor predicted has support 0 and ``None`` scores. ``auc_macro`` averages the one-vs-rest
    AUC of the classes that have both positives and negatives (``None`` without ``probs``). ``names``: the
    classes' labels (default: the histology tissues' for 9 classes).
    """
    y_true, y_pred = _check_labels(y_true, y_pred, num_classes)
    everything = list(range(num_classes))
    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=everything,
                                                                     zero_division=0)
    auc = [None] * num_classes
    if probs is not None:
        probs = np.asarray(probs, dtype=float)
        if probs.shape != (len(y_true), num_classes):
            raise ValueError(f"probs must have shape ({len(y_true)}, {num_classes}), got {probs.shape}")
        for c in everything:
            if 0 < (y_true == c).sum() < len(y_true):
                auc[c] = float(roc_auc_score(y_true == c, probs[:, c]))
    known_auc = [a for a in auc if a is not None]
    per_class = {name: {"precision": float(precision[c]) if c in present else None,
                        "recall": float(recall[c]) if c in present else None,
                        "f1": float(f1[c]) if c in present else None,
                        "support": int(support[c]), "auc": auc[c]}
                 for c, name in enumerate(class_names(num_classes, names))}
    correct = int((y_true == y_pred).sum())
    mean_over_present = (lambda v: float(np.mean(v[present])) if present else float("nan"))
    return {
        "n": len(y_true),
        "accuracy": correct / len(y_true) if len(y_true) else float("nan"),
        "accuracy_ci95": list(accuracy_interval(correct, len(y_true))),
        "macro_precision": mean_over_present(precision),
        "macro_recall": mean_over_present(recall),
        "macro_f1": mean_over_present(f1),
        "auc_macro": float(np.mean(known_auc)) if known_auc else None,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=everything).tolist(),
    }


class _Precomputed(torch.nn.Module):
    """Lets torchmetrics take feature vectors we already computed (its custom-extractor path)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _as_tensor(features) -> torch.Tensor:
    features = torch.as_tensor(np.asarray(features, dtype=np.float64))
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need a (N, D) feature array with N >= 2, got shape {tuple(features.shape)}")
    return features


def frechet_distance(features_a, features_b) -> float:
    """FID between two feature sets (torchmetrics' FrechetInceptionDistance on our own features)."""
    a, b = _as_tensor(features_a), _as_tensor(features_b)
    metric = FrechetInceptionDistance(feature=_Precomputed(a.shape[1])).double()
    metric.update(a, real=True)
    metric.update(b, real=False)
    return float(metric.compute())


def kernel_inception_distance(features_a, features_b, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over random subsets; torchmetrics) between two feature sets."""
    a, b = _as_tensor(features_a), _as_tensor(features_b)
    size = min(subset_size, len(a), len(b))
    metric = KernelInceptionDistance(feature=_Precomputed(a.shape[1]), subsets=subsets, subset_size=size).double()
    metric.update(a, real=True)
    metric.update(b, real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def nearest_neighbours(query, reference) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance to, and index of, each query point's nearest reference point."""
    index = NearestNeighbors(n_neighbors=1).fit(np.asarray(reference, dtype=np.float64))
    distances, indices = index.kneighbors(np.asarray(query, dtype=np.float64))
    return distances[:, 0], indices[:, 0]


def _kth_neighbour_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest other point: the radius of its ball in the manifold."""
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return distances[:, k]  # column 0 is the point itself


def _inside_manifold(points: np.ndarray, support: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Whether each point lies in at least one support ball (all pairs: a few thousand points at most)."""
    return (pairwise_distances(points, support) <= radii[None, :]).any(1)


def generative_precision_recall(real_features, generated_features, k: int = 3) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

    precision = share of generated samples inside the real manifold (fidelity); recall = share of real
    samples inside the generated manifold (diversity). Each manifold is the union of balls reaching each
    sample's k-th nearest neighbour (scikit-learn's NearestNeighbors).
    """
    real = np.asarray(real_features, dtype=np.float64)
    generated = np.asarray(generated_features, dtype=np.float64)
    if min(len(real), len(generated)) <= k:
        raise ValueError(f"need more than k={k} samples on each side, got {len(real)} and {len(generated)}")
    precision = _inside_manifold(generated, real, _kth_neighbour_radii(real, k)).mean()
    recall = _inside_manifold(real, generated, _kth_neighbour_radii(generated, k)).mean()
    return {"precision": float(precision), "recall": float(recall), "k": k}


def near_copies(generated_features, train_features, heldout_features, percentile: float = 1.0) -> dict:
    """Generated samples closer to a training sample than ``percentile`` % of held-out real ones are."""
    heldout_distances, _ = nearest_neighbours(heldout_features, train_features)
    threshold = float(np.percentile(heldout_distances, percentile))
    distances, indices = nearest_neighbours(generated_features, train_features)
    return {"threshold": threshold, "distances": distances, "indices": indices, "is_copy": distances <= threshold,
            "heldout_median": float(np.median(heldout_distances))}


def two_sample_scores(is_generated, p_generated, weights=None) -> dict:
    """A classifier two-sample test's figures: balanced accuracy (at 0.5) and ROC AUC; 0.5 = indistinguishable."""
    is_generated = np.asarray(is_generated).astype(int)
    p_generated = np.asarray(p_generated, dtype=float)
    if len(set(is_generated.tolist())) < 2:
        return {"balanced_accuracy": None, "auc": None, "n_real": int((is_generated == 0).sum()),
                "n_generated": int(is_generated.sum())}
    return {"balanced_accuracy": float(balanced_accuracy_score(is_generated, p_generated >= 0.5,
                                                               sample_weight=weights)),
            "auc": float(roc_auc_score(is_generated, p_generated, sample_weight=weights)),
            "n_real": int((is_generated == 0).sum()), "n_generated": int(is_generated.sum())}
