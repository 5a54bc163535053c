"""Domains as data (issue 33): the registry, chest X-ray films beside histology tiles, greyscale models, --domain.

The real-film tests run where ``$PATHSYNTH_DATA_PNEUMONIAMNIST`` names PneumoniaMNIST in medmnist's layout (CI: the
shared data beside the checkout); the others use small synthetic films.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pathsynth.classifier import TissueClassifier, build_resnet18
from pathsynth.data import load_domain
from pathsynth.domains import DOMAIN_FLAGS, DOMAINS, get_domain
from pathsynth.errors import DataUnavailableError, UnknownTissueError
from pathsynth.generators.embedded import EmbeddedGenerator, PathSynthPipeline, build_inference_scheduler, build_unet
from pathsynth.settings import Settings, data_for, model_dir
from pathsynth.tissues import CONFUSABLE_PAIRS, TISSUES

REPO = Path(__file__).resolve().parent.parent
XRAY = get_domain("pneumoniamnist")
FILMS_ENV = XRAY.data_env
films_file = os.environ.get(FILMS_ENV, "").strip()
needs_films = pytest.mark.skipif(not films_file or not Path(films_file).is_file(),
                                 reason=f"needs PneumoniaMNIST: set {FILMS_ENV} to its npz (CI does)")


def synthetic_films(count: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Grey 28 px 'films' in medmnist's (N, 28, 28) layout: dark lungs either side of a bright centre, hazier
    (brighter lungs) for label 1."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    films = np.full((count, 28, 28), 90.0)
    films[:, :, 11:17] = 190.0
    films[labels == 1, 4:22, 3:11] += 60.0
    films += rng.normal(0, 8, films.shape)
    return np.clip(films, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_films(path: Path) -> Path:
    train, train_labels = synthetic_films(64, seed=0)
    val, val_labels = synthetic_films(32, seed=1)
    np.savez(path, train_images=train, train_labels=train_labels[:, None], val_images=val,
             val_labels=val_labels[:, None])
    return path


def tiny_film_classifier(seed: int = 0) -> TissueClassifier:
    torch.manual_seed(seed)
    return TissueClassifier(build_resnet18(2, in_channels=1),
                            {"domain": "pneumoniamnist", "num_classes": 2, "in_channels": 1, "mean": [0.5],
                             "std": [0.25], "input_size": 28, "tta": True, "test_time_views": "hflip"})


def test_every_domain_is_medmnists_and_the_registry_names_them():
    assert DOMAIN_FLAGS == ("pathmnist", "pneumoniamnist")
    for domain in DOMAINS.values():
        assert domain.matches_medmnist(), domain.flag  # labels in medmnist's order, and its channel count
        assert [c.index for c in domain.classes] == list(range(domain.num_classes))
    assert get_domain(None) is get_domain("PathMNIST ") is DOMAINS["pathmnist"]
    with pytest.raises(ValueError, match="pathmnist, pneumoniamnist"):
        get_domain("chestmnist")


def test_histology_is_the_tissue_catalogue_unchanged():
    histology = get_domain("pathmnist")
    assert histology.classes is TISSUES and histology.pairs is CONFUSABLE_PAIRS
    assert (histology.channels, histology.size, histology.units_per_pixel, histology.unit) == (3, 28, 4.0, "µm")
    assert histology.class_index("tum") == 8 and histology.class_noun == "tissue"


def test_a_finding_is_looked_up_like_a_tissue_and_others_are_refused_by_name():
    assert [XRAY.class_index(key) for key in ("normal", "PNA", "Normal film", 1, "pneumonia")] == [0, 1, 0, 1, 1]
    assert XRAY.display_names == ("Normal film", "Pneumonia") and XRAY.channels == 1
    with pytest.raises(UnknownTissueError, match=r"unknown finding 'TUM' in Chest X-ray.*normal, pneumonia"):
        XRAY.class_index("TUM")
    with pytest.raises(UnknownTissueError, match="out of range 0-1"):
        XRAY.class_index(2)
    assert XRAY.confusable_pair("PNA", "normal") is XRAY.pairs[0]


def test_film_text_claims_only_what_28_px_shows_and_keeps_the_rest_labelled():
    """Signs that need a full-resolution film stay out of the visible-scale text; they are in ``magnified``."""
    fine_signs = ("bronchogram", "silhouette sign", "vessel", "nodule", "effusion", "costophrenic", "rib")
    for finding in XRAY.classes:
        assert not any(sign in finding.description.lower() for sign in fine_signs), finding.label
    assert any(sign in XRAY.classes[1].magnified.lower() for sign in fine_signs)
    shown = XRAY.teaching_text("pneumonia", magnified=True)
    assert shown.startswith(XRAY.classes[1].description) and "(not visible at 28 px)" in shown
    assert "diagnosis" in XRAY.caution


def lung_and_centre(films: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per film: mean brightness of both lung fields (outer columns, rows 6-19) and of the central column."""
    grey = films.astype(float).mean(-1) if films.ndim == 4 else films.astype(float)
    lungs = np.concatenate([grey[:, 6:20, 4:11].reshape(len(grey), -1), grey[:, 6:20, 17:24].reshape(len(grey), -1)], 1)
    return lungs.mean(1), grey[:, 6:22, 12:16].reshape(len(grey), -1).mean(1)


@needs_films
def test_the_film_teaching_text_holds_on_the_real_films():
    """What the text says tells normal from pneumonia at 28 px, measured on the training films: normal lungs are
    darker, with a larger step to the bright centre (strong contrast) and sharper edges."""
    films, labels = load_domain(XRAY, "train")
    lungs, centre = lung_and_centre(films)
    edges = np.abs(np.diff(films[..., 0].astype(float), axis=2)).mean(axis=(1, 2))
    normal, pneumonia = labels == 0, labels == 1
    assert np.median(lungs[normal]) < np.median(lungs[pneumonia]) - 10  # "lighter, greyer" lungs with pneumonia
    step = centre - lungs
    assert np.median(step[normal]) > np.median(step[pneumonia]) + 10  # "less contrast ... with the heart"
    assert np.median(edges[normal]) > 1.3 * np.median(edges[pneumonia])  # "sharp" vs "blurred" outlines
    assert np.median(centre) > np.median(lungs) + 30  # the bright central column both texts start from


@needs_films
def test_films_load_display_ready_with_their_official_splits():
    films, labels = load_domain(XRAY, "val")
    assert films.shape == (524, 28, 28, 3) and films.dtype == np.uint8
    assert (films[..., 0] == films[..., 2]).all() and np.bincount(labels).tolist() == [135, 389]
    with pytest.raises(DataUnavailableError, match="no 'test' split"):
        load_domain(XRAY, "test")


def test_a_domains_data_comes_from_its_own_setting_or_a_message_naming_it(tmp_path, monkeypatch):
    settings = Settings.from_env({"PATHSYNTH_DATA": "/tiles.npz", "PATHSYNTH_DATA_PNEUMONIAMNIST": " /films.npz "})
    assert data_for(settings, "pathmnist") == "/tiles.npz" and data_for(settings, "pneumoniamnist") == "/films.npz"
    assert model_dir(settings, "pneumoniamnist", "classifier") == settings.assets / "models/pneumoniamnist/classifier"
    films = write_films(tmp_path / "films.npz")
    monkeypatch.setenv(FILMS_ENV, str(films))
    images, labels = load_domain(XRAY, "val")
    assert images.shape == (32, 28, 28, 3) and set(labels.tolist()) == {0, 1}
    monkeypatch.delenv(FILMS_ENV)
    monkeypatch.setenv("PATHSYNTH_MEDMNIST_ROOT", str(tmp_path / "empty"))
    with pytest.raises(DataUnavailableError, match=f"Chest X-ray data.*{FILMS_ENV}=PATH"):
        load_domain(XRAY, "train", download=False)


def test_a_greyscale_classifier_takes_display_ready_films_and_round_trips(tmp_path):
    classifier = tiny_film_classifier()
    assert classifier.model.conv1.in_channels == 1
    films = np.repeat(synthetic_films(6)[0][..., None], 3, axis=-1)
    assert classifier.view_logits(films).shape == (2, 6, 2)  # the film and its left-right mirror
    assert classifier.view_logits(films, tta=False).shape == (1, 6, 2)
    classifier.save_pretrained(tmp_path / "model")
    loaded = TissueClassifier.from_pretrained(tmp_path / "model")
    np.testing.assert_allclose(loaded.predict_proba(films), classifier.predict_proba(films), atol=2e-3)  # fp16 files
    assert loaded.predict_proba(films[:0]).shape == (0, 2)


def tiny_film_pipeline(seed: int = 0) -> PathSynthPipeline:
    torch.manual_seed(seed)
    unet = build_unet(block_out_channels=(16, 32, 32), channels=1, num_classes=XRAY.num_classes)
    pipeline = PathSynthPipeline(unet, build_inference_scheduler(), domain="pneumoniamnist")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_a_one_channel_generator_draws_films_of_its_domain_and_reloads_as_such(tmp_path):
    pipeline = tiny_film_pipeline()
    assert pipeline.null_class == 2 and pipeline.domain is XRAY
    films = pipeline("pneumonia", num_inference_steps=2, output_type="uint8",
                     generator=torch.Generator().manual_seed(0)).images
    assert films.shape == (1, 28, 28, 3) and (films[..., 0] == films[..., 1]).all()  # grey, display-ready
    with pytest.raises(UnknownTissueError):
        pipeline.get_label_ids("TUM")  # a tissue is not a finding
    pipeline.save_pretrained(str(tmp_path / "films"))
    loaded = PathSynthPipeline.from_pretrained(str(tmp_path / "films"))
    assert loaded.domain is XRAY and loaded.unet.config.in_channels == 1
    generator = EmbeddedGenerator(loaded, num_inference_steps=2)
    assert generator.tissue_sampler == {}  # histology's per-tissue settings (background) are not a finding's
    again = generator.generate([1], [0])
    assert again.shape == (1, 28, 28, 3)


def test_a_histology_denoiser_warm_starts_a_film_one(tmp_path):
    sys.path.insert(0, str(REPO))
    from tiny_models import tiny_pipeline
    from train.generator import adapted_unet, previous_training

    source = tiny_pipeline().unet
    unet = adapted_unet(source, XRAY)
    assert (unet.config.in_channels, unet.config.num_class_embeds) == (1, 3)
    torch.testing.assert_close(unet.conv_in.weight, source.conv_in.weight.mean(1, keepdim=True))
    torch.testing.assert_close(unet.down_blocks[0].resnets[0].conv1.weight, source.down_blocks[0].resnets[0].conv1.weight)
    shipped = tmp_path / "histology"
    shipped.mkdir()
    (shipped / "training_summary.json").write_text(json.dumps({"final_step": 9, "train_seconds": 5.0, "lr": 1e-3}))
    before = previous_training(str(shipped), "pneumoniamnist")  # another domain's steps are not this model's
    assert before["total_steps"] == 0 and before["transferred_from"] == str(shipped)


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_the_classifier_script_trains_a_greyscale_film_model(tmp_path):
    films = write_films(tmp_path / "films.npz")
    export = tmp_path / "model"
    done = run("train/classifier.py", "--domain", "pneumoniamnist", "--data", str(films), "--epochs", "1",
               "--batch_size", "16", "--threads", "1", "--mixed_precision", "no", "--out_dir", str(tmp_path / "run"),
               "--export_dir", str(export))
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((export / "config.json").read_text())
    assert (config["domain"], config["in_channels"], config["num_classes"], config["test_time_views"]) == \
        ("pneumoniamnist", 1, 2, "hflip")
    assert len(config["mean"]) == 1 and config["stain_reference"] is None
    summary = json.loads((export / "training_summary.json").read_text())
    assert summary["domain"] == "pneumoniamnist" and summary["val_images"] == 32 and "auc" in summary["val_tta"]


def test_the_cli_evaluates_a_film_classifier_and_refuses_what_is_histology_only(tmp_path):
    films = write_films(tmp_path / "films.npz")
    model = tmp_path / "model"
    tiny_film_classifier().save_pretrained(model)
    done = run("-m", "pathsynth", "evaluate", "classifier", "--domain", "pneumoniamnist", "--model", str(model),
               "--data", str(films), "--split", "val", "--json", "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["n"] == 32 and result["domain"] == "pneumoniamnist" and set(result["per_class"]) == {"normal",
                                                                                                     "pneumonia"}
    assert "ece_cross_fitted" in result["calibration"] and "stain_shift" not in result
    assert "| finding" in (tmp_path / "report" / "classifier_report.md").read_text()
    wrong = run("-m", "pathsynth", "evaluate", "classifier", "--model", str(model), "--data", str(films))
    assert wrong.returncode == 2 and "--domain pneumoniamnist" in wrong.stderr  # a film model is not histology's
    resolved = run("-m", "pathsynth", "resolve", "no focal consolidation", "--domain", "pneumoniamnist", "--json")
    assert json.loads(resolved.stdout.strip().splitlines()[-1])["label"] == "normal"
    refused = run("-m", "pathsynth", "bench", "--domain", "pneumoniamnist")
    assert refused.returncode == 2 and "histology-only so far" in refused.stderr and "Traceback" not in refused.stderr


def test_the_cli_generates_verified_films_from_a_name_or_a_description(tmp_path):
    models = tmp_path / "assets" / "models" / "pneumoniamnist"
    tiny_film_classifier().save_pretrained(models / "classifier")
    tiny_film_pipeline().save_pretrained(str(models / "generator"))
    env = {"PATHSYNTH_ASSETS": str(tmp_path / "assets")}
    done = run("-m", "pathsynth", "generate", "lobar consolidation", "--domain", "pneumoniamnist", "-n", "2",
               "--seed", "5", "--out", str(tmp_path / "out"), "--json", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["domain"], result["tissue"], result["label"], result["n"]) == ("pneumoniamnist", 1, "pneumonia", 2)
    for record in result["images"]:
        assert Path(record["path"]).name.startswith("PNA_") and 1 <= record["attempts"] <= 5
        pixels = np.asarray(Image.open(record["path"]).convert("RGB"))
        assert pixels.shape == (28, 28, 3) and (pixels == pixels[..., :1]).all()  # a grey film
    tissue = run("-m", "pathsynth", "generate", "Adipose tissue", "--domain", "pneumoniamnist", env=env)
    assert tissue.returncode == 2 and "finding" in tissue.stderr and "Traceback" not in tissue.stderr


def film_split() -> "RealSplit":
    from pathsynth.evaluation.protocol import RealSplit

    train, train_labels = synthetic_films(24, seed=0)
    heldout, heldout_labels = synthetic_films(16, seed=1)
    grey = lambda x: np.repeat(x[..., None], 3, axis=-1)  # noqa: E731 - display-ready, as the data layer gives them
    return RealSplit(grey(train), train_labels, grey(heldout), heldout_labels, domain="pneumoniamnist")


def test_the_generator_protocol_runs_on_films_with_their_classes(tmp_path):
    """Issue 33: evaluation per domain: agreement F1, loop statistics, C2ST, FID/precision/recall, near copies and
    CAS for the two findings, with the report's tables and figures named by finding."""
    from pathsynth.evaluation.protocol import evaluate_generator
    from pathsynth.verify import RealismReference, Verifier

    split = film_split()
    generator = EmbeddedGenerator(tiny_film_pipeline(), num_inference_steps=2)
    classifier = tiny_film_classifier()
    reference = RealismReference.from_tiles(classifier, split.train_images, split.train_labels, "synthetic films")
    verifier = Verifier(generator, classifier, reference=reference, max_attempts=2)
    result = evaluate_generator(verifier, split, tiny_film_classifier(seed=1), per_class=3, out_dir=tmp_path, seed=1,
                                cas_epochs=1, c2st_epochs=1, kid_subsets=3, progress=False)
    assert result["domain"] == "pneumoniamnist" and result["n_generated"] == 6
    assert list(result["per_class"]) == ["normal", "pneumonia"] and "microns_per_pixel" not in result
    assert [row["abbreviation"] for row in result["per_class"].values()] == ["NORM", "PNA"]
    assert 0 <= result["c2st_balanced_accuracy"] <= 1 and 0 <= result["macro_f1_raw"] <= 1
    assert 0 <= result["first_try_acceptance"] <= 1 and 0 <= result["near_copy_rate"] <= 1
    assert np.asarray(result["confusion_matrix_raw"]).shape == (2, 2)
    assert "| NORM" in (tmp_path / "report.md").read_text()
    for name in ("confusion_raw", "f1_bars", "samples", "near_copies"):
        assert Path(result["pngs"][name]).read_bytes()[:4] == b"\x89PNG", name


def test_the_cli_evaluates_a_film_generator_with_the_domains_own_models(tmp_path):
    assets = tmp_path / "assets"
    models = assets / "models" / "pneumoniamnist"
    tiny_film_classifier().save_pretrained(models / "classifier")
    tiny_film_pipeline().save_pretrained(str(models / "generator"))
    films = write_films(tmp_path / "films.npz")
    command = ("-m", "pathsynth", "evaluate", "generator", "--domain", "pneumoniamnist", "--data", str(films),
               "--per-class", "2", "--cas-epochs", "1", "--c2st-epochs", "1", "--json", "--out", str(tmp_path / "r"))
    missing = run(*command, env={"PATHSYNTH_ASSETS": str(assets)})
    assert missing.returncode == 2 and "evaluator" in missing.stderr and "Traceback" not in missing.stderr
    tiny_film_classifier(seed=1).save_pretrained(models / "evaluator")
    done = run(*command, env={"PATHSYNTH_ASSETS": str(assets)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["domain"] == "pneumoniamnist" and set(result["per_class"]) == {"normal", "pneumonia"}
    assert result["n_train"] == 64 and result["n_heldout"] == 32  # the official train and val splits


def test_the_bench_times_a_verified_film_beside_a_verified_tile_interleaved():
    """Issue 33: "verified chest X-ray p50 no slower than a verified histology tile, side by side in one bench"."""
    from pathsynth import bench as B
    from pathsynth.verify import Verifier
    from tiny_models import tiny_classifier, tiny_generator

    class Recording(Verifier):
        def generate(self, classes, seed=None, progress=None):
            order.append((self.generator.pipeline.domain.flag, tuple(classes)))
            return super().generate(classes, seed=seed)

    order = []
    tile = Recording(tiny_generator(steps=2), tiny_classifier())
    film = Recording(EmbeddedGenerator(tiny_film_pipeline(), num_inference_steps=2), tiny_film_classifier())
    result = B.compare_domains({"pathmnist": tile, "pneumoniamnist": film}, repeats=4, progress=False)
    assert [domain for domain, _ in order] == ["pathmnist", "pneumoniamnist"] * 5  # warm-up, then interleaved
    assert {classes[0] for domain, classes in order if domain == "pneumoniamnist"} <= {0, 1}
    assert set(result["verified_by_domain"]) == {"pathmnist", "pneumoniamnist"} and result["domain_repeats"] == 4
    for row in result["verified_by_domain"].values():
        assert 0 < row["p50_s"] <= row["p95_s"] and 1 <= row["mean_attempts"] <= 5
    table = "\n".join(B.domain_lines(result))
    assert "| pneumoniamnist |" in table and "| pathmnist |" in table and B.domain_lines({}) == []


def test_a_film_generator_configured_for_histology_is_refused_by_name():
    from pathsynth.verify import generator_domain, same_domain
    from tiny_models import tiny_generator

    films = EmbeddedGenerator(tiny_film_pipeline(), num_inference_steps=2)
    assert generator_domain(films) == "pneumoniamnist" and generator_domain(tiny_generator(steps=2)) == "pathmnist"
    assert same_domain(films, "pneumoniamnist") is films
    with pytest.raises(ValueError, match="draws pneumoniamnist images, not pathmnist"):
        same_domain(films, "pathmnist")


def test_a_domains_models_and_real_films_load_once_for_every_request(tmp_path, monkeypatch):
    """The app's groundwork for films: a domain's verifier, resolver, explanations and real films (val when the data
    has no test split: never train), loaded once per process however many requests ask at once."""
    from concurrent.futures import ThreadPoolExecutor

    from pathsynth import services as S

    assets = tmp_path / "assets"
    models = assets / "models" / "pneumoniamnist"
    tiny_film_classifier().save_pretrained(models / "classifier")
    tiny_film_pipeline().save_pretrained(str(models / "generator"))
    monkeypatch.setenv(FILMS_ENV, str(write_films(tmp_path / "films.npz")))
    monkeypatch.setattr(S, "_domain_models", {})
    settings = Settings.from_env({"PATHSYNTH_ASSETS": str(assets), FILMS_ENV: str(tmp_path / "films.npz")})
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: S.domain_models(settings, "pneumoniamnist"), range(4)))
    films = loaded[0]
    assert all(other is films for other in loaded)  # one load
    assert films.domain.flag == "pneumoniamnist" and films.real_split == "val" and films.real_images.shape == (32, 28, 28, 3)
    assert films.real_probabilities.shape == (32, 2) and films.real_off == ""
    assert films.resolver.resolve("lobar consolidation").tissue == 1
    made = films.verifier.generate([1], seed=3)[0]
    assert made.image.shape == (28, 28, 3) and made.tissue == 1
    assert films.explanations(made.image, 1).shape == (28, 28)


def test_a_domain_without_data_loads_its_models_and_says_why_there_are_no_real_films(tmp_path, monkeypatch):
    from pathsynth import services as S

    assets = tmp_path / "assets"
    models = assets / "models" / "pneumoniamnist"
    tiny_film_classifier().save_pretrained(models / "classifier")
    tiny_film_pipeline().save_pretrained(str(models / "generator"))
    monkeypatch.setenv(FILMS_ENV, str(tmp_path / "missing.npz"))
    monkeypatch.setattr(S, "_domain_models", {})
    films = S.domain_models(Settings.from_env({"PATHSYNTH_ASSETS": str(assets)}), "pneumoniamnist")
    assert len(films.real_images) == 0 and films.real_probabilities.shape == (0, 2) and films.real_split == ""
    assert "No real films" in films.real_off and "missing.npz" in films.real_off
