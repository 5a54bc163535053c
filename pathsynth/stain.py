"""Preparing images from other labs for the 28 px classifier: stain normalisation and physical scale.

PathMNIST tiles (NCT-CRC-HE-100K) were Macenko-normalised by their authors and show 112 um in 28 px (about
4 um per pixel). An image from another lab differs in both: its haematoxylin and eosin look different, and a
150 px tile at 0.5 um/px shows only 74 um. :func:`prepare_image` maps stains onto a PathMNIST reference with
torchstain's Macenko normaliser (the reference is fitted on the training images and stored in the classifier's
``config.json``) and, when the caller states the microns per pixel, resizes to the PathMNIST scale. It returns
notes saying what it did, for the CLI and the app to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .images import to_rgb_uint8

__all__ = ["PATHMNIST_MICRONS_PER_PIXEL", "PreparedImage", "fit_stain_reference", "prepare_image", "stain_normalise"]

PATHMNIST_MICRONS_PER_PIXEL = 4.0  # 28 px = 112 um (NCT-CRC-HE-100K: 224 px at 0.5 um/px, resized to 28 px)
# Fewer stained pixels than this and Macenko's stain vectors are noise. A 28 px tile (784 px) never qualifies:
# normalising each held-out PathMNIST tile on its own cut accuracy from 0.84 to 0.53 (measured, see model card).
MIN_TISSUE_PIXELS = 1500
TISSUE_OD = 0.15  # optical density above which a pixel counts as stained (torchstain's beta)


@dataclass
class PreparedImage:
    """A float ``(3, H, W)`` tensor in [0, 1] ready for the classifier, and what was done to get it."""

    tensor: torch.Tensor
    notes: list[str] = field(default_factory=list)


def _macenko():
    import torchstain

    return torchstain.normalizers.MacenkoNormalizer(backend="numpy")


def fit_stain_reference(images: np.ndarray) -> dict:
    """Macenko stain vectors and maximum concentrations of a set of uint8 ``(N, H, W, 3)`` tiles.

    The tiles are laid side by side in one mosaic so the reference describes the whole training set,
    not one tile.
    """
    images = np.asarray(images)
    columns = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / columns))
    height, width = images.shape[1:3]
    mosaic = np.full((rows * height, columns * width, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        mosaic[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    normaliser = _macenko()
    normaliser.fit(mosaic)
    return {"method": "macenko", "he_ref": np.asarray(normaliser.HERef).round(6).tolist(),
            "max_c_ref": np.asarray(normaliser.maxCRef).round(6).tolist()}


def stain_normalise(image: np.ndarray, reference: dict,
                    min_tissue_pixels: int = MIN_TISSUE_PIXELS) -> tuple[np.ndarray, str]:
    """``image`` (uint8 HWC) with its H&E stains mapped onto ``reference``; the note says what happened.

    Images with too little stained tissue (background, fat) are returned unchanged: their stain vectors
    cannot be estimated, and there is nothing to normalise.
    """
    optical_density = -np.log((image.astype(np.float64) + 1) / 240.0)
    stained = int((optical_density >= TISSUE_OD).all(axis=-1).sum())
    if stained < min_tissue_pixels:
        return image, f"stain normalisation skipped: only {stained} stained pixels (needs {min_tissue_pixels})"
    normaliser = _macenko()
    normaliser.HERef = np.asarray(reference["he_ref"], dtype=np.float64)
    normaliser.maxCRef = np.asarray(reference["max_c_ref"], dtype=np.float64)
    try:
        normalised, _, _ = normaliser.normalize(I=image, stains=False)
    except Exception as error:  # eigen-decomposition failures on degenerate colour distributions
        return image, f"stain normalisation skipped ({type(error).__name__}): stains could not be estimated"
    normalised = np.clip(np.nan_to_num(np.asarray(normalised, dtype=np.float64), nan=255.0), 0, 255)
    return normalised.astype(np.uint8), "stain-normalised to the PathMNIST reference (Macenko)"


def _flatten_alpha(image) -> tuple[np.ndarray, str | None]:
    """Composite a transparent image on white (a slide's background) rather than dropping alpha blindly."""
    array = np.asarray(image.convert("RGBA") if hasattr(image, "mode") and "A" in image.mode else image)
    if array.ndim == 3 and array.shape[-1] == 4:
        rgb = to_rgb_uint8(array).astype(np.float32)
        alpha = to_rgb_uint8(np.repeat(array[..., 3:], 3, -1)).astype(np.float32) / 255.0
        return (rgb * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8), "transparency composited on white"
    return to_rgb_uint8(image), None


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Shrink by averaging each output pixel's area (how a 28 px tile summarises 4 um of tissue per pixel);
    enlarge bilinearly. Bilinear shrinking with antialiasing spreads each output pixel over about two: a 224 px
    tile at 0.5 um/px blurred that way lost lymphocytes' dark dots (4 of 8 real PathMNIST lymphocyte tiles, upscaled
    and brought back, still recognised; 7 of 8 by area)."""
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return torch.nn.functional.interpolate(x, size=size, mode="area")
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def prepare_image(image, microns_per_pixel: float | None = None, stain_reference: dict | None = None,
                  input_size: int = 28, pad: bool = True) -> PreparedImage:
    """Any image (PIL or array; grey, RGB, RGBA; 8/16-bit or float) -> the classifier's input, with notes.

    ``microns_per_pixel``: the scan's resolution; the image is resized to the classifier's scale, so an
    ``input_size`` px tile covers 112 um as in PathMNIST (4 um per pixel at 28 px, 0.5 at 224). A result smaller than ``input_size`` is mirror-padded to it (``pad=True``) or kept small (the
    network pools globally). Without it, the whole image is resized to ``input_size`` px, which assumes it
    shows about 112 um. ``stain_reference`` (from the classifier's config) turns on stain normalisation.
    """
    from .data import reflect_pad_to
    from .images import microns_per_pixel as tile_scale
    from .images import uint8_to_tensor

    array, alpha_note = _flatten_alpha(image)
    notes = [alpha_note] if alpha_note else []
    if stain_reference:
        array, note = stain_normalise(array, stain_reference)
        notes.append(note)
    x = uint8_to_tensor(array[None])
    height, width = array.shape[:2]
    if microns_per_pixel is None:
        size = (input_size, input_size)
        notes.append(f"resized {width}x{height} px to {input_size} px (no microns-per-pixel given: "
                     f"assumed to show {input_size * tile_scale(input_size):.0f} um like PathMNIST)")
    else:
        if not microns_per_pixel > 0:
            raise ValueError(f"microns_per_pixel must be positive, got {microns_per_pixel}")
        target = tile_scale(input_size)  # the classifier's own pixel size: 4 um at 28 px
        factor = microns_per_pixel / target
        size = (max(4, round(height * factor)), max(4, round(width * factor)))
        notes.append(f"rescaled {width}x{height} px at {microns_per_pixel:g} um/px to {size[1]}x{size[0]} px "
                     f"at {target:g} um/px (PathMNIST scale)")
    if (height, width) != size:
        x = _resize(x, size)
    if pad and min(size) < input_size:
        x = reflect_pad_to(x, input_size)
        notes.append(f"mirror-padded to {x.shape[-1]}x{x.shape[-2]} px")
    return PreparedImage(x[0].clamp(0, 1), notes)
