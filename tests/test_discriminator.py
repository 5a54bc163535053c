"""Discriminator guidance: the correction's direction, the pipeline round trip, and train/discriminator.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pathsynth.generators.discriminator import NoisyDiscriminator, guided_v_prediction
from pathsynth.generators.embedded import EmbeddedGenerator, PathSynthPipeline
from tiny_models import tiny_pipeline

REPO = Path(__file__).resolve().parent.parent


class LinearLogit(torch.nn.Module):
    """logit = <x, direction>: its gradient is ``direction`` everywhere."""

    def __init__(self, direction: torch.Tensor):
        super().__init__()
        self.direction = direction

    def forward(self, noisy, timesteps, tissues):
        return (noisy * self.direction).flatten(1).sum(1)


def test_the_correction_moves_the_clean_image_estimate_towards_what_the_discriminator_calls_real():
    torch.manual_seed(0)
    direction = torch.randn(1, 3, 8, 8)
    noisy, v = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    a = torch.tensor(0.6)
    guided = guided_v_prediction(LinearLogit(direction), v, noisy, torch.tensor(500), torch.tensor([0, 1]), a, 2.0)
    # x0 = sqrt(a) x_t - sqrt(1 - a) v, so the shift of the x0 estimate is -sqrt(1 - a) (v' - v).
    shift = -(1 - a).sqrt() * (guided - v)
    expected = 2.0 * (1 - a) / a.sqrt() * direction
    assert torch.allclose(shift, expected.expand_as(shift), atol=1e-5)
    assert guided_v_prediction(LinearLogit(direction), v, noisy, torch.tensor(500), torch.tensor([0, 1]), a, 0.0).equal(v)


def tiny_pipeline_with_discriminator(weight: float = 3.0) -> PathSynthPipeline:
    base = tiny_pipeline()
    torch.manual_seed(1)
    return PathSynthPipeline(base.unet, base.scheduler, NoisyDiscriminator(width=8, guidance_weight=weight))


def _images(pipeline, **options):
    generators = [torch.Generator().manual_seed(s) for s in (3, 4)]
    return pipeline([2, 5], generator=generators, output_type="np", num_inference_steps=4, **options).images


def test_weight_zero_is_the_plain_generator_and_the_stored_weight_changes_the_images():
    plain, guided = tiny_pipeline(), tiny_pipeline_with_discriminator(weight=50.0)
    assert np.array_equal(_images(plain), _images(guided, discriminator_weight=0.0))
    assert np.abs(_images(guided) - _images(plain)).mean() > 1e-4
    with pytest.raises(ValueError, match="needs a pipeline with a discriminator"):
        _images(plain, discriminator_weight=1.0)


def test_pipeline_with_discriminator_round_trips_and_old_pipelines_still_load(tmp_path):
    pipeline = tiny_pipeline_with_discriminator(weight=1.5)
    pipeline.save_pretrained(str(tmp_path / "with"))
    loaded = PathSynthPipeline.from_pretrained(str(tmp_path / "with"))
    assert isinstance(loaded.discriminator, NoisyDiscriminator) and loaded.discriminator_weight() == 1.5
    loaded.set_progress_bar_config(disable=True)
    assert np.allclose(_images(loaded), _images(pipeline), atol=1e-5)
    tiny_pipeline().save_pretrained(str(tmp_path / "without"))
    old = PathSynthPipeline.from_pretrained(str(tmp_path / "without"))
    assert old.discriminator is None and old.discriminator_weight() == 0.0


def test_worker_threads_keep_the_discriminator():
    from concurrent.futures import ThreadPoolExecutor

    generator = EmbeddedGenerator(tiny_pipeline_with_discriminator(weight=50.0), num_inference_steps=4)
    here = generator.generate([1, 7], [11, 12])
    with ThreadPoolExecutor(1) as pool:
        there = pool.submit(generator.generate, [1, 7], [11, 12]).result()
    assert np.array_equal(here, there)


def test_training_script_saves_a_generator_with_its_discriminator(tmp_path):
    from sample_tiles import sample_npz

    tiny_pipeline().save_pretrained(str(tmp_path / "generator"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    data = sample_npz(tmp_path / "tiles.npz")
    done = subprocess.run([sys.executable, str(REPO / "train" / "discriminator.py"), "--data", str(data), "--generator",
                           str(tmp_path / "generator"), "--generated_per_tissue", "2", "--steps", "3", "--width", "8",
                           "--batch_size", "4", "--guidance_weight", "1.25", "--threads", "1", "--out_dir",
                           str(tmp_path / "run"), "--no-bf16"], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    export = tmp_path / "run" / "pipeline"
    summary = json.loads((export / "discriminator" / "training_summary.json").read_text())
    assert summary["n_generated"] == 18 and summary["steps"] == 3 and summary["n_real"] > 0
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 1 + 3
    loaded = PathSynthPipeline.from_pretrained(str(export))
    assert loaded.discriminator_weight() == 1.25
    assert EmbeddedGenerator(loaded, num_inference_steps=2).generate([0], [1]).shape == (1, 28, 28, 3)
