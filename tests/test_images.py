"""Seeing the image: zoom, pixel-exact or smooth enlargement, and a scale bar whose length is right for PathMNIST's
4 µm per pixel at every zoom."""

import numpy as np
import pytest

from pathsynth.images import (DISPLAY_SIZE, SCALE_BAR_STRIP, UM_PER_PIXEL, add_scale_bar, display_image, enlarge,
                              scale_bar_um, side_by_side, stacked, zoom_crop)

TILE = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)


def bar_pixels(image: np.ndarray, height: int) -> int:
    """The length of the black bar in the strip under an image ``height`` px tall: the dark run from its left end."""
    row = image[height + SCALE_BAR_STRIP // 2 - 1]
    dark = row.max(axis=1) < 40
    start = int(np.argmax(dark))
    end = start + int(np.argmin(dark[start:]))  # the first light pixel after it
    return end - start


@pytest.mark.parametrize("zoom,um,px_per_tile_px", [(1, 50, 12), (2, 25, 24), (4, 10, 48)])
def test_the_scale_bar_is_as_long_as_its_label_says_at_every_zoom(zoom, um, px_per_tile_px):
    shown = display_image(TILE, zoom=zoom)
    assert shown.shape == (DISPLAY_SIZE + SCALE_BAR_STRIP, DISPLAY_SIZE, 3)
    # PathMNIST: 4 µm per tile pixel; at this zoom one tile pixel is px_per_tile_px display pixels
    assert DISPLAY_SIZE / zoom_crop(TILE, zoom).shape[1] == px_per_tile_px
    um_per_display_px = UM_PER_PIXEL / px_per_tile_px
    assert scale_bar_um(um_per_display_px, DISPLAY_SIZE) == um  # the longest round length under half the width
    assert bar_pixels(shown, DISPLAY_SIZE) == round(um / um_per_display_px) == um * px_per_tile_px // 4


def test_the_bar_sits_under_the_image_which_stays_pixel_exact():
    shown = display_image(TILE)
    assert np.array_equal(shown[:DISPLAY_SIZE], enlarge(TILE))  # nothing drawn over the tissue
    assert shown.shape[0] // 28 == 12  # the strip is too short to change the read-back enlargement factor
    assert np.array_equal(shown[6:DISPLAY_SIZE:12, 6::12], TILE)  # block centres give the tile back
    assert (shown[DISPLAY_SIZE:, -40:] == 255).all()  # a white strip, the bar and label on its left
    assert display_image(TILE, scale_bar=False).shape == (DISPLAY_SIZE, DISPLAY_SIZE, 3)


def test_zoom_shows_the_centre_of_the_tile():
    assert np.array_equal(zoom_crop(TILE, 2), TILE[7:21, 7:21])
    assert np.array_equal(zoom_crop(TILE, 4), TILE[10:17, 10:17])
    assert np.array_equal(display_image(TILE, zoom=2, scale_bar=False)[::24, ::24], TILE[7:21, 7:21])
    with pytest.raises(ValueError, match="zoom must be one of"):
        zoom_crop(TILE, 3)


def test_pixel_exact_keeps_blocks_and_smooth_blends_them():
    exact, smooth = enlarge(TILE), enlarge(TILE, smooth=True)
    assert len(np.unique(exact[:12, :12].reshape(-1, 3), axis=0)) == 1  # one tile pixel = one flat 12 x 12 block
    assert len(np.unique(smooth[:12, :12].reshape(-1, 3), axis=0)) > 10  # interpolated
    assert np.abs(smooth.astype(int) - exact.astype(int)).mean() > 5


def test_a_small_image_gets_a_short_bar_and_the_label_fits():
    image = add_scale_bar(np.zeros((100, 100, 3), np.uint8), um_per_display_px=1.0)
    assert bar_pixels(image, 100) == 25  # 25 µm: the longest under 45 px
    assert image[100:].min() == 0 and image[100:, -5:].min() == 255


def test_side_by_side_labels_each_panel():
    panels = [display_image(TILE, scale_bar=False, size=56)] * 3
    joined = side_by_side(panels, ["Q1", "real STR", "real MUS"], gap=8, header=18)
    assert joined.shape == (56 + 18, 3 * 56 + 2 * 8, 3)
    assert np.array_equal(joined[18:, 64:120], panels[1])
    assert joined[:18, 64:120].min() < 100  # a label is written above the middle panel
    with pytest.raises(ValueError):
        side_by_side(panels, ["only one label"])


def test_stacked_centres_narrower_rows():
    wide, narrow = np.zeros((10, 30, 3), np.uint8), np.zeros((5, 10, 3), np.uint8)
    joined = stacked([narrow, wide], gap=2)
    assert joined.shape == (17, 30, 3)
    assert (joined[:5, 10:20] == 0).all() and (joined[:5, :10] == 255).all() and (joined[5:7] == 255).all()


def test_the_generate_tab_shows_its_tile_pixel_exact_by_default_and_as_asked():
    from pathsynth.app import generate

    assert np.array_equal(generate.shown(TILE), enlarge(TILE))  # the default: 336 x 336, reads back exactly
    assert generate.shown(TILE, "smooth", True).shape == (DISPLAY_SIZE + SCALE_BAR_STRIP, DISPLAY_SIZE, 3)
    assert np.array_equal(generate.shown(TILE, "smooth", False), enlarge(TILE, smooth=True))
    with pytest.raises(generate.Refusal, match="Enlargement must be pixel-exact or smooth"):
        generate.shown(TILE, "blurry")
