"""Fine-tune Stable Diffusion v1.x on PathMNIST (or chest films): the paper's LoRA generator, plus the SD
adaptation toolkit (GPU).

One readable file, nanoGPT-style: the config is right below; every value can be overridden on the command
line (``--steps 500 --rank 8``; ``--help`` lists them). Follows diffusers' examples/text_to_image/
train_text_to_image_lora.py: a frozen VAE, text encoder and UNet, a peft LoRA on the UNet's attention
projections (to_q, to_k, to_v, to_out.0), HF accelerate for mixed precision and multi-GPU, and the LoRA saved
with ``StableDiffusionPipeline.save_lora_weights`` so ``pipe.load_lora_weights(out_dir)`` reads it back.

    python train/sd_lora.py --data PATH.npz                              # a local npz (e.g. 800 tiles)
    python train/sd_lora.py --domain pneumoniamnist --data FILMS.npz     # chest films (PneumoniaMNIST)
    accelerate launch --mixed_precision fp16 train/sd_lora.py --data medmnist --size 224
    accelerate launch --multi_gpu --num_processes 4 train/sd_lora.py ...   # data parallel
    python train/sd_lora.py --resume                                     # continue from out_dir/checkpoint

Settings             paper (PathSynth)   diffusers example (README command)
  LoRA rank          4                   4
  resolution         224 px              512 px
  max train steps    2000                15000
  learning rate      5e-5                1e-4
The defaults below are the paper's. Batch size is not reported in the paper; 8 at 224 px fits any recent GPU
in fp16 (the diffusers command uses 1 with 4 accumulation steps at 512 px).

Data: PathMNIST tiles (a local npz, or medmnist at 28/64/128/224 px) upscaled to ``resolution``, a
random dihedral transform each, captioned "a histopathological image of an area with {label}" or (with
probability ``paraphrase_prob``) a paraphrase built from the tissue catalogue's names and synonyms.
``--domain pneumoniamnist`` trains on PneumoniaMNIST's chest films instead (official train split; greyscale
repeated to RGB for SD's VAE; never flipped, a film has an up and a left), captioned "a chest X-ray film reported
as {label}" (normal, pneumonia) or a paraphrase over the film catalogue's names; training_summary.json records the
domain, so the backend prompts and draws (grey) films.

The SD adaptation toolkit (Chambon et al. 2022 checked each part of SD on chest X-rays; the U-Net fine-tune
mattered most). Each option is off by default; the backend (PATHSYNTH_LORA=out_dir) loads whatever was
exported and prompts the way training did (training_summary.json records the options):

  1. Does SD's VAE keep histology (or films, with --domain)? Run this first, nothing is trained:
       python train/sd_lora.py --vae_report_only --out_dir runs/sd_vae
     -> vae_report.json (RMSE in grey levels, PSNR, SSIM and evaluator-feature FID of held-out tiles
     through the VAE at --resolution and back, next to the resize round trip alone, overall and per tissue,
     or per finding for films) and vae_report.png (per class: original | reconstruction pairs).
  2. How the U-Net sees the prompt:  --prompt_embedding sequence|cls|mean|pooler
     sequence = SD's per-token states (default); mean / pooler (CLIP's end-token state) / cls (first token)
     broadcast one vector. CLIP's text encoder is causal, so "cls" is the same for every prompt: an
     unconditional control, not a tissue-conditional model.
  3. Textual inversion, one new token per class (<adipose>, <smooth-muscle>...; <normal>, <pneumonia>):
     --textual_inversion trains only those input embeddings (lr --ti_lr, 5e-4 as in diffusers'
     textual_inversion example), with the U-Net's LoRA, or alone with --finetune none; exported as
     learned_embeds.safetensors.
  4. How much of the U-Net trains:  --finetune lora|full|none  (--rank, --lora_alpha for LoRA)
     full = every U-Net weight, exported as out_dir/unet; use a lower lr (diffusers' full fine-tune
     command uses --lr 1e-5), --gradient_checkpointing, --use_8bit_adam and bf16 on a 24-40 GB GPU.
  5. Prompts written from the catalogue's teaching text:  --prompt_style caption|catalogue
     catalogue appends the tissue's visual description ("...with adipose: large, empty-looking polygonal
     cells separated by thin pink membranes, like chicken wire or a honeycomb"); CLIP truncates at 77 tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from pathsynth.data import RandomDihedral, load_training_data
from pathsynth.domains import DEFAULT_DOMAIN, DOMAIN_FLAGS, get_domain
from pathsynth.generators.sd_lora import (DEFAULT_SD_MODEL, TRAINING_SUMMARY_NAME, caption, caption_variants,
                                          prompt_wording)
from pathsynth.generators.sd_toolkit import (FULL_UNET_DIR, TOKENS_WEIGHTS_NAME, VAE_REPORT_IMAGE, VAE_REPORT_NAME,
                                             ClassTokens, add_class_tokens, comparison_grid, encode_prompts,
                                             save_class_tokens, vae_reconstruction_report)

LORA_TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]


def option(default, help: str, **argparse_options):
    return field(default=default, metadata={"help": help, **argparse_options})


@dataclass
class Config:
    pretrained_model: str = DEFAULT_SD_MODEL  # hub id or local diffusers directory
    variant: str = ""  # e.g. "fp16" to fetch the half-precision weight files of the base model
    domain: str = option(DEFAULT_DOMAIN, "what to train on: pathmnist (histology tiles) or pneumoniamnist (chest "
                                         "films, greyscale repeated to RGB)", choices=DOMAIN_FLAGS)
    data: str | None = None  # npz path, "medmnist", or None for the domain's ($PATHSYNTH_DATA...), else medmnist
    size: int = 28  # source resolution of PathMNIST (medmnist: 28, 64, 128 or 224); other domains: their own (28)
    fold: int = 0  # held-out validation fold of a train-only npz (never trained on)
    resolution: int = 224  # training (and sampling) resolution, a multiple of 8
    out_dir: str = "runs/sd_lora"
    rank: int = 4
    lora_alpha: int = 0  # 0 = rank (scale 1), as in the diffusers example
    steps: int = 2000
    batch_size: int = 8  # per device
    gradient_accumulation_steps: int = 1
    lr: float = 5e-5
    lr_scheduler: str = "constant"  # any diffusers.optimization scheduler name: constant, cosine, linear...
    lr_warmup_steps: int = 0
    adam_weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    snr_gamma: float = 0.0  # >0 enables min-SNR loss weighting (5.0 is the usual value)
    noise_offset: float = 0.0
    paraphrase_prob: float = 0.5  # chance of a paraphrased caption instead of the template
    augment: bool = True  # histology: random dihedral transform (a tissue section has no 'up'); films: none
    mixed_precision: str = ""  # "no", "fp16", "bf16"; "" = whatever `accelerate launch`/config says
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False  # needs bitsandbytes
    xformers: bool = False  # needs xformers; torch's SDPA is used otherwise
    allow_tf32: bool = False
    validation_every: int = 500  # steps between validation grids (0 = only at the end)
    validation_images: int = 4  # per class (tissue or finding)
    validation_inference_steps: int = 25
    guidance_scale: float = 7.5
    checkpoint_every: int = 500
    resume: bool = False
    seed: int = 0
    num_workers: int = 0
    # The SD adaptation toolkit (module docstring); the defaults are the paper's recipe.
    finetune: Literal["lora", "full", "none"] = option(
        "lora", "what trains in the U-Net: a LoRA (--rank, --lora_alpha), every weight, or nothing "
                "(textual inversion alone)")
    prompt_style: Literal["caption", "catalogue"] = option(
        "caption", "the paper's short caption, or it plus the domain catalogue's visual description")
    prompt_embedding: Literal["sequence", "cls", "mean", "pooler"] = option(
        "sequence", "per-token text states (SD's default) or one pooled vector broadcast to every position")
    textual_inversion: bool = option(False, "learn one new token per class (<adipose>..., <pneumonia>), text "
                                            "encoder frozen")
    ti_lr: float = option(5e-4, "learning rate of the textual-inversion embeddings")
    vae_report_only: bool = option(False, "write vae_report.json/.png for held-out images and exit (no training)")
    vae_report_images: int = option(256, "held-out images in the VAE report")
    evaluator: str = option("", "evaluator network for the VAE report's FID ('' = shipped one, 'none' = no FID)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help shows the module docstring (the recipes) as written, and every default."""


def parse_config(argv: list[str] | None = None) -> Config:
    """Every Config field is a command-line flag (``--steps 3000``, ``--no-augment``)."""
    parser = HfArgumentParser(Config, description=__doc__, formatter_class=HelpFormatter)
    return parser.parse_args_into_dataclasses(args=argv)[0]


def check_config(cfg: Config) -> None:
    try:
        domain = get_domain(cfg.domain)
        prompt_wording(domain)
    except ValueError as error:  # an unknown domain, or one without SD captions: the message names the fix
        raise SystemExit(str(error)) from None
    if domain.flag != DEFAULT_DOMAIN and cfg.size != domain.size:
        raise SystemExit(f"--size {cfg.size}: {domain.name} data comes at {domain.size} px only")
    if cfg.resolution % 8:
        raise SystemExit(f"--resolution must be a multiple of 8, got {cfg.resolution}")
    if cfg.finetune == "none" and not cfg.textual_inversion and not cfg.vae_report_only:
        raise SystemExit("--finetune none trains nothing without --textual_inversion")
    if cfg.textual_inversion and cfg.prompt_embedding == "cls":
        raise SystemExit("--prompt_embedding cls does not see the prompt (CLIP is causal): the tokens cannot learn")
    if cfg.prompt_embedding == "cls":
        print(f"note: --prompt_embedding cls gives every {domain.class_noun} the same conditioning (CLIP's first "
              "token sees only itself): an unconditional control")


def augmentation(cfg: Config):
    """The image augmentation of the domain, or None: histology tiles get a random dihedral transform (a section
    has no 'up'); films get none, as in train/generator.py: a film has an up, and a left (the heart), so even a
    mirror image would teach the model anatomy no film shows."""
    if cfg.augment and get_domain(cfg.domain).augmentation == "histology":
        return RandomDihedral()
    return None


class Collate:
    """uint8 images + labels -> float images in [0, 1] (augmented) and one caption index per image."""

    def __init__(self, caption_ids: list[list[int]], paraphrase_prob: float, augment=None):
        self.caption_ids = caption_ids  # per class: [template caption, paraphrases...] as rows of the table
        self.paraphrase_prob = paraphrase_prob
        self.augment = augment  # a callable on a (B, 3, H, W) batch, or None

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch]).permute(0, 3, 1, 2).float().div_(255.0)
        labels = torch.stack([b[1] for b in batch])
        if self.augment is not None:
            images = self.augment(images)
        picks = []
        for label in labels.tolist():
            options = self.caption_ids[label]
            paraphrase = len(options) > 1 and torch.rand(()) < self.paraphrase_prob
            picks.append(options[1 + int(torch.randint(len(options) - 1, ()))] if paraphrase else options[0])
        return images, labels, torch.tensor(picks)


def save_grid(images: torch.Tensor, rows: int, path: Path) -> None:
    """float (N, 3, H, W) in [0, 1] -> one PNG, ``rows`` rows (one per class)."""
    from PIL import Image

    n, _, h, w = images.shape
    cols = n // rows
    grid = images[:rows * cols].reshape(rows, cols, 3, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, 3)
    Image.fromarray((grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).save(path)


def load_base(cfg: Config, cls, subfolder: str):
    """One part of the base model, or a one-line exit that says what to pass."""
    load = dict(variant=cfg.variant or None) if subfolder in ("text_encoder", "vae", "unet") else {}
    try:
        return cls.from_pretrained(cfg.pretrained_model, subfolder=subfolder, **load)
    except Exception as error:  # offline without a cached model, typo in a path...
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SystemExit(f"cannot load the base model {cfg.pretrained_model!r} ({type(error).__name__}: {detail}); "
                         f"pass --pretrained_model with a local diffusers directory or a reachable hub id") from None


def load_frozen_components(cfg: Config, accelerator: Accelerator):
    """The base model's parts on the device, frozen and in the mixed-precision dtype (then LoRA/U-Net/tokens train)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    tokenizer = load_base(cfg, CLIPTokenizer, "tokenizer")
    text_encoder = load_base(cfg, CLIPTextModel, "text_encoder")
    vae = load_base(cfg, AutoencoderKL, "vae")
    unet = load_base(cfg, UNet2DConditionModel, "unet")
    noise_scheduler = load_base(cfg, DDPMScheduler, "scheduler")
    for frozen in (vae, text_encoder, unet):
        frozen.requires_grad_(False)
        frozen.to(accelerator.device)
        if weight_dtype != torch.float32:
            frozen.to(dtype=weight_dtype)
    return tokenizer, text_encoder, vae, unet, noise_scheduler, weight_dtype


def add_unet_training(cfg: Config, accelerator: Accelerator, unet) -> list[torch.nn.Parameter]:
    """Make the U-Net trainable as --finetune says -> its trainable parameters (none for 'none')."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    if cfg.finetune == "lora":  # B starts at zero so step 0 is exactly the base model.
        unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha or cfg.rank, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGET_MODULES))
    elif cfg.finetune == "full":
        unet.requires_grad_(True)
    # fp16 master weights would underflow the updates; so would bf16 ones at a full fine-tune's lr (~1e-5).
    if accelerator.mixed_precision == "fp16" or cfg.finetune == "full":
        cast_training_params(unet, dtype=torch.float32)
    if cfg.gradient_checkpointing:  # also with a frozen U-Net: the tokens' gradients flow through it
        unet.enable_gradient_checkpointing()
    if cfg.xformers:
        unet.enable_xformers_memory_efficient_attention()
    return [p for p in unet.parameters() if p.requires_grad]


def make_optimizer(cfg: Config, accelerator: Accelerator, unet_parameters: list, token_parameters: list):
    """AdamW over the U-Net's trainable weights (lr) and the textual-inversion embeddings (ti_lr), and its schedule."""
    from diffusers.optimization import get_scheduler

    groups = [{"params": unet_parameters, "lr": cfg.lr}] if unet_parameters else []
    if token_parameters:  # no decay: it would shrink the tokens of classes a batch did not show
        groups.append({"params": token_parameters, "lr": cfg.ti_lr, "weight_decay": 0.0})
    if cfg.use_8bit_adam:
        import bitsandbytes as bnb

        optimizer_class = bnb.optim.AdamW8bit
    else:
        optimizer_class = torch.optim.AdamW
    optimizer = optimizer_class(groups, lr=cfg.lr, weight_decay=cfg.adam_weight_decay)
    # The prepared scheduler steps once per process, hence the num_processes factor (as in the diffusers example).
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=cfg.steps * accelerator.num_processes)
    return optimizer, lr_scheduler


def caption_table(cfg: Config) -> tuple[list[str], list[list[int]]]:
    """Every caption variant of every class of the domain; caption_ids[class] lists that class's rows, template
    first."""
    domain = get_domain(cfg.domain)
    captions, caption_ids = [], []
    for entry in domain.classes:
        variants = caption_variants(entry.index, cfg.prompt_style, cfg.textual_inversion, domain)
        caption_ids.append(list(range(len(captions), len(captions) + len(variants))))
        captions.extend(variants)
    return captions, caption_ids


def prompt_encoders(cfg: Config, tokenizer, text_encoder, captions: list[str], tokens=None, prepared_tokens=None):
    """-> (condition(picks) for the loss, encode(prompts) for the validation grids): one text path for both,
    with the chosen pooling and, with textual inversion, the learned tokens.

    A frozen text encoder encodes every caption once, up front; with textual inversion the captions are encoded
    at each step so gradients reach the tokens.
    """
    encode = partial(encode_prompts, tokenizer, text_encoder, mode=cfg.prompt_embedding)
    if tokens is None:
        with torch.no_grad():
            table = torch.cat([encode(captions[start:start + 64]) for start in range(0, len(captions), 64)])
        return (lambda picks: table[picks.to(table.device)]), encode
    # Training goes through the prepared module so DDP syncs the tokens' gradients; validation runs on the main
    # process only, where DDP's forward would wait for the others, so it uses the unwrapped module.
    train_encode = partial(encode, hidden_states=partial(prepared_tokens, text_encoder))
    return (lambda picks: train_encode([captions[i] for i in picks.tolist()])), \
        partial(encode, hidden_states=partial(tokens, text_encoder))


def make_loader(cfg: Config, accelerator: Accelerator, caption_ids: list[list[int]], num_captions: int):
    """Real images of the domain at their source size (films: grey repeated to RGB, what SD's VAE takes),
    shuffled; the validation split or fold stays out of training."""
    domain = get_domain(cfg.domain)
    images, labels = load_training_data(cfg.data, cfg.size, fold=cfg.fold, domain=domain)["train"]
    accelerator.print(f"training on {len(images)} {domain.name} images of {images.shape[1]}px -> {cfg.resolution}px, "
                      f"classes {np.bincount(labels, minlength=domain.num_classes).tolist()}, {num_captions} captions")
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    return torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                                       collate_fn=Collate(caption_ids, cfg.paraphrase_prob, augmentation(cfg)),
                                       drop_last=len(dataset) > cfg.batch_size)


def lora_state_dict(accelerator: Accelerator, model) -> dict:
    """The LoRA layers in diffusers naming, in fp32 (whatever precision they trained in)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    peft_state = get_peft_model_state_dict(accelerator.unwrap_model(model))
    return convert_state_dict_to_diffusers({k: v.float() for k, v in peft_state.items()})


def export_model(cfg: Config, accelerator: Accelerator, model, out_dir: Path) -> None:
    """What the backend loads: the LoRA (pytorch_lora_weights.safetensors), the full U-Net (unet/) or the
    textual-inversion tokens (learned_embeds.safetensors). Checkpoints hold the same files."""
    from diffusers import StableDiffusionPipeline

    model = accelerator.unwrap_model(model)
    if isinstance(model, ClassTokens):
        save_class_tokens(model, out_dir)
    elif cfg.finetune == "lora":
        StableDiffusionPipeline.save_lora_weights(save_directory=str(out_dir),
                                                  unet_lora_layers=lora_state_dict(accelerator, model),
                                                  safe_serialization=True)
    else:
        model.save_pretrained(str(out_dir / FULL_UNET_DIR))


def load_exported(cfg: Config, model, input_dir: Path) -> None:
    """The inverse of export_model, into the training model (resume)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    if isinstance(model, ClassTokens):
        model.load_state(load_file(str(input_dir / TOKENS_WEIGHTS_NAME)))
    elif cfg.finetune == "lora":
        lora, _ = StableDiffusionPipeline.lora_state_dict(str(input_dir))
        unet_lora = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in lora.items()
                                                     if k.startswith("unet.")})
        set_peft_model_state_dict(model, unet_lora, adapter_name="default")
    else:
        model.load_state_dict(UNet2DConditionModel.from_pretrained(str(input_dir / FULL_UNET_DIR)).state_dict())


def register_checkpoint_hooks(cfg: Config, accelerator: Accelerator) -> None:
    """Checkpoints hold the exports (a LoRA, not the 3.4 GB UNet, by default) plus optimizer, scheduler, RNG states."""
    from diffusers.training_utils import cast_training_params

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for model in models:
                export_model(cfg, accelerator, model, Path(output_dir))
                weights.pop()  # saved above; accelerate must not save the model too

    def load_model_hook(models, input_dir):
        while models:
            model = accelerator.unwrap_model(models.pop())
            load_exported(cfg, model, Path(input_dir))
            if accelerator.mixed_precision == "fp16":
                cast_training_params(model, dtype=torch.float32)

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def resume_progress(cfg: Config, accelerator: Accelerator, checkpoint: Path) -> dict:
    """{"step", "elapsed"}: zero, or (with --resume) the checkpoint's, after restoring its weights/optimizer/RNG."""
    if cfg.resume and (checkpoint / "progress.json").exists():
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / "progress.json").read_text())
        accelerator.print(f"resumed at step {state['step']}")
        return state
    if cfg.resume:
        accelerator.print(f"no checkpoint in {checkpoint}, starting from step 0")
    return {"step": 0, "elapsed": 0.0}


def save_checkpoint(accelerator: Accelerator, checkpoint: Path, state: dict) -> None:
    accelerator.save_state(str(checkpoint))
    if accelerator.is_main_process:
        (checkpoint / "progress.json").write_text(json.dumps(state))


@torch.no_grad()
def validation_grid(path: Path, *, cfg: Config, accelerator: Accelerator, unet, vae, text_encoder, tokenizer,
                    noise_scheduler, weight_dtype: torch.dtype, prompts: list[str], encode) -> None:
    """validation_images samples per class (one prompt each) with fixed seeds, so grids compare across steps.
    Prompts go in as embeddings from ``encode``, the training's own text path (pooling, learned tokens)."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    model = accelerator.unwrap_model(unet)
    model.eval()
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=model,
        scheduler=DPMSolverMultistepScheduler.from_config(noise_scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    samples = []
    n = cfg.validation_images
    with torch.autocast(accelerator.device.type, dtype=weight_dtype, enabled=weight_dtype != torch.float32):
        embeddings, negative = encode(prompts), encode([""])
        for embedding in embeddings:
            samples.append(pipeline(
                prompt_embeds=embedding[None].expand(n, -1, -1), negative_prompt_embeds=negative.expand(n, -1, -1),
                height=cfg.resolution, width=cfg.resolution, num_inference_steps=cfg.validation_inference_steps,
                guidance_scale=cfg.guidance_scale, output_type="pt",
                generator=[torch.Generator().manual_seed(1000 + i) for i in range(n)],
            ).images.float().cpu())
    save_grid(torch.cat(samples), len(prompts), path)
    model.train()


def denoising_loss(batch, *, cfg: Config, unet, vae, noise_scheduler, condition,
                   weight_dtype: torch.dtype) -> torch.Tensor:
    """The denoising loss of one batch: noise its latents at random timesteps, predict the noise (or v)."""
    from diffusers.training_utils import compute_snr

    pixels, _, picks = batch
    # Upscale on the device: cheap there, and the loader stays at the source size.
    pixels = F.interpolate(pixels, size=(cfg.resolution, cfg.resolution), mode="bicubic",
                           align_corners=False).clamp(0, 1) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(pixels.to(weight_dtype)).latent_dist.sample() * vae.config.scaling_factor
    noise = torch.randn_like(latents)
    if cfg.noise_offset:
        noise += cfg.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), device=latents.device)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              device=latents.device).long()
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
    v_prediction = noise_scheduler.config.prediction_type == "v_prediction"
    target = noise_scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
    encoder_hidden_states = condition(picks).to(noisy_latents.dtype)
    prediction = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
    if cfg.snr_gamma <= 0:
        return F.mse_loss(prediction.float(), target.float())
    # min-SNR-gamma (Hang et al. 2023), as in the diffusers example.
    snr = compute_snr(noise_scheduler, timesteps)
    weights = torch.clamp(snr, max=cfg.snr_gamma)
    weights = weights / (snr + 1) if v_prediction else weights / snr
    return (F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3)) * weights).mean()


def train(cfg: Config, accelerator: Accelerator, models: list, optimizer, lr_scheduler, loader, parameters,
          compute_loss, validate, state: dict) -> float | None:
    """Optimise up to cfg.steps (updating ``state``), logging, checkpointing and validating on the way.

    Returns the loss's moving average (None if no step was taken).
    """
    out_dir = Path(cfg.out_dir)
    log = open(out_dir / "log.csv", "a" if state["step"] else "w") if accelerator.is_main_process else None
    if log and state["step"] == 0:
        log.write("step,elapsed_s,lr,loss\n")
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not accelerator.is_main_process, desc="sd-lora")
    started, elapsed_before = time.time(), state["elapsed"]
    running = None
    for model in models:
        model.train()
    while state["step"] < cfg.steps:
        for batch in loader:
            with accelerator.accumulate(*models):
                loss = compute_loss(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(parameters, cfg.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue  # still accumulating

            state["step"] += 1
            state["elapsed"] = elapsed_before + time.time() - started
            loss_value = accelerator.gather(loss.detach()[None]).mean().item()
            if not math.isfinite(loss_value):
                raise SystemExit(f"loss is {loss_value} at step {state['step']}: lower --lr or use --mixed_precision bf16")
            running = loss_value if running is None else 0.98 * running + 0.02 * loss_value
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
            if log:
                log.write(f"{state['step']},{state['elapsed']:.1f},{lr_scheduler.get_last_lr()[0]:.3e},{loss_value:.5f}\n")
                log.flush()
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                save_checkpoint(accelerator, out_dir / "checkpoint", state)
            if accelerator.is_main_process and cfg.validation_every and state["step"] % cfg.validation_every == 0:
                validate(out_dir / f"validation_{state['step']:06d}.png")
            if state["step"] >= cfg.steps:
                break
    bar.close()
    if log:
        log.close()
    return running


def write_outputs(cfg: Config, accelerator: Accelerator, models: list, state: dict, train_images: int,
                  running: float | None) -> None:
    """The deliverable: the exports (by default pytorch_lora_weights.safetensors, loadable with
    pipe.load_lora_weights(out_dir)), and the training summary the backend reads its resolution and prompts from."""
    out_dir = Path(cfg.out_dir)
    for model in models:
        export_model(cfg, accelerator, model, out_dir)
    domain = get_domain(cfg.domain)  # recorded by asdict(cfg): the backend prompts and draws this domain's classes
    summary = {**asdict(cfg), "base_model": cfg.pretrained_model, "caption_template": prompt_wording(domain).caption,
               "prompts": {entry.label: caption(entry.index, cfg.prompt_style, cfg.textual_inversion, domain)
                           for entry in domain.classes},
               "final_step": state["step"], "train_seconds": round(state["elapsed"], 1),
               "train_images": train_images, "device": str(accelerator.device),
               "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
               "final_loss_ema": running}
    (out_dir / TRAINING_SUMMARY_NAME).write_text(json.dumps(summary, indent=2))


def vae_report(cfg: Config, accelerator: Accelerator) -> Path:
    """--vae_report_only: how well the base model's VAE keeps held-out images, before anything is trained."""
    from diffusers import AutoencoderKL
    from PIL import Image

    from pathsynth.evaluation.protocol import load_evaluator

    out_dir = Path(cfg.out_dir)
    domain = get_domain(cfg.domain)
    vae = load_base(cfg, AutoencoderKL, "vae").to(accelerator.device).eval()  # fp32: a measurement
    images, labels = load_training_data(cfg.data, cfg.size, fold=cfg.fold, domain=domain)["val"]
    pick = np.sort(np.random.default_rng(cfg.seed).permutation(len(images))[:cfg.vae_report_images])
    images, labels = images[pick], np.asarray(labels).reshape(-1)[pick]
    evaluator = None
    if cfg.evaluator.lower() != "none":
        try:
            evaluator = load_evaluator(cfg.evaluator or None)
        except Exception as error:  # no shipped evaluator: report without FID rather than fail
            accelerator.print(f"no FID: evaluator could not be loaded ({type(error).__name__}: {error})")
    report, reconstructions = vae_reconstruction_report(vae, images, labels, cfg.resolution, evaluator,
                                                        cfg.batch_size, domain)
    report.update(base_model=cfg.pretrained_model,
                  evaluator=None if evaluator is None else (cfg.evaluator or "shipped"),
                  png_layout=f"one row per {domain.class_noun}: original, reconstruction, original, reconstruction...")
    (out_dir / VAE_REPORT_NAME).write_text(json.dumps(report, indent=2))
    Image.fromarray(comparison_grid(images, reconstructions, labels)).save(out_dir / VAE_REPORT_IMAGE)
    for name in ("vae", "resize_only"):
        r = report[name]
        psnr = "inf" if r["psnr"] is None else f"{r['psnr']:.2f}"
        accelerator.print(f"{name:>12}: RMSE {r['rmse']:.2f} grey levels, PSNR {psnr} dB, SSIM {r['ssim']:.3f}"
                          + (f", FID {r['fid']:.2f}" if "fid" in r else ""))
    accelerator.print(f"wrote {out_dir / VAE_REPORT_NAME} and {out_dir / VAE_REPORT_IMAGE}")
    return out_dir


def main(cfg: Config) -> Path:
    check_config(cfg)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision or None,
                              gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    set_seed(cfg.seed)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.vae_report_only:
        return vae_report(cfg, accelerator) if accelerator.is_main_process else out_dir
    if cfg.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True

    # This order is the seeded RNG's order (LoRA init, then the loader): keep it for reproducible runs.
    tokenizer, text_encoder, vae, unet, noise_scheduler, weight_dtype = load_frozen_components(cfg, accelerator)
    unet_parameters = add_unet_training(cfg, accelerator, unet)
    tokens = add_class_tokens(tokenizer, text_encoder, cfg.domain) if cfg.textual_inversion else None
    optimizer, lr_scheduler = make_optimizer(cfg, accelerator, unet_parameters,
                                             list(tokens.parameters()) if tokens else [])
    captions, caption_ids = caption_table(cfg)
    loader = make_loader(cfg, accelerator, caption_ids, len(captions))
    train_images = len(loader.dataset)
    # Only what trains is prepared (DDP refuses a module without trainable parameters).
    trainable = ([unet] if cfg.finetune != "none" else []) + ([tokens] if tokens is not None else [])
    *trainable, optimizer, loader, lr_scheduler = accelerator.prepare(*trainable, optimizer, loader, lr_scheduler)
    if cfg.finetune != "none":
        unet = trainable[0]
    condition, encode = prompt_encoders(cfg, tokenizer, text_encoder, captions, tokens,
                                        trainable[-1] if tokens is not None else None)

    register_checkpoint_hooks(cfg, accelerator)  # before load_state, which runs them
    checkpoint = out_dir / "checkpoint"
    state = resume_progress(cfg, accelerator, checkpoint)

    # Bind the models once: the loop then hands over only a batch (loss) or a file name (grid).
    compute_loss = partial(denoising_loss, cfg=cfg, unet=unet, vae=vae, noise_scheduler=noise_scheduler,
                           condition=condition, weight_dtype=weight_dtype)
    validate = partial(validation_grid, cfg=cfg, accelerator=accelerator, unet=unet, vae=vae,
                       text_encoder=text_encoder, tokenizer=tokenizer, noise_scheduler=noise_scheduler,
                       weight_dtype=weight_dtype, prompts=[captions[ids[0]] for ids in caption_ids], encode=encode)
    parameters = unet_parameters + (list(tokens.parameters()) if tokens else [])
    running = train(cfg, accelerator, trainable, optimizer, lr_scheduler, loader, parameters, compute_loss,
                    validate, state)

    accelerator.wait_for_everyone()
    save_checkpoint(accelerator, checkpoint, state)
    if accelerator.is_main_process:
        write_outputs(cfg, accelerator, trainable, state, train_images, running)
        validate(out_dir / "validation_final.png")
        what = {"lora": "LoRA", "full": "fine-tuned U-Net", "none": ""}[cfg.finetune]
        what = " + ".join(filter(None, [what, f"{get_domain(cfg.domain).class_noun} tokens" if tokens else ""]))
        accelerator.print(f"saved {what} to {out_dir} after {state['step']} steps, {state['elapsed'] / 60:.1f} min")
    accelerator.end_training()
    return out_dir


if __name__ == "__main__":
    main(parse_config())
