"""One ``--size`` end to end: a tiny classifier and a tiny generator trained at 64 px (28 px tiles upsampled),
saved, reloaded as a user would (``from_pretrained`` / ``PATHSYNTH_GENERATOR``), generating and verifying 64 px
tiles, evaluated at 64 px, and the scale (µm per pixel) reported from the size; the app built on that generator
quizzes real 64 px tiles (or upsampled ones, saying so), each drawn with its own scale bar. Plus the small functions
that pick the architecture and the scale for a size, and the clear refusals when sizes do not match."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pathsynth.classifier import TissueClassifier, build_network, small_input_stem
from pathsynth.data import (DataUnavailableError, load_npz, load_npz_head, load_training_data, local_pathmnist_file,
                            npz_image_size)
from pathsynth.verify import REFERENCE_NAME
from sample_tiles import sample_tiles
from pathsynth.generators import load_embedded_generator
from pathsynth.generators.embedded import unet_config_for_size
from pathsynth.images import SCALE_BAR_STRIP, microns_per_pixel, resize_tensor, tensor_to_uint8, uint8_to_tensor

REPO = Path(__file__).resolve().parent.parent
SHIPPED_UNET = REPO / "assets" / "models" / "generator" / "unet" / "config.json"
SIZE = 64


@pytest.fixture(scope="module")
def tiles_28(tmp_path_factory) -> Path:
    """A train-only npz of 28 px tiles (``sample_tiles``: real or generated), as a user's ``PATHSYNTH_DATA``."""
    images, labels = sample_tiles()
    path = tmp_path_factory.mktemp("data28") / "pathmnist_28_sample.npz"
    np.savez(path, train_images=images, train_labels=labels[:, None])
    return path


@pytest.fixture(scope="module")
def tiles_64(tmp_path_factory) -> Path:
    """28 px tiles upsampled to 64 px, 8 per tissue: 6 to train on (54: 3 batches of 16), 2 held out."""
    images, labels = sample_tiles()
    per_tissue = [np.flatnonzero(labels == t)[:8] for t in range(9)]
    train, val = np.concatenate([i[:6] for i in per_tissue]), np.concatenate([i[6:] for i in per_tissue])
    big = tensor_to_uint8(resize_tensor(uint8_to_tensor(images), SIZE))
    path = tmp_path_factory.mktemp("data") / "pathmnist_64_sample.npz"
    np.savez(path, train_images=big[train], train_labels=labels[train], val_images=big[val], val_labels=labels[val])
    return path


def _bar_length(shown: np.ndarray) -> int:
    """The scale bar's length in px, read from the strip under a displayed tile."""
    row = shown[shown.shape[1] + SCALE_BAR_STRIP // 2 - 1]
    dark = row.max(axis=1) < 40
    return int(np.argmin(dark[int(np.argmax(dark)):]))


def _train_script(name: str):
    sys.path.insert(0, str(REPO))
    module = __import__(f"train.{name}", fromlist=["main", "parse_config"])
    return module.main, module.parse_config


@pytest.fixture(scope="module")
def classifier_dir(tiles_64, tmp_path_factory) -> Path:
    main, parse_config = _train_script("classifier")
    out = tmp_path_factory.mktemp("classifier")
    main(parse_config(["--data", str(tiles_64), "--size", str(SIZE), "--epochs", "1", "--batch_size", "16",
                       "--mixed_precision", "no", "--no_tta", "--threads", "1", "--no_fp16_export", "--out_dir", str(out / "run"),
                       "--export_dir", str(out / "model")]))
    return out / "model"


@pytest.fixture(scope="module")
def generator_dir(tiles_64, tmp_path_factory) -> Path:
    main, parse_config = _train_script("generator")
    out = tmp_path_factory.mktemp("generator")
    # The default evaluator (assets/models/evaluator, 28 px) cannot judge 64 px tiles: the run skips its curve.
    main(parse_config(["--data", str(tiles_64), "--size", str(SIZE), "--steps", "2", "--batch_size", "8",
                       "--block_out_channels", "8", "16", "32", "32", "--inference_steps", "2", "--snapshot_every", "0",
                       "--checkpoint_every", "1000", "--sample_every", "1000", "--threads", "1", "--no-bf16",
                       "--out_dir", str(out / "run"), "--export_dir", str(out / "pipeline")]))
    return out / "pipeline"


# ------------------------------------------------------------------------------------ choices made from the size

def test_microns_per_pixel_follow_from_the_size():
    assert [microns_per_pixel(size) for size in (28, 64, 128, 224)] == [4.0, 1.75, 0.875, 0.5]  # 112 µm per tile


def test_the_unet_deepens_with_the_size_and_28_px_is_the_shipped_architecture():
    shipped = json.loads(SHIPPED_UNET.read_text())
    config = unet_config_for_size(28)
    assert list(config["block_out_channels"]) == shipped["block_out_channels"]
    assert list(config["down_block_types"]) == shipped["down_block_types"]
    assert list(config["up_block_types"]) == shipped["up_block_types"]
    for size, levels, attention in ((64, 4, 2), (128, 5, 2), (224, 6, 2)):
        config = unet_config_for_size(size)
        assert len(config["block_out_channels"]) == levels and size // 2 ** (levels - 1) <= 8
        assert config["down_block_types"].count("AttnDownBlock2D") == attention  # only on the two smallest grids
    with pytest.raises(ValueError, match="cannot be halved"):
        unet_config_for_size(36)


def test_the_classifier_stem_follows_the_size_and_old_configs_keep_the_28_px_stem():
    assert small_input_stem(28) and not small_input_stem(64)
    old = build_network({"mean": [0.5] * 3, "std": [0.25] * 3})  # a config written before sizes: 28 px
    assert old.conv1.kernel_size == (3, 3) and old.conv1.stride == (1, 1)
    large = build_network({"input_size": 128})
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)


def test_quiz_tiles_are_drawn_at_their_own_scale():
    from types import SimpleNamespace

    from pathsynth.app.quiz import Look, question_image, tile_um_per_pixel
    from pathsynth.quiz import Question

    tile_64, tile_28 = np.full((SIZE, SIZE, 3), 200, np.uint8), np.full((28, 28, 3), 200, np.uint8)
    assert tile_um_per_pixel(tile_64) == 1.75 and tile_um_per_pixel(tile_28) == 4.0
    services = SimpleNamespace(classifier=SimpleNamespace(input_size=28))
    # an upload converted at the classifier's 4 µm per pixel may be larger than its 28 px input: its width says nothing
    assert tile_um_per_pixel(tile_64, "uploaded", services) == 4.0
    # a whole tile is 112 µm at any size: 50 µm is 150 of the 336 displayed px at 64 px as at 28 px (the 4 µm/px
    # default would have drawn 100 µm in 131 px under the 64 px tile)
    assert _bar_length(Look().render(tile_64)) == _bar_length(Look().render(tile_28)) == 150
    question = Question(image=tile_64, answer=3, source="generated")
    assert _bar_length(question_image(Look(zoom=2), question, services)) == 150  # 2x: 25 µm in 150 px
    uploaded = Question(image=tile_64, answer=3, source="uploaded")  # 256 µm across: 100 µm in 131 px
    assert _bar_length(question_image(Look(), uploaded, services)) == 131


def test_the_first_tiles_of_a_local_file_of_the_size_are_read_without_downloading(tiles_64, tiles_28, tmp_path):
    images, labels = load_npz(tiles_64, size=SIZE)
    head, head_labels = load_npz_head(tiles_64, 10, size=SIZE)
    assert np.array_equal(head, images[:10]) and np.array_equal(head_labels, labels[:10])
    assert len(load_npz_head(tiles_64, 1000)[0]) == len(images)  # fewer than asked: all of them
    with pytest.raises(DataUnavailableError, match="holds 64 px tiles, but 28 px"):
        load_npz_head(tiles_64, 10, size=28)
    root = tmp_path / "medmnist"
    with pytest.raises(DataUnavailableError, match="no local PathMNIST file of 64 px"):
        local_pathmnist_file(SIZE, tiles_28, root)  # a 28 px file, and no medmnist download
    assert local_pathmnist_file(SIZE, tiles_64, root) == tiles_64
    root.mkdir()
    (root / "pathmnist_64.npz").write_bytes(tiles_64.read_bytes())  # what medmnist keeps after a download
    assert local_pathmnist_file(SIZE, "medmnist", root) == local_pathmnist_file(SIZE, None, root) == \
        root / "pathmnist_64.npz"


def test_an_npz_of_another_size_is_refused_with_both_sizes_named(tiles_28):
    assert npz_image_size(tiles_28) == 28
    with pytest.raises(DataUnavailableError, match=r"holds 28 px tiles, but 64 px tiles are needed.*medmnist"):
        load_training_data(tiles_28, SIZE)


# ------------------------------------------------------------------------------------------------ 64 px, trained

def test_a_64_px_classifier_trains_saves_and_reloads_with_the_imagenet_stem(classifier_dir, tiles_64):
    config = json.loads((classifier_dir / "config.json").read_text())
    assert config["input_size"] == SIZE and config["small_input"] is False and config["microns_per_pixel"] == 1.75
    summary = json.loads((classifier_dir / "training_summary.json").read_text())
    assert summary["image_size_px"] == SIZE and summary["microns_per_pixel"] == 1.75 and summary["train_images"] == 54
    classifier = TissueClassifier.from_pretrained(classifier_dir)
    assert classifier.input_size == SIZE and classifier.model.conv1.kernel_size == (7, 7)
    with np.load(tiles_64) as archive:
        probabilities = classifier.predict_proba(archive["val_images"][:3])
    assert probabilities.shape == (3, 9) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


def test_the_occlusion_map_greys_out_the_same_micrometres_at_every_size(classifier_dir, tiles_64):
    from pathsynth.explain import occlusion_geometry, occlusion_map

    assert occlusion_geometry(28) == (6, 4) and occlusion_geometry(64) == (14, 9) and occlusion_geometry(224) == (48, 32)
    for size in (28, 64, 128, 224):  # window ~24 um and about 6 x 6 positions whatever the size
        window, stride = occlusion_geometry(size)
        assert abs(window * microns_per_pixel(size) - 24) < 1.5 and 5 <= (size - window) // stride + 1 <= 7
    classifier = TissueClassifier.from_pretrained(classifier_dir)
    with np.load(tiles_64) as archive:
        heat = occlusion_map(classifier, archive["val_images"][0])
    assert heat.shape == (SIZE, SIZE) and 0 <= heat.min() and heat.max() <= 1


def test_a_64_px_generator_trains_and_loads_from_its_directory_alone(generator_dir, monkeypatch):
    summary = json.loads((generator_dir / "training_summary.json").read_text())
    assert summary["image_size_px"] == SIZE and summary["microns_per_pixel"] == 1.75 and summary["final_step"] == 2
    assert summary["evaluator"] == ""  # the shipped 28 px evaluator was set aside, not misused
    unet = json.loads((generator_dir / "unet" / "config.json").read_text())
    assert unet["sample_size"] == SIZE and len(unet["block_out_channels"]) == 4
    monkeypatch.setenv("PATHSYNTH_GENERATOR", str(generator_dir))  # how a user points the app at their model
    generator = load_embedded_generator(num_inference_steps=2)
    assert generator.output_size == SIZE
    assert generator.generate([3, "TUM"], [1, 2]).shape == (2, SIZE, SIZE, 3)


def test_64_px_images_are_generated_verified_and_shown_at_their_scale(classifier_dir, generator_dir):
    from pathsynth.app import about, generate
    from pathsynth.verify import Verifier

    generator = load_embedded_generator(generator_dir, num_inference_steps=2)
    classifier = TissueClassifier.from_pretrained(classifier_dir)
    images, labels = sample_tiles()  # a 28 px realism reference, as shipped: realism is judged at 28 px
    verifier = Verifier(generator, classifier, images[::20], labels[::20], threshold=0.0, max_attempts=1)
    result = verifier.generate([5], seed=7)[0]
    assert result.image.shape == (SIZE, SIZE, 3) and len(result.probabilities) == 9 and result.attempts == 1
    assert verifier.at_reference_size(result.image[None]).shape == (1, 28, 28, 3)
    # A whole tile is 112 µm at any size: the 64 px tile's bar is as long as the 28 px tile's (50 µm = 150 px).
    for tile in (result.image, result.image[::2, ::2][:28, :28]):
        assert _bar_length(generate.shown(tile, scale_bar=True)) == 150
    services = type("Services", (), {"verifier": verifier})()
    assert generate.tile_size(services) == SIZE
    assert "64 × 64 pixels" in about.trainee_page({}, verifier) and "about 1.75 µm" in about.trainee_page({}, verifier)


def test_evaluation_runs_at_64_px_and_refuses_mismatched_sizes(classifier_dir, generator_dir, tiles_64, tiles_28,
                                                              capsys, monkeypatch):
    from pathsynth import cli
    from pathsynth.evaluation.protocol import check_sizes, real_split, realism_point

    torch.manual_seed(0)
    generator = load_embedded_generator(generator_dir, num_inference_steps=2)
    evaluator = TissueClassifier.from_pretrained(classifier_dir)
    split = real_split(str(tiles_64), size=SIZE)
    point = realism_point(generator, evaluator, split, per_class=1, c2st_epochs=1)
    assert 0 <= point["c2st_balanced_accuracy"] <= 1 and np.isfinite(point["fid"])
    with pytest.raises(ValueError, match="generator draws 64 px tiles but the real images are 28 px"):
        check_sizes(generator, real_split(str(tiles_28)), evaluator)
    with pytest.raises(ValueError, match=r"evaluator network takes 28 px.*train/classifier.py --data medmnist --size 64"):
        check_sizes(generator, split, TissueClassifier(evaluator.model, {**evaluator.config, "input_size": 28}))
    assert cli.main(["evaluate", "classifier", "--model", str(classifier_dir), "--data", str(tiles_64), "--split",
                     "val", "--no-tta", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 18 and result["input_size"] == SIZE
    monkeypatch.setenv("PATHSYNTH_DATA", str(tiles_28))  # the default data: a 28 px file
    assert cli.main(["evaluate", "classifier", "--model", str(classifier_dir)]) == 2
    assert "holds 28 px tiles, but 64 px tiles are needed" in capsys.readouterr().err


def test_the_app_on_a_64_px_generator_quizzes_64_px_real_tiles(classifier_dir, generator_dir, tiles_64, tiles_28,
                                                               tmp_path, monkeypatch, caplog):
    import gradio as gr

    from pathsynth.app import quiz
    from pathsynth.services import Services
    from pathsynth.settings import Settings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    env = {"PATHSYNTH_CLASSIFIER": str(classifier_dir), "PATHSYNTH_GENERATOR": str(generator_dir),
           "PATHSYNTH_HOME": str(tmp_path / "home"), "PATHSYNTH_MEDMNIST_ROOT": str(tmp_path / "no-medmnist")}
    local = Services.build(Settings.from_env({**env, "PATHSYNTH_DATA": str(tiles_64)}), pool_per_tissue=0)
    with np.load(tiles_64) as archive:
        assert np.array_equal(local.real_images, archive["val_images"])  # a file's val split before its train split
    assert local.real_tiles_note == "" and quiz.real_tiles_line(local) == ""
    assert local.real_probabilities.shape == (18, 9) and local.verifier.reference_size == SIZE
    view = quiz.start(local, 2, 0.0)  # real tiles only: 64 px, each with a 1.75 µm/px bar (50 µm in 150 px)
    assert view[0].questions[0].image.shape == (SIZE, SIZE, 3) and _bar_length(view[2]) == 150
    with gr.Blocks() as demo:
        quiz.build(local)
    labels = [block.label for block in demo.blocks.values() if getattr(block, "elem_id", None) == "quiz-scale-bar"]
    assert labels == ["Scale bar (PathMNIST: 1.75 µm per pixel, 112 µm per tile)"]

    # A classifier shipped without a realism reference, and only 28 px data on this machine: upsampled tiles.
    bare = tmp_path / "bare_classifier"
    shutil.copytree(classifier_dir, bare, ignore=shutil.ignore_patterns(REFERENCE_NAME))
    env_28 = {**env, "PATHSYNTH_CLASSIFIER": str(bare), "PATHSYNTH_DATA": str(tiles_28)}
    with caplog.at_level("WARNING", logger="pathsynth.services"):
        upsampled = Services.build(Settings.from_env(env_28), pool_per_tissue=0)  # no 64 px data on this machine
    with np.load(tiles_28) as archive:
        assert upsampled.real_images.shape == (len(archive["train_labels"]), SIZE, SIZE, 3)
    assert "upsampled" in upsampled.real_tiles_note and "less detail" in quiz.real_tiles_line(upsampled)
    assert any("upsampled to 64 px" in record.message for record in caplog.records)
    assert upsampled.verifier.reference_size == 28  # realism is judged against the 28 px tiles, not blurred copies
    # each set of tiles has its own probabilities file
    cached = {path.name for path in (tmp_path / "cache" / "pathsynth").glob("real_probabilities-*.npy")}
    assert len(cached) == 2

    # No data at all: no real tiles, a line saying how to get them; realism from the classifier's own reference.
    off = Services.build(Settings.from_env(env), pool_per_tissue=0)
    assert off.real_images.shape == (0, SIZE, SIZE, 3) and off.real_probabilities.shape == (0, 9)
    assert "pathsynth data download" in off.real_tiles_off and off.verifier.reference_size == SIZE
