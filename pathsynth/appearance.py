"""What a tile shows at PathMNIST's scale (~4 µm per pixel): colour, lightness, empty space, texture, alignment.

A nucleus is a 1-2 px dot at this scale, so everything the app teaches about a 28 px tile is of this kind. These
measures back the catalogue's visible-scale text (tests/test_teaching_scale.py checks each claim on real tiles)
and word the one-line reading of an occlusion map (:func:`area_words`). Thresholds are on 0-255 RGB.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import minimum_filter, uniform_filter

from .images import to_rgb_uint8

__all__ = ["MEASURES", "area_words", "tile_measures"]

WHITE_GREY, WHITE_SPREAD = 210, 30  # white / empty: light and nearly colourless (max - min channel)
DARK_GREY = 120  # dark: nuclei-dense tissue (or dark background)
DOT_CONTRAST = 20  # a dark dot: a local minimum this much darker than its 5 x 5 neighbourhood
MEASURES = ("brightness", "white", "dark", "pink", "purple", "texture", "alignment", "dots")


def _pixel_classes(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Per pixel of float RGB ``(..., 3)``: grey level and boolean white, dark, pink, purple masks."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    grey = rgb.mean(-1)
    spread = rgb.max(-1) - rgb.min(-1)
    white = (grey > WHITE_GREY) & (spread < WHITE_SPREAD)
    return {"grey": grey, "white": white, "dark": grey < DARK_GREY,
            "pink": ~white & (red > blue + 15) & (red > green + 30),  # eosin: red well above blue
            "purple": ~white & (blue >= red - 10) & (grey < 180)}  # haematoxylin: blue as strong as red


def _alignment(grey: np.ndarray) -> float:
    """How strongly the tile's edges share one direction (structure-tensor coherence, 0: none, 1: all parallel)."""
    gy, gx = np.gradient(grey)
    jxx, jyy, jxy = (gx * gx).mean(), (gy * gy).mean(), (gx * gy).mean()
    return float(np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / (jxx + jyy + 1e-6))


def _measure_one(tile: np.ndarray) -> dict[str, float]:
    classes = _pixel_classes(to_rgb_uint8(tile).astype(np.float32))
    grey = classes["grey"]
    local_mean = uniform_filter(grey, 3)
    local_std = np.sqrt(np.clip(uniform_filter(grey ** 2, 3) - local_mean ** 2, 0, None))
    dots = (grey < uniform_filter(grey, 5) - DOT_CONTRAST) & (grey == minimum_filter(grey, 3))
    return {"brightness": float(grey.mean()), "white": float(classes["white"].mean()),
            "dark": float(classes["dark"].mean()), "pink": float(classes["pink"].mean()),
            "purple": float(classes["purple"].mean()), "texture": float(local_std.mean()),
            "alignment": _alignment(grey), "dots": float(dots.sum() / grey.size * 784)}


def tile_measures(images) -> dict[str, np.ndarray]:
    """Per tile of a uint8 batch ``(N, H, W, 3)``: :data:`MEASURES` (fractions of pixels for white, dark, pink and
    purple; texture: mean 3 x 3 local standard deviation of grey; dots: dark dots per 28 x 28 px)."""
    rows = [_measure_one(tile) for tile in np.asarray(images)]
    return {name: np.array([row[name] for row in rows]) for name in MEASURES}


def area_words(pixels: np.ndarray) -> str:
    """A few words for the colour of ``pixels`` (float or uint8 RGB ``(N, 3)``): "white and empty-looking",
    "dark purple", "pale pink", "pink-purple"... (what one can check by eye on the tile)."""
    rgb = np.asarray(pixels, dtype=np.float32).reshape(-1, 3)
    if not len(rgb):
        return "empty"
    classes = _pixel_classes(rgb)
    if classes["white"].mean() > 0.5:
        return "white and empty-looking"
    tissue = rgb[~classes["white"]]
    grey, (red, _, blue) = float(tissue.mean()), tissue.mean(0)
    purple, pink = classes["purple"].sum(), classes["pink"].sum()
    if purple + pink < 0.2 * len(tissue):  # pale, neither stain strong: the mean's hue
        hue = "purple" if blue >= red - 10 else "pink"
    else:
        hue = "purple" if purple > 1.5 * pink else "pink" if pink > 1.5 * purple else "pink-purple"
    shade = "dark " if grey < 150 else "pale " if grey > 180 else ""
    return f"{shade}{hue}"
