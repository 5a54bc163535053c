"""A fresh clone with no dataset and no network: the app starts, generates and verifies (realism against the reference
shipped with the classifier), quizzes on generated tiles, and says in one line what is off and how to turn it on.
Also: the lazily imported modules are imported before serving, so concurrent first requests cannot race on them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shipped_models_present, start_app, stop_app
from test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS

ROOT = Path(__file__).resolve().parent.parent
# nothing outside this machine can be fetched; the app still reaches itself (Gradio checks its own URL at launch)
NO_NETWORK = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost"}
OFF_LINE = "Real tiles are off"


def no_data_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine with no PathMNIST file: no PATHSYNTH_DATA, an empty medmnist folder."""
    (tmp_path / "medmnist").mkdir(exist_ok=True)
    return {"PATHSYNTH_MEDMNIST_ROOT": str(tmp_path / "medmnist"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
            **NO_NETWORK}


@pytest.fixture(scope="module")
def offline_services(tmp_path_factory):
    if not shipped_models_present():
        pytest.skip("needs the shipped models")
    from pathsynth.services import Services
    from pathsynth.settings import Settings

    tmp_path = tmp_path_factory.mktemp("offline")
    env = {k: v for k, v in os.environ.items() if k != "PATHSYNTH_DATA"}
    env.update(no_data_env(tmp_path), PATHSYNTH_HOME=str(tmp_path / "home"))
    return Services.build(Settings.from_env(env), pool_per_tissue=0)


def test_without_data_the_verifier_still_checks_realism_and_quizzes_are_all_generated(offline_services):
    from pathsynth.app import about, challenge, quiz

    services = offline_services
    assert len(services.real_images) == 0 and OFF_LINE in services.real_tiles_off
    assert "pathsynth data download" in services.real_tiles_off and "PATHSYNTH_DATA" in services.real_tiles_off
    assert services.verifier.realism is not None  # the reference shipped beside the classifier
    result = services.verifier.generate(["adipose"], seed=3)[0]
    assert result.image.shape == (28, 28, 3) and 0.0 <= result.realism <= 1.0
    view = quiz.start(services, 3, 0.5)
    session = view[0]
    assert session.total >= 1 and {q.source for q in session.questions} == {"generated"}
    status_text = " ".join(str(part) for part in view if isinstance(part, str))
    assert "Every tile is generated" in status_text and OFF_LINE in status_text
    refused = challenge.next_tile(services, None)
    assert OFF_LINE in refused[9]  # the message beside "Show a tile"; no traceback, no overlay
    assert OFF_LINE in about.real_tiles_line(services)


def test_the_download_button_says_why_it_failed_offline(offline_services):
    from pathsynth.app import about

    message = about.download_real_tiles(offline_services)
    assert message.startswith("⚠️ could not download PathMNIST") and "PATHSYNTH_DATA" in message


def test_lazy_modules_are_imported_before_serving_so_first_requests_cannot_race():
    """In a fresh interpreter: after warm_imports (Services.build runs it first) every module the handlers and the
    pool's filler import lazily is loaded, and eight threads making their first maps, fonts and figures at once all
    succeed (a fresh start once failed with "module 'matplotlib' has no attribute 'get_data_path'")."""
    script = """
import sys, threading
import numpy as np
from pathsynth.services import LAZY_MODULES, warm_imports
warm_imports()
missing = [name for name in LAZY_MODULES if name not in sys.modules]
assert not missing, missing
from pathsynth.explain import occlusion_map
from matplotlib.figure import Figure
from pathsynth.images import _label_font
from tiny_models import tiny_classifier
classifier, errors = tiny_classifier(), []
tile = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
def first_request():
    try:
        assert occlusion_map(classifier, tile).shape == (28, 28)
        _label_font(12)
        Figure().add_subplot().plot([0, 1])
    except Exception as error:
        errors.append(repr(error))
threads = [threading.Thread(target=first_request) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
assert not errors, errors
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


@pytest.mark.slow
def test_a_fresh_clone_with_no_data_serves_generates_quizzes_and_says_what_is_off(model_env, tmp_path, artifacts_dir):
    from gradio_client.exceptions import AppError

    if model_env:
        pytest.skip("needs the shipped models: tiny random ones verify too few images for an all-generated quiz")
    env = {**no_data_env(tmp_path), "PATHSYNTH_DATA": ""}
    app = start_app(tmp_path / "home", tmp_path / "app.log", model_env, extra_env=env)
    try:
        assert "Real tiles are off" in app.log()  # said in the terminal at start
        client = app.client()
        image, *_ = client.predict("Adipose tissue", "", "11", True, api_name="/generate")
        assert Path(image).is_file()
        started = client.predict(3, 0.5, api_name="/quiz_start")
        status = next(x for x in started if isinstance(x, dict) and "quiz_id" in x)
        assert status["total"] >= 1 and any(isinstance(x, str) and "Every tile is generated" in x for x in started)
        with pytest.raises(AppError, match="Real tiles are off"):
            client.predict(api_name="/challenge_next")
        if CHROMIUM.exists():
            screenshot_off_tabs(app.url, artifacts_dir)
        assert "Traceback" not in app.log()
    finally:
        stop_app(app)


def screenshot_off_tabs(url: str, artifacts_dir: Path) -> None:
    """The challenge tab's line and disabled button, and the About tab's download button, at desktop and phone width."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        desktop, phone = {"width": 1400, "height": 1000}, {"width": 390, "height": 844}
        page = browser.new_page(viewport=desktop)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        for tab, line, check in (("Real or synthetic?", "#challenge-off", "challenge"), ("About", "#about-real-tiles", "about")):
            page.set_viewport_size(desktop)  # every tab in one row (at phone width the later ones fold into a menu)
            page.get_by_role("tab", name=tab).click()
            page.locator(line).get_by_text(OFF_LINE).wait_for()
            if check == "challenge":
                assert page.get_by_role("button", name="Show a tile").is_disabled()
            else:
                assert page.get_by_role("button", name="Download PathMNIST").is_visible()
            for name, viewport in (("desktop", desktop), ("phone", phone)):
                page.set_viewport_size(viewport)
                page.screenshot(path=str(artifacts_dir / f"offline_{name}_{check}.png"), full_page=True)
        page.close()
        browser.close()
