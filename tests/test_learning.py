"""pathsynth.learning.scheduler and the teaching around it: FSRS on scripted answer histories, confusable pairs
in the catalogue, pairwise feedback and time taken in quizzes. Pure logic: no database, no models."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from fsrs import Rating

from pathsynth import quiz as Q
from pathsynth.learning import (SLOW_SECONDS, AnswerRecord, due_tissues, practice_tissues, rating_for, streak_days,
                                tissue_cards)
from pathsynth.learning.progress import accuracy_per_tissue, confusion, confused_pairs
from pathsynth.tissues import (CONFUSABLE_PAIRS, NUM_TISSUES, TISSUE_INDICES, TISSUES,
                               confusable_pair, confusable_with, tissue_index)

START = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
STROMA, MUSCLE, ADIPOSE = tissue_index("STR"), tissue_index("MUS"), tissue_index("ADI")


def sessions(days: list[int], chosen_for=lambda tissue: tissue, tissues=TISSUE_INDICES, seconds=5.0):
    """One answer per tissue on each of ``days`` (days after START), choosing ``chosen_for(tissue)``."""
    return [AnswerRecord(tissue=t, chosen=chosen_for(t), answered_at=START + timedelta(days=d, minutes=k),
                         seconds=seconds) for d in days for k, t in enumerate(tissues)]


def test_ratings_good_hard_again():
    assert rating_for(True, 3.0) == Rating.Good
    assert rating_for(True, None) == Rating.Good
    assert rating_for(True, SLOW_SECONDS + 1) == Rating.Hard
    assert rating_for(False, 1.0) == Rating.Again


def test_a_learner_who_always_misses_stroma_gets_stroma_first_and_mastered_tissues_are_not_due():
    history = sessions([0, 2, 5, 9], chosen_for=lambda t: MUSCLE if t == STROMA else t)
    now = START + timedelta(days=12)
    assert due_tissues(history, now) == [STROMA]  # every other tissue was right four times: not due for weeks
    cards = tissue_cards(history)
    assert cards[ADIPOSE].due > now + timedelta(days=7)
    assert cards[STROMA].stability < cards[ADIPOSE].stability
    # the weak tissue comes back with the one it is confused with (a catalogue pair)
    assert practice_tissues(history, now) == [STROMA, MUSCLE]


def test_a_tissue_missed_minutes_ago_is_due_in_the_next_quiz():
    history = sessions([0, 3, 8]) + sessions([12], chosen_for=lambda t: MUSCLE, tissues=[STROMA])
    just_after = history[-1].answered_at + timedelta(seconds=30)
    assert due_tissues(history, just_after) == [STROMA]
    assert practice_tissues(history, just_after) == [STROMA, MUSCLE]


def test_the_weakest_due_tissue_comes_first():
    history = (sessions([0, 3], tissues=[ADIPOSE]) + sessions([0, 3], chosen_for=lambda t: 0, tissues=[STROMA])
               + sessions([0], tissues=[MUSCLE], seconds=SLOW_SECONDS * 3))
    due = due_tissues(history, START + timedelta(days=30))
    assert due[0] == STROMA and set(due) == {STROMA, MUSCLE, ADIPOSE}


def test_new_learners_practise_everything_in_catalogue_order_and_unseen_tissues_follow_due_ones():
    assert due_tissues([]) == []
    assert practice_tissues([], count=NUM_TISSUES) == list(TISSUE_INDICES)
    history = sessions([0], chosen_for=lambda t: 0, tissues=[STROMA])
    assert practice_tissues(history, START + timedelta(days=1), count=3) == [STROMA, 0, 1]


def test_when_everything_is_mastered_the_soonest_due_are_practised():
    history = sessions([0, 3, 8])
    now = START + timedelta(days=9)
    assert due_tissues(history, now) == []
    assert practice_tissues(history, now, count=2) == [0, 1]  # due first (answered first each day)


def test_same_history_same_schedule_in_any_order():
    history = sessions([0, 1, 4], chosen_for=lambda t: (t + 1) % NUM_TISSUES if t % 2 else t)
    now = START + timedelta(days=6)
    assert due_tissues(history, now) == due_tissues(history[::-1], now)


def test_summaries_accuracy_confusion_and_streak():
    history = sessions([0, 1, 2, 5, 6], chosen_for=lambda t: MUSCLE if t == STROMA else t)
    assert accuracy_per_tissue(history)[STROMA] == (0, 5)
    assert accuracy_per_tissue(history)[ADIPOSE] == (5, 5)
    matrix = confusion(history)
    assert matrix.shape == (NUM_TISSUES, NUM_TISSUES) and matrix[STROMA, MUSCLE] == 5 and matrix.sum() == len(history)
    assert confused_pairs(history) == [(STROMA, MUSCLE, 5)]
    assert streak_days(history, (START + timedelta(days=6)).date()) == 2
    assert streak_days(history, (START + timedelta(days=7)).date()) == 2  # today not practised yet: still counts
    assert streak_days(history, (START + timedelta(days=8)).date()) == 0
    assert streak_days([], START.date()) == 0


def test_confusable_pairs_are_valid_distinct_and_explained():
    assert len(CONFUSABLE_PAIRS) >= 5
    seen = set()
    for pair in CONFUSABLE_PAIRS:
        key = frozenset((pair.first, pair.second))
        assert len(key) == 2 and key <= set(TISSUE_INDICES) and key not in seen
        seen.add(key)
        assert len(pair.text) > 150
    assert confusable_pair("MUS", "STR") is confusable_pair("STR", "MUS") is not None
    assert confusable_pair("ADI", "TUM") is None
    assert set(confusable_with("DEB")) == {tissue_index("MUC"), tissue_index("LYM")}
    for a, b in [("STR", "MUS"), ("DEB", "MUC"), ("NORM", "TUM"), ("LYM", "DEB"), ("ADI", "BACK")]:
        assert confusable_pair(a, b) is not None


def one_question_quiz(answer: str):
    return Q.quiz_from_images([np.zeros((28, 28, 3), np.uint8)], [answer])


def test_wrong_answer_feedback_teaches_the_pair_or_both_tissues():
    session = one_question_quiz("STR")
    feedback = Q.answer(session, "Smooth muscle")
    assert confusable_pair("STR", "MUS").text in feedback.explanation
    assert "you chose Smooth muscle, but this is Cancer-associated stroma" in feedback.explanation
    session = one_question_quiz("ADI")
    feedback = Q.answer(session, "TUM")
    assert TISSUES[0].description in feedback.explanation and TISSUES[8].description in feedback.explanation
    assert Q.answer(one_question_quiz("ADI"), "ADI").explanation.startswith("Correct")


def test_time_taken_runs_from_showing_to_answering(monkeypatch):
    clock = iter([100.0, 107.5])
    monkeypatch.setattr(Q.time, "monotonic", lambda: next(clock))
    session = Q.quiz_from_images([np.zeros((28, 28, 3), np.uint8)] * 2, ["ADI", "BACK"])
    Q.mark_shown(session)
    Q.mark_shown(session)  # shown again (e.g. a re-render): the clock is not restarted
    assert Q.answer(session, "ADI").seconds == pytest.approx(7.5)
    assert Q.answer(session, "BACK").seconds is None  # never shown through mark_shown: unknown, not zero


def test_questions_carry_their_provenance():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (18, 28, 28, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(NUM_TISSUES), 2)
    probabilities = np.eye(NUM_TISSUES)[labels]
    ids = np.arange(100, 118)
    session = Q.build_quiz(5, classifier=None, real_images=images, real_labels=labels, seed=1,
                           real_probabilities=probabilities, real_ids=ids)
    for question in session.questions:
        assert question.real_index in ids and np.array_equal(question.image, images[question.real_index - 100])
    assert Q.retry_missed(_all_wrong(session)).mode == "retry"


def _all_wrong(session):
    for question in session.questions:
        Q.answer(session, (question.answer + 1) % NUM_TISSUES)
    return session
