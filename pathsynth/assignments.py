"""Assignments: a fixed set of questions an instructor hands to a class by a short code, and the class's results.

An assignment is made from a gallery or from freshly verified images; its questions (image, answer key, caption)
are copied into the database when it is created, so every learner gets the same questions in the same order,
whatever later happens to the gallery. Learners open it by its code; each answer is an ordinary stored answer of
the learner (``pathsynth.learning``, mode ``"assignment"``, so it counts in their progress) that also names the
assignment and the question, and whether it came after the due date. One answer per learner and question.

**Authorisation is the caller's job**, as for galleries: creating, listing, ``results`` and ``results_csv`` are
for instructors (the app checks ``require_instructor`` first); learners only reach ``open_assignment``,
``record_answer`` and ``learner_answers`` with their own ``Learner``. Bad input raises ``ValueError`` worded for
the UI; an unknown code raises ``AssignmentNotFoundError`` (also a ``ValueError``). Creating one adds a row to the
audit log under ``created_by`` (``pathsynth.instructors``), in the same transaction.

**Private galleries.** The caller opens the gallery as its instructor (``GalleryStore.get_gallery(..., viewer=)``),
so only a private gallery's owner can make an assignment of it. The assignment is a copy: learners with its code
take it whatever the gallery's visibility (it is the instructor's choice to hand the code out), and it lists for
every instructor like any other assignment.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, time, timezone
from typing import Sequence

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from . import quiz as Q
from .exports import csv_cell  # the galleries' CSV rule: no cell runs as a formula
from .domains import DEFAULT_DOMAIN
from .gallery import GalleryItemInput, clean_domain, decode_png, instructor_caption, items_from_verified, prepare_item
from .instructors import record
from .learning.progress import AnswerRecord, Learner, ProgressStore, _check
from .storage import AnswerRow, AssignmentQuestionRow, AssignmentRow, Database, LearnerRow
from .text import clean_choice, clean_text
from .tissues import ABBREVIATIONS, DISPLAY_NAMES, NUM_TISSUES, TISSUE_INDICES

MODES = ("practice", "exam")  # practice: feedback after each answer; exam: only at the end
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud or copied from a slide safely
CODE_LENGTH = 6  # 31^6 ≈ 887 million codes
MAX_TITLE_CHARS = 100
MAX_QUESTIONS = Q.MAX_QUESTIONS
CSV_COLUMNS = ["assignment", "title", "learner", "learner_key", "question", "answer_key", "chosen", "correct", "late",
               "seconds", "answered_at"]


class AssignmentNotFoundError(ValueError):
    """No assignment with that code."""


class AlreadyAnsweredError(ValueError):
    """The learner has answered that question already (the first answer counts)."""


@dataclass
class AssignmentQuestion:
    id: int
    position: int  # 0-based; shown as position + 1
    tissue: int  # the answer key
    caption: str
    source: str
    seed: int | None
    gallery_item_id: int | None
    meta: dict
    image: np.ndarray  # uint8 (H, W, 3); empty when opened without images


@dataclass
class Assignment:
    id: int
    code: str
    title: str
    mode: str
    due_at: str | None  # ISO-8601 UTC
    created_by: str
    created_at: str
    gallery_id: int | None
    domain: str = DEFAULT_DOMAIN  # the imaging domain of every question (pathsynth.domains)
    questions: list[AssignmentQuestion] = field(default_factory=list)

    def is_late(self, moment: datetime) -> bool:
        return self.due_at is not None and moment > datetime.fromisoformat(self.due_at)


@dataclass
class ClassAnswer:
    """One stored answer to an assignment question, with who gave it."""

    learner: str  # the learner's display name
    learner_key: str  # ``local:<name>`` or ``hf:<username>``: two learners may share a display name
    position: int
    tissue: int
    chosen: int
    correct: bool
    late: bool
    seconds: float | None
    answered_at: str


# ------------------------------------------------------------------------------------------ checking input

def clean_title(value) -> str:
    return clean_text(value, field="Assignment title", max_chars=MAX_TITLE_CHARS, allow_empty=False)


def clean_mode(value) -> str:
    return clean_choice(value, MODES, field="Mode")


def parse_due(value) -> str | None:
    """A due date as ISO-8601 UTC, or None (blank). ``2026-12-24`` means the end of that day (UTC);
    ``2026-12-24 17:00`` is UTC unless it names its own time zone (``...+01:00``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        text = value.strip() if isinstance(value, str) else ""
        try:
            moment = datetime.fromisoformat(text) if 0 < len(text) <= 40 else None
        except ValueError:
            moment = None
        if moment is None:
            raise ValueError(f"Due date must look like 2026-12-24 or 2026-12-24 17:00 (UTC), got {str(value)[:40]!r}.")
        if len(text) == 10:  # a date alone: due at the end of that day
            moment = datetime.combine(moment.date(), time(23, 59, 59, 999000))
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def format_due(due_at: str | None) -> str:
    """A stored due date (``parse_due``) as people read it: "Mon 14 Dec 2026, 17:00 UTC"; "" for none."""
    if not due_at:
        return ""
    moment = datetime.fromisoformat(due_at).astimezone(timezone.utc)
    return f"{WEEKDAYS[moment.weekday()]} {moment.day} {MONTHS[moment.month - 1]} {moment:%Y, %H:%M} UTC"


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # English whatever the server's locale
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def normalise_code(value) -> str:
    """A typed code in its stored form (upper case, spaces and dashes dropped); a clear message when it cannot be
    one."""
    text = "".join(value.split()).replace("-", "").upper() if isinstance(value, str) else ""
    if not text:
        raise AssignmentNotFoundError("Type the assignment code your instructor gave you.")
    if len(text) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in text):
        raise AssignmentNotFoundError(f"No assignment has the code {text[:20]!r}: codes are {CODE_LENGTH} letters "
                                      "and digits; check the code your instructor gave you.")
    return text


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------------------------------------ creating

def create_assignment(database: Database, title, items: Sequence[GalleryItemInput], *, mode="practice", due=None,
                      created_by: str = "", gallery_id: int | None = None,
                      gallery_item_ids: Sequence[int | None] | None = None, shuffle: bool = True,
                      seed: int | None = None, domain: str = DEFAULT_DOMAIN) -> Assignment:
    """A new assignment of ``items`` (copied into the database); returns it with its fresh code. ``shuffle``
    mixes the order once, now (``seed``: reproducibly): every learner then gets that same order, and a gallery
    sorted by tissue does not give the answers away."""
    items = list(items)
    if not items:
        raise ValueError("An assignment needs at least one image.")
    if len(items) > MAX_QUESTIONS:
        raise ValueError(f"An assignment has at most {MAX_QUESTIONS} questions, got {len(items)}.")
    item_ids = list(gallery_item_ids) if gallery_item_ids is not None else [None] * len(items)
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(items))
        items, item_ids = [items[i] for i in order], [item_ids[i] for i in order]
    values = {"title": clean_title(title), "mode": clean_mode(mode), "due_at": parse_due(due),
              "created_by": clean_text(created_by, field="Creator", max_chars=100), "created_at": _stamp(utc_now()),
              "gallery_id": gallery_id, "domain": clean_domain(domain)}
    prepared = [prepare_item(item, values["domain"]) for item in items]  # validated, encoded: before the transaction
    with database.write() as db:
        assignment_id, code = _insert_assignment(db, values)
        db.execute(insert(AssignmentQuestionRow), [
            dict(assignment_id=assignment_id, position=n, tissue=p.tissue, caption=p.caption, source=p.source,
                 seed=p.seed, gallery_item_id=item_id, meta_json=p.meta_json, image_png=p.png)
            for n, (p, item_id) in enumerate(zip(prepared, item_ids))])
        record(db, values["created_by"], "create", "assignment", assignment_id, f"{code}: {values['title']}")
    return open_assignment(database, code)


def _insert_assignment(db, values: dict, attempts: int = 8) -> tuple[int, str]:
    """Insert with a fresh random code; a clash with an existing code (rare) just draws another."""
    for _ in range(attempts):
        code = new_code()
        try:
            with db.begin_nested():  # a savepoint: PostgreSQL aborts the whole transaction on a violation
                result = db.execute(insert(AssignmentRow).values(code=code, **values))
            return int(result.inserted_primary_key[0]), code
        except IntegrityError:
            continue
    raise RuntimeError("could not find an unused assignment code")


def create_from_gallery(database: Database, gallery, title=None, **options) -> Assignment:
    """An assignment of a stored gallery's images in gallery order (``title`` defaults to the gallery's name)."""
    if not gallery.items:
        raise ValueError("This gallery has no images yet.")
    items = [GalleryItemInput(image=i.image, caption=i.caption, tissue=i.tissue, seed=i.seed, source=i.source,
                              meta=i.meta) for i in gallery.items]
    title = gallery.name if title is None or (isinstance(title, str) and not title.strip()) else title
    return create_assignment(database, title, items, gallery_id=gallery.id,
                             gallery_item_ids=[i.id for i in gallery.items], domain=gallery.domain, **options)


def create_from_verified(database: Database, results, title, **options) -> Assignment:
    """An assignment of ``images.generate`` results; images the classifier did not verify are left out, so no
    learner is graded on one."""
    verified = [r for r in results if r.verified]
    if not verified:
        raise ValueError("None of the generated images could be verified; try again or choose other tissues.")
    return create_assignment(database, title, items_from_verified(verified), **options)


# ------------------------------------------------------------------------------------------------- reading

def open_assignment(database: Database, code, with_images: bool = True) -> Assignment:
    """The assignment with this code, its questions in order; ``AssignmentNotFoundError`` for an unknown code."""
    code = normalise_code(code)
    columns = [c for c in AssignmentQuestionRow.__table__.c if with_images or c.name != "image_png"]
    with database.read() as db:
        row = db.execute(select(*AssignmentRow.__table__.c).where(AssignmentRow.code == code)).one_or_none()
        if row is None:
            raise AssignmentNotFoundError(f"No assignment has the code {code!r}; check the code your instructor "
                                          "gave you.")
        questions = db.execute(select(*columns).where(AssignmentQuestionRow.assignment_id == row.id)
                               .order_by(AssignmentQuestionRow.position)).all()
    return Assignment(**row._asdict(), questions=[_question(q, with_images) for q in questions])


def _question(row, with_images: bool) -> AssignmentQuestion:
    fields = row._asdict()
    png, meta_json = fields.pop("image_png", None), fields.pop("meta_json")
    fields.pop("assignment_id")
    image = decode_png(png, row.id) if with_images else np.zeros((0, 0, 3), np.uint8)
    return AssignmentQuestion(**fields, meta=json.loads(meta_json), image=image)


def list_assignments(database: Database) -> list[Assignment]:
    """Every assignment, newest first, without questions (for instructors)."""
    with database.read() as db:
        rows = db.execute(select(*AssignmentRow.__table__.c).order_by(AssignmentRow.id.desc())).all()
    return [Assignment(**row._asdict()) for row in rows]


# ------------------------------------------------------------------------------------------------ answering

def learner_quiz(assignment: Assignment, answered: dict[int, ClassAnswer] | None = None) -> Q.QuizSession:
    """The assignment as a quiz session in its fixed order; questions in ``answered`` (the learner's stored
    answers, ``learner_answers``) count as answered, so reopening the assignment resumes it."""
    questions = assignment.questions
    probabilities = [q.meta.get("probabilities") or [] for q in questions]
    session = Q.quiz_from_images(
        [q.image for q in questions], [q.tissue for q in questions], sources=[q.source for q in questions],
        seeds=[q.seed for q in questions], captions=[instructor_caption(q) for q in questions],
        probabilities=probabilities if all(len(p) == NUM_TISSUES for p in probabilities) else None,
        item_ids=[q.gallery_item_id for q in questions], title=assignment.title)
    for position, answer in (answered or {}).items():
        session.answers[position] = answer.chosen
    session.mode, session.id = "assignment", assignment.code
    return session


def record_answer(database: Database, assignment: Assignment, learner: Learner, position: int, chosen,
                  seconds: float | None = None, now: datetime | None = None) -> bool:
    """Store ``learner``'s answer to question ``position`` (0-based); returns whether it was late. A second answer
    to the same question is refused (the first one counts)."""
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < len(assignment.questions):
        raise ValueError(f"This assignment has no question {position!r}.")
    question = assignment.questions[position]
    moment = now or utc_now()
    values = _check(AnswerRecord(  # the learner's ordinary answer record, checked as every other one is
        tissue=question.tissue, chosen=Q.check_choice(chosen, assignment.domain), answered_at=moment,
        seconds=seconds, mode="assignment", quiz_id=assignment.code, source=question.source, seed=question.seed,
        gallery_item_id=question.gallery_item_id, domain=assignment.domain))
    late = assignment.is_late(moment)
    with database.write() as db:
        learner_id = ProgressStore(database)._learner_id(db, learner, create=True)
        try:
            with db.begin_nested():  # a savepoint: the unique index may refuse a second answer
                db.execute(insert(AnswerRow).values(**values, learner_id=learner_id, assignment_id=assignment.id,
                                                    assignment_question_id=question.id, late=late))
        except IntegrityError:
            raise AlreadyAnsweredError(f"You have already answered question {position + 1} of this assignment; "
                             "the first answer counts.") from None
    return late


def _answers(database: Database, assignment: Assignment, learner: Learner | None = None) -> list[ClassAnswer]:
    query = (select(LearnerRow.display_name, LearnerRow.key, AssignmentQuestionRow.position, AnswerRow.tissue,
                    AnswerRow.chosen, AnswerRow.correct, AnswerRow.late, AnswerRow.seconds, AnswerRow.answered_at)
             .join(LearnerRow, LearnerRow.id == AnswerRow.learner_id)
             .join(AssignmentQuestionRow, AssignmentQuestionRow.id == AnswerRow.assignment_question_id)
             .where(AnswerRow.assignment_id == assignment.id)
             .order_by(LearnerRow.key, AssignmentQuestionRow.position))
    if learner is not None:
        query = query.where(LearnerRow.key == learner.key)
    with database.read() as db:
        rows = db.execute(query).all()
    return [ClassAnswer(r.display_name, r.key, r.position, r.tissue, r.chosen, bool(r.correct), bool(r.late),
                        r.seconds, r.answered_at) for r in rows]


def learner_answers(database: Database, assignment: Assignment, learner: Learner) -> dict[int, ClassAnswer]:
    """``learner``'s own answers to the assignment, by question position (nobody else's)."""
    return {answer.position: answer for answer in _answers(database, assignment, learner)}


# ------------------------------------------------------------------------------------------------ results

def results(database: Database, assignment: Assignment) -> list[ClassAnswer]:
    """Every learner's answers to the assignment, by learner then question (for instructors only)."""
    return _answers(database, assignment)


def learner_scores(assignment: Assignment, answers: list[ClassAnswer]) -> list[dict]:
    """One row per learner who answered: correct, answered, out of how many, and how many answers were late."""
    rows: dict[str, dict] = {}
    for a in answers:
        row = rows.setdefault(a.learner_key, {"learner": a.learner, "key": a.learner_key, "correct": 0,
                                              "answered": 0, "total": len(assignment.questions), "late": 0})
        row["correct"] += a.correct
        row["answered"] += 1
        row["late"] += a.late
    return list(rows.values())


def most_missed(assignment: Assignment, answers: list[ClassAnswer], limit: int = 6) -> list[tuple[int, int, int]]:
    """(question position, times missed, times answered) for the questions missed at least once, most missed
    first."""
    missed, asked = {}, {}
    for a in answers:
        asked[a.position] = asked.get(a.position, 0) + 1
        missed[a.position] = missed.get(a.position, 0) + (not a.correct)
    ranked = sorted((p for p in missed if missed[p]), key=lambda p: (-missed[p] / asked[p], -missed[p], p))
    return [(p, missed[p], asked[p]) for p in ranked[:limit]]


def confusion_png(matrix: np.ndarray, title: str = "Class confusion matrix") -> bytes:
    """The confusion matrix (rows: right tissue, columns: chosen) as a PNG (no pyplot state: thread-safe)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2, 4.6), layout="constrained")
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    for t in TISSUE_INDICES:
        for c in TISSUE_INDICES:
            if matrix[t, c]:
                axes.text(c, t, str(int(matrix[t, c])), ha="center", va="center", fontsize=8,
                          color="white" if matrix[t, c] > matrix.max() / 2 else "black")
    axes.set_xticks(list(TISSUE_INDICES), ABBREVIATIONS, rotation=45)
    axes.set_yticks(list(TISSUE_INDICES), ABBREVIATIONS)
    axes.set(xlabel="Chosen", ylabel="Right tissue", title=title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _csv_row(assignment: Assignment, name: str, key: str, question: AssignmentQuestion,
             a: ClassAnswer | None) -> list:
    head = [assignment.code, assignment.title, name, key, question.position + 1, DISPLAY_NAMES[question.tissue]]
    if a is None:  # not answered: the row is still there, so a gradebook sees the gap
        return head + [None] * 5
    seconds = None if a.seconds is None else f"{a.seconds:.1f}"
    return head + [DISPLAY_NAMES[a.chosen], "yes" if a.correct else "no", "yes" if a.late else "no", seconds,
                   a.answered_at]


def results_csv(assignment: Assignment, answers: list[ClassAnswer]) -> str:
    """One row per learner x question, for every learner who answered at least one question (an unanswered
    question has empty ``chosen``/``correct``); every cell formula-safe (titles and names are typed by people)."""
    by_learner: dict[str, dict[int, ClassAnswer]] = {}
    for a in answers:
        by_learner.setdefault(a.learner_key, {})[a.position] = a
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for key, given in by_learner.items():
        name = next(iter(given.values())).learner
        for q in assignment.questions:
            writer.writerow([csv_cell(v) for v in _csv_row(assignment, name, key, q, given.get(q.position))])
    return buffer.getvalue()


__all__ = ["AlreadyAnsweredError", "Assignment", "AssignmentNotFoundError", "AssignmentQuestion", "ClassAnswer",
           "MODES", "confusion_png", "create_assignment", "create_from_gallery", "create_from_verified",
           "learner_answers", "learner_quiz", "learner_scores", "list_assignments", "most_missed", "normalise_code",
           "open_assignment", "parse_due", "record_answer", "results", "results_csv"]
