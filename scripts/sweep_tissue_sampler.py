"""One tissue's sampler settings vs its realism: how background's own sampler (``TISSUE_SAMPLER``) was chosen.

    python scripts/sweep_tissue_sampler.py --tissue BACK 3:2:15 1:2:40 1:6:40 1:8:40
    python scripts/sweep_tissue_sampler.py --tissue BACK --model runs/gen_v29_model 1:6:40

Each setting is GUIDANCE:DISCRIMINATOR_WEIGHT:STEPS (the SDE solver and the shipped timestep spacing). For three
blocks of 100 seeds it prints the evaluator FID of the tissue's samples against that tissue's training-fold tiles
and, for background, the share of pale, nearly empty tiles (evaluator feature norm below 28: 23 % of real ones).
Only the training fold is used, so the held-out fold stays for the report.
"""

import argparse

import numpy as np

from pathsynth.evaluation import load_evaluator
from pathsynth.evaluation import metrics as M
from pathsynth.evaluation.protocol import generate_raw, real_split
from pathsynth.generators.embedded import EmbeddedGenerator, PathSynthPipeline
from pathsynth.tissues import tissue_index

SEED_BLOCKS = (20_100, 50_100, 80_100)
PER_BLOCK = 100
PALE_NORM = 28.0  # evaluator feature norm of pale, nearly empty background tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", help="GUIDANCE:DISCRIMINATOR_WEIGHT:STEPS")
    parser.add_argument("--tissue", default="BACK")
    parser.add_argument("--model", default="assets/models/generator")
    args = parser.parse_args()
    tissue, split, evaluator = tissue_index(args.tissue), real_split(), load_evaluator()
    real = evaluator.features(split.train_images[split.train_labels == tissue]).astype(np.float64)
    generator = EmbeddedGenerator(PathSynthPipeline.from_pretrained(args.model))
    generator.tissue_sampler = {}  # every setting is given in full here
    print(f"training fold: {len(real)} tiles, pale share {np.mean(np.linalg.norm(real, axis=1) < PALE_NORM):.2f}")
    for setting in args.settings:
        guidance, weight, steps = setting.split(":")
        generator.guidance_scale, generator.discriminator_weight = float(guidance), float(weight)
        generator.num_inference_steps = int(steps)
        fids, pale = [], []
        for start in SEED_BLOCKS:
            raw = generate_raw(generator, np.full(PER_BLOCK, tissue), range(start, start + PER_BLOCK), progress=False)
            feats = evaluator.features(raw).astype(np.float64)
            fids.append(M.frechet_distance(feats, real))
            pale.append(float(np.mean(np.linalg.norm(feats, axis=1) < PALE_NORM)))
        print(f"{setting}: FID vs training tiles {np.mean(fids):.1f} (blocks {', '.join(f'{f:.1f}' for f in fids)}), "
              f"pale share {np.mean(pale):.2f}", flush=True)


if __name__ == "__main__":
    main()
