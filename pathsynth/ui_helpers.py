"""Small pure helpers for the Gradio app: input checks, escaping, formatting, instructor auth.

Nothing here loads a model; ``app.py`` wires these and the library calls to the UI.
"""

from __future__ import annotations

import hmac
import html
import math
import os
import re
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .tissues import DISPLAY_NAMES, NUM_TISSUES, TISSUES, tissue_index

MAX_SEED = 2**31 - 1
MAX_DESCRIPTION_CHARS = 500  # a tissue description is a phrase; longer input is rejected, not truncated
DISPLAY_SIZE = 336  # 28 px x 12: crisp pixel blocks with NEAREST
PASSWORD_ENV = "PATHSYNTH_INSTRUCTOR_PASSWORD"
INSTRUCTORS_ENV = "PATHSYNTH_INSTRUCTORS"

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")  # ">" and "<" become entities instead


# --------------------------------------------------------------------------------------- input checks

def clean_text(value, *, field: str, max_chars: int, allow_empty: bool = True) -> str:
    """``value`` as one tidy line of text: control/bidi-override characters dropped, whitespace collapsed.

    Raises ``ValueError`` naming ``field`` for non-text, over-long or (when not allowed) empty input.
    """
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text, got {type(value).__name__}")
    text = " ".join(_CONTROL.sub(" ", unicodedata.normalize("NFC", value)).split())
    if len(text) > max_chars:
        raise ValueError(f"{field} is too long ({len(text)} characters; at most {max_chars})")
    if not text and not allow_empty:
        raise ValueError(f"{field} is empty")
    return text


def parse_int(value, *, field: str, minimum: int, maximum: int, default: int | None = None) -> int | None:
    """An integer from a number box or API argument (``None``/blank -> ``default``); ``ValueError`` otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        raise ValueError(f"{field} must be a whole number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{field} must be a whole number, got {value.strip()[:40]!r}") from None
    if not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{field} must be a whole number, got {type(value).__name__}")
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{field} must be a whole number, got {value!r}")
    number = int(value)
    if not minimum <= number <= maximum:
        raise ValueError(f"{field} must be between {minimum} and {maximum}, got {number}")
    return number


def parse_seed(value) -> int | None:
    """A seed in 0..2^31-1, or ``None`` (blank) for a random one."""
    return parse_int(value, field="Seed", minimum=0, maximum=MAX_SEED)


def parse_fraction(value, *, field: str, default: float) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a number between 0 and 1, got {str(value)[:40]!r}") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{field} must be a number between 0 and 1, got {str(value)[:40]!r}")
    return number


def parse_tissue(value) -> int | None:
    """A tissue index from a dropdown value (display name) or API argument; ``None`` when blank."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (list, tuple)):
        raise ValueError("choose one tissue")
    try:
        return tissue_index(value.strip() if isinstance(value, str) else value)
    except KeyError:
        raise ValueError(f"unknown tissue {str(value)[:60]!r}; choose one of: {', '.join(DISPLAY_NAMES)}") from None


def parse_tissues(values) -> list[int]:
    """Several tissues (checkbox group); an empty selection means all nine."""
    if values is None or values == "":
        return list(range(NUM_TISSUES))
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise ValueError("tissues must be a list of tissue names")
    indices = [parse_tissue(v) for v in values]
    indices = sorted({i for i in indices if i is not None})
    return indices or list(range(NUM_TISSUES))


# ------------------------------------------------------------------------------------------- escaping

def escape_md(text) -> str:
    """User text made inert for ``gr.Markdown``: Markdown punctuation backslashed, then ``& < >`` as entities.

    In that order, so the entities' own ``&`` and ``;`` are not escaped again and show as ``<``/``>``.
    """
    return html.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", str(text)), quote=False)


# ------------------------------------------------------------------------------------------ formatting

def upscale(image: np.ndarray, size: int = DISPLAY_SIZE) -> np.ndarray:
    """A 28 px tile enlarged with NEAREST so each pixel stays a sharp block (no blur)."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((size, size), Image.NEAREST))


def probability_label(probabilities) -> dict[str, float]:
    """``gr.Label`` value: display name -> probability."""
    return {name: float(p) for name, p in zip(DISPLAY_NAMES, probabilities)}


def tissue_card(index: int) -> str:
    """The catalogue's teaching description as Markdown."""
    tissue = TISSUES[index]
    return f"**{tissue.display_name}** ({tissue.abbreviation})\n\n{tissue.description}"


def verified_summary(result) -> str:
    """Markdown facts about one ``VerifiedImage``."""
    name = DISPLAY_NAMES[result.tissue]
    predicted = DISPLAY_NAMES[result.predicted]
    verdict = ("✅ **Verified**: the classifier agrees it shows " + name if result.verified else
               f"⚠️ **Not verified** after {result.attempts} attempts: the classifier's best guess is {predicted}. "
               "Treat this image with caution.")
    return (f"{verdict}\n\n"
            f"| | |\n|---|---|\n"
            f"| Requested | {name} |\n"
            f"| Classifier says | {predicted} ({result.probabilities[result.predicted]:.0%}) |\n"
            f"| Confidence in requested tissue | {result.confidence:.0%} |\n"
            f"| Realism | {result.realism:.2f} |\n"
            f"| Attempts | {result.attempts} |\n"
            f"| Seed | {result.seed} |\n")


# ------------------------------------------------------------------------------------------ temp files

_TMP_DIR = Path(tempfile.gettempdir()) / "pathsynth-app"


def save_png(image: np.ndarray, stem: str, max_age_s: float = 3600.0) -> str:
    """Write ``image`` as a PNG in the app's temp folder and return its path; drops files older than an hour."""
    from PIL import Image

    _TMP_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in _TMP_DIR.glob("*.png"):
        try:
            if now - old.stat().st_mtime > max_age_s:
                old.unlink()
        except OSError:
            pass  # another request removed it first
    safe_stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:80] or "image"
    directory = Path(tempfile.mkdtemp(dir=_TMP_DIR))  # own folder: the file name stays readable and unique
    path = directory / f"{safe_stem}.png"
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)
    return str(path)


# -------------------------------------------------------------------------------------- instructor auth

@dataclass(frozen=True)
class InstructorConfig:
    password: str  # "" = no password login
    on_spaces: bool
    usernames: frozenset[str]  # Hugging Face accounts allowed on Spaces

    @property
    def enabled(self) -> bool:
        return bool(self.password) or (self.on_spaces and bool(self.usernames))

    @property
    def disabled_message(self) -> str:
        if self.on_spaces:
            return (f"Instructor features are disabled: set the Space secret {PASSWORD_ENV} or list instructor "
                    f"Hugging Face usernames in {INSTRUCTORS_ENV}.")
        return f"Instructor features are disabled: start the app with the environment variable {PASSWORD_ENV} set."


def instructor_config(environ=None) -> InstructorConfig:
    environ = os.environ if environ is None else environ
    usernames = frozenset(u.strip().lower() for u in environ.get(INSTRUCTORS_ENV, "").split(",") if u.strip())
    return InstructorConfig(environ.get(PASSWORD_ENV, ""), bool(environ.get("SPACE_ID")), usernames)


def password_matches(given, expected: str) -> bool:
    """Constant-time comparison; anything but a non-empty string never matches."""
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def authorize(config: InstructorConfig, password=None, username: str | None = None) -> str:
    """The instructor's name when ``password`` or the signed-in ``username`` is allowed; ``PermissionError`` else."""
    if not config.enabled:
        raise PermissionError(config.disabled_message)
    if config.on_spaces and username and username.lower() in config.usernames:
        return username
    if password_matches(password, config.password):
        return "instructor"
    if config.on_spaces and username:
        raise PermissionError(f"{username} is not an instructor for this Space.")
    raise PermissionError("Instructor password missing or wrong." if config.password else
                          "Sign in with an instructor Hugging Face account.")


class AttemptLimiter:
    """Slows password guessing: at most ``max_failures`` wrong passwords per client per ``window_s``."""

    def __init__(self, max_failures: int = 10, window_s: float = 60.0):
        import threading

        self.max_failures, self.window_s = max_failures, window_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> list[float]:
        recent = [t for t in self._failures.get(client, []) if now - t < self.window_s]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return recent

    def check(self, client: str) -> None:
        with self._lock:
            if len(self._recent(client, time.monotonic())) >= self.max_failures:
                raise PermissionError("Too many wrong passwords; wait a minute before trying again.")

    def failed(self, client: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent(client, now)
            self._failures.setdefault(client, []).append(now)
            if len(self._failures) > 10_000:  # bound memory under a flood of distinct clients
                self._failures.pop(next(iter(self._failures)))
