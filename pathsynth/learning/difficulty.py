"""Quiz difficulty: which tiles to ask about and which tissues to ask together.

* ``easy``: prototypical tiles. Real ones where the dataset and the classifier agree and the classifier is at
  least ``EASY_CONFIDENCE`` sure; generated ones as sure and at least ``EASY_REALISM`` realistic.
* ``mixed`` (default): any verified tile, tissues spread evenly (the quiz as it always was).
* ``hard``: borderline or atypical tiles, still verified (a real tile's dataset label agrees, a generated one
  passed verification) and at least ``SOUND_CONFIDENCE`` sure, so the answer key is sound: the classifier less
  than ``EASY_CONFIDENCE`` sure, or (generated tiles) less than ``EASY_REALISM`` typical, i.e. as unusual as the
  least typical fifth of real tiles of the tissue (the generator's tiles are more prototypical than real ones:
  issue 32). The tissues come in confusable pairs (``tissues.CONFUSABLE_PAIRS``), both of a pair in one quiz.

Pure functions of probabilities and labels: no models, no UI. ``pathsynth.quiz.build_quiz`` uses them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..text import clean_choice
from ..tissues import CONFUSABLE_PAIRS

DIFFICULTIES = ("easy", "mixed", "hard")
EASY_CONFIDENCE = 0.9  # easy tiles: the classifier is at least this sure; hard ones: less sure than this
EASY_REALISM = 0.2  # easy generated tiles: at least this typical of real ones (the verifier's realism score: the
# share of real tiles of the tissue at least as far from the real set); below it, atypical: they suit hard quizzes
SOUND_CONFIDENCE = 0.5  # below this the answer key is doubtful (the verifier's own threshold)
POOL_PREFERENCE = {"easy": "confident", "mixed": None, "hard": "borderline"}  # VerifiedPool.generate(prefer=...)


def check_difficulty(value) -> str:
    """``value`` as one of :data:`DIFFICULTIES` (``None``: mixed); ``ValueError`` worded for the UI otherwise."""
    if value is None:
        return "mixed"
    return clean_choice(value, DIFFICULTIES, field="Difficulty")


def tissue_plan(n: int, wanted: Sequence[int], difficulty: str, rng: np.random.Generator) -> list[int]:
    """The answer tissue of each of ``n`` questions, in random order. Hard: confusable pairs whose two tissues are
    both ``wanted``, both tissues of each pair drawn (pairs taken in turn, then again); with no such pair, or for
    easy and mixed, the ``wanted`` tissues spread evenly."""
    wanted = [int(t) for t in wanted]
    pairs = [(p.first, p.second) for p in CONFUSABLE_PAIRS if p.first in wanted and p.second in wanted]
    plan: list[int] = []
    if difficulty == "hard" and pairs:
        while len(plan) < n:
            for index in rng.permutation(len(pairs)):
                plan.extend(pairs[index])
        plan = plan[:n]
    else:
        while len(plan) < n:
            plan.extend(int(t) for t in rng.permutation(wanted))
        plan = plan[:n]
    return [plan[i] for i in rng.permutation(len(plan))]


def fits(difficulty: str, confidence: float, realism: float | None = None) -> bool:
    """Whether a verified generated tile with this classifier ``confidence`` (and ``realism``) suits ``difficulty``."""
    if difficulty == "easy":
        return confidence >= EASY_CONFIDENCE and (realism is None or realism >= EASY_REALISM)
    if difficulty == "hard":  # sound, and not prototypical: less sure, or less typical
        atypical = realism is not None and realism < EASY_REALISM
        return confidence >= SOUND_CONFIDENCE and (confidence < EASY_CONFIDENCE or atypical)
    return True


def rank_real(confidence: np.ndarray, agrees: np.ndarray, difficulty: str, rng: np.random.Generator) -> np.ndarray:
    """Real candidate tiles (their classifier confidence, and whether it agrees with the dataset label), best
    first for ``difficulty``: those that suit it in random order, then the nearest misses, then the rest.

    Easy: agreeing and >= EASY_CONFIDENCE sure; then agreeing, most confident first. Hard: agreeing and between
    SOUND_CONFIDENCE and EASY_CONFIDENCE sure; then agreeing and more confident, least confident first. Tiles
    whose label disagrees come last (their answer key is the least sound), most confident first."""
    confidence = np.asarray(confidence, np.float64)
    agrees = np.asarray(agrees, bool)
    if difficulty == "easy":
        suits = agrees & (confidence >= EASY_CONFIDENCE)
        nearness = -confidence
    elif difficulty == "hard":
        suits = agrees & (confidence >= SOUND_CONFIDENCE) & (confidence < EASY_CONFIDENCE)
        nearness = np.where(confidence >= SOUND_CONFIDENCE, confidence, 2.0 - confidence)
    else:
        suits, nearness = agrees, rng.random(len(confidence))
    tier = np.where(suits, 0, np.where(agrees, 1, 2))
    within = np.where(suits, rng.random(len(confidence)), np.where(agrees, nearness, -confidence))
    return np.lexsort((within, tier))
