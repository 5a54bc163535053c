"""The embedded generator: a small class-conditional diffusion model for H&E tiles of any PathMNIST size.

``PathSynthPipeline`` is a real diffusers ``DiffusionPipeline`` (like ``DiTPipeline``, at 28 to 224 px): a
``UNet2DModel`` with a class embedding (index 9 is the *null* tissue used for classifier-free guidance)
and a fast multistep scheduler. ``save_pretrained``/``from_pretrained`` round-trip through diffusers; the
UNet's config holds the tile size and the architecture :func:`unet_config_for_size` chose for it, so a saved
pipeline of any size loads without being told its size.
"""

from __future__ import annotations

import copy
import threading
from typing import Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler, ImagePipelineOutput, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from ..tissues import NUM_TISSUES, tissue_index
from .base import Generator
from .discriminator import NoisyDiscriminator, guided_v_prediction

NULL_CLASS = NUM_TISSUES  # the "no tissue given" condition, trained by condition dropout
# Chosen with scripts/sweep_sampler.py (C2ST and evaluator FID on halves of the training fold, never the held-out
# fold): guidance 3 only for t/T in [0.15, 0.75] beat guidance 2 everywhere on class agreement (macro-F1 0.92 vs
# 0.90), realism (FID 23 vs 31) and speed (fewer guided steps), and guidance 1.5 on agreement.
DEFAULT_GUIDANCE = 3.0
DEFAULT_INTERVAL = (0.15, 0.75)
DEFAULT_STEPS = 15  # DPM-Solver++; as good as 20 on the first shipped model (macro-F1 0.83 vs 0.82), 30 % faster
# Timesteps t_i = T (1 - i/N)^power. Evenly spaced steps (power 1) end at t = 67, and the last jump to a clean image
# is one MMSE prediction from noise of std 0.12 that averages away pixel-level texture: 34 % less power than real
# tiles at the highest spatial frequencies, the main cue of the C2ST (blurring both sides drops it from 0.92 to 0.61).
# Power 2 ends at t = 4 with the same 15 steps: C2ST 0.823 -> 0.632, FID 22.4 -> 15.4, macro-F1 0.964 -> 0.978 (power
# 1.5: 0.650, 16.6, 0.975), measured with scripts/sweep_sampler.py on training-fold halves (model card).
DEFAULT_TIMESTEP_POWER = 2.0
# Per-tissue sampler settings. Background alone decides most of the evaluator FID (with background left out, v2.7's
# whole-fold FID is 0.8-0.9x the real baseline; with it, 1.4-2.1x): 15 stochastic steps lose its pale, nearly empty
# tiles (6 % of samples vs 23 % of training tiles) and over-draw dark ones. 40 steps (30 are not enough), no
# classifier-free guidance (a background needs no push towards its class) and discriminator guidance 6 bring its FID
# against the training fold's backgrounds from 73 to 10 (mean of 3 seed blocks; model card, v2.9). A background
# costs about twice as much to draw; the other tissues nothing.
TISSUE_SAMPLER = {"BACK": {"num_inference_steps": 40, "guidance_scale": 1.0, "discriminator_weight": 6.0}}
# Discriminator guidance skips the noisiest steps: there the discriminator knows little and sqrt((1 - a) / a) explodes.
DEFAULT_DISCRIMINATOR_INTERVAL = (0.0, 0.8)


def spaced_timesteps(num_inference_steps: int, power: float = DEFAULT_TIMESTEP_POWER,
                     num_train_timesteps: int = 1000) -> list[int]:
    """Descending solver timesteps ``T (1 - i/N)^power``: power 1 is evenly spaced, larger puts more steps at low
    noise, where fine texture is drawn. Duplicates (very large powers) are dropped."""
    if power <= 0:
        raise ValueError(f"timestep power must be positive, got {power}")
    last = num_train_timesteps - 1
    grid = np.linspace(0, last, num_inference_steps + 1)  # diffusers' "linspace" spacing, which power 1 reproduces
    values = grid if power == 1 else last * (grid / last) ** power
    return sorted({int(t) for t in values.round()[1:]}, reverse=True)


LOWEST_RESOLUTION = 8  # px: the U-Net halves the tile until it is this small (28 -> 14 -> 7, 64 -> ... -> 8)
ATTENTION_MAX_RESOLUTION = 16  # px: self-attention only on grids this small, where it is cheap...
ATTENTION_MAX_FRACTION = 4  # ...and at most a quarter of the tile (at 28 px: the 7 px grid only, not 14)


def unet_resolutions(size: int) -> list[int]:
    """The grid sizes of the U-Net's levels for ``size`` px tiles: halved until at most ``LOWEST_RESOLUTION``."""
    resolutions = [size]
    while resolutions[-1] > LOWEST_RESOLUTION:
        if resolutions[-1] % 2:
            raise ValueError(f"a {size} px tile cannot be halved down to {LOWEST_RESOLUTION} px "
                             f"({resolutions[-1]} px is odd); PathMNIST sizes are 28, 64, 128 and 224")
        resolutions.append(resolutions[-1] // 2)
    return resolutions


def unet_config_for_size(size: int, block_out_channels: Sequence[int] | None = None, base_channels: int = 32,
                         max_channels: int = 256) -> dict:
    """The U-Net architecture for ``size`` px tiles: one level per grid size of :func:`unet_resolutions`
    (28 px: 3 levels at 28/14/7, 64: 4 down to 8, 128: 5, 224: 6 down to 7), channels doubling from
    ``base_channels`` up to ``max_channels`` (28 px: 32/64/128, the shipped model), and self-attention on the
    levels at most 16 px and a quarter of the tile (28 px: 7; 64 and 128: 16 and 8; 224: 14 and 7).

    ``block_out_channels`` fixes the channels, and with them the number of levels, instead (e.g. tiny test models).
    """
    if block_out_channels is None:
        levels = len(unet_resolutions(size))
        block_out_channels = [min(base_channels * 2 ** i, max_channels) for i in range(levels)]
    channels = tuple(int(c) for c in block_out_channels)
    resolutions = [size // 2 ** i for i in range(len(channels))]
    if size % 2 ** (len(channels) - 1):
        raise ValueError(f"{len(channels)} U-Net levels halve a {size} px tile {len(channels) - 1} times: "
                         f"{size} is not divisible by {2 ** (len(channels) - 1)}")
    attention = [r <= ATTENTION_MAX_RESOLUTION and r * ATTENTION_MAX_FRACTION <= size for r in resolutions]
    return {"sample_size": size, "block_out_channels": channels,
            "down_block_types": tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            "up_block_types": tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))}


def build_unet(sample_size: int = 28, block_out_channels: Sequence[int] | None = None,
               layers_per_block: int = 2, base_channels: int = 32, max_channels: int = 256,
               channels: int = 3, num_classes: int = NUM_TISSUES) -> UNet2DModel:
    """The denoiser for ``sample_size`` px tiles (:func:`unet_config_for_size`): convolutional on the large grids,
    self-attention only on the small ones where it is cheap (at 28 px: conv at 28 and 14 px, attention at 7).
    ``channels`` 1 draws greyscale films; ``num_classes`` classes plus the null class are embedded."""
    architecture = unet_config_for_size(sample_size, block_out_channels, base_channels, max_channels)
    return UNet2DModel(
        **architecture,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=layers_per_block,
        attention_head_dim=32,
        norm_num_groups=16 if min(architecture["block_out_channels"]) % 16 == 0 else 8,
        num_class_embeds=num_classes + 1,
        class_embed_type=None,
    )


def pipeline_sample_size(path: str) -> int:
    """The tile size of a saved pipeline, read from its UNet config (no weights loaded)."""
    import json
    from pathlib import Path

    return int(json.loads((Path(path) / "unet" / "config.json").read_text())["sample_size"])


def build_inference_scheduler(prediction_type: str = "v_prediction", num_train_timesteps: int = 1000):
    """DPM-Solver++ (2M, SDE variant): good samples in ~15 steps."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        # SDE variant: fresh noise each step restores fine texture a small model under-draws; on the shipped model
        # it raised macro-F1 0.94 -> 0.98 and C2ST-realism slightly (scripts/sweep_sampler.py, training-fold halves).
        algorithm_type="sde-dpmsolver++",
        solver_order=2,
    )


class PathSynthPipeline(DiffusionPipeline):
    r"""Class-conditional generation of colorectal tissue tiles (at the UNet's ``sample_size``: 28 to 224 px).

    Args:
        unet: a class-conditional ``UNet2DModel`` with ``num_class_embeds = 10`` (9 tissues + null).
        scheduler: any diffusers scheduler matching the UNet's ``prediction_type``.
        discriminator: optional :class:`NoisyDiscriminator` for discriminator guidance (``train/discriminator.py``);
            its config holds the guidance weight chosen for it.
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["discriminator"]

    def __init__(self, unet: UNet2DModel, scheduler, discriminator: NoisyDiscriminator | None = None,
                 domain: str = "pathmnist"):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, discriminator=discriminator)
        self.register_to_config(domain=domain)  # saved in model_index.json (pipelines before domains: histology)

    @property
    def domain(self):
        """The catalogue of the classes this pipeline draws (:mod:`pathsynth.domains`)."""
        from ..domains import get_domain

        return get_domain(getattr(self.config, "domain", None) or "pathmnist")

    @property
    def null_class(self) -> int:
        """The "no class given" condition (the last class embedding), trained by condition dropout."""
        return int(self.unet.config.num_class_embeds) - 1

    def get_label_ids(self, label: int | str | Sequence[int | str]) -> list[int]:
        """Class indices for catalogue entries of the pipeline's domain (index, medmnist label, abbreviation or
        display name).

        A plain catalogue lookup, like ``DiTPipeline.get_label_ids``: anything else raises
        :class:`~pathsynth.errors.UnknownTissueError` (a ``ValueError`` and a ``KeyError``) naming the labels.
        """
        labels = [label] if isinstance(label, (int, str, np.integer)) else list(label)
        domain = self.domain
        return [domain.class_index(item) for item in labels]

    def discriminator_weight(self, requested: float | None = None) -> float:
        """The discriminator-guidance weight to use: the requested one, else the one stored with the discriminator."""
        if self.discriminator is None:
            if requested:
                raise ValueError("discriminator guidance needs a pipeline with a discriminator")
            return 0.0
        if self.scheduler.config.prediction_type != "v_prediction":
            raise ValueError("discriminator guidance is implemented for v-prediction models")
        return float(self.discriminator.config.guidance_weight if requested is None else requested)

    @torch.no_grad()
    def __call__(
        self,
        tissue: int | str | Sequence[int | str],
        num_images_per_prompt: int = 1,
        guidance_scale: float = DEFAULT_GUIDANCE,
        num_inference_steps: int = DEFAULT_STEPS,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        guidance_interval: tuple[float, float] = DEFAULT_INTERVAL,
        discriminator_weight: float | None = None,
        discriminator_interval: tuple[float, float] = DEFAULT_DISCRIMINATOR_INTERVAL,
        timestep_power: float = DEFAULT_TIMESTEP_POWER,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate tissue images.

        Args:
            tissue: tissue(s) as index, medmnist label, abbreviation or display name; one image set per entry
                (resolve free text first, with :func:`pathsynth.resolver.tissue_from_text`).
            num_images_per_prompt: images per tissue.
            guidance_scale: classifier-free guidance weight (1 = no guidance).
            num_inference_steps: solver steps.
            generator: a torch generator, or one per image for per-image reproducibility.
            output_type: ``"pil"``, ``"np"`` (float HWC in [0, 1]) or ``"uint8"`` (uint8 HWC arrays).
            guidance_interval: guide only while ``t / num_train_timesteps`` lies in this range; guidance at the
                noisiest and the cleanest steps costs diversity and texture (Kynkäänniemi et al. 2024).
            discriminator_weight: discriminator-guidance weight (0 = off; ``None`` = the weight stored with the
                pipeline's discriminator, or off without one).
            discriminator_interval: apply discriminator guidance only while ``t / num_train_timesteps`` lies here.
            timestep_power: solver timesteps ``T (1 - i/N)^power`` (:func:`spaced_timesteps`); 1 = evenly spaced.
        """
        if num_inference_steps < 1:
            raise ValueError("num_inference_steps must be at least 1")
        if num_images_per_prompt < 1:
            raise ValueError("num_images_per_prompt must be at least 1")
        class_ids = [i for i in self.get_label_ids(tissue) for _ in range(num_images_per_prompt)]
        batch = len(class_ids)
        size = self.unet.config.sample_size
        device, dtype = self._execution_device, self.unet.dtype

        # 1. Start from Gaussian noise (one generator per image keeps each image reproducible alone).
        latents = randn_tensor((batch, self.unet.config.in_channels, size, size), generator=generator,
                               device=device, dtype=dtype)
        class_labels = torch.tensor(class_ids, device=device)
        use_guidance = guidance_scale > 1.0
        dg_weight = self.discriminator_weight(discriminator_weight)
        if use_guidance:
            class_labels = torch.cat([class_labels, torch.full_like(class_labels, self.null_class)])

        # 2. Denoise.
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        self.scheduler.set_timesteps(
            timesteps=spaced_timesteps(num_inference_steps, timestep_power, num_train_timesteps), device=device)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            guide = use_guidance and guidance_interval[0] <= float(t) / num_train_timesteps <= guidance_interval[1]
            model_input = torch.cat([latents, latents]) if guide else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            labels = class_labels if guide else class_labels[:batch]
            model_output = self.unet(model_input, t, class_labels=labels).sample
            if guide:
                cond, uncond = model_output.chunk(2)
                model_output = uncond + guidance_scale * (cond - uncond)
            if dg_weight and discriminator_interval[0] <= float(t) / num_train_timesteps <= discriminator_interval[1]:
                model_output = guided_v_prediction(self.discriminator, model_output, latents, t,
                                                   class_labels[:batch], self.scheduler.alphas_cumprod[int(t)], dg_weight)
            # The generator matters for SDE solvers (fresh noise each step): per-image generators keep images reproducible.
            latents = self.scheduler.step(model_output, t, latents, generator=generator).prev_sample

        # 3. [-1, 1] -> images.
        images = (latents.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        if images.shape[-1] == 1:  # a greyscale film, display-ready like the data (grey in 3 channels)
            images = np.repeat(images, 3, axis=-1)
        if output_type == "uint8":
            images = (images * 255).round().astype(np.uint8)
        elif output_type == "pil":
            images = self.numpy_to_pil(images)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def load_pipeline(path: str, dtype: torch.dtype = torch.float32) -> PathSynthPipeline:
    """A saved pipeline in ``dtype`` (weights ship in fp16; CPUs run fp32 faster)."""
    import diffusers
    from packaging.version import Version

    dtype_key = "dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"  # renamed in 0.42
    return PathSynthPipeline.from_pretrained(str(path), **{dtype_key: dtype})


class EmbeddedGenerator(Generator):
    """The generator-backend interface over :class:`PathSynthPipeline` (used by verify, CLI and app).

    Thread-safe: the UNet is shared read-only; each worker thread samples with its own copy of the scheduler
    (a diffusers scheduler keeps per-call state such as its step index).
    """

    name = "embedded"

    @property
    def output_size(self) -> int:
        """The tile size the pipeline draws (its UNet's ``sample_size``): tiles are never resized."""
        return int(self.pipeline.unet.config.sample_size)

    def __init__(self, pipeline: PathSynthPipeline, guidance_scale: float = DEFAULT_GUIDANCE,
                 num_inference_steps: int = DEFAULT_STEPS, guidance_interval: tuple[float, float] = DEFAULT_INTERVAL,
                 discriminator_weight: float | None = None, timestep_power: float = DEFAULT_TIMESTEP_POWER):
        self.pipeline = pipeline
        self.timestep_power = timestep_power
        self.discriminator_weight = discriminator_weight  # None: the weight stored with the pipeline's discriminator
        self.pipeline.set_progress_bar_config(disable=True)
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps
        self.guidance_interval = tuple(guidance_interval)
        # tissue index -> settings that replace the defaults above for that tissue ({} = one sampler for all)
        self.tissue_sampler = {tissue_index(name): {key: value for key, value in settings.items()
                                                    if key != "discriminator_weight" or pipeline.discriminator}
                               for name, settings in TISSUE_SAMPLER.items()} if pipeline.domain.flag == "pathmnist" else {}
        self._owner = threading.get_ident()
        self._local = threading.local()

    def class_index(self, key: int | str) -> int:
        """A class of the pipeline's domain (tissue or finding) by index or name."""
        return self.pipeline.domain.class_index(key)

    def to(self, device: str | torch.device) -> "EmbeddedGenerator":
        """Samples on ``device`` from now on (the UNet and discriminator move; every worker thread shares them).
        The starting noise is still drawn on the CPU, so a seed gives the same tile on any device up to rounding."""
        self.pipeline.to(device)
        return self

    def _thread_pipeline(self) -> PathSynthPipeline:
        if threading.get_ident() == self._owner:
            return self.pipeline
        pipeline = getattr(self._local, "pipeline", None)
        if pipeline is None or pipeline.unet is not self.pipeline.unet:
            pipeline = PathSynthPipeline(self.pipeline.unet, copy.deepcopy(self.pipeline.scheduler),
                                         self.pipeline.discriminator)
            pipeline.set_progress_bar_config(disable=True)
            self._local.pipeline = pipeline
        return pipeline

    def _render(self, tissues: list[int], generators: list[torch.Generator], guidance_scale: float | None = None,
                num_inference_steps: int | None = None) -> torch.Tensor:
        """One batch; tissues with their own sampler settings (``tissue_sampler``) are drawn in their own group,
        unless the caller fixes the settings. Each image keeps its own generator, so a seed gives the same tile
        in any batch."""
        explicit = {key: value for key, value in
                    (("guidance_scale", guidance_scale), ("num_inference_steps", num_inference_steps))
                    if value is not None}
        groups: dict[tuple, list[int]] = {}
        for i, tissue in enumerate(tissues):
            settings = {**self.tissue_sampler.get(tissue, {}), **explicit}
            groups.setdefault(tuple(sorted(settings.items())), []).append(i)
        images = torch.cat([self._render_group([tissues[i] for i in members], [generators[i] for i in members],
                                               **dict(key)) for key, members in groups.items()])
        drawn_order = [i for members in groups.values() for i in members]
        return images[torch.as_tensor(np.argsort(drawn_order))]

    def _render_group(self, tissues: list[int], generators: list[torch.Generator], guidance_scale: float | None = None,
                      num_inference_steps: int | None = None, discriminator_weight: float | None = None) -> torch.Tensor:
        images = self._thread_pipeline()(
            tissues, num_images_per_prompt=1,
            guidance_scale=self.guidance_scale if guidance_scale is None else guidance_scale,
            num_inference_steps=self.num_inference_steps if num_inference_steps is None else num_inference_steps,
            generator=generators, output_type="np", guidance_interval=self.guidance_interval,
            discriminator_weight=self.discriminator_weight if discriminator_weight is None else discriminator_weight,
            timestep_power=self.timestep_power,
        ).images
        return torch.from_numpy(images).permute(0, 3, 1, 2)
