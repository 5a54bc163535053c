"""A tiny, randomly initialised Stable Diffusion pipeline for offline tests (nothing is downloaded).

Same component classes and on-disk layout as ``stable-diffusion-v1-5`` (UNet2DConditionModel, AutoencoderKL,
CLIPTextModel, CLIPTokenizer, a DDIM scheduler), only a few thousand times smaller, so the real training
script and generator backend run against it in seconds on a CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

TINY_RESOLUTION = 32  # pixels; the 2-block VAE halves it to a 16 px latent
TEXT_DIM = 32  # CLIP hidden size = UNet cross-attention dim


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table (what byte-level BPE vocabularies contain)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def write_tiny_tokenizer_files(directory: Path) -> Path:
    """A character-level CLIP BPE vocabulary: every byte, alone and word-final, plus the two special tokens."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")  # no merges: words stay split into characters
    return directory


def tiny_tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    # from_pretrained reads vocab.json/merges.txt on both transformers 4 (slow tokenizer) and 5 (converted).
    return CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer_files(directory)), model_max_length=77)


def tiny_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval()


def tiny_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 2, in_channels=4, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_DIM, attention_head_dim=8,
        norm_num_groups=32,
    )


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32, sample_size=TINY_RESOLUTION,
    )


def tiny_sd_pipeline(work_dir: Path, seed: int = 0):
    """A StableDiffusionPipeline with tiny random components (no safety checker, no feature extractor)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(Path(work_dir) / "tokenizer_files")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # SD v1's noise schedule
    pipeline = StableDiffusionPipeline(
        vae=tiny_vae(), text_encoder=tiny_text_encoder(tokenizer), tokenizer=tokenizer, unet=tiny_unet(),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def save_tiny_sd(directory: Path, seed: int = 0) -> Path:
    """Save a tiny pipeline in diffusers layout to ``directory/pipeline``; usable as ``--pretrained_model``."""
    directory = Path(directory)
    out = directory / "pipeline"
    tiny_sd_pipeline(directory, seed).save_pretrained(str(out))
    return out


def load_training_script():
    """train/sd_lora.py as a module (it is a script, not part of the package)."""
    script = Path(__file__).resolve().parent.parent / "train" / "sd_lora.py"
    spec = importlib.util.spec_from_file_location("train_sd_lora", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the Config's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def tiny_config(train_sd_lora, tiny_model, out_dir, **overrides):
    """A Config that trains in seconds on a CPU against the tiny pipeline (large lr so weights move visibly)."""
    from sample_tiles import shared_sample_npz

    settings = dict(pretrained_model=str(tiny_model), data=str(shared_sample_npz()), resolution=TINY_RESOLUTION,
                    out_dir=str(out_dir), steps=2,
                    batch_size=4, lr=5e-2, rank=4, gradient_checkpointing=True, validation_every=2,
                    validation_images=1, validation_inference_steps=2, checkpoint_every=1)
    settings.update(overrides)
    return train_sd_lora.Config(**settings)


def film_data() -> Path:
    """PneumoniaMNIST in medmnist's layout, named by ``$PATHSYNTH_DATA_PNEUMONIAMNIST`` (CI: the shared
    ``../shared/data/pneumoniamnist_train_val.npz``), the ``--data`` of the chest-film runs. Without it the calling
    test skips, except under CI (``CI=true``), where the shared data must be there and the test fails."""
    from pathsynth.domains import get_domain

    variable = get_domain("pneumoniamnist").data_env
    value = os.environ.get(variable, "").strip()
    if value and Path(value).is_file():
        return Path(value)
    message = f"needs PneumoniaMNIST films: set {variable} to its npz (CI does)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
