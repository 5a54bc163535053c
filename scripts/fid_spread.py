"""How much of an FID difference between generators is noise: evaluator FID over several half-splits and picks.

`pathsynth evaluate generator` reports one FID of 80 generated vs 80 held-out images, which moves by several
points between seeds. This script generates the same raw images for each generator (100 per tissue, the
evaluation's seeds), then prints the mean and spread of FID over 8 stratified half-splits of the held-out fold
(each with its real-vs-real baseline), the FID of all tissue-matched images vs the whole held-out fold, and the
FID of 640 tissue-matched images vs the 640 training-fold tiles (not a held-out figure: the generator trained on
those tiles). All generators get the same seeds, so their figures pair up; the figure itself still moves by about
2 between seed ranges (v2.7: 4.55 at seeds 0+, 6.51 at 20,000+, 6.57 at 50,000+).

    python scripts/fid_spread.py assets/models/generator runs/gen_v5_model
    python scripts/fid_spread.py --training-tiles        # the real training tiles scored as a generator would be
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from pathsynth.evaluation import load_evaluator
from pathsynth.evaluation import metrics as M
from pathsynth.evaluation.protocol import generate_raw, heldout_halves, matched_query, real_split
from pathsynth.generators.embedded import EmbeddedGenerator, PathSynthPipeline
from pathsynth.tissues import NUM_TISSUES

PER_CLASS = 100
SPLITS = 8


def matched_pick(tissues: np.ndarray, real_labels: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Generated images with the real side's per-tissue counts, picked at random."""
    return [i for t in range(NUM_TISSUES)
            for i in rng.choice(np.flatnonzero(tissues == t), int((real_labels == t).sum()), replace=False)]


def half_split_fids(features: np.ndarray, labels: np.ndarray, split, heldout: np.ndarray,
                    splits: int) -> tuple[list[float], list[float]]:
    """FID of ``features`` (labelled ``labels``, picked at random in half A's tissue counts) vs half B, and its
    ratio to the real baseline A vs B, for ``splits`` stratified half-splits of the held-out fold."""
    fids, ratios = [], []
    for seed in range(splits):
        half_a, half_b = heldout_halves(split.heldout_labels, seed)
        pick = matched_pick(labels, split.heldout_labels[half_a], np.random.default_rng(seed))
        fids.append(M.frechet_distance(features[pick], heldout[half_b]))
        ratios.append(fids[-1] / M.frechet_distance(heldout[half_a], heldout[half_b]))
    return fids, ratios


def fid_spread(model_dir: str, evaluator, split, heldout: np.ndarray, train: np.ndarray) -> dict:
    tissues = np.repeat(np.arange(NUM_TISSUES), PER_CLASS)
    raw = generate_raw(EmbeddedGenerator(PathSynthPipeline.from_pretrained(model_dir)), tissues,
                       range(len(tissues)), progress=True)
    generated = evaluator.features(raw).astype(np.float64)
    fids, ratios = half_split_fids(generated, tissues, split, heldout, SPLITS)
    # all generated images in the held-out tissue mix (5x its counts, at most 100 per tissue) vs the whole fold
    whole = matched_query(tissues, np.tile(split.heldout_labels, 5), PER_CLASS)
    # the training fold has fewer than PER_CLASS tiles of every tissue, so the first n of each tissue match it
    train_matched = matched_query(tissues, split.train_labels, PER_CLASS)
    return {"fid_vs_train": float(M.frechet_distance(generated[train_matched], train)),
            "fid_mean": float(np.mean(fids)), "fid_sd": float(np.std(fids)), "ratio_mean": float(np.mean(ratios)),
            "fid_all_vs_heldout": float(M.frechet_distance(generated[whole], heldout)), "n_all": len(whole)}


def training_tiles_spread(split, heldout: np.ndarray, train: np.ndarray, splits: int = 16) -> dict:
    """The half-split FID ratio of real training-fold tiles put where generated ones go (A's per-tissue counts vs
    B): what a generator that drew exactly the training distribution would score, split by split."""
    _, ratios = half_split_fids(train, split.train_labels, split, heldout, splits)
    return {"ratios": [round(r, 3) for r in ratios], "ratio_mean": float(np.mean(ratios)),
            "ratio_median": float(np.median(ratios)), "share_above_1.5": float(np.mean(np.array(ratios) > 1.5))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("generators", nargs="*", help="generator directories (PathSynthPipeline)")
    parser.add_argument("--training-tiles", action="store_true",
                        help="also score the real training-fold tiles as if they were a generator's")
    parser.add_argument("--evaluator", default=None, help="evaluator network (default: assets/models/evaluator)")
    args = parser.parse_args()
    split, evaluator = real_split(), load_evaluator(args.evaluator)
    heldout = evaluator.features(split.heldout_images).astype(np.float64)
    train = evaluator.features(split.train_images).astype(np.float64)
    if args.training_tiles:
        print("training tiles", json.dumps(training_tiles_spread(split, heldout, train)), flush=True)
    for model_dir in args.generators:
        print(model_dir, json.dumps(fid_spread(model_dir, evaluator, split, heldout, train)), flush=True)


if __name__ == "__main__":
    main()
