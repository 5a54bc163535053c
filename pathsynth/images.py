"""Small image jobs shared by the library: RGB uint8 conversion, reading files, PNG codec, enlarging a tile
and undoing a pixel-exact enlargement.

Conventions: an *image* is a uint8 ``(H, W, 3)`` array; a *batch* is uint8 ``(N, H, W, 3)``; model tensors are
float ``(N, 3, H, W)`` in [0, 1].
"""

from __future__ import annotations

import io

import numpy as np

MAX_SEED = 2**31 - 1  # seeds people type, derive and store (torch.Generator takes any of them)
SOURCES = ("generated", "real", "uploaded")  # where an image came from (quiz questions, gallery items)
DISPLAY_SIZE = 336  # 28 px x 12: crisp pixel blocks with NEAREST


def to_rgb_uint8(image) -> np.ndarray:
    """A PIL image or an array (gray, RGB, RGBA; uint8, uint16 or float in [0, 1] or [0, 255]) as a new
    C-contiguous uint8 ``(H, W, 3)`` array; ``ValueError`` for anything else."""
    if hasattr(image, "convert"):  # PIL
        image = _pil_to_array(image)
    array = np.asarray(image)
    if array.dtype == np.uint16:
        array = array // 257
    elif array.dtype != np.uint8:
        if array.dtype.kind == "f" and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {array.shape}")
    return np.array(array[..., :3], dtype=np.uint8, order="C")


def _pil_to_array(image) -> np.ndarray:
    """A PIL image as an array ``to_rgb_uint8`` can take: 16/32-bit grey stays numeric (PIL's own RGB
    conversion would clip it to white), every other mode goes through PIL's RGB conversion."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image).astype(np.int64)
        return (array.clip(0, 65535).astype(np.uint16) if array.max(initial=0) > 255
                else array.clip(0, 255).astype(np.uint8))
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    return np.asarray(image.convert("RGB"))


def load_image(path) -> np.ndarray:
    """An image file (PNG, JPEG, TIFF...; grey, RGBA, palette or 16-bit) as RGB uint8 ``(H, W, 3)``.
    Raises ``FileNotFoundError``, or ``OSError``/``ValueError`` (PIL's ``UnidentifiedImageError`` among them)
    for a file that is not a readable image."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return to_rgb_uint8(image)


def undo_pixel_upscale(image, size: int | None = None) -> tuple[np.ndarray, int]:
    """``(image, 1)``, or ``(tile, factor)`` when ``image`` is exactly ``tile`` enlarged ``factor`` times with
    NEAREST (what :func:`scale` and ``pathsynth generate --scale`` save): shrinking it back is lossless.

    A factor that brings the image to ``size`` x ``size`` is tried first, then the largest factor that fits.
    """
    array = to_rgb_uint8(image)
    height, width = array.shape[:2]
    common = np.gcd(height, width)
    factors = [f for f in range(common, 1, -1) if common % f == 0]
    if size and height == width and height % size == 0 and height // size in factors:
        factors.remove(height // size)
        factors.insert(0, height // size)
    for factor in factors:
        strip = array[:factor]  # a cheap look at the first row of blocks rules most factors out
        if not np.array_equal(scale(strip[::factor, ::factor], factor), strip):
            continue
        tile = array[::factor, ::factor]
        if np.array_equal(scale(tile, factor), array):
            return np.ascontiguousarray(tile), factor
    return array, 1


def tensor_to_uint8(images) -> np.ndarray:
    """float ``(N, 3, H, W)`` in [0, 1] (torch) -> uint8 ``(N, H, W, 3)``, rounded to the nearest level."""
    return (images.clamp(0, 1) * 255).round().to(dtype=_torch().uint8).permute(0, 2, 3, 1).cpu().numpy()


def uint8_to_tensor(images: np.ndarray):
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [0, 1] (torch)."""
    return _torch().from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def resize_tensor(images, size: int):
    """float ``(N, 3, H, W)`` resized to ``size`` px with antialiasing (no moiré when shrinking)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    import torch.nn.functional as F

    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def encode_png(image) -> bytes:
    """An image as PNG bytes (lossless)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_rgb_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG (or any image format PIL reads) bytes -> RGB uint8; ``ValueError`` when it is not an image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return to_rgb_uint8(image)
    except Exception as error:
        raise ValueError(f"not a valid image ({type(error).__name__})") from None


def scale(image, factor: int) -> np.ndarray:
    """``image`` enlarged ``factor`` times with NEAREST, so each pixel stays a sharp block."""
    array = to_rgb_uint8(image)
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1) if factor > 1 else array


def upscale(image, size: int = DISPLAY_SIZE) -> np.ndarray:
    """A tile enlarged to ``size`` x ``size`` with NEAREST (the app's display size)."""
    from PIL import Image

    return np.asarray(Image.fromarray(to_rgb_uint8(image)).resize((size, size), Image.NEAREST))


def _torch():
    import torch

    return torch
