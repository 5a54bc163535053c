"""What every tab shares: the error policy, input checks with readable messages, binding handlers to services."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import shutil
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
from gradio.context import LocalContext
from gradio import processing_utils
from gradio.data_classes import GradioRootModel

from ..errors import DataUnavailableError, ModelFileError
from ..images import INTERPOLATIONS
from ..pool import REQUESTS
from ..ui_helpers import escape_md

logger = logging.getLogger("pathsynth.app")

MODEL_CONCURRENCY = 2  # generation is CPU-bound: more parallel runs only slow each other down
MODEL_EVENTS = {"concurrency_id": "model", "concurrency_limit": MODEL_CONCURRENCY}  # one queue for model work
# Model work that an event served from the pool must do after all (a typed seed, a tissue out of stock) waits here,
# so those events need not sit in the "model" queue behind generation when the pool has what they ask for.
model_slots = threading.BoundedSemaphore(MODEL_CONCURRENCY)


class SeededBatches:
    """Concurrent requests with a typed seed share generator batches: a request waits for a model slot
    (``model_slots``), and whoever gets one generates every seeded request waiting by then (up to ``max_batch``) in
    one ``Verifier.generate(..., seeds=...)`` call (:func:`pathsynth.pool.verify_batch`: each image is the one its
    seed gives alone, up to batch rounding). Twenty learners typing seeds at once cost a few batches, not twenty
    generator runs queued two at a time."""

    def __init__(self, max_batch: int = 32):
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[dict] = []

    def generate(self, verifier, tissue: int, seed: int) -> object:
        request = {"tissue": tissue, "seed": seed, "done": threading.Event()}
        with self._lock:
            self._waiting.append(request)
        while not request["done"].is_set():
            with model_slots:
                with self._lock:
                    batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
                if batch:
                    self._run(verifier, batch)
            request["done"].wait(0.02)  # in a batch another thread runs: its result comes soon
        if "error" in request:
            raise request["error"]
        return request["result"]

    @staticmethod
    def _run(verifier, batch: list[dict]) -> None:
        from ..pool import verify_batch

        try:
            results = verify_batch(verifier, [r["tissue"] for r in batch], [r["seed"] for r in batch])
            for request, result in zip(batch, results):
                request["result"] = result
        except Exception as error:  # every request of the batch reports it
            for request in batch:
                request["error"] = error
        finally:
            for request in batch:
                request["done"].set()


seeded_batches = SeededBatches()


def verified_images(services, tissues: list[int], seed: int | None, on_progress=None,
                    prefer: str | None = None) -> list:
    """Verified images of ``tissues`` for an event outside the "model" queue: unseeded, those the pool has ready
    (no model call, no wait; ``prefer`` as ``VerifiedPool.take``); the rest (all of them for a typed seed, which
    must reproduce its images) generated now by the verifier, at most ``MODEL_CONCURRENCY`` at a time
    (``model_slots``), one typed-seed image in a batch with others asked at once (``seeded_batches``). Their
    occlusion maps are left to whoever shows one (computed once: ``services.explainer`` caches)."""
    if seed is not None and len(tissues) == 1:  # one typed-seed image (Generate): batched with others at once
        return [seeded_batches.generate(services.verifier, tissues[0], seed)]
    pooled = seed is None and services.pool is not None
    results = services.pool.take(tissues, prefer=prefer) if pooled else [None] * len(tissues)
    missing = [i for i, result in enumerate(results) if result is None]
    if missing:
        with model_slots:
            made = services.verifier.generate([tissues[i] for i in missing], seed=seed, progress=on_progress)
        for i, result in zip(missing, made):
            results[i] = result
    return results


def pool_served_events(services) -> dict:
    """Queue settings for an event that serves ready images from the pool (quiz start, Generate): an own queue
    (Gradio's default limit), never behind generation; the "model" queue when there is no pool to serve from."""
    return MODEL_EVENTS if services.pool is None else {}


def check_interpolation(interpolation, error: type[Exception] = ValueError) -> str:
    """An enlargement setting from a tab's controls ("pixel-exact" or "smooth"); ``error`` otherwise."""
    if interpolation not in INTERPOLATIONS:
        raise error(f"Enlargement must be {' or '.join(INTERPOLATIONS)}, got {str(interpolation)[:20]!r}.")
    return interpolation


def save_pil_to_cache_atomically(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's ``save_pil_to_cache``, but never rewriting a cached file in place.

    Gradio names cached images by their bytes and rewrites the file on every request; when two sessions show the
    same picture at once (a real quiz tile), one download can read the file while the other has just truncated it
    ("peer closed connection ... received 0 bytes", seen with 20 simultaneous learners). Here an existing copy is
    complete by construction, and a new one appears by an atomic rename, as ``save_file_to_cache`` already does.
    """
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    if path.exists():
        os.utime(path)  # Gradio's delete_cache ages files by time: a copy handed out again is fresh
        return str(path)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(staging, path)
    return str(path)


FILE_CACHE_ROOT = "pathsynth-gradio"


def use_own_file_cache(root: Path | None = None) -> Path | None:
    """Give this server process a folder of its own for Gradio's cached files (unless ``$GRADIO_TEMP_DIR`` is set).

    Gradio names cached files by their bytes, in one folder per machine, and a server that stops deletes every file
    it created there, including the ones another server on the machine was still showing (a second replica, or
    a second app: a real tile vanished from a quiz's feedback when another app process stopped). Folders left by
    processes that no longer run (a crash deletes nothing) are removed here.
    """
    if os.environ.get("GRADIO_TEMP_DIR"):
        return None
    root = root or Path(tempfile.gettempdir()) / FILE_CACHE_ROOT
    root.mkdir(parents=True, exist_ok=True)
    for folder in root.iterdir():
        if folder.is_dir() and not process_is_running(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
    own = root / str(os.getpid())
    own.mkdir(exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(own)
    return own


def process_is_running(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def install_atomic_image_cache() -> None:
    """Route every image Gradio caches (``gr.Image``, ``gr.Gallery``) through :func:`save_pil_to_cache_atomically`."""
    processing_utils.save_pil_to_cache = save_pil_to_cache_atomically


class _QuietRefusals:
    """Stands in for the ``traceback`` module where Gradio prints a failed event: a request that Gradio itself
    refuses (a value a component rejects, too few inputs) or a ``gr.Error`` is an ordinary refusal, logged as one
    line; anything raised inside PathSynth's own code keeps its full traceback (a bug to find)."""

    def __getattr__(self, name):
        return getattr(traceback, name)

    @staticmethod
    def print_exc(*args, **kwargs):
        error = sys.exc_info()[1]
        if error is None or not is_ordinary_refusal(error):
            return traceback.print_exc(*args, **kwargs)
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        logger.info("request refused: %s: %s", type(error).__name__, first_line)


def is_ordinary_refusal(error: BaseException) -> bool:
    """A ``gr.Error`` (already worded for the user), or a ``ValueError``/``TypeError`` Gradio raised checking a
    request before any PathSynth code ran."""
    if isinstance(error, gr.Error):
        return True
    if not isinstance(error, (ValueError, TypeError)):  # pydantic's ValidationError is a ValueError
        return False
    frames = traceback.extract_tb(error.__traceback__)
    package = str(Path(__file__).resolve().parent.parent)
    return not any(frame.filename.startswith(package) for frame in frames)


def install_quiet_refusals() -> None:
    """Log Gradio's refusals of bad requests in one line instead of a traceback (see :class:`_QuietRefusals`)."""
    from gradio import queueing, routes

    for module in (queueing, routes):
        module.traceback = _QuietRefusals()


class Refusal(Exception):
    """A failed action, already worded for the person who asked (raised by handlers, caught by ``user_errors``)."""


def user_message(error: BaseException) -> str | None:
    """The one-line message for an expected failure (bad input, not allowed, missing files); ``None`` for a bug."""
    if isinstance(error, gr.Error):
        return error.message
    if isinstance(error, (Refusal, PermissionError, ModelFileError, DataUnavailableError)):
        return str(error)
    if isinstance(error, (ValueError, KeyError, TypeError, LookupError, OverflowError)):
        message = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
        return message or "Invalid input."
    return None


def from_api_client() -> bool:
    """Whether the running event was sent by ``gradio_client`` (it marks its requests ``x-gradio-user: api``)."""
    request = LocalContext.request.get(None)
    headers = getattr(request, "headers", None) or {}
    return headers.get("x-gradio-user") == "api"


def user_errors(outputs: int, status: int, clear: tuple[int, ...] = ()):
    """Failed actions answer with a message instead of a Gradio error overlay.

    In the browser the message goes to output ``status`` (a Markdown line beside the action's button), the outputs
    in ``clear`` are emptied (a view that would otherwise show something stale) and every other output is left
    as it was, so inputs keep their values and stay usable. API clients get the same message as an error
    (``AppError`` in gradio_client). Unexpected exceptions are logged once, with their traceback; expected ones
    (bad input) never are.
    """

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                with REQUESTS.serving():  # the pool's filler waits for a quiet moment (pathsynth.pool)
                    return fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - every failure becomes a message
                message = user_message(error)
                if message is None:
                    logger.exception("unexpected error in %s", fn.__name__)
                    message = (f"Something went wrong ({type(error).__name__}). The app is still running; "
                               "please try again.")
                else:
                    logger.info("%s refused: %s", fn.__name__, message.splitlines()[0][:200])
                if from_api_client():
                    raise gr.Error(message, print_exception=False) from None
                return failure_outputs(outputs, status, message, clear)

        wrapper.failure_outputs = lambda message: failure_outputs(outputs, status, message, clear)
        return wrapper

    return decorate


def failure_outputs(outputs: int, status: int, message: str, clear: tuple[int, ...] = ()):
    """The browser's answer to a failed action: the message at ``status``, ``clear`` emptied, the rest unchanged."""
    values = [gr.skip()] * outputs
    for index in clear:
        values[index] = None
    values[status] = warning_line(message)
    return values[0] if outputs == 1 else tuple(values)


def warning_line(message: str) -> str:
    """A failure message as one Markdown line (its text escaped: it may quote user input)."""
    return f"⚠️ {escape_md(' '.join(str(message).split()))}"


def bind(handler, services):
    """``handler(services, ...)`` as an event function of the remaining arguments (signature and name kept, so
    Gradio still injects ``gr.Progress``, ``gr.Request`` and ``gr.OAuthProfile``)."""

    @functools.wraps(handler)
    def bound(*args, **kwargs):
        return handler(services, *args, **kwargs)

    signature = inspect.signature(handler)
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return bound


def checked_inputs(fn, inputs, expected: dict):
    """``fn`` for an event registered with ``preprocess=False``: each input goes through its component's own
    ``preprocess`` (Gradio's checks, e.g. a slider's bounds), and a value of the wrong type gets a message that
    names the field and what it expects (``expected``: component -> description) instead of a Python error.
    The message follows ``fn``'s error policy (``user_errors``) when it has one."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            values = [_preprocess(component, value, expected.get(component, "a valid value"))
                      for component, value in zip(inputs, args)]
        except gr.Error as error:
            if from_api_client() or not hasattr(fn, "failure_outputs"):
                raise
            return fn.failure_outputs(error.message)
        return fn(*values, *args[len(inputs):], **kwargs)

    return wrapper


class AnyPayload(GradioRootModel):
    root: Any = None


def checked_in_handler(component):
    """Let ``component``'s payload reach the handler as sent, where ``checked_inputs`` checks it and names the field
    (Gradio's own check answers API clients with a raw pydantic dump and logs a traceback)."""
    component.api_info()  # the API page keeps describing the real schema (Gradio caches it)
    component.strict_model, component.data_model = component.data_model, AnyPayload
    return component


def _preprocess(component, payload, expected: str):
    if isinstance(component, gr.State):
        return payload  # states arrive as the session's value
    if isinstance(component, gr.Dataframe):
        if payload is None:
            return None  # "no table": the handler decides (after checking who is asking)
        if isinstance(payload, list):  # API clients may send just the rows
            payload = {"headers": list(component.headers or []), "data": payload}
    model = getattr(component, "strict_model", None) or getattr(component, "data_model", None)
    try:
        if model is not None:
            payload = model.model_validate(payload)
        return component.preprocess(payload)
    except gr.Error as error:  # the component's own check (e.g. a slider's bounds): name the field
        raise gr.Error(f"{component.label}: {error.message}", print_exception=False) from None
    except Exception:
        raise gr.Error(f"{component.label}: expected {expected}, got {str(payload)[:40]!r}.",
                       print_exception=False) from None


def progress_callback(progress):
    """A library progress callback ``(fraction, message)`` reporting to a ``gr.Progress``."""
    return lambda fraction, message: progress(float(fraction), desc=message)


# ------------------------------------------------------------------------------------------------- one sign-in

SIGNED_IN_MARK = "✅"  # how a tab's sign-in line starts when right credentials signed the instructor in
SIGNED_OUT_LINE = "Signed out."


@dataclass
class SignIn:
    """One tab's instructor sign-in: its line, credential boxes and sign-in ``outputs`` (the line first), what a
    sign-in and a sign-out show there (``sign_in(password, account, request)``, ``sign_out()``: values for
    ``outputs``) and the event to run after either (``after``: e.g. refresh a gallery list)."""

    line: Any
    password: Any
    account: Any
    outputs: list
    sign_in: Callable[..., tuple]
    sign_out: Callable[[], tuple]
    after: dict


def follow_sign_in(target: SignIn, line, password, account, target_line, request: gr.Request = None) -> tuple:
    """``target``'s boxes and view after another tab's sign-in ``line`` changed: signed in with the same
    credentials (checked again on the server, as every instructor action is), or signed out; nothing when that
    tab already says the same (the two tabs follow each other without bouncing) or when the sign-in failed (a
    wrong password is counted once, where it was typed)."""
    skip = (gr.skip(),) * (2 + len(target.outputs))
    if line == target_line:
        return skip
    if str(line or "").startswith(SIGNED_IN_MARK):
        return (password, account, *target.sign_in(password, account, request))
    if line == SIGNED_OUT_LINE:
        return ("", gr.skip(), *target.sign_out())
    return skip


def share_sign_in(first: SignIn, second: SignIn) -> None:
    """One sign-in for the whole app: signing in or out in either tab does the same in the other."""
    for source, target in ((first, second), (second, first)):
        def follow(line, password, account, target_line, request: gr.Request, target=target):
            return follow_sign_in(target, line, password, account, target_line, request)

        source.line.change(follow, [source.line, source.password, source.account, target.line],
                           [target.password, target.account, *target.outputs], api_visibility="private",
                           show_progress="hidden").then(**target.after)
