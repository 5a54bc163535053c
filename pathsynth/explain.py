"""Where the classifier looked: attribution maps that localise at 28 px (captum).

Grad-CAM on the last ResNet stage (2x2 at 28 px) can only draw a blurred 2x2 blob. Two methods that localise:

* ``occlusion``: slide a grey (dataset-mean) window over the tile and record how much the class probability
  drops (Zeiler & Fergus 2014; captum's ``Occlusion``). Model-agnostic, needs only forward passes.
* ``gradcam``: Grad-CAM (Selvaraju et al. 2017; captum's ``LayerGradCam``) on an earlier stage with a finer grid.

Both are sanity-checked in ``tests/test_explain.py`` like Adebayo et al. 2018 (map changes when the weights are
randomised; on a tile with a pasted patch of another tissue, the map for that tissue marks the patch).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .images import to_rgb_uint8

__all__ = ["APP_MAP_SIGNATURE", "METHODS", "app_map", "attribution_map", "first_network", "layer_gradcam_map",
           "occlusion_geometry", "occlusion_map"]

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

    with torch.no_grad():
        attribution = Occlusion(probability).attribute(
            x, target=cls, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
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
