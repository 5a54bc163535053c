"""PathMNIST data: medmnist downloads or local npz files, stratified folds, histology augmentations.

No dataset ships with PathSynth. Real tiles come from, in this order: ``$PATHSYNTH_DATA`` (a local npz in
medmnist's layout, any size), else medmnist's own file under ``$PATHSYNTH_MEDMNIST_ROOT`` (``pathsynth data
download`` fetches it once, with a progress bar); with neither, what needs real tiles is off and says so.

Images are returned as ``uint8`` arrays ``(N, H, W, 3)`` and labels as ``int64`` arrays ``(N,)``, the
medmnist layout. Augmentations work on float tensors in [0, 1], ``(C, H, W)`` or batched ``(B, C, H, W)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import DataUnavailableError
from .images import tensor_to_uint8 as to_uint8, uint8_to_tensor as to_tensor
from .settings import DATA_ENV as DATA_ENV_VAR
from .tissues import NUM_TISSUES

__all__ = ["DataUnavailableError", "load_npz", "npz_image_size", "check_npz_size", "load_medmnist", "load_pathmnist",
           "download_pathmnist", "load_npz_head", "local_pathmnist_file", "display_split", "load_display_tiles",
           "local_display_tiles", "data_source_name",
           "no_real_tiles_message", "stratified_folds", "stratified_subset",
           "train_val_split", "load_training_data",
           "to_tensor", "to_uint8", "dihedral", "RandomDihedral", "RandomHEDJitter", "RandomScale",
           "train_augmentation"]

SPLITS = ("train", "val", "test")
SIZES = (28, 64, 128, 224)
# The real tiles the app shows: the first split a file has, never-trained-on first (medmnist's full file: the
# official test split), at most MAX_DISPLAY_TILES of them in the split's tissue mix.
DISPLAY_SPLITS = ("test", "val", "train")
MAX_DISPLAY_TILES = 800
# medmnist's PathMNIST files: 28 px is 206 MB; the others scaled from it by pixel count (about)
MEDMNIST_SIZE_MB = {28: 206, 64: 1100, 128: 4300, 224: 12900}


def load_npz(path: str | os.PathLike, split: str = "train", size: int | None = None,
             num_classes: int = NUM_TISSUES) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split from an npz in medmnist's key layout (``{split}_images``/``_labels``).

    ``size``: the tile size the caller needs; a file of another size is refused (from its header, before the
    images are read) with a message naming both sizes, never silently resized.
    """
    path = Path(path)
    if not path.is_file():
        raise DataUnavailableError(f"data file not found: {path}")
    if size is not None:
        check_npz_size(path, split, size)
    try:
        with np.load(path) as archive:
            keys = set(archive.files)
            if f"{split}_images" not in keys or f"{split}_labels" not in keys:
                raise DataUnavailableError(_missing_split(path, split, keys))
            images = np.asarray(archive[f"{split}_images"])
            labels = np.asarray(archive[f"{split}_labels"]).reshape(-1).astype(np.int64)
    except (OSError, ValueError) as error:  # not an npz, truncated, pickled objects...
        raise DataUnavailableError(f"cannot read {path} as an npz archive: {error}") from error
    return _check(images, labels, str(path), num_classes)


def _missing_split(path: Path, split: str, keys) -> str:
    have = sorted({k.rsplit("_", 1)[0] for k in keys if k.endswith(("_images", "_labels"))})
    return (f"{path} has no '{split}' split (it has: {', '.join(have) or 'none'}); "
            f"expected keys '{split}_images' and '{split}_labels'")


def npz_image_size(path: str | os.PathLike, split: str = "train") -> int | None:
    """The tile size (px) of one split of an npz, read from the array header only (a 224 px file is 13 GB);
    None when it cannot be told (no such split, not square, not an npz: :func:`load_npz` then says why)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{split}_images.npy") as member:
            major, _ = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape = read_header(member)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return int(shape[1]) if len(shape) >= 3 and shape[1] == shape[2] else None


def check_npz_size(path: str | os.PathLike, split: str, size: int) -> None:
    """``DataUnavailableError`` when ``path`` holds tiles of another size than ``size`` px."""
    found = npz_image_size(path, split)
    if found is not None and found != size:
        raise DataUnavailableError(
            f"{path} holds {found} px tiles, but {size} px tiles are needed: give {size} px data (--data medmnist "
            f"downloads PathMNIST at {size} px; medmnist keeps it as {medmnist_file_name(size)}), or work at "
            f"{found} px with this file (training scripts: --size {found})")


def medmnist_file_name(size: int) -> str:
    """medmnist's npz for PathMNIST at ``size`` px (``pathmnist.npz`` is the 28 px one)."""
    return "pathmnist.npz" if size == 28 else f"pathmnist_{size}.npz"


def load_medmnist(split: str = "train", size: int = 28, root: str | os.PathLike | None = None,
                  download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """PathMNIST from medmnist (downloads on first use when there is a network)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size}")
    root = Path(root or _settings().medmnist_root)
    root.mkdir(parents=True, exist_ok=True)
    import medmnist

    dataset = medmnist.PathMNIST(split=split, size=size, root=str(root), download=download)
    return _check(np.asarray(dataset.imgs), np.asarray(dataset.labels).reshape(-1).astype(np.int64),
                  f"medmnist PathMNIST/{split}/{size}")


def load_pathmnist(split: str = "train", size: int = 28, data: str | os.PathLike | None = None,
                   download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One split of PathMNIST at ``size`` px from the first source that works.

    ``data`` (or the ``PATHSYNTH_DATA`` env var) names a local npz (its tiles must be ``size`` px);
    ``data="medmnist"`` or no file at all means medmnist, which downloads the official files. When nothing
    works the single error message names both options.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    source = data if data is not None else _settings().data
    if source and str(source) != "medmnist":
        return load_npz(source, split, size)
    try:
        return load_medmnist(split, size, download=download)
    except Exception as error:  # network failures surface as many exception types
        raise DataUnavailableError(
            f"PathMNIST '{split}' ({size}px) is not available: medmnist could not load it "
            f"({type(error).__name__}: {_first_line(error)}). "
            f"Either connect to the internet so medmnist can download it, or pass a local npz in "
            f"medmnist layout with --data PATH or the env var {DATA_ENV_VAR}=PATH."
        ) from None


def load_domain(domain, split: str = "train", data: str | os.PathLike | None = None,
                download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One split of a domain's data (:mod:`pathsynth.domains`) at its shipped size, as uint8 ``(N, H, W, 3)``
    (greyscale films repeated into 3 channels, display-ready) and labels.

    ``data`` (or the domain's setting, e.g. ``$PATHSYNTH_DATA_PNEUMONIAMNIST``) names a local npz in medmnist
    layout; ``"medmnist"`` or nothing means medmnist's cache, downloaded on first use with a network.
    """
    from .settings import data_for

    if domain.flag == "pathmnist":
        return load_pathmnist(split, domain.size, data, download)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    source = data if data is not None else data_for(_settings(), domain.flag)
    if source and str(source) != "medmnist":
        return load_npz(source, split, domain.size, domain.num_classes)
    try:
        import medmnist
        from medmnist import INFO

        root = Path(_settings().medmnist_root)
        root.mkdir(parents=True, exist_ok=True)
        dataset = getattr(medmnist, INFO[domain.flag]["python_class"])(split=split, size=domain.size,
                                                                        root=str(root), download=download)
        return _check(np.asarray(dataset.imgs), np.asarray(dataset.labels).reshape(-1).astype(np.int64),
                      f"medmnist {domain.flag}/{split}", domain.num_classes)
    except Exception as error:  # network failures surface as many exception types
        raise DataUnavailableError(
            f"{domain.name} data ({domain.flag} '{split}') is not available: medmnist could not load it "
            f"({type(error).__name__}: {_first_line(error)}). Connect to the internet so medmnist can download "
            f"it, or pass a local npz in medmnist layout with --data PATH or {domain.data_env}=PATH.") from None


def download_pathmnist(size: int = 28, root: str | os.PathLike | None = None) -> Path:
    """medmnist's PathMNIST file of ``size`` px in ``root`` (default ``$PATHSYNTH_MEDMNIST_ROOT``), downloaded once
    with medmnist's progress bar; ``DataUnavailableError`` saying why when it cannot be (no network, say)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size}")
    root = Path(root or _settings().medmnist_root).expanduser()
    target = root / medmnist_file_name(size)
    if npz_image_size(target, "test") == size:  # medmnist's files hold every split
        return target
    try:
        load_medmnist("test", size, root, download=True)
    except Exception as error:  # network failures surface as many exception types
        raise DataUnavailableError(f"could not download PathMNIST ({size} px, about {MEDMNIST_SIZE_MB[size]} MB) "
                                   f"to {root}: {_first_line(error)}") from None
    return target


def _first_line(error: Exception) -> str:
    """An exception's first non-empty line (medmnist's start with a newline), or its type's name."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def no_real_tiles_message(size: int = 28) -> str:
    """One line: why real tiles are off and how to turn them on."""
    return (f"Real tiles are off: no PathMNIST file of {size} px tiles on this machine. Run `pathsynth data download` "
            f"(about {MEDMNIST_SIZE_MB.get(size, '?')} MB, once) or set {DATA_ENV_VAR} to an npz in medmnist's layout, "
            f"then restart the app.")


def load_npz_head(path: str | os.PathLike, count: int, split: str = "train",
                  size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` images and labels of one split of an npz (all of them when it has fewer), reading only
    those images' bytes: medmnist's 224 px PathMNIST file holds 13 GB of them. Refusals as in :func:`load_npz`."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise DataUnavailableError(f"data file not found: {path}")
    if size is not None:
        check_npz_size(path, split, size)
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            if not {f"{split}_images.npy", f"{split}_labels.npy"} <= members:
                raise DataUnavailableError(_missing_split(path, split, {m.removesuffix(".npy") for m in members}))
            images = _npy_head(archive, f"{split}_images.npy", count)
            labels = _npy_head(archive, f"{split}_labels.npy", count).reshape(-1).astype(np.int64)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataUnavailableError(f"cannot read {path} as an npz archive: {error}") from error
    return _check(images, labels, str(path))


def _npy_header(handle, member: str) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of the ``.npy`` open in ``handle``, left at its first data byte; only C-ordered numeric
    arrays, whose rows can be read in part."""
    major, _ = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(handle)
    if fortran_order or dtype.hasobject or not shape:
        raise ValueError(f"{member}: only C-ordered numeric arrays can be read in part")
    return shape, dtype


def _npy_head(archive, member: str, count: int) -> np.ndarray:
    """The first ``count`` rows of an ``.npy`` inside a zip, streamed (an npz member cannot be memory-mapped)."""
    with archive.open(member) as handle:
        shape, dtype = _npy_header(handle, member)
        rows = min(count, shape[0])
        data = handle.read(rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
        return np.frombuffer(data, dtype).reshape(rows, *shape[1:]).copy()


def local_pathmnist_file(size: int, data: str | os.PathLike | None = None,
                         medmnist_root: str | os.PathLike | None = None) -> Path:
    """An npz of PathMNIST tiles of ``size`` px already on this machine (nothing is downloaded): ``data`` when it
    names a file of that size, else medmnist's file for ``size`` in ``medmnist_root``; ``DataUnavailableError``
    saying what was looked for when there is neither."""
    tried = []
    if data and str(data) != "medmnist":
        found = npz_image_size(data) if Path(data).is_file() else None
        if found == size:
            return Path(data)
        tried.append(f"{data} ({f'{found} px tiles' if found else 'not a readable npz'})")
    cached = Path(medmnist_root or _settings().medmnist_root).expanduser() / medmnist_file_name(size)
    if npz_image_size(cached) == size:
        return cached
    tried.append(f"{cached} (not there)")
    raise DataUnavailableError(f"no local PathMNIST file of {size} px tiles: tried {'; '.join(tried)}")


def display_split(path: str | os.PathLike) -> str:
    """The split of an npz the app shows real tiles from: its test split, else val, else train."""
    import zipfile

    if not Path(path).is_file():
        raise DataUnavailableError(f"data file not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
    except (OSError, zipfile.BadZipFile) as error:
        raise DataUnavailableError(f"cannot read {path} as an npz archive: {error}") from error
    for split in DISPLAY_SPLITS:
        if {f"{split}_images.npy", f"{split}_labels.npy"} <= members:
            return split
    raise DataUnavailableError(f"{path} has none of the splits {', '.join(DISPLAY_SPLITS)}")


def load_display_tiles(path: str | os.PathLike, size: int | None = None,
                       count: int = MAX_DISPLAY_TILES) -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels, split): at most ``count`` tiles of :func:`display_split`'s split in its tissue mix
    (seeded, in file order), reading only those tiles' bytes (a 224 px test split is 1 GB)."""
    import zipfile

    split = display_split(path)
    if size is not None:
        check_npz_size(path, split, size)
    try:
        with zipfile.ZipFile(path) as archive:
            labels = _npy_head(archive, f"{split}_labels.npy", np.iinfo(np.int64).max).reshape(-1).astype(np.int64)
            picked = stratified_subset(labels, count)
            images = _npy_rows(archive, f"{split}_images.npy", picked)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataUnavailableError(f"cannot read {path} as an npz archive: {error}") from error
    images, labels = _check(images, labels[picked], str(path))
    return images, labels, split


def data_source_name(data: str | os.PathLike | None) -> str:
    """What training data was used, for model cards and metadata: the npz's file name or "medmnist"."""
    data = data if data is not None else (_settings().data or "medmnist")
    return "medmnist" if str(data) == "medmnist" else Path(data).name


def local_display_tiles(size: int = 28) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`load_display_tiles` of this machine's PathMNIST file of ``size`` px (``$PATHSYNTH_DATA``, else
    medmnist's file; nothing is downloaded), or None when there is none."""
    settings = _settings()
    try:
        images, labels, _ = load_display_tiles(local_pathmnist_file(size, settings.data, settings.medmnist_root), size)
    except DataUnavailableError:
        return None
    return images, labels


def _npy_rows(archive, member: str, rows: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Rows ``rows`` (sorted) of an ``.npy`` inside a zip, streamed in chunks up to the last one needed."""
    with archive.open(member) as handle:
        shape, dtype = _npy_header(handle, member)
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        out, start = [], 0
        end = int(rows[-1]) + 1 if len(rows) else 0
        while start < end:
            stop = min(start + chunk, end)
            block = np.frombuffer(handle.read((stop - start) * row_bytes), dtype).reshape(stop - start, *shape[1:])
            wanted = rows[(rows >= start) & (rows < stop)] - start
            out.append(block[wanted].copy())
            start = stop
        return np.concatenate(out) if out else np.zeros((0, *shape[1:]), dtype)


def _settings():
    from .settings import Settings

    return Settings.from_env()


def _check(images: np.ndarray, labels: np.ndarray, source: str,
           num_classes: int = NUM_TISSUES) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim == 3:  # grayscale -> RGB, so every consumer sees (N, H, W, 3) (films too: display-ready)
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataUnavailableError(f"{source}: expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise DataUnavailableError(f"{source}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataUnavailableError(f"{source}: labels must be 0-{num_classes - 1}")
    return images, labels


# ---------------------------------------------------------------------------------------------- folds

def stratified_folds(labels: np.ndarray, n_folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic stratified K-fold ``(train_idx, val_idx)`` pairs for a file with only a train split."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(va)) for tr, va in splitter.split(np.zeros(len(labels)), labels)]


def train_val_split(labels: np.ndarray, fold: int = 0, n_folds: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The project's validation fold: fold ``fold`` of a seeded stratified ``n_folds`` split."""
    return stratified_folds(labels, n_folds, seed)[fold]


def stratified_subset(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``count`` items with ``labels``' tissue mix (all of them when there are fewer)."""
    labels = np.asarray(labels).reshape(-1)
    if count >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    picked, _ = train_test_split(np.arange(len(labels)), train_size=count, stratify=stratify, random_state=seed)
    return np.sort(picked)


def load_training_data(data: str | os.PathLike | None, size: int = 28, fold: int = 0, n_folds: int = 5,
                       seed: int = 0, domain=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train/val arrays of ``size`` px tiles for a training script.

    ``data``: an npz, ``"medmnist"``, or None for ``$PATHSYNTH_DATA`` (else medmnist). A source with an official
    val split (medmnist, or an npz holding ``val_*``) uses it; a train-only npz (like the 800-tile sample the
    shipped models were trained on) is split into stratified folds and fold ``fold`` is held out. Another
    ``domain`` (:mod:`pathsynth.domains`) reads its own data (see :func:`load_domain`) with its official splits.
    """
    if domain is not None and domain.flag != "pathmnist":
        return {split: load_domain(domain, split, data) for split in ("train", "val")}  # official splits
    data = data if data is not None else (_settings().data or "medmnist")
    images, labels = load_pathmnist("train", size, data)
    if str(data) == "medmnist":
        return {"train": (images, labels), "val": load_pathmnist("val", size, data)}
    with np.load(data) as archive:
        has_val = "val_images" in archive.files
    if has_val:
        return {"train": (images, labels), "val": load_npz(data, "val", size)}
    train_idx, val_idx = train_val_split(labels, fold, n_folds, seed)
    return {"train": (images[train_idx], labels[train_idx]), "val": (images[val_idx], labels[val_idx])}


# -------------------------------------------------------------------------------------- augmentations

def dihedral(images: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 symmetries of the square (k=0 identity): rotate by 90°·(k % 4), then flip if k >= 4."""
    out = torch.rot90(images, k % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if k >= 4 else out


class RandomDihedral(nn.Module):
    """A random one of the 8 dihedral transforms per image: a tissue section has no 'up'."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim == 3:
            return dihedral(images, int(torch.randint(8, ())))
        choice = torch.randint(8, (images.shape[0],))
        out = images.clone()
        for k in range(1, 8):
            picked = choice == k
            if picked.any():
                out[picked] = dihedral(images[picked], k)
        return out


# Ruifrok & Johnston stain vectors: skimage's own matrices, so results match skimage.color.rgb2hed / hed2rgb.
from skimage.color.colorconv import hed_from_rgb as _hed_from_rgb, rgb_from_hed as _rgb_from_hed  # noqa: E402

_RGB_FROM_HED = torch.tensor(_rgb_from_hed, dtype=torch.float32)
_HED_FROM_RGB = torch.tensor(_hed_from_rgb, dtype=torch.float32)
_LOG_ADJUST = float(np.log(1e-6))


def rgb_to_hed(images: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> haematoxylin/eosin/DAB stain densities (skimage's rgb2hed, in torch)."""
    rgb = images.clamp_min(1e-6).movedim(-3, -1)
    stains = (torch.log(rgb) / _LOG_ADJUST) @ _HED_FROM_RGB.to(images)
    return stains.clamp_min(0).movedim(-1, -3)


def hed_to_rgb(stains: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hed` (skimage's hed2rgb)."""
    log_rgb = -(stains.movedim(-3, -1) * -_LOG_ADJUST) @ _RGB_FROM_HED.to(stains)
    return torch.exp(log_rgb).clamp(0, 1).movedim(-1, -3)


class RandomHEDJitter(nn.Module):
    """Stain jitter: scale and shift each image's H, E and D densities (Tellez et al. 2018).

    Mimics the lab-to-lab variation of H&E staining without changing morphology.
    """

    def __init__(self, sigma: float = 0.05, bias: float = 0.05):
        super().__init__()
        self.sigma, self.bias = sigma, bias

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batched = images.ndim == 4
        x = images if batched else images[None]
        n = x.shape[0]
        alpha = 1 + (torch.rand(n, 3, 1, 1) * 2 - 1) * self.sigma
        # ``bias`` is in optical-density units (as in Tellez et al.); skimage's HED scale divides OD by -log(1e-6).
        beta = (torch.rand(n, 3, 1, 1) * 2 - 1) * self.bias / -_LOG_ADJUST
        out = hed_to_rgb(rgb_to_hed(x) * alpha.to(x) + beta.to(x))
        return out if batched else out[0]


class RandomScale(nn.Module):
    """Scale jitter for a batch: zoom every image by one log-uniform factor in ``[low, high]``.

    Other labs scan at other magnifications, and a caller's stated microns-per-pixel is rounded to whole pixels.
    Zooming in crops the centre back to the input size; zooming out keeps the smaller image (the network is
    convolutional with global pooling, so it accepts it) or reflect-pads it back to the input size, each half
    of the time, so both ways :mod:`pathsynth.stain` can present a physically rescaled tile are seen in training.
    """

    def __init__(self, low: float = 0.65, high: float = 1.5, p: float = 0.5):
        super().__init__()
        self.low, self.high, self.p = low, high, p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or float(torch.rand(())) >= self.p:
            return images
        size = images.shape[-1]
        factor = float(np.exp(np.random.uniform(np.log(self.low), np.log(self.high))))
        new_size = max(8, round(size * factor))
        if new_size == size:
            return images
        zoomed = torch.nn.functional.interpolate(images, size=(new_size, new_size), mode="bilinear",
                                                 antialias=new_size < size, align_corners=False).clamp(0, 1)
        if new_size > size:
            top, left = (int(torch.randint(new_size - size + 1, ())) for _ in range(2))
            return zoomed[..., top:top + size, left:left + size]
        if float(torch.rand(())) < 0.5:
            return zoomed
        return reflect_pad_to(zoomed, size)


def reflect_pad_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror-pad a (B, C, h, w) batch to ``size`` x ``size`` (repeatedly when the image is less than half of it)."""
    while images.shape[-1] < size or images.shape[-2] < size:
        height, width = images.shape[-2:]
        pad_h, pad_w = min(size - height, height - 1), min(size - width, width - 1)
        pad_h, pad_w = max(pad_h, 0), max(pad_w, 0)
        images = torch.nn.functional.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2),
                                         mode="reflect")
    return images


def train_augmentation(stain_sigma: float = 0.05, stain_bias: float = 0.05, colour_jitter: float = 0.0) -> nn.Module:
    """The histology augmentation every training script uses: dihedral symmetry + stain jitter.

    ``colour_jitter`` > 0 adds brightness/contrast/saturation jitter of that strength (and a fifth of it in hue),
    the "HSV" half of Tellez et al.'s best stain augmentation, for robustness to other labs' scanners.
    """
    from torchvision import transforms

    steps = [RandomDihedral(), RandomHEDJitter(stain_sigma, stain_bias)]
    if colour_jitter > 0:
        steps.append(PerImage(transforms.ColorJitter(colour_jitter, colour_jitter, colour_jitter, colour_jitter / 5)))
    return transforms.Compose(steps)


class PerImage(nn.Module):
    """Apply a torchvision transform to each image of a batch separately (they draw one setting per call)."""

    def __init__(self, transform: nn.Module):
        super().__init__()
        self.transform = transform

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim == 3:
            return self.transform(images)
        return torch.stack([self.transform(image) for image in images])
