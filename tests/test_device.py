"""``PATHSYNTH_DEVICE``: where the app's and CLI's models run. No GPU here: the CUDA branches are checked with torch's
availability patched, and the models' moves with the ``meta`` device (parameters without storage)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from pathsynth.settings import Settings, resolve_device


def test_the_device_is_the_cpu_unless_asked_and_auto_takes_the_gpu_torch_sees(monkeypatch):
    assert Settings.from_env({}).device == "cpu"
    assert Settings.from_env({"PATHSYNTH_DEVICE": " CPU "}).device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match=r"PATHSYNTH_DEVICE=cuda:2 but torch sees 1 CUDA device"):
        resolve_device("cuda:2")


def test_a_device_this_machine_lacks_is_refused_at_start_naming_what_it_has(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"torch sees no cuda device here \(available: cpu\); use PATHSYNTH_DEVICE=auto"):
        Settings.from_env({"PATHSYNTH_DEVICE": "cuda"})
    with pytest.raises(ValueError, match="PATHSYNTH_DEVICE must be cpu, auto, cuda, cuda:N or mps, got 'gpu0'"):
        Settings.from_env({"PATHSYNTH_DEVICE": "gpu0"})


def test_the_cli_says_so_in_one_line_without_a_traceback(tmp_path):
    env = {"PATHSYNTH_DEVICE": "quantum", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "pathsynth", "classify", "x.png"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "PATHSYNTH_DEVICE must be cpu, auto, cuda, cuda:N or mps, got 'quantum'" in done.stderr


def test_the_settings_device_reaches_the_generator_and_the_classifier():
    from pathsynth.classifier import load_classifier
    from pathsynth.generators import get_generator

    settings = Settings(device="meta")  # built directly: from_env refuses devices torch cannot run on
    generator = get_generator(settings=settings)
    devices = {p.device.type for module in (generator.pipeline.unet, generator.pipeline.discriminator)
               for p in module.parameters()}
    assert devices == {"meta"}
    classifier = load_classifier(settings.classifier_dir).to("meta")
    assert {p.device.type for p in classifier.model.parameters()} == {"meta"}


def test_to_returns_the_same_model_which_still_answers_and_explains_as_before():
    from pathsynth.classifier import load_classifier
    from pathsynth.explain import occlusion_map
    from sample_tiles import sample_tiles

    images, _ = sample_tiles()
    classifier = load_classifier()
    before = classifier.predict_proba(images[:16])
    assert classifier.to(torch.device("cpu")) is classifier
    assert np.allclose(classifier.predict_proba(images[:16]), before)
    assert occlusion_map(classifier, images[0]).shape == images[0].shape[:2]
