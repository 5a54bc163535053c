"""The CLI contract: progress on stderr, --json puts one JSON object on the last stdout line, bad input exits 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
    (["generate", "TUM", "-n", "0", "--json"], "at least 1"),
    (["evaluate", "classifier", "--data", "/no/such/file.npz", "--json"], "not found"),
])
def test_bad_input_exits_2_with_one_line_reason(args, reason, tiny_env):
    out = run(args, tiny_env)
    assert out.returncode == 2
    assert reason in out.stderr and "Traceback" not in out.stderr


def test_evaluate_classifier_json(tmp_path, tiny_env):
    out = run(["evaluate", "classifier", "--out", str(tmp_path), "--no-tta", "--json"], tiny_env)
    assert out.returncode == 0, out.stderr
    result = last_json(out.stdout)
    assert result["n"] == 160 and {"accuracy", "macro_f1", "per_class"} <= result.keys()
    assert Path(result["confusion_matrix_png"]).is_file()
