import numpy as np
import pytest
from PIL import Image

from pathsynth.data import train_val_split
from sample_tiles import needs_real_data, real_data_file, sample_tiles
from pathsynth.evaluation.robustness import OTHER_LAB_STAIN
from pathsynth.stain import fit_stain_reference, prepare_image, stain_normalise
from pathsynth.tissues import tissue_index


@pytest.fixture(scope="module")
def sample():
    images, labels = sample_tiles()  # real when PATHSYNTH_DATA names a file, else generated
    if real_data_file() is None:  # a few generated tiles per tissue: fit and test on all of them
        return images, images, labels
    train_idx, val_idx = train_val_split(labels)
    return images[train_idx], images[val_idx], labels[val_idx]


@pytest.fixture(scope="module")
def reference(sample):
    return fit_stain_reference(sample[0])


def mosaic(tiles: np.ndarray) -> np.ndarray:
    """Four 28 px tiles as one 56 px image (enough stained pixels for Macenko)."""
    return np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:4], 1)], 0)


def test_reference_holds_two_unit_stain_vectors(reference):
    vectors = np.asarray(reference["he_ref"])
    assert vectors.shape == (3, 2) and np.allclose(np.linalg.norm(vectors, axis=0), 1, atol=1e-3)
    assert len(reference["max_c_ref"]) == 2 and min(reference["max_c_ref"]) > 0


@needs_real_data  # Macenko's stain vectors are a property of real H&E slides
def test_normalisation_undoes_another_labs_stain(sample, reference):
    _, val_images, val_labels = sample
    tumour = mosaic(val_images[val_labels == tissue_index("TUM")][:4])
    restained, note = stain_normalise(tumour, OTHER_LAB_STAIN)
    assert "normalised" in note
    back, _ = stain_normalise(restained, reference)
    shift = np.abs(restained.astype(float) - tumour).mean()
    residual = np.abs(back.astype(float) - tumour).mean()
    assert shift > 10 and residual < shift / 2


def test_background_is_left_alone_with_a_note(reference):
    blank = np.full((64, 64, 3), 245, np.uint8)
    out, note = stain_normalise(blank, reference)
    assert np.array_equal(out, blank) and "skipped" in note


def test_physical_scale_resize_and_padding(reference):
    tile = np.random.default_rng(0).integers(0, 255, (150, 150, 3), dtype=np.uint8)
    padded = prepare_image(tile, microns_per_pixel=0.495, stain_reference=reference)
    assert tuple(padded.tensor.shape) == (3, 28, 28)
    assert any("19x19 px at 4 um/px" in n for n in padded.notes) and any("mirror-padded" in n for n in padded.notes)
    small = prepare_image(tile, microns_per_pixel=0.495, pad=False)
    assert tuple(small.tensor.shape) == (3, 19, 19)
    whole = prepare_image(tile)
    assert tuple(whole.tensor.shape) == (3, 28, 28) and "no microns-per-pixel given" in whole.notes[0]
    large = prepare_image(np.zeros((400, 300, 3), np.uint8), microns_per_pixel=0.5)
    assert tuple(large.tensor.shape) == (3, 50, 38)  # more than 28 px of tissue: kept, pooled by the network
    with pytest.raises(ValueError, match="positive"):
        prepare_image(tile, microns_per_pixel=0)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "array16", "float"])
def test_any_image_mode_is_accepted(sample, mode):
    tile = sample[1][0]
    if mode == "array16":
        image = tile.astype(np.uint16) * 257
    elif mode == "float":
        image = tile.astype(np.float32) / 255
    elif mode == "I;16":
        image = Image.fromarray(tile[..., 0].astype(np.uint16) * 257)
    else:
        image = Image.fromarray(tile).convert(mode)
    prepared = prepare_image(image)
    assert tuple(prepared.tensor.shape) == (3, 28, 28)
    assert 0 <= float(prepared.tensor.min()) and float(prepared.tensor.max()) <= 1


def test_transparent_pixels_become_white_background():
    rgba = np.zeros((28, 28, 4), np.uint8)  # fully transparent black
    prepared = prepare_image(rgba)
    assert float(prepared.tensor.min()) == 1.0 and "transparency composited on white" in prepared.notes
