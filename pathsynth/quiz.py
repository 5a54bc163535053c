"""Identification quizzes: build a set of tiles, take answers, score, retry the missed ones.

Pure logic, no UI and no module-level per-user state: a ``QuizSession`` is a plain dataclass owned by the
caller (a Gradio ``gr.State``).

The answer key is always the ResNet-18's label, so students are graded against the same model that
verified the generated images: for a generated tile it is the verified tissue; for a real tile it is the
classifier's prediction. Real tiles where the classifier agrees with the dataset label are preferred, so
the key and the ground truth match whenever the sample allows it.

A quiz is *practice* (feedback after each answer: the app's choice) or an *exam* (:func:`start_exam`: feedback at
the end, optionally within a time limit). The limit is enforced here, from the start time stored in the session
and the session's ``clock`` (``time.monotonic``; tests inject their own): an answer after it is refused with
:class:`TimeUp`, the quiz closes and its unanswered questions count as missed. ``difficulty`` (easy, mixed,
hard; see :mod:`pathsynth.learning.difficulty`) chooses prototypical or borderline tiles.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .domains import DEFAULT_DOMAIN, get_domain
from .errors import UnknownTissueError
from .gallery import instructor_caption
from .generators.base import MAX_SEED
from .images import SOURCES, microns_per_pixel, to_rgb_uint8
from .learning.difficulty import POOL_PREFERENCE, check_difficulty, fits, rank_real, tissue_plan
from .tissues import TISSUES, confusable_pair, pair_text, teaching_text

MAX_QUESTIONS = 100
MAX_MINUTES = 180  # an exam's time limit at most


class TimeUp(ValueError):
    """An answer after the exam's time limit: the quiz is closed, unanswered questions count as missed."""


@dataclass
class Question:
    image: np.ndarray  # uint8 (H, W, 3)
    answer: int  # the answer key: the classifier's label (verified tissue for generated tiles)
    source: str  # one of images.SOURCES
    true_label: int | None = None  # the dataset's label, for real tiles
    seed: int | None = None  # regenerates a generated tile with the same backend
    probabilities: list[float] = field(default_factory=list)  # classifier probabilities (9), may be empty
    heatmap: np.ndarray | None = None  # where the classifier looked for the answer, computed once (see heatmap())
    caption: str = ""  # an instructor's caption (gallery quizzes), shown with the feedback
    real_index: int | None = None  # the tile's index in the real sample (real tiles of build_quiz)
    item_id: int | None = None  # the gallery item it came from (gallery quizzes)
    shown_at: float | None = None  # time.monotonic() when it was first shown (see mark_shown): time taken


def _monotonic() -> float:
    return time.monotonic()  # looked up at each call: a test may replace time.monotonic


@dataclass
class QuizSession:
    questions: list[Question]
    answers: list[int | None]  # the student's choice per question, None while unanswered
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    title: str = ""
    mode: str = "practice"  # how the quiz was made ("practice", "weak", "gallery", "retry"), stored with answers
    difficulty: str = "mixed"  # easy, mixed or hard (see build_quiz)
    exam: bool = False  # feedback only at the end (start_exam)
    time_limit: float | None = None  # seconds from started_at; None: no limit
    started_at: float | None = None  # clock() when the exam started
    closed: bool = False  # the time limit passed with questions unanswered: they count as missed
    clock: Callable[[], float] = field(default=_monotonic, repr=False, compare=False)  # injectable for tests
    owner: object = None  # the learner its progress is kept for (the app's, see learning.attempts); None: not kept
    domain: str = DEFAULT_DOMAIN  # the imaging domain its answers are classes of (pathsynth.domains)
    saved_at: float | None = field(default=None, repr=False, compare=False)  # clock() when it was last kept

    @property
    def total(self) -> int:
        return len(self.questions)

    @property
    def current(self) -> int | None:
        """Index of the next unanswered question (questions are taken in order); None when finished or closed."""
        if self.closed:
            return None
        return next((i for i, a in enumerate(self.answers) if a is None), None)

    @property
    def finished(self) -> bool:
        return self.current is None

    @property
    def score(self) -> int:
        return sum(1 for q, a in zip(self.questions, self.answers) if a is not None and a == q.answer)


@dataclass
class Feedback:
    question: int  # index of the answered question
    correct: bool
    chosen: int
    answer: int
    description: str  # the catalogue's teaching text for the correct tissue
    explanation: str  # one short paragraph for the student (plain text)
    finished: bool  # no questions left
    seconds: float | None = None  # from showing the question (mark_shown) to the answer; None if never marked


@dataclass
class Summary:
    score: int
    total: int
    answered: int
    per_tissue: dict[int, tuple[int, int]]  # answer tissue -> (correct, answered)
    missed: list[int]  # indices of wrongly answered questions
    unanswered: list[int]
    per_source: dict[str, tuple[int, int]] = field(default_factory=dict)  # images.SOURCES -> (correct, answered)

    @property
    def percent(self) -> float:
        return 100.0 * self.score / self.total if self.total else 0.0


# ------------------------------------------------------------------------------------------ building

def check_choice(choice, domain=None) -> int:
    """A student's choice (class index, label, abbreviation or display name of ``domain``'s classes; histology's
    tissues by default) -> index; ValueError otherwise."""
    catalogue = get_domain(domain)
    classes = f"the {catalogue.num_classes} {catalogue.class_noun}s"
    if isinstance(choice, (bool, np.bool_)) or choice is None:
        raise ValueError(f"choose one of {classes}, got {choice!r}")
    if isinstance(choice, (float, np.floating)):
        if not float(choice).is_integer():
            raise ValueError(f"choose one of {classes}, got {choice!r}")
        choice = int(choice)
    if not isinstance(choice, (int, np.integer, str)):
        raise ValueError(f"choose one of {classes}, got a {type(choice).__name__}")
    try:
        return catalogue.class_index(choice.strip() if isinstance(choice, str) else int(choice))
    except UnknownTissueError:
        shown = repr(choice)[:60]
        raise ValueError(f"{shown} is not a {catalogue.class_noun}; choose one of: "
                         f"{', '.join(catalogue.display_names)}") from None


_check_choice = check_choice  # the old private name, still imported by pathsynth.assignments


def _tissue_list(tissues, domain=None) -> list[int]:
    if tissues is None or (isinstance(tissues, (list, tuple)) and not tissues):
        return list(range(get_domain(domain).num_classes))
    if isinstance(tissues, (str, int, np.integer)):
        tissues = [tissues]
    indices = sorted({check_choice(t, domain) for t in tissues})
    return indices


def build_quiz(n: int = 10, *, classifier, real_images: np.ndarray, real_labels: np.ndarray, verifier=None,
               generated_share: float = 0.5, tissues: Sequence[int | str] | None = None,
               seed: int | None = None, rng: np.random.Generator | None = None, progress=None,
               real_probabilities: np.ndarray | None = None, title: str = "", explainer=None,
               real_ids: Sequence[int] | None = None, difficulty: str = "mixed", domain=None) -> QuizSession:
    """A quiz of ``n`` tiles (or films: ``domain``, histology by default): about ``generated_share`` verified
    generated ones, the rest real.

    ``verifier.generate(tissues, seed=...)`` supplies the generated tiles; any it could not verify are
    replaced by real tiles, so a student is never graded on an image the classifier rejected. Real tiles
    come from ``real_images``/``real_labels``, restricted to ``tissues`` by their answer key, and are never
    repeated; with none (no data on the machine) every tile is generated, whatever ``generated_share`` says. ``real_probabilities`` (``classifier.predict_proba(real_images)``, cached by
    the caller) saves classifying them again. ``seed`` (or ``rng``) makes the quiz reproducible.

    ``verifier`` may be a :class:`~pathsynth.pool.VerifiedPool` (same ``generate`` interface): unseeded quizzes
    then only take ready images (``VerifiedPool.take``) and never wait for the generator: a tissue out of stock
    is asked as a real tile instead. With ``explainer`` (``(image, tissue) -> heatmap``) every question's heatmap
    is computed now, so answering needs no model call; pooled images bring theirs. An explainer that only looks
    heatmaps up may return ``None``: that question's ``heatmap`` stays ``None``.
    ``real_ids``: each real image's index in the whole real sample when ``real_images`` is a subset of it (kept
    as ``Question.real_index``, the tile's provenance in a learner's stored answers); default: its position.

    ``difficulty``: ``"mixed"`` (any verified tile, tissues spread evenly), ``"easy"`` (prototypical tiles: high
    classifier confidence and realism) or ``"hard"`` (borderline but still verified tiles, tissues asked in
    confusable pairs); generated tiles that do not suit it are replaced by real ones, as unverified ones are.
    An unseeded easy or hard quiz asks a pool only for tissues it holds a suitable image for (:func:`split_plan`).
    """
    domain = get_domain(domain).flag
    n, share, wanted = _check_request(n, generated_share, tissues, domain)
    difficulty = check_difficulty(difficulty)
    reproducible = seed is not None or rng is not None  # else a pool may hand out ready images
    rng = rng if rng is not None else np.random.default_rng(seed)
    real_images, real_labels = _check_real(real_images, real_labels, real_probabilities, real_ids, domain)
    no_real = len(real_images) == 0  # no data on this machine: every tile is generated
    if no_real:
        if verifier is None:
            raise ValueError("there are no real tiles on this machine, so a quiz needs generated ones")
        share = 1.0
    plan = None if difficulty == "mixed" else tissue_plan(n, wanted, difficulty, rng)
    n_generated = int(round(n * share)) if verifier is not None else 0
    questions, missing = [], []  # missing: tissues whose generated tile was not verified (or did not suit)
    if plan is None:  # mixed: any tissues (the real ones are picked by count)
        requested, for_real = mixed_request(n_generated, wanted, rng, verifier, pooled=not reproducible), []
    else:  # the tissues a suitable generated tile is likely for, the rest real
        requested, for_real = split_plan(plan, n_generated, verifier, difficulty, pooled=not reproducible)
    if requested:
        generation_seed = int(rng.integers(MAX_SEED + 1))
        questions, missing = _generated(verifier, requested, generation_seed if reproducible else None, difficulty,
                                        progress)
    n_real = n - len(questions)
    if n_real and no_real:  # nothing real to stand in for the tiles not asked or not verified: generate them now
        questions.extend(_generated_instead_of_real(verifier, n_real, for_real + missing, wanted, rng, reproducible,
                                                    difficulty, progress))
        if not questions:
            raise ValueError("no verified generated image could be made for this quiz just now; please try again")
    elif n_real:
        if plan is None:
            picked = _pick_real(n_real, classifier, real_images, real_labels, wanted, rng, real_probabilities,
                                domain=domain)
        else:  # the plan's other tissues, and those a generated tile could not be asked for
            picked = _pick_real_for(for_real + missing, classifier, real_images, real_labels, wanted, rng,
                                    real_probabilities, difficulty, domain=domain)
        for question in picked if real_ids is not None else ():
            question.real_index = int(real_ids[question.real_index])
        questions.extend(picked)
    order = rng.permutation(len(questions))
    questions = [questions[i] for i in order]
    _explain_all(questions, explainer)
    return QuizSession(questions, [None] * len(questions), title=title, difficulty=difficulty, domain=domain)


def _check_request(n, generated_share, tissues, domain=None) -> tuple[int, float, list[int]]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_QUESTIONS:
        raise ValueError(f"number of questions must be a whole number from 1 to {MAX_QUESTIONS}, got {n!r}")
    try:
        share = float(generated_share)
    except (TypeError, ValueError):
        share = float("nan")
    if not 0.0 <= share <= 1.0:  # also rejects NaN
        raise ValueError(f"generated_share must lie in [0, 1], got {generated_share!r}")
    return int(n), share, _tissue_list(tissues, domain)


def _check_real(real_images, real_labels, real_probabilities, real_ids,
                domain=None) -> tuple[np.ndarray, np.ndarray]:
    real_images = np.asarray(real_images)
    real_labels = np.asarray(real_labels).reshape(-1).astype(np.int64)
    if real_images.ndim != 4 or len(real_images) != len(real_labels):
        raise ValueError("real_images must be (N, H, W, 3) with one label per image")
    classes = get_domain(domain).num_classes
    if real_probabilities is not None and np.shape(real_probabilities) != (len(real_labels), classes):
        raise ValueError(f"real_probabilities must have shape ({len(real_labels)}, {classes})")
    if real_ids is not None and len(real_ids) != len(real_labels):
        raise ValueError("real_ids must give one index per real image")
    return real_images, real_labels


def split_plan(plan: list[int], n_generated: int, verifier, difficulty: str,
               pooled: bool = True) -> tuple[list[int], list[int]]:
    """(the plan's tissues to ask ``verifier`` for, the rest: real tiles), about ``n_generated`` asked for.

    From a :class:`~pathsynth.pool.VerifiedPool` (``pooled``: an unseeded quiz) only the tissues it holds a stocked
    image that suits ``difficulty`` for: a borderline generated image is rare, so asking for the plan's first
    tissues blindly got mostly confident ones (rejected, replaced by real tiles) or, with a tissue's stock empty,
    one generated on the spot (seconds) only to be rejected. Otherwise the plan's first ``n_generated``."""
    from .pool import VerifiedPool

    if not (pooled and isinstance(verifier, VerifiedPool)):
        return plan[:n_generated], plan[n_generated:]
    ready = verifier.stocked_where(lambda image: fits(difficulty, float(image.confidence), image.realism))
    generated, real = [], []
    for tissue in plan:  # the plan is in random order: no tissue is favoured
        if len(generated) < n_generated and ready[tissue] > 0:
            ready[tissue] -= 1
            generated.append(tissue)
        else:
            real.append(tissue)
    return generated, real


def mixed_request(n_generated: int, wanted: list[int], rng: np.random.Generator, verifier,
                  pooled: bool = True) -> list[int]:
    """The tissues a mixed quiz asks ``verifier`` for: ``n_generated`` drawn at random from ``wanted``; from a
    :class:`~pathsynth.pool.VerifiedPool` (``pooled``: an unseeded quiz) only tissues it has stock of, so none is
    generated on the spot (fewer when the whole stock runs short: real tiles make up the rest)."""
    from .pool import VerifiedPool

    if not n_generated:
        return []
    if not (pooled and isinstance(verifier, VerifiedPool)):
        return [wanted[i] for i in rng.integers(len(wanted), size=n_generated)]
    ready, requested = verifier.stock(), []
    for _ in range(n_generated):
        available = [tissue for tissue in wanted if ready[tissue] > 0]
        if not available:
            break
        tissue = available[int(rng.integers(len(available)))]
        ready[tissue] -= 1
        requested.append(tissue)
    return requested


def _generated_instead_of_real(verifier, count: int, tissues: list[int], wanted: list[int], rng: np.random.Generator,
                               reproducible: bool, difficulty: str, progress, rounds: int = 2) -> list[Question]:
    """Up to ``count`` generated questions made now (``tissues`` first, then tissues drawn from ``wanted``), for a
    quiz with no real tiles to fill its gaps; what is still not verified after ``rounds`` draws is left out."""
    tissues = [*tissues, *(int(t) for t in rng.choice(wanted, size=count))][:count]
    questions: list[Question] = []
    for _ in range(rounds):
        if not tissues:
            break
        seed = int(rng.integers(MAX_SEED + 1)) if reproducible else None
        made, tissues = _generated(verifier, tissues, seed, difficulty, progress, take=False)
        questions.extend(made)
    return questions


def _generated(verifier, requested: list[int], seed: int | None, difficulty: str,
               progress, take: bool = True) -> tuple[list[Question], list[int]]:
    """(questions of the verified generated tiles that suit ``difficulty``, the tissues of the others). ``take``:
    an unseeded request to a pool takes stocked images only; else it generates what it lacks."""
    from .pool import VerifiedPool

    prefer = POOL_PREFERENCE[difficulty]
    if seed is None and take and isinstance(verifier, VerifiedPool):  # stocked images only: None where a tissue ran out
        results = verifier.take(requested, prefer)
    else:
        extra = {"prefer": prefer} if prefer and isinstance(verifier, VerifiedPool) else {}
        results = verifier.generate(requested, seed=seed, progress=progress, **extra)
    questions, missing = [], []
    for tissue, result in zip(requested, results):
        if result is not None and result.verified and fits(difficulty, float(result.confidence),
                                                           getattr(result, "realism", None)):
            questions.append(Question(
                image=to_rgb_uint8(result.image), answer=int(result.tissue), source="generated",
                true_label=None, seed=int(result.seed), probabilities=[float(p) for p in result.probabilities],
                heatmap=getattr(result, "heatmap", None)))
        else:
            missing.append(int(tissue))
    return questions, missing


def _explain_all(questions: list[Question], explainer) -> None:
    if explainer is not None:
        for question in questions:
            heatmap(question, explainer)


def heatmap(question: Question, explainer) -> np.ndarray | None:
    """The question's heatmap for its answer, computed with ``explainer`` the first time and kept on it (``None``
    while an explainer that only looks heatmaps up has none for it)."""
    if question.heatmap is None:
        found = explainer(question.image, question.answer)
        question.heatmap = None if found is None else np.asarray(found, dtype=np.float32)
    return question.heatmap


def _pick_real(count: int, classifier, images: np.ndarray, labels: np.ndarray, wanted: list[int],
               rng: np.random.Generator, probabilities: np.ndarray | None = None, domain=None) -> list[Question]:
    """``count`` distinct real tiles whose classifier label is in ``wanted``, spread over those tissues.

    Without precomputed ``probabilities`` only a random, label-stratified subset of about 3 x ``count`` tiles
    is classified (the whole pool only if that subset is too small): a quiz should not classify 800 tiles.
    """
    pool = np.flatnonzero(np.isin(labels, wanted))
    if len(pool) == 0:
        pool = np.arange(len(labels))
    if probabilities is not None:
        subsets = [pool]
    else:
        per_label = max(4, -(-3 * count // len(wanted)))
        subset = np.concatenate([rng.permutation(pool[labels[pool] == t])[:per_label] for t in wanted])
        subsets = [np.sort(subset), pool] if len(subset) < len(pool) else [pool]
    for candidates in subsets:
        probs = (np.asarray(probabilities, np.float64)[candidates] if probabilities is not None
                 else classifier.predict_proba(images[candidates]))
        predicted = probs.argmax(1)
        usable = np.isin(predicted, wanted)
        if usable.sum() >= count:
            break
    else:
        raise _too_few(int(usable.sum()), wanted, domain)
    agrees = usable & (predicted == labels[candidates])
    chosen: list[int] = []
    for group in (np.flatnonzero(agrees), np.flatnonzero(usable & ~agrees)):
        by_tissue = {t: list(rng.permutation(group[predicted[group] == t])) for t in wanted}
        while len(chosen) < count and any(by_tissue.values()):
            for tissue in rng.permutation(wanted):  # round-robin: a balanced mix of tissues
                if by_tissue[int(tissue)] and len(chosen) < count:
                    chosen.append(int(by_tissue[int(tissue)].pop()))
    return _real_questions(images, labels, candidates, probs, chosen)


def _real_questions(images, labels, candidates, probs, chosen) -> list[Question]:
    """Questions of the real tiles ``candidates[j]`` for ``j`` in ``chosen`` (answer key: the classifier's label)."""
    return [Question(image=to_rgb_uint8(images[candidates[j]]), answer=int(probs[j].argmax()), source="real",
                     true_label=int(labels[candidates[j]]), seed=None,
                     probabilities=[float(p) for p in probs[j]], real_index=int(candidates[j])) for j in chosen]


def _too_few(usable: int, wanted: list[int], domain=None) -> ValueError:
    catalogue = get_domain(domain)
    names = ", ".join(catalogue.classes[t].display_name for t in wanted)
    return ValueError(f"only {usable} real images are classified as {names}; ask for fewer questions or more "
                      f"{catalogue.class_noun}s")


def _pick_real_for(plan: list[int], classifier, images: np.ndarray, labels: np.ndarray, wanted: list[int],
                   rng: np.random.Generator, probabilities: np.ndarray | None, difficulty: str,
                   domain=None) -> list[Question]:
    """Distinct real tiles, one per tissue in ``plan`` (answer key: the classifier's label), each the best for
    ``difficulty`` (``learning.difficulty.rank_real``); a tissue short of tiles is made up with other ``wanted``
    ones. Every candidate is classified when ``probabilities`` are not given."""
    candidates = np.flatnonzero(np.isin(labels, wanted))
    if len(candidates) == 0:
        candidates = np.arange(len(labels))
    probs = (np.asarray(probabilities, np.float64)[candidates] if probabilities is not None
             else classifier.predict_proba(images[candidates]))
    predicted = probs.argmax(1)
    confidence, agrees = probs.max(1), predicted == labels[candidates]
    taken = np.zeros(len(candidates), bool)

    def best(mask: np.ndarray, count: int) -> list[int]:
        found = np.flatnonzero(mask & ~taken)
        picked = found[rank_real(confidence[found], agrees[found], difficulty, rng)][:count]
        taken[picked] = True
        return [int(j) for j in picked]

    chosen: list[int] = []
    for tissue in sorted(set(plan)):
        chosen += best(predicted == tissue, plan.count(tissue))
    chosen += best(np.isin(predicted, wanted), len(plan) - len(chosen))
    if len(chosen) < len(plan):
        raise _too_few(int(np.isin(predicted, wanted).sum()), wanted, domain)
    return _real_questions(images, labels, candidates, probs, chosen)


def quiz_from_images(images: Sequence[np.ndarray], answers: Sequence[int | str], *,
                     sources: Sequence[str] | None = None, true_labels: Sequence[int | None] | None = None,
                     seeds: Sequence[int | None] | None = None, probabilities: Sequence[Sequence[float]] | None = None,
                     shuffle: bool = False, seed: int | None = None, title: str = "", explainer=None,
                     captions: Sequence[str] | None = None,
                     item_ids: Sequence[int | None] | None = None, domain=None) -> QuizSession:
    """A quiz from given tiles, e.g. an instructor's gallery (``answers`` = the items' tissues, ``captions`` = their
    captions, ``item_ids`` = their ids, kept as each question's provenance); ``explainer``: as in
    :func:`build_quiz`."""
    images, answers = list(images), list(answers)
    if not images:
        raise ValueError("a quiz needs at least one image")
    if len(images) > MAX_QUESTIONS:
        raise ValueError(f"a quiz has at most {MAX_QUESTIONS} questions, got {len(images)}")
    count = len(images)
    for name, values in (("answers", answers), ("sources", sources), ("true_labels", true_labels),
                         ("seeds", seeds), ("probabilities", probabilities), ("captions", captions),
                         ("item_ids", item_ids)):
        if values is not None and len(values) != count:
            raise ValueError(f"{name} has {len(values)} entries for {count} images")
    sources = list(sources) if sources is not None else ["generated"] * count
    if any(s not in SOURCES for s in sources):
        raise ValueError(f"source must be one of {SOURCES}")
    questions = [Question(image=to_rgb_uint8(images[i]), answer=check_choice(answers[i], domain), source=sources[i],
                          true_label=None if true_labels is None or true_labels[i] is None else int(true_labels[i]),
                          seed=None if seeds is None or seeds[i] is None else int(seeds[i]),
                          probabilities=[] if probabilities is None else [float(p) for p in probabilities[i]],
                          caption="" if captions is None else str(captions[i] or ""),
                          item_id=None if item_ids is None or item_ids[i] is None else int(item_ids[i]))
                 for i in range(count)]
    if shuffle:
        order = np.random.default_rng(seed).permutation(count)
        questions = [questions[i] for i in order]
    _explain_all(questions, explainer)
    return QuizSession(questions, [None] * count, title=title, domain=get_domain(domain).flag)


# ------------------------------------------------------------------------------------------ playing

def answer(session: QuizSession, choice, question: int | None = None, now: float | None = None) -> Feedback:
    """Record ``choice`` for ``question`` (default: the current one) and explain the right answer.

    ``choice`` is a tissue index, label, abbreviation or display name. Bad input (unknown tissue, a question
    out of range or already answered, a finished quiz) raises ``ValueError`` and leaves ``session`` as it was.
    An answer after an exam's time limit (``now``: the session's clock by default) raises :class:`TimeUp` and
    closes the quiz.
    """
    if session.time_limit is not None:
        now = session.clock() if now is None else now
    if close_if_time_is_up(session, now):
        raise TimeUp("Time is up: this exam's time limit has passed, so the answer was not counted; "
                     "questions left unanswered count as missed.")
    if session.finished:
        raise ValueError("this quiz is finished; start a new one or retry the missed questions")
    if question is None:
        index = session.current
    else:
        if isinstance(question, bool) or not isinstance(question, (int, np.integer)):
            raise ValueError(f"question must be a number, got {question!r}")
        index = int(question)
        if not 0 <= index < session.total:
            raise ValueError(f"question {index + 1} does not exist; this quiz has {session.total} questions")
        if session.answers[index] is not None:
            raise ValueError(f"question {index + 1} has already been answered")
    chosen = check_choice(choice, session.domain)
    item = session.questions[index]
    session.answers[index] = chosen  # the only mutation, after every check passed
    if item.shown_at is not None and now is None:
        now = session.clock()
    seconds = None if item.shown_at is None else max(0.0, now - item.shown_at)
    return Feedback(question=index, correct=chosen == item.answer, chosen=chosen, answer=item.answer,
                    description=_teaching(item.answer, item, session.domain),
                    explanation=explain(item, chosen, session.domain),
                    finished=session.finished, seconds=seconds)


def mark_shown(session: QuizSession, now: float | None = None) -> None:
    """Start the clock on the current question (the first time it is shown; showing it again keeps the time)."""
    if not session.finished and session.questions[session.current].shown_at is None:
        session.questions[session.current].shown_at = session.clock() if now is None else now


# ------------------------------------------------------------------------------------------ exams

def check_minutes(value) -> float | None:
    """An exam's time limit in minutes: None (or blank, or 0) for none, else a number up to :data:`MAX_MINUTES`;
    ``ValueError`` worded for the UI otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        minutes = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        minutes = float("nan")
    if minutes == 0:
        return None
    if not 0 < minutes <= MAX_MINUTES:  # also rejects NaN
        raise ValueError(f"Time limit must be a number of minutes from 0 (none) to {MAX_MINUTES}, "
                         f"got {str(value)[:40]!r}.")
    return minutes


def start_exam(session: QuizSession, minutes=None, now: float | None = None) -> QuizSession:
    """Make ``session`` an exam (feedback at the end) with an optional time limit in ``minutes``, timed from
    ``now`` (the session's clock by default): the start time is kept in the session, where answers check it."""
    limit = check_minutes(minutes)
    session.exam = True
    session.time_limit = None if limit is None else 60.0 * limit
    session.started_at = session.clock() if now is None else now
    return session


def remaining(session: QuizSession, now: float | None = None) -> float | None:
    """Seconds left before the exam's time limit (0 when it has passed); None without a limit."""
    if session.time_limit is None or session.started_at is None:
        return None
    now = session.clock() if now is None else now
    return max(0.0, session.started_at + session.time_limit - now)


def close_if_time_is_up(session: QuizSession, now: float | None = None) -> bool:
    """Close the quiz when its time limit has passed with questions unanswered; returns whether it is closed."""
    if not session.closed and remaining(session, now) == 0.0 and any(a is None for a in session.answers):
        session.closed = True
    return session.closed


def tile_scale(item: Question) -> float:
    """µm per pixel of a question's tile: a whole PathMNIST tile (uploads are converted to the classifier's
    scale), so it follows from the width: 4 µm at 28 px, where the feedback keeps to what the tile shows."""
    return microns_per_pixel(item.image.shape[1])


def _teaching(answer: int, item: Question, domain=None) -> str:
    """The right class's teaching text for the shown image: a tile's at its scale; another domain's at its
    shipped size (its images are not rescaled)."""
    catalogue = get_domain(domain)
    if catalogue.flag == DEFAULT_DOMAIN:
        return teaching_text(answer, tile_scale(item))
    return catalogue.teaching_text(answer)


def explain(item: Question, chosen: int, domain=None) -> str:
    """Plain-text feedback for one answered question: only what its image can show at its scale."""
    catalogue = get_domain(domain)
    right, noun = catalogue.classes[item.answer], catalogue.image_noun
    if chosen == item.answer:
        text = f"Correct: this is {right.display_name}. {_teaching(item.answer, item, catalogue)}"
    else:
        text = f"Not quite: you chose {catalogue.classes[chosen].display_name}, but this is {right.display_name}. "
        text += (contrast(item.answer, chosen, tile_scale(item)) if catalogue.flag == DEFAULT_DOMAIN
                 else domain_contrast(catalogue, item.answer, chosen))
    if item.probabilities:
        text += f" The classifier is {item.probabilities[item.answer]:.0%} sure of {right.display_name}."
    if item.source == "generated":
        text += f" This {noun} is synthetic; the classifier verified it."
    elif item.true_label is not None and item.true_label != item.answer:
        text += (f" Note: the dataset labels this real {noun} {catalogue.classes[item.true_label].display_name}; "
                 f"the quiz follows the classifier.")
    return text


def domain_contrast(domain, answer: int, chosen: int) -> str:
    """:func:`contrast` for a domain other than histology (its images at their shipped size)."""
    pair = domain.confusable_pair(answer, chosen)
    if pair is not None:
        return pair.text
    return (f"Look for: {domain.teaching_text(answer)} ({domain.classes[chosen].display_name} would show: "
            f"{domain.teaching_text(chosen)})")


def contrast(answer: int, chosen: int, um_per_pixel: float | None = None) -> str:
    """How to tell the right tissue from the one chosen in a tile at ``um_per_pixel`` (None: 28 px): the
    catalogue's pairwise text when the two are a listed confusable pair, else both tissues' teaching texts."""
    pair = confusable_pair(answer, chosen)
    if pair is not None:
        return pair_text(pair, um_per_pixel)
    wrong = TISSUES[chosen]
    return (f"Look for: {teaching_text(answer, um_per_pixel)} ({wrong.display_name} would show: "
            f"{teaching_text(chosen, um_per_pixel)})")


def summary(session: QuizSession) -> Summary:
    """Score, per-tissue and per-source (real, generated, uploaded) results and the missed questions; in a quiz
    closed by its time limit the unanswered questions count as missed (asked, not right), otherwise they are only
    listed as unanswered."""
    per_tissue: dict[int, tuple[int, int]] = {}
    per_source: dict[str, tuple[int, int]] = {}  # real and generated tiles apart: generated ones can be easier
    missed, unanswered = [], []
    for index, (item, chosen) in enumerate(zip(session.questions, session.answers)):
        if chosen is None:
            unanswered.append(index)
            if not session.closed:
                continue
        correct, asked = per_tissue.get(item.answer, (0, 0))
        per_tissue[item.answer] = (correct + (chosen == item.answer), asked + 1)
        correct, asked = per_source.get(item.source, (0, 0))
        per_source[item.source] = (correct + (chosen == item.answer), asked + 1)
        if chosen != item.answer:
            missed.append(index)
    return Summary(score=session.score, total=session.total, answered=session.total - len(unanswered),
                   per_tissue=dict(sorted(per_tissue.items())), missed=missed, unanswered=unanswered,
                   per_source={s: per_source[s] for s in SOURCES if s in per_source})


def retry_missed(session: QuizSession) -> QuizSession:
    """A new session with the wrongly answered questions, in their original order (the old one is untouched).
    Refused during an exam: which answers were wrong is its result, given only at the end."""
    if session.exam and not session.finished:
        raise ValueError("Retrying the missed questions opens when the exam is over: answer every question first "
                         "(or let its time run out); your results come at the end.")
    missed = summary(session).missed
    if not missed:
        raise ValueError("no missed questions to retry")
    questions = [dataclasses.replace(session.questions[i], image=session.questions[i].image.copy(),
                                     probabilities=list(session.questions[i].probabilities), shown_at=None)
                 for i in missed]
    title = f"{session.title} (retry)" if session.title else "Retry"
    return QuizSession(questions, [None] * len(questions), title=title, mode="retry", clock=session.clock,
                       owner=session.owner, domain=session.domain)


def quiz_from_gallery(gallery, shuffle: bool = True, seed: int | None = None, explainer=None) -> QuizSession:
    """A quiz of a stored gallery's images (at most :data:`MAX_QUESTIONS`; answers: the items' tissues).

    Seeds beyond :data:`~pathsynth.generators.base.MAX_SEED` (stored by other tools) are dropped, and the
    classifier's probabilities are kept only when every item has all of them.
    """
    items = gallery.items[:MAX_QUESTIONS]
    if not items:
        raise ValueError("This gallery has no images yet.")
    probabilities = [item.meta.get("probabilities") or [] for item in items]
    domain = getattr(gallery, "domain", DEFAULT_DOMAIN)
    session = quiz_from_images([item.image for item in items], [item.tissue for item in items],
                            sources=[item.source if item.source in SOURCES else "generated" for item in items],
                            seeds=[item.seed if item.seed is None or item.seed <= MAX_SEED else None for item in items],
                            probabilities=probabilities if all(len(p) == get_domain(domain).num_classes
                                                               for p in probabilities) else None,
                            shuffle=shuffle, seed=seed, title=gallery.name, explainer=explainer,
                            captions=[instructor_caption(item) for item in items],
                            item_ids=[getattr(item, "id", None) for item in items], domain=domain)
    session.mode = "gallery"
    return session
