import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pathsynth.classifier import (DEFAULT_CLASSIFIER_DIR, ModelFileError, TissueClassifier, gradcam_overlay,
                                 model_files_present)
from pathsynth.data import train_val_split
from sample_tiles import needs_real_data, real_tiles, sample_tiles
from tiny_models import tiny_classifier

REPO = Path(__file__).resolve().parent.parent
SHIPPED = model_files_present(DEFAULT_CLASSIFIER_DIR)


@pytest.fixture(scope="module")
def sample():
    return sample_tiles()


def test_probabilities_sum_to_one_for_any_input_form(sample):
    clf = tiny_classifier()
    images, _ = sample
    batch = clf.predict_proba(images[:5])
    assert batch.shape == (5, 9) and np.allclose(batch.sum(1), 1, atol=1e-5)
    pil = Image.fromarray(images[0]).resize((224, 224))
    gray = np.asarray(pil.convert("L"))
    rgba = np.asarray(pil.convert("RGBA"))
    sixteen = (images[0].astype(np.uint16) * 257)
    for item in (pil, gray, rgba, sixteen, images[0]):
        probs = clf.predict_proba(item)
        assert probs.shape == (1, 9) and np.isclose(probs.sum(), 1, atol=1e-5)
    tta = clf.predict_proba(images[:5], tta=True)
    assert np.allclose(tta.sum(1), 1, atol=1e-5) and not np.allclose(tta, batch)


def test_save_load_round_trip_gives_identical_predictions(tmp_path, sample):
    clf = tiny_classifier()
    clf.save_pretrained(tmp_path, fp16=False)
    again = TissueClassifier.from_pretrained(tmp_path)
    images, _ = sample
    assert np.array_equal(clf.predict_proba(images[:8]), again.predict_proba(images[:8]))
    assert clf.features(images[:3]).shape == (3, 512)


def test_an_ensemble_averages_its_members_logits_and_round_trips(tmp_path, sample):
    first, second = tiny_classifier(0), tiny_classifier(1)
    ensemble = TissueClassifier.ensemble([first, second])
    images, _ = sample
    x = torch.from_numpy(images[:6]).permute(0, 3, 1, 2).float() / 255
    expected = (first.view_logits(x, tta=True) + second.view_logits(x, tta=True)) / 2
    assert not torch.allclose(first.view_logits(x), second.view_logits(x))
    assert torch.allclose(ensemble.view_logits(x, tta=True), expected, atol=1e-5)
    assert ensemble.features(images[:3]).shape == (3, 1024)
    ensemble.save_pretrained(tmp_path, fp16=False)
    again = TissueClassifier.from_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["ensemble"] == 2
    assert sorted(f.name for f in tmp_path.glob("*.safetensors")) == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]  # one file per member
    assert np.array_equal(ensemble.predict_proba(images[:8]), again.predict_proba(images[:8]))
    assert again.gradcam(images[0]).shape == (28, 28)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelFileError, match="model-00002-of-00002"):
        TissueClassifier.from_pretrained(tmp_path)


def test_ensemble_members_must_share_their_normalisation():
    first, second = tiny_classifier(), tiny_classifier()
    second.config = {**second.config, "mean": [0.1, 0.2, 0.3]}
    with pytest.raises(ValueError, match="normalisation"):
        TissueClassifier.ensemble([first, second])


def test_gradcam_has_image_size_and_is_not_constant(sample):
    clf = tiny_classifier()
    image = np.asarray(Image.fromarray(sample[0][3]).resize((84, 84)))
    cam = clf.gradcam(image)
    assert cam.shape == (84, 84) and cam.min() >= 0 and cam.max() <= 1
    assert cam.std() > 1e-3
    overlay = gradcam_overlay(image, cam)
    assert overlay.shape == (84, 84, 3) and overlay.dtype == np.uint8


@pytest.mark.parametrize("damage", ["missing", "truncated", "mismatched"])
def test_broken_weight_files_give_a_clear_error(tmp_path, damage):
    tiny_classifier().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    if damage == "missing":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:5000])
    else:
        from safetensors.torch import save_file

        save_file({"fc.weight": torch.zeros(3, 3)}, str(weights))
    with pytest.raises(ModelFileError) as info:
        TissueClassifier.from_pretrained(tmp_path)
    assert "model.safetensors" in str(info.value) or str(tmp_path) in str(info.value)
    assert "train/classifier.py" in str(info.value)


def test_training_script_runs_end_to_end(tmp_path):
    sys.path.insert(0, str(REPO))
    from train.classifier import Config, main

    images, labels = sample_tiles()
    keep = np.concatenate([np.where(labels == t)[0][:10] for t in range(9)])
    data = tmp_path / "tiny.npz"
    np.savez(data, train_images=images[keep], train_labels=labels[keep, None])
    main(Config(data=str(data), epochs=1, batch_size=16, out_dir=str(tmp_path / "run"), threads=1))
    model = TissueClassifier.from_pretrained(tmp_path / "run" / "model")
    from pathsynth.verify import RealismReference

    reference = RealismReference.load(tmp_path / "run" / "model")  # shipped with the weights: features, no pixels
    assert reference is not None and len(reference.labels) == 90 and reference.size == 28
    assert reference.features.shape == (90, 512)
    assert model.predict_proba(images[:2]).shape == (2, 9)
    summary = json.loads((tmp_path / "run" / "model" / "training_summary.json").read_text())
    assert summary["train_images"] == 72 and "val_tta" in summary and "val_tta_ema" in summary
    assert summary["temperature"] > 0 and model.temperature == summary["temperature"]
    assert len(model.config["stain_reference"]["he_ref"]) == 3
    assert (tmp_path / "run" / "log.csv").read_text().count("\n") == 2


def test_distillation_runs_and_its_loss_is_zero_only_when_the_student_matches_the_teacher(tmp_path):
    sys.path.insert(0, str(REPO))
    from train.classifier import Config, distillation_loss, main

    logits = torch.randn(4, 9)
    assert float(distillation_loss(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits, logits.flip(0), 2.0)) > 0.01
    images, labels = sample_tiles()
    keep = np.concatenate([np.where(labels == t)[0][:10] for t in range(9)])
    data = tmp_path / "tiny.npz"
    np.savez(data, train_images=images[keep], train_labels=labels[keep, None])
    main(Config(data=str(data), epochs=1, batch_size=16, out_dir=str(tmp_path / "teacher"), threads=1))
    main(Config(data=str(data), epochs=1, batch_size=16, out_dir=str(tmp_path / "student"), threads=1,
                teacher=str(tmp_path / "teacher" / "model")))
    summary = json.loads((tmp_path / "student" / "model" / "training_summary.json").read_text())
    assert summary["teacher"].endswith("model") and "val_tta" in summary
    # A teacher trained on other images (another normalisation) is refused before any training.
    other = tmp_path / "other"
    tiny_classifier().save_pretrained(other)
    with pytest.raises(SystemExit, match="other images"):
        main(Config(data=str(data), epochs=1, batch_size=16, out_dir=str(tmp_path / "bad"), threads=1,
                    teacher=str(other)))


@pytest.mark.skipif(not SHIPPED, reason="shipped classifier not trained yet")
@needs_real_data
def test_shipped_model_scores_well_above_chance_on_unseen_images():
    clf = TissueClassifier.from_pretrained(DEFAULT_CLASSIFIER_DIR)
    images, labels = real_tiles()
    _, val_idx = train_val_split(labels)
    accuracy = (clf.predict(images[val_idx]) == labels[val_idx]).mean()
    assert accuracy > 0.6  # chance is ~0.11


def test_classify_cli_json_contract(tmp_path, sample):
    paths = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(sample[0][i]).save(path)
        paths.append(str(path))
    model_dir = tmp_path / "model"
    tiny_classifier().save_pretrained(model_dir)
    run = subprocess.run([sys.executable, "-m", "pathsynth", "classify", *paths, "--model", str(model_dir), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert [p["path"] for p in result["predictions"]] == paths
    assert all(0 <= p["tissue"] < 9 and abs(sum(p["probabilities"].values()) - 1) < 1e-2 for p in result["predictions"])
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    run = subprocess.run([sys.executable, "-m", "pathsynth", "classify", str(bad), "--model", str(model_dir), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 2
    assert "not a readable image" in run.stderr and "Traceback" not in run.stderr
    assert "error" in json.loads(run.stdout.strip().splitlines()[-1])


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    from pathsynth.classifier import fit_temperature

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 9, generator=generator) * 3
    labels = torch.multinomial((logits / 2.0).softmax(-1), 1, generator=generator)[:, 0]
    assert fit_temperature(logits, labels.numpy()) == pytest.approx(2.0, rel=0.1)


def test_temperature_changes_confidence_not_predictions(sample):
    clf = tiny_classifier()
    images = sample[0][:20]
    raw = clf.predict_proba(images)
    clf.temperature = 3.0
    tempered = clf.predict_proba(images)
    assert np.array_equal(raw.argmax(1), tempered.argmax(1))
    assert tempered.max(1).mean() < raw.max(1).mean()
    assert np.allclose(clf.predict_proba(images, calibrated=False), raw, atol=1e-6)


def test_predict_external_prepares_and_explains_each_image(sample):
    from pathsynth.stain import fit_stain_reference

    clf = tiny_classifier()
    clf.config["stain_reference"] = fit_stain_reference(sample[0][:100])
    tile = np.asarray(Image.fromarray(sample[0][5]).resize((150, 150)))
    probs, notes = clf.predict_external([tile, Image.fromarray(tile).convert("RGBA")], microns_per_pixel=0.495)
    assert probs.shape == (2, 9) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert all(any("um/px" in n for n in image_notes) for image_notes in notes)
    assert any("stain-normalised" in n for n in notes[0])
    _, unnormalised = tiny_classifier().predict_external(tile)
    assert "no stain reference" in unnormalised[0][0]
