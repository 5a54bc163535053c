"""Generator backends behind one interface (:class:`~pathsynth.generators.base.Generator`).

Every backend has a ``name`` and ``generate(tissues, seeds) -> uint8 (N, S, S, 3)`` (S = its ``output_size``: 28 px
for the shipped models), where image *i* depends only on ``tissues[i]`` and ``seeds[i]``; the base class does the
seeding, batching and conversion and a backend only renders. Pick one with ``PATHSYNTH_BACKEND=embedded|sd-lora`` (default: embedded, runs on a CPU).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelFileError
from ..settings import DEFAULT_GENERATOR_DIR, Settings
from .base import MAX_SEED, OUTPUT_SIZE, Generator

__all__ = ["BACKENDS", "DEFAULT_GENERATOR_DIR", "GENERATOR_REBUILD_COMMAND", "Generator", "MAX_SEED", "OUTPUT_SIZE",
           "get_generator", "load_embedded_generator"]

GENERATOR_REBUILD_COMMAND = (
    "python train/generator.py --export_dir assets/models/generator && python train/discriminator.py --export_dir assets/models/generator")
BACKENDS = ("embedded", "sd-lora")


def load_embedded_generator(path: str | Path | None = None, **kwargs):
    """The embedded pipeline at ``path`` (default: ``$PATHSYNTH_GENERATOR`` or the shipped one), with a clear
    error for broken files."""
    from .embedded import EmbeddedGenerator, load_pipeline

    path = Path(path or Settings.from_env().generator_dir)
    for required in (path / "model_index.json", path / "unet" / "config.json",
                     path / "unet" / "diffusion_pytorch_model.safetensors", path / "scheduler" / "scheduler_config.json"):
        if not required.is_file():
            raise ModelFileError(f"generator file missing: {required}. Rebuild it with: {GENERATOR_REBUILD_COMMAND}")
    try:
        pipeline = load_pipeline(str(path))
    except Exception as error:
        raise ModelFileError(f"generator files in {path} are unreadable or do not match the model "
                             f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                             f"Rebuild them with: {GENERATOR_REBUILD_COMMAND}") from None
    return EmbeddedGenerator(pipeline, **kwargs)


def get_generator(backend: str | None = None, settings: Settings | None = None) -> Generator:
    """The generator backend named by ``backend`` (default: the settings', i.e. ``$PATHSYNTH_BACKEND``)."""
    settings = settings or Settings.from_env()
    backend = (backend or settings.backend).strip().lower()
    if backend == "embedded":
        return load_embedded_generator(settings.generator_dir).to(settings.device)
    if backend in ("sd-lora", "sd_lora", "sdlora"):
        from .sd_lora import SDLoraGenerator

        return SDLoraGenerator.from_settings(settings.sd)
    raise ValueError(f"unknown generator backend {backend!r}; choose one of {', '.join(BACKENDS)}")
