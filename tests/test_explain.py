"""Sanity checks for the attribution map shown in the app (Adebayo et al. 2018, "Sanity checks for saliency maps")."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr
from tiny_models import tiny_classifier

from pathsynth.classifier import (
    DEFAULT_CLASSIFIER_DIR,
    TissueClassifier,
    build_resnet18,
    gradcam_overlay,
    model_files_present,
)
from pathsynth.data import train_val_split
from sample_tiles import sample_tiles
from pathsynth.explain import attribution_map
from pathsynth.tissues import tissue_index

SHIPPED = model_files_present(DEFAULT_CLASSIFIER_DIR)
PATCH = slice(7, 21)  # a 14 px square in the middle: a quarter of the tile
# (tile tissue, pasted tissue): backgrounds that differ from the patch in colour, texture or both
PAIRS = [("ADI", "LYM"), ("BACK", "TUM"), ("MUC", "LYM"), ("STR", "TUM"), ("ADI", "DEB"), ("BACK", "NORM"),
         ("MUS", "LYM"), ("NORM", "ADI")]


@pytest.fixture(scope="module")
def heldout():
    images, labels = sample_tiles()  # real when PATHSYNTH_DATA names a file, else generated
    _, val_idx = train_val_split(labels)
    return images[val_idx], labels[val_idx]


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED:
        pytest.skip("shipped classifier not trained yet")
    return TissueClassifier.from_pretrained(DEFAULT_CLASSIFIER_DIR)


def pasted(images, labels, base: str, patch: str) -> np.ndarray:
    """A held-out tile of ``base`` tissue with the middle quarter of a ``patch`` tile pasted in."""
    tile = images[labels == tissue_index(base)][0].copy()
    tile[PATCH, PATCH] = images[labels == tissue_index(patch)][1][PATCH, PATCH]
    return tile


def test_map_has_the_image_size_and_the_old_api(heldout):
    clf = tiny_classifier()
    image = np.asarray(Image.fromarray(heldout[0][3]).resize((84, 84)))
    heat = clf.gradcam(image, target=2)
    assert heat.shape == (84, 84) and heat.min() >= 0 and heat.max() <= 1 and heat.std() > 1e-3
    assert gradcam_overlay(image, heat).shape == (84, 84, 3)
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribution_map(clf, image, method="magic")


def test_map_depends_on_the_learned_weights(shipped, heldout):
    """Model randomisation: a trained model's map must not resemble a random model's map."""
    torch.manual_seed(1)
    randomised = TissueClassifier(build_resnet18(), shipped.config)
    rhos = [spearmanr(shipped.gradcam(image).ravel(), randomised.gradcam(image).ravel()).statistic
            for image in heldout[0][::32]]
    assert np.nanmean(np.abs(rhos)) < 0.4, rhos


def test_map_for_the_pasted_tissue_marks_the_patch(shipped, heldout):
    """Most of the map's mass for tissue B lies on the pasted B patch (a quarter of the tile), on average."""
    inside = np.zeros((28, 28), bool)
    inside[PATCH, PATCH] = True
    shares = []
    for base, patch in PAIRS:
        heat = shipped.gradcam(pasted(*heldout, base, patch), target=tissue_index(patch))
        shares.append(heat[inside].sum() / heat.sum())
    assert np.mean(shares) > 0.5, np.round(shares, 2)
    assert np.median(shares) > inside.mean(), np.round(shares, 2)  # better than a map spread evenly
