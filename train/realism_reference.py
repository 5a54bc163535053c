"""Ship the verifier's realism reference with a classifier: its features of real tiles (numbers, never pixels).

The verifier accepts a generated image only when its classifier features lie as close to real tiles of its tissue
as real tiles do to each other (``pathsynth.verify.RealismCheck``). So the app works with no dataset on the machine,
the features of ``REFERENCE_TILES`` real tiles (of the data the classifier was trained on) go beside its weights as
``realism_reference.safetensors``, named by the digest of those weights. ``train/classifier.py`` and
``train/classifier_ensemble.py`` write it at export; this script (re)makes it for a classifier already exported.

    python train/realism_reference.py --data ../shared/data/pathmnist_train_0000_0799.npz   # the shipped classifier
    python train/realism_reference.py --classifier runs/classifier/model --data medmnist
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from transformers import HfArgumentParser

from pathsynth.classifier import load_classifier
from pathsynth.data import data_source_name, load_training_data
from pathsynth.settings import DEFAULT_CLASSIFIER_DIR
from pathsynth.verify import REFERENCE_TILES, reference_from_splits


@dataclass
class Config:
    classifier: str = str(DEFAULT_CLASSIFIER_DIR)  # the exported classifier directory to write the reference into
    data: str | None = None  # the classifier's training data: npz path, "medmnist", or None for $PATHSYNTH_DATA
    count: int = REFERENCE_TILES  # real tiles (stratified) whose features are kept
    fold: int = 0


def main(cfg: Config) -> None:
    started = time.perf_counter()
    classifier = load_classifier(cfg.classifier)
    splits = load_training_data(cfg.data, classifier.input_size, fold=cfg.fold)
    reference = reference_from_splits(classifier, splits, data_source_name(cfg.data), cfg.count)
    path = reference.save(cfg.classifier)
    print(f"realism reference of {len(reference.labels)} tiles ({reference.features.shape[1]} features each) "
          f"saved to {path} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main(HfArgumentParser(Config).parse_args_into_dataclasses()[0])
