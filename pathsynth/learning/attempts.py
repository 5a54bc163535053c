"""Attempts in progress kept in the database, so a crash, a restart or another replica loses none of them.

A learner's quiz or exam (the Quiz tab's ``QuizSession``) is kept when it starts and after every answer, and a
timed exam at least every :data:`SAVE_EVERY_S` while it is on screen; opening the page again (after a restart, or
on another replica) resumes it at the same question with the answers given so far. The assignment a learner has
open is kept too (its code: the answers themselves are ``answers`` rows already), so it reopens by itself.

**The exam clock runs only while a server holds the exam.** What is kept is the time the exam has run (and how
long the current question has been on screen), not the moment it started: a resumed exam goes on from the time
kept at its last save. The time between that save and the restart (at most :data:`SAVE_EVERY_S`, or since the last
answer) is not counted, nor is the time the server was down: a crash never costs a learner exam time.

A row per learner and kind (``storage.QuizProgressRow``): starting another quiz replaces the learner's quiz.
Images and heatmaps are one compressed NumPy archive (no pickles), written when the quiz is first kept; later
saves rewrite only the small JSON state.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ..quiz import Question, QuizSession
from ..storage import Database, QuizProgressRow, now_stamp
from .progress import Learner, ProgressStore

SAVE_EVERY_S = 15.0  # a timed exam on screen is kept at least this often (its clock, see above)
QUIZ, ASSIGNMENT = "quiz", "assignment"
STATE_VERSION = 1
_QUESTION_FIELDS = ("answer", "source", "true_label", "seed", "probabilities", "caption", "real_index", "item_id")


def _ago(moment: float | None, now: float) -> float | None:
    return None if moment is None else max(0.0, now - moment)


def session_state(session: QuizSession, now: float) -> dict:
    """Everything of ``session`` but its pictures, as JSON-ready values; clock moments as seconds before ``now``."""
    questions = [dict({name: getattr(q, name) for name in _QUESTION_FIELDS}, shown_ago=_ago(q.shown_at, now),
                      probabilities=[float(p) for p in q.probabilities]) for q in session.questions]
    return {"version": STATE_VERSION, "id": session.id, "title": session.title, "mode": session.mode,
            "difficulty": session.difficulty, "exam": session.exam, "time_limit": session.time_limit,
            "elapsed": _ago(session.started_at, now), "closed": session.closed, "answers": session.answers,
            "questions": questions, "domain": session.domain}


def session_images(session: QuizSession) -> bytes:
    """The questions' images (uint8) and the heatmaps made so far (float32), as one compressed ``.npz``."""
    arrays = {f"image_{i}": np.asarray(q.image, dtype=np.uint8) for i, q in enumerate(session.questions)}
    arrays.update({f"heatmap_{i}": np.asarray(q.heatmap, dtype=np.float32)
                   for i, q in enumerate(session.questions) if q.heatmap is not None})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def restored_session(state: dict, images: bytes, clock=time.monotonic) -> QuizSession:
    """The session ``session_state``/``session_images`` kept, its clocks going on from ``clock()`` now."""
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"a kept quiz of an unknown version ({state.get('version')!r})")
    now = clock()
    since = lambda ago: None if ago is None else now - ago  # noqa: E731
    with np.load(io.BytesIO(images), allow_pickle=False) as archive:
        questions = [Question(image=archive[f"image_{i}"],
                              heatmap=archive[f"heatmap_{i}"] if f"heatmap_{i}" in archive.files else None,
                              shown_at=since(kept["shown_ago"]), **{name: kept[name] for name in _QUESTION_FIELDS})
                     for i, kept in enumerate(state["questions"])]
    return QuizSession(questions, list(state["answers"]), id=state["id"], title=state["title"], mode=state["mode"],
                       difficulty=state["difficulty"], exam=state["exam"], time_limit=state["time_limit"],
                       started_at=since(state["elapsed"]), closed=state["closed"], clock=clock, saved_at=now,
                       domain=state.get("domain", "pathmnist"))  # kept before domains: histology


class AttemptStore:
    """Learners' attempts in progress in the app's database (SQLite or PostgreSQL, see ``pathsynth.storage``)."""

    def __init__(self, database: Database):
        self.database = database
        self.learners = ProgressStore(database)

    def keep_quiz(self, learner: Learner, session: QuizSession) -> None:
        """Keep ``session`` as ``learner``'s quiz: its state now (and its pictures, the first time)."""
        now = session.clock()
        state = json.dumps(session_state(session, now))
        with self.database.write() as db:
            learner_id = self.learners.learner_id(db, learner, create=True)
            kept = db.execute(update(QuizProgressRow).where(QuizProgressRow.learner_id == learner_id,
                                                            QuizProgressRow.kind == QUIZ,
                                                            QuizProgressRow.attempt_id == session.id)
                              .values(saved_at=now_stamp(), state_json=state))
            if kept.rowcount == 0:  # a new quiz: it replaces the learner's last one, pictures and all
                self._replace(db, learner_id, QUIZ, session.id, state, session_images(session))
        session.saved_at = now

    def quiz(self, learner: Learner, clock=time.monotonic) -> QuizSession | None:
        """``learner``'s kept quiz (finished or not), its clocks going on from now; None when there is none."""
        row = self._row(learner, QUIZ)
        if row is None:
            return None
        session = restored_session(json.loads(row.state_json), row.images_npz, clock)
        session.owner = learner
        return session

    def keep_assignment(self, learner: Learner, code: str) -> None:
        """Remember that ``learner`` has the assignment ``code`` open."""
        with self.database.write() as db:
            learner_id = self.learners.learner_id(db, learner, create=True)
            self._replace(db, learner_id, ASSIGNMENT, code, "{}", b"")

    def assignment_code(self, learner: Learner) -> str | None:
        """The code of the assignment ``learner`` had open last, or None."""
        row = self._row(learner, ASSIGNMENT)
        return None if row is None else row.attempt_id

    def _row(self, learner: Learner, kind: str):
        with self.database.read() as db:
            learner_id = self.learners.learner_id(db, learner, create=False)
            if learner_id is None:
                return None
            return db.execute(select(QuizProgressRow).where(QuizProgressRow.learner_id == learner_id,
                                                            QuizProgressRow.kind == kind)).first()

    @staticmethod
    def _replace(db, learner_id: int, kind: str, attempt_id: str, state: str, images: bytes) -> None:
        """The learner's row of ``kind`` becomes this attempt (inserted when there is none)."""
        values = dict(attempt_id=attempt_id, saved_at=now_stamp(), state_json=state, images_npz=images)
        replace = update(QuizProgressRow).where(QuizProgressRow.learner_id == learner_id,
                                                QuizProgressRow.kind == kind).values(**values)
        if db.execute(replace).rowcount:
            return
        try:
            with db.begin_nested():  # a savepoint: another replica may keep the same learner's attempt this instant
                db.execute(QuizProgressRow.__table__.insert().values(learner_id=learner_id, kind=kind, **values))
        except IntegrityError:  # it did: the later save wins
            db.execute(replace)
