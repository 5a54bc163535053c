"""Quizzes, exams and open assignments kept in the database (pathsynth.learning.attempts + migration 0008), and the
app's handlers that resume them after a restart. Every test runs on SQLite and on PostgreSQL (``storage_url``)."""

from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from pathsynth import quiz as Q
from pathsynth.app import quiz as tab
from pathsynth.gallery import GalleryStore
from pathsynth.learning import ProgressStore, local_learner
from pathsynth.learning.attempts import SAVE_EVERY_S, AttemptStore
from pathsynth.settings import Settings
from pathsynth.storage import QuizProgressRow
from pathsynth.tissues import DISPLAY_NAMES, TISSUE_INDICES


class Clock:
    """A monotonic clock the test moves by hand (one per process: a restart gets a new one)."""

    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now


def exam(clock: Clock, minutes: float = 10, count: int = 5) -> Q.QuizSession:
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (28, 28, 3), dtype=np.uint8) for _ in range(count)]
    session = Q.quiz_from_images(images, [TISSUE_INDICES[i % len(TISSUE_INDICES)] for i in range(count)],
                                 seeds=list(range(100, 100 + count)))
    session.clock = clock
    session.questions[0].heatmap = rng.random((28, 28), dtype=np.float32)
    return Q.start_exam(session, minutes)


@pytest.fixture
def store(tmp_path, storage_url):
    with GalleryStore(tmp_path, database_url=storage_url) as galleries:
        yield AttemptStore(galleries.database)


def test_a_kept_exam_resumes_at_its_question_with_its_answers_and_a_stopped_clock(store):
    ana, before_crash = local_learner("Ana"), Clock(5_000.0)
    session = exam(before_crash)
    store.keep_quiz(ana, session)
    for choice in (0, 3):  # two answers, 40 s apart, each kept
        Q.mark_shown(session)
        before_crash.now += 40
        Q.answer(session, choice)
        store.keep_quiz(ana, session)
    Q.mark_shown(session)
    before_crash.now += 12
    store.keep_quiz(ana, session)  # the exam clock's last save: 92 s run, question 3 on screen for 12 s
    before_crash.now += 7  # not kept: lost with the crash, and never counted

    after_restart = Clock(17.0)  # another process: its monotonic clock has nothing to do with the first's
    resumed = store.quiz(ana, clock=after_restart)
    assert resumed.id == session.id and resumed.answers == [0, 3, None, None, None] and resumed.current == 2
    assert resumed.exam and resumed.owner == ana
    assert Q.remaining(resumed) == pytest.approx(600 - 92)  # the clock did not run while the server was away
    assert after_restart() - resumed.questions[2].shown_at == pytest.approx(12)
    for kept, back in zip(session.questions, resumed.questions):
        assert np.array_equal(kept.image, back.image) and back.image.dtype == np.uint8
        assert (kept.answer, kept.seed, kept.source) == (back.answer, back.seed, back.source)
    assert np.array_equal(resumed.questions[0].heatmap, session.questions[0].heatmap)
    assert resumed.questions[1].heatmap is None

    after_restart.now += 30
    feedback = Q.answer(resumed, 1)  # the learner carries on: the time taken counts from where it stood
    assert feedback.question == 2 and feedback.seconds == pytest.approx(42)


def test_an_exam_past_its_limit_at_the_last_save_is_closed_when_resumed(store):
    ana, clock = local_learner("Ana"), Clock(0.0)
    session = exam(clock, minutes=1)
    clock.now += 61
    store.keep_quiz(ana, session)
    resumed = store.quiz(ana, clock=Clock(3.0))
    assert Q.close_if_time_is_up(resumed) and resumed.finished and Q.summary(resumed).unanswered == [0, 1, 2, 3, 4]


def test_a_new_quiz_replaces_the_last_and_later_saves_keep_the_pictures(store):
    ana, bo, clock = local_learner("Ana"), local_learner("Bo"), Clock(0.0)
    first, second = exam(clock, count=3), exam(clock, count=2)
    store.keep_quiz(ana, first)
    store.keep_quiz(bo, first)  # another learner's copy is theirs alone
    store.keep_quiz(ana, second)
    assert store.quiz(ana).id == second.id and store.quiz(ana).total == 2 and store.quiz(bo).id == first.id
    with store.database.read() as db:
        pictures = db.execute(QuizProgressRow.__table__.select()).all()
    assert len(pictures) == 2  # one row per learner and kind
    Q.answer(second, 4)
    store.keep_quiz(ana, second)  # only the state changes
    assert store.quiz(ana).answers == [4, None] and store.quiz(local_learner("ANA")).answers == [4, None]
    assert store.quiz(local_learner("Cy")) is None


def test_an_open_assignment_is_remembered_per_learner(store):
    ana = local_learner("Ana")
    assert store.assignment_code(ana) is None
    store.keep_assignment(ana, "ABCDEFGH")
    store.keep_assignment(ana, "JKLMNPQR")
    assert store.assignment_code(ana) == "JKLMNPQR" and store.assignment_code(local_learner("Bo")) is None
    store.keep_quiz(ana, exam(Clock(0.0)))  # a quiz beside it: the two kinds do not replace each other
    assert store.assignment_code(ana) == "JKLMNPQR"


# ------------------------------------------------------------------------------------------- the app's handlers

def services_for(home, storage_url):
    return SimpleNamespace(settings=Settings.from_env({"PATHSYNTH_HOME": str(home)}),
                           store=GalleryStore(home, database_url=storage_url), pool=None, explanations=None)


def test_the_quiz_tab_keeps_each_answer_and_resumes_after_a_restart(tmp_path, storage_url):
    services = services_for(tmp_path, storage_url)
    session = exam(Clock(0.0))
    session.clock = Q._monotonic
    session.started_at = session.clock()
    tab.keep(services, session)  # nobody identified yet: nothing kept
    assert all(isinstance(out, type(gr.skip())) for out in tab.resume(services, "Ana"))
    tab.question_view(session, services=services)
    answered = tab.answer(services, session, DISPLAY_NAMES[session.questions[0].answer], "Ana")
    assert answered[0] is session and session.owner == local_learner("Ana")  # the first to answer owns it
    tab.next_question(session, services=services)

    restarted = services_for(tmp_path, storage_url)  # a new process: only the database is left
    view = tab.resume(restarted, "ana")
    resumed, status = view[0], view[tab.STATUS]
    assert isinstance(resumed, Q.QuizSession) and resumed.id == session.id and resumed.answers[0] is not None
    assert resumed.current == 1 and "Welcome back" in status and "1 of 5 answered" in status
    assert "clock stopped" in status and view[18].active  # the exam's clock shows again
    assert len(ProgressStore(restarted.store.database).history(local_learner("Ana"))) == 1
    assert all(isinstance(out, type(gr.skip())) for out in tab.resume(restarted, "Bo"))  # nothing for others

    for _ in range(4):
        tab.answer(restarted, resumed, DISPLAY_NAMES[resumed.questions[resumed.current].answer], "Ana")
        tab.next_question(resumed, services=restarted)
    assert resumed.finished and Q.summary(resumed).score == 5
    assert all(isinstance(out, type(gr.skip())) for out in tab.resume(restarted, "Ana"))  # finished: not reopened


def test_a_timed_exam_on_screen_is_kept_every_few_seconds(tmp_path, storage_url):
    services = services_for(tmp_path, storage_url)
    clock = Clock(100.0)
    session = exam(clock)
    session.owner = local_learner("Ana")
    tab.keep(services, session)
    clock.now += SAVE_EVERY_S / 2
    tab.tick(services, session)
    assert session.saved_at == 100.0  # not yet
    clock.now += SAVE_EVERY_S
    tab.tick(services, session)
    assert session.saved_at == clock.now
    assert Q.remaining(AttemptStore(services.store.database).quiz(session.owner)) == pytest.approx(
        600 - 1.5 * SAVE_EVERY_S, abs=0.5)  # restored on the real clock, a moment later


def test_an_answer_on_a_page_whose_server_died_carries_on_the_kept_quiz(tmp_path, storage_url):
    """After a failover the page's session has no quiz (its replica died): a named learner's answer finds it."""
    services = services_for(tmp_path, storage_url)
    session = exam(Clock(0.0))
    session.clock = Q._monotonic
    session.started_at, session.owner = session.clock(), local_learner("Ana")
    tab.question_view(session, services=services)
    tab.keep(services, session)

    other_replica = services_for(tmp_path, storage_url)
    outputs = tab.answer(other_replica, None, DISPLAY_NAMES[session.questions[0].answer], "Ana")
    carried = outputs[0]
    assert isinstance(carried, Q.QuizSession) and carried.id == session.id and carried.answers[0] is not None
    assert "Answer saved" in outputs[5]
    assert "Start a quiz first" in tab.answer(other_replica, None, "Mucus", "Bo")[5]  # nothing kept for Bo
