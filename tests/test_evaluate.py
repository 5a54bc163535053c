import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from pathsynth.data import train_val_split
from sample_tiles import real_tiles, sample_tiles
from pathsynth.evaluation import metrics as M
from pathsynth.evaluation import protocol as P
from pathsynth.evaluation import report as R
from pathsynth.tissues import LABELS, NUM_TISSUES
from tiny_models import tiny_classifier, tiny_generator

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == PNG_MAGIC


# ------------------------------------------------------------------------------------ classification

def test_classification_report_hand_made():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 1, 2]
    report = M.classification_report(y_true, y_pred)
    # tissue 0: P 2/2, R 2/3, F1 0.8; tissue 1: P 2/3, R 2/2, F1 0.8; tissue 2: P = R = F1 = 1
    assert report["accuracy"] == pytest.approx(5 / 6)
    assert report["macro_f1"] == pytest.approx((0.8 + 0.8 + 1.0) / 3)
    assert report["macro_precision"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert report["macro_recall"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    adipose, background = report["per_class"][LABELS[0]], report["per_class"][LABELS[1]]
    assert (adipose["precision"], adipose["recall"], adipose["f1"], adipose["support"]) == pytest.approx((1, 2 / 3, 0.8, 3))
    assert background["precision"] == pytest.approx(2 / 3) and background["support"] == 2
    assert list(report["per_class"]) == list(LABELS)
    absent = report["per_class"][LABELS[8]]  # never seen nor predicted: no score, no effect on the macro
    assert absent["support"] == 0 and absent["f1"] is None
    assert report["auc_macro"] is None
    assert np.asarray(report["confusion_matrix"]).sum() == 6
    assert report["confusion_matrix"][0][1] == 1
    # Same numbers as scikit-learn's macro averages over the present labels.
    assert report["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert report["macro_precision"] == pytest.approx(precision_score(y_true, y_pred, average="macro"))
    assert report["macro_recall"] == pytest.approx(recall_score(y_true, y_pred, average="macro"))


def test_wilson_interval_known_values():
    # 5/6 at 95 %: the textbook Wilson interval is (0.4365, 0.9699).
    assert M.accuracy_interval(5, 6) == pytest.approx((0.4365, 0.9699), abs=1e-4)
    low, high = M.accuracy_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert M.classification_report([0] * 6, [0] * 5 + [1])["accuracy_ci95"] == pytest.approx([0.4365, 0.9699], abs=1e-4)


def test_auc_one_vs_rest():
    rng = np.random.default_rng(0)
    y_true = np.repeat(np.arange(NUM_TISSUES), 10)
    perfect = np.eye(NUM_TISSUES)[y_true] * 0.9 + 0.1 / NUM_TISSUES
    assert M.classification_report(y_true, y_true, perfect)["auc_macro"] == pytest.approx(1.0)
    noisy = rng.dirichlet(np.ones(NUM_TISSUES), len(y_true))
    report = M.classification_report(y_true, noisy.argmax(1), noisy)
    assert report["auc_macro"] == pytest.approx(roc_auc_score(y_true, noisy, multi_class="ovr", average="macro"))


@pytest.mark.parametrize("y_true,y_pred", [([0, 1], [0]), ([0, 9], [0, 1]), ([-1], [0])])
def test_classification_report_rejects_bad_labels(y_true, y_pred):
    with pytest.raises(ValueError):
        M.classification_report(y_true, y_pred)


# ----------------------------------------------------------------------------------------- FID / KID

def test_fid_identical_is_zero_and_shift_is_positive():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 8))
    assert M.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    shifted = feats + 1.0  # same covariance, mean moved by 1 in 8 dimensions -> FID exactly 8
    assert M.frechet_distance(feats, shifted) == pytest.approx(8.0, rel=1e-6)


def test_fid_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))  # = 5 + 2 = 7
    assert closed == pytest.approx(7.0)
    rng = np.random.default_rng(1)
    a = mu1 + rng.normal(size=(40_000, 3)) * np.sqrt(var1)
    b = mu2 + rng.normal(size=(40_000, 3)) * np.sqrt(var2)
    assert M.frechet_distance(a, b) == pytest.approx(closed, rel=0.03)


def test_fid_with_fewer_samples_than_dimensions_is_finite():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(12, 64)), rng.normal(size=(12, 64)) + 0.5
    value = M.frechet_distance(a, b)
    assert math.isfinite(value) and value > 0
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-5)


def test_whole_fold_fid_compares_like_with_like():
    """Generated features equal to the training tiles' score exactly the real baseline (ratio 1); a shifted copy
    scores worse; both sides take the same per-tissue counts, capped by per_class."""
    rng = np.random.default_rng(0)
    train_labels = np.repeat(np.arange(NUM_TISSUES), [6, 5, 4, 6, 5, 4, 6, 5, 4])
    heldout_labels = np.repeat(np.arange(NUM_TISSUES), 3)
    split = P.RealSplit(np.zeros((len(train_labels), 2, 2, 3)), train_labels, np.zeros((len(heldout_labels), 2, 2, 3)),
                        heldout_labels)
    train = rng.normal(size=(len(train_labels), 4))
    tissues = np.repeat(np.arange(NUM_TISSUES), 5)  # per_class 5: tissues with 6 training tiles use their first 5
    # 5 generated per tissue: the training tiles themselves, padded with unused extras where a tissue has only 4
    as_train = np.concatenate([np.concatenate([train[train_labels == t][:5], rng.normal(size=(5, 4))])[:5]
                               for t in range(NUM_TISSUES)])
    feats = {"train": train, "heldout": rng.normal(size=(len(heldout_labels), 4)), "raw": as_train}
    same = P.whole_fold_fid(feats, tissues, split, per_class=5)
    assert same["fid_whole_fold_ratio"] == pytest.approx(1.0)
    assert same["fid_whole_fold_n_query"] == 5 * 3 + 5 * 3 + 4 * 3
    shifted = P.whole_fold_fid(feats | {"raw": as_train + 2.0}, tissues, split, per_class=5)
    assert shifted["fid_whole_fold"] > same["fid_whole_fold"] + 10
    assert shifted["fid_whole_fold_real_baseline"] == pytest.approx(same["fid_whole_fold_real_baseline"])


def test_kid_near_zero_for_identical_and_positive_for_shift():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(200, 16))
    same, same_std = M.kernel_inception_distance(feats, feats, subsets=20, subset_size=100)
    fresh, fresh_std = M.kernel_inception_distance(feats, rng.normal(size=(200, 16)), subsets=20, subset_size=100)
    shifted, _ = M.kernel_inception_distance(feats, feats + 1.0, subsets=20, subset_size=100)
    assert shifted > 1.0 and same_std >= 0
    # Identical sets are not independent samples, so the unbiased estimate sits a little below 0; an
    # independent sample of the same distribution is 0 within noise. Both are ~100x below a real shift.
    assert abs(same) < 0.02 * shifted and abs(fresh) < 3 * fresh_std + 0.01
    with pytest.raises(ValueError):
        M.kernel_inception_distance(feats[:1], feats)


# -------------------------------------------------------------------------------------- memorisation

def test_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(4)
    query, reference = rng.normal(size=(37, 5)), rng.normal(size=(300, 5))
    distances, indices = M.nearest_neighbours(query, reference)
    full = np.linalg.norm(query[:, None] - reference[None], axis=-1)
    np.testing.assert_array_equal(indices, full.argmin(1))
    np.testing.assert_allclose(distances, full.min(1), rtol=1e-9)


def test_near_copy_detection_finds_an_injected_copy():
    rng = np.random.default_rng(5)
    train, heldout, generated = rng.normal(size=(300, 32)), rng.normal(size=(150, 32)), rng.normal(size=(60, 32))
    generated[7] = train[42]
    found = M.near_copies(generated, train, heldout, percentile=1.0)
    assert found["is_copy"][7] and found["indices"][7] == 42 and found["distances"][7] < 1e-6
    # Unseen samples of the training distribution are rarely flagged (~1 % by construction, noisy at n=150).
    assert found["is_copy"].mean() <= 0.1
    assert not M.near_copies(generated + 10.0, train, heldout)["is_copy"].any()


# ------------------------------------------------------------------------------ precision / recall, C2ST

def test_precision_recall_separates_fidelity_from_diversity():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(400, 4))
    same = M.generative_precision_recall(real, rng.normal(size=(400, 4)))
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    collapsed = M.generative_precision_recall(real, rng.normal(size=(400, 4)) * 0.1)  # faithful, not diverse
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.3
    off = M.generative_precision_recall(real, rng.normal(size=(400, 4)) + 6.0)  # neither
    assert off["precision"] < 0.05 and off["recall"] < 0.05
    with pytest.raises(ValueError):
        M.generative_precision_recall(real[:3], real)


def test_two_sample_scores_chance_and_perfect():
    is_generated = np.r_[np.zeros(50), np.ones(50)]
    assert M.two_sample_scores(is_generated, is_generated * 0.8 + 0.1) == pytest.approx(
        {"balanced_accuracy": 1.0, "auc": 1.0, "n_real": 50, "n_generated": 50})
    chance = M.two_sample_scores(is_generated, np.full(100, 0.3))
    assert chance["balanced_accuracy"] == 0.5 and chance["auc"] == 0.5
    assert M.two_sample_scores(np.ones(5), np.ones(5))["auc"] is None  # one side only: no test


class ArrayGenerator:
    """A 'generator' that hands out given images per tissue (real ones, or altered ones)."""

    name = "arrays"

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def generate(self, tissues, seeds):
        out = []
        for t, s in zip(tissues, seeds):
            pool = np.flatnonzero(self.labels == t)
            out.append(self.images[pool[s % len(pool)]])
        return np.stack(out)


def test_c2st_tells_altered_images_from_real_but_not_real_from_real(full_split):
    split = full_split
    fake = ArrayGenerator(split.heldout_images, split.heldout_labels)  # real images the discriminator never saw
    tissues = np.repeat(np.arange(NUM_TISSUES), 10)
    raw = P.generate_raw(fake, tissues, range(len(tissues)), progress=False)
    same = P.c2st_stage(fake, raw, tissues, split, seed=0, epochs=8, progress=False)
    inverted = ArrayGenerator(255 - split.train_images, split.train_labels)  # obviously not tissue
    raw_inverted = P.generate_raw(inverted, tissues, range(len(tissues)), progress=False)
    altered = P.c2st_stage(inverted, raw_inverted, tissues, split, seed=0, epochs=8, progress=False)
    assert altered["c2st_balanced_accuracy"] > 0.95 and altered["c2st_auc"] > 0.98
    assert same["c2st_balanced_accuracy"] < 0.75  # real vs real: near chance (small test set, some noise)
    assert set(altered["c2st_per_tissue"]) == set(LABELS)


# --------------------------------------------------------------------------------------------- plots

def test_plots_are_written(tmp_path):
    cm = np.arange(81).reshape(9, 9)
    path = R.plot_confusion_matrix(cm, tmp_path / "cm.png", "test")
    assert path.is_file() and _is_png(path) and path.stat().st_size > 5000
    bars = R.plot_f1_comparison([0.5] * 9, [0.9] * 8 + [None], tmp_path / "bars.png")
    assert _is_png(bars)
    images = np.random.default_rng(6).integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)
    pairs = [{"gen_index": 0, "train_index": 1, "distance": 0.0, "tissue": 0, "train_tissue": 0, "is_copy": True},
             {"gen_index": 2, "train_index": 3, "distance": 1.5}]
    assert _is_png(R.plot_near_copy_pairs(images, images, pairs, tmp_path / "pairs.png"))
    # a tissue with no images leaves its row blank instead of failing
    grid = R.plot_sample_grid(images, [0, 0, 3, 8], tmp_path / "grid.png", images, [1, 2, 3, 4], per_tissue=2)
    assert _is_png(grid)


# ---------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def real_split():
    images, labels = sample_tiles()  # real when PATHSYNTH_DATA names a file, else generated
    train_idx, val_idx = train_val_split(labels)
    rng = np.random.default_rng(0)
    train_idx = rng.choice(train_idx, min(90, len(train_idx)), replace=False)
    val_idx = rng.choice(val_idx, min(45, len(val_idx)), replace=False)
    return P.RealSplit(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx])


@pytest.fixture(scope="module")
def full_split():
    real_tiles()  # skips without real data
    return P.real_split()


def test_evaluate_classifier_writes_report(tmp_path, real_split):
    images, labels = real_split.heldout_images, real_split.heldout_labels
    result = P.evaluate_classifier(tiny_classifier(), images, labels, out_dir=tmp_path, tta=False, progress=False)
    for key in ("accuracy", "macro_f1", "per_class", "n", "auc_macro", "accuracy_ci95", "confusion_matrix_png"):
        assert key in result
    assert result["n"] == len(labels) and 0 <= result["accuracy"] <= 1 and result["tta"] is False
    assert _is_png(result["confusion_matrix_png"])
    assert json.loads((tmp_path / "classifier_report.json").read_text())["n"] == len(labels)
    assert "| tissue" in (tmp_path / "classifier_report.md").read_text()
    json.dumps(result, allow_nan=False)
@dataclass
class StubResult:
    image: np.ndarray
    tissue: int
    verified: bool
    attempts: int
    seed: int


class StubVerifier:
    """Deterministic loop outcomes: even tissues verify at attempt 1, odd ones at attempt 3, tissue 8 never."""

    def __init__(self, generator, classifier):
        self.generator, self.classifier = generator, classifier
        self.progress_calls = 0

    def generate(self, tissues, seed=None, progress=None):
        seeds = [seed * 7919 + i for i in range(len(tissues))]
        images = self.generator.generate(list(tissues), seeds)
        if progress:
            progress(0.5, "half way")
            self.progress_calls += 1
        return [StubResult(images[i], t, verified=t != 8, attempts=1 if t % 2 == 0 and t != 8 else 3, seed=s)
                for i, (t, s) in enumerate(zip(tissues, seeds))]


REQUIRED_KEYS = ("macro_f1_raw", "macro_f1_verified", "per_class", "fid", "fid_real_baseline", "fid_ratio", "kid",
                 "kid_real_baseline", "precision", "recall", "precision_real_baseline", "c2st_balanced_accuracy",
                 "c2st_auc", "near_copy_rate", "cas_accuracy", "real_trained_accuracy", "first_try_acceptance",
                 "mean_attempts", "max_attempts", "never_verified_rate", "n_generated", "timings", "pngs")


def test_evaluate_generator_end_to_end(tmp_path, real_split):
    classifier = tiny_classifier()
    verifier = StubVerifier(tiny_generator(steps=2), classifier)
    result = P.evaluate_generator(verifier, real_split, tiny_classifier(seed=1), per_class=4, out_dir=tmp_path,
                                  seed=1, cas_epochs=1, c2st_epochs=1, kid_subsets=5, progress=False)
    for key in REQUIRED_KEYS:
        assert key in result, key
    assert result["n_generated"] == 36 and verifier.progress_calls == 1
    # Loop statistics from the stub's known outcomes: tissues 0, 2, 4, 6 pass first time (16 of 36 images).
    assert result["first_try_acceptance"] == pytest.approx(16 / 36)
    assert result["never_verified_rate"] == pytest.approx(4 / 36)
    assert result["max_attempts"] == 3 and result["mean_attempts"] == pytest.approx((16 * 1 + 20 * 3) / 36)
    assert result["per_class"][LABELS[8]]["never_verified_rate"] == 1.0
    assert result["per_class"][LABELS[0]]["first_try_acceptance"] == 1.0
    assert set(result["per_class"]) == set(LABELS)
    assert 0 <= result["macro_f1_raw"] <= 1 and 0 <= result["near_copy_rate"] <= 1
    assert result["fid"] >= 0 and result["fid_real_baseline"] >= 0
    assert result["fid_whole_fold"] >= 0 and result["fid_whole_fold_real_baseline"] >= 0
    train_counts = np.bincount(real_split.train_labels, minlength=NUM_TISSUES)
    assert result["fid_whole_fold_n_query"] == np.minimum(4, train_counts).sum()  # 4 per tissue, as training has
    assert 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
    assert 0 <= result["c2st_balanced_accuracy"] <= 1
    assert 0 <= result["cas_accuracy"] <= 1
    assert len(result["nearest_pairs"]) == 8
    for name in ("confusion_raw", "confusion_verified", "f1_bars", "near_copies", "samples"):
        assert _is_png(result["pngs"][name]), name
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["macro_f1_raw"] == result["macro_f1_raw"]
    markdown = (tmp_path / "report.md").read_text()
    assert "C2ST balanced accuracy" in markdown and "TUM" in markdown
    json.dumps(result, allow_nan=False)


def test_evaluate_generator_refuses_the_verifier_as_evaluator(real_split):
    classifier = tiny_classifier()
    with pytest.raises(ValueError, match="evaluator"):
        P.evaluate_generator(StubVerifier(tiny_generator(steps=2), classifier), real_split, classifier, per_class=1)


def test_realism_curve_reads_snapshots(tmp_path, real_split):
    for step in (10, 20):
        snapshot = tmp_path / "snapshots" / f"step_{step:06d}"
        tiny_generator(seed=step).pipeline.save_pretrained(str(snapshot))
        (snapshot / "progress.json").write_text(json.dumps({"step": step, "elapsed": 1.0}))
    rows = P.realism_curve(tmp_path, tiny_classifier(seed=1), real_split, step_offset=100, per_class=3,
                           c2st_epochs=1, progress=False)
    assert [r["step"] for r in rows] == [110, 120]
    assert all(0 <= r["c2st_balanced_accuracy"] <= 1 and r["fid"] >= 0 for r in rows)
    assert _is_png(tmp_path / "realism.png") and len((tmp_path / "realism.csv").read_text().splitlines()) == 3
    assert P.realism_curve(tmp_path, tiny_classifier(seed=1), real_split, progress=False) == rows  # nothing redone


# --------------------------------------------------------------------- classifier calibration/robustness

def test_expected_calibration_error_by_hand():
    from pathsynth.evaluation.robustness import expected_calibration_error

    def row(top_class, confidence):
        probs = np.full(NUM_TISSUES, (1 - confidence) / (NUM_TISSUES - 1))
        probs[top_class] = confidence
        return probs

    probs = np.stack([row(0, 0.9), row(0, 0.9), row(1, 0.6), row(2, 0.6)])
    labels = np.array([0, 3, 1, 2])  # 0.9 bin: accuracy 0.5 (gap 0.4); 0.6 bin: accuracy 1 (gap 0.4)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4, abs=1e-5)


def test_evaluate_classifier_reports_calibration_stain_shift_and_external_tiles(tmp_path, real_split):
    from PIL import Image

    external = tmp_path / "kather"
    external.mkdir()
    for name, image in (("01_TUMOR__a.png", real_split.heldout_images[0]), ("07_ADIPOSE__b.png", real_split.heldout_images[1]),
                        ("03_COMPLEX__c.png", real_split.heldout_images[2])):  # COMPLEX has no PathMNIST match
        Image.fromarray(image).resize((150, 150)).save(external / name)
    (external / "README.md").write_text("not a tile")
    classifier = tiny_classifier()
    classifier.temperature = 1.7
    result = P.evaluate_classifier(classifier, real_split.heldout_images, real_split.heldout_labels,
                                   out_dir=tmp_path / "report", tta=False, progress=False, external_dir=external)
    calibration = result["calibration"]
    assert calibration["temperature"] == 1.7 and len(calibration["temperatures_cross_fitted"]) == 2
    for key in ("ece_uncalibrated", "ece_cross_fitted", "ece_shipped_in_sample"):
        assert 0 <= calibration[key] <= 1
    assert sum(calibration["reliability_cross_fitted"]["count"]) == len(real_split.heldout_labels)
    assert _is_png(result["reliability_png"])
    assert set(result["stain_shift"]) >= {"none", "other lab's stain (Macenko re-staining)"}
    assert result["external"]["n"] == 2 and result["external"]["labels"] == [8, 0]
    assert len(result["external"]["modes"]) == 5
    markdown = (tmp_path / "report" / "classifier_report.md").read_text()
    assert "## Calibration" in markdown and "Tiles from another lab (2 tiles" in markdown
    json.dumps(result, allow_nan=False)


def test_external_tiles_are_skipped_without_a_folder(monkeypatch):
    from pathsynth.evaluation.robustness import EXTERNAL_ENV, external_tiles_stage

    monkeypatch.delenv(EXTERNAL_ENV, raising=False)
    assert external_tiles_stage(tiny_classifier()) is None
