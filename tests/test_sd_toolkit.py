"""The SD adaptation toolkit (VAE report, prompt embeddings, textual inversion, full U-Net, catalogue prompts),
each through train/sd_lora.py and the sd-lora backend on a tiny random SD pipeline (CPU, offline), for histology
tiles and chest films."""

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in this file may touch the network

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_models import tiny_classifier  # noqa: E402
from tiny_sd import (TINY_RESOLUTION, film_data, tiny_config, tiny_text_encoder,  # noqa: E402
                     tiny_tokenizer)

from pathsynth.domains import get_domain  # noqa: E402
from pathsynth.generators.sd_lora import LORA_WEIGHTS_NAME, SDLoraGenerator, caption, caption_variants  # noqa: E402
from pathsynth.generators.sd_toolkit import (FULL_UNET_DIR, TOKENS_WEIGHTS_NAME, VAE_REPORT_IMAGE,  # noqa: E402
                                             VAE_REPORT_NAME, add_class_tokens, add_tissue_tokens, class_token,
                                             encode_prompts, reconstruction_metrics, tissue_token,
                                             visual_description)
from pathsynth.tissues import LABELS, NUM_TISSUES, TISSUES  # noqa: E402

XRAY = get_domain("pneumoniamnist")


@pytest.fixture()
def text_parts(tmp_path):
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    return tokenizer, tiny_text_encoder(tokenizer)


def quick(train_sd_lora, tiny_model, out_dir, **overrides):
    """One training step, no intermediate checkpoint or grid (the final ones are still written)."""
    settings = dict(steps=1, checkpoint_every=0, validation_every=0, gradient_checkpointing=False)
    return train_sd_lora.main(tiny_config(train_sd_lora, tiny_model, out_dir, **{**settings, **overrides}))


def backend(tiny_model, run_dir, **kwargs) -> SDLoraGenerator:
    return SDLoraGenerator.from_pretrained(tiny_model, run_dir, device="cpu", num_inference_steps=2, **kwargs)


# ------------------------------------------------------------------------------------------ options

def test_cli_options_and_recipes(train_sd_lora, capsys):
    cfg = train_sd_lora.parse_config(["--finetune", "full", "--prompt_embedding", "mean", "--prompt_style",
                                      "catalogue", "--textual_inversion", "--ti_lr", "1e-3", "--lora_alpha", "8"])
    assert (cfg.finetune, cfg.prompt_embedding, cfg.prompt_style, cfg.textual_inversion) == \
        ("full", "mean", "catalogue", True)
    assert (cfg.ti_lr, cfg.lora_alpha) == (1e-3, 8)
    defaults = train_sd_lora.parse_config([])
    assert (defaults.finetune, defaults.prompt_embedding, defaults.prompt_style) == ("lora", "sequence", "caption")
    assert not defaults.textual_inversion and not defaults.vae_report_only
    with pytest.raises(SystemExit):
        train_sd_lora.parse_config(["--finetune", "half"])  # choices come from the Literal types
    with pytest.raises(SystemExit):
        train_sd_lora.check_config(train_sd_lora.Config(finetune="none"))  # nothing would train
    with pytest.raises(SystemExit):
        train_sd_lora.check_config(train_sd_lora.Config(textual_inversion=True, prompt_embedding="cls"))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train_sd_lora.parse_config(["--help"])
    help_text = capsys.readouterr().out
    for needle in ("--vae_report_only", "--finetune {lora,full,none}", "Textual inversion", "--prompt_style"):
        assert needle in help_text


def test_catalogue_and_token_prompts():
    assert caption(0, "catalogue").startswith(caption(0) + ": mostly white, empty-looking space")
    tokens = [tissue_token(t.index) for t in TISSUES]
    assert tokens[5] == "<smooth-muscle>" and len(set(tokens)) == NUM_TISSUES
    assert all(" " not in token for token in tokens)
    for tissue in TISSUES:
        description = visual_description(tissue.index)
        assert "(" not in description and not description.endswith(".") and len(description) > 20
        assert all(v.endswith(": " + description) for v in caption_variants(tissue.index, "catalogue"))
        learned = caption_variants(tissue.index, textual_inversion=True)
        assert learned[0] == caption(tissue.index).replace(tissue.label, tokens[tissue.index])
        token = tokens[tissue.index]
        assert all(token in v and tissue.label not in v.replace(token, "") for v in learned)
    with pytest.raises(ValueError):
        caption(0, "haiku")


def test_film_tokens_and_descriptions_come_from_the_film_catalogue():
    assert [class_token(f.index, XRAY) for f in XRAY.classes] == ["<normal>", "<pneumonia>"]
    assert [class_token(t.index) for t in TISSUES] == [tissue_token(t.index) for t in TISSUES]  # histology's names
    for finding in XRAY.classes:
        description = visual_description(finding.index, XRAY)
        assert "(" not in description and not description.endswith(".") and description[0].islower()
        first_sentence = finding.description.split(". ")[0].rstrip(".")
        assert first_sentence.endswith(description[-40:])  # the catalogue's first sentence, to its end
        assert caption(finding.index, "catalogue", domain=XRAY).endswith(": " + description)
    assert visual_description(0, XRAY).startswith("both lung fields are dark grey and about equally dark,")  # no (air)
    assert visual_description("pneumonia", XRAY).startswith("the lung fields are lighter, greyer and hazier")


# ------------------------------------------------------------------------------------------ prompt embeddings

def test_prompt_embedding_modes(text_parts):
    tokenizer, text_encoder = text_parts
    prompts = [caption(0), caption(3, "catalogue")]
    with torch.no_grad():
        tokens = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        hidden = text_encoder(tokens.input_ids)[0]
        embeddings = {mode: encode_prompts(tokenizer, text_encoder, prompts, mode)
                      for mode in ("sequence", "cls", "mean", "pooler")}
    assert torch.equal(embeddings["sequence"], hidden)  # SD's default, as the pipeline encodes it
    for mode in ("cls", "mean", "pooler"):
        assert embeddings[mode].shape == hidden.shape  # the U-Net and the pipeline see the usual shape
        assert torch.equal(embeddings[mode], embeddings[mode][:, :1].expand_as(hidden))  # one vector, broadcast
    # CLIP is causal: the first position never sees the prompt, so "cls" does not tell tissues apart.
    assert torch.allclose(embeddings["cls"][0], embeddings["cls"][1])
    assert not torch.allclose(embeddings["mean"][0], embeddings["mean"][1])
    eos = [row.tolist().index(tokenizer.eos_token_id) for row in tokens.input_ids]
    for i in range(2):
        torch.testing.assert_close(embeddings["pooler"][i, 0], hidden[i, eos[i]])
        torch.testing.assert_close(embeddings["mean"][i, 0], hidden[i, :eos[i] + 1].mean(0))


def test_tissue_tokens_train_only_their_embeddings(text_parts):
    tokenizer, text_encoder = text_parts
    text_encoder.requires_grad_(False)
    tokens = add_tissue_tokens(tokenizer, text_encoder)
    assert tokens.tokens == [tissue_token(t) for t in range(NUM_TISSUES)]
    assert [p for p in text_encoder.parameters() if p.requires_grad] == []
    label_ids = tokenizer("adipose", add_special_tokens=False).input_ids  # start: the label's mean embedding
    torch.testing.assert_close(tokens.vectors[0], text_encoder.get_input_embeddings().weight[label_ids].mean(0))

    prompts = [caption(t, textual_inversion=True) for t in (0, 5)]
    assert all(len(tokenizer(p).input_ids) < len(tokenizer(caption(t)).input_ids) for p, t in zip(prompts, (0, 5)))
    with torch.no_grad():  # with the rows copied in, the encoder's own forward pass gives the same states
        text_encoder.get_input_embeddings().weight[tokens.token_ids] = tokens.vectors
        plain = encode_prompts(tokenizer, text_encoder, prompts, "pooler")
    learned = encode_prompts(tokenizer, text_encoder, prompts, "pooler",
                             hidden_states=lambda ids: tokens(text_encoder, ids))
    torch.testing.assert_close(learned, plain)
    learned.square().sum().backward()
    grad = tokens.vectors.grad
    assert grad[[0, 5]].abs().sum(1).min() > 0 and grad[[1, 2, 3, 4, 6, 7, 8]].abs().sum() == 0
    assert text_encoder.get_input_embeddings().weight.grad is None


def test_film_tokens_are_one_per_finding(text_parts):
    tokenizer, text_encoder = text_parts
    tokens = add_class_tokens(tokenizer, text_encoder, "pneumoniamnist")
    assert tokens.tokens == ["<normal>", "<pneumonia>"] and tokens.vectors.shape == (2, text_encoder.config.hidden_size)
    assert tokenizer.convert_tokens_to_ids(tokens.tokens) == tokens.token_ids.tolist()
    label_ids = tokenizer("pneumonia", add_special_tokens=False).input_ids  # start: the label's mean embedding
    torch.testing.assert_close(tokens.vectors[1], text_encoder.get_input_embeddings().weight[label_ids].mean(0))


# ------------------------------------------------------------------------------------------ VAE report

def test_reconstruction_metrics_of_identical_images():
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)
    metrics = reconstruction_metrics(images, images)
    assert metrics["rmse"] == 0 and metrics["psnr"] is None and metrics["ssim"] == pytest.approx(1.0)


def test_vae_report_only(train_sd_lora, tiny_model, tmp_path):
    tiny_classifier().save_pretrained(tmp_path / "evaluator")
    from sample_tiles import shared_sample_npz

    out_dir = train_sd_lora.main(train_sd_lora.Config(
        pretrained_model=str(tiny_model), data=str(shared_sample_npz()), resolution=TINY_RESOLUTION,
        out_dir=str(tmp_path / "report"),
        vae_report_only=True, vae_report_images=18, evaluator=str(tmp_path / "evaluator")))
    report = json.loads((out_dir / VAE_REPORT_NAME).read_text())
    assert report["images"] == 18 and (report["resolution"], report["tile_size"]) == (TINY_RESOLUTION, 28)
    for name in ("vae", "resize_only"):
        entry = report[name]
        assert entry["rmse"] >= 0 and 0 < entry["psnr"] < 100 and -1 <= entry["ssim"] <= 1
        assert np.isfinite(entry["fid"]) and entry["fid"] >= -1e-6
        assert sum(t["n"] for t in entry["per_tissue"].values()) == 18 and set(entry["per_tissue"]) <= set(LABELS)
    # A random VAE loses far more than the resize round trip alone.
    assert report["vae"]["rmse"] > report["resize_only"]["rmse"] and report["vae"]["fid"] > report["resize_only"]["fid"]
    from PIL import Image

    tissues = len(report["vae"]["per_tissue"])
    with Image.open(out_dir / VAE_REPORT_IMAGE) as image:  # 4 (original, reconstruction) pairs per tissue row
        assert image.size == ((8 * 28 + 3 * 2) * 4, (tissues * 28 + (tissues - 1) * 2) * 4)
    assert not (out_dir / LORA_WEIGHTS_NAME).exists() and not (out_dir / "log.csv").exists()  # nothing trained


# ------------------------------------------------------------------------------------------ U-Net fine-tune

def test_full_unet_with_catalogue_prompts_and_mean_embedding(train_sd_lora, tiny_model, tmp_path):
    from diffusers import UNet2DConditionModel

    out_dir = quick(train_sd_lora, tiny_model, tmp_path / "full", finetune="full", prompt_style="catalogue",
                    prompt_embedding="mean", lr=1e-3)
    assert (out_dir / FULL_UNET_DIR / "config.json").is_file() and not (out_dir / LORA_WEIGHTS_NAME).exists()
    assert (out_dir / "checkpoint" / FULL_UNET_DIR).is_dir()
    summary = json.loads((out_dir / "training_summary.json").read_text())
    assert summary["prompts"]["adipose"] == caption(0, "catalogue")

    generator = backend(tiny_model, out_dir)
    assert (generator.prompt_style, generator.prompt_embedding) == ("catalogue", "mean")
    trained = UNet2DConditionModel.from_pretrained(str(out_dir / FULL_UNET_DIR)).state_dict()
    base = UNet2DConditionModel.from_pretrained(str(tiny_model / "unet")).state_dict()
    loaded = generator.pipeline.unet.state_dict()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    assert any(not torch.equal(trained[k], base[k]) for k in trained)
    embeddings, negative = generator.prompt_embeddings([0, 7])
    expected = encode_prompts(generator.pipeline.tokenizer, generator.pipeline.text_encoder,
                              [summary["prompts"]["adipose"], summary["prompts"]["cancer-associated stroma"]], "mean")
    torch.testing.assert_close(embeddings, expected)  # the prompts and pooling training used
    assert negative.shape == embeddings.shape
    images = generator.generate([0, 7], [1, 2])
    assert images.shape == (2, 28, 28, 3) and images.std() > 0

    # Resume of a finished run reloads the checkpointed U-Net and exports it unchanged.
    train_sd_lora.main(tiny_config(train_sd_lora, tiny_model, out_dir, steps=1, finetune="full", resume=True,
                                   prompt_style="catalogue", prompt_embedding="mean", validation_every=0,
                                   gradient_checkpointing=False))
    again = UNet2DConditionModel.from_pretrained(str(out_dir / FULL_UNET_DIR)).state_dict()
    assert all(torch.equal(again[k], trained[k]) for k in trained)


# ------------------------------------------------------------------------------------------ textual inversion

def test_textual_inversion_with_lora_and_pooler(train_sd_lora, tiny_model, tmp_path):
    from transformers import CLIPTextModel, CLIPTokenizer

    out_dir = quick(train_sd_lora, tiny_model, tmp_path / "ti", textual_inversion=True, prompt_embedding="pooler",
                    ti_lr=5e-2, steps=2)
    saved = load_file(str(out_dir / TOKENS_WEIGHTS_NAME))
    assert set(saved) == {tissue_token(t) for t in range(NUM_TISSUES)}
    assert (out_dir / LORA_WEIGHTS_NAME).is_file()
    start = add_tissue_tokens(CLIPTokenizer.from_pretrained(str(tiny_model / "tokenizer")),
                              CLIPTextModel.from_pretrained(str(tiny_model / "text_encoder"))).state()
    moved = [t for t in saved if not torch.equal(saved[t], start[t])]
    assert moved and all((saved[t] - start[t]).abs().max() > 1e-3 for t in moved)  # the tissues the batches showed

    generator = backend(tiny_model, out_dir)
    assert generator.textual_inversion and generator.prompt_embedding == "pooler"
    pipeline = generator.pipeline
    for token, vector in saved.items():
        torch.testing.assert_close(pipeline.text_encoder.get_input_embeddings().weight[
            pipeline.tokenizer.convert_tokens_to_ids(token)], vector)
    images = generator.generate([0, 5], [3, 4])
    assert images.shape == (2, 28, 28, 3)

    # Resume of a finished run restores the tokens from the checkpoint, bit for bit.
    resumed = tmp_path / "resumed"
    shutil.copytree(out_dir, resumed)
    train_sd_lora.main(tiny_config(train_sd_lora, tiny_model, resumed, steps=2, textual_inversion=True,
                                   prompt_embedding="pooler", resume=True, validation_every=0,
                                   gradient_checkpointing=False))
    again = load_file(str(resumed / TOKENS_WEIGHTS_NAME))
    assert all(torch.equal(again[t], saved[t]) for t in saved)


def test_textual_inversion_alone(train_sd_lora, tiny_model, tmp_path):
    out_dir = quick(train_sd_lora, tiny_model, tmp_path / "ti_only", textual_inversion=True, finetune="none",
                    ti_lr=5e-2)
    exported = {p.name for p in out_dir.iterdir()}
    assert TOKENS_WEIGHTS_NAME in exported and LORA_WEIGHTS_NAME not in exported and FULL_UNET_DIR not in exported
    generator = backend(tiny_model, out_dir)  # a run directory with only tokens is enough
    assert generator.textual_inversion and generator.prompt_embedding == "sequence"
    base = backend(tiny_model, None, resolution=TINY_RESOLUTION)
    assert generator.pipeline.tokenizer(caption(2, textual_inversion=True)).input_ids[-2] == \
        generator.pipeline.tokenizer.convert_tokens_to_ids("<debris>")
    assert not np.array_equal(generator.generate([2], [9]), base.generate([2], [9]))


# ------------------------------------------------------------------------------------------ chest films

def test_vae_report_of_films_has_a_row_per_finding(train_sd_lora, tiny_model, tmp_path):
    from PIL import Image

    out_dir = train_sd_lora.main(train_sd_lora.Config(
        pretrained_model=str(tiny_model), data=str(film_data()), domain="pneumoniamnist", resolution=TINY_RESOLUTION,
        out_dir=str(tmp_path / "report"), vae_report_only=True, vae_report_images=12, evaluator="none"))
    report = json.loads((out_dir / VAE_REPORT_NAME).read_text())
    assert report["domain"] == "pneumoniamnist" and report["images"] == 12 and report["tile_size"] == 28
    assert report["png_layout"].startswith("one row per finding")
    for name in ("vae", "resize_only"):
        rows = report[name]["per_finding"]
        assert "per_tissue" not in report[name] and set(rows) == {"normal", "pneumonia"}
        assert sum(row["n"] for row in rows.values()) == 12 and "fid" not in report[name]
    assert report["vae"]["rmse"] > report["resize_only"]["rmse"]
    with Image.open(out_dir / VAE_REPORT_IMAGE) as image:  # two finding rows of 4 (original, reconstruction) pairs
        assert image.size == ((8 * 28 + 3 * 2) * 4, (2 * 28 + 2) * 4)
        pixels = np.asarray(image.convert("RGB"))
        assert np.array_equal(pixels[:28 * 4, :28 * 4, 0], pixels[:28 * 4, :28 * 4, 2])  # a real film: grey


def test_film_textual_inversion_alone(train_sd_lora, tiny_model, tmp_path):
    out_dir = quick(train_sd_lora, tiny_model, tmp_path / "film_tokens", domain="pneumoniamnist",
                    data=str(film_data()), textual_inversion=True, finetune="none", ti_lr=5e-2)
    saved = load_file(str(out_dir / TOKENS_WEIGHTS_NAME))
    assert set(saved) == {"<normal>", "<pneumonia>"} and not (out_dir / LORA_WEIGHTS_NAME).exists()
    summary = json.loads((out_dir / "training_summary.json").read_text())
    assert summary["prompts"]["pneumonia"] == "a chest X-ray film reported as <pneumonia>"
    generator = backend(tiny_model, out_dir)
    assert generator.textual_inversion and generator.domain is XRAY
    assert generator.prompts([1]) == [caption(1, textual_inversion=True, domain=XRAY)]
    pipeline = generator.pipeline
    for token, vector in saved.items():
        torch.testing.assert_close(pipeline.text_encoder.get_input_embeddings().weight[
            pipeline.tokenizer.convert_tokens_to_ids(token)], vector)
    assert generator.generate([0, 1], [5, 6]).shape == (2, 28, 28, 3)
