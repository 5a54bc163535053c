"""pathsynth.learning.scheduler and the teaching around it: FSRS on scripted answer histories, confusable pairs
in the catalogue, pairwise feedback and time taken in quizzes, difficulty, real examples beside feedback, exams
against the clock in the Quiz tab, the learner the browser remembers. No database, no models (a stub services)."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from fsrs import Rating

from pathsynth import quiz as Q
from pathsynth.ui_helpers import escape_md
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


# ------------------------------------------------------------------------------------------ difficulty

def test_hard_plans_confusable_pairs_and_easy_spreads_the_tissues():
    from pathsynth.learning.difficulty import tissue_plan

    rng = np.random.default_rng(0)
    hard = tissue_plan(10, list(TISSUE_INDICES), "hard", rng)
    pairs = [(p.first, p.second) for p in CONFUSABLE_PAIRS]
    assert sorted(hard) == sorted(t for pair in pairs for t in pair)  # ten questions: each of the five pairs, both
    assert sorted(tissue_plan(4, [STROMA, MUSCLE, ADIPOSE], "hard", rng)) == [MUSCLE, MUSCLE, STROMA, STROMA]
    assert sorted(tissue_plan(3, [ADIPOSE, MUSCLE, 8], "hard", rng)) == [ADIPOSE, MUSCLE, 8]  # no pair: even spread
    assert sorted(tissue_plan(18, list(TISSUE_INDICES), "easy", rng)) == sorted(list(TISSUE_INDICES) * 2)


def test_rank_real_puts_suitable_tiles_first_on_scripted_confidences():
    from pathsynth.learning.difficulty import check_difficulty, rank_real

    confidence = np.array([0.99, 0.95, 0.75, 0.6, 0.4, 0.97, 0.7])
    agrees = np.array([True, True, True, True, True, False, False])
    rng = np.random.default_rng(0)
    easy = list(rank_real(confidence, agrees, "easy", rng))
    hard = list(rank_real(confidence, agrees, "hard", rng))
    assert set(easy[:2]) == {0, 1} and easy[2:5] == [2, 3, 4] and easy[5:] == [5, 6]  # then the unsound keys
    assert set(hard[:2]) == {2, 3} and hard[2:5] == [1, 0, 4] and hard[5:] == [5, 6]
    assert check_difficulty(" Hard ") == "hard" and check_difficulty(None) == "mixed"


@pytest.mark.parametrize("confidence,realism,easy,hard", [
    (0.97, 0.5, True, False),  # a textbook tile
    (0.7, 0.5, False, True),  # borderline: the classifier less sure
    (0.97, 0.1, False, True),  # atypical (issue 32): as unusual as the least typical fifth of real tiles
    (0.97, None, True, False),  # realism not judged: by confidence alone
    (0.45, 0.1, False, False),  # not sound: the answer key is doubtful
])
def test_hard_takes_borderline_or_atypical_tiles_with_a_sound_key(confidence, realism, easy, hard):
    from pathsynth.learning.difficulty import fits

    assert (fits("easy", confidence, realism), fits("hard", confidence, realism)) == (easy, hard)


def test_the_real_tiles_explained_ahead_hold_confident_and_borderline_ones_in_turn():
    from pathsynth.services import quiz_tiles_ahead

    # per tissue: agreeing tiles 0.99, 0.95, 0.97 and 0.7, 0.6 sure, one disagreeing; the hard ones must not be crowded
    # out (a quiz draws only tiles explained ahead once there are enough)
    levels = [0.99, 0.95, 0.97, 0.7, 0.6, 0.8]
    labels = np.repeat(np.arange(NUM_TISSUES), len(levels))
    probabilities = np.full((len(labels), NUM_TISSUES), 0.001)
    for i, tissue in enumerate(labels):
        k = i % len(levels)
        probabilities[i, tissue if k < 5 else (tissue + 1) % NUM_TISSUES] = levels[k]
    ahead = quiz_tiles_ahead(labels, probabilities, per_tissue=4)
    for tissue in TISSUE_INDICES:
        chosen = [i for i in ahead if labels[i] == tissue and probabilities[i].argmax() == tissue]
        assert [probabilities[i, tissue] >= 0.9 for i in chosen] == [True, False, True, False]


# ------------------------------------------------------------------------------------------ real examples

def scripted_real_sample():
    """Four real tiles per tissue; tile k of a tissue has confidence 0.6 + 0.1 k; the last one's label disagrees."""
    labels = np.repeat(np.arange(NUM_TISSUES), 4)
    probabilities = np.full((len(labels), NUM_TISSUES), 0.01)
    for i, tissue in enumerate(labels):
        k = i % 4
        probabilities[i, tissue if k < 3 else (tissue + 1) % NUM_TISSUES] = 0.6 + 0.1 * k
    images = np.stack([np.full((28, 28, 3), i, np.uint8) for i in range(len(labels))])
    return images, labels, probabilities


def test_real_examples_are_prototypical_and_never_the_question_itself():
    from pathsynth.learning import example_index, pair_examples

    _, labels, probabilities = scripted_real_sample()
    first = 4 * STROMA
    assert example_index(labels, probabilities, STROMA) == first + 2  # the most confident agreeing tile
    assert example_index(labels, probabilities, STROMA, rank=1) == first + 1
    assert example_index(labels, probabilities, STROMA, exclude=[first + 2]) == first + 1
    assert example_index(labels, probabilities, STROMA, rank=3) == first + 3  # the disagreeing one comes last
    assert pair_examples(STROMA, MUSCLE, labels, probabilities) == (first + 2, 4 * MUSCLE + 2)
    assert example_index(labels[:4], probabilities[:4], MUSCLE) is None


def stub_services(spaces=False):
    from types import SimpleNamespace

    from pathsynth.pool import ExplanationCache

    images, labels, probabilities = scripted_real_sample()
    explainer = ExplanationCache(lambda image, tissue: np.zeros(image.shape[:2], np.float32))
    return SimpleNamespace(settings=SimpleNamespace(instructors=SimpleNamespace(on_spaces=spaces)),
                           explainer=explainer, explanations=explainer,
                           real_images=images, real_labels=labels, real_probabilities=probabilities)


def quiz_tab_session(answers, exam=False, minutes=None, clock=None):
    from pathsynth.app import quiz as tab

    session = Q.quiz_from_images([np.full((28, 28, 3), 200, np.uint8)] * len(answers), list(answers))
    if clock is not None:
        session.clock = clock
    if exam:
        Q.start_exam(session, minutes)
    tab.question_view(session)
    return session


def test_a_wrong_practice_answer_shows_a_real_example_of_both_tissues_at_the_questions_scale():
    from pathsynth.app import quiz as tab
    from pathsynth.images import display_image

    services = stub_services()
    session = quiz_tab_session(["STR", "ADI"])
    answered = tab.answer(services, session, "Smooth muscle", None, None, None, "2×", "smooth", True)
    assert escape_md(confusable_pair("STR", "MUS").text) in answered[5]
    box, right, chosen = tab.pair_view(services, session, "2×", "smooth", True)
    assert box["visible"] is True
    assert right["label"] == "real Cancer-associated stroma (the right answer)"
    assert chosen["label"] == "real Smooth muscle (your answer)"
    look = dict(zoom=2, smooth=True, scale_bar=True)
    assert np.array_equal(right["value"], display_image(services.real_images[4 * STROMA + 2], **look))
    assert np.array_equal(chosen["value"], display_image(services.real_images[4 * MUSCLE + 2], **look))
    question = tab.question_image(tab.look_from("2×", "smooth", True), session.questions[session.current], services)
    assert right["value"].shape == question.shape  # the question's own rendering: same size, zoom, scale bar
    tab.next_question(session)
    tab.answer(services, session, "Adipose tissue")
    assert tab.pair_view(services, session)[0]["visible"] is False  # right answer: nothing to compare


def test_the_review_lists_every_miss_with_its_real_examples():
    from pathsynth.app import quiz as tab
    from pathsynth.images import SCALE_BAR_STRIP, display_image

    services = stub_services()
    session = quiz_tab_session(["STR", "DEB", "ADI"])
    for choice in ("MUS", "MUC", "ADI"):
        tab.answer(services, session, choice)
        view = tab.next_question(session, services=services)
    summary, misses = view[11], view[13]
    assert "Quiz finished: 1 / 3" in summary
    assert all(escape_md(confusable_pair(a, b).text) in summary for a, b in (("STR", "MUS"), ("DEB", "MUC")))
    assert [caption for _, caption in misses] == ["Q1: it is Cancer-associated stroma (you said Smooth muscle)",
                                                  "Q2: it is Debris (you said Mucus)"]
    panel, size, header, gap = misses[0][0], tab.REVIEW_SIZE, 18, 8
    row = header + size + SCALE_BAR_STRIP
    assert panel.shape == (2 * row + gap, 2 * size + gap, 3)  # the question above real STR beside real MUS
    left = (size + gap) // 2  # the question's row is centred
    assert np.array_equal(panel[header:row, left:left + size], display_image(session.questions[0].image, size=size))
    examples = panel[row + gap + header:]  # one scale, one scale bar for all three
    assert np.array_equal(examples[:, :size], display_image(services.real_images[4 * STROMA + 2], size=size))
    assert np.array_equal(examples[:, size + gap:], display_image(services.real_images[4 * MUSCLE + 2], size=size))


# ------------------------------------------------------------------------------------------ exams in the tab

class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_an_exam_hides_the_verdict_until_the_end():
    from pathsynth.app import quiz as tab

    services = stub_services()
    session = quiz_tab_session(["STR", "ADI"], exam=True)
    answered = tab.answer(services, session, "Smooth muscle")
    feedback, cam, status = answered[5], answered[6], answered[-1]
    assert "Answer saved" in feedback and "Stroma" not in feedback and cam is None
    assert "correct" not in status and "answer" not in status and "score" not in status and status["mode"] == "exam"
    assert tab.pair_view(services, session)[0]["visible"] is False
    tab.next_question(session)
    tab.answer(services, session, "Adipose tissue")
    done = tab.next_question(session, services=services)
    assert "Quiz finished: 1 / 2" in done[11] and done[9]["score"] == 1  # revealed at the end


def test_the_tab_closes_a_timed_exam_on_the_server_clock():
    from pathsynth.app import quiz as tab

    services, clock = stub_services(), Clock()
    session = quiz_tab_session(["STR", "ADI", "DEB"], exam=True, minutes=2, clock=clock)
    shown = tab.question_view(session)
    assert shown[17] == "⏱ **2:00** left" and shown[18].active is True
    clock.now = 75.0
    assert tab.tick(services, session)[17] == "⏱ **0:45** left"
    tab.answer(services, session, "STR")
    tab.next_question(session)
    clock.now = 121.0  # the browser's timer may lag or be stopped: the answer itself is checked (and "Next")
    late = tab.answer(services, session, "ADI")
    assert "Time is up" in late[5] and late[4]["value"] == "See results" and session.answers == [7, None, None]
    view = tab.next_question(session, services=services)
    assert "Time ran out: 2 unanswered question(s) count as missed" in view[11] and view[18].active is False
    assert [caption for _, caption in view[13]] == ["Q2: it is Adipose tissue (not answered in time)",
                                                    "Q3: it is Debris (not answered in time)"]


def test_the_exam_timer_opens_the_results_when_time_runs_out():
    from pathsynth.app import quiz as tab

    services, clock = stub_services(), Clock()
    session = quiz_tab_session(["STR", "ADI"], exam=True, minutes=1, clock=clock)
    clock.now = 60.0
    view = tab.tick(services, session)
    assert session.closed and "Quiz finished: 0 / 2" in view[11] and "Time is up" in view[16]


# ------------------------------------------------------------------------------------------ who is learning

def test_the_browser_remembers_a_name_and_an_anonymous_id():
    from pathsynth.app import progress as tab
    from pathsynth.learning import browser_learner

    stored, anon, quiz_name, progress_name = tab.restore_identity(None)  # a first visit
    assert len(anon) == 32 and stored == {"name": "", "anon": anon} and quiz_name == progress_name == ""
    assert tab.restore_identity(stored)[1] == anon  # a reload keeps it
    assert tab.restore_identity({"anon": "not-an-id", "name": 3})[1] != "not-an-id"
    stored = tab.remember_name("Ana", stored)
    assert stored == {"name": "Ana", "anon": anon}
    assert tab.restore_identity(stored)[2:] == ("Ana", "Ana")
    assert tab.restore_identity(stored, boxes=3)[2:] == ("Ana",) * 3  # Quiz, My progress, Real or synthetic?
    assert tab.copy_name(1)("Ana") == "Ana" and tab.copy_name(2)("Ana") == ("Ana", "Ana")  # typed in one box
    services = stub_services()
    assert tab.optional_learner(services, "", None, anon) == browser_learner(anon)  # no name: this browser
    assert tab.optional_learner(services, "Ana", None, anon).key == "local:ana"  # a typed name wins
    assert tab.optional_learner(services, "", None, None) is None
    assert tab.optional_learner(stub_services(spaces=True), "", None, anon) is None  # Spaces: the login only
    assert "…" in browser_learner(anon).display_name and anon not in browser_learner(anon).display_name
    with pytest.raises(ValueError, match="anonymous id"):
        browser_learner("../../etc")


def test_the_secret_that_encrypts_the_browsers_memory_survives_restarts(tmp_path):
    from pathsynth.app.progress import browser_secret

    first = browser_secret(tmp_path / "home")
    assert first and browser_secret(tmp_path / "home") == first and browser_secret(tmp_path / "other") != first
    assert oct((tmp_path / "home" / "browser_state.key").stat().st_mode & 0o777) == "0o600"


def test_public_names_for_what_assignments_import():
    from pathsynth.learning.progress import ProgressStore, _check, check_record

    assert _check is check_record and ProgressStore._learner_id is ProgressStore.learner_id


def test_next_after_the_time_limit_opens_the_results():
    from pathsynth.app import quiz as tab

    clock = Clock()
    session = quiz_tab_session(["STR", "ADI"], exam=True, minutes=1, clock=clock)
    tab.answer(stub_services(), session, "STR")
    clock.now = 61.0
    view = tab.next_question(session)
    assert session.closed and "Quiz finished: 1 / 2" in view[11] and "Score: 1 / 2" in view[8]
