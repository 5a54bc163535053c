"""The CLI contract: progress on stderr, --json puts one JSON object on the last stdout line, bad input exits 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_models import save_tiny_models

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    classifier_dir, generator_dir = save_tiny_models(tmp_path_factory.mktemp("models"))
    env = dict(os.environ, PATHSYNTH_CLASSIFIER=str(classifier_dir), PATHSYNTH_GENERATOR=str(generator_dir),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def run(args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "pathsynth", *args], capture_output=True, text=True, cwd=REPO,
                          env=env or dict(os.environ, HF_HUB_OFFLINE="1"), timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_resolve_json():
    out = run(["resolve", "fat cells", "--json"])
    assert out.returncode == 0, out.stderr
    result = last_json(out.stdout)
    assert result["tissue"] == 0 and result["label"] == "adipose" and result["status"] == "ok"
    assert len(result["candidates"]) == 9 and 0 <= result["confidence"] <= 1


def test_resolve_nonsense_is_null_not_an_error():
    result = last_json(run(["resolve", "qwzx vbnm", "--json"]).stdout)
    assert result["tissue"] is None and result["status"] == "not_understood"


def test_generate_verified_and_unverified(tmp_path, tiny_env):
    out = run(["generate", "TUM", "-n", "2", "--seed", "3", "--out", str(tmp_path), "--json"], tiny_env)
    assert out.returncode == 0, out.stderr
    assert "attempt" in out.stderr  # progress goes to stderr
    result = last_json(out.stdout)
    assert result["tissue"] == 8 and result["n"] == 2 and result["verify"] is True
    for image in result["images"]:
        assert Path(image["path"]).is_file() and image["attempts"] >= 1 and len(image["probabilities"]) == 9
        assert isinstance(image["verified"], bool)
    raw = last_json(run(["generate", "mucin pool", "-n", "1", "--no-verify", "--seed", "1", "--out", str(tmp_path),
                         "--json"], tiny_env).stdout)
    assert raw["tissue"] == 4 and raw["verify"] is False and raw["images"][0]["verified"] is None


@pytest.mark.parametrize("args,reason", [
    (["generate", "asdf qwer zxcv", "--json"], "could not match"),
    (["generate", "TUM", "-n", "0", "--json"], "from 1 to 10,000"),
    (["evaluate", "classifier", "--data", "/no/such/file.npz", "--json"], "not found"),
])
def test_bad_input_exits_2_with_one_line_reason(args, reason, tiny_env):
    out = run(args, tiny_env)
    assert out.returncode == 2
    assert reason in out.stderr and "Traceback" not in out.stderr


def test_evaluate_classifier_json(tmp_path, tiny_env):
    """With no --data, a train-only $PATHSYNTH_DATA is evaluated on its held-out fold (a fifth of it)."""
    import numpy as np

    from sample_tiles import sample_tiles

    images, labels = sample_tiles()
    np.savez(tmp_path / "tiles.npz", train_images=images, train_labels=labels[:, None])
    env = {**tiny_env, "PATHSYNTH_DATA": str(tmp_path / "tiles.npz")}
    out = run(["evaluate", "classifier", "--out", str(tmp_path), "--no-tta", "--json"], env)
    assert out.returncode == 0, out.stderr
    result = last_json(out.stdout)
    assert result["n"] == len(labels) // 5 and {"accuracy", "macro_f1", "per_class"} <= result.keys()
    assert Path(result["confusion_matrix_png"]).is_file()


# ------------------------------------------------------------------------ arguments checked before models load

# Model directories that do not exist: a command that got as far as loading models would fail on them instead.
NO_MODELS = dict(os.environ, PATHSYNTH_CLASSIFIER="/no/classifier", PATHSYNTH_GENERATOR="/no/generator",
                 HF_HUB_OFFLINE="1")


@pytest.mark.parametrize("args,reason", [
    (["generate", "TUM", "-n", "1000000000"], "-n: expected a whole number from 1 to 10,000, got '1000000000'"),
    (["generate", "TUM", "-n", "many"], "-n: expected a whole number from 1 to 10,000, got 'many'"),
    (["generate", "TUM", "--seed", str(2**64)], "--seed: expected a seed from 0 to 2,147,483,647"),
    (["generate", "TUM", "--seed", "-1"], "--seed: expected a seed from 0 to 2,147,483,647, got '-1'"),
    (["generate", "TUM", "--scale", "1000"], "--scale: expected a whole number from 1 to 32"),
    (["generate", "TUM", "--out", "/proc/nope"], "cannot write to '/proc/nope'"),
    (["evaluate", "generator", "--per-class", "10000000"], "--per-class: expected a whole number from 1 to 2,000"),
    (["evaluate", "generator", "--out", "/proc/nope"], "cannot write to '/proc/nope'"),
    (["evaluate", "classifier", "--out", "/proc/nope"], "cannot write to '/proc/nope'"),
    (["bench", "--repeats", "0"], "--repeats: expected a whole number from 1 to 1,000"),
    (["bench", "--out", "/proc/nope"], "cannot write to '/proc/nope'"),
    (["app", "--port", "99999"], "--port: expected a port from 1 to 65,535"),
    (["resolve", "  "], "describe a tissue"),
])
def test_arguments_are_checked_first_with_one_line_and_exit_2(args, reason):
    out = run(args, NO_MODELS)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and reason in lines[0], out.stderr
    assert "/no/classifier" not in out.stderr and "/no/generator" not in out.stderr  # no model was opened
    assert "_positive" not in out.stderr and "invalid" not in out.stderr and "usage:" not in out.stderr


def test_generate_streams_batches_to_disk(tmp_path, monkeypatch):
    """-n larger than a batch: each batch is written before the next is generated (memory stays flat)."""
    from pathsynth import cli, verify
    from pathsynth.tissues import TISSUES

    class CountingVerifier:
        generator = None

        def __init__(self):
            self.batches, self.files_seen = [], []

        def generate(self, tissues, seed=None, progress=None):
            self.files_seen.append(len(list(tmp_path.glob("*.png"))))
            self.batches.append((len(tissues), seed))
            rng = np.random.default_rng(seed)
            return [verify.VerifiedImage(image=rng.integers(0, 255, (28, 28, 3), dtype=np.uint8), tissue=t,
                                         verified=True, attempts=1, seed=int(rng.integers(2**31 - 1)),
                                         probabilities=[1.0 / 9] * 9, predicted=t, confidence=1.0 / 9, realism=1.0)
                    for t in tissues]

    fake = CountingVerifier()
    monkeypatch.setattr(verify, "default_verifier", lambda backend=None, settings=None, domain="pathmnist": fake)
    monkeypatch.setattr(cli, "GENERATE_BATCH", 4)
    assert cli.main(["generate", "ADI", "-n", "10", "--seed", "5", "--out", str(tmp_path)]) == 0
    assert [size for size, _ in fake.batches] == [4, 4, 2]
    assert fake.files_seen == [0, 4, 8]  # written batch by batch
    assert fake.batches[0][1] == 5 and len({seed for _, seed in fake.batches}) == 3  # batch 0 keeps the seed
    assert len(list(tmp_path.glob(f"{TISSUES[0].abbreviation}_*.png"))) == 10


# ----------------------------------------------------------------------------- classify at any saved size

def test_classify_gives_the_same_answer_at_any_saved_scale(tmp_path, tiny_env):
    for scale in ("1", "8"):
        out = run(["generate", "TUM", "-n", "2", "--seed", "7", "--no-verify", "--scale", scale,
                   "--out", str(tmp_path / f"x{scale}"), "--json"], tiny_env)
        assert out.returncode == 0, out.stderr
    small, large = (sorted((tmp_path / f"x{s}").glob("*.png")) for s in ("1", "8"))
    assert [p.name for p in small] == [p.name for p in large] and len(small) == 2
    out = run(["classify", *map(str, small + large), "--json"], tiny_env)
    assert out.returncode == 0, out.stderr
    rows = last_json(out.stdout)["predictions"]
    for a, b in zip(rows[:2], rows[2:]):
        assert b["size"] == [224, 224] and b["reduced_by"] == 8 and a["reduced_by"] == 1
        assert a["tissue"] == b["tissue"]
        assert all(abs(a["probabilities"][k] - b["probabilities"][k]) <= 1e-4 for k in a["probabilities"])


def test_classify_reads_any_mode_and_rejects_non_images(tmp_path, tiny_env):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    (tmp_path / "notes.png").write_text("not an image")
    out = run(["classify", str(tmp_path / "rgba.png"), str(tmp_path / "grey.png"), str(tmp_path / "grey16.png"),
               "--json"], tiny_env)
    assert out.returncode == 0, out.stderr
    grey, grey16 = last_json(out.stdout)["predictions"][1:]
    assert grey["probabilities"] == grey16["probabilities"]  # 16-bit read as its 8-bit values, not clipped white
    bad = run(["classify", str(tmp_path / "notes.png")], NO_MODELS)
    assert bad.returncode == 2 and "not a readable image" in bad.stderr and "/no/classifier" not in bad.stderr


def test_undo_pixel_upscale_is_exact_and_leaves_other_images_alone():
    from pathsynth.images import scale, undo_pixel_upscale

    tile = np.random.default_rng(1).integers(0, 255, (28, 28, 3), dtype=np.uint8)
    for factor in (1, 2, 8, 12):
        restored, found = undo_pixel_upscale(scale(tile, factor), 28)
        assert found == factor and np.array_equal(restored, tile)
    smooth = np.random.default_rng(2).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    assert undo_pixel_upscale(smooth, 28)[1] == 1


def test_classify_prepares_other_labs_tiles_at_their_stated_scale(tmp_path, tiny_env):
    from PIL import Image

    from sample_tiles import sample_tiles

    images, _ = sample_tiles()
    # A real tile scanned at 5x PathMNIST's magnification: 140 px at 0.8 um/px covers the same 112 um.
    Image.fromarray(images[0]).resize((140, 140), Image.BICUBIC).save(tmp_path / "scan.png")
    out = run(["classify", str(tmp_path / "scan.png"), "--microns-per-pixel", "0.8", "--json"], tiny_env)
    assert out.returncode == 0, out.stderr
    row = last_json(out.stdout)["predictions"][0]
    assert row["size"] == [140, 140] and row["preparation"]  # says what it did (scale, stain)
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-3
    bad = run(["classify", str(tmp_path / "scan.png"), "--microns-per-pixel", "0"], NO_MODELS)
    assert bad.returncode == 2 and "microns-per-pixel" in bad.stderr


def test_evaluate_compare_puts_reports_of_any_backend_side_by_side(tmp_path):
    """Reports of two backends in one table; a figure one report lacks stays blank; a missing report exits 2."""
    per_class = {"adipose": {"abbreviation": "ADI", "c2st_balanced_accuracy": 0.61},
                 "mucus": {"abbreviation": "MUC", "c2st_balanced_accuracy": 0.72}}
    embedded = {"generator": "embedded", "image_size": 28, "c2st_balanced_accuracy": 0.6445, "fid": 23.1191,
                "fid_ratio": 2.1845, "macro_f1_raw": 0.9779, "per_class": per_class}
    sd = {"generator": "sd-lora", "image_size": 64, "c2st_balanced_accuracy": 0.9, "fid": 40.5, "per_class": {}}
    for name, report in (("embedded_eval", embedded), ("lora_eval", sd)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(report))
    out_md = tmp_path / "table.md"
    out = run(["evaluate", "compare", str(tmp_path / "embedded_eval"), str(tmp_path / "lora_eval" / "report.json"),
               "--out", str(out_md), "--json"])
    assert out.returncode == 0, out.stderr
    table = last_json(out.stdout)["table"]
    assert out_md.read_text().strip() == table
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in table.splitlines()[2:]}
    assert [cell.strip() for cell in table.splitlines()[0].split("|")[2:4]] == ["embedded_eval", "lora_eval"]
    assert rows["backend"] == ["embedded", "sd-lora"] and rows["tile size (px)"] == ["28", "64"]
    assert rows["FID, evaluator features, raw"] == ["23.1191", "40.5000"]
    assert rows["FID ratio"] == ["2.1845", ""] and rows["C2ST, worst tissue"] == ["MUC 0.7200", ""]
    missing = run(["evaluate", "compare", str(tmp_path / "nowhere")])
    assert missing.returncode == 2 and "no generator report" in missing.stderr
