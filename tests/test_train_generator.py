"""train/generator.py end to end on tiny settings: warm start, accumulated training time, realism curve."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_classifier, tiny_pipeline

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_train_script(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "train" / script), *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_training(*args: str) -> subprocess.CompletedProcess:
    from sample_tiles import shared_sample_npz

    return run_train_script("generator.py", "--threads", "1", "--sample_every", "1000", "--realism_per_class", "2",
                            "--data", str(shared_sample_npz()), *args)


def test_boost_multiplies_the_sampling_weight_of_the_named_tissues():
    sys.path.insert(0, str(REPO))
    from train.generator import tissue_boosts

    boosts = tissue_boosts("MUS=2, str=1.5")
    assert boosts[5] == 2.0 and boosts[7] == 1.5 and boosts.sum() == 9 - 2 + 3.5
    assert (tissue_boosts("") == 1).all()
    with pytest.raises(KeyError):
        tissue_boosts("liver=2")


def test_warm_start_accumulates_steps_and_draws_the_realism_curve(tmp_path):
    first = tmp_path / "first"
    tiny_pipeline().save_pretrained(str(first))
    (first / "training_summary.json").write_text(json.dumps({"final_step": 7, "train_seconds": 3.0, "lr": 1e-3}))
    evaluator = tmp_path / "evaluator"
    tiny_classifier(seed=1).save_pretrained(evaluator)
    export = tmp_path / "second"
    run_training("--init_from", str(first), "--steps", "4", "--snapshot_every", "2", "--checkpoint_every", "2",
                 "--evaluator", str(evaluator), "--out_dir", str(tmp_path / "run"), "--export_dir", str(export),
                 "--no-bf16")
    summary = json.loads((export / "training_summary.json").read_text())
    assert summary["final_step"] == 4 and summary["total_steps"] == 7 + 4
    assert [run["steps"] for run in summary["runs"]] == [7, 4]
    assert summary["total_train_seconds"] > 3.0
    curve = (tmp_path / "run" / "realism.csv").read_text().splitlines()
    assert len(curve) == 3 and curve[0].startswith("snapshot,step")
    assert [int(line.split(",")[1]) for line in curve[1:]] == [9, 11]  # total steps, counting the warm start
    assert (tmp_path / "run" / "realism.png").read_bytes()[:8] == PNG_MAGIC
    # The exported pipeline loads and generates.
    from pathsynth.generators.embedded import EmbeddedGenerator, PathSynthPipeline

    images = EmbeddedGenerator(PathSynthPipeline.from_pretrained(str(export)), num_inference_steps=2).generate([0], [1])
    assert images.shape == (1, 28, 28, 3)


def test_average_snapshots_keeps_the_base_pipeline_and_means_the_unet_weights(tmp_path):
    paths = []
    for seed in range(3):
        paths.append(tmp_path / f"snap{seed}")
        tiny_pipeline(seed=seed).save_pretrained(str(paths[-1]))
    (paths[2] / "training_summary.json").write_text(json.dumps({"total_steps": 30}))
    out = tmp_path / "averaged"
    run_train_script("average_snapshots.py", str(paths[2]), str(out), str(paths[0]), str(paths[1]), "--include_base")

    from pathsynth.generators.embedded import PathSynthPipeline

    states = [PathSynthPipeline.from_pretrained(str(p)).unet.state_dict() for p in paths]
    averaged = PathSynthPipeline.from_pretrained(str(out)).unet.state_dict()
    for name, tensor in averaged.items():
        assert torch.allclose(tensor, sum(s[name] for s in states) / 3, atol=1e-6), name
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["total_steps"] == 30 and len(summary["averaged_snapshots"]) == 3
