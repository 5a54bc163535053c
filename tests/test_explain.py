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
from pathsynth.explain import MAP_LEGEND_HEIGHT, attribution_map, blend_map, map_figure, map_reading
from pathsynth.images import DISPLAY_SIZE, enlarge
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


# ------------------------------------------------------------------------------------------ what the app shows

def corner_heat(rows: slice, cols: slice, size: int = 28) -> np.ndarray:
    heat = np.zeros((size, size), np.float32)
    heat[rows, cols] = 1.0
    return heat


def test_the_shown_map_keeps_the_tile_visible_in_one_hue_with_a_legend(heldout):
    """Issue 32: the map was a rainbow that replaced the tile. Now the tile shows through everywhere (its grey
    levels correlate with the tile's), the map is one orange (no blue or green from a rainbow), and a legend and a
    one-line reading sit under it."""
    tile = heldout[0][heldout[1] == tissue_index("MUS")][0]
    rows, cols = np.mgrid[:28, :28]
    heat = np.exp(-((rows - 8) ** 2 + (cols - 18) ** 2) / 40.0).astype(np.float32)  # a smooth peak, as maps are
    figure = map_figure(tile, heat, "Smooth muscle")
    assert figure.shape == (DISPLAY_SIZE + MAP_LEGEND_HEIGHT, DISPLAY_SIZE, 3)
    shown, legend = figure[:DISPLAY_SIZE].astype(int), figure[DISPLAY_SIZE:]
    tile_grey = enlarge(tile).astype(float).mean(-1)
    assert np.corrcoef(tile_grey.ravel(), shown.mean(-1).ravel())[0, 1] > 0.5  # the tile is still there
    red, green, blue = shown[..., 0], shown[..., 1], shown[..., 2]
    assert ((red >= green - 1) & (green >= blue - 1)).all()  # grey blended with orange only
    assert (red - blue).max() > 80  # and the orange is there
    assert (legend < 128).any(axis=-1).sum() > 500  # the legend's bar and text were drawn
    assert gradcam_overlay(tile, heat).shape == (28, 28, 3) and blend_map(tile, heat).shape == (336, 336, 3)


def test_the_reading_says_where_the_map_is_and_what_that_area_looks_like():
    tile = np.full((28, 28, 3), (225, 150, 195), np.uint8)  # pink tile
    tile[:9, :9] = (90, 50, 110)  # a dark purple corner
    reading = map_reading(tile, corner_heat(slice(0, 9), slice(0, 9)), "Lymphocytes")
    assert reading == ("For Lymphocytes, the classifier relied most on the upper left, an area that is dark purple, "
                       "darker than the rest.")
    assert "lower right" in map_reading(tile, corner_heat(slice(20, 28), slice(20, 28)))
    two = corner_heat(slice(0, 6), slice(0, 6)) + 0.8 * corner_heat(slice(22, 28), slice(22, 28))
    assert "relied on 2 areas, the strongest at the upper left; they are" in map_reading(tile, two)
    assert "no area stands out" in map_reading(tile, np.zeros((28, 28)))
    assert "most of the tile" in map_reading(tile, np.ones((28, 28)))


def test_the_reading_of_a_pasted_patch_points_at_it(shipped, heldout):
    """The shipped classifier's map for a patch of lymphocytes pasted in the middle of adipose: the reading
    names the centre, as the map does (the sanity test above), and the patch's dark purple."""
    reading = map_reading(pasted(*heldout, "ADI", "LYM"), shipped.gradcam(pasted(*heldout, "ADI", "LYM"),
                                                                          target=tissue_index("LYM")))
    assert "centre" in reading and "purple" in reading, reading
