"""Join classifiers trained by train/classifier.py into one ensemble model (their logits averaged).

Independently trained runs make different mistakes on few images; averaging them is the cheapest accuracy
and calibration gain there is. The members must have been trained on the same images (same data and fold:
they share the input normalisation). The temperature is refitted on the held-out fold, as train/classifier.py
does for one network, and the stain reference is kept from the first member.

    python train/classifier_ensemble.py --members runs/c_s0/model runs/c_s1/model --export_dir runs/ensemble
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from pathsynth.classifier import TissueClassifier, fit_temperature
from pathsynth.data import data_source_name, load_training_data, to_tensor
from pathsynth.images import microns_per_pixel
from pathsynth.verify import reference_from_splits


@dataclass
class Config:
    members: list[str] = field(default_factory=list)  # model directories written by train/classifier.py
    data: str | None = None  # the members' training data (for the held-out fold the temperature is fitted on)
    size: int = 0  # tile size of the held-out data: 0 = the members' (they must share one)
    fold: int = 0
    export_dir: str = "runs/classifier_ensemble"
    fp16_export: bool = True


def main(cfg: Config) -> None:
    if len(cfg.members) < 2:
        raise SystemExit("give at least two --members")
    members = [TissueClassifier.from_pretrained(path) for path in cfg.members]
    sizes = {member.input_size for member in members}
    if len(sizes) > 1 or (cfg.size and cfg.size not in sizes):
        raise SystemExit(f"the members take {sorted(sizes)} px tiles (--size {cfg.size or 'from the members'}): "
                         "an ensemble's members and its held-out data share one tile size")
    size = sizes.pop()
    ensemble = TissueClassifier.ensemble(members)
    splits = load_training_data(cfg.data, size, fold=cfg.fold)
    val_images, val_labels = splits["val"]
    val_x = to_tensor(val_images)
    ensemble.config["temperature"] = ensemble.temperature = fit_temperature(ensemble.view_logits(val_x), val_labels)
    accuracy = float((ensemble.predict(val_x) == val_labels).mean())
    summaries = [json.loads((Path(path) / "training_summary.json").read_text())
                 if (Path(path) / "training_summary.json").is_file() else {} for path in cfg.members]
    summary = {**asdict(cfg), "image_size_px": size, "microns_per_pixel": microns_per_pixel(size),
               "val_tta_accuracy": accuracy, "temperature": ensemble.temperature,
               "train_seconds": round(sum(s.get("train_seconds", 0.0) for s in summaries), 1),
               "member_summaries": summaries}
    export = Path(cfg.export_dir)
    ensemble.save_pretrained(export, fp16=cfg.fp16_export)
    reference_from_splits(ensemble, splits, data_source_name(cfg.data)).save(export)  # realism, no pixels
    (export / "training_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"ensemble of {len(members)}: held-out accuracy {accuracy:.4f}, T = {ensemble.temperature}; saved to {export}")


if __name__ == "__main__":
    main(HfArgumentParser(Config).parse_args_into_dataclasses()[0])
