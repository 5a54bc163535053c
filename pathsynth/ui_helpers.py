"""Small pure helpers for the Gradio app: input checks, escaping, formatting, instructor auth.

Nothing here loads a model or reads the environment; :mod:`pathsynth.app` wires these and the library calls
to the UI.
"""

from __future__ import annotations

import hmac
import html
import math
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .errors import UnknownTissueError
from .generators.base import MAX_SEED
from .images import DISPLAY_SIZE, to_rgb_uint8, upscale
from .resolver import MAX_CHARS as MAX_DESCRIPTION_CHARS  # longer descriptions are rejected, not truncated
from .settings import SHARED_PASSWORD_ACCOUNT, InstructorConfig, Settings
from .text import clean_text
from .tissues import DISPLAY_NAMES, MAGNIFIED_HEADING, TISSUE_INDICES, TISSUES, tissue_index

__all__ = ["DISPLAY_SIZE", "InstructorConfig", "MAX_DESCRIPTION_CHARS", "MAX_SEED", "authorize",
           "clean_text", "escape_md", "instructor_config", "parse_fraction", "parse_gallery_key", "parse_int", "parse_seed",
           "parse_tissue", "parse_tissues", "password_matches", "PasswordBackoff", "probability_label", "save_png", "tissue_card",
           "upscale", "verified_summary"]

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")  # ">" and "<" become entities instead


# --------------------------------------------------------------------------------------- input checks

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
    except UnknownTissueError:
        raise ValueError(f"unknown tissue {str(value)[:60]!r}; choose one of: {', '.join(DISPLAY_NAMES)}") from None


def parse_tissues(values) -> list[int]:
    """Several tissues (checkbox group); an empty selection means all nine."""
    if values is None or values == "":
        return list(TISSUE_INDICES)
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        raise ValueError("tissues must be a list of tissue names")
    indices = [parse_tissue(v) for v in values]
    indices = sorted({i for i in indices if i is not None})
    return indices or list(TISSUE_INDICES)


def parse_gallery_key(value) -> int | str:
    """A gallery id (int) or name from a dropdown value or API argument."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise ValueError("Choose a gallery first.")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, (int, str)):
        return value
    raise ValueError("A gallery is chosen by its id or name.")


# ------------------------------------------------------------------------------------------- escaping

def escape_md(text) -> str:
    """User text made inert for ``gr.Markdown``: Markdown punctuation backslashed, then ``& < >`` as entities.

    In that order, so the entities' own ``&`` and ``;`` are not escaped again and show as ``<``/``>``.
    """
    return html.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", str(text)), quote=False)


# ------------------------------------------------------------------------------------------ formatting

def probability_label(probabilities) -> dict[str, float]:
    """``gr.Label`` value: display name -> probability."""
    return {name: float(p) for name, p in zip(DISPLAY_NAMES, probabilities)}


def tissue_card(index: int) -> str:
    """The catalogue's teaching text as Markdown: what the 28 px tile shows, then, labelled, what one would see at
    higher magnification (for reading: not checkable on the tile)."""
    tissue = TISSUES[index]
    return (f"**{tissue.display_name}** ({tissue.abbreviation})\n\n**In this tile:** {tissue.description}\n\n"
            f"_{MAGNIFIED_HEADING}:_ {tissue.magnified}")


def verified_summary(result) -> str:
    """Markdown facts about one ``VerifiedImage``."""
    name = DISPLAY_NAMES[result.tissue]
    predicted = DISPLAY_NAMES[result.predicted]
    verdict = ("✅ **Verified**: the classifier agrees it shows " + name if result.verified else
               f"⚠️ **Not verified** after {result.attempts} attempts: the classifier's best guess is {predicted}. "
               "Treat this image with caution.")
    return (f"{verdict}\n\n"
            f"| Check | Result |\n|---|---|\n"  # a header row with words: an empty one shows as a blank bar
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
    Image.fromarray(to_rgb_uint8(image)).save(path)
    return str(path)


# -------------------------------------------------------------------------------------- instructor auth

def instructor_config(environ=None) -> InstructorConfig:
    """Who may write galleries, from ``environ`` (a mapping such as ``os.environ``) through the settings."""
    return Settings.from_env(environ).instructors


def password_matches(given, expected: str) -> bool:
    """Constant-time comparison; anything but a non-empty string never matches."""
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def authorize(config: InstructorConfig, password=None, username: str | None = None, account=None,
              sign_in=None) -> str:
    """The instructor's name when allowed; ``PermissionError`` else.

    A typed ``account`` name signs in with that instructor account: ``sign_in(account, password)`` checks it (the
    app passes ``instructors.authenticate`` on its database) and returns the account's name. Without one, the
    shared ``config.password`` signs in as ``"instructor"`` and, on Spaces, a listed Hugging Face ``username``
    (the OAuth login) as itself."""
    if account is not None and not isinstance(account, str):
        raise PermissionError("The instructor account name must be text.")
    if account and account.strip():
        if sign_in is None:
            raise PermissionError("Instructor accounts cannot sign in here.")
        if not isinstance(password, str) or not password:
            raise PermissionError("Type the password of your instructor account.")
        return sign_in(account, password)
    if not config.enabled:
        raise PermissionError(config.disabled_message)
    if config.on_spaces and username and username.lower() in config.usernames:
        return username
    if password_matches(password, config.password):
        return SHARED_PASSWORD_ACCOUNT
    if config.on_spaces and username:
        raise PermissionError(f"{username} is not an instructor for this Space.")
    if config.password:
        raise PermissionError("Instructor password missing or wrong.")
    raise PermissionError("Type your instructor account name and password." if config.accounts else
                          "Sign in with an instructor Hugging Face account.")


class PasswordBackoff:
    """Slows password guessing per key (account, address) without locking the real user out for long.

    The first ``free_failures`` wrong passwords cost nothing; each further one doubles the wait before the next
    try, from ``first_delay_s`` up to ``max_delay_s``, so a brute-force guesser gets a handful of tries a minute
    while a trainee behind the same address can delay the instructor by at most ``max_delay_s``. The right
    password clears the key; failures older than ``forget_after_s`` are forgotten.
    """

    def __init__(self, free_failures: int = 5, first_delay_s: float = 1.0, max_delay_s: float = 30.0,
                 forget_after_s: float = 900.0, clock=time.monotonic, max_keys: int = 10_000):
        self.free_failures, self.first_delay_s, self.max_delay_s = free_failures, first_delay_s, max_delay_s
        self.forget_after_s, self.clock, self.max_keys = forget_after_s, clock, max_keys
        self._failures: dict[object, tuple[int, float]] = {}  # key -> (wrong passwords, time of the last)
        self._lock = threading.Lock()

    def delay_s(self, failures: int) -> float:
        """The wait after ``failures`` wrong passwords in a row."""
        extra = failures - self.free_failures
        return 0.0 if extra < 0 else min(self.max_delay_s, self.first_delay_s * 2.0 ** extra)

    def wait_s(self, key) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        with self._lock:
            count, last = self._failures.get(key, (0, -math.inf))
            now = self.clock()
            if now - last > self.forget_after_s:
                self._failures.pop(key, None)
                return 0.0
            return max(0.0, last + self.delay_s(count) - now)

    def check(self, key) -> None:
        """``PermissionError`` with the wait when ``key`` must not try yet (the password is not even checked)."""
        wait = self.wait_s(key)
        if wait > 0:
            raise PermissionError(f"Too many wrong passwords; try again in {math.ceil(wait)} s.")

    def failed(self, key) -> None:
        with self._lock:
            count, last = self._failures.pop(key, (0, -math.inf))
            now = self.clock()
            self._failures[key] = (1 if now - last > self.forget_after_s else count + 1, now)
            if len(self._failures) > self.max_keys:  # bound memory under a flood of distinct clients
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, key) -> None:
        with self._lock:
            self._failures.pop(key, None)
