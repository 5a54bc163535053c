"""Train PathSynth's embedded generator: a class-conditional diffusion model on PathMNIST.

One readable file, nanoGPT-style: the config is right below; every value can be overridden on the command
line (``--steps 3000 --lr 1e-3``). Runs on CPU (2 cores is enough for the shipped model), on a GPU when one
is present, and on several GPUs with ``accelerate launch train/generator.py ...``.

    PATHSYNTH_DATA=../shared/data/pathmnist_train_0000_0799.npz python train/generator.py  # 800-tile sample, fold 0 held out
    python train/generator.py --data medmnist --size 28         # full PathMNIST (needs a network)
    python train/generator.py --data medmnist --size 64         # 64 px tiles: a deeper U-Net, chosen from the size
    python train/generator.py --resume                          # continue from out_dir/checkpoint
    python train/generator.py --domain pneumoniamnist --data F.npz --export_dir assets/models/pneumoniamnist/generator

Chest films (``--domain pneumoniamnist``) are drawn in one channel, trained on the official train split; they are
upright, so they get no dihedral augmentation (a flipped film would put the heart on the wrong side).

Choices that made quality arrive within a CPU budget (see the model card): v-prediction with a cosine noise
schedule and min-SNR loss weighting, EMA with warm-up (decay 0.995), classifier-free guidance trained by 10%
condition dropout, the 8 dihedral transforms as augmentation (no stain jitter: colour is what we model).
The U-Net's depth and attention follow ``--size`` (``unet_config_for_size``) and are saved with the pipeline.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from pathsynth.data import RandomDihedral, load_training_data
from pathsynth.domains import get_domain
from pathsynth.generators.embedded import PathSynthPipeline, build_inference_scheduler, build_unet, pipeline_sample_size
from pathsynth.images import microns_per_pixel


@dataclass
class Config:
    domain: str = "pathmnist"  # pathmnist (histology) or pneumoniamnist (chest X-ray): see pathsynth.domains
    data: str | None = None  # npz path, "medmnist", or None for $PATHSYNTH_DATA, else medmnist
    size: int = 28  # tile size: 28, 64, 128 or 224 px (the data must be this size; it also sets the U-Net's depth)
    fold: int = 0  # held-out validation fold of a train-only npz (never trained on)
    out_dir: str = "runs/generator"
    export_dir: str = ""  # where the final pipeline goes (e.g. assets/models/generator); "" = out_dir/pipeline
    block_out_channels: list[int] = field(default_factory=list)  # [] = from --size (28 px: 32 64 128)
    base_channels: int = 32  # with block_out_channels [], channels double from this up to max_channels per level
    max_channels: int = 256
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
    guidance_scale: float = 3.0  # sample grids use the shipped sampler (guidance interval included)
    inference_steps: int = 20
    seed: int = 0
    threads: int = 0  # CPU threads for torch (0 = torch's default)
    resume: bool = False
    fp16_export: bool = True
    init_from: str = ""  # warm start: a saved pipeline (e.g. assets/models/generator), so training time accumulates
    bf16: bool = True  # bf16 autocast: ~1.4x faster on CPUs with AVX512-BF16, and on GPUs
    balance: float = 0.5  # sampling weight ~ class_count**-balance: 0 = as in the data, 1 = every tissue equal
    boost: str = ""  # extra sampling weight for tissues the realism test still catches, e.g. "MUS=2,STR=1.5"
    snapshot_every: int = 1000  # save the EMA pipeline for the realism-vs-steps curve (0 = never)
    evaluator: str = "assets/models/evaluator"  # network for the realism curve at each snapshot ("" = no curve)
    realism_per_class: int = 40  # generated images per tissue for each curve point


def parse_config(argv: list[str] | None = None) -> Config:
    """Every Config field is a command-line flag (``--steps 3000``, ``--no-bf16``)."""
    return HfArgumentParser(Config).parse_args_into_dataclasses(args=argv)[0]


def save_grid(pipeline: PathSynthPipeline, path: Path, per_tissue: int, cfg: Config) -> None:
    """A classes x per_tissue grid of samples, one row per class of the domain."""
    from PIL import Image

    rows = get_domain(cfg.domain).num_classes
    generators = [torch.Generator().manual_seed(1000 + i) for i in range(rows * per_tissue)]
    images = pipeline(list(range(rows)), num_images_per_prompt=per_tissue, guidance_scale=cfg.guidance_scale,
                      num_inference_steps=cfg.inference_steps, generator=generators, output_type="uint8").images
    s = images.shape[1]
    grid = images.reshape(rows, per_tissue, s, s, 3).transpose(0, 2, 1, 3, 4).reshape(rows * s, per_tissue * s, 3)
    zoom = max(1, round(112 / s))  # about 112 px per tile: 4x at 28 px, 1x at 128 and 224
    Image.fromarray(grid).resize((per_tissue * s * zoom, rows * s * zoom), Image.NEAREST).save(path)


def previous_training(init_from: str, domain: str = "pathmnist") -> dict:
    """Steps and seconds already in a warm-start pipeline of the same domain, so the model card counts all of its
    training (a start from another domain's model is a transfer: its training is not this model's)."""
    path = Path(init_from) / "training_summary.json" if init_from else None
    if not path or not path.exists():
        return {"total_steps": 0, "total_train_seconds": 0.0, "runs": []}
    old = json.loads(path.read_text())
    if old.get("domain", "pathmnist") != domain:
        return {"total_steps": 0, "total_train_seconds": 0.0, "runs": [], "transferred_from": init_from}
    runs = old.get("runs") or [{"steps": old["final_step"], "seconds": old["train_seconds"], "lr": old["lr"],
                                "bf16": old.get("bf16", False), "threads": old.get("torch_threads")}]
    return {"total_steps": old.get("total_steps", old["final_step"]),
            "total_train_seconds": old.get("total_train_seconds", old["train_seconds"]), "runs": runs}


def save_snapshot(pipeline: PathSynthPipeline, path: Path, state: dict, total_step: int) -> None:
    """An fp16 EMA pipeline at this step, for the realism-vs-steps curve (``pathsynth evaluate curve``)."""
    pipeline.unet.to(torch.float16)
    pipeline.save_pretrained(str(path))
    (path / "progress.json").write_text(json.dumps({**state, "total_step": total_step}))


def realism_evaluator(cfg: Config) -> str:
    """``cfg.evaluator`` when it can draw the realism curve at this size, else "" with a note (a 28 px evaluator
    cannot judge 64 px tiles: ``pathsynth evaluate curve --evaluator`` can do it after training)."""
    if not cfg.evaluator or not Path(cfg.evaluator).is_dir():
        return ""
    evaluator_domain = json.loads((Path(cfg.evaluator) / "config.json").read_text()).get("domain", "pathmnist")
    if evaluator_domain != cfg.domain:
        tqdm.write(f"note: no realism curve: the evaluator {cfg.evaluator} judges {evaluator_domain} images")
        return ""
    evaluator_size = int(json.loads((Path(cfg.evaluator) / "config.json").read_text()).get("input_size", 28))
    if evaluator_size != cfg.size:
        tqdm.write(f"note: no realism curve: the evaluator {cfg.evaluator} takes {evaluator_size} px tiles, not "
                   f"{cfg.size} px (train one with train/classifier.py --size {cfg.size})")
        return ""
    return cfg.evaluator


def record_realism(cfg: Config, out_dir: Path) -> float:
    """Add the new snapshots to ``out_dir/realism.csv`` and ``realism.png``; returns the seconds it took, which
    the caller leaves out of the training time."""
    if not cfg.evaluator or not Path(cfg.evaluator).is_dir():
        return 0.0
    from pathsynth.evaluation.protocol import load_evaluator, real_split, realism_curve

    started = time.time()
    # At most 2,000 real tiles a side (stratified): the C2ST draws as many generated ones (full PathMNIST: 90,000).
    split = real_split(cfg.data, cfg.fold, cfg.size, max_images=2000, domain=cfg.domain)
    rows = realism_curve(out_dir, load_evaluator(cfg.evaluator), split, per_class=cfg.realism_per_class, progress=False)
    last = max(rows, key=lambda r: r["step"])
    tqdm.write(f"realism at step {last['step']}: C2ST {last['c2st_balanced_accuracy']:.3f}, "
               f"FID {last['fid']:.2f} (real {last['fid_real_baseline']:.2f})")
    return time.time() - started


def tissue_boosts(spec: str, domain=None) -> np.ndarray:
    """Per-tissue sampling multipliers from "MUS=2,STR=1.5" (any name the catalogue resolves)."""
    domain = get_domain(domain)
    boosts = np.ones(domain.num_classes)
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, factor = item.partition("=")
        boosts[domain.class_index(name.strip())] = float(factor)
    return boosts


def initial_unet(cfg: Config):
    """A warm start's UNet (``init_from``, which must be at ``--size``) or a new one for ``--size``."""
    if cfg.init_from:  # warm start: training time accumulates across runs
        if pipeline_sample_size(cfg.init_from) != cfg.size:
            raise SystemExit(f"--init_from {cfg.init_from} draws {pipeline_sample_size(cfg.init_from)} px tiles, "
                             f"but --size is {cfg.size}")
        source = PathSynthPipeline.from_pretrained(cfg.init_from)
        if source.domain.flag == cfg.domain:
            return source.unet.float()
        return adapted_unet(source.unet.float(), get_domain(cfg.domain))
    domain = get_domain(cfg.domain)
    return build_unet(cfg.size, cfg.block_out_channels or None, cfg.layers_per_block, cfg.base_channels,
                      cfg.max_channels, channels=domain.channels, num_classes=domain.num_classes)


def adapted_unet(source, domain):
    """Another domain's denoiser as the start of this one's (transfer: denoising edges and textures carries over):
    every weight kept except where the channels or classes differ; a colour model's first and last convolutions
    are averaged over R, G and B for a greyscale one, and the class embeddings start afresh."""
    unet = build_unet(source.config.sample_size, source.config.block_out_channels, source.config.layers_per_block,
                      channels=domain.channels, num_classes=domain.num_classes)
    state = source.state_dict()
    if domain.channels == 1 and source.config.in_channels == 3:
        state["conv_in.weight"] = state["conv_in.weight"].mean(1, keepdim=True)
        state["conv_out.weight"] = state["conv_out.weight"].mean(0, keepdim=True)
        state["conv_out.bias"] = state["conv_out.bias"].mean(0, keepdim=True)
    state = {k: v for k, v in state.items() if unet.state_dict()[k].shape == v.shape}
    missing = unet.load_state_dict(state, strict=False).missing_keys
    tqdm.write(f"warm start from a {source.config.in_channels}-channel model; new: {', '.join(missing) or 'nothing'}")
    return unet


def make_loader(cfg: Config, accelerator: Accelerator) -> torch.utils.data.DataLoader:
    """Real training images as uint8 ``(N, 3, S, S)`` batches (scaled to [-1, 1] on the device); the validation
    fold stays out of training."""
    domain = get_domain(cfg.domain)
    images, labels = load_training_data(cfg.data, cfg.size, fold=cfg.fold, domain=domain)["train"]
    accelerator.print(f"training on {len(images)} {domain.name} images of {cfg.size}px, "
                      f"classes {np.bincount(labels).tolist()}")
    # Rare tissues (normal mucosa: ~60 images) are drawn more often, so the model sees their morphology.
    weights = np.bincount(labels, minlength=domain.num_classes).astype(float)[labels] ** -cfg.balance
    weights *= tissue_boosts(cfg.boost, domain)[labels]
    if domain.channels == 1:  # films: one grey channel (the data comes display-ready, grey in 3 channels)
        images = images[..., :1]
    sampler = torch.utils.data.WeightedRandomSampler(weights, num_samples=len(labels), replacement=True)
    # uint8 until each batch is drawn: a float copy of full PathMNIST at 224 px would take 54 GB.
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images).permute(0, 3, 1, 2),
                                             torch.from_numpy(labels))
    return torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                                       drop_last=len(images) > cfg.batch_size)


def accelerator_unwrap(model):
    """The model under accelerate's / DDP's wrapper (its config holds the class count)."""
    return getattr(model, "module", model)


def diffusion_loss(cfg: Config, unet, noise_scheduler: DDPMScheduler, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """v-prediction loss with min-SNR-gamma weighting, min(snr, gamma) / (snr + 1)."""
    noise = torch.randn_like(x0)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
    x_t = noise_scheduler.add_noise(x0, noise, t)
    target = noise_scheduler.get_velocity(x0, noise, t)
    # Condition dropout teaches the null class used by classifier-free guidance.
    null_class = accelerator_unwrap(unet).config.num_class_embeds - 1
    y = torch.where(torch.rand(y.shape, device=y.device) < cfg.cond_dropout, torch.full_like(y, null_class), y)
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        pred = unet(x_t, t, class_labels=y).sample
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(x0.device)
    snr = (alphas_cumprod / (1 - alphas_cumprod))[t]
    weight = torch.clamp(snr, max=cfg.min_snr_gamma) / (snr + 1)
    return (weight * F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))).mean()


def learning_rate(cfg: Config, state: dict) -> float:
    """Linear warm-up, then cosine decay over the steps or the wall-clock budget, whichever ends first."""
    if state["step"] < cfg.warmup_steps:
        return cfg.lr * (state["step"] + 1) / cfg.warmup_steps
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_fraction(cfg, state))))


def progress_fraction(cfg: Config, state: dict) -> float:
    by_time = state["elapsed"] / (cfg.max_minutes * 60) if cfg.max_minutes > 0 else 0.0
    return max(state["step"] / cfg.steps, by_time)


def ema_pipeline(accelerator: Accelerator, unet, ema: EMAModel, domain: str = "pathmnist") -> PathSynthPipeline:
    """The EMA weights as a pipeline on the training device (sample grids of 224 px tiles take minutes on a CPU)."""
    ema_unet = copy.deepcopy(accelerator.unwrap_model(unet)).float().eval()
    ema.copy_to(ema_unet.parameters())
    pipeline = PathSynthPipeline(ema_unet.to(accelerator.device), build_inference_scheduler(), domain=domain)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def export_pipeline(cfg: Config, pipeline: PathSynthPipeline, state: dict, running_loss: float | None,
                    before: dict) -> Path:
    """The final EMA pipeline with a summary that counts every earlier warm-started run too."""
    export = Path(cfg.export_dir or Path(cfg.out_dir) / "pipeline")
    save_grid(pipeline, Path(cfg.out_dir) / "samples_final.png", 8, cfg)
    if cfg.fp16_export:
        pipeline.unet.to(torch.float16)
    pipeline.save_pretrained(str(export))
    run = {"steps": state["step"], "seconds": round(state["elapsed"], 1), "lr": cfg.lr, "bf16": cfg.bf16,
           "threads": torch.get_num_threads(), "device": str(pipeline.device)}
    summary = {**asdict(cfg), "image_size_px": cfg.size,
               **({"microns_per_pixel": microns_per_pixel(cfg.size)} if cfg.domain == "pathmnist" else {}),
               "unet": {key: pipeline.unet.config[key] for key in ("block_out_channels", "down_block_types")},
               "final_step": state["step"], "train_seconds": round(state["elapsed"], 1),
               "total_steps": before["total_steps"] + state["step"],
               "total_train_seconds": round(before["total_train_seconds"] + state["elapsed"], 1),
               "runs": before["runs"] + [run], "transferred_from": before.get("transferred_from", ""), "torch_threads": torch.get_num_threads(), "final_loss_ema": running_loss}
    (export / "training_summary.json").write_text(json.dumps(summary, indent=2))
    return export


def main(cfg: Config) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accelerator = Accelerator()
    set_seed(cfg.seed)
    out_dir, checkpoint = Path(cfg.out_dir), Path(cfg.out_dir) / "checkpoint"
    out_dir.mkdir(parents=True, exist_ok=True)
    loader = make_loader(cfg, accelerator)
    # tiles have no up or down (the 8 dihedral transforms); films are upright: no augmentation
    augment = RandomDihedral() if get_domain(cfg.domain).augmentation == "histology" else (lambda x: x)
    cfg.evaluator = realism_evaluator(cfg)
    unet = initial_unet(cfg)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                    prediction_type="v_prediction")
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    unet, optimizer, loader = accelerator.prepare(unet, optimizer, loader)
    ema = EMAModel(accelerator.unwrap_model(unet).parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=0.75)
    accelerator.register_for_checkpointing(ema)
    state = {"step": 0, "elapsed": 0.0}
    if cfg.resume and checkpoint.exists():
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / "progress.json").read_text())

    def save_checkpoint() -> None:
        accelerator.save_state(str(checkpoint))
        (checkpoint / "progress.json").write_text(json.dumps(state))

    log = open(out_dir / "log.csv", "a")
    if state["step"] == 0:
        log.write("step,elapsed_s,lr,loss\n")
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not accelerator.is_main_process, desc="generator")
    started, elapsed_before = time.time(), state["elapsed"]
    before = previous_training(cfg.init_from, cfg.domain)
    running = None
    while progress_fraction(cfg, state) < 1.0:
        for x0, y in loader:
            if progress_fraction(cfg, state) >= 1.0:
                break
            unet.train()
            x0 = x0.float().div(255.0) * 2 - 1  # uint8 -> [-1, 1]
            loss = diffusion_loss(cfg, unet, noise_scheduler, augment(x0), y)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, state)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(accelerator.unwrap_model(unet).parameters())
            state["step"] += 1
            state["elapsed"] = elapsed_before + time.time() - started
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{learning_rate(cfg, state):.2e}")
            if not accelerator.is_main_process:
                continue
            log.write(f"{state['step']},{state['elapsed']:.1f},{learning_rate(cfg, state):.3e},{loss.item():.5f}\n")
            log.flush()
            if state["step"] % cfg.checkpoint_every == 0:
                save_checkpoint()
            if cfg.snapshot_every and state["step"] % cfg.snapshot_every == 0:
                save_snapshot(ema_pipeline(accelerator, unet, ema, cfg.domain), out_dir / "snapshots" / f"step_{state['step']:06d}",
                              state, before["total_steps"] + state["step"])
                started += record_realism(cfg, out_dir)  # evaluation time is not training time
            if state["step"] % cfg.sample_every == 0:
                save_grid(ema_pipeline(accelerator, unet, ema, cfg.domain), out_dir / f"samples_{state['step']:06d}.png", 8, cfg)
    bar.close()
    if accelerator.is_main_process:
        save_checkpoint()
        export = export_pipeline(cfg, ema_pipeline(accelerator, unet, ema, cfg.domain), state, running, before)
        accelerator.print(f"saved pipeline to {export} after {state['step']} steps, {state['elapsed'] / 60:.1f} min")


if __name__ == "__main__":
    main(parse_config())
