"""Hugging Face Spaces entry point: ``python app.py`` serves PathSynth (the app lives in ``pathsynth/app/``).

Listens on 127.0.0.1 (0.0.0.0 on Spaces; ``$GRADIO_SERVER_NAME`` or ``$PATHSYNTH_HOST`` to choose), port from
``$PORT`` / ``$GRADIO_SERVER_PORT`` (default 7860); ``app.demo`` builds the app without launching it.
"""

import time

STARTED = time.perf_counter()
if __name__ == "__main__":  # torch and Gradio take seconds to import on a fresh machine: say so before they start
    print("PathSynth is starting: importing torch and Gradio ...", flush=True)

from pathsynth.app import create_app, main  # noqa: E402

if __name__ == "__main__":
    print(f"PathSynth: libraries imported in {time.perf_counter() - STARTED:.1f} s; the page comes next, the models "
          "load behind it ...", flush=True)


def __getattr__(name: str):
    if name == "demo":
        return create_app()
    raise AttributeError(name)


if __name__ == "__main__":
    main()
