"""Sampler settings vs speed, agreement and realism of an embedded generator (how the defaults were chosen).

    python scripts/sweep_sampler.py [--model DIR] [--per_tissue N] STEPS:GUIDANCE[:LO:HI[:SOLVER[:DG[:POWER]]]] ...
    python scripts/sweep_sampler.py 15:2 25:2 15:1.5 15:3:0.1:0.7 15:3:0.15:0.75:sde-dpmsolver++
    python scripts/sweep_sampler.py --model runs/discriminator/pipeline 15:3:0.15:0.75:sde-dpmsolver++:0 ...:1 ...:2

LO:HI is the guidance interval (guide only while t/T lies in it; default 0:1); SOLVER a DPM-Solver
``algorithm_type`` (default: the model's own, ``dpmsolver++``; ``sde-dpmsolver++`` adds fresh noise each step); DG the
discriminator-guidance weight (default: the one stored with the pipeline's discriminator); POWER the timestep spacing
``T (1 - i/N)^POWER`` (default: the shipped one; 1 = evenly spaced). For each setting: ms per image
(batches of 64), macro-F1 of the raw images judged by the shipped classifier, and the C2ST and evaluator FID of
:func:`pathsynth.evaluation.realism_point`. Selection must not touch the held-out fold that the reports use, so
here the discriminator trains on one half of the *training* fold and is tested on the other half.
"""

import argparse
import time

import numpy as np
from diffusers import DPMSolverMultistepScheduler
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from pathsynth.classifier import load_classifier
from pathsynth.evaluation import RealSplit, load_evaluator, realism_point
from pathsynth.evaluation.protocol import generate_raw, real_split
from pathsynth.generators.embedded import DEFAULT_TIMESTEP_POWER, EmbeddedGenerator, PathSynthPipeline
from pathsynth.tissues import NUM_TISSUES


def selection_split() -> RealSplit:
    """Halves of the training fold: the held-out fold stays for the final figures only."""
    split = real_split()
    a, b = train_test_split(np.arange(len(split.train_labels)), test_size=0.5, stratify=split.train_labels,
                            random_state=1)
    return RealSplit(split.train_images[a], split.train_labels[a], split.train_images[b], split.train_labels[b])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+")
    parser.add_argument("--model", default="assets/models/generator")
    parser.add_argument("--per_tissue", type=int, default=40)
    args = parser.parse_args()
    classifier, evaluator, split = load_classifier(), load_evaluator(), selection_split()
    generator = EmbeddedGenerator(PathSynthPipeline.from_pretrained(args.model))
    tissues = np.repeat(np.arange(NUM_TISSUES), args.per_tissue)
    for setting in args.settings:
        parts = setting.split(":")
        steps, guidance, lo, hi = (list(map(float, parts[:4])) + [0.0, 1.0])[:4]
        solver = parts[4] if len(parts) > 4 else "dpmsolver++"
        generator.pipeline.scheduler = DPMSolverMultistepScheduler.from_config(generator.pipeline.scheduler.config,
                                                                               algorithm_type=solver)
        generator.num_inference_steps, generator.guidance_scale = int(steps), guidance
        generator.guidance_interval = (lo, hi)
        generator.discriminator_weight = float(parts[5]) if len(parts) > 5 and parts[5] else None
        generator.timestep_power = float(parts[6]) if len(parts) > 6 else DEFAULT_TIMESTEP_POWER
        started = time.perf_counter()
        raw = generate_raw(generator, tissues, range(10_000, 10_000 + len(tissues)), progress=False)
        ms = 1000 * (time.perf_counter() - started) / len(tissues)
        f1 = f1_score(tissues, classifier.predict(raw), average="macro")
        point = realism_point(generator, evaluator, split, args.per_tissue, c2st_epochs=15, seed=1)
        print(f"{setting}: {ms:.0f} ms/img, macro-F1 {f1:.3f}, C2ST {point['c2st_balanced_accuracy']:.3f} "
              f"(worst {point['c2st_worst_tissue']} {point['c2st_worst_balanced_accuracy']:.3f}), "
              f"FID {point['fid']:.2f} / real {point['fid_real_baseline']:.2f}, "
              f"whole-fold FID ratio {point['fid_whole_fold_ratio']:.3f}, "
              f"P/R {point['precision']:.2f}/{point['recall']:.2f}", flush=True)


if __name__ == "__main__":
    main()
