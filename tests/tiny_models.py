"""Tiny randomly initialised models for fast tests (no download, no training)."""

from __future__ import annotations

from pathlib import Path

import torch

from pathsynth.classifier import TissueClassifier, build_resnet18
from pathsynth.generators.embedded import EmbeddedGenerator, PathSynthPipeline, build_inference_scheduler, build_unet


def tiny_classifier(seed: int = 0) -> TissueClassifier:
    torch.manual_seed(seed)
    return TissueClassifier(build_resnet18(), {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 28, "tta": False})


def tiny_pipeline(seed: int = 0) -> PathSynthPipeline:
    torch.manual_seed(seed)
    pipeline = PathSynthPipeline(build_unet(block_out_channels=(16, 32, 32)), build_inference_scheduler())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def tiny_generator(seed: int = 0, steps: int = 4) -> EmbeddedGenerator:
    return EmbeddedGenerator(tiny_pipeline(seed), num_inference_steps=steps)


def save_tiny_models(directory: Path) -> tuple[Path, Path]:
    """Write a tiny classifier and generator in the shipped layout; returns (classifier_dir, generator_dir)."""
    classifier_dir, generator_dir = Path(directory) / "classifier", Path(directory) / "generator"
    tiny_classifier().save_pretrained(classifier_dir)
    tiny_pipeline().save_pretrained(str(generator_dir))
    return classifier_dir, generator_dir
