"""The Stable Diffusion + LoRA backend, end to end on a tiny random SD pipeline (CPU, offline): histology tiles and,
with ``--domain pneumoniamnist``, chest films."""

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in this file may touch the network

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_sd import TINY_RESOLUTION, film_data, tiny_config  # noqa: E402

from pathsynth.domains import get_domain  # noqa: E402
from pathsynth.generators.sd_lora import (CAPTION_TEMPLATE, FILM_CAPTION_TEMPLATE, LORA_WEIGHTS_NAME,  # noqa: E402
                                          SDLoraGenerator, caption, caption_variants)
from pathsynth.generators.sd_toolkit import PROMPT_STYLES, class_token  # noqa: E402
from pathsynth.tissues import NUM_TISSUES, TISSUES  # noqa: E402

XRAY = get_domain("pneumoniamnist")
# Every histology caption variant (each tissue, prompt style, with and without textual inversion) as written before
# captions took a domain: LoRAs trained on them must be prompted with the same bytes.
HISTOLOGY_CAPTIONS_SHA256 = "534b26833e6366bb2759ef7878c4786a6bd2de3ad94c92fbcc4ff47254fecf1c"


@pytest.fixture(scope="module")
def trained_lora(train_sd_lora, tiny_model, tmp_path_factory) -> Path:
    """Two LoRA steps through the real script entry point (large lr so the LoRA moves visibly)."""
    out_dir = tmp_path_factory.mktemp("lora")
    return train_sd_lora.main(tiny_config(train_sd_lora, tiny_model, out_dir))


@pytest.fixture(scope="module")
def trained_film_lora(train_sd_lora, tiny_model, tmp_path_factory) -> Path:
    """Two LoRA steps on PneumoniaMNIST's films (``--domain pneumoniamnist``) through the real script entry point."""
    out_dir = tmp_path_factory.mktemp("film_lora")
    return train_sd_lora.main(tiny_config(train_sd_lora, tiny_model, out_dir, domain="pneumoniamnist",
                                          data=str(film_data())))


def tiny_generator(tiny_model, lora, **kwargs) -> SDLoraGenerator:
    return SDLoraGenerator.from_pretrained(tiny_model, lora, device="cpu", num_inference_steps=2, **kwargs)


def every_histology_caption(**domain) -> dict[str, list[str]]:
    return {f"{t.index}/{style}/{learned}": caption_variants(t.index, style, learned, **domain)
            for t in TISSUES for style in PROMPT_STYLES for learned in (False, True)}


# ------------------------------------------------------------------------------------------ captions

def test_captions_follow_the_paper_template():
    assert caption(8) == "a histopathological image of an area with colorectal adenocarcinoma epithelium"
    assert caption("MUS") == CAPTION_TEMPLATE.format(label="smooth muscle")
    for tissue in TISSUES:
        variants = caption_variants(tissue.index)
        assert variants[0] == caption(tissue.index)
        assert len(variants) == len(set(variants)) > 4
        assert any(tissue.display_name.lower() in v for v in variants[1:])
        assert all(any(s in v for v in variants) for s in tissue.synonyms)


def test_histology_captions_are_unchanged_by_domains():
    every = every_histology_caption()
    assert sum(map(len, every.values())) == 704
    assert hashlib.sha256(json.dumps(every, sort_keys=True).encode()).hexdigest() == HISTOLOGY_CAPTIONS_SHA256
    assert every_histology_caption(domain="pathmnist") == every  # the default domain is histology
    assert caption(5, textual_inversion=True) == "a histopathological image of an area with <smooth-muscle>"


def test_film_captions_name_the_finding_and_no_tissue():
    assert caption("pneumonia", domain=XRAY) == FILM_CAPTION_TEMPLATE.format(label="pneumonia") == \
        "a chest X-ray film reported as pneumonia"
    assert caption(0, domain="pneumoniamnist") == "a chest X-ray film reported as normal"
    tissue_names = {name for t in TISSUES for name in (t.label, t.display_name.lower(), *t.synonyms)}

    def names(entry):
        return {entry.label, entry.display_name.lower(), *entry.synonyms}

    for finding in XRAY.classes:
        plain = caption_variants(finding.index, domain=XRAY)
        assert len(plain) == len(set(plain)) > 4 and all(any(s in v for v in plain) for s in finding.synonyms)
        other_names = set().union(*(names(c) for c in XRAY.classes if c is not finding))
        assert not any(re.search(rf"\b{re.escape(name)}\b", v) for v in plain for name in other_names)
        for style in PROMPT_STYLES:
            for learned in (False, True):
                variants = caption_variants(finding.index, style, learned, XRAY)
                assert variants[0] == caption(finding.index, style, learned, XRAY)
                own = {class_token(finding.index, XRAY)} if learned else names(finding)
                assert all(any(name in v for name in own) for v in variants)  # each names the finding
                assert all("chest" in v and "histo" not in v for v in variants)
                assert not any(re.search(rf"\b{re.escape(name)}\b", v.lower())
                               for v in variants for name in tissue_names)
    with pytest.raises(ValueError):
        caption(2, domain=XRAY)  # a film has two classes


def test_cli_overrides_every_field(train_sd_lora):
    cfg = train_sd_lora.parse_config(["--rank", "8", "--lr", "1e-4", "--resolution", "512", "--no-augment",
                                      "--gradient_checkpointing", "--mixed_precision", "bf16",
                                      "--pretrained_model", "/models/sd15"])
    assert (cfg.rank, cfg.lr, cfg.resolution, cfg.augment, cfg.gradient_checkpointing) == (8, 1e-4, 512, False, True)
    assert cfg.mixed_precision == "bf16" and cfg.pretrained_model == "/models/sd15"
    defaults = train_sd_lora.parse_config([])
    # The paper's settings are the defaults.
    assert (defaults.rank, defaults.resolution, defaults.steps, defaults.lr) == (4, 224, 2000, 5e-5)
    assert defaults.pretrained_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert defaults.domain == "pathmnist" and train_sd_lora.parse_config(["--domain", "pneumoniamnist"]).domain == \
        "pneumoniamnist"
    with pytest.raises(SystemExit):
        train_sd_lora.parse_config(["--domain", "xray"])  # the choices are the registry's
    with pytest.raises(SystemExit):
        train_sd_lora.check_config(train_sd_lora.Config(domain="xray"))
    with pytest.raises(SystemExit):  # films come at their own size only
        train_sd_lora.check_config(train_sd_lora.Config(domain="pneumoniamnist", size=64))


# ------------------------------------------------------------------------------------------ training

def test_training_writes_a_loadable_lora(trained_lora):
    weights = load_file(str(trained_lora / LORA_WEIGHTS_NAME))
    assert weights and all(k.startswith("unet.") for k in weights)
    # Only the attention projections carry LoRA layers.
    assert {k.split(".lora")[0].rsplit(".", 1)[-1] for k in weights} <= {"to_q", "to_k", "to_v", "0"}
    ups = [v for k, v in weights.items() if "lora.up" in k or "lora_B" in k]
    assert ups and all(v.shape[1] == 4 for v in ups)  # rank 4
    # B starts at zero; after training it must not be (otherwise the LoRA is a no-op).
    assert min(float(v.norm()) for v in ups) > 0
    summary = json.loads((trained_lora / "training_summary.json").read_text())
    assert summary["final_step"] == 2 and summary["resolution"] == TINY_RESOLUTION
    assert summary["caption_template"] == CAPTION_TEMPLATE
    # The paper's recipe when no toolkit option is given: a LoRA only, per-token prompts, the short caption.
    assert (summary["finetune"], summary["prompt_embedding"], summary["prompt_style"]) == ("lora", "sequence", "caption")
    assert summary["textual_inversion"] is False and summary["prompts"]["mucus"] == caption(4)
    assert not (trained_lora / "unet").exists() and not (trained_lora / "learned_embeds.safetensors").exists()
    log = (trained_lora / "log.csv").read_text().splitlines()
    assert log[0] == "step,elapsed_s,lr,loss" and len(log) == 3
    assert all(np.isfinite(float(line.split(",")[-1])) for line in log[1:])
    for grid in ("validation_000002.png", "validation_final.png"):
        from PIL import Image

        with Image.open(trained_lora / grid) as image:  # one row per tissue
            assert image.size == (TINY_RESOLUTION, TINY_RESOLUTION * NUM_TISSUES)
    assert (trained_lora / "checkpoint" / LORA_WEIGHTS_NAME).is_file()
    assert json.loads((trained_lora / "checkpoint" / "progress.json").read_text())["step"] == 2


def test_lora_changes_generation(tiny_model, trained_lora):
    from diffusers import StableDiffusionPipeline

    def sample(pipeline):
        pipeline.set_progress_bar_config(disable=True)
        return pipeline([caption(3)], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                        output_type="np").images

    pipeline = StableDiffusionPipeline.from_pretrained(str(tiny_model), safety_checker=None,
                                                       requires_safety_checker=False)
    base = sample(pipeline)
    pipeline.load_lora_weights(str(trained_lora))  # the documented way to use the output directory
    assert np.abs(sample(pipeline) - base).mean() > 1e-3


def test_resume_continues_from_the_checkpoint(train_sd_lora, tiny_model, trained_lora, tmp_path):
    out_dir = tmp_path / "resumed"
    shutil.copytree(trained_lora, out_dir)
    checkpointed = load_file(str(out_dir / "checkpoint" / LORA_WEIGHTS_NAME))
    resume = dict(resume=True, validation_every=0, gradient_checkpointing=False)

    # Already at the final step: nothing is trained and the exported LoRA is the checkpointed one, bit for bit.
    train_sd_lora.main(tiny_config(train_sd_lora, tiny_model, out_dir, steps=2, **resume))
    reloaded = load_file(str(out_dir / LORA_WEIGHTS_NAME))
    assert reloaded.keys() == checkpointed.keys() and all(torch.equal(reloaded[k], checkpointed[k]) for k in reloaded)

    # One more step continues the count and the log.
    train_sd_lora.main(tiny_config(train_sd_lora, tiny_model, out_dir, steps=3, **resume))
    assert json.loads((out_dir / "checkpoint" / "progress.json").read_text())["step"] == 3
    steps = [int(line.split(",")[0]) for line in (out_dir / "log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3]
    trained = load_file(str(out_dir / LORA_WEIGHTS_NAME))
    assert any(not torch.equal(trained[k], checkpointed[k]) for k in trained)


# ------------------------------------------------------------------------------------------ backend

def test_backend_interface(tiny_model, trained_lora):
    generator = tiny_generator(tiny_model, trained_lora)
    assert generator.name == "sd-lora"
    assert generator.resolution == TINY_RESOLUTION  # read from the training summary
    assert (generator.prompt_style, generator.prompt_embedding, generator.textual_inversion) == \
        ("caption", "sequence", False)
    images = generator.generate([0, 8, 3], [11, 12, 13])
    assert images.shape == (3, 28, 28, 3) and images.dtype == np.uint8
    assert images.std() > 0
    # Same tissue + seed -> same image, alone or in another batch; different seeds differ.
    np.testing.assert_array_equal(generator.generate([0, 8, 3], [11, 12, 13]), images)
    alone = generator.generate([8], [12])[0]
    assert np.abs(alone.astype(int) - images[1].astype(int)).max() <= 2
    assert not np.array_equal(generator.generate([8], [99])[0], alone)
    assert generator.generate([], []).shape == (0, 28, 28, 3)
    with pytest.raises(ValueError):
        generator.generate([0, 1], [1])
    with pytest.raises(ValueError):
        generator.generate([9], [1])
    base = tiny_generator(tiny_model, None, resolution=TINY_RESOLUTION).generate([0, 8, 3], [11, 12, 13])
    assert not np.array_equal(base, images)


def test_downscaling_is_antialiased(tiny_model, trained_lora):
    generator = tiny_generator(tiny_model, trained_lora)
    full = generator.render([4], [5])
    assert full.shape == (1, 3, TINY_RESOLUTION, TINY_RESOLUTION)
    small = generator.generate([4], [5])[0].astype(float) / 255
    # An antialiased resize keeps the mean colour (a strided pick would not in general).
    assert np.abs(small.mean(axis=(0, 1)) - full[0].mean(dim=(1, 2)).numpy()).max() < 0.01


def test_from_env_uses_lora_and_options(tiny_model, trained_lora, monkeypatch):
    monkeypatch.setenv("PATHSYNTH_SD_MODEL", str(tiny_model))
    monkeypatch.setenv("PATHSYNTH_LORA", str(trained_lora))
    monkeypatch.setenv("PATHSYNTH_SD_STEPS", "2")
    monkeypatch.setenv("PATHSYNTH_SD_GUIDANCE", "3.5")
    monkeypatch.setenv("PATHSYNTH_SD_DEVICE", "cpu")
    generator = SDLoraGenerator.from_env()
    assert (generator.num_inference_steps, generator.guidance_scale) == (2, 3.5)
    expected = tiny_generator(tiny_model, trained_lora, guidance_scale=3.5).generate([6], [7])
    np.testing.assert_array_equal(generator.generate([6], [7]), expected)


def assert_one_line_hint(error: pytest.ExceptionInfo, *needles: str):
    message = str(error.value)
    # One line, and no chained HF exception for the reader to wade through.
    assert "\n" not in message and error.value.__cause__ is None
    assert error.value.__context__ is None or error.value.__suppress_context__
    for needle in ("PATHSYNTH_SD_MODEL", "PATHSYNTH_LORA", *needles):
        assert needle in message


def test_missing_base_model_offline_gives_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time otherwise
    monkeypatch.setenv("PATHSYNTH_SD_MODEL", "pathsynth-tests/no-such-model")
    monkeypatch.setenv("PATHSYNTH_LORA", str(tmp_path))
    with pytest.raises(RuntimeError) as error:
        SDLoraGenerator.from_env()
    assert_one_line_hint(error, "pathsynth-tests/no-such-model")
    with pytest.raises(RuntimeError) as error:
        SDLoraGenerator.from_pretrained(tmp_path / "not-a-model", tmp_path, local_files_only=True)
    assert_one_line_hint(error, "not-a-model")


def test_missing_lora_gives_a_clear_error(tiny_model, tmp_path, monkeypatch):
    monkeypatch.delenv("PATHSYNTH_LORA", raising=False)
    with pytest.raises(RuntimeError) as error:
        SDLoraGenerator.from_env()
    assert_one_line_hint(error, "not set")
    with pytest.raises(RuntimeError) as error:  # a directory without pytorch_lora_weights.safetensors
        tiny_generator(tiny_model, tmp_path)
    assert_one_line_hint(error, LORA_WEIGHTS_NAME)


# ------------------------------------------------------------------------------------------ chest films

def test_films_load_grey_in_rgb_and_are_never_flipped(train_sd_lora, tiny_model, tmp_path):
    from accelerate import Accelerator

    from pathsynth.data import RandomDihedral

    cfg = tiny_config(train_sd_lora, tiny_model, tmp_path, domain="pneumoniamnist", data=str(film_data()))
    captions, caption_ids = train_sd_lora.caption_table(cfg)
    assert [captions[ids[0]] for ids in caption_ids] == [caption(0, domain=XRAY), caption(1, domain=XRAY)]
    loader = train_sd_lora.make_loader(cfg, Accelerator(cpu=True), caption_ids, len(captions))
    images, labels = loader.dataset.tensors
    assert images.shape[1:] == (28, 28, 3) and set(labels.unique().tolist()) == {0, 1}
    assert torch.equal(images[..., 0], images[..., 1]) and torch.equal(images[..., 0], images[..., 2])
    assert loader.collate_fn.augment is None  # a film has an up and a left: no dihedral transform, no mirror
    pixels, batch_labels, picks = next(iter(loader))
    assert pixels.shape == (cfg.batch_size, 3, 28, 28)
    assert all(pick in caption_ids[label] for pick, label in zip(picks.tolist(), batch_labels.tolist()))
    assert isinstance(train_sd_lora.augmentation(tiny_config(train_sd_lora, tiny_model, tmp_path)), RandomDihedral)


def test_film_training_exports_its_domain(trained_film_lora):
    from PIL import Image

    weights = load_file(str(trained_film_lora / LORA_WEIGHTS_NAME))
    assert min(float(v.norm()) for k, v in weights.items() if "lora.up" in k or "lora_B" in k) > 0  # trained
    summary = json.loads((trained_film_lora / "training_summary.json").read_text())
    assert summary["domain"] == "pneumoniamnist" and summary["final_step"] == 2
    assert summary["caption_template"] == FILM_CAPTION_TEMPLATE
    assert summary["prompts"] == {"normal": caption(0, domain=XRAY), "pneumonia": caption(1, domain=XRAY)}
    for grid in ("validation_000002.png", "validation_final.png"):
        with Image.open(trained_film_lora / grid) as image:  # one row per finding
            assert image.size == (TINY_RESOLUTION, TINY_RESOLUTION * XRAY.num_classes)


def test_backend_draws_the_films_it_was_trained_on(tiny_model, trained_film_lora):
    generator = tiny_generator(tiny_model, trained_film_lora)
    assert generator.domain is XRAY and generator.resolution == TINY_RESOLUTION
    assert generator.prompts([0, 1]) == [caption(0, domain=XRAY), caption(1, domain=XRAY)]
    images = generator.generate(["normal", "pneumonia"], [3, 4])
    assert images.shape == (2, 28, 28, 3) and images.dtype == np.uint8 and images.std() > 0
    assert np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(images[..., 0], images[..., 2])
    np.testing.assert_array_equal(generator.generate([0, 1], [3, 4]), images)
    for histology_only in (2, 8, "adipose"):
        with pytest.raises(ValueError):
            generator.generate([histology_only], [1])
    # The pipeline was prompted with the film caption: the same call by hand gives the same (greyed) image.
    direct = generator.pipeline(prompt=[caption(1, domain=XRAY)], height=TINY_RESOLUTION, width=TINY_RESOLUTION,
                                num_inference_steps=2, guidance_scale=generator.guidance_scale,
                                generator=[torch.Generator().manual_seed(4)], output_type="pt").images
    torch.testing.assert_close(generator.render([1], [4]), direct.mean(1, keepdim=True).repeat(1, 3, 1, 1))


def test_an_export_without_a_domain_is_histology(tiny_model, trained_film_lora, tmp_path):
    old = tmp_path / "before_domains"
    shutil.copytree(trained_film_lora, old, ignore=shutil.ignore_patterns("checkpoint"))
    summary = json.loads((old / "training_summary.json").read_text())
    del summary["domain"]
    (old / "training_summary.json").write_text(json.dumps(summary))
    generator = tiny_generator(tiny_model, old)
    assert generator.domain.flag == "pathmnist" and generator.prompts([8]) == [caption(8)]
    assert generator.generate([8], [1]).shape == (1, 28, 28, 3)
