"""Train PathSynth's ResNet-18 tissue classifier (the verifier and quiz grader).

One readable file, nanoGPT-style: the config is right below; every value can be overridden on the command
line (``--epochs 80 --lr 3e-3``). CPU by default, CUDA when present, several GPUs with
``accelerate launch train/classifier.py ...``.

    python train/classifier.py --data PATH.npz --export_dir assets/models/classifier  # a train-only npz: fold 0 held out
    python train/classifier.py --data medmnist --pretrained                     # full PathMNIST + ImageNet init
    python train/classifier.py --data medmnist --size 64                        # 64 px tiles (ImageNet stem)
    python train/classifier.py --domain pneumoniamnist --data F.npz --export_dir assets/models/pneumoniamnist/classifier

Chest films (``--domain pneumoniamnist``) train a greyscale network on the official train split and are checked on
the official val split; they are upright, so their augmentation is a left-right flip, small shifts, rotations and
zoom, and exposure (brightness / contrast) jitter instead of the dihedral group and stain jitter.

Levers for 800 training images: the 8 dihedral transforms + stain (HED) and colour jitter + small shifts +
scale jitter, label smoothing, MixUp/CutMix, a one-cycle schedule, an EMA of the weights, and test-time
augmentation over the dihedral group. At the end it fits the temperature (calibration) on the held-out fold
and a Macenko stain reference on the training images, and stores both in config.json, with the tile size and the
stem it chose for it (28 px: 3x3 stride-1 conv; larger: the ImageNet stem), so ``from_pretrained`` rebuilds it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torchvision.transforms import v2
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from pathsynth.classifier import TissueClassifier, build_resnet18, fit_temperature, small_input_stem
from pathsynth.data import (
    RandomScale,
    data_source_name,
    load_training_data,
    to_tensor,
    train_augmentation,
)
from pathsynth.domains import get_domain
from pathsynth.images import microns_per_pixel
from pathsynth.stain import fit_stain_reference
from pathsynth.verify import reference_from_splits


@dataclass
class Config:
    domain: str = "pathmnist"  # pathmnist (histology) or pneumoniamnist (chest X-ray): see pathsynth.domains
    data: str | None = None  # npz path, "medmnist", or None for $PATHSYNTH_DATA, else medmnist
    size: int = 28  # tile size: 28, 64, 128 or 224 px (the data must be this size; it also picks the stem)
    fold: int = 0  # held-out validation fold of a train-only npz
    out_dir: str = "runs/classifier"
    export_dir: str = ""  # final model (e.g. assets/models/classifier); "" = out_dir/model
    epochs: int = 80
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    mix_prob: float = 0.3  # share of batches mixed with MixUp or CutMix
    stain_sigma: float = 0.2  # HED scale jitter (Tellez et al. 2018's "HED-strong")
    stain_bias: float = 0.2  # HED shift, in optical-density units
    colour_jitter: float = 0.1  # brightness/contrast/saturation (hue a fifth of it): other scanners
    scale_low: float = 0.65  # scale jitter: other magnifications (a 0.5 um/px tile shown at 4 um/px is 0.66x)
    scale_high: float = 1.5
    scale_prob: float = 0.5
    ema_decay: float = 0.99  # exponential moving average of the weights (about the last 10 epochs)
    ship: str = "ema"  # "ema" or "last": which weights are exported
    shift_pixels: int = -1  # random shifts up to this many px; -1 = a 14th of the tile (2 px at 28 px, 16 at 224)
    keep_maxpool: bool = True  # the 28 px stem's max-pool (the ImageNet stem of larger tiles always has one)
    pretrained: bool = False  # ImageNet weights (needs a network)
    mixed_precision: str = "bf16"  # "bf16" on CPUs with AVX512-BF16 / GPUs (2x faster here); "no" on AVX2-only CPUs
    tta: bool = True  # ship with dihedral test-time augmentation on
    seed: int = 0
    threads: int = 0
    fp16_export: bool = True
    # Generated images as extra training data (the paper's future work): raw samples of this generator, labelled
    # with the tissue asked for (not verified: the verifier is the model being trained). 0 = real images only.
    synthetic_per_class: int = 0
    generator: str = "assets/models/generator"
    # Knowledge distillation (Hinton et al. 2015; Beyer et al. 2022, "a good teacher is patient and consistent"):
    # the student matches a trained classifier (e.g. the 5-network ensemble) on the very same augmented, mixed
    # views, so one network keeps most of the ensemble's accuracy at a fifth of its inference cost.
    teacher: str = ""  # classifier directory to distil from ("" = plain training on the labels)
    distill_weight: float = 0.8  # share of the loss that matches the teacher; the rest is cross-entropy on labels
    distill_temperature: float = 2.0
    exposure_jitter: float = 0.25  # films: brightness / contrast jitter (other machines and exposures)
    rotate_degrees: float = 8.0  # films: small rotations (patients are not always straight)
    init_from: str = ""  # warm start: a classifier directory of the same domain and architecture


def parse_config(argv: list[str] | None = None) -> Config:
    """Every Config field is a command-line flag (``--steps 3000``, ``--no-bf16``)."""
    return HfArgumentParser(Config).parse_args_into_dataclasses(args=argv)[0]


def accuracy_and_f1(classifier: TissueClassifier, images: torch.Tensor, labels: np.ndarray, tta: bool) -> dict:
    from sklearn.metrics import f1_score

    from sklearn.metrics import roc_auc_score

    proba = classifier.predict_proba(images, tta=tta)
    pred = proba.argmax(-1)
    auc = roc_auc_score(labels, proba[:, 1]) if proba.shape[1] == 2 else roc_auc_score(labels, proba, multi_class="ovr")
    return {"accuracy": float((pred == labels).mean()), "macro_f1": float(f1_score(labels, pred, average="macro")),
            "auc": float(auc)}


def load_teacher(cfg: Config, config: dict, device) -> torch.nn.Module | None:
    """The teacher's network, frozen; it must share the student's input normalisation (same training images)."""
    if not cfg.teacher:
        return None
    teacher = TissueClassifier.from_pretrained(cfg.teacher)
    if not (np.allclose(teacher.config["mean"], config["mean"]) and np.allclose(teacher.config["std"], config["std"])):
        raise SystemExit(f"--teacher {cfg.teacher} was trained on other images (its normalisation differs)")
    return teacher.model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def teacher_logits(teacher: torch.nn.Module, x: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    with accelerator.autocast():
        return teacher(x).float()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the temperature-softened distributions, scaled by T^2 (Hinton et al. 2015)."""
    return F.kl_div(F.log_softmax(student.float() / temperature, -1), F.log_softmax(teacher / temperature, -1),
                    reduction="batchmean", log_target=True) * temperature ** 2


def synthetic_training_set(cfg: Config, out_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``synthetic_per_class`` generated images of every tissue as uint8 ``(N, 3, H, W)``, cached in out_dir (same
    seed, same images)."""
    from pathsynth.generators.embedded import load_pipeline, pipeline_sample_size
    from pathsynth.tissues import TISSUES

    if pipeline_sample_size(cfg.generator) != cfg.size:
        raise SystemExit(f"--generator {cfg.generator} draws {pipeline_sample_size(cfg.generator)} px tiles, "
                         f"but --size is {cfg.size}: use a generator trained at {cfg.size} px")
    cache = out_dir / f"synthetic_{cfg.synthetic_per_class}_seed{cfg.seed}_{cfg.size}px.npz"
    if not cache.exists():
        pipeline = load_pipeline(cfg.generator)
        pipeline.set_progress_bar_config(disable=True)
        images, labels = [], []
        batches = [(t.index, start) for t in TISSUES for start in range(0, cfg.synthetic_per_class, 50)]
        for index, start in tqdm(batches, desc="synthetic images"):
            count = min(50, cfg.synthetic_per_class - start)
            seeds = [cfg.seed * 1_000_000 + index * 10_000 + start + i for i in range(count)]
            generators = [torch.Generator().manual_seed(seed) for seed in seeds]
            images.append(pipeline(index, num_images_per_prompt=count, generator=generators, output_type="uint8").images)
            labels += [index] * count
        np.savez_compressed(cache, images=np.concatenate(images), labels=np.array(labels, dtype=np.int64))
    with np.load(cache) as archive:
        return uint8_batches(archive["images"]), torch.from_numpy(archive["labels"])


def shift_for(cfg: Config) -> int:
    """The random-shift range in px: ``shift_pixels``, or a 14th of the tile for -1 (the same tissue distance)."""
    return round(cfg.size / 14) if cfg.shift_pixels < 0 else cfg.shift_pixels


def uint8_batches(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` without copying: a float copy of full PathMNIST at 224 px would take 54 GB."""
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def channel_statistics(images: np.ndarray, chunk_pixels: int = 4_000_000,
                       channels: int = 3) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 ``(N, H, W, 3)`` images in [0, 1], accumulated in chunks (float64);
    ``channels=1``: of their grey (films)."""
    if channels == 1:
        images = images.mean(-1, keepdims=True)
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    chunk = max(1, chunk_pixels // (images.shape[1] * images.shape[2]))
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].reshape(-1, channels).astype(np.float64) / 255.0
        total, squares, count = total + block.sum(0), squares + (block ** 2).sum(0), count + len(block)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0) * count / max(count - 1, 1))
    return mean.tolist(), std.tolist()


def stain_reference_images(images: np.ndarray, max_pixels: int = 80_000_000, seed: int = 0) -> np.ndarray:
    """The training images the stain reference is fitted on: all of them up to ``max_pixels`` (full PathMNIST at
    28 px: 71 M), else a seeded random subset of that many pixels (the Macenko fit holds every pixel as float64)."""
    per_image = images.shape[1] * images.shape[2]
    if len(images) * per_image <= max_pixels:
        return images
    keep = np.random.default_rng(seed).choice(len(images), max_pixels // per_image, replace=False)
    return images[np.sort(keep)]


def classifier_config(cfg: Config, mean: list[float], std: list[float], train_images: np.ndarray) -> dict:
    """``config.json``: preprocessing, the tile size and the stem chosen for it, and the stain reference."""
    domain = get_domain(cfg.domain)
    if domain.augmentation == "radiograph":
        return {"architecture": "resnet18", "domain": domain.flag, "num_classes": domain.num_classes,
                "in_channels": domain.channels, "input_size": cfg.size, "small_input": small_input_stem(cfg.size),
                "keep_maxpool": cfg.keep_maxpool, "mean": mean, "std": std, "tta": cfg.tta,
                "test_time_views": domain.test_time_views, "stain_reference": None}
    return {"architecture": "resnet18", "num_classes": domain.num_classes, "input_size": cfg.size,
            "microns_per_pixel": microns_per_pixel(cfg.size), "small_input": small_input_stem(cfg.size),
            "keep_maxpool": cfg.keep_maxpool, "mean": mean, "std": std, "tta": cfg.tta,
            # Other labs' images are stain-normalised to the training images before classification.
            "stain_reference": fit_stain_reference(stain_reference_images(train_images, seed=cfg.seed))}


def augmentations(cfg: Config, domain) -> tuple:
    """The image augmentations of a batch in [0, 1]: (per batch, per image, after); see the module docstring."""
    rescale = RandomScale(cfg.scale_low, cfg.scale_high, cfg.scale_prob)
    if domain.augmentation == "radiograph":
        exposure = v2.ColorJitter(brightness=cfg.exposure_jitter, contrast=cfg.exposure_jitter)
        per_image = v2.Compose([v2.RandomHorizontalFlip(), exposure,
                                v2.RandomAffine(cfg.rotate_degrees, translate=(shift_for(cfg) / cfg.size,) * 2)])
        return (lambda x: x), per_image, rescale
    shift = v2.RandomCrop(cfg.size, padding=shift_for(cfg), padding_mode="reflect") if shift_for(cfg) else None
    return train_augmentation(cfg.stain_sigma, cfg.stain_bias, cfg.colour_jitter), shift, rescale


def warm_start(model: torch.nn.Module, init_from: str) -> None:
    """Start from a shipped classifier's first network (same domain and architecture): training time accumulates."""
    if init_from:
        source = TissueClassifier.from_pretrained(init_from).model
        source = source.members[0] if hasattr(source, "members") else source
        model.load_state_dict(source.state_dict())


def main(cfg: Config) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    domain = get_domain(cfg.domain)
    classes = domain.num_classes
    splits = load_training_data(cfg.data, cfg.size, fold=cfg.fold, domain=domain)
    train_x, train_y = uint8_batches(splits["train"][0]), torch.from_numpy(splits["train"][1])
    val_x, val_y = to_tensor(splits["val"][0]), splits["val"][1]
    mean, std = channel_statistics(splits["train"][0], channels=domain.channels)
    real_count = len(train_x)
    if cfg.synthetic_per_class:
        synthetic_x, synthetic_y = synthetic_training_set(cfg, out_dir)
        train_x, train_y = torch.cat([train_x, synthetic_x]), torch.cat([train_y, synthetic_y])
    accelerator.print(f"train {len(train_x)} ({real_count} real) / val {len(val_x)} images of {cfg.size}px")

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_x, train_y), batch_size=cfg.batch_size,
                                         shuffle=True, drop_last=True)
    augment, shift, rescale = augmentations(cfg, domain)
    mix = v2.RandomChoice([v2.MixUp(num_classes=classes), v2.CutMix(num_classes=classes)])
    normalise = v2.Normalize(mean, std)
    grey = domain.channels == 1  # films arrive display-ready (grey in 3 channels); the network takes one

    model = build_resnet18(classes, small_input=small_input_stem(cfg.size), keep_maxpool=cfg.keep_maxpool,
                           pretrained=cfg.pretrained, in_channels=domain.channels)
    warm_start(model, cfg.init_from)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * len(loader),
                                                    pct_start=0.15)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    ema = torch.optim.swa_utils.AveragedModel(accelerator.unwrap_model(model), use_buffers=True,
                                              multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay))
    config = classifier_config(cfg, mean, std, splits["train"][0])

    teacher = load_teacher(cfg, config, accelerator.device)
    log = open(out_dir / "log.csv", "w")
    log.write("epoch,elapsed_s,lr,train_loss,val_accuracy,val_macro_f1\n")
    started = time.time()
    for epoch in tqdm(range(1, cfg.epochs + 1), desc="classifier", disable=not accelerator.is_main_process):
        model.train()
        losses = []
        for x, y in loader:
            x = augment(x.float().div_(255.0))  # uint8 until here: see uint8_batches
            if shift is not None:
                x = torch.stack([shift(img) for img in x])
            x = rescale(x)
            target = F.one_hot(y, classes).float()
            if torch.rand(()) < cfg.mix_prob:
                x, target = mix(x, y)
            inputs = normalise(x.mean(1, keepdim=True) if grey else x)
            logits = model(inputs)
            loss = F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)
            if teacher is not None:  # the teacher sees the very same augmented, mixed view
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * distillation_loss(
                    logits, teacher_logits(teacher, inputs, accelerator), cfg.distill_temperature)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update_parameters(accelerator.unwrap_model(model))
            losses.append(loss.item())
        current = TissueClassifier(accelerator.unwrap_model(model).eval(), config)
        val = accuracy_and_f1(current, val_x, val_y, tta=False)
        log.write(f"{epoch},{time.time() - started:.1f},{scheduler.get_last_lr()[0]:.3e},{np.mean(losses):.4f},"
                  f"{val['accuracy']:.4f},{val['macro_f1']:.4f}\n")
        log.flush()
        tqdm.write(f"epoch {epoch}: loss {np.mean(losses):.4f}  val acc {val['accuracy']:.4f}  macro-F1 {val['macro_f1']:.4f}")

    # The last epoch (or its EMA) is shipped: no picking the best epoch on the validation fold, which would flatter it.
    train_seconds = time.time() - started
    candidates = {"last": accelerator.unwrap_model(model), "ema": ema.module}
    metrics = {"domain": domain.flag, "train_seconds": round(train_seconds, 1), "train_images": len(train_x), "real_train_images": real_count,
               "val_images": len(val_x), "image_size_px": cfg.size,
               **({"microns_per_pixel": microns_per_pixel(cfg.size)} if domain.flag == "pathmnist" else {}),
               "stem": "3x3 stride 1" if small_input_stem(cfg.size) else "ImageNet 7x7 stride 2 + max-pool",
               "shift_pixels_used": shift_for(cfg),
               "device": str(accelerator.device), "torch_threads": torch.get_num_threads()}
    for name, network in candidates.items():
        candidate = TissueClassifier(network.float().cpu().eval(), config)
        metrics[f"val_plain_{name}"] = accuracy_and_f1(candidate, val_x, val_y, tta=False)
        metrics[f"val_tta_{name}"] = accuracy_and_f1(candidate, val_x, val_y, tta=True)
    metrics["val_plain"], metrics["val_tta"] = metrics[f"val_plain_{cfg.ship}"], metrics[f"val_tta_{cfg.ship}"]
    classifier = TissueClassifier(candidates[cfg.ship].float().cpu().eval(), dict(config))
    # Temperature scaling on the held-out fold (Guo et al. 2017): changes confidences, never the predicted class.
    classifier.config["temperature"] = classifier.temperature = fit_temperature(
        classifier.view_logits(val_x), val_y)
    metrics["temperature"] = classifier.temperature
    accelerator.print(json.dumps(metrics, indent=2))
    if accelerator.is_main_process:
        export = Path(cfg.export_dir or out_dir / "model")
        classifier.save_pretrained(export, fp16=cfg.fp16_export)
        # what the verifier's realism check needs from real tiles, shipped so the app needs no data (no pixels)
        reference_from_splits(classifier, splits, data_source_name(cfg.data)).save(export)
        (export / "training_summary.json").write_text(json.dumps({**asdict(cfg), **metrics}, indent=2))
        accelerator.print(f"saved classifier to {export} after {train_seconds / 60:.1f} min")


if __name__ == "__main__":
    main(parse_config())
