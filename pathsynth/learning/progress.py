"""Learners, their stored answers and what those answers say (accuracy, streak, confusions).

Identity is the caller's job, as authorisation is for galleries: the app builds the ``Learner`` from the
session (a Hugging Face login on Spaces, else the name typed in the Quiz tab, else the browser's own anonymous
id kept in its local storage) and every read takes that ``Learner``, so no call can name another learner's id.
A typed name has no password: it is for practice only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from ..domains import get_domain
from ..storage import AnswerRow, Database, LearnerRow
from ..text import clean_text
from ..tissues import ABBREVIATIONS, NUM_TISSUES, TISSUE_INDICES

MAX_LEARNER_CHARS = 40
_NAME = re.compile(r"[\w .'@-]+")  # letters, digits and a little punctuation: nothing that is markup
MODES = ("practice", "weak", "gallery", "retry", "assignment")


_BROWSER_ID = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16): unguessable, so it needs no password


@dataclass(frozen=True)
class Learner:
    kind: str  # "local": a typed name; "hf": a Hugging Face username from the login; "browser": an anonymous id
    name: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name.casefold()}"

    @property
    def display_name(self) -> str:
        """How the learner is shown (an anonymous browser by the end of its id, never the whole id)."""
        return f"Anonymous learner (this browser, …{self.name[-4:]})" if self.kind == "browser" else self.name


def local_learner(name) -> Learner:
    """The learner for a name typed in the app; ``ValueError`` (worded for the UI) for an unusable name."""
    text = clean_text(name, field="Your name", max_chars=MAX_LEARNER_CHARS, allow_empty=False)
    if not _NAME.fullmatch(text):
        raise ValueError("Your name may only contain letters, digits, spaces and . ' @ - _")
    return Learner("local", text)


def hf_learner(username: str) -> Learner:
    """The learner for a Hugging Face login (usernames are letters, digits, - and _)."""
    if not isinstance(username, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", username):
        raise ValueError("The Hugging Face login did not give a usable username.")
    return Learner("hf", username)


def browser_learner(browser_id) -> Learner:
    """The anonymous learner of one browser (its id: ``new_browser_id()``, kept in the browser's local storage)."""
    if not isinstance(browser_id, str) or not _BROWSER_ID.fullmatch(browser_id):
        raise ValueError("This browser's anonymous id is not usable; reload the page to get a new one.")
    return Learner("browser", browser_id)


def new_browser_id() -> str:
    import secrets

    return secrets.token_hex(16)


@dataclass
class AnswerRecord:
    tissue: int  # the answer key
    chosen: int
    answered_at: datetime  # UTC
    seconds: float | None = None
    mode: str = "practice"
    quiz_id: str = ""
    source: str = "generated"
    seed: int | None = None
    real_index: int | None = None
    gallery_item_id: int | None = None
    domain: str = "pathmnist"  # the imaging domain ``tissue`` and ``chosen`` are classes of (pathsynth.domains)

    @property
    def correct(self) -> bool:
        return self.tissue == self.chosen


def record_from(session, feedback, now: datetime | None = None) -> AnswerRecord:
    """The record of one answer just given with ``pathsynth.quiz.answer``."""
    question = session.questions[feedback.question]
    return AnswerRecord(tissue=feedback.answer, chosen=feedback.chosen, answered_at=now or _utcnow(),
                        seconds=feedback.seconds, mode=session.mode, quiz_id=session.id, source=question.source,
                        seed=question.seed, real_index=question.real_index, gallery_item_id=question.item_id,
                        domain=getattr(session, "domain", "pathmnist"))


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds, as every timestamp in the database (text sorts in time order)."""
    if moment.tzinfo is None:
        raise ValueError("answer times must be timezone-aware")
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def check_record(record: AnswerRecord) -> dict:
    """An answer record's column values, checked (``ValueError`` for a bad mode, time or tissue)."""
    if record.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {record.mode!r}")
    seconds = None if record.seconds is None else float(record.seconds)
    if seconds is not None and not 0 <= seconds < 10**7:
        raise ValueError(f"time taken must be a number of seconds, got {record.seconds!r}")
    domain = get_domain(record.domain)
    return dict(answered_at=_stamp(record.answered_at), tissue=domain.class_index(record.tissue),
                chosen=domain.class_index(record.chosen), correct=record.correct, seconds=seconds, mode=record.mode,
                quiz_id=str(record.quiz_id)[:64], source=str(record.source)[:20], seed=record.seed,
                real_index=record.real_index, gallery_item_id=record.gallery_item_id, domain=domain.flag)


_check = check_record  # the old private name, still imported by pathsynth.assignments


class ProgressStore:
    """Answers per learner in the app's database (the gallery store's: ``ProgressStore(store.database)``)."""

    def __init__(self, database: Database):
        self.database = database

    def learner_id(self, db, learner: Learner, create: bool) -> int | None:
        """The learner's row id inside the open session ``db`` (created when ``create``; else None if new)."""
        found = db.scalar(select(LearnerRow.id).where(LearnerRow.key == learner.key))
        if found is not None or not create:
            return found
        try:
            with db.begin_nested():  # a savepoint: another replica may add the same learner at the same moment
                result = db.execute(insert(LearnerRow).values(key=learner.key, display_name=learner.display_name,
                                                              created_at=_stamp(_utcnow())))
            return int(result.inserted_primary_key[0])
        except IntegrityError:
            return db.scalar(select(LearnerRow.id).where(LearnerRow.key == learner.key))

    _learner_id = learner_id  # the old private name, still used by pathsynth.assignments

    def record(self, learner: Learner, *records: AnswerRecord) -> None:
        """Store answers of ``learner`` (created on the first one), all in one transaction."""
        values = [check_record(record) for record in records]  # checked before the transaction begins
        with self.database.write() as db:
            learner_id = self.learner_id(db, learner, create=True)
            if values:
                db.execute(insert(AnswerRow), [dict(v, learner_id=learner_id) for v in values])

    def history(self, learner: Learner, domain: str = "pathmnist") -> list[AnswerRecord]:
        """Every answer of ``learner`` in ``domain`` (histology unless told: a tissue and a finding with the same
        index are different things), oldest first (empty for someone who never answered)."""
        domain = get_domain(domain).flag
        with self.database.read() as db:
            learner_id = self.learner_id(db, learner, create=False)
            if learner_id is None:
                return []
            rows = db.execute(select(AnswerRow).where(AnswerRow.learner_id == learner_id, AnswerRow.domain == domain)
                              .order_by(AnswerRow.answered_at, AnswerRow.id)).all()
        return [AnswerRecord(tissue=r.tissue, chosen=r.chosen, answered_at=datetime.fromisoformat(r.answered_at),
                             seconds=r.seconds, mode=r.mode, quiz_id=r.quiz_id, source=r.source, seed=r.seed,
                             real_index=r.real_index, gallery_item_id=r.gallery_item_id, domain=r.domain)
                for r in rows]


# ------------------------------------------------------------------------------------------ summaries

def accuracy_per_tissue(history: list[AnswerRecord]) -> dict[int, tuple[int, int]]:
    """Answer tissue -> (correct, answered), for the tissues answered at least once, in catalogue order."""
    counts = {t: [0, 0] for t in TISSUE_INDICES}
    for record in history:
        counts[record.tissue][0] += record.correct
        counts[record.tissue][1] += 1
    return {t: (c, n) for t, (c, n) in counts.items() if n}


def streak_days(history: list[AnswerRecord], today: date | None = None) -> int:
    """Consecutive days (UTC) with at least one answer, ending today, or yesterday while today is still open."""
    days = {record.answered_at.astimezone(timezone.utc).date() for record in history}
    day = today or _utcnow().date()
    if day not in days:
        day -= timedelta(days=1)
    streak = 0
    while day in days:
        streak += 1
        day -= timedelta(days=1)
    return streak


def confusion(history: list[AnswerRecord]) -> np.ndarray:
    """The learner's confusion matrix: rows = the right tissue, columns = what they chose."""
    from sklearn.metrics import confusion_matrix

    if not history:
        return np.zeros((NUM_TISSUES, NUM_TISSUES), np.int64)
    return confusion_matrix([r.tissue for r in history], [r.chosen for r in history], labels=list(TISSUE_INDICES))


def confused_pairs(history: list[AnswerRecord], limit: int = 5) -> list[tuple[int, int, int]]:
    """(right tissue, chosen instead, times), most frequent first: the mix-ups worth practising."""
    matrix = confusion(history)
    pairs = [(int(t), int(c), int(matrix[t, c])) for t in TISSUE_INDICES for c in TISSUE_INDICES
             if t != c and matrix[t, c]]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))[:limit]


NOT_PRACTISED_COLOUR, WEAK_COLOUR, GOOD_COLOUR = "#bbbbbb", "#c0392b", "#27ae60"
STUB_PERCENT = 3  # the height of a bar standing for "nothing": 0 % still shows, never-practised too


def _accuracy_bars(axes, values: list[float | None]) -> None:
    """One bar per tissue with its figure written above it. The weakest tissues must be the most visible: 0 % is a
    red stub marked "0 %", and a tissue never practised a grey hatched stub marked "–", so neither reads as the
    other."""
    colours = [NOT_PRACTISED_COLOUR if v is None else WEAK_COLOUR if v < 70 else GOOD_COLOUR for v in values]
    heights = [STUB_PERCENT if v is None else max(v, STUB_PERCENT) for v in values]
    drawn = axes.bar(ABBREVIATIONS, heights, color=colours)
    for bar, value in zip(drawn, values):
        if value is None:
            bar.set_hatch("///")
    texts = axes.bar_label(drawn, labels=["–" if v is None else f"{v:.0f} %" for v in values], fontsize=8, padding=1)
    for text, value in zip(texts, values):
        if value == 0:
            text.set(color=WEAK_COLOUR, fontweight="bold")
    axes.set(ylim=(0, 110), ylabel="% correct", title="Accuracy per tissue (grey –: not practised yet)")


def progress_figure(history: list[AnswerRecord]):
    """Accuracy per tissue (bars) and per day (line), as a matplotlib Figure (no pyplot state: thread-safe)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.2), layout="constrained")
    bars, line = figure.subplots(1, 2, width_ratios=(3, 2))
    accuracy = accuracy_per_tissue(history)
    values = [100 * accuracy[t][0] / accuracy[t][1] if t in accuracy else None for t in TISSUE_INDICES]
    _accuracy_bars(bars, values)
    daily: dict[date, list[int]] = {}
    for record in history:
        daily.setdefault(record.answered_at.astimezone(timezone.utc).date(), []).append(record.correct)
    days = sorted(daily)
    line.plot([d.isoformat()[5:] for d in days], [100 * np.mean(daily[d]) for d in days], marker="o")
    line.set(ylim=(0, 100), title="Accuracy per day (UTC)")
    line.tick_params(axis="x", labelrotation=45, labelsize=7)
    return figure
