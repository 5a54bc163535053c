"""The classifier beyond its own test fold: calibration, simulated stain shifts, and tiles from another lab.

* :func:`calibration_stage`: expected calibration error (torchmetrics) before and after temperature scaling.
  The held-out fold is both where T is fitted and the only test set, so the honest figure is cross-fitted:
  T fitted on one stratified half and measured on the other, and vice versa. The shipped T (fitted on the
  whole fold) is reported too, marked in-sample.
* :func:`stain_shift_stage`: held-out tiles re-stained with another lab's H&E (Macenko, torchstain's default
  reference from Macenko et al. 2009) or heavily HED-jittered.
* :func:`external_tiles_stage`: a folder of real tiles from another lab (Kather et al. 2016) under each
  preparation: whole-tile resize vs physical scale, with and without stain normalisation.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from ..tissues import NUM_TISSUES, tissue_index

EXTERNAL_ENV = "PATHSYNTH_EXTERNAL_TILES"  # folder of Kather 2016 tiles for the external-tile figure
KATHER2016_MICRONS_PER_PIXEL = 0.495
# Kather et al. 2016 class folders -> PathMNIST abbreviations (no mucus/muscle there; COMPLEX has no match).
KATHER2016_CLASSES = {"TUMOR": "TUM", "STROMA": "STR", "LYMPHO": "LYM", "DEBRIS": "DEB", "MUCOSA": "NORM",
                      "ADIPOSE": "ADI", "EMPTY": "BACK"}
# A different lab's stain: the reference shipped with torchstain (Macenko et al. 2009's example slide).
OTHER_LAB_STAIN = {"he_ref": [[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]], "max_c_ref": [1.9705, 1.0308]}


def expected_calibration_error(probs, labels, n_bins: int = 10) -> float:
    """Top-label ECE with equal-width bins (torchmetrics' MulticlassCalibrationError, L1 norm)."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(torch.as_tensor(np.asarray(probs), dtype=torch.float32),
                                              torch.as_tensor(np.asarray(labels), dtype=torch.long),
                                              num_classes=np.asarray(probs).shape[1], n_bins=n_bins, norm="l1"))


def reliability_bins(probs, labels, n_bins: int = 10) -> dict:
    """Per equal-width confidence bin: mean confidence, accuracy and count of the top-1 predictions."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    which = np.clip((confidence * n_bins).astype(int), 0, n_bins - 1)
    rows = {"lower": [], "confidence": [], "accuracy": [], "count": []}
    for b in range(n_bins):
        mask = which == b
        rows["lower"].append(b / n_bins)
        rows["count"].append(int(mask.sum()))
        rows["confidence"].append(float(confidence[mask].mean()) if mask.any() else None)
        rows["accuracy"].append(float(correct[mask].mean()) if mask.any() else None)
    return rows


def calibration_stage(classifier, images, labels, seed: int = 0, n_bins: int = 10) -> dict:
    """ECE uncalibrated, cross-fitted (honest) and with the shipped temperature (in-sample); see module doc."""
    from sklearn.model_selection import StratifiedKFold

    from ..classifier import fit_temperature, probabilities_from_logits

    labels = np.asarray(labels).reshape(-1)
    logits = classifier.view_logits(images)
    raw = probabilities_from_logits(logits, 1.0).numpy()
    cross = np.zeros_like(raw)
    temperatures = []
    halves = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    for fit_idx, test_idx in halves:
        temperature = fit_temperature(logits[:, fit_idx], labels[fit_idx])
        temperatures.append(temperature)
        cross[test_idx] = probabilities_from_logits(logits[:, test_idx], temperature).numpy()
    shipped = probabilities_from_logits(logits, classifier.temperature).numpy()

    def nll(probs):
        return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())

    return {"temperature": classifier.temperature, "temperatures_cross_fitted": temperatures, "n_bins": n_bins,
            "ece_uncalibrated": expected_calibration_error(raw, labels, n_bins),
            "ece_cross_fitted": expected_calibration_error(cross, labels, n_bins),
            "ece_shipped_in_sample": expected_calibration_error(shipped, labels, n_bins),
            "nll_uncalibrated": nll(raw), "nll_cross_fitted": nll(cross),
            "mean_confidence_uncalibrated": float(raw.max(1).mean()),
            "mean_confidence_cross_fitted": float(cross.max(1).mean()),
            "reliability_uncalibrated": reliability_bins(raw, labels, n_bins),
            "reliability_cross_fitted": reliability_bins(cross, labels, n_bins)}


def restain(images: np.ndarray, stain: dict) -> np.ndarray:
    """Tiles re-stained to ``stain`` (Macenko): what the same tissue would look like from another lab."""
    from ..stain import stain_normalise

    # A simulation, not a normalisation: a noisier stain estimate on a small (28 px) tile only adds variety.
    return np.stack([stain_normalise(image, stain, min_tissue_pixels=100)[0] for image in images])


def hed_shifted(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Tiles with a seeded HED stain jitter of strength ``sigma`` (scale and shift, Tellez et al. 2018)."""
    from ..data import RandomHEDJitter, to_tensor, to_uint8

    torch.manual_seed(seed)
    return to_uint8(RandomHEDJitter(sigma, sigma)(to_tensor(images)))


def stain_shift_stage(classifier, images, labels, seed: int = 0) -> dict:
    """Held-out accuracy under simulated stain shifts (small tiles, e.g. 28 px, are too small to stain-normalise one
    by one)."""
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    shifted = {"none": images, "other lab's stain (Macenko re-staining)": restain(images, OTHER_LAB_STAIN),
               "strong HED jitter (sigma 0.3)": hed_shifted(images, 0.3, seed)}
    return {name: {"accuracy": float((classifier.predict_proba(tiles).argmax(1) == labels).mean())}
            for name, tiles in shifted.items()}


def external_tiles(directory: str | Path) -> tuple[list, np.ndarray, list[str]]:
    """PNG tiles of a Kather 2016 folder (names start with the class folder, e.g. ``01_TUMOR__...``)."""
    from PIL import Image

    images, labels, names = [], [], []
    for path in sorted(Path(directory).glob("*.png")):
        match = re.match(r"\d+_([A-Z]+)_", path.name)
        if not match or match.group(1) not in KATHER2016_CLASSES:
            continue
        with Image.open(path) as image:
            images.append(image.copy())
        labels.append(tissue_index(KATHER2016_CLASSES[match.group(1)]))
        names.append(path.name)
    return images, np.asarray(labels, dtype=np.int64), names


EXTERNAL_MODES = {  # name -> (microns_per_pixel given?, stain normalisation, mirror-pad to the input size)
    "whole tile resized to the input size (old behaviour)": (False, False, True),
    "whole tile resized, stain-normalised": (False, True, True),
    "physical scale, padded": (True, False, True),
    "physical scale, padded, stain-normalised (default)": (True, True, True),
    "physical scale, unpadded, stain-normalised": (True, True, False),
}


def external_tiles_stage(classifier, directory: str | Path | None = None,
                         microns_per_pixel: float = KATHER2016_MICRONS_PER_PIXEL) -> dict | None:
    """Accuracy on another lab's tiles under each preparation (None when no folder is given or set)."""
    directory = directory or os.environ.get(EXTERNAL_ENV)
    if not directory or not Path(directory).is_dir():
        return None
    images, labels, names = external_tiles(directory)
    if not images:
        return None
    rows = {}
    for name, (physical, normalise, pad) in EXTERNAL_MODES.items():
        probs, _ = classifier.predict_external(images, microns_per_pixel if physical else None, normalise, pad)
        rows[name] = {"accuracy": float((probs.argmax(1) == labels).mean()), "correct": int((probs.argmax(1) == labels).sum()),
                      "predicted": probs.argmax(1).tolist()}
    return {"directory": str(directory), "n": len(images), "labels": labels.tolist(), "files": names,
            "microns_per_pixel": microns_per_pixel, "modes": rows}
