"""Real or synthetic? Trainees' guesses, the human realism report they add up to, and flagged images.

Each vote says which tile was shown (provenance: real with its index in the app's real tiles, or generated with
its seed), its tissue, whether it truly was synthetic and what the learner guessed. The realism report is the
share of synthetic tiles that trainees judged real, per tissue and overall, beside the same share for real
tiles (the baseline: people also doubt real tiles), each with a Wilson 95 % interval.

A flag is a learner saying "this image looks wrong", with an optional note kept verbatim (the app escapes it
when showing it); ``list_flags`` is the instructors' view of them.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select

from ..domains import get_domain
from ..storage import ChallengeVoteRow, Database, FlagRow, LearnerRow
from ..tissues import TISSUE_INDICES
from .progress import Learner, ProgressStore, _stamp, _utcnow

SOURCES = ("real", "generated")  # what the challenge shows
FLAG_SOURCES = ("real", "generated", "uploaded")  # the quiz also shows instructors' uploads
FLAG_CONTEXTS = ("quiz", "challenge")
MAX_NOTE_CHARS = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Tile:
    """Where a shown tile came from: enough to find or regenerate it, never the image itself."""

    source: str  # real, generated (uploaded: gallery quizzes only)
    tissue: int
    seed: int | None = None
    real_index: int | None = None
    gallery_item_id: int | None = None
    domain: str = "pathmnist"  # the imaging domain ``tissue`` is a class of (pathsynth.domains)

    @property
    def synthetic(self) -> bool:
        return self.source == "generated"


@dataclass(frozen=True)
class Vote:
    tile: Tile
    guessed_synthetic: bool
    voted_at: datetime  # UTC

    @property
    def judged_real(self) -> bool:
        return not self.guessed_synthetic


@dataclass(frozen=True)
class Flag:
    tile: Tile
    note: str
    context: str
    flagged_at: datetime
    learner: str = ""  # display name, for the instructor reading flags


def check_note(note) -> str:
    """The note as typed (verbatim: it is evidence), or ``ValueError`` worded for the UI."""
    if note is None:
        return ""
    if not isinstance(note, str):
        raise ValueError(f"The note must be text, got {type(note).__name__}.")
    if len(note) > MAX_NOTE_CHARS:
        raise ValueError(f"The note is too long ({len(note)} characters; at most {MAX_NOTE_CHARS}).")
    # control characters (NUL breaks PostgreSQL, others hide text) and lone surrogates are refused, not cleaned
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t" for c in note):
        raise ValueError("The note contains control characters; please type plain text.")
    return note


def _check_tile(tile: Tile, sources: tuple[str, ...]) -> dict:
    if tile.source not in sources:
        raise ValueError(f"source must be one of {sources}, got {tile.source!r}")
    domain = get_domain(tile.domain)
    return dict(source=tile.source, tissue=domain.class_index(tile.tissue), seed=tile.seed, real_index=tile.real_index,
                domain=domain.flag)


def _tile(row) -> Tile:
    return Tile(source=row.source, tissue=row.tissue, seed=row.seed, real_index=row.real_index,
                gallery_item_id=getattr(row, "gallery_item_id", None), domain=getattr(row, "domain", "pathmnist"))


class ChallengeStore(ProgressStore):
    """Votes and flags in the app's database; learners are the quiz's (same ``learners`` table and keys)."""

    def vote(self, learner: Learner, vote: Vote) -> None:
        values = dict(_check_tile(vote.tile, SOURCES), truly_synthetic=vote.tile.synthetic,
                      guessed_synthetic=bool(vote.guessed_synthetic), voted_at=_stamp(vote.voted_at))
        with self.database.write() as db:
            db.execute(insert(ChallengeVoteRow).values(learner_id=self.learner_id(db, learner, create=True),
                                                       **values))

    def flag(self, learner: Learner, tile: Tile, note, context: str, now: datetime | None = None) -> None:
        if context not in FLAG_CONTEXTS:
            raise ValueError(f"context must be one of {FLAG_CONTEXTS}, got {context!r}")
        values = dict(_check_tile(tile, FLAG_SOURCES), gallery_item_id=tile.gallery_item_id, note=check_note(note),
                      context=context, flagged_at=_stamp(now or _utcnow()))
        with self.database.write() as db:
            db.execute(insert(FlagRow).values(learner_id=self.learner_id(db, learner, create=True), **values))

    def votes(self, domain: str = "pathmnist") -> list[Vote]:
        """Every vote on ``domain``'s images (histology unless told), oldest first (anonymous: the report needs no
        names)."""
        query = (select(ChallengeVoteRow).where(ChallengeVoteRow.domain == get_domain(domain).flag)
                 .order_by(ChallengeVoteRow.voted_at, ChallengeVoteRow.id))
        with self.database.read() as db:
            rows = db.execute(query).all()
        return [Vote(_tile(r), r.guessed_synthetic, datetime.fromisoformat(r.voted_at)) for r in rows]


def list_flags(database: Database, limit: int | None = None) -> list[Flag]:
    """For instructors: flagged images, newest first, with who flagged them and their note (verbatim)."""
    query = (select(FlagRow, LearnerRow.display_name).join(LearnerRow, LearnerRow.id == FlagRow.learner_id)
             .order_by(FlagRow.flagged_at.desc(), FlagRow.id.desc()).limit(limit))
    with database.read() as db:
        rows = db.execute(query).all()  # a Core result: the flag's columns and the name, side by side
    return [Flag(_tile(row), row.note, row.context, datetime.fromisoformat(row.flagged_at), row.display_name)
            for row in rows]


# ------------------------------------------------------------------------------------------ the report

def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval for ``successes`` of ``n`` (statsmodels when installed, else SciPy); None for n = 0."""
    if n == 0:
        return None
    try:
        from statsmodels.stats.proportion import proportion_confint
    except ImportError:
        from scipy.stats import binomtest

        interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
        return float(interval.low), float(interval.high)
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    return float(low), float(high)


@dataclass(frozen=True)
class Share:
    """How many of ``shown`` tiles trainees judged real, with its Wilson interval (None when nothing shown)."""

    judged_real: int
    shown: int

    @property
    def value(self) -> float | None:
        return self.judged_real / self.shown if self.shown else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.judged_real, self.shown)


@dataclass(frozen=True)
class RealismRow:
    tissue: int | None  # None: every tissue
    synthetic: Share  # synthetic tiles judged real: 50 % would mean trainees cannot tell
    real: Share  # real tiles judged real: the baseline


@dataclass(frozen=True)
class RealismReport:
    overall: RealismRow
    per_tissue: list[RealismRow]  # catalogue order, tissues with at least one vote

    @property
    def votes(self) -> int:
        return self.overall.synthetic.shown + self.overall.real.shown


def _row(votes: list[Vote], tissue: int | None) -> RealismRow:
    def share(synthetic: bool) -> Share:
        shown = [v for v in votes if v.tile.synthetic == synthetic and tissue in (None, v.tile.tissue)]
        return Share(sum(v.judged_real for v in shown), len(shown))

    return RealismRow(tissue, share(True), share(False))


def realism_report_from(votes: list[Vote]) -> RealismReport:
    rows = [_row(votes, t) for t in TISSUE_INDICES]
    return RealismReport(_row(votes, None), [r for r in rows if r.synthetic.shown + r.real.shown])


def realism_report(database: Database) -> RealismReport:
    """The human realism report over every vote stored so far (``report.votes == 0`` when there are none)."""
    return realism_report_from(ChallengeStore(database).votes())
