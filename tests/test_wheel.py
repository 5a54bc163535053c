"""A non-editable install works: the wheel ships assets/ (models, reports; no dataset file) as ``pathsynth_assets``.

The slow test builds the wheel from a copy of the source (the checkout gets no build/ or egg-info), installs it
with ``--no-deps`` into a fresh venv that borrows this interpreter's packages (whether this interpreter is a venv
or the system's), and runs the CLI from outside the repository, with no data, so nothing can come from the
checkout's assets/ folder or a dataset.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
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
from pathsynth.evaluation.protocol import DEFAULT_EVALUATOR_DIR
from pathsynth.verify import REFERENCE_NAME
print(json.dumps({"package": pathsynth.__file__, "assets": str(settings.ASSETS_DIR),
                  "reference": (settings.DEFAULT_CLASSIFIER_DIR / REFERENCE_NAME).is_file(),
                  "evaluator": (DEFAULT_EVALUATOR_DIR / "model.safetensors").is_file(),
                  "cards": all(p.is_file() for p in MODEL_CARDS.values()), "reports": len(report_images())}))
"""
DATASET_SUFFIXES = (".npz", ".npy", ".pkl", ".pickle", ".h5", ".hdf5", ".parquet")


def borrowing_venv(venv_dir: Path) -> Path:
    """A venv whose interpreter also sees this interpreter's packages, as ``system_site_packages`` would for the base
    Python: this interpreter may itself be a venv (the README's setup), whose packages the base does not have."""
    venv.EnvBuilder(with_pip=False).create(venv_dir)
    python = venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    ours = list(dict.fromkeys([*site.getsitepackages(), sysconfig.get_path("purelib")]))
    # addsitedir, not a bare path: the borrowed folders' own .pth files (editable installs, say) run too
    lines = [f"import site; site.addsitedir({folder!r})" for folder in ours]
    (Path(purelib) / "_borrowed_site_packages.pth").write_text("\n".join(lines) + "\n")
    return python


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
    with zipfile.ZipFile(wheel) as archive:
        shipped_data = [name for name in archive.namelist() if name.lower().endswith(DATASET_SUFFIXES)]
    assert not shipped_data, f"the wheel ships dataset files: {shipped_data}"

    venv_dir = tmp_path / "venv"
    python = borrowing_venv(venv_dir)
    # the venv has no pip of its own: this interpreter's, borrowed (borrowing_venv), installs into it
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                               check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    work = tmp_path / "elsewhere"  # not the checkout: its pathsynth/ and assets/ must not be importable
    work.mkdir()
    check = subprocess.run([str(python), "-c", INSTALLED_CHECK], check=False, capture_output=True, text=True,
                           cwd=work, env=env, timeout=300)
    assert check.returncode == 0, check.stderr
    found = json.loads(check.stdout.strip().splitlines()[-1])
    site_dir = Path(found["package"]).resolve().parent.parent
    assert venv_dir.resolve() in site_dir.parents, f"pathsynth imported from {found['package']}, not the venv"
    assert Path(found["assets"]) == site_dir / "pathsynth_assets"
    assert found["reference"] and found["evaluator"] and found["cards"] and found["reports"] > 0

    out = tmp_path / "out"
    command = [str(python), "-m", "pathsynth", "generate", "adipose", "-n", "1", "--seed", "1",
               "--out", str(out), "--json"]  # verified: the realism check runs on the shipped reference, no data
    generated = subprocess.run(command, check=False, capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert generated.returncode == 0, generated.stderr
    result = json.loads(generated.stdout.strip().splitlines()[-1])
    assert result["tissue"] == 0 and result["n"] == 1 and len(result["images"]) == 1
    assert Path(result["images"][0]["path"]).is_file()
    assert len(result["images"][0]["probabilities"]) == 9  # the shipped classifier ran too

