"""Generator backends behind one interface.

Every backend has a ``name`` and ``generate(tissues, seeds) -> uint8 (N, 28, 28, 3)``, where image *i*
depends only on ``tissues[i]`` and ``seeds[i]``. The verify loop, CLI and app take any of them.
Pick one with ``PATHSYNTH_BACKEND=embedded|sd-lora`` (default: embedded, runs on a CPU).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from .._loading import MODEL_LOADING_LOCK
from ..data import ASSETS_DIR

DEFAULT_GENERATOR_DIR = ASSETS_DIR / "models" / "generator"
GENERATOR_REBUILD_COMMAND = "python train/generator.py --export_dir assets/models/generator"
BACKENDS = ("embedded", "sd-lora")


class Generator(Protocol):
    name: str

    def generate(self, tissues: Sequence[int], seeds: Sequence[int]) -> np.ndarray: ...


def load_embedded_generator(path: str | Path | None = None, **kwargs):
    """The embedded pipeline at ``path`` (default: the shipped one), with a clear error for broken files."""
    import torch

    from ..classifier import ModelFileError
    from .embedded import EmbeddedGenerator

    path = Path(path or os.environ.get("PATHSYNTH_GENERATOR") or DEFAULT_GENERATOR_DIR)
    for required in (path / "model_index.json", path / "unet" / "config.json",
                     path / "unet" / "diffusion_pytorch_model.safetensors", path / "scheduler" / "scheduler_config.json"):
        if not required.is_file():
            raise ModelFileError(f"generator file missing: {required}. Rebuild it with: {GENERATOR_REBUILD_COMMAND}")
    try:
        from .embedded import PathSynthPipeline

        # Weights ship in fp16 to keep the repo small; CPUs run fp32 faster, so upcast on load.
        with MODEL_LOADING_LOCK:
            pipeline = PathSynthPipeline.from_pretrained(str(path), torch_dtype=torch.float32)
    except Exception as error:
        raise ModelFileError(f"generator files in {path} are unreadable or do not match the model "
                             f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                             f"Rebuild them with: {GENERATOR_REBUILD_COMMAND}") from None
    return EmbeddedGenerator(pipeline, **kwargs)


def get_generator(backend: str | None = None) -> Generator:
    """The generator backend named by ``backend`` or ``$PATHSYNTH_BACKEND``."""
    backend = (backend or os.environ.get("PATHSYNTH_BACKEND") or "embedded").strip().lower()
    if backend == "embedded":
        return load_embedded_generator()
    if backend in ("sd-lora", "sd_lora", "sdlora"):
        from .sd_lora import SDLoraGenerator

        return SDLoraGenerator.from_env()
    raise ValueError(f"unknown generator backend {backend!r}; choose one of {', '.join(BACKENDS)}")
