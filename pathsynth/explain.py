"""Where the classifier looked: attribution maps that localise at 28 px (captum).

Grad-CAM on the last ResNet stage (2x2 at 28 px) can only draw a blurred 2x2 blob. Two methods that localise:

* ``occlusion``: slide a grey (dataset-mean) window over the tile and record how much the class probability
  drops (Zeiler & Fergus 2014; captum's ``Occlusion``). Model-agnostic, needs only forward passes.
* ``gradcam``: Grad-CAM (Selvaraju et al. 2017; captum's ``LayerGradCam``) on an earlier stage with a finer grid.

Both are sanity-checked in ``tests/test_explain.py`` like Adebayo et al. 2018 (map changes when the weights are
randomised; on a tile with a pasted patch of another tissue, the map for that tissue marks the patch).

What a learner sees (:func:`map_figure`): the tile in grey with the map in one orange over it (the tile stays
readable; orange is far from H&E's pinks and purples), a legend, and a one-line reading (:func:`map_reading`) that
says only what the map and the tile's pixels support: where the map is strongest and what that area looks like.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .appearance import area_words
from .images import DISPLAY_SIZE, enlarge, to_rgb_uint8

__all__ = ["APP_MAP_SIGNATURE", "MAP_LEGEND_HEIGHT", "METHODS", "app_map", "attribution_map", "blend_map",
           "first_network", "layer_gradcam_map", "map_figure", "map_reading", "occlusion_geometry", "occlusion_map"]

OCCLUSION_WINDOW = 6  # px at 28 px input (24 um): about a gland's or a few nuclei's width
OCCLUSION_STRIDE = 4  # px at 28 px input (16 um); larger inputs scale both (``occlusion_geometry``)
# The app's maps (``TissueClassifier.gradcam``) occlude for ONE network of an ensemble (its first member) at this
# stride: 36 forward passes instead of 5 x 144, ~0.29 s of one core instead of ~4.6 s (measured on this project's
# 2-core CI machine), with the same sanity results (tests/test_explain.py; docs/deployment.md has the figures).
# The signature is part of the maps' on-disk cache key (pathsynth.services): maps made by another method, window
# or network are never read back as these.
APP_MAP_SIGNATURE = f"occlusion-w{OCCLUSION_WINDOW}-s{OCCLUSION_STRIDE}-member0"


def _input(classifier, image) -> tuple[torch.Tensor, tuple[int, int]]:
    from .classifier import images_to_tensor

    array = to_rgb_uint8(image)
    return classifier._normalise(images_to_tensor(array, classifier.input_size)), array.shape[:2]


def _target(classifier, x: torch.Tensor, target: int | None) -> int:
    if target is not None:
        return int(target)
    with torch.no_grad():
        return int(classifier.model(x).argmax(-1))


def _to_image_size(attribution: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(h, w) attribution -> [0, 1] map at the image's size; only positive evidence is kept."""
    heat = F.interpolate(attribution[None, None].float().cpu(), size=size, mode="bilinear", align_corners=False)[0, 0]
    heat = heat.clamp_min(0)
    return (heat / heat.max()).numpy() if heat.max() > 0 else heat.numpy()


def occlusion_geometry(input_size: int) -> tuple[int, int]:
    """Occlusion window and stride in px for a classifier taking ``input_size`` px tiles: the same micrometres at
    every size (24 um window, 16 um stride; 6 and 4 px at 28 px, 14 and 9 at 64), so a 64 or 224 px model's map
    greys out a gland, not a fraction of a nucleus, and costs the same number of forward passes."""
    scale = input_size / 28
    return max(1, round(OCCLUSION_WINDOW * scale)), max(1, round(OCCLUSION_STRIDE * scale))


def occlusion_map(classifier, image, target: int | None = None, window: int | None = None,
                  stride: int | None = None, network=None) -> np.ndarray:
    """Drop in the target's probability when each region is greyed out, at the image's size, in [0, 1]
    (window and stride: :func:`occlusion_geometry` of the classifier's input size unless given; ``network``:
    the one to occlude for, default the classifier's whole model, e.g. ``first_network(classifier)``)."""
    from captum.attr import Occlusion

    default_window, default_stride = occlusion_geometry(int(classifier.input_size))
    window, stride = window or default_window, stride or default_stride
    x, size = _input(classifier, image)
    cls = _target(classifier, x, target)

    network = classifier.model if network is None else network

    def probability(batch: torch.Tensor) -> torch.Tensor:
        return (network(batch) / classifier.temperature).softmax(-1)

    channels = int(x.shape[1])  # 3 for a tile, 1 for a greyscale film: every channel of a region at once
    with torch.no_grad():
        attribution = Occlusion(probability).attribute(
            x, target=cls, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride),
            baselines=0.0, perturbations_per_eval=64)
    return _to_image_size(attribution[0].sum(0), size)


def first_network(classifier) -> torch.nn.Module:
    """An ensemble's first member, else the classifier's one network: what the app's maps occlude for."""
    return getattr(classifier.model, "members", [classifier.model])[0]


def app_map(classifier, image, target: int | None = None) -> np.ndarray:
    """The map the app shows (``APP_MAP_SIGNATURE``): occlusion for the first network only."""
    return occlusion_map(classifier, image, target, network=first_network(classifier))


def layer_gradcam_map(classifier, image, target: int | None = None, layer: str = "layer1") -> np.ndarray:
    """Grad-CAM on the named ResNet stage (``layer1`` is 14x14 at 28 px), at the image's size, in [0, 1]."""
    from captum.attr import LayerGradCam

    x, size = _input(classifier, image)
    cls = _target(classifier, x, target)
    with torch.enable_grad():
        attribution = LayerGradCam(classifier.model, getattr(classifier.model, layer)).attribute(
            x.requires_grad_(True), target=cls)
    return _to_image_size(attribution[0, 0].detach(), size)


METHODS = {"occlusion": occlusion_map, "app": app_map, "gradcam_layer1": layer_gradcam_map,
           "gradcam_layer2": lambda c, i, t=None: layer_gradcam_map(c, i, t, "layer2")}


def attribution_map(classifier, image, target: int | None = None, method: str = "occlusion") -> np.ndarray:
    """The ``method`` map (see :data:`METHODS`) of ``image`` for ``target`` (default: the predicted tissue)."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](classifier, image, target)


# ------------------------------------------------------------------------------------------ showing a map

MAP_HUE = (255, 110, 0)  # one orange: no rainbow to decode, and unlike any H&E colour
MAP_MAX_ALPHA = 0.7  # the strongest part still lets the tile through
MAP_OUTLINE = (170, 50, 0)  # the edge of the area the classifier relied on most (half the map's peak and above)
MAP_LEGEND_HEIGHT = 84  # px of legend and reading under the map (a fixed height: the app's layout does not jump)
_POSITIONS = (("upper left", "top", "upper right"), ("left side", "centre", "right side"),
              ("lower left", "bottom", "lower right"))


def _heat_at(heatmap, shape: tuple[int, int]) -> np.ndarray:
    """``heatmap`` in [0, 1] resized (bilinear) to ``shape``."""
    heat = torch.as_tensor(np.asarray(heatmap, dtype=np.float32))
    if tuple(heat.shape) != tuple(shape):
        heat = F.interpolate(heat[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
    return heat.clamp(0, 1).numpy()


def blend_map(image, heatmap, size: int | None = DISPLAY_SIZE, max_alpha: float = MAP_MAX_ALPHA) -> np.ndarray:
    """The tile in grey (enlarged pixel-exact to ``size``; None: as is) with ``heatmap`` in orange over it, more
    opaque where the map is stronger, and the area at half the map's peak or more outlined."""
    from scipy.ndimage import binary_erosion

    tile = to_rgb_uint8(image) if size is None else enlarge(image, size)
    heat = _heat_at(heatmap, tile.shape[:2])
    grey = 40.0 + 0.8 * tile.astype(np.float32).mean(-1, keepdims=True)  # lifted: dark tiles stay visible
    alpha = max_alpha * heat[..., None]
    blended = (1 - alpha) * grey + alpha * np.array(MAP_HUE, np.float32)
    top = heat >= 0.5 * heat.max() if heat.max() > 0 else np.zeros(heat.shape, bool)
    width = max(1, tile.shape[0] // 150)
    blended[top & ~binary_erosion(top, iterations=width, border_value=1)] = MAP_OUTLINE
    return np.clip(blended, 0, 255).astype(np.uint8)


def _position(mask: np.ndarray, heat: np.ndarray) -> str:
    """Where the heat-weighted centre of ``mask`` lies, in words ("upper left", "centre"...)."""
    rows, cols = np.nonzero(mask)
    weights = heat[rows, cols] + 1e-6
    y = np.average(rows, weights=weights) / mask.shape[0]
    x = np.average(cols, weights=weights) / mask.shape[1]
    return _POSITIONS[min(2, int(y * 3))][min(2, int(x * 3))]


def _where(top: np.ndarray, heat: np.ndarray) -> str:
    """Where the top of the map lies: one area's position, or how many separate areas (each at least 1 % of the
    tile: stray pixels are not areas) and the strongest one's position."""
    from scipy.ndimage import label

    areas, count = label(top)
    sizes = np.bincount(areas.ravel(), minlength=count + 1)
    kept = [n for n in range(1, count + 1) if sizes[n] >= 0.01 * top.size] or [int(np.argmax(sizes[1:])) + 1]
    if len(kept) == 1:
        return f"relied most on the {_position(areas == kept[0], heat)}, an area that is"
    strongest = max(kept, key=lambda n: heat[areas == n].sum())
    return f"relied on {len(kept)} areas, the strongest at the {_position(areas == strongest, heat)}; they are"


def map_reading(image, heatmap, tissue_name: str | None = None) -> str:
    """One line saying where the map is strongest (half its peak or more) and what that part of the tile looks
    like (:func:`~pathsynth.appearance.area_words`, lighter or darker than the rest): nothing else is claimed."""
    tile = to_rgb_uint8(image)
    heat = _heat_at(heatmap, tile.shape[:2])
    subject = f"For {tissue_name}, the classifier" if tissue_name else "The classifier"
    if heat.max() <= 0:
        return f"{subject} changed its answer little whichever part was hidden: no area stands out."
    top = heat >= 0.5 * heat.max()
    if top.mean() > 0.6:
        return f"{subject} relied on most of the tile, not one area; the tile is mostly {area_words(tile)}."
    inside, outside = tile[top].astype(np.float32).mean(), tile[~top].astype(np.float32).mean()
    compared = ", darker than the rest" if inside < outside - 15 else ", lighter than the rest" \
        if inside > outside + 15 else ""
    return f"{subject} {_where(top, heat)} {area_words(tile[top])}{compared}."


def map_figure(image, heatmap, tissue_name: str | None = None, size: int = DISPLAY_SIZE) -> np.ndarray:
    """What the app shows: :func:`blend_map` enlarged to ``size``, and under it (:data:`MAP_LEGEND_HEIGHT` px) a
    legend (grey to orange: how much the classifier relied on each part) and :func:`map_reading`."""
    from PIL import Image, ImageDraw

    from .images import _label_font

    canvas = Image.new("RGB", (size, size + MAP_LEGEND_HEIGHT), "white")
    canvas.paste(Image.fromarray(blend_map(image, heatmap, size)), (0, 0))
    draw, font = ImageDraw.Draw(canvas), _label_font(15)  # the app shows it at 250-330 px: about 12 px text
    left, top, bar = 6, size + 6, 56
    for x in range(bar):  # the legend's colour bar: the blend of a mid-grey at each map strength
        alpha = MAP_MAX_ALPHA * x / (bar - 1)
        draw.line([(left + x, top + 2), (left + x, top + 12)], fill=tuple(
            int((1 - alpha) * 150 + alpha * hue) for hue in MAP_HUE))
    draw.text((left + bar + 6, top + 7), "= what the classifier relied on", fill="black",
              font=font, anchor="lm" if font is not None else None)
    lines = _wrapped(map_reading(image, heatmap, tissue_name), font, size - 2 * left)
    if len(lines) > 3:  # a long tissue name: the reading without it (the tab names the tissue)
        lines = _wrapped(map_reading(image, heatmap), font, size - 2 * left)
    for row, line in enumerate(lines[:3]):
        draw.text((left, top + 20 + 18 * row), line, fill="black", font=font)
    return np.asarray(canvas)


def _wrapped(text: str, font, width: int) -> list[str]:
    """``text`` in lines that fit ``width`` px in ``font`` (words kept whole)."""
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and (font.getlength(trial) if font is not None else 6 * len(trial)) <= width:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines
