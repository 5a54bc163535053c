"""Fixtures that run the real app (``python app.py``) in a subprocess, for the API, browser and reliability tests.

The app uses the shipped models when they exist (``assets/models/classifier`` and ``assets/models/generator``);
otherwise tiny random ones are built in a temp folder, so the tests run either way (``PATHSYNTH_TEST_MODELS=tiny``
forces the tiny ones for a quick run). Gallery data goes to a temp ``PATHSYNTH_HOME``; the instructor
password is random per test session.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from pathsynth.classifier import model_files_present
from pathsynth.storage.server import start_postgres, stop_postgres

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CLASSIFIER = ROOT / "assets" / "models" / "classifier"
SHIPPED_GENERATOR = ROOT / "assets" / "models" / "generator"
STARTUP_TIMEOUT_S = float(os.environ.get("PATHSYNTH_TEST_STARTUP_TIMEOUT", 600))
ARTIFACTS = ROOT / "test-artifacts"


def shipped_models_present() -> bool:
    return (model_files_present(SHIPPED_CLASSIFIER)
            and (SHIPPED_GENERATOR / "model_index.json").is_file()
            and (SHIPPED_GENERATOR / "unet" / "diffusion_pytorch_model.safetensors").is_file())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningApp:
    url: str
    password: str
    home: Path
    process: subprocess.Popen
    log_path: Path
    startup_s: float
    models: str  # "shipped" | "tiny"

    def client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def answers_http(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=30) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False


@pytest.fixture(scope="session")
def model_env(tmp_path_factory) -> dict[str, str]:
    """Env vars pointing the app at the models to serve (empty: the shipped ones)."""
    if os.environ.get("PATHSYNTH_TEST_MODELS", "auto") != "tiny" and shipped_models_present():
        return {}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny_models import save_tiny_models

    from sample_tiles import sample_npz

    classifier_dir, generator_dir = save_tiny_models(tmp_path_factory.mktemp("tiny_models"))
    # tiny random models verify few images: real (or stand-in) tiles fill the quizzes' gaps
    data = os.environ.get("PATHSYNTH_DATA") or str(sample_npz(tmp_path_factory.mktemp("tiles") / "tiles.npz"))
    return {"PATHSYNTH_CLASSIFIER": str(classifier_dir), "PATHSYNTH_GENERATOR": str(generator_dir),
            "PATHSYNTH_DATA": data}


def start_app(home: Path, log_path: Path, model_env: dict[str, str], password: str | None = "",
              extra_env: dict[str, str] | None = None, port: int | None = None) -> RunningApp:
    """Launch ``python app.py`` on ``port`` (default: a free one) and wait until it answers HTTP 200."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PATHSYNTH_INSTRUCTOR_PASSWORD", "SPACE_ID",
                                                            "PATHSYNTH_CLASSIFIER", "PATHSYNTH_GENERATOR")}
    env.update(model_env)
    env.update(PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", PATHSYNTH_HOME=str(home), HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
               # a small pool: the pool path is exercised without its background filling slowing the suite
               PATHSYNTH_POOL_PER_TISSUE=env.get("PATHSYNTH_POOL_PER_TISSUE", "1"))
    if password:
        env["PATHSYNTH_INSTRUCTOR_PASSWORD"] = password
    env.update(extra_env or {})
    log = open(log_path, "wb")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    app = RunningApp(f"http://127.0.0.1:{port}/", password or "", home, process, log_path, 0.0,
                     "tiny" if model_env else "shipped")
    while time.perf_counter() - started < STARTUP_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with code {process.returncode}:\n{app.log()[-4000:]}")
        if app.answers_http():
            app.startup_s = time.perf_counter() - started
            wait_for_answer_keys(app, started)
            return app
        time.sleep(0.5)
    stop_app(app)
    raise RuntimeError(f"app.py did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{app.log()[-4000:]}")


def wait_for_answer_keys(app: RunningApp, started: float) -> None:
    """The app loads its models after its page is up, and on a machine whose cache lacks them classifies its real
    tiles after that (until then a quiz asks generated tiles only); tests that ask real tiles want them all, so wait
    for the lines saying so."""
    from pathsynth.services import ANSWER_KEYS_DONE

    while "models ready after" not in app.log():  # the page comes first, the models load behind it
        if app.process.poll() is not None or time.perf_counter() - started > STARTUP_TIMEOUT_S:
            raise RuntimeError(f"app.py did not load its models:\n{app.log()[-4000:]}")
        time.sleep(0.5)
    if "real tiles in the background" not in app.log():
        return
    while f"real tiles are {ANSWER_KEYS_DONE}" not in app.log():
        if app.process.poll() is not None or time.perf_counter() - started > STARTUP_TIMEOUT_S:
            raise RuntimeError(f"app.py did not classify its real tiles:\n{app.log()[-4000:]}")
        time.sleep(0.5)


def stop_app(app: RunningApp) -> None:
    if app.process.poll() is None:
        app.process.terminate()
        try:
            app.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            app.process.kill()
            app.process.wait(timeout=20)


@pytest.fixture(scope="session")
def running_app(model_env, tmp_path_factory):
    """One app process for the whole test session, with an instructor password configured."""
    directory = tmp_path_factory.mktemp("app")
    app = start_app(directory / "home", directory / "app.log", model_env, password=secrets.token_urlsafe(16))
    print(f"\napp ready in {app.startup_s:.1f} s at {app.url} ({app.models} models)")
    yield app
    stop_app(app)


@pytest.fixture(scope="session")
def client(running_app):
    return running_app.client()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# ------------------------------------------------------------------------- databases for the storage tests
# Store tests run on SQLite and on a real PostgreSQL server: a private one started here (``initdb`` + ``pg_ctl``
# from Debian's postgresql, as the ``postgres`` user when running as root, since the server refuses root), or
# the one at $PATHSYNTH_TEST_POSTGRES_URL (a role that may CREATE DATABASE). Each test gets a fresh database.
POSTGRES_URL_ENV = "PATHSYNTH_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_server():
    """The admin URL of a running PostgreSQL server. Cannot start one: fails under CI (CI=true), else skips."""
    import shutil
    import tempfile

    if os.environ.get(POSTGRES_URL_ENV):
        yield os.environ[POSTGRES_URL_ENV]
        return
    root = Path(tempfile.mkdtemp(prefix="pathsynth-pg-"))
    try:
        url = start_postgres(root / "server", free_port(), throwaway=True)
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        shutil.rmtree(root, ignore_errors=True)
        message = f"PostgreSQL could not be started for the storage tests: {error}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message + f" (set {POSTGRES_URL_ENV} or install postgresql)")
    try:
        yield url
    finally:
        stop_postgres(root / "server", mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def _admin(server_url: str, statement: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    conninfo = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:  # CREATE/DROP DATABASE refuse transactions
        connection.execute(statement)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request):
    """``database_url`` for a store: None (the SQLite file in the store's home) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    from sqlalchemy.engine import make_url

    server = request.getfixturevalue("postgres_server")
    name = f"pathsynth_test_{secrets.token_hex(8)}"
    _admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # FORCE: a killed writer's session


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide AcceleratorState: a training script run by one test (e.g. bf16 mixed
    precision) would otherwise fix the precision of every later test's Accelerator, or refuse to build it."""
    yield
    if "accelerate.state" in sys.modules:
        sys.modules["accelerate.state"].AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(autouse=True)
def same_torch_threads():
    """A training script run in-process sets torch's thread count (``--threads 1``) for the whole process; later
    tests would then run with another count than alone, and batch-invariance checks (an image alone and in a batch
    give the same pixels) depend on it on some CPUs. Each test starts with the count the session started with."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------ tiny Stable Diffusion (test_sd_lora, test_sd_toolkit)

@pytest.fixture(scope="module")
def train_sd_lora():
    """train/sd_lora.py loaded as a module, so its ``main`` runs in-process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny_sd import load_training_script

    return load_training_script()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random SD pipeline saved in diffusers layout (CPU, offline)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny_sd import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))
