"""The PathSynth web app: one module per tab, each ``build(services)`` making and wiring its own components.

``build_demo(services)`` assembles the tabs around one :class:`~pathsynth.services.Services` (models loaded once,
shared read-only); per-user state (quiz progress, an instructor's batch) lives in ``gr.State``. ``main()`` builds
the services first, in this thread, so a broken model file stops the app with one line and the first request
never waits for a model; ``pathsynth app`` and the root ``app.py`` (the Hugging Face Spaces entry point) call it.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before Gradio reads it: no usage reports by default

import gradio as gr  # noqa: E402

from ..errors import DataUnavailableError, ModelFileError
from ..services import Services
from ..settings import Settings
from . import about, assignments, challenge, galleries, generate, progress, quiz
from .common import install_atomic_image_cache, install_quiet_refusals, share_sign_in, use_own_file_cache

QUEUE_MAX_SIZE = 128
DEFAULT_CONCURRENCY = 8  # events outside the "model" group (reading galleries, answering, resolving)
MAX_FILE_SIZE = "10mb"
INTRO = """# PathSynth
Verified synthetic colorectal histology tiles (28 × 28 px H&E, PathMNIST classes) for teaching.
Every generated image is checked by a ResNet-18 classifier and a realism test before you see it.
_For education only — not for diagnosis._"""
# On a phone the quiz's (and an assignment's) columns stack: their contents are laid out as one column in which the
# view controls (zoom, enlargement, scale bar) and the occlusion map come after the answers, so the tile sits right
# above the choices.
PHONE_CSS = """
@media (max-width: 600px) {
  #quiz-question-row { flex-direction: column; }
  #quiz-question-row > .column { display: contents; }
  #quiz-question-row #quiz-look { order: 1; }
  #quiz-question-row #quiz-cam { order: 2; }
  #assignment-question-row { flex-direction: column; }
  #assignment-question-row > .column { display: contents; }
  #assignment-question-row #assignment-look-box { order: 1; }
}
"""
CSS = """
.pixelated img { image-rendering: pixelated; }
""" + PHONE_CSS + quiz.REVIEW_CSS + assignments.MISSED_CSS + quiz.EXAM_CSS + galleries.GALLERY_CSS
# the reviews' and galleries' captions below their pictures, in full (quiz.REVIEW_CSS, galleries.GALLERY_CSS); an
# exam's question without an empty map column (quiz.EXAM_CSS)


def build_demo(services: Services) -> gr.Blocks:
    """The whole app (queue configured, not launched)."""
    install_atomic_image_cache()
    install_quiet_refusals()  # a refused request is one log line, not a traceback
    with gr.Blocks(title="PathSynth", delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        identity, anon = progress.identity_components(services)  # the learner, remembered by the browser
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # on a phone every tab shows its name (no "•••")
            with gr.Tab("Generate", id="generate"):
                generate.build(services)
            with gr.Tab("Quiz", id="quiz"):
                quiz_view = quiz.build(services, anon)
            with gr.Tab("My progress", id="progress"):
                progress_name = progress.build(services, anon)
            with gr.Tab("Real or synthetic?", id="challenge"):
                challenge_name = challenge.build(services)
            with gr.Tab("Galleries", id="galleries"):
                gallery_sign_in = galleries.build(services, demo, quiz_view, tabs)
            with gr.Tab("Assignments", id="assignments") as assignments_tab:
                assignment_learner = assignments.build(services, demo, assignments_tab, quiz_view, tabs)
            with gr.Tab("About", id="about") as about_tab:
                about.build(services, about_tab)
        loaded = progress.wire_identity(demo, identity, anon, quiz_view.learner, progress_name, challenge_name,
                                        assignment_learner["name"])  # one learner name, whichever tab it is typed in
        share_sign_in(gallery_sign_in, assignment_learner["sign_in"])  # one instructor sign-in for both tabs
        quiz.wire_resume(services, quiz_view, loaded, anon)  # a quiz in progress goes on after a restart
        assignments.wire_resume(services, assignment_learner, loaded, quiz_view.learner)  # and an assignment
    return demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=QUEUE_MAX_SIZE)


def create_app(settings: Settings | None = None) -> gr.Blocks:
    """Load the services and build the app (what Hugging Face Spaces serves)."""
    return build_demo(Services.build(settings))


def main(port: int | None = None) -> None:
    """Serve the app (address: see ``Settings.server_name``, 127.0.0.1 unless told otherwise; port: ``port``,
    ``$PORT``, ``$GRADIO_SERVER_PORT`` or 7860). Gradio's usage analytics are off."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        services = Services.build(settings, serve_first=True)  # the real tiles' answer keys after the page is up
    except (ModelFileError, DataUnavailableError, ValueError) as error:  # useless without its models: say which file, stop
        print(f"PathSynth cannot start: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    use_own_file_cache()  # before the components are built: they note their cache folder
    port = port or int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    build_demo(services).launch(server_name=settings.server_name, server_port=port,
                                max_file_size=MAX_FILE_SIZE, footer_links=["api", "gradio"], css=CSS,
                                show_error=True)  # component input checks (e.g. a slider sent text) report their reason
