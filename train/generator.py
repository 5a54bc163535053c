"""Train PathSynth's embedded generator: a class-conditional diffusion model on PathMNIST.

One readable file, nanoGPT-style: the config is right below; every value can be overridden on the command
line (``--steps 3000 --lr 1e-3``). Runs on CPU (2 cores is enough for the shipped model), on a GPU when one
is present, and on several GPUs with ``accelerate launch train/generator.py ...``.

    python train/generator.py                                   # bundled 800-image sample, held-out fold 0
    python train/generator.py --data medmnist --size 28         # full PathMNIST (needs a network)
    python train/generator.py --resume                          # continue from out_dir/checkpoint

Choices that made quality arrive within a CPU budget (see the model card): v-prediction with a cosine noise
schedule and min-SNR loss weighting, EMA with warm-up (decay 0.995), classifier-free guidance trained by 10%
condition dropout, the 8 dihedral transforms as augmentation (no stain jitter: colour is what we model).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pathsynth.data import RandomDihedral, load_training_data, to_tensor  # noqa: E402
from pathsynth.generators.embedded import (NULL_CLASS, PathSynthPipeline, build_inference_scheduler,  # noqa: E402
                                           build_unet)
from pathsynth.tissues import NUM_TISSUES  # noqa: E402


@dataclass
class Config:
    data: str | None = None  # npz path, "medmnist", or None for $PATHSYNTH_DATA / the bundled sample
    size: int = 28
    fold: int = 0  # held-out validation fold of a train-only npz (never trained on)
    out_dir: str = "runs/generator"
    export_dir: str = ""  # where the final pipeline goes (e.g. assets/models/generator); "" = out_dir/pipeline
    block_out_channels: tuple = (32, 64, 128)
    layers_per_block: int = 1
    steps: int = 2400
    max_minutes: float = 0.0  # wall-clock budget; >0 makes the lr schedule follow elapsed time too
    batch_size: int = 64
    lr: float = 1.5e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    cond_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.995
    sample_every: int = 500
    checkpoint_every: int = 250
    guidance_scale: float = 2.0
    inference_steps: int = 20
    seed: int = 0
    threads: int = 0  # CPU threads for torch (0 = torch's default)
    resume: bool = False
    fp16_export: bool = True
    init_from: str = ""  # warm start: a saved pipeline (e.g. assets/models/generator), so training time accumulates
    bf16: bool = True  # bf16 autocast: ~1.4x faster on CPUs with AVX512-BF16, and on GPUs
    balance: float = 0.5  # sampling weight ~ class_count**-balance: 0 = as in the data, 1 = every tissue equal
    snapshot_every: int = 1000  # save the EMA pipeline for the realism-vs-steps curve (0 = never)


def parse_config() -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(Config):
        default = f.default
        if isinstance(default, bool):
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, tuple):
            parser.add_argument(f"--{f.name}", type=int, nargs="+", default=default)
        else:
            parser.add_argument(f"--{f.name}", type=type(default) if default is not None else str, default=default)
    args = parser.parse_args()
    return Config(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items()})


def save_grid(pipeline: PathSynthPipeline, path: Path, per_tissue: int, cfg: Config) -> None:
    """A tissues x per_tissue grid of samples, one row per tissue."""
    from PIL import Image

    generators = [torch.Generator().manual_seed(1000 + i) for i in range(NUM_TISSUES * per_tissue)]
    images = pipeline(list(range(NUM_TISSUES)), num_images_per_prompt=per_tissue, guidance_scale=cfg.guidance_scale,
                      num_inference_steps=cfg.inference_steps, generator=generators, output_type="uint8").images
    s = images.shape[1]
    grid = images.reshape(NUM_TISSUES, per_tissue, s, s, 3).transpose(0, 2, 1, 3, 4).reshape(NUM_TISSUES * s, per_tissue * s, 3)
    Image.fromarray(grid).resize((per_tissue * s * 4, NUM_TISSUES * s * 4), Image.NEAREST).save(path)


def previous_training(init_from: str) -> dict:
    """Steps and seconds already in a warm-start pipeline, so the model card counts all of its training."""
    path = Path(init_from) / "training_summary.json" if init_from else None
    if not path or not path.exists():
        return {"total_steps": 0, "total_train_seconds": 0.0, "runs": []}
    old = json.loads(path.read_text())
    runs = old.get("runs") or [{"steps": old["final_step"], "seconds": old["train_seconds"], "lr": old["lr"],
                                "bf16": old.get("bf16", False), "threads": old.get("torch_threads")}]
    return {"total_steps": old.get("total_steps", old["final_step"]),
            "total_train_seconds": old.get("total_train_seconds", old["train_seconds"]), "runs": runs}


def save_snapshot(pipeline: PathSynthPipeline, path: Path, state: dict) -> None:
    """An fp16 EMA pipeline at this step, for the realism-vs-steps curve (``pathsynth evaluate curve``)."""
    pipeline.unet.to(torch.float16)
    pipeline.save_pretrained(str(path))
    (path / "progress.json").write_text(json.dumps(state))


def main(cfg: Config) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accelerator = Accelerator()
    set_seed(cfg.seed)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Data: real images as [-1, 1] tensors; the validation fold stays out of training.
    images, labels = load_training_data(cfg.data, cfg.size, fold=cfg.fold)["train"]
    train_x = to_tensor(images) * 2 - 1
    train_y = torch.from_numpy(labels)
    accelerator.print(f"training on {len(train_x)} images of {cfg.size}px, classes {np.bincount(labels).tolist()}")
    # Rare tissues (normal mucosa: ~60 images) are drawn more often, so the model sees their morphology.
    weights = np.bincount(labels, minlength=NUM_TISSUES).astype(float)[labels] ** -cfg.balance
    sampler = torch.utils.data.WeightedRandomSampler(weights, num_samples=len(labels), replacement=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_x, train_y), batch_size=cfg.batch_size,
                                         sampler=sampler, drop_last=len(train_x) > cfg.batch_size)
    augment = RandomDihedral()

    # Model, noise schedule, optimiser.
    if cfg.init_from:
        unet = PathSynthPipeline.from_pretrained(cfg.init_from).unet.float()
        accelerator.print(f"warm start from {cfg.init_from}")
    else:
        unet = build_unet(cfg.size, cfg.block_out_channels, cfg.layers_per_block)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    unet, optimizer, loader = accelerator.prepare(unet, optimizer, loader)
    ema = EMAModel(accelerator.unwrap_model(unet).parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=0.75)
    accelerator.register_for_checkpointing(ema)
    alphas_cumprod = noise_scheduler.alphas_cumprod
    snr_all = alphas_cumprod / (1 - alphas_cumprod)

    state = {"step": 0, "elapsed": 0.0}
    checkpoint = out_dir / "checkpoint"
    if cfg.resume and checkpoint.exists():
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / "progress.json").read_text())
        accelerator.print(f"resumed at step {state['step']}")

    def progress_fraction() -> float:
        by_steps = state["step"] / cfg.steps
        by_time = state["elapsed"] / (cfg.max_minutes * 60) if cfg.max_minutes > 0 else 0.0
        return max(by_steps, by_time)

    def learning_rate() -> float:
        if state["step"] < cfg.warmup_steps:
            return cfg.lr * (state["step"] + 1) / cfg.warmup_steps
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_fraction())))

    def save_checkpoint() -> None:
        accelerator.save_state(str(checkpoint))
        (checkpoint / "progress.json").write_text(json.dumps(state))

    def ema_pipeline() -> PathSynthPipeline:
        ema_unet = copy.deepcopy(accelerator.unwrap_model(unet)).float().eval()
        ema.copy_to(ema_unet.parameters())
        pipe = PathSynthPipeline(ema_unet.to("cpu"), build_inference_scheduler())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    log = open(out_dir / "log.csv", "a")
    if state["step"] == 0:
        log.write("step,elapsed_s,lr,loss\n")
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not accelerator.is_main_process, desc="generator")
    started, elapsed_before = time.time(), state["elapsed"]
    running = None
    while progress_fraction() < 1.0:
        for x0, y in loader:
            if progress_fraction() >= 1.0:
                break
            unet.train()
            x0 = augment(x0)
            noise = torch.randn_like(x0)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
            x_t = noise_scheduler.add_noise(x0, noise, t)
            target = noise_scheduler.get_velocity(x0, noise, t)
            # Condition dropout teaches the null class used by classifier-free guidance.
            y = torch.where(torch.rand(y.shape, device=y.device) < cfg.cond_dropout, torch.full_like(y, NULL_CLASS), y)
            with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                pred = unet(x_t, t, class_labels=y).sample
            # Min-SNR-gamma weighting for v-prediction: min(snr, gamma) / (snr + 1).
            snr = snr_all.to(x0.device)[t]
            weight = torch.clamp(snr, max=cfg.min_snr_gamma) / (snr + 1)
            loss = (weight * F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))).mean()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate()
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(accelerator.unwrap_model(unet).parameters())

            state["step"] += 1
            state["elapsed"] = elapsed_before + time.time() - started
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{learning_rate():.2e}")
            if accelerator.is_main_process:
                log.write(f"{state['step']},{state['elapsed']:.1f},{learning_rate():.3e},{loss.item():.5f}\n")
                log.flush()
                if state["step"] % cfg.checkpoint_every == 0:
                    save_checkpoint()
                if cfg.snapshot_every and state["step"] % cfg.snapshot_every == 0:
                    save_snapshot(ema_pipeline(), out_dir / "snapshots" / f"step_{state['step']:06d}", state)
                if state["step"] % cfg.sample_every == 0:
                    save_grid(ema_pipeline(), out_dir / f"samples_{state['step']:06d}.png", 8, cfg)
    bar.close()

    if accelerator.is_main_process:
        save_checkpoint()
        pipeline = ema_pipeline()
        export = Path(cfg.export_dir or out_dir / "pipeline")
        save_grid(pipeline, out_dir / "samples_final.png", 8, cfg)
        if cfg.fp16_export:
            pipeline.unet.to(torch.float16)
        pipeline.save_pretrained(str(export))
        before = previous_training(cfg.init_from)
        summary = {**asdict(cfg), "final_step": state["step"], "train_seconds": round(state["elapsed"], 1),
                   "total_steps": before["total_steps"] + state["step"],
                   "total_train_seconds": round(before["total_train_seconds"] + state["elapsed"], 1),
                   "runs": before["runs"] + [{"steps": state["step"], "seconds": round(state["elapsed"], 1),
                                              "lr": cfg.lr, "bf16": cfg.bf16, "threads": torch.get_num_threads()}],
                   "train_images": len(train_x), "device": str(accelerator.device),
                   "torch_threads": torch.get_num_threads(), "final_loss_ema": running}
        (export / "training_summary.json").write_text(json.dumps(summary, indent=2))
        accelerator.print(f"saved pipeline to {export} after {state['step']} steps, {state['elapsed'] / 60:.1f} min")


if __name__ == "__main__":
    main(parse_config())
