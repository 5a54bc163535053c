"""Fine-tune Stable Diffusion v1.x with LoRA on PathMNIST: the paper's generator (GPU).

One readable file, nanoGPT-style: the config is right below; every value can be overridden on the command
line (``--steps 500 --rank 8``). Follows diffusers' examples/text_to_image/train_text_to_image_lora.py: a
frozen VAE, text encoder and UNet, a peft LoRA on the UNet's attention projections (to_q, to_k, to_v,
to_out.0), HF accelerate for mixed precision and multi-GPU, and the LoRA saved with
``StableDiffusionPipeline.save_lora_weights`` so ``pipe.load_lora_weights(out_dir)`` reads it back.

    python train/sd_lora.py                                              # bundled 800-image sample
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

Data: PathMNIST tiles (28 px bundled sample, or medmnist at 28/64/128/224 px) upscaled to ``resolution``, a
random dihedral transform each, captioned "a histopathological image of an area with {label}" or (with
probability ``paraphrase_prob``) a paraphrase built from the tissue catalogue's names and synonyms.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from pathsynth.data import RandomDihedral, load_training_data
from pathsynth.generators.sd_lora import (CAPTION_TEMPLATE, DEFAULT_SD_MODEL, TRAINING_SUMMARY_NAME,
                                          caption_variants)
from pathsynth.tissues import NUM_TISSUES

LORA_TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass
class Config:
    pretrained_model: str = DEFAULT_SD_MODEL  # hub id or local diffusers directory
    variant: str = ""  # e.g. "fp16" to fetch the half-precision weight files of the base model
    data: str | None = None  # npz path, "medmnist", or None for $PATHSYNTH_DATA / the bundled sample
    size: int = 28  # source resolution of PathMNIST (medmnist: 28, 64, 128 or 224)
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
    augment: bool = True  # random dihedral transform (a tissue section has no 'up')
    mixed_precision: str = ""  # "no", "fp16", "bf16"; "" = whatever `accelerate launch`/config says
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False  # needs bitsandbytes
    xformers: bool = False  # needs xformers; torch's SDPA is used otherwise
    allow_tf32: bool = False
    validation_every: int = 500  # steps between validation grids (0 = only at the end)
    validation_images: int = 4  # per tissue
    validation_inference_steps: int = 25
    guidance_scale: float = 7.5
    checkpoint_every: int = 500
    resume: bool = False
    seed: int = 0
    num_workers: int = 0


def parse_config(argv: list[str] | None = None) -> Config:
    """Every Config field is a command-line flag (``--steps 3000``, ``--no-bf16``)."""
    return HfArgumentParser(Config).parse_args_into_dataclasses(args=argv)[0]


class Collate:
    """uint8 tiles + labels -> float images in [0, 1] (augmented) and one caption index per image."""

    def __init__(self, caption_ids: list[list[int]], paraphrase_prob: float, augment: bool):
        self.caption_ids = caption_ids  # per tissue: [template caption, paraphrases...] as rows of the table
        self.paraphrase_prob = paraphrase_prob
        self.augment = RandomDihedral() if augment else None

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
    """float (N, 3, H, W) in [0, 1] -> one PNG, ``rows`` rows (one per tissue)."""
    from PIL import Image

    n, _, h, w = images.shape
    cols = n // rows
    grid = images[:rows * cols].reshape(rows, cols, 3, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, 3)
    Image.fromarray((grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).save(path)


def load_frozen_components(cfg: Config, accelerator: Accelerator):
    """The base model's parts on the device, frozen and in the mixed-precision dtype (only the LoRA trains)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    load = dict(variant=cfg.variant or None)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(cfg.pretrained_model, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(cfg.pretrained_model, subfolder="text_encoder", **load)
        vae = AutoencoderKL.from_pretrained(cfg.pretrained_model, subfolder="vae", **load)
        unet = UNet2DConditionModel.from_pretrained(cfg.pretrained_model, subfolder="unet", **load)
        noise_scheduler = DDPMScheduler.from_pretrained(cfg.pretrained_model, subfolder="scheduler")
    except Exception as error:  # offline without a cached model, typo in a path...
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SystemExit(f"cannot load the base model {cfg.pretrained_model!r} ({type(error).__name__}: {detail}); "
                         f"pass --pretrained_model with a local diffusers directory or a reachable hub id") from None
    for frozen in (vae, text_encoder, unet):
        frozen.requires_grad_(False)
        frozen.to(accelerator.device)
        if weight_dtype != torch.float32:
            frozen.to(dtype=weight_dtype)
    return tokenizer, text_encoder, vae, unet, noise_scheduler, weight_dtype


def add_lora_and_optimizer(cfg: Config, accelerator: Accelerator, unet):
    """LoRA on the UNet's attention projections -> (its parameters, AdamW over them, the lr schedule)."""
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    # B starts at zero so step 0 is exactly the base model.
    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha or cfg.rank, init_lora_weights="gaussian",
                                target_modules=LORA_TARGET_MODULES))
    if accelerator.mixed_precision == "fp16":
        cast_training_params(unet, dtype=torch.float32)  # fp16 master weights would underflow the updates
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if cfg.xformers:
        unet.enable_xformers_memory_efficient_attention()
    lora_parameters = [p for p in unet.parameters() if p.requires_grad]

    if cfg.use_8bit_adam:
        import bitsandbytes as bnb

        optimizer_class = bnb.optim.AdamW8bit
    else:
        optimizer_class = torch.optim.AdamW
    optimizer = optimizer_class(lora_parameters, lr=cfg.lr, weight_decay=cfg.adam_weight_decay)
    # The prepared scheduler steps once per process, hence the num_processes factor (as in the diffusers example).
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=cfg.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=cfg.steps * accelerator.num_processes)
    return lora_parameters, optimizer, lr_scheduler


@torch.no_grad()
def encode_captions(tokenizer, text_encoder, device):
    """Every caption variant encoded once by the frozen text encoder: training then looks them up by index.

    Returns (captions, caption_ids, embeddings); caption_ids[tissue] lists that tissue's rows, template first.
    """
    captions, caption_ids = [], []
    for tissue in range(NUM_TISSUES):
        variants = caption_variants(tissue)
        caption_ids.append(list(range(len(captions), len(captions) + len(variants))))
        captions.extend(variants)
    tokens = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt").input_ids
    embeddings = torch.cat([text_encoder(chunk.to(device), return_dict=False)[0] for chunk in tokens.split(64)])
    return captions, caption_ids, embeddings


def make_loader(cfg: Config, accelerator: Accelerator, caption_ids: list[list[int]], num_captions: int):
    """Real tiles at PathMNIST size, shuffled; the validation fold stays out of training."""
    images, labels = load_training_data(cfg.data, cfg.size, fold=cfg.fold)["train"]
    accelerator.print(f"training on {len(images)} images of {images.shape[1]}px -> {cfg.resolution}px, "
                      f"classes {np.bincount(labels, minlength=NUM_TISSUES).tolist()}, {num_captions} captions")
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    return torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                                       collate_fn=Collate(caption_ids, cfg.paraphrase_prob, cfg.augment),
                                       drop_last=len(dataset) > cfg.batch_size)


def lora_state_dict(accelerator: Accelerator, model) -> dict:
    """The LoRA layers in diffusers naming, in fp32 (whatever precision they trained in)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    peft_state = get_peft_model_state_dict(accelerator.unwrap_model(model))
    return convert_state_dict_to_diffusers({k: v.float() for k, v in peft_state.items()})


def register_checkpoint_hooks(accelerator: Accelerator) -> None:
    """Checkpoints hold the LoRA (not the 3.4 GB UNet) plus optimizer, scheduler and RNG states."""
    from diffusers import StableDiffusionPipeline
    from diffusers.training_utils import cast_training_params
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for model in models:
                StableDiffusionPipeline.save_lora_weights(save_directory=output_dir,
                                                          unet_lora_layers=lora_state_dict(accelerator, model),
                                                          safe_serialization=True)
                weights.pop()  # saved above; accelerate must not save the full UNet too

    def load_model_hook(models, input_dir):
        model = models.pop()
        lora, _ = StableDiffusionPipeline.lora_state_dict(input_dir)
        unet_lora = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in lora.items()
                                                     if k.startswith("unet.")})
        set_peft_model_state_dict(model, unet_lora, adapter_name="default")
        if accelerator.mixed_precision == "fp16":
            cast_training_params(model, dtype=torch.float32)

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def resume_progress(cfg: Config, accelerator: Accelerator, checkpoint: Path) -> dict:
    """{"step", "elapsed"}: zero, or (with --resume) the checkpoint's, after restoring its LoRA/optimizer/RNG."""
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


def validation_grid(path: Path, *, cfg: Config, accelerator: Accelerator, unet, vae, text_encoder, tokenizer,
                    noise_scheduler, weight_dtype: torch.dtype, prompts: list[str]) -> None:
    """validation_images samples per tissue (one prompt each) with fixed seeds, so grids compare across steps."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    model = accelerator.unwrap_model(unet)
    model.eval()
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=model,
        scheduler=DPMSolverMultistepScheduler.from_config(noise_scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    samples = []
    with torch.autocast(accelerator.device.type, dtype=weight_dtype, enabled=weight_dtype != torch.float32):
        for prompt in prompts:
            samples.append(pipeline(
                [prompt] * cfg.validation_images, height=cfg.resolution,
                width=cfg.resolution, num_inference_steps=cfg.validation_inference_steps,
                guidance_scale=cfg.guidance_scale, output_type="pt",
                generator=[torch.Generator().manual_seed(1000 + i) for i in range(cfg.validation_images)],
            ).images.float().cpu())
    save_grid(torch.cat(samples), len(prompts), path)
    model.train()


def lora_loss(batch, *, cfg: Config, unet, vae, noise_scheduler, caption_embeddings: torch.Tensor,
              weight_dtype: torch.dtype) -> torch.Tensor:
    """The denoising loss of one batch: noise its latents at random timesteps, predict the noise (or v)."""
    from diffusers.training_utils import compute_snr

    pixels, _, picks = batch
    # Upscale on the device: cheap there, and the loader stays at PathMNIST size.
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
    encoder_hidden_states = caption_embeddings[picks.to(caption_embeddings.device)]
    prediction = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
    if cfg.snr_gamma <= 0:
        return F.mse_loss(prediction.float(), target.float())
    # min-SNR-gamma (Hang et al. 2023), as in the diffusers example.
    snr = compute_snr(noise_scheduler, timesteps)
    weights = torch.clamp(snr, max=cfg.snr_gamma)
    weights = weights / (snr + 1) if v_prediction else weights / snr
    return (F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3)) * weights).mean()


def train(cfg: Config, accelerator: Accelerator, unet, optimizer, lr_scheduler, loader, lora_parameters,
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
    unet.train()
    while state["step"] < cfg.steps:
        for batch in loader:
            with accelerator.accumulate(unet):
                loss = compute_loss(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(lora_parameters, cfg.max_grad_norm)
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


def write_outputs(cfg: Config, accelerator: Accelerator, unet, state: dict, train_images: int,
                  running: float | None) -> None:
    """The deliverable: pytorch_lora_weights.safetensors, loadable with pipe.load_lora_weights(out_dir), and
    the training summary the generator backend reads its resolution from."""
    from diffusers import StableDiffusionPipeline

    out_dir = Path(cfg.out_dir)
    StableDiffusionPipeline.save_lora_weights(save_directory=str(out_dir),
                                              unet_lora_layers=lora_state_dict(accelerator, unet),
                                              safe_serialization=True)
    summary = {**asdict(cfg), "base_model": cfg.pretrained_model, "caption_template": CAPTION_TEMPLATE,
               "final_step": state["step"], "train_seconds": round(state["elapsed"], 1),
               "train_images": train_images, "device": str(accelerator.device),
               "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
               "final_loss_ema": running}
    (out_dir / TRAINING_SUMMARY_NAME).write_text(json.dumps(summary, indent=2))


def main(cfg: Config) -> Path:
    if cfg.resolution % 8:
        raise SystemExit(f"--resolution must be a multiple of 8, got {cfg.resolution}")
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision or None,
                              gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    set_seed(cfg.seed)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True

    # This order is the seeded RNG's order (LoRA init, then the loader): keep it for reproducible runs.
    tokenizer, text_encoder, vae, unet, noise_scheduler, weight_dtype = load_frozen_components(cfg, accelerator)
    lora_parameters, optimizer, lr_scheduler = add_lora_and_optimizer(cfg, accelerator, unet)
    captions, caption_ids, caption_embeddings = encode_captions(tokenizer, text_encoder, accelerator.device)
    loader = make_loader(cfg, accelerator, caption_ids, len(captions))
    train_images = len(loader.dataset)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)

    register_checkpoint_hooks(accelerator)  # before load_state, which runs them
    checkpoint = out_dir / "checkpoint"
    state = resume_progress(cfg, accelerator, checkpoint)

    # Bind the models once: the loop then hands over only a batch (loss) or a file name (grid).
    compute_loss = partial(lora_loss, cfg=cfg, unet=unet, vae=vae, noise_scheduler=noise_scheduler,
                           caption_embeddings=caption_embeddings, weight_dtype=weight_dtype)
    validate = partial(validation_grid, cfg=cfg, accelerator=accelerator, unet=unet, vae=vae,
                       text_encoder=text_encoder, tokenizer=tokenizer, noise_scheduler=noise_scheduler,
                       weight_dtype=weight_dtype, prompts=[captions[ids[0]] for ids in caption_ids])
    running = train(cfg, accelerator, unet, optimizer, lr_scheduler, loader, lora_parameters, compute_loss,
                    validate, state)

    accelerator.wait_for_everyone()
    save_checkpoint(accelerator, checkpoint, state)
    if accelerator.is_main_process:
        write_outputs(cfg, accelerator, unet, state, train_images, running)
        validate(out_dir / "validation_final.png")
        accelerator.print(f"saved LoRA to {out_dir} after {state['step']} steps, {state['elapsed'] / 60:.1f} min")
    accelerator.end_training()
    return out_dir


if __name__ == "__main__":
    main(parse_config())
