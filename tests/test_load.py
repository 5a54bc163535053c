"""scripts/load_test.py works end to end: a tiny-model app, two learners, every action timed, no failures.

A functional check of the benchmark script only; its figures are not asserted (timings are not tests)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_models import save_tiny_models

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_load_script_runs_a_small_class(tmp_path):
    classifier_dir, generator_dir = save_tiny_models(tmp_path / "models")
    env = dict(os.environ, PATHSYNTH_CLASSIFIER=str(classifier_dir), PATHSYNTH_GENERATOR=str(generator_dir),
               PATHSYNTH_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out_file = tmp_path / "load.json"
    out = subprocess.run([sys.executable, "scripts/load_test.py", "--learners", "2", "--questions", "2",
                          "--port", str(free_port()), "--pool-per-tissue", "1", "--pool-wait", "0",
                          "--out", str(out_file)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads(out_file.read_text())
    counts = {action: row["n"] for action, row in result["actions"].items()}
    assert counts == {"generate": 2, "quiz_start": 2, "answer": 4, "next": 4} and not result["errors"]
    assert all(row["p95_s"] >= row["p50_s"] > 0 for row in result["actions"].values())
    assert "p95 s" in out.stdout and "quiz_start" in out.stdout  # the printed table
