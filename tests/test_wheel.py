"""A non-editable install works: the wheel ships assets/ (models, the real sample, reports) as ``pathsynth_assets``.

The slow test builds the wheel from a copy of the source (the checkout gets no build/ or egg-info), installs it
with ``--no-deps`` into a fresh venv that borrows this interpreter's packages, and runs the CLI from outside the
repository, so nothing can come from the checkout's assets/ folder.
"""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from pathsynth import settings
from pathsynth.settings import ASSETS_ENV, Settings, assets_dir

REPO = Path(__file__).resolve().parent.parent


def test_packages_listed_in_pyproject_cover_every_subpackage():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "pathsynth").rglob("__init__.py")}
    listed = set(config["packages"])
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert config["package-dir"]["pathsynth_assets"] == "assets"


def test_checkout_uses_repo_assets():
    if "PATHSYNTH_ASSETS" in os.environ or Path(settings.__file__).resolve().parent.parent != REPO:
        pytest.skip("not running from the checkout's own pathsynth/")
    assert settings.ASSETS_DIR == REPO / "assets"
    assert assets_dir({}) == REPO / "assets"
    assert Settings.from_env({}).classifier_dir == REPO / "assets" / "models" / "classifier"


def test_assets_env_moves_every_default(tmp_path):
    s = Settings.from_env({ASSETS_ENV: str(tmp_path)})
    assert s.assets == tmp_path.resolve()
    assert s.classifier_dir == tmp_path.resolve() / "models" / "classifier"
    assert s.generator_dir == tmp_path.resolve() / "models" / "generator"
    explicit = Settings.from_env({ASSETS_ENV: str(tmp_path), "PATHSYNTH_CLASSIFIER": "/elsewhere"})
    assert explicit.classifier_dir == Path("/elsewhere")  # a model directory still wins over the assets root


INSTALLED_CHECK = """
import json, pathsynth
from pathsynth import settings
from pathsynth.app.about import MODEL_CARDS, report_images
from pathsynth.data import BUNDLED_SAMPLE, load_bundled_sample
from pathsynth.evaluation.protocol import DEFAULT_EVALUATOR_DIR
images, labels = load_bundled_sample()
print(json.dumps({"package": pathsynth.__file__, "assets": str(settings.ASSETS_DIR), "sample": str(BUNDLED_SAMPLE),
                  "n_sample": len(images), "evaluator": (DEFAULT_EVALUATOR_DIR / "model.safetensors").is_file(),
                  "cards": all(p.is_file() for p in MODEL_CARDS.values()), "reports": len(report_images())}))
"""


@pytest.mark.slow
def test_wheel_install_runs_outside_the_repo(tmp_path):
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("pathsynth", "assets"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PATHSYNTH_") and k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PATHSYNTH_HOME=str(tmp_path / "home"),
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(wheels), str(src)], check=False, capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("pathsynth-*.whl")

    venv_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(venv_dir)
    python = venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    # the venv has no pip of its own: this interpreter's, borrowed through system site-packages, installs into it
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                               check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    work = tmp_path / "elsewhere"  # not the checkout: its pathsynth/ and assets/ must not be importable
    work.mkdir()
    check = subprocess.run([str(python), "-c", INSTALLED_CHECK], check=False, capture_output=True, text=True,
                           cwd=work, env=env, timeout=300)
    assert check.returncode == 0, check.stderr
    found = json.loads(check.stdout.strip().splitlines()[-1])
    site = Path(found["package"]).resolve().parent.parent
    assert venv_dir.resolve() in site.parents, f"pathsynth imported from {found['package']}, not the venv"
    assert Path(found["assets"]) == site / "pathsynth_assets"
    assert Path(found["sample"]).is_relative_to(site / "pathsynth_assets")
    assert found["n_sample"] == 800 and found["evaluator"] and found["cards"] and found["reports"] > 0

    out = tmp_path / "out"
    command = [str(python), "-m", "pathsynth", "generate", "adipose", "-n", "1", "--no-verify", "--seed", "1",
               "--out", str(out), "--json"]
    generated = subprocess.run(command, check=False, capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert generated.returncode == 0, generated.stderr
    result = json.loads(generated.stdout.strip().splitlines()[-1])
    assert result["tissue"] == 0 and result["n"] == 1 and len(result["images"]) == 1
    assert Path(result["images"][0]["path"]).is_file()
    assert len(result["images"][0]["probabilities"]) == 9  # the shipped classifier ran too

