"""Spaced repetition per learner and tissue with FSRS (the ``fsrs`` package): which tissues are due next.

Each tissue is one FSRS card per learner, rebuilt by replaying that learner's stored answers in time order, so
nothing but the answers needs storing and the schedule always follows the FSRS version installed. A correct
answer rates ``Good``, a slow correct one (over ``SLOW_SECONDS``: right, but not yet recognised at a glance)
``Hard``, a wrong one ``Again``. Fuzzing is off: the same history always gives the same schedule.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fsrs import Card, Rating, Scheduler

from ..tissues import TISSUE_INDICES, confusable_with
from .progress import AnswerRecord, confusion

SLOW_SECONDS = 20.0  # an expert names a 28 px tile in a few seconds; twenty means it was worked out, not seen
PRACTICE_TISSUES = 3  # weak tissues per "practice my weak tissues" quiz (their confusable partners come too)
# FSRS brings a missed tissue back after minutes (learning steps); practice a few minutes later counts, as
# Anki's "learn ahead" limit does, or a tissue missed in the last quiz would not be due in the next one.
LEARN_AHEAD = timedelta(minutes=20)
_SCHEDULER = Scheduler(enable_fuzzing=False)  # read-only after construction: shared by every request


def rating_for(correct: bool, seconds: float | None = None) -> Rating:
    if not correct:
        return Rating.Again
    return Rating.Hard if seconds is not None and seconds > SLOW_SECONDS else Rating.Good


def tissue_cards(history: list[AnswerRecord]) -> dict[int, Card]:
    """Tissue -> its FSRS card after replaying the answers (tissues never answered have no card)."""
    cards: dict[int, Card] = {}
    for record in sorted(history, key=lambda r: r.answered_at):
        when = record.answered_at.astimezone(timezone.utc)
        card = cards.get(record.tissue) or Card(card_id=record.tissue + 1, due=when)  # an id: Card() would sleep
        cards[record.tissue], _ = _SCHEDULER.review_card(card, rating_for(record.correct, record.seconds), when)
    return cards


def due_tissues(history: list[AnswerRecord], now: datetime | None = None) -> list[int]:
    """Answered tissues due for review at ``now`` (or within ``LEARN_AHEAD``), weakest first (lowest FSRS
    stability, then longest overdue)."""
    now = now or datetime.now(timezone.utc)
    due = [(card.stability or 0.0, card.due, tissue) for tissue, card in tissue_cards(history).items()
           if card.due <= now + LEARN_AHEAD]
    return [tissue for _, _, tissue in sorted(due)]


def practice_tissues(history: list[AnswerRecord], now: datetime | None = None,
                     count: int = PRACTICE_TISSUES) -> list[int]:
    """The tissues for a "practice my weak tissues" quiz: up to ``count`` due ones (weakest first), then tissues
    never answered; each comes with the catalogue partners this learner has confused it with, so a confusable
    pair is practised together. With nothing due or new, the ones due soonest."""
    now = now or datetime.now(timezone.utc)
    cards = tissue_cards(history)
    chosen = (due_tissues(history, now) + [t for t in TISSUE_INDICES if t not in cards])[:count]
    if not chosen:
        chosen = sorted(cards, key=lambda t: (cards[t].due, t))[:count]
    matrix = confusion(history)
    result: list[int] = []
    for tissue in chosen:
        partners = [p for p in confusable_with(tissue) if matrix[tissue, p] or matrix[p, tissue]]
        result.extend(t for t in (tissue, *partners) if t not in result)
    return result
