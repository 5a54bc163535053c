"""Small image jobs shared by the library: RGB uint8 conversion, reading files, PNG codec, enlarging a tile
(pixel-exact or smooth, zoomed, with a scale bar) and undoing a pixel-exact enlargement.

Conventions: an *image* is a uint8 ``(H, W, 3)`` array; a *batch* is uint8 ``(N, H, W, 3)``; model tensors are
float ``(N, 3, H, W)`` in [0, 1].
"""

from __future__ import annotations

import io

import numpy as np

MAX_SEED = 2**31 - 1  # seeds people type, derive and store (torch.Generator takes any of them)
SOURCES = ("generated", "real", "uploaded")  # where an image came from (quiz questions, gallery items)
DISPLAY_SIZE = 336  # 28 px x 12: crisp pixel blocks with NEAREST
# Every PathMNIST size shows the same 112 um of tissue: NCT-CRC-HE-100K's 224 px patches at 0.5 um/px, which medmnist
# shrinks to 128, 64 or 28 px. The pixel size therefore follows from the tile size alone (microns_per_pixel).
PATHMNIST_TILE_UM = 112.0
ZOOMS = (1, 2, 4)  # 1: the whole tile; 2 and 4: its centre half and quarter, enlarged to the same size
INTERPOLATIONS = ("pixel-exact", "smooth")  # NEAREST (every pixel a sharp block) or LANCZOS
SCALE_BAR_UM = (1, 2, 5, 10, 20, 25, 50, 100, 200)  # bar lengths to choose from (the longest that fits)
SCALE_BAR_STRIP = 24  # px added under the image for the bar: under 28, so height // 28 is still the enlargement


def microns_per_pixel(size: int) -> float:
    """The pixel size of a whole PathMNIST tile ``size`` px across: 4 um at 28 px, 1.75 at 64, 0.5 at 224."""
    if size < 1:
        raise ValueError(f"a tile size is at least 1 px, got {size}")
    return PATHMNIST_TILE_UM / size


UM_PER_PIXEL = microns_per_pixel(28)  # the shipped models' tiles (PathMNIST at 28 px): 4 um per pixel


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


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` resized to ``size`` px (:func:`resize_tensor`); unchanged when already that size."""
    if images.shape[1:3] == (size, size):
        return images
    return tensor_to_uint8(resize_tensor(uint8_to_tensor(images), size))


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


def zoom_crop(tile, zoom: int = 1) -> np.ndarray:
    """The centre ``1/zoom`` of a tile (each side), e.g. the middle 14 x 14 px of a 28 px tile at zoom 2."""
    if isinstance(zoom, bool) or zoom not in ZOOMS:
        raise ValueError(f"zoom must be one of {', '.join(f'{z}x' for z in ZOOMS)}, got {zoom!r}")
    array = to_rgb_uint8(tile)
    height, width = array.shape[:2]
    side_y, side_x = max(1, round(height / zoom)), max(1, round(width / zoom))
    top, left = (height - side_y) // 2, (width - side_x) // 2
    return np.ascontiguousarray(array[top:top + side_y, left:left + side_x])


def enlarge(tile, size: int = DISPLAY_SIZE, smooth: bool = False) -> np.ndarray:
    """``tile`` resized to ``size`` x ``size``: NEAREST (pixel-exact blocks) or, with ``smooth``, LANCZOS."""
    from PIL import Image

    method = Image.LANCZOS if smooth else Image.NEAREST
    return np.asarray(Image.fromarray(to_rgb_uint8(tile)).resize((size, size), method))


def scale_bar_um(um_per_display_px: float, width: int, max_fraction: float = 0.45) -> float:
    """The longest of :data:`SCALE_BAR_UM` whose bar takes at most ``max_fraction`` of ``width`` px."""
    fitting = [um for um in SCALE_BAR_UM if um / um_per_display_px <= max_fraction * width]
    return float(fitting[-1] if fitting else SCALE_BAR_UM[0])


def add_scale_bar(image, um_per_display_px: float, strip: int = SCALE_BAR_STRIP) -> np.ndarray:
    """``image`` with a white strip of ``strip`` px below it holding a black scale bar and its length ("50 µm").

    The bar is ``round(length / um_per_display_px)`` px long; the image itself is not drawn on, so a
    pixel-exact enlargement still reads back as its tile."""
    from PIL import Image, ImageDraw

    array = to_rgb_uint8(image)
    height, width = array.shape[:2]
    um = scale_bar_um(um_per_display_px, width)
    length = int(round(um / um_per_display_px))
    canvas = Image.new("RGB", (width, height + strip), "white")
    canvas.paste(Image.fromarray(array), (0, 0))
    draw = ImageDraw.Draw(canvas)
    left, top = 8, height + strip // 2 - 3
    draw.rectangle([left, top, left + length - 1, top + 5], fill="black")
    font = _label_font(strip - 9)
    label = f"{um:g} µm" if font is not None and font.getmask("µ").getbbox() else f"{um:g} um"
    draw.text((left + length + 6, height + strip // 2), label, fill="black", font=font,
              anchor="lm" if font is not None else None)
    return np.asarray(canvas)


def _label_font(size: int):
    """DejaVu Sans (shipped with matplotlib; it has "µ") at ``size`` px, else Pillow's bundled font (None: only the
    bitmap font is available)."""
    from PIL import ImageFont

    try:
        from matplotlib import get_data_path

        return ImageFont.truetype(f"{get_data_path()}/fonts/ttf/DejaVuSans.ttf", size)
    except (ImportError, OSError):
        pass
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return None


def display_image(tile, zoom: int = 1, smooth: bool = False, scale_bar: bool = True, size: int = DISPLAY_SIZE,
                  um_per_pixel: float = UM_PER_PIXEL) -> np.ndarray:
    """A tile as the app shows it: its centre ``1/zoom`` enlarged to ``size`` px (pixel-exact or ``smooth``), with
    a scale bar under it (``um_per_pixel``: the tile's own pixel size; a whole PathMNIST tile of S px has
    ``microns_per_pixel(S)``, 4 µm at 28 px; tiles converted from uploads keep the classifier's scale)."""
    crop = zoom_crop(tile, zoom)
    shown = enlarge(crop, size, smooth)
    return add_scale_bar(shown, um_per_pixel * crop.shape[1] / size) if scale_bar else shown


def side_by_side(images, labels, gap: int = 8, header: int = 18) -> np.ndarray:
    """Images of one height in a row on white, each with its label above it (a review panel)."""
    from PIL import Image, ImageDraw

    arrays = [to_rgb_uint8(image) for image in images]
    if not arrays or len(labels) != len(arrays) or len({a.shape[0] for a in arrays}) != 1:
        raise ValueError("side_by_side needs images of one height, one label each")
    width = sum(a.shape[1] for a in arrays) + gap * (len(arrays) - 1)
    canvas = Image.new("RGB", (width, arrays[0].shape[0] + header), "white")
    draw, font, left = ImageDraw.Draw(canvas), _label_font(header - 5), 0
    for array, label in zip(arrays, labels):
        canvas.paste(Image.fromarray(array), (left, header))
        draw.text((left + 2, header // 2), label, fill="black", font=font, anchor="lm" if font is not None else None)
        left += array.shape[1] + gap
    return np.asarray(canvas)


def stacked(images, gap: int = 8) -> np.ndarray:
    """Images one above the other on white, each centred (e.g. rows made with :func:`side_by_side`)."""
    arrays = [to_rgb_uint8(image) for image in images]
    if not arrays:
        raise ValueError("stacked needs at least one image")
    width = max(a.shape[1] for a in arrays)
    canvas = np.full((sum(a.shape[0] for a in arrays) + gap * (len(arrays) - 1), width, 3), 255, np.uint8)
    top = 0
    for array in arrays:
        left = (width - array.shape[1]) // 2
        canvas[top:top + array.shape[0], left:left + array.shape[1]] = array
        top += array.shape[0] + gap
    return canvas


def _torch():
    import torch

    return torch
