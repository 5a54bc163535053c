"""The paper's generator: Stable Diffusion v1.x with a LoRA fine-tuned on PathMNIST (needs a GPU to be quick).

The LoRA comes from ``train/sd_lora.py``; this backend loads a base model (hub id or local directory) plus
what that script exported, and prompts it the way the model was trained. Full-resolution samples are
resized down to 28 px with antialiasing so the verify loop's classifier sees PathMNIST-sized tiles. A run on
another domain (``--domain pneumoniamnist``: chest films) is prompted with that domain's captions and draws its
classes, greyscale for a greyscale domain.

    PATHSYNTH_BACKEND=sd-lora PATHSYNTH_SD_MODEL=stable-diffusion-v1-5/stable-diffusion-v1-5 \
    PATHSYNTH_LORA=runs/sd_lora pathsynth ...

``PATHSYNTH_LORA`` is the training script's output directory, whatever it trained (see
:mod:`pathsynth.generators.sd_toolkit`): a LoRA (``pytorch_lora_weights.safetensors``), a fully fine-tuned
U-Net (``unet/``) and/or textual-inversion tokens (``learned_embeds.safetensors``). The domain, prompt style and
prompt embedding recorded in its ``training_summary.json`` are used for sampling too (histology when a summary
predates domains).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from ..domains import DEFAULT_DOMAIN, Domain, get_domain
from ..settings import DEFAULT_SD_MODEL, Settings, StableDiffusionSettings
from .base import OUTPUT_SIZE, Generator  # noqa: F401  (OUTPUT_SIZE: re-exported, it was defined here)
from .sd_toolkit import (FULL_UNET_DIR, PROMPT_EMBEDDINGS, PROMPT_STYLES, TOKENS_WEIGHTS_NAME, class_token,
                         encode_prompts, load_class_tokens, visual_description)

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
# Chest films: "reported as" reads for an adjective label ("normal") and a noun ("pneumonia") alike; the
# paraphrases set the catalogue's names and synonyms ("clear lungs", "lobar consolidation") after a colon or comma
# so any phrase reads.
FILM_CAPTION_TEMPLATE = "a chest X-ray film reported as {label}"
FILM_PARAPHRASE_TEMPLATES = (
    "a chest X-ray film reported as {name}",
    "a frontal chest radiograph: {name}",
    "a paediatric chest X-ray, {name}",
    "chest X-ray findings: {name}",
)


@dataclass(frozen=True)
class PromptWording:
    """The words around a domain's class names in its captions (the names come from its catalogue)."""

    caption: str  # the sampling prompt: ``{label}`` is the medmnist label (or the class's learned token)
    paraphrases: tuple[str, ...]  # training variants: ``{name}`` is each catalogue name and synonym


PROMPT_WORDING = {
    "pathmnist": PromptWording(CAPTION_TEMPLATE, PARAPHRASE_TEMPLATES),
    "pneumoniamnist": PromptWording(FILM_CAPTION_TEMPLATE, FILM_PARAPHRASE_TEMPLATES),
}


def prompt_wording(domain: Domain | str | None = None) -> PromptWording:
    """The caption wording of a domain (histology by default); ``ValueError`` for a domain without one."""
    domain = get_domain(domain)
    if domain.flag not in PROMPT_WORDING:
        raise ValueError(f"no Stable Diffusion captions for {domain.name} ({domain.flag}) yet: add its wording to "
                         f"PROMPT_WORDING in {__name__}")
    return PROMPT_WORDING[domain.flag]


SETUP_HINT = (
    "Set PATHSYNTH_SD_MODEL to a Stable Diffusion v1.x model on this machine (a local diffusers directory, or a "
    f"hub id already in the Hugging Face cache, such as {DEFAULT_SD_MODEL} after one run with a network) and "
    f"PATHSYNTH_LORA to the directory train/sd_lora.py wrote (it holds {LORA_WEIGHTS_NAME}); see docs/GPU.md"
)


def caption(tissue: int | str, style: str = "caption", textual_inversion: bool = False,
            domain: Domain | str | None = None) -> str:
    """The prompt for one class of ``domain`` (histology by default), e.g. 'a histopathological image of an area
    with smooth muscle' or 'a chest X-ray film reported as pneumonia'.

    ``style="catalogue"`` appends the catalogue's visual description ('...: bright pink fibres in parallel
    bundles...'); ``textual_inversion`` names the class by its learned token ('<smooth-muscle>').
    """
    return caption_variants(tissue, style, textual_inversion, domain)[0]


def caption_variants(tissue: int | str, style: str = "caption", textual_inversion: bool = False,
                     domain: Domain | str | None = None) -> list[str]:
    """Training captions for one class of ``domain``: :func:`caption` first, then paraphrases over catalogue names.

    With textual inversion the token is the only name (it must carry the class); the catalogue style adds the
    visual description to every variant.
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {style!r}")
    domain, wording = get_domain(domain), prompt_wording(domain)
    entry = domain.get_class(tissue)
    names = [class_token(entry.index, domain)] if textual_inversion else \
        [entry.label, entry.display_name.lower(), *entry.synonyms]
    captions = [wording.caption.format(label=names[0])]
    for template in wording.paraphrases:
        for name in names:
            text = template.format(name=name)
            if text not in captions:
                captions.append(text)
    if style == "catalogue":
        captions = [f"{text}: {visual_description(entry.index, domain)}" for text in captions]
    return captions


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else 'no detail'}"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class SDLoraGenerator(Generator):
    """The generator-backend interface over a Stable Diffusion pipeline with the PathSynth LoRA.

    ``generate(classes, seeds)`` returns uint8 ``(N, 28, 28, 3)``: full-resolution samples resized with
    antialiasing (no aliasing moiré), of the classes of the run's domain (tissues, or findings on chest films,
    which come out grey in 3 channels like the films' data). One call at a time uses the pipeline (its scheduler
    keeps per-call state).

    Args:
        pipeline: a ``StableDiffusionPipeline`` (LoRA, U-Net and tokens already loaded, or the base model).
        resolution: sampling resolution in pixels (multiple of 8); use the one the LoRA was trained at.
        guidance_scale, num_inference_steps: classifier-free guidance weight and DPM-Solver++ steps.
        batch_size: images per pipeline call (GPU memory).
        prompt_style, prompt_embedding, textual_inversion: how prompts are written and encoded; use the
            training run's (``from_pretrained`` reads them from its summary).
        domain: the :mod:`pathsynth.domains` flag the run trained on: its captions and classes (histology by
            default).
    """

    name = "sd-lora"

    def __init__(self, pipeline, resolution: int = DEFAULT_RESOLUTION, guidance_scale: float = DEFAULT_GUIDANCE,
                 num_inference_steps: int = DEFAULT_STEPS, batch_size: int = 8, prompt_style: str = "caption",
                 prompt_embedding: str = "sequence", textual_inversion: bool = False,
                 domain: Domain | str = DEFAULT_DOMAIN):
        if resolution % 8 or resolution < 8:
            raise ValueError(f"resolution must be a positive multiple of 8 (the VAE downsamples by 8), got {resolution}")
        if num_inference_steps < 1 or batch_size < 1:
            raise ValueError("num_inference_steps and batch_size must be at least 1")
        if prompt_style not in PROMPT_STYLES or prompt_embedding not in PROMPT_EMBEDDINGS:
            raise ValueError(f"prompt_style must be one of {PROMPT_STYLES} and prompt_embedding one of "
                             f"{PROMPT_EMBEDDINGS}, got {prompt_style!r} and {prompt_embedding!r}")
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        self.resolution = resolution
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.batch_size = batch_size
        self.prompt_style = prompt_style
        self.prompt_embedding = prompt_embedding
        self.textual_inversion = textual_inversion
        self.domain = get_domain(domain)
        prompt_wording(self.domain)  # a domain without captions fails here, not at the first image
        self._lock = threading.Lock()

    def class_index(self, key: int | str) -> int:
        """A class of the run's domain (tissue or finding) by index or name."""
        return self.domain.class_index(key)

    def prompts(self, classes: list[int]) -> list[str]:
        """The training run's prompt for each class (its domain's captions, style and tokens)."""
        return [caption(c, self.prompt_style, self.textual_inversion, self.domain) for c in classes]

    @classmethod
    def from_pretrained(cls, base_model: str | Path = DEFAULT_SD_MODEL, lora: str | Path | None = None,
                        device: str | None = None, dtype: torch.dtype | None = None,
                        local_files_only: bool = False, resolution: int | None = None, **kwargs) -> "SDLoraGenerator":
        """Load ``base_model`` (hub id or local dir) and what ``train/sd_lora.py`` exported to ``lora``.

        ``lora`` is the training output directory (LoRA, full ``unet/`` and/or textual-inversion tokens), a LoRA
        .safetensors file, or a LoRA hub id; ``None`` samples from the base model (a baseline for
        ``pathsynth evaluate generator``). ``resolution=None`` and the domain and prompt options not given in
        ``kwargs`` are the ones recorded by the training script next to the weights (else 224 px, histology and
        the paper's prompts).
        Raises a one-line ``RuntimeError`` that says what to set when a model cannot be loaded.
        """
        from diffusers import DPMSolverMultistepScheduler

        device = device or default_device()
        dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
        lora_path = Path(lora) if lora is not None else None
        run_dir = lora_path if lora_path is not None and lora_path.is_dir() else None
        unet = _load_full_unet(run_dir, dtype) if run_dir and (run_dir / FULL_UNET_DIR).is_dir() else None
        pipeline = _load_base_pipeline(base_model, dtype, local_files_only, unet)
        pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)  # good in ~25 steps
        if lora_path is not None:
            kwargs["textual_inversion"] = _load_exports(pipeline, lora_path, local_files_only, unet is not None)
            summary = (lora_path if lora_path.is_dir() else lora_path.parent) / TRAINING_SUMMARY_NAME
            if summary.is_file():
                recorded = json.loads(summary.read_text())
                resolution = resolution or recorded.get("resolution")
                for key in ("prompt_style", "prompt_embedding", "domain"):
                    if key in recorded:
                        kwargs.setdefault(key, recorded[key])
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

    def prompt_embeddings(self, tissues: list[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(prompt, negative prompt) embeddings for a pooled ``prompt_embedding``; None for SD's per-token one."""
        if self.prompt_embedding == "sequence":
            return None
        encode = partial(encode_prompts, self.pipeline.tokenizer, self.pipeline.text_encoder,
                         mode=self.prompt_embedding)
        with torch.no_grad():  # the unconditional branch is pooled the same way as at training time
            return encode(self.prompts(tissues)), encode([""] * len(tissues))

    def _render(self, tissues: list[int], generators: list[torch.Generator], guidance_scale: float | None = None,
                num_inference_steps: int | None = None) -> torch.Tensor:
        with self._lock:
            embeddings = self.prompt_embeddings(tissues)
            prompts = dict(prompt=self.prompts(tissues)) if embeddings is None else \
                dict(prompt_embeds=embeddings[0], negative_prompt_embeds=embeddings[1])
            images = self.pipeline(
                **prompts, height=self.resolution, width=self.resolution,
                num_inference_steps=num_inference_steps or self.num_inference_steps,
                guidance_scale=self.guidance_scale if guidance_scale is None else guidance_scale,
                generator=generators, output_type="pt",
            ).images
        if self.domain.channels == 1:  # SD decodes RGB; a film is grey, in 3 channels like the domain's data
            images = images.mean(dim=1, keepdim=True).repeat(1, 3, 1, 1)
        return images


def _load_base_pipeline(base_model: str | Path, dtype: torch.dtype, local_files_only: bool, unet=None):
    """StableDiffusionPipeline of ``base_model`` (with ``unet`` instead of its own when given), no safety checker."""
    import diffusers
    from diffusers import StableDiffusionPipeline
    from packaging.version import Version

    try:
        # Histology tiles trip SD's NSFW filter (it blacks them out), and the verify loop checks images anyway.
        dtype_key = "dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"  # renamed
        components = {"unet": unet} if unet is not None else {}
        return StableDiffusionPipeline.from_pretrained(
            str(base_model), safety_checker=None, requires_safety_checker=False,
            local_files_only=local_files_only, **{dtype_key: dtype}, **components,
        )
    except Exception as error:  # HF raises OSError, HFValidationError, LocalEntryNotFoundError, HTTP errors...
        raise RuntimeError(f"Stable Diffusion base model {str(base_model)!r} could not be loaded "
                           f"({_first_line(error)}). {SETUP_HINT}.") from None


def _load_full_unet(run_dir: Path, dtype: torch.dtype):
    """The U-Net of ``--finetune full`` (``run_dir/unet``), in place of the base model's."""
    from diffusers import UNet2DConditionModel

    try:
        return UNet2DConditionModel.from_pretrained(str(run_dir / FULL_UNET_DIR), torch_dtype=dtype)
    except Exception as error:
        raise RuntimeError(f"fine-tuned U-Net {str(run_dir / FULL_UNET_DIR)!r} could not be loaded "
                           f"({_first_line(error)}). {SETUP_HINT}.") from None


def _load_exports(pipeline, lora_path: Path, local_files_only: bool, has_unet: bool) -> bool:
    """Load the LoRA and textual-inversion tokens at ``lora_path`` into ``pipeline``; True if tokens were loaded."""
    tokens = lora_path / TOKENS_WEIGHTS_NAME if lora_path.is_dir() else None
    has_tokens = tokens is not None and tokens.is_file()
    try:
        if lora_path.is_file():
            pipeline.load_lora_weights(str(lora_path.parent), weight_name=lora_path.name, adapter_name="pathsynth")
        elif lora_path.is_dir() and not (lora_path / LORA_WEIGHTS_NAME).is_file():
            if not (has_unet or has_tokens):
                raise FileNotFoundError(f"{lora_path} has no {LORA_WEIGHTS_NAME} (nor {FULL_UNET_DIR}/ or "
                                        f"{TOKENS_WEIGHTS_NAME})")
        else:  # a local directory, or a hub id of a LoRA repo
            pipeline.load_lora_weights(str(lora_path), adapter_name="pathsynth", local_files_only=local_files_only)
        if has_tokens:
            load_class_tokens(pipeline, tokens)
    except Exception as error:
        where = "" if lora_path.exists() else "no such file or directory, and as a hub id: "
        raise RuntimeError(f"LoRA weights {str(lora_path)!r} could not be loaded ({where}{_first_line(error)}). "
                           f"{SETUP_HINT}.") from None
    return has_tokens
