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

import gradio as gr

from ..errors import DataUnavailableError, ModelFileError
from ..services import Services
from ..settings import Settings
from . import about, galleries, generate, quiz

QUEUE_MAX_SIZE = 128
DEFAULT_CONCURRENCY = 8  # events outside the "model" group (reading galleries, answering, resolving)
MAX_FILE_SIZE = "10mb"
INTRO = """# PathSynth
Verified synthetic colorectal histology tiles (28 × 28 px H&E, PathMNIST classes) for teaching.
Every generated image is checked by a ResNet-18 classifier and a realism test before you see it.
_For education only — not for diagnosis._"""
CSS = """
.pixelated img { image-rendering: pixelated; }
"""


def build_demo(services: Services) -> gr.Blocks:
    """The whole app (queue configured, not launched)."""
    with gr.Blocks(title="PathSynth", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                generate.build(services)
            with gr.Tab("Quiz", id="quiz"):
                quiz_view = quiz.build(services)
            with gr.Tab("Galleries", id="galleries"):
                galleries.build(services, demo, quiz_view, tabs)
            with gr.Tab("About", id="about"):
                about.build(services)
    return demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=QUEUE_MAX_SIZE)


def create_app(settings: Settings | None = None) -> gr.Blocks:
    """Load the services and build the app (what Hugging Face Spaces serves)."""
    return build_demo(Services.build(settings))


def main(port: int | None = None) -> None:
    """Serve the app on 0.0.0.0 (port: ``port``, ``$PORT``, ``$GRADIO_SERVER_PORT`` or 7860)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        services = Services.build(Settings.from_env())
    except (ModelFileError, DataUnavailableError) as error:  # useless without its models: say which file, stop
        print(f"PathSynth cannot start: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    port = port or int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    build_demo(services).launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), server_port=port,
                                max_file_size=MAX_FILE_SIZE, footer_links=["api", "gradio"], css=CSS,
                                show_error=True)  # component input checks (e.g. a slider sent text) report their reason
