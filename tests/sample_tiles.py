"""Tiles for tests, with no dataset in the repository.

``real_tiles()``: the train split of ``$PATHSYNTH_DATA`` (CI sets it to the 800-tile PathMNIST sample in
``../shared/data``); the test is skipped without it, since it measures something only real tiles can show.
``sample_tiles()``: labelled 28 px tissue tiles for tests that need tiles but no real-data figure: the real ones
when there are, else a few per tissue drawn by the shipped generator (seeded), else random tiles.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from pathsynth.tissues import NUM_TISSUES

ROOT = Path(__file__).resolve().parent.parent
GENERATED_PER_TISSUE = 10


def real_data_file() -> Path | None:
    """``$PATHSYNTH_DATA`` when it names a file."""
    value = os.environ.get("PATHSYNTH_DATA", "").strip()
    return Path(value) if value and Path(value).is_file() else None


needs_real_data = pytest.mark.skipif(real_data_file() is None,
                                     reason="needs real tiles: set PATHSYNTH_DATA to a PathMNIST npz (CI does)")


def real_tiles() -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of ``$PATHSYNTH_DATA``'s train split; skips the calling test without it."""
    path = real_data_file()
    if path is None:
        pytest.skip("needs real tiles: set PATHSYNTH_DATA to a PathMNIST npz (CI does)")
    return _load(str(path))


@lru_cache(maxsize=None)
def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    from pathsynth.data import load_npz

    return load_npz(path, "train")


def sample_npz(path: Path) -> Path:
    """:func:`sample_tiles` saved as a train-only npz in medmnist's layout at ``path`` (a user's ``PATHSYNTH_DATA``)."""
    images, labels = sample_tiles()
    np.savez(path, train_images=images, train_labels=labels[:, None])
    return path


@lru_cache(maxsize=1)
def shared_sample_npz() -> Path:
    """One :func:`sample_npz` for the whole test process: the ``--data`` of training-script tests."""
    import tempfile

    return sample_npz(Path(tempfile.mkdtemp(prefix="pathsynth-tiles-")) / "tiles.npz")


def sample_tiles() -> tuple[np.ndarray, np.ndarray]:
    """Labelled 28 px tiles: real ones when ``$PATHSYNTH_DATA`` names a file, else generated (see module doc)."""
    path = real_data_file()
    return _load(str(path)) if path is not None else _generated()


@lru_cache(maxsize=1)
def _generated() -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(NUM_TISSUES), GENERATED_PER_TISSUE)
    generator_dir = ROOT / "assets" / "models" / "generator"
    if not (generator_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file():
        return np.random.default_rng(0).integers(0, 256, (len(labels), 28, 28, 3), dtype=np.uint8), labels
    from pathsynth.generators import load_embedded_generator

    generator = load_embedded_generator(generator_dir)
    images = np.asarray(generator.generate(labels.tolist(), list(range(len(labels)))))
    return images, labels.astype(np.int64)
