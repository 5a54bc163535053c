"""The paper's generator: Stable Diffusion v1.x with a LoRA fine-tuned on PathMNIST (needs a GPU to be quick).

The LoRA comes from ``train/sd_lora.py``; this backend loads a base model (hub id or local directory) plus
those weights and prompts it with the same caption the LoRA was trained on. Full-resolution samples are
resized down to 28 px with antialiasing so the verify loop's classifier sees PathMNIST-sized tiles.

    PATHSYNTH_BACKEND=sd-lora PATHSYNTH_SD_MODEL=stable-diffusion-v1-5/stable-diffusion-v1-5 \
    PATHSYNTH_LORA=runs/sd_lora pathsynth ...
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch

from ..settings import DEFAULT_SD_MODEL, Settings, StableDiffusionSettings
from ..tissues import get_tissue
from .base import OUTPUT_SIZE, Generator  # noqa: F401  (OUTPUT_SIZE: re-exported, it was defined here)

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # what StableDiffusionPipeline.save_lora_weights writes
TRAINING_SUMMARY_NAME = "training_summary.json"  # written next to the LoRA by train/sd_lora.py
DEFAULT_RESOLUTION = 224  # the paper trains and samples at 224 px
DEFAULT_GUIDANCE = 7.5
DEFAULT_STEPS = 25

CAPTION_TEMPLATE = "a histopathological image of an area with {label}"
# Paraphrases seen during training (with catalogue names and synonyms) so the frozen text encoder's wording
# is not tied to one sentence; generation always uses CAPTION_TEMPLATE with the medmnist label.
PARAPHRASE_TEMPLATES = (
    "a histopathological image of an area with {name}",
    "an H&E stained histology image of {name}",
    "a microscopy tile of colorectal tissue showing {name}",
    "histopathology of {name}, hematoxylin and eosin stain",
)

SETUP_HINT = (
    "Set PATHSYNTH_SD_MODEL to a Stable Diffusion v1.x model on this machine (a local diffusers directory, or a "
    f"hub id already in the Hugging Face cache, such as {DEFAULT_SD_MODEL} after one run with a network) and "
    f"PATHSYNTH_LORA to the directory train/sd_lora.py wrote (it holds {LORA_WEIGHTS_NAME}); see docs/GPU.md"
)


def caption(tissue: int | str) -> str:
    """The prompt for one tissue, e.g. 'a histopathological image of an area with smooth muscle'."""
    return CAPTION_TEMPLATE.format(label=get_tissue(tissue).label)


def caption_variants(tissue: int | str) -> list[str]:
    """Training captions for one tissue: :func:`caption` first, then paraphrases over catalogue names."""
    entry = get_tissue(tissue)
    names = [entry.label, entry.display_name.lower(), *entry.synonyms]
    captions = [caption(entry.index)]
    for template in PARAPHRASE_TEMPLATES:
        for name in names:
            text = template.format(name=name)
            if text not in captions:
                captions.append(text)
    return captions


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else 'no detail'}"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class SDLoraGenerator(Generator):
    """The generator-backend interface over a Stable Diffusion pipeline with the PathSynth LoRA.

    ``generate(tissues, seeds)`` returns uint8 ``(N, 28, 28, 3)``: full-resolution samples resized with
    antialiasing (no aliasing moiré). One call at a time uses the pipeline (its scheduler keeps per-call state).

    Args:
        pipeline: a ``StableDiffusionPipeline`` (LoRA already loaded, or none for the base model).
        resolution: sampling resolution in pixels (multiple of 8); use the one the LoRA was trained at.
        guidance_scale, num_inference_steps: classifier-free guidance weight and DPM-Solver++ steps.
        batch_size: images per pipeline call (GPU memory).
    """

    name = "sd-lora"

    def __init__(self, pipeline, resolution: int = DEFAULT_RESOLUTION, guidance_scale: float = DEFAULT_GUIDANCE,
                 num_inference_steps: int = DEFAULT_STEPS, batch_size: int = 8):
        if resolution % 8 or resolution < 8:
            raise ValueError(f"resolution must be a positive multiple of 8 (the VAE downsamples by 8), got {resolution}")
        if num_inference_steps < 1 or batch_size < 1:
            raise ValueError("num_inference_steps and batch_size must be at least 1")
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        self.resolution = resolution
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, base_model: str | Path = DEFAULT_SD_MODEL, lora: str | Path | None = None,
                        device: str | None = None, dtype: torch.dtype | None = None,
                        local_files_only: bool = False, resolution: int | None = None, **kwargs) -> "SDLoraGenerator":
        """Load ``base_model`` (hub id or local dir) and the LoRA at ``lora`` (dir, .safetensors file or hub id).

        ``lora=None`` samples from the base model (a baseline for ``pathsynth evaluate generator``).
        ``resolution=None`` uses the resolution recorded by ``train/sd_lora.py`` next to the LoRA (else 224).
        Raises a one-line ``RuntimeError`` that says what to set when a model cannot be loaded.
        """
        import diffusers
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
        from packaging.version import Version

        device = device or default_device()
        dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
        try:
            # Histology tiles trip SD's NSFW filter (it blacks them out), and the verify loop checks images anyway.
            dtype_key = "dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"  # renamed
            pipeline = StableDiffusionPipeline.from_pretrained(
                str(base_model), safety_checker=None, requires_safety_checker=False,
                local_files_only=local_files_only, **{dtype_key: dtype},
            )
        except Exception as error:  # HF raises OSError, HFValidationError, LocalEntryNotFoundError, HTTP errors...
            raise RuntimeError(f"Stable Diffusion base model {str(base_model)!r} could not be loaded "
                               f"({_first_line(error)}). {SETUP_HINT}.") from None
        pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)  # good in ~25 steps

        if lora is not None:
            lora_path = Path(lora)
            try:
                if lora_path.is_file():
                    pipeline.load_lora_weights(str(lora_path.parent), weight_name=lora_path.name, adapter_name="pathsynth")
                elif lora_path.is_dir() and not (lora_path / LORA_WEIGHTS_NAME).is_file():
                    raise FileNotFoundError(f"{lora_path} has no {LORA_WEIGHTS_NAME}")
                else:  # a local directory, or a hub id of a LoRA repo
                    pipeline.load_lora_weights(str(lora), adapter_name="pathsynth", local_files_only=local_files_only)
            except Exception as error:
                where = "" if lora_path.exists() else "no such file or directory, and as a hub id: "
                raise RuntimeError(f"LoRA weights {str(lora)!r} could not be loaded ({where}{_first_line(error)}). "
                                   f"{SETUP_HINT}.") from None
            if resolution is None:
                summary = (lora_path if lora_path.is_dir() else lora_path.parent) / TRAINING_SUMMARY_NAME
                if summary.is_file():
                    resolution = json.loads(summary.read_text()).get("resolution")
        return cls(pipeline.to(device), resolution=resolution or DEFAULT_RESOLUTION, **kwargs)

    @classmethod
    def from_settings(cls, sd: StableDiffusionSettings) -> "SDLoraGenerator":
        """The backend that ``sd`` (``PATHSYNTH_SD_MODEL``, ``PATHSYNTH_LORA``, ``PATHSYNTH_SD_*``) describes."""
        if not sd.lora:
            raise RuntimeError(f"PATHSYNTH_LORA is not set: the sd-lora backend needs the LoRA trained by "
                               f"train/sd_lora.py (or PATHSYNTH_LORA=none for the plain base model). {SETUP_HINT}.")
        options = {key: value for key, value in (("num_inference_steps", sd.steps), ("guidance_scale", sd.guidance),
                                                 ("resolution", sd.resolution)) if value is not None}
        return cls.from_pretrained(sd.model, None if sd.lora.lower() == "none" else sd.lora, device=sd.device,
                                   **options)

    @classmethod
    def from_env(cls) -> "SDLoraGenerator":
        """The backend configured by the environment (what ``PATHSYNTH_BACKEND=sd-lora`` uses)."""
        try:
            sd = Settings.from_env().sd
        except ValueError as error:
            raise RuntimeError(str(error)) from None
        return cls.from_settings(sd)

    def _render(self, tissues: list[int], generators: list[torch.Generator], guidance_scale: float | None = None,
                num_inference_steps: int | None = None) -> torch.Tensor:
        with self._lock:
            return self.pipeline(
                prompt=[caption(t) for t in tissues], height=self.resolution, width=self.resolution,
                num_inference_steps=num_inference_steps or self.num_inference_steps,
                guidance_scale=self.guidance_scale if guidance_scale is None else guidance_scale,
                generator=generators, output_type="pt",
            ).images
