"""Instructors' own slides: PNG/JPEG/TIFF tiles (single files or ZIPs) checked, converted and added to a gallery.

Every file is read and checked before anything is stored, so a bad file is never stored: an image that cannot be
read is left out with one line naming it (``UploadReport.refused``) and the others are added; when none can be, or
the upload as a whole breaks a limit, it is refused with one line (``UploadError``, a ``ValueError``) and nothing
changes. The checks:

* sizes: at most ``MAX_FILE_BYTES`` per file and ``MAX_UPLOAD_BYTES`` in all as sent, ``MAX_IMAGES`` images per
  upload, ``MAX_PIXELS`` pixels and ``MIN_SIDE`` to ``MAX_SIDE`` px per side, checked from the header before a
  pixel is decoded;
* PIL's decompression-bomb guard is turned into a refusal (its warning too), truncated files are not padded
  (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off) and only PNG, JPEG and TIFF decoders are tried;
* ZIPs: at most ``MAX_ZIP_MEMBERS`` members each and ``MAX_ZIP_BYTES`` uncompressed for all the ZIPs of one
  upload (declared sizes are checked first, real reads are bounded too, since headers can lie); a member name
  that is absolute or climbs out with ``..`` refuses the ZIP. Names are only ever shown, never used as paths:
  nothing is written to disk.

Accepted tiles go through the classifier's external-image preparation (:meth:`TissueClassifier.prepare`:
Macenko stain normalisation unless the instructor skips it, then the PathMNIST scale from the microns per pixel),
are stored with
``source="uploaded"`` and ``meta["provenance"] = "instructor-validated"``: the instructor's label is the answer
key, and the classifier's opinion is kept beside it (``meta["classifier"]``) and reported when they disagree.
"""

from __future__ import annotations

import io
import math
import os
import posixpath
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .gallery import MAX_IMAGE_SIDE, GalleryItemInput
from .images import tensor_to_uint8, to_rgb_uint8
from .text import clip_text
from .tissues import DISPLAY_NAMES, tissue_index

MAX_FILE_BYTES = 50 * 2**20  # one file as sent (an image or a ZIP)
MAX_UPLOAD_BYTES = 200 * 2**20  # all files of one upload as sent
MAX_IMAGES = 100  # images per upload, after unpacking ZIPs
MAX_ZIP_MEMBERS = 600  # entries in one ZIP (a full exported gallery is 500 images + 2 files)
MAX_ZIP_BYTES = 200 * 2**20  # uncompressed total of one ZIP
MAX_PIXELS = 4096 * 4096  # a large tile; far below PIL's own bomb limit (about 89 M pixels)
MAX_SIDE = 8192
MIN_SIDE = 28  # a PathMNIST tile; anything smaller cannot show tissue
IMAGE_FORMATS = ("PNG", "JPEG", "TIFF")  # the JPEG decoder also opens MPO, the variant many cameras write
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MICRONS_PER_PIXEL_RANGE = (0.05, 50.0)
PROVENANCE = "instructor-validated"


class UploadError(ValueError):
    """A file was refused; the message is one line naming it. Nothing was stored."""


@dataclass
class UploadedFile:
    name: str  # for messages only: never used as a path
    data: bytes


@dataclass
class ConvertedTile:
    name: str
    image: np.ndarray  # the prepared tile, uint8 (H, W, 3): stain-normalised, at the PathMNIST scale
    tissue: int  # the instructor's label: the answer key
    predicted: int  # the classifier's opinion
    confidence: float
    probabilities: list[float]
    notes: list[str] = field(default_factory=list)
    original_size: tuple[int, int] = (0, 0)  # width, height as uploaded

    @property
    def agrees(self) -> bool:
        return self.predicted == self.tissue


@dataclass
class UploadReport:
    item_ids: list[int]
    tiles: list[ConvertedTile]
    skipped: list[str] = field(default_factory=list)  # ZIP members that were not images (names)
    refused: list[str] = field(default_factory=list)  # one line per image that was not added, naming it

    def lines(self) -> list[str]:
        """One line per tile: the label kept and the classifier's opinion, with a warning when they differ."""
        lines = []
        for tile in self.tiles:
            opinion = f"classifier: {DISPLAY_NAMES[tile.predicted]} ({tile.confidence:.0%})"
            if tile.agrees:
                lines.append(f"{tile.name}: {DISPLAY_NAMES[tile.tissue]} · {opinion}, agrees")
            else:
                lines.append(f"⚠️ {tile.name}: kept your label {DISPLAY_NAMES[tile.tissue]}, but the {opinion} "
                             "disagrees; check the tile")
        return lines

    @property
    def disagreements(self) -> int:
        return sum(not tile.agrees for tile in self.tiles)


def display_name(name) -> str:
    """A file or member name as shown in messages: its last part, one short line."""
    return clip_text(str(name).replace("\\", "/").rsplit("/", 1)[-1], 80) or "(unnamed)"


# ------------------------------------------------------------------------------------------ reading files

def read_paths(paths: Sequence) -> list[UploadedFile]:
    """Files the web server received (paths it chose), size-checked before they are read."""
    if len(paths) > MAX_IMAGES:
        raise UploadError(f"too many files ({len(paths)}); at most {MAX_IMAGES} per upload")
    files, total = [], 0
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):  # Gradio's file objects carry the path as .path or .name
            path = getattr(path, "path", None) or getattr(path, "name", None) or ""
        path = os.fspath(path)
        name = display_name(path)
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise UploadError(f"{name}: larger than {MAX_FILE_BYTES // 2**20} MB")
        total += size
        if total > MAX_UPLOAD_BYTES:
            raise UploadError(f"the files are larger than {MAX_UPLOAD_BYTES // 2**20} MB together; upload fewer")
        with open(path, "rb") as handle:
            files.append(UploadedFile(name, handle.read(MAX_FILE_BYTES + 1)))
    return files


def _unsafe_member(name: str) -> bool:
    """Absolute paths, drive letters, ``..`` steps and NULs: what a path-traversal ZIP uses."""
    cleaned = name.replace("\\", "/")
    return (cleaned.startswith("/") or "\0" in cleaned or (len(cleaned) > 1 and cleaned[1] == ":")
            or ".." in cleaned.split("/") or posixpath.normpath(cleaned).startswith(".."))


def _ignored_member(name: str) -> bool:
    """Folders and what file managers add (``__MACOSX/``, ``.DS_Store``, hidden files)."""
    parts = name.replace("\\", "/").split("/")
    return name.endswith("/") or parts[0] == "__MACOSX" or parts[-1].startswith(".")


def zip_members(data: bytes, zip_name: str, max_members: int | None = None,
                max_bytes: int | None = None) -> dict[str, bytes]:
    """The files of a ZIP (name -> bytes) read in memory within the bounds (default: ``MAX_ZIP_MEMBERS``,
    ``MAX_ZIP_BYTES``); ``UploadError`` for a bad ZIP."""
    max_members = MAX_ZIP_MEMBERS if max_members is None else max_members
    max_bytes = MAX_ZIP_BYTES if max_bytes is None else max_bytes
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise UploadError(f"{zip_name}: not a readable ZIP file") from None
    if len(infos) > max_members:
        raise UploadError(f"{zip_name}: {len(infos)} entries; at most {max_members}")
    if any(_unsafe_member(info.filename) for info in infos):
        bad = next(info.filename for info in infos if _unsafe_member(info.filename))
        raise UploadError(f"{zip_name}: unsafe file name inside the ZIP ({clip_text(bad, 60)!r})")
    wanted = [info for info in infos if not _ignored_member(info.filename)]
    if sum(info.file_size for info in wanted) > max_bytes:
        raise UploadError(f"{zip_name}: more than {max_bytes // 2**20} MB once unpacked")
    members, total = {}, 0
    for info in wanted:
        if info.flag_bits & 0x1:
            raise UploadError(f"{zip_name}: {display_name(info.filename)} is encrypted")
        try:
            with archive.open(info) as member:  # the declared size can lie: read at most what is left
                content = member.read(max_bytes - total + 1)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
            raise UploadError(f"{zip_name}: {display_name(info.filename)} is damaged") from None
        total += len(content)
        if total > max_bytes:
            raise UploadError(f"{zip_name}: more than {max_bytes // 2**20} MB once unpacked")
        members[info.filename] = content
    return members


def unpack(files: Sequence[UploadedFile]) -> tuple[list[UploadedFile], list[str]]:
    """Images to convert (ZIPs opened in memory) and the names of ZIP members that were skipped (not images)."""
    images, skipped, unpacked = [], [], 0
    for file in files:
        if len(file.data) > MAX_FILE_BYTES:
            raise UploadError(f"{file.name}: larger than {MAX_FILE_BYTES // 2**20} MB")
        if not zipfile.is_zipfile(io.BytesIO(file.data)):
            images.append(file)
            continue
        members = zip_members(file.data, file.name, max_bytes=MAX_ZIP_BYTES - unpacked)  # one budget for all ZIPs
        unpacked += sum(len(content) for content in members.values())
        for member, content in members.items():
            if member.lower().endswith(IMAGE_SUFFIXES):
                images.append(UploadedFile(display_name(member), content))
            else:
                skipped.append(display_name(member))
    if len(images) > MAX_IMAGES:
        raise UploadError(f"too many images ({len(images)}); at most {MAX_IMAGES} per upload")
    return images, skipped


def decode_image(file: UploadedFile, min_side: int = MIN_SIDE, alpha: bool = True) -> np.ndarray:
    """The pixels of a PNG/JPEG/TIFF file: uint8 RGB, or RGBA when it has transparency and ``alpha``.

    The size is checked from the header before decoding; 16-bit grey is scaled to 8 bits."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's limit is a refusal here
        try:
            with Image.open(io.BytesIO(file.data), formats=IMAGE_FORMATS) as image:
                _check_size(file.name, image.size, min_side)
                image.load()  # truncated data raises here: LOAD_TRUNCATED_IMAGES is never turned on
                if alpha and ("A" in image.mode or "transparency" in image.info):
                    return np.asarray(image.convert("RGBA"), dtype=np.uint8).copy()
                return to_rgb_uint8(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError(f"{file.name}: too many pixels (a decompression bomb?); "
                              f"at most {MAX_PIXELS:,} pixels") from None
        except UnidentifiedImageError:
            raise UploadError(f"{file.name}: not a PNG, JPEG or TIFF image") from None
        except UploadError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError, struct.error):
            raise UploadError(f"{file.name}: the image is damaged or truncated") from None


def _check_size(name: str, size: tuple[int, int], min_side: int) -> None:
    width, height = size
    if min(width, height) < min_side:
        raise UploadError(f"{name}: too small ({width}x{height} px); at least {min_side} px per side")
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise UploadError(f"{name}: too large ({width}x{height} px); at most {MAX_SIDE} px per side and "
                          f"{MAX_PIXELS:,} pixels")


# ----------------------------------------------------------------------------------------- converting

def check_microns_per_pixel(value) -> float | None:
    """None (unknown), or a finite scan resolution in ``MICRONS_PER_PIXEL_RANGE``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UploadError(f"microns per pixel must be a number, got {clip_text(value, 20)!r}") from None
    low, high = MICRONS_PER_PIXEL_RANGE
    if not (math.isfinite(number) and low <= number <= high):
        raise UploadError(f"microns per pixel must be from {low} to {high:g} (a scanner's 40x is about 0.25)")
    return number


def convert(classifier, name: str, pixels: np.ndarray, tissue: int,
            microns_per_pixel: float | None = None, normalise_stain: bool = True) -> ConvertedTile:
    """Prepare one image as the classifier sees external images (stain + scale) and ask its opinion.
    ``normalise_stain=False`` keeps the colours as they are (tiles already normalised, e.g. PathMNIST's own)."""
    prepared = classifier.prepare(pixels, microns_per_pixel, normalise_stain)  # pathsynth.stain.prepare_image
    tile = tensor_to_uint8(prepared.tensor[None])[0]
    if max(tile.shape[:2]) > MAX_IMAGE_SIDE:
        raise UploadError(f"{name}: {tile.shape[1]}x{tile.shape[0]} px at the PathMNIST scale; a gallery tile is "
                          f"at most {MAX_IMAGE_SIDE} px (is the microns per pixel right?)")
    probabilities = np.asarray(classifier.predict_proba(prepared.tensor[None])[0], dtype=float)
    predicted = int(probabilities.argmax())
    return ConvertedTile(name, tile, tissue, predicted, float(probabilities[predicted]),
                         [round(float(p), 6) for p in probabilities], list(prepared.notes),
                         (int(pixels.shape[1]), int(pixels.shape[0])))


def gallery_item(tile: ConvertedTile, instructor: str, microns_per_pixel: float | None) -> GalleryItemInput:
    meta = {"provenance": PROVENANCE, "validated_by": instructor, "original_name": tile.name,
            "original_size": list(tile.original_size), "microns_per_pixel": microns_per_pixel,
            "preparation": tile.notes,
            "classifier": {"predicted": tile.predicted, "confidence": round(tile.confidence, 6),
                           "agrees": tile.agrees, "probabilities": tile.probabilities}}
    return GalleryItemInput(image=tile.image, caption="", tissue=tile.tissue, seed=None, source="uploaded",
                            meta=meta)


def upload_tiles(store, gallery, classifier, files: Sequence[UploadedFile], tissue,
                 microns_per_pixel=None, instructor: str = "", normalise_stain: bool = True) -> UploadReport:
    """Check, convert and add instructor tiles to ``gallery``. An image that cannot be read or converted is left
    out and named in ``report.refused`` while the others are added (the app clears its file list after each
    upload, so the message must say what went where); nothing is stored when every image is refused, nor when
    the upload as a whole is (label, scale, sizes, ZIP safety). The caller authorises; the audit log records the
    upload under ``instructor``, who must be able to see the gallery (a private one: its owner)."""
    try:
        label = tissue_index(tissue)
    except (KeyError, ValueError):
        raise UploadError(f"choose the tissue these tiles show (got {clip_text(tissue, 40)!r})") from None
    scale = check_microns_per_pixel(microns_per_pixel)
    if not files:
        raise UploadError("choose one or more PNG, JPEG or TIFF files (or a ZIP of them)")
    images, skipped = unpack(files)
    if not images:
        raise UploadError("no PNG, JPEG or TIFF images found in the upload")
    # every file is checked and converted before any is kept; one full-size image in memory at a time
    tiles, refused = [], []
    for file in images:
        try:
            tiles.append(convert(classifier, file.name, decode_image(file), label, scale, normalise_stain))
        except UploadError as error:
            refused.append(str(error))
    if not tiles:
        raise UploadError(refused[0] if len(refused) == 1 else
                          f"none of the {len(refused)} images could be added: " + "; ".join(refused))
    ids = store.add_items(gallery, [gallery_item(tile, instructor, scale) for tile in tiles], actor=instructor,
                          action="upload")
    return UploadReport(ids, tiles, skipped, refused)


__all__ = ["ConvertedTile", "MAX_FILE_BYTES", "MAX_IMAGES", "MAX_PIXELS", "MAX_UPLOAD_BYTES", "MAX_ZIP_BYTES",
           "MAX_ZIP_MEMBERS", "MIN_SIDE", "PROVENANCE", "UploadError", "UploadReport", "UploadedFile",
           "check_microns_per_pixel", "convert", "decode_image", "read_paths", "unpack", "upload_tiles", "zip_members"]
