"""What every tab shares: the error policy, input checks with readable messages, binding handlers to services."""

from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

from ..errors import DataUnavailableError, ModelFileError

logger = logging.getLogger("pathsynth.app")

MODEL_CONCURRENCY = 2  # generation is CPU-bound: more parallel runs only slow each other down
MODEL_EVENTS = {"concurrency_id": "model", "concurrency_limit": MODEL_CONCURRENCY}  # one queue for model work


def user_errors(fn):
    """Turn exceptions into a short message in the UI (and for API clients); never show a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except PermissionError as error:
            raise gr.Error(str(error), title="Not allowed", print_exception=False) from None
        except (ValueError, KeyError, TypeError) as error:
            message = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
            raise gr.Error(message or "Invalid input.", title="Please check your input", print_exception=False) from None
        except (ModelFileError, DataUnavailableError) as error:
            raise gr.Error(str(error), title="Model or data files", print_exception=False) from None
        except Exception as error:
            logger.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(error).__name__}). The app is still running; please try "
                           "again.", print_exception=False) from None

    return wrapper


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
    names the field and what it expects (``expected``: component -> description) instead of a Python error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = [_preprocess(component, value, expected.get(component, "a valid value"))
                  for component, value in zip(inputs, args)]
        return fn(*values, *args[len(inputs):], **kwargs)

    return wrapper


def _preprocess(component, payload, expected: str):
    if isinstance(component, gr.State):
        return payload  # states arrive as the session's value
    if payload is None and isinstance(component, gr.Dataframe):
        return None  # "no table": the handler decides (after checking who is asking)
    try:
        if getattr(component, "data_model", None) is not None:
            payload = component.data_model.model_validate(payload)
        return component.preprocess(payload)
    except gr.Error:
        raise
    except Exception:
        raise gr.Error(f"{component.label}: expected {expected}, got {str(payload)[:40]!r}.",
                       print_exception=False) from None


def progress_callback(progress):
    """A library progress callback ``(fraction, message)`` reporting to a ``gr.Progress``."""
    return lambda fraction, message: progress(float(fraction), desc=message)
