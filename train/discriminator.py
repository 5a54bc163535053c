"""Train the discriminator for discriminator guidance (Kim et al. 2023) of PathSynth's embedded generator.

One readable file, nanoGPT-style: config right below, every value a command-line flag. The generator stays frozen:
a small network learns to tell the training fold's real tiles from the generator's own samples at every noise
level, and the pipeline saved to ``export_dir`` (the generator with that discriminator) adds the gradient of its
log-odds to each sampling step. The held-out fold is never seen, so the evaluation reports stay honest.

    python train/discriminator.py --data PATH.npz                          # shipped generator, a local npz
    python train/discriminator.py --export_dir assets/models/generator     # refresh the shipped pipeline
    python train/discriminator.py --generator runs/gen64/pipeline --data medmnist   # a 64 px generator, 64 px data
    python scripts/sweep_sampler.py 15:3:0.15:0.75:sde-dpmsolver++:0 ...:2   # choose --guidance_weight
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from pathsynth.data import RandomDihedral, load_training_data
from pathsynth.evaluation.protocol import generate_raw
from pathsynth.generators.discriminator import NoisyDiscriminator
from pathsynth.generators.embedded import EmbeddedGenerator, PathSynthPipeline, load_pipeline
from pathsynth.images import microns_per_pixel
from pathsynth.tissues import NUM_TISSUES


@dataclass
class Config:
    generator: str = "assets/models/generator"  # the frozen pipeline whose samples the discriminator learns
    data: str | None = None  # npz path, "medmnist", or None for $PATHSYNTH_DATA, else medmnist
    size: int = 0  # tile size of the real data: 0 = the generator's (28, 64, 128 or 224 px); others are refused
    fold: int = 0  # held-out validation fold (never seen)
    out_dir: str = "runs/discriminator"
    export_dir: str = ""  # where generator + discriminator go ("" = out_dir/pipeline)
    generated_per_tissue: int = 150  # fake examples, drawn with the generator's shipped sampler (no guidance by D)
    width: int = 48
    steps: int = 2000
    batch_size: int = 64  # real and as many generated per step
    lr: float = 3e-4
    weight_decay: float = 1e-4
    guidance_weight: float = 2.0  # stored with the network: the sampling default (chosen with scripts/sweep_sampler.py)
    seed: int = 0
    threads: int = 0  # CPU threads for torch (0 = torch's default)
    bf16: bool = True
    device: str = "auto"  # "auto" = CUDA when present, else the CPU


def parse_config(argv: list[str] | None = None) -> Config:
    """Every Config field is a command-line flag (``--steps 3000``, ``--no-bf16``)."""
    return HfArgumentParser(Config).parse_args_into_dataclasses(args=argv)[0]


def training_device(cfg: Config) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)


def tile_size(cfg: Config, pipeline: PathSynthPipeline) -> int:
    """The generator's tile size, which the real data must share (``--size`` 0 = take it from the generator)."""
    size = int(pipeline.unet.config.sample_size)
    if cfg.size and cfg.size != size:
        raise SystemExit(f"--generator {cfg.generator} draws {size} px tiles but --size is {cfg.size}: the real and "
                         f"generated tiles must be one size (leave --size out to use {size} px)")
    return size


def generated_examples(cfg: Config, pipeline: PathSynthPipeline) -> tuple[np.ndarray, np.ndarray]:
    """The generator's own samples, from seeds far from those the evaluation uses."""
    generator = EmbeddedGenerator(pipeline)
    tissues = np.repeat(np.arange(NUM_TISSUES), cfg.generated_per_tissue)
    seeds = [7_000_000 + cfg.seed * 100_000 + i for i in range(len(tissues))]
    with torch.autocast(pipeline.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        images = generate_raw(generator, tissues, seeds, progress=True, desc="generated examples")
    return images, tissues


def noisy_batch(real, real_y, fake, fake_y, cfg: Config, noise_scheduler: DDPMScheduler, augment):
    """Half real, half generated (uint8 ``(N, 3, S, S)``, scaled to [-1, 1] here), each noised to its own random
    timestep (the same noise the sampler sees)."""
    i, j = torch.randint(len(real), (cfg.batch_size,)), torch.randint(len(fake), (cfg.batch_size,))
    x0 = augment(torch.cat([real[i], fake[j]]).float().div(255.0) * 2 - 1)
    tissues = torch.cat([real_y[i], fake_y[j]])
    is_real = torch.cat([torch.ones(cfg.batch_size), torch.zeros(cfg.batch_size)])
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(x0),))
    return noise_scheduler.add_noise(x0, torch.randn_like(x0), timesteps), timesteps, tissues, is_real


def train(cfg: Config, discriminator, real, real_y, fake, fake_y, log) -> float:
    """AdamW with a cosine schedule; returns the final running loss (ln 2 = chance)."""
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    optimizer = torch.optim.AdamW(discriminator.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    augment, running = RandomDihedral(), None
    device = next(discriminator.parameters()).device
    for step in (bar := tqdm(range(cfg.steps), desc="discriminator")):
        batch = noisy_batch(real, real_y, fake, fake_y, cfg, noise_scheduler, augment)
        noisy, timesteps, tissues, is_real = (tensor.to(device) for tensor in batch)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = discriminator(noisy, timesteps, tissues)
        loss = F.binary_cross_entropy_with_logits(logits.float(), is_real)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
        log.write(f"{step + 1},{loss.item():.5f}\n")
    return running


def uint8_chw(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, 3, S, S)`` without a copy: a float copy of full PathMNIST at 224 px would take 54 GB."""
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def main(cfg: Config) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    device = training_device(cfg)
    pipeline = load_pipeline(cfg.generator).to(device)
    pipeline.discriminator = None  # the examples come from the generator alone
    size = tile_size(cfg, pipeline)
    images, labels = load_training_data(cfg.data, size, fold=cfg.fold)["train"]
    fake, fake_labels = generated_examples(cfg, pipeline)
    discriminator = NoisyDiscriminator(width=cfg.width, guidance_weight=cfg.guidance_weight).to(device)
    with open(out_dir / "log.csv", "w") as log:
        log.write("step,loss\n")
        final_loss = train(cfg, discriminator, uint8_chw(images), torch.as_tensor(labels).long(),
                           uint8_chw(fake), torch.as_tensor(fake_labels).long(), log)
    # fp16 on disk like the shipped UNet (loaded back as fp32 on CPUs): half the size, same samples.
    pipeline = PathSynthPipeline(pipeline.unet.cpu().half(), pipeline.scheduler, discriminator.cpu().eval().half())
    export = Path(cfg.export_dir or out_dir / "pipeline")
    pipeline.save_pretrained(str(export))
    summary = {**asdict(cfg), "image_size_px": size, "microns_per_pixel": microns_per_pixel(size),
               "n_real": len(images), "n_generated": len(fake), "final_loss_ema": final_loss,
               "train_seconds": round(time.time() - started, 1), "torch_threads": torch.get_num_threads()}
    (export / "discriminator" / "training_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"saved generator + discriminator to {export} ({summary['train_seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main(parse_config())
