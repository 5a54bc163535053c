"""Cleaning text that people type: one pattern for control and bidi-override characters, used everywhere."""

from __future__ import annotations

import re
import unicodedata

# C0/C1 controls, zero-width and bidi-override characters, byte-order mark: never meaningful in a description,
# name or caption, and some of them reorder or hide text when shown.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")


def one_line(text: str, form: str = "NFC") -> str:
    """``text`` normalised to Unicode ``form``, control characters dropped and whitespace collapsed."""
    return " ".join(CONTROL_CHARACTERS.sub(" ", unicodedata.normalize(form, text)).split())


def clean_text(value, *, field: str, max_chars: int, allow_empty: bool = True, multiline: bool = False) -> str:
    """``value`` as one tidy line of text (``multiline``: tidy lines, line breaks kept, for captions and
    descriptions); ``ValueError`` naming ``field`` for non-text, over-long or (when not allowed) empty input."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text, got {type(value).__name__}")
    text = "\n".join(one_line(line) for line in value.split("\n")).strip() if multiline else one_line(value)
    if len(text) > max_chars:
        raise ValueError(f"{field} is too long ({len(text)} characters; at most {max_chars})")
    if not text and not allow_empty:
        raise ValueError(f"{field} must not be empty")
    return text


def clean_choice(value, choices, *, field: str) -> str:
    """``value`` (any case, spaces around it ignored) as one of ``choices``; ``ValueError`` naming ``field`` and the
    choices ("Mode must be practice or exam, got 'x'.") otherwise."""
    choice = value.strip().lower() if isinstance(value, str) else value
    if choice not in choices:
        allowed = " or ".join([", ".join(choices[:-1]), choices[-1]] if len(choices) > 1 else choices)
        raise ValueError(f"{field} must be {allowed}, got {str(value)[:40]!r}.")
    return choice


def clip_text(value, max_chars: int) -> str:
    """Any value as one line of at most ``max_chars`` characters (NFKC: full-width letters become ASCII); never
    raises, for inputs that are matched rather than stored."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = text[: max_chars * 4].encode("utf-8", "replace").decode("utf-8")  # bound the work first
    return one_line(text, "NFKC")[:max_chars]
