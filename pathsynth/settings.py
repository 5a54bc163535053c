"""Every ``PATHSYNTH_*`` environment variable, read in one place, once: ``Settings.from_env()``.

The app and the CLI build one ``Settings`` at start and pass it (or what it names) down; library functions
take explicit arguments and fall back to ``Settings.from_env()`` only when called with none.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_ENV = "PATHSYNTH_ASSETS"
ASSETS_PACKAGE = "pathsynth_assets"  # the repo's assets/ folder, shipped in the wheel under this name (pyproject.toml)


def assets_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The assets root (``data/``, ``models/``, ``reports/``): the one place that decides where it is.

    ``$PATHSYNTH_ASSETS`` if set; else the ``pathsynth_assets`` package installed next to ``pathsynth`` (a wheel
    install); else the repository's ``assets/`` folder (a checkout, an editable install, Hugging Face Spaces); else
    wherever ``pathsynth_assets`` can be imported from. Falls back to the repository path, so messages name it.
    """
    env = os.environ if environ is None else environ
    override = env.get(ASSETS_ENV, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    installed, repo = PACKAGE_DIR.parent / ASSETS_PACKAGE, PACKAGE_DIR.parent / "assets"
    for candidate in (installed, repo):
        if candidate.is_dir():
            return candidate
    try:
        spec = importlib.util.find_spec(ASSETS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if Path(location).is_dir():
            return Path(location).resolve()
    return repo


ASSETS_DIR = assets_dir()  # module-level defaults below follow $PATHSYNTH_ASSETS as it was at import
DEFAULT_CLASSIFIER_DIR = ASSETS_DIR / "models" / "classifier"
DEFAULT_GENERATOR_DIR = ASSETS_DIR / "models" / "generator"
DEFAULT_EVALUATOR_DIR = ASSETS_DIR / "models" / "evaluator"
DEFAULT_SD_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
PASSWORD_ENV = "PATHSYNTH_INSTRUCTOR_PASSWORD"
INSTRUCTORS_ENV = "PATHSYNTH_INSTRUCTORS"
SHARED_PASSWORD_ACCOUNT = "instructor"  # who the shared password signs in as (galleries' created_by, audit log)
DATA_ENV = "PATHSYNTH_DATA"
POOL_ENV = "PATHSYNTH_POOL_PER_TISSUE"
FILLER_ENV = "PATHSYNTH_POOL_FILLER"  # app (default) or workers: see Settings.pool_filler
DEVICE_ENV = "PATHSYNTH_DEVICE"
DEFAULT_POOL_PER_TISSUE = 8  # verified images kept ready per tissue: a class of 20 starting at once draws ~3 each
SPACES_DATA_DIR = Path("/data")  # Hugging Face Spaces' persistent storage, when the Space has it


def default_home(env: Mapping[str, str], spaces_data: Path = SPACES_DATA_DIR) -> tuple[Path, bool]:
    """(galleries and cache folder, whether it survives a restart) when ``$PATHSYNTH_HOME`` is not set.

    On Spaces the container's disk is wiped on every restart: use the persistent ``/data`` volume when it is
    mounted, and say otherwise. Off Spaces, ``~/.pathsynth``.
    """
    if not env.get("SPACE_ID"):
        return Path.home() / ".pathsynth", True
    if spaces_data.is_dir() and os.access(spaces_data, os.W_OK):
        return spaces_data / "pathsynth", True
    return Path.home() / ".pathsynth", False


def server_name(env: Mapping[str, str]) -> str:
    """Where the app listens: ``$GRADIO_SERVER_NAME`` or ``$PATHSYNTH_HOST``; else all interfaces on Spaces (its
    proxy must reach the app) and only this computer elsewhere."""
    for name in ("GRADIO_SERVER_NAME", "PATHSYNTH_HOST"):
        value = env.get(name, "").strip()
        if value:
            return value
    return "0.0.0.0" if env.get("SPACE_ID") else "127.0.0.1"


@dataclass(frozen=True)
class InstructorConfig:
    """Who may write galleries: instructor accounts (in the database, ``pathsynth instructors add``), a shared
    password (local) and/or Hugging Face usernames (on Spaces)."""

    password: str  # "" = no shared-password login
    on_spaces: bool
    usernames: frozenset[str]  # Hugging Face accounts allowed on Spaces
    accounts: bool = False  # the database has an enabled instructor account (set by the app, not the environment)

    @property
    def enabled(self) -> bool:
        return bool(self.password) or self.accounts or (self.on_spaces and bool(self.usernames))

    @property
    def disabled_message(self) -> str:
        accounts = "add an instructor account (pathsynth instructors add NAME) and restart the app"
        if self.on_spaces:
            return (f"Instructor features are disabled: set the Space secret {PASSWORD_ENV}, list instructor "
                    f"Hugging Face usernames in {INSTRUCTORS_ENV} or {accounts}.")
        return (f"Instructor features are disabled: {accounts}, or start it with the environment variable "
                f"{PASSWORD_ENV} set.")


@dataclass(frozen=True)
class StableDiffusionSettings:
    """The sd-lora backend: base model, LoRA (``"none"`` = base model only) and sampling options."""

    model: str = DEFAULT_SD_MODEL
    lora: str = ""
    steps: int | None = None
    guidance: float | None = None
    resolution: int | None = None
    device: str | None = None


@dataclass(frozen=True)
class Settings:
    backend: str = "embedded"
    classifier_dir: Path = DEFAULT_CLASSIFIER_DIR
    generator_dir: Path = DEFAULT_GENERATOR_DIR
    home: Path = field(default_factory=lambda: Path.home() / ".pathsynth")
    home_persistent: bool = True  # False on a Space without persistent storage: galleries vanish on restart
    server_name: str = "127.0.0.1"  # the address ``python app.py`` listens on
    database_url: str | None = None  # None: SQLite under ``home``
    data: str | None = None  # a local npz in medmnist layout (histology)
    domain_data: tuple[tuple[str, str], ...] = ()  # (flag, npz) of other domains: $PATHSYNTH_DATA_<FLAG>
    medmnist_root: Path = field(default_factory=lambda: Path.home() / ".medmnist")
    instructors: InstructorConfig = InstructorConfig("", False, frozenset())
    sd: StableDiffusionSettings = StableDiffusionSettings()
    assets: Path = ASSETS_DIR  # shipped data, models and reports (``$PATHSYNTH_ASSETS``)
    pool_per_tissue: int = DEFAULT_POOL_PER_TISSUE  # the app's stock of ready verified images (0: none)
    pool_filler: str = "app"  # who fills the stock: "app" (this process) or "workers" (``pathsynth worker``)
    device: str = "cpu"  # where the classifier, evaluator and embedded generator run (``resolve_device``)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Settings from ``environ`` (default: the process environment); bad numbers raise ``ValueError``."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        assets = assets_dir(env)
        home, persistent = (Path(get("PATHSYNTH_HOME")).expanduser(), True) if get("PATHSYNTH_HOME") else \
            default_home(env)
        usernames = frozenset(u.strip().lower() for u in (get(INSTRUCTORS_ENV) or "").split(",") if u.strip())
        return cls(
            backend=(get("PATHSYNTH_BACKEND") or "embedded").lower(),
            classifier_dir=Path(get("PATHSYNTH_CLASSIFIER") or assets / "models" / "classifier"),
            generator_dir=Path(get("PATHSYNTH_GENERATOR") or assets / "models" / "generator"),
            home=home,
            home_persistent=persistent or bool(get("PATHSYNTH_DATABASE_URL")),
            server_name=server_name(env),
            database_url=get("PATHSYNTH_DATABASE_URL"),
            data=get(DATA_ENV),
            domain_data=tuple(sorted((name[len(DATA_ENV) + 1:].lower(), value.strip()) for name, value in env.items()
                                     if name.startswith(DATA_ENV + "_") and value.strip())),
            medmnist_root=Path(get("PATHSYNTH_MEDMNIST_ROOT") or Path.home() / ".medmnist").expanduser(),
            instructors=InstructorConfig(env.get(PASSWORD_ENV, ""), bool(env.get("SPACE_ID")), usernames),
            sd=StableDiffusionSettings(
                model=get("PATHSYNTH_SD_MODEL") or DEFAULT_SD_MODEL, lora=get("PATHSYNTH_LORA") or "",
                steps=_number(get, "PATHSYNTH_SD_STEPS", int), guidance=_number(get, "PATHSYNTH_SD_GUIDANCE", float),
                resolution=_number(get, "PATHSYNTH_SD_RESOLUTION", int), device=get("PATHSYNTH_SD_DEVICE")),
            assets=assets,
            pool_per_tissue=_pool_size(get),
            pool_filler=_pool_filler(get),
            device=resolve_device(get(DEVICE_ENV)),
        )


def data_for(settings: Settings, flag: str) -> str | None:
    """The local npz set for a domain: ``$PATHSYNTH_DATA`` for histology, ``$PATHSYNTH_DATA_<FLAG>`` for the others
    (e.g. ``PATHSYNTH_DATA_PNEUMONIAMNIST``); None means medmnist's cache (or its download)."""
    return settings.data if flag == "pathmnist" else dict(settings.domain_data).get(flag)


def model_dir(settings: Settings, flag: str, kind: str) -> Path:
    """Where a domain's model of ``kind`` ("classifier", "generator") is: histology's from the settings
    (``$PATHSYNTH_CLASSIFIER``...), another domain's under ``assets/models/<flag>/<kind>``."""
    if flag == "pathmnist":
        return {"classifier": settings.classifier_dir, "generator": settings.generator_dir}[kind]
    return settings.assets / "models" / flag / kind


def resolve_device(value: str | None) -> str:
    """The torch device named by ``$PATHSYNTH_DEVICE``: ``cpu`` when unset, ``auto`` = the GPU when torch sees one
    (else the CPU), or a device name (``cuda``, ``cuda:1``, ``mps``). One this machine lacks is refused at start,
    naming what it has, rather than failing at the first image."""
    import torch

    name = (value or "cpu").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{DEVICE_ENV} must be cpu, auto, cuda, cuda:N or mps, got {value!r}") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise ValueError(f"{DEVICE_ENV}={value} but torch sees no {device.type} device here "
                         f"(available: {', '.join(k for k, ok in available.items() if ok)}); use {DEVICE_ENV}=auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{DEVICE_ENV}={value} but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return str(device)


def _pool_size(get) -> int:
    size = _number(get, POOL_ENV, int)
    if size is not None and size < 0:
        raise ValueError(f"{POOL_ENV} must be 0 (no pool) or more, got {size}")
    return DEFAULT_POOL_PER_TISSUE if size is None else size


def _pool_filler(get) -> str:
    filler = (get(FILLER_ENV) or "app").lower()
    if filler not in ("app", "workers"):
        raise ValueError(f"{FILLER_ENV} must be app (this process fills the pool) or workers (pathsynth worker "
                         f"processes do), got {filler!r}")
    return filler


def _number(get, name: str, kind):
    value = get(name)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
