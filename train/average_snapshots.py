"""Average the U-Net weights of a training run's EMA snapshots into one generator (post-hoc averaging).

A run saves its EMA pipeline every ``--snapshot_every`` steps (``OUT_DIR/snapshots/step_*``). EMA 0.999 averages
about the last 1,000 steps; an equal-weight mean of the later snapshots averages over several thousand, which
smooths the small-batch noise of CPU training (the idea behind EDM2's post-hoc EMA). The result keeps the base
pipeline's scheduler and guidance discriminator, and its training summary records which snapshots went in.

    python train/average_snapshots.py runs/gen_v28_model runs/gen_v28_avg runs/gen_v28/snapshots/step_00[5-9]* \
        --include_base --discriminator_from assets/models/generator
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from diffusers import UNet2DModel

from pathsynth.generators.embedded import PathSynthPipeline


def mean_state_dict(unet_dirs: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the U-Nets' weights, accumulated in float64."""
    total: dict[str, torch.Tensor] = {}
    for unet_dir in unet_dirs:
        state = UNet2DModel.from_pretrained(str(unet_dir)).state_dict()
        for name, tensor in state.items():
            total[name] = total.get(name, 0) + tensor.double()
    return {name: (tensor / len(unet_dirs)).float() for name, tensor in total.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="the run's exported pipeline (scheduler, summary, final EMA)")
    parser.add_argument("out", type=Path)
    parser.add_argument("snapshots", nargs="+", type=Path, help="snapshot pipeline directories to average")
    parser.add_argument("--include_base", action="store_true", help="average the base's own U-Net in as well")
    parser.add_argument("--discriminator_from", type=Path, default=None,
                        help="copy the guidance discriminator and model_index.json from this pipeline")
    args = parser.parse_args()

    members = list(args.snapshots) + ([args.base] if args.include_base else [])
    pipeline = PathSynthPipeline.from_pretrained(str(args.base))
    pipeline.unet.load_state_dict(mean_state_dict([m / "unet" for m in members]))
    pipeline.save_pretrained(str(args.out))

    summary_path = args.base / "training_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary["averaged_snapshots"] = [str(m) for m in members]
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2))
    if args.discriminator_from is not None:
        shutil.copytree(args.discriminator_from / "discriminator", args.out / "discriminator", dirs_exist_ok=True)
        shutil.copy(args.discriminator_from / "model_index.json", args.out / "model_index.json")
    print(f"averaged {len(members)} U-Nets into {args.out}")


if __name__ == "__main__":
    main()
