"""The Quiz tab: identify tiles (verified generated and real), graded by the classifier that verified them.

Practice quizzes explain each answer at once (after a miss: what tells the right tissue from the one chosen, beside
a real example of each at the question's scale); exams explain at the end, optionally within a time limit that the
server enforces from the start time stored in the session (a ``gr.Timer`` only shows the time left and opens the
results when it runs out). Difficulty picks prototypical or borderline tiles; the image can be zoomed, enlarged
pixel-exact or smooth, and carries a scale bar. Nothing shown before an answer names the tissue. A learner with an
instructor's assignment code can open it from here too ("Have an assignment code?"; it runs in the Assignments tab).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np

from .. import quiz as Q
from .. import ui_helpers as ui
from ..assignments import MODES  # practice or exam, as in assignments
from ..explain import MAP_LEGEND_HEIGHT
from ..images import (DISPLAY_SIZE, INTERPOLATIONS, PATHMNIST_TILE_UM, SCALE_BAR_STRIP, display_image,
                      microns_per_pixel, side_by_side, stacked)
from ..learning import DIFFICULTIES, pair_examples, practice_tissues, record_from
from ..learning.attempts import SAVE_EVERY_S, AttemptStore
from ..learning.challenge import Tile
from ..tissues import ABBREVIATIONS, DISPLAY_NAMES
from .common import (Refusal, bind, check_interpolation, checked_inputs, logger, model_slots, pool_served_events,
                     progress_callback, user_errors)
from .challenge import flag_components, save_flag
from .generate import overlay, tile_size
from .progress import LOCAL_NOTE, SPACES_NOTE, on_spaces, optional_learner, progress_store

MAX_QUIZ_QUESTIONS = 30
ZOOMS = {"1×": 1, "2×": 2, "4×": 4}  # the whole tile (112 µm), its centre half, its centre quarter
REVIEW_SIZE = DISPLAY_SIZE // 2  # each panel of a missed question in the review
TICK_SECONDS = 1.0
# The review gallery (#quiz-misses): Gradio lays each caption over the bottom of its picture, in square cells of a
# fixed-height box, and its label over the first picture; here each caption sits below its picture and wraps (the
# right answer must never be cut off), cells take the picture's own height, the box grows instead of scrolling, the
# pictures start below the label, and on phones there is one per row. Only the grid's large thumbnails: the
# enlarged view's thumbnail strip keeps Gradio's layout (its caption wraps too).
REVIEW_CSS = """
#quiz-misses .grid-wrap { max-height: none; min-height: 0; overflow: visible; }
#quiz-misses .grid-container { padding-top: calc(var(--block-label-text-size) * 2 + 16px);
  grid-template-rows: none; grid-auto-rows: auto; align-items: start; }
#quiz-misses .thumbnail-lg { aspect-ratio: auto; height: auto; display: flex; flex-direction: column;
  overflow: visible; }
#quiz-misses .thumbnail-lg > img { width: 100%; height: auto; object-fit: contain; }
#quiz-misses .thumbnail-lg .caption-label { position: static; max-width: none; white-space: normal;
  overflow: visible; text-overflow: clip; border: 0; border-top: 1px solid var(--border-color-primary);
  border-radius: 0; opacity: 1; }
#quiz-misses .preview .caption { white-space: normal; overflow: visible; text-overflow: clip; }
@media (max-width: 600px) { #quiz-misses .grid-container { grid-template-columns: 1fr !important; } }
"""

# An exam shows no occlusion map (question_view hides it): its column goes too, so the question and the answers
# share the width instead of leaving an empty third (whether Gradio drops a hidden component or only hides it).
EXAM_CSS = "#quiz-cam-column:not(:has(#quiz-cam:not(.hidden))) { display: none; }\n"


@dataclass
class QuizView:
    """The components that show a quiz; ``outputs`` is what every "show the quiz" handler returns to."""

    outputs: list
    learner: object = None  # the name box (the browser remembers it)
    after_show: dict = None  # the event that syncs the flag row with the quiz shown (``.then(**after_show)``)
    assignment_box: tuple = ()  # "Have an assignment code?": code box, button, message (wired by the Assignments tab)


@dataclass(frozen=True)
class Look:
    """How tiles are shown: ``zoom`` (1, 2, 4), ``smooth`` enlargement instead of pixel-exact, a scale bar."""

    zoom: int = 1
    smooth: bool = False
    scale_bar: bool = True

    def render(self, tile, size: int = DISPLAY_SIZE, um_per_pixel: float | None = None) -> np.ndarray:
        """``tile`` as shown; its scale bar drawn at ``um_per_pixel`` (default: a whole PathMNIST tile's)."""
        um_per_pixel = um_per_pixel or tile_um_per_pixel(tile)
        return display_image(tile, self.zoom, self.smooth, self.scale_bar, size, um_per_pixel)


def tile_um_per_pixel(tile, source: str = "real", services=None) -> float:
    """The pixel size a tile's scale bar is drawn at. A generated or real tile is a whole PathMNIST tile, 112 µm
    across at any size (4 µm per pixel at 28 px, 1.75 at 64); an upload was converted to the classifier's scale
    and may be larger than its input (``pathsynth.uploads.convert``), so its width says nothing."""
    classifier_size = getattr(getattr(services, "classifier", None), "input_size", None)
    if source == "uploaded" and classifier_size:
        return microns_per_pixel(int(classifier_size))
    return microns_per_pixel(np.asarray(tile).shape[1])


def question_image(look: Look, question, services=None, size: int = DISPLAY_SIZE) -> np.ndarray:
    """A question's tile rendered with ``look`` at its own scale (see :func:`tile_um_per_pixel`)."""
    return look.render(question.image, size, tile_um_per_pixel(question.image, question.source, services))


def look_from(zoom="1×", interpolation="pixel-exact", scale_bar=True) -> Look:
    """The view settings from the tab's controls (API clients may send "2x" or 2); ``ValueError`` otherwise."""
    if isinstance(zoom, bool):
        factor = None
    elif isinstance(zoom, (int, np.integer)):
        factor = int(zoom) if int(zoom) in ZOOMS.values() else None
    else:
        factor = ZOOMS.get(str(zoom).strip().replace("x", "×"))
    if factor is None:
        raise ValueError(f"Zoom must be one of {', '.join(ZOOMS)}, got {str(zoom)[:20]!r}.")
    return Look(factor, check_interpolation(interpolation) == "smooth", bool(scale_bar))


def _score_line(session) -> str:
    """The score so far and where the learner is: the question on screen, as its header numbers it (after an
    answer, the one just answered, not the next one)."""
    answered = sum(a is not None for a in session.answers)
    on_screen = _answered_on_screen(session)
    position = (f"time is up: {answered} of {session.total} answered" if session.closed
                else f"all {session.total} questions answered" if session.finished
                else f"question {on_screen + 1} of {session.total} answered" if on_screen is not None
                else f"question {session.current + 1} of {session.total}")
    if session.exam and not session.finished:
        return f"### Exam: {answered} of {session.total} answered  \n{position}; results at the end"
    return f"### Score: {session.score} / {session.total if session.closed else answered}  \n{position}"


def _status(session, feedback=None) -> dict:
    """The machine-readable state (hidden in the page): an exam's score and answers only once it is over."""
    hidden = session.exam and not session.finished
    status = {"quiz_id": session.id, "title": session.title, "total": session.total,
              "answered": sum(a is not None for a in session.answers), "finished": session.finished,
              "current": session.current, "mode": "exam" if session.exam else "practice",
              "difficulty": session.difficulty, "seconds_left": Q.remaining(session)}
    if not hidden:
        status["score"] = session.score
    if feedback is not None:
        status.update(question=feedback.question, chosen=DISPLAY_NAMES[feedback.chosen])
        if not hidden:
            status.update(correct=feedback.correct, answer=DISPLAY_NAMES[feedback.answer])
    return status


def minutes_and_seconds(seconds: float) -> str:
    """"4:32" for 272.6 seconds (an exam's time left)."""
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def clock_text(session) -> str:
    """"⏱ 4:32 left" for a timed exam, else nothing."""
    left = Q.remaining(session)
    if left is None or session.finished:
        return ""
    return f"⏱ **{minutes_and_seconds(left)}** left"


VIEW_OUTPUTS = 22  # see ``build``: state ... question panel, status line, clock, timer, the pair of real examples
STATUS = 16
HIDDEN_PAIR = (gr.update(visible=False), None, None)


def caption_of(question) -> str:
    """The instructor's caption of a gallery question ("" for generated and real tiles)."""
    return question.caption


def question_view(session, status: str = "", look: Look = Look(), services=None) -> tuple:
    """Outputs showing the session's current question (or its summary when it is finished or its time is up)."""
    Q.close_if_time_is_up(session)
    if session.finished:
        return summary_view(session, status, look, services)
    index = session.current
    Q.mark_shown(session)  # time taken runs from here to the answer
    title = f" — {ui.escape_md(session.title)}" if session.title else ""
    header = f"### Question {index + 1} of {session.total}{title}\nWhich tissue is this?"
    return (session, header, question_image(look, session.questions[index], services),
            gr.update(value=None, interactive=True),
            gr.update(interactive=True, visible=True), gr.update(visible=False), "",
            gr.update(value=None, visible=not session.exam),  # an exam shows no map: no empty panel either
            _score_line(session),
            _status(session), gr.update(visible=False), "", None, None, gr.update(visible=False),
            gr.update(visible=True), status, clock_text(session),
            gr.Timer(active=Q.remaining(session) is not None), *HIDDEN_PAIR)


def review_line(session, index: int) -> str:
    """One missed question, the right answer first (it must never be cut off)."""
    question = session.questions[index]
    caption = caption_of(question)
    note = f" — {caption}" if caption else ""
    chosen = session.answers[index]
    said = "not answered in time" if chosen is None else f"you said {DISPLAY_NAMES[chosen]}"
    return f"Q{index + 1}: it is {DISPLAY_NAMES[question.answer]} ({said}){note}"


def review_text(session, index: int) -> str:
    """A review line and, under it, how to tell the right tissue from the one chosen (Markdown)."""
    question, chosen = session.questions[index], session.answers[index]
    how = Q.contrast(question.answer, chosen) if chosen is not None else Q.TISSUES[question.answer].description
    return f"\n- {ui.escape_md(review_line(session, index))}  \n  _{ui.escape_md(how)}_"


def real_tiles(services, session, index: int) -> tuple:
    """Real example tiles (right tissue, tissue chosen) for an answered question; None where there is none."""
    if getattr(services, "real_images", None) is None:  # no services, or a test's stand-in without real tiles
        return None, None
    question, chosen = session.questions[index], session.answers[index]
    exclude = [question.real_index] if question.source == "real" and question.real_index is not None else []
    right, other = pair_examples(question.answer, question.answer if chosen is None else chosen,
                                 services.real_labels, services.real_probabilities, exclude, rank=index)
    tile = lambda i: None if i is None else services.real_images[i]  # noqa: E731
    return tile(right), (None if chosen is None else tile(other))


def review_panel(services, session, index: int, look: Look) -> np.ndarray:
    """A missed question's tile above a real example of the right tissue and one of the tissue chosen, all at one
    scale (whole tiles, each with its scale bar): about square, so it fills a gallery cell."""
    question, chosen = session.questions[index], session.answers[index]
    right, other = real_tiles(services, session, index)
    examples = [(tile, f"real {ABBREVIATIONS[tissue]}") for tile, tissue in ((right, question.answer), (other, chosen))
                if tile is not None]
    whole = Look(1, look.smooth, True)
    rows = [side_by_side([question_image(whole, question, services, REVIEW_SIZE)], [f"Q{index + 1}"])]
    if examples:
        rows.append(side_by_side([whole.render(tile, REVIEW_SIZE) for tile, _ in examples],
                                 [label for _, label in examples]))
    return stacked(rows)


def missed_review(services, session, look: Look = Look()) -> tuple[list, str]:
    """The review of a finished quiz (or assignment): each missed tile above real examples of the right tissue and
    of the one chosen, at one scale, captioned (gallery items), and how to tell each pair apart (Markdown)."""
    missed = Q.summary(session).missed
    return ([(review_panel(services, session, i, look), review_line(session, i)) for i in missed],
            "".join(review_text(session, i) for i in missed))


REVIEW_INTRO = ("review them below (each with a real example of the right tissue and of your answer, at the same "
                "scale)")


SOURCE_NAMES = {"real": "Real tiles", "generated": "synthetic", "uploaded": "instructor's uploads"}  # in this order


def source_line(result: Q.Summary) -> str:
    """How the learner did on real versus generated tiles ("Real tiles: 3 of 4 right; synthetic: 2 of 4."): the
    generated ones may be easier than real ones, so a score on them alone says less."""
    counts = [(SOURCE_NAMES[source], result.per_source[source]) for source in SOURCE_NAMES
              if source in result.per_source]
    parts = [f"{name}: {correct} of {asked}" + (" right" if k == 0 else "")  # "right" said once
             for k, (name, (correct, asked)) in enumerate(counts)]
    line = "; ".join(parts)
    return line[:1].upper() + line[1:] + ("." if line else "")


def summary_view(session, status: str = "", look: Look = Look(), services=None) -> tuple:
    result = Q.summary(session)
    table = [[DISPLAY_NAMES[t], correct, asked, f"{correct / asked:.0%}"]
             for t, (correct, asked) in result.per_tissue.items()]
    misses, review = missed_review(services, session, look)
    timed_out = (f"⏰ Time ran out: {len(result.unanswered)} unanswered question(s) count as missed.\n\n"
                 if session.closed else "")
    by_source = source_line(result)
    text = (f"## Quiz finished: {result.score} / {result.total} ({result.percent:.0f}%)\n\n"
            + (f"{by_source}\n\n" if by_source else "") + timed_out
            + ("Perfect score — well done!" if not result.missed else
               f"You missed {len(result.missed)} question(s); {REVIEW_INTRO} or retry them.\n{review}"))
    # the question panel is hidden: an empty question above the summary only confuses
    return (session, "", None, gr.update(value=None, interactive=False),
            gr.update(interactive=False, visible=False), gr.update(visible=False), "", None,
            _score_line(session), _status(session), gr.update(visible=True), text,
            table or None, misses or None, gr.update(visible=bool(result.missed)), gr.update(visible=False), status,
            "", gr.Timer(active=False), *HIDDEN_PAIR)


@user_errors(outputs=VIEW_OUTPUTS, status=STATUS)
def start(services, n, generated_share, learner_name=None, weak=False, difficulty="mixed", mode="practice",
          minutes=None, anon=None, zoom="1×", interpolation="pixel-exact", scale_bar=True,
          profile: gr.OAuthProfile | None = None, progress=gr.Progress()):
    """Start a new quiz: ``n`` tiles, about ``generated_share`` of them verified generated images; with ``weak``,
    only the tissues the learner's spaced-repetition schedule says are due (and the ones they confuse them with).
    ``difficulty``: easy, mixed or hard; ``mode``: practice (feedback after each answer) or exam (at the end,
    within ``minutes`` when given). ``profile`` stays after every input: ``checked_inputs`` pairs inputs with
    arguments in order."""
    look = look_from(zoom, interpolation, scale_bar)
    if mode not in MODES:
        raise Refusal(f"Mode must be practice or exam, got {str(mode)[:20]!r}.")
    limit = Q.check_minutes(minutes) if mode == "exam" else None
    tissues, note = weak_tissues(services, learner_name, weak, profile, anon)
    count = ui.parse_int(n, field="Number of questions", minimum=1, maximum=MAX_QUIZ_QUESTIONS, default=10)
    share = ui.parse_fraction(generated_share, field="Share of generated images", default=0.5)
    progress(0.0, desc="building the quiz")
    session = _built_quiz(services, count, share, tissues, difficulty, progress)
    session.mode = "weak" if tissues else "practice"
    if mode == "exam":
        Q.start_exam(session, limit)
    session.owner = optional_learner(services, learner_name, profile, anon)
    keep(services, session)
    kind = f"{'an exam' if session.exam else 'a quiz'} of {session.total} question{'s' if session.total != 1 else ''}"
    timing = f" You have {limit:g} minute{'s' if limit != 1 else ''}." if limit else ""
    return question_view(session, f"Started {kind} ({session.difficulty}).{timing}" + note + _all_generated_note(
        services, count, session.total), look, services)


def _all_generated_note(services, asked: int, made: int) -> str:
    """With no real tiles every tile is generated: say so, how to get real ones, and any question left out."""
    off = getattr(services, "real_tiles_off", "")
    if not off:
        return ""
    short = f" {asked - made} of the {asked} questions could not be verified and were left out." if made < asked else ""
    return f" Every tile is generated.{short} {off}"


def _built_quiz(services, count: int, share: float, tissues, difficulty: str, progress) -> Q.QuizSession:
    """A new quiz whose every question has its heatmap, so answering needs no model call. With a pool, generated
    tiles are taken ready from it (with their heatmaps) and real tiles are those it explained ahead when enough
    are: no model call. Any heatmap still missing (before the pool explained enough real tiles) is made now, at
    most ``MODEL_CONCURRENCY`` at a time (``model_slots``)."""
    real = services.real_sample(minimum=2 * count, tissues=tissues)  # images, labels, probabilities (, ids)
    # the verifier always: a share of 0 asks it for nothing, and with no real tiles build_quiz generates every tile
    session = Q.build_quiz(count, classifier=services.classifier, verifier=services.images,
                           generated_share=share, progress=progress_callback(progress),
                           explainer=services.explanations.get, tissues=tissues, difficulty=difficulty, **real)
    missing = [question for question in session.questions if question.heatmap is None]
    if missing:
        progress(0.9, desc="explaining the classifier's answers")
        with model_slots:
            for question in missing:
                Q.heatmap(question, services.explainer)
    for question in session.questions:  # pooled heatmaps: later lookups (the answer's overlay) find them
        services.explanations.put(question.image, question.answer, question.heatmap)
    return session


def weak_tissues(services, learner_name, weak, profile, anon=None) -> tuple[list[int] | None, str]:
    """(the tissues to practise, or None for all of them; a note for the status line). The learner is checked
    here too, so a bad name is reported when the quiz starts rather than at the first answer."""
    learner = optional_learner(services, learner_name, profile, anon)
    if not weak:
        if learner is not None:
            return None, " Answers are saved for this browser; type your name to keep them under it." \
                if learner.kind == "browser" else ""
        return None, " Answers are not saved: " + (
            "sign in to keep them." if on_spaces(services) else "type your name to keep them.")
    if learner is None:
        raise Refusal("Sign in to practise your weak tissues." if on_spaces(services)
                      else "Type your name to practise your weak tissues.")
    tissues = practice_tissues(progress_store(services).history(learner))
    return tissues, " Practising: " + ", ".join(DISPLAY_NAMES[t] for t in tissues) + "."


def _require(session):
    if session is None:
        raise Refusal("Start a quiz first.")
    return session


@user_errors(outputs=9, status=5)
def answer(services, session, choice, learner_name=None, profile: gr.OAuthProfile | None = None, anon=None,
           zoom="1×", interpolation="pixel-exact", scale_bar=True):
    """Answer the current question with a tissue (display name); the answer key is the ResNet-18's label. The
    answer is saved to the learner's progress (the login on Spaces, else the typed name, else this browser's
    anonymous id; nobody: not saved). In an exam the verdict waits for the end. A page whose server died (or
    another replica, after a failover) has no quiz in its session: the learner's kept one carries on."""
    learner = optional_learner(services, learner_name, profile, anon)  # a bad name is refused before anything changes
    session = _require(session if session is not None else kept_quiz(services, learner))
    look_from(zoom, interpolation, scale_bar)  # bad view settings are refused before the answer counts
    if choice is None or (isinstance(choice, str) and not choice.strip()):
        raise Refusal("Pick a tissue first.")
    try:
        feedback = Q.answer(session, choice)  # ValueError leaves the session unchanged
    except Q.TimeUp as error:
        keep(services, session, learner)
        return (session, gr.skip(), gr.update(interactive=False), gr.update(interactive=False),
                gr.update(visible=True, value="See results"), f"⏰ **{ui.escape_md(str(error))}**", None,
                _score_line(session), _status(session))
    saved = _save(services, learner, session, feedback)
    keep(services, session, learner)
    item = session.questions[feedback.question]
    next_label = "See results" if feedback.finished else "Next question"
    if session.exam:
        text = f"Answer saved: {DISPLAY_NAMES[feedback.chosen]}. Your results come at the end.{saved}"
        return (session, gr.skip(), gr.update(interactive=False), gr.update(interactive=False),
                gr.update(visible=True, value=next_label), text, None, _score_line(session), _status(session, feedback))
    verdict = "✅ **Correct!**" if feedback.correct else "❌ **Not quite.**"
    caption = caption_of(item)
    note = f"\n\n**Instructor's note:** {ui.escape_md(caption)}" if caption else ""
    text = (f"{verdict} The answer is **{DISPLAY_NAMES[feedback.answer]}**.{note}\n\n"
            f"{ui.escape_md(feedback.explanation)}{saved}")
    # the question's image stays as shown (gr.skip): an answer sends only what changed, the map and the verdict
    return (session, gr.skip(), gr.update(interactive=False), gr.update(interactive=False),
            gr.update(visible=True, value=next_label), text, ready_overlay(services, item),
            _score_line(session), _status(session, feedback))


def attempt_store(services) -> AttemptStore:
    """Quizzes in progress live in the app's one database, beside the answers."""
    return AttemptStore(services.store.database)


def keep(services, session, learner=None) -> None:
    """Keep ``session`` in the database for its learner (whoever answers first, when it started without one), so
    a crash, a restart or another replica loses nothing; a database hiccup is logged and the quiz goes on."""
    if services is None or session is None:
        return
    if session.owner is None:
        session.owner = learner
    if session.owner is None:  # nobody identified: nothing to resume it for
        return
    try:
        attempt_store(services).keep_quiz(session.owner, session)
    except Exception:  # noqa: BLE001 - the quiz goes on in this process either way; the log keeps the reason
        logger.exception("could not keep a quiz in progress")


def kept_quiz(services, learner):
    """``learner``'s unfinished quiz as kept in the database, or None (nobody identified, none, or finished)."""
    session = None if learner is None else attempt_store(services).quiz(learner)
    return None if session is None or session.finished else session


@user_errors(outputs=VIEW_OUTPUTS, status=STATUS)
def resume(services, learner_name=None, anon=None, profile: gr.OAuthProfile | None = None):
    """On page load (after a restart, a reload, or on another replica): the learner's unfinished quiz at the
    question they were at, with the answers given so far. Nothing changes when there is none."""
    nothing = tuple(gr.skip() for _ in range(VIEW_OUTPUTS))
    try:
        learner = optional_learner(services, learner_name, profile, anon)
    except (Refusal, ValueError):  # a remembered name no longer accepted: the quiz tab says so when it is used
        return nothing
    session = kept_quiz(services, learner)
    if session is None:
        return nothing
    answered = sum(a is not None for a in session.answers)
    left = Q.remaining(session)
    clock = f" The exam's clock stopped while the server was away: {minutes_and_seconds(left)} left." if left else ""
    return question_view(session, f"Welcome back: your {'exam' if session.exam else 'quiz'} goes on where you "
                                  f"left it ({answered} of {session.total} answered).{clock}", services=services)


def ready_overlay(services, question):
    """The occlusion map of ``question``'s answer when its heatmap is ready (made with the question, or since in
    the explanation cache), else ``None``: an answer never calls a model (``late_overlay`` follows it)."""
    if question.heatmap is None:
        Q.heatmap(question, services.explanations.get)
    if question.heatmap is None:
        return None
    return overlay(services, question.image, question.answer, question.heatmap)


def late_overlay(services, session):
    """After a practice answer whose heatmap was not ready (a gallery quiz's tiles are made without): its occlusion
    map, computed now (at most ``MODEL_CONCURRENCY`` model calls at a time); nothing to change otherwise."""
    index = _answered_on_screen(session)
    if index is None or session.exam or session.questions[index].heatmap is not None:
        return gr.skip()
    question = session.questions[index]
    with model_slots:
        Q.heatmap(question, services.explainer)  # cached: computed once per image, whoever asks first
    explain_soon(services, session)  # the quiz's other tiles: by the pool's filler, before they are answered
    if _answered_on_screen(session) != index:  # the learner moved on meanwhile: no map over another question
        return gr.skip()
    return overlay(services, question.image, question.answer, question.heatmap)


def explain_soon(services, session) -> None:
    """Hand the questions without a heatmap (a gallery quiz's tiles) to the pool's filler, so their answers find
    the occlusion map ready (no model call here)."""
    if services.pool is not None:
        services.pool.explain_soon([(q.image, q.answer) for q in session.questions if q.heatmap is None
                                    and services.explanations.get(q.image, q.answer) is None])


def _save(services, learner, session, feedback) -> str:
    """Store the answer; a note for the feedback when it could not be (the quiz itself goes on either way)."""
    if learner is None:
        return ""
    try:
        progress_store(services).record(learner, record_from(session, feedback))
    except Exception:  # noqa: BLE001 - a database hiccup must not lose the quiz; the log keeps the reason
        logger.exception("could not save an answer")
        return "\n\n_Your progress could not be saved this time._"
    return ""


def pair_view(services, session, zoom="1×", interpolation="pixel-exact", scale_bar=True) -> tuple:
    """After a wrong practice answer: a real example of the right tissue and of the one chosen, rendered like the
    question (same zoom and scale bar); hidden otherwise."""
    index = _answered_on_screen(session)
    if index is None or session.exam or session.answers[index] == session.questions[index].answer:
        return HIDDEN_PAIR
    try:
        look = look_from(zoom, interpolation, scale_bar)
    except ValueError:
        look = Look()
    right, other = real_tiles(services, session, index)
    answer_name, chosen_name = DISPLAY_NAMES[session.questions[index].answer], DISPLAY_NAMES[session.answers[index]]
    image = lambda tile, label: gr.update(value=None if tile is None else look.render(tile), label=label)  # noqa: E731
    return (gr.update(visible=True), image(right, f"real {answer_name} (the right answer)"),
            image(other, f"real {chosen_name} (your answer)"))


@user_errors(outputs=VIEW_OUTPUTS, status=STATUS)
def next_question(session, zoom="1×", interpolation="pixel-exact", scale_bar=True, services=None):
    """Show the next unanswered question, or the summary when the quiz is finished."""
    view = question_view(_require(session), look=look_from(zoom, interpolation, scale_bar), services=services)
    keep(services, session)  # the question on screen and since when
    return view


@user_errors(outputs=VIEW_OUTPUTS, status=STATUS)
def retry(session, zoom="1×", interpolation="pixel-exact", scale_bar=True, services=None):
    """A new quiz made of the questions answered wrongly."""
    again = Q.retry_missed(_require(session))
    view = question_view(again, look=look_from(zoom, interpolation, scale_bar), services=services)
    keep(services, again)
    return view


@user_errors(outputs=VIEW_OUTPUTS, status=STATUS)
def tick(services, session, zoom="1×", interpolation="pixel-exact", scale_bar=True) -> tuple:
    """Every second of a timed exam: the time left; when it runs out, the quiz closes (server-side, from the start
    time kept in the session) and the results replace the question."""
    skipped = [gr.skip()] * VIEW_OUTPUTS
    if session is None or Q.remaining(session) is None or session.finished:
        skipped[18] = gr.Timer(active=False)
        return tuple(skipped)
    if Q.close_if_time_is_up(session):
        keep(services, session)
        try:
            look = look_from(zoom, interpolation, scale_bar)
        except ValueError:
            look = Look()
        return summary_view(session, "⏰ Time is up: the exam is closed.", look, services)
    if session.saved_at is None or session.clock() - session.saved_at >= SAVE_EVERY_S:
        keep(services, session)  # the clock as it stands: a crash now costs the learner no exam time
    skipped[17] = clock_text(session)
    return tuple(skipped)


def restyle(services, session, zoom="1×", interpolation="pixel-exact", scale_bar=True):
    """The question on screen shown again with new view settings (status line: a message for bad ones, else left as
    it is, so a zoom change does not wipe what the learner was told)."""
    try:
        look = look_from(zoom, interpolation, scale_bar)
    except ValueError as error:
        return gr.skip(), f"⚠️ {ui.escape_md(str(error))}"
    index = question_on_screen(session)
    if index is None:
        return gr.skip(), gr.skip()
    return question_image(look, session.questions[index], services), gr.skip()


def question_on_screen(session) -> int | None:
    """The question on screen: the one just answered while its feedback shows, else the current one (None: no
    quiz, or its results show)."""
    index = _answered_on_screen(session)
    return session.current if index is None and session is not None else index


def _answered_on_screen(session) -> int | None:
    """The question on screen when it has been answered (its feedback is showing), else None."""
    if session is None:
        return None
    answered = [i for i, a in enumerate(session.answers) if a is not None]
    # after an answer the next question is not shown yet (no clock started); a refused answer leaves it running
    if answered and (session.finished or session.questions[session.current].shown_at is None):
        return answered[-1]
    return None


@user_errors(outputs=2, status=0)
def flag_question(services, session, note, learner_name=None, profile: gr.OAuthProfile | None = None):
    """Flag the question just answered as wrong or odd, with an optional note (kept as typed)."""
    index = _answered_on_screen(session)
    if index is None:
        raise Refusal("Answer the question first, then flag it.")
    q = session.questions[index]
    tile = Tile(q.source, q.answer, seed=q.seed, real_index=q.real_index, gallery_item_id=q.item_id)
    return save_flag(services, tile, note, learner_name, profile, "quiz"), ""


def _flag_row(session):
    """Show "Flag this image" only beside an answered question (emptied for each new one)."""
    return gr.update(visible=_answered_on_screen(session) is not None), "", ""


def real_tiles_line(services) -> str:
    """The quiz's word on its real tiles when there is one (upsampled tiles show less detail), else nothing."""
    note = getattr(services, "real_tiles_note", "")
    return f"  \n_{ui.escape_md(note)}_" if note else ""


def _settings_row(services):
    """The controls above a quiz: size, mix, learner, difficulty, mode and time limit, the start button."""
    with gr.Row(equal_height=False):
        with gr.Column(min_width=260):
            n = gr.Slider(1, MAX_QUIZ_QUESTIONS, value=10, step=1, label="Questions")
            share = gr.Slider(0, 1, value=0.5, step=0.1, label="Share of generated images")
        with gr.Column(min_width=260):
            if on_spaces(services):
                gr.LoginButton()
            learner = gr.Textbox(label="Your name (saves your progress)", visible=not on_spaces(services),
                                 info=SPACES_NOTE if on_spaces(services) else LOCAL_NOTE, elem_id="quiz-learner")
            weak = gr.Checkbox(label="Practice my weak tissues", elem_id="quiz-weak")
        with gr.Column(min_width=260):
            difficulty = gr.Radio(list(DIFFICULTIES), value="mixed", label="Difficulty", elem_id="quiz-difficulty",
                                  info="easy: textbook tiles; hard: borderline and atypical tiles, look-alike pairs")
            mode = gr.Radio(list(MODES), value="practice", label="Mode", elem_id="quiz-mode",
                            info="practice: feedback after each answer; exam: at the end")
            minutes = gr.Number(None, label="Exam time limit (minutes; blank: none)", minimum=0,
                                maximum=Q.MAX_MINUTES, visible=False, elem_id="quiz-minutes")
        with gr.Column(scale=0, min_width=220):
            start_button = gr.Button("Start a new quiz", variant="primary")
            message = gr.Markdown(elem_id="quiz-status")
            assignment_box = _assignment_box()
    mode.change(lambda chosen: gr.update(visible=chosen == "exam"), mode, minutes, queue=False,
                api_visibility="private")
    return [n, share, learner, weak, difficulty, mode, minutes], start_button, message, assignment_box


def _assignment_box() -> tuple:
    """A learner with an instructor's code opens the assignment from here (the Assignments tab wires it: the
    assignment runs there, under the name typed in this tab)."""
    with gr.Group(elem_id="quiz-assignment"):
        code = gr.Textbox(label="Have an assignment code?", placeholder="e.g. K7P2QX", max_length=20,
                          elem_id="quiz-assignment-code")
        button = gr.Button("Open assignment", size="sm", elem_id="quiz-assignment-open")
    message = gr.Markdown(elem_id="quiz-assignment-status")
    return code, button, message


def _view_controls(size: int, prefix: str = "quiz"):
    """How the question is shown: zoom, pixel-exact or smooth enlargement, scale bar (``size``: the tiles' px;
    ``prefix``: of the controls' element ids, one per tab)."""
    with gr.Group(elem_id=f"{prefix}-look"):
        with gr.Row():  # each in its own column: at phone width they wrap instead of squeezing
            with gr.Column(min_width=190):
                zoom = gr.Radio(list(ZOOMS), value="1×", label="Zoom (centre of the tile)", elem_id=f"{prefix}-zoom")
            with gr.Column(min_width=230):
                interpolation = gr.Radio(list(INTERPOLATIONS), value="pixel-exact", label="Enlarge",
                                         elem_id=f"{prefix}-interpolation")
        scale_bar = gr.Checkbox(True, label=f"Scale bar (PathMNIST: {microns_per_pixel(size):g} µm per pixel, "
                                f"{PATHMNIST_TILE_UM:g} µm per tile)", elem_id=f"{prefix}-scale-bar")
    return [zoom, interpolation, scale_bar]


def _question_panel(size: int, real_note: str = ""):
    """The question, the answer column, the occlusion map, and (after a miss) the real examples below them: one
    panel, hidden as a whole when the results show. ``size``: the tiles' px; ``real_note``: what to know about the
    real tiles (upsampled ones show less detail)."""
    with gr.Column(visible=False) as question_box:
        with gr.Row(equal_height=False, elem_id="quiz-question-row"):  # PHONE_CSS: the view controls below answers
            with gr.Column(scale=3, min_width=300):
                header = gr.Markdown()
                image = gr.Image(label="Which tissue is this?", show_label=False, format="png", interactive=False,
                                 height=DISPLAY_SIZE + SCALE_BAR_STRIP, buttons=["fullscreen"],
                                 elem_classes="pixelated", elem_id="quiz-question")
                look = _view_controls(size)
            with gr.Column(scale=3, min_width=300):
                choice = gr.Radio(list(DISPLAY_NAMES), label="Your answer", interactive=False, elem_id="quiz-choice")
                submit = gr.Button("Submit answer", variant="primary", interactive=False)
                next_button = gr.Button("Next question", visible=False)
                feedback = gr.Markdown(elem_id="quiz-feedback")
                flags = flag_components("quiz")
            with gr.Column(scale=3, min_width=300, elem_id="quiz-cam-column"):
                cam = gr.Image(label="Classifier's occlusion map for the answer (rough)", show_label=False,
                               format="png", interactive=False, height=DISPLAY_SIZE + MAP_LEGEND_HEIGHT, buttons=[],
                               elem_id="quiz-cam")  # smooth scaling: its legend is text
        with gr.Column(visible=False, elem_id="quiz-pair") as pair_box:
            gr.Markdown("**Compare with real tiles** of the right tissue and of your answer, at the question's zoom "
                        f"and scale:{f' _{ui.escape_md(real_note)}_' if real_note else ''}")
            with gr.Row(equal_height=False):
                pair = [gr.Image(label="real example", format="png", interactive=False, min_width=300,
                                 height=DISPLAY_SIZE + SCALE_BAR_STRIP, buttons=[], elem_classes="pixelated",
                                 elem_id=f"quiz-real-{which}") for which in ("right", "chosen")]
    return question_box, header, image, look, choice, submit, next_button, feedback, flags, cam, pair_box, pair


def _summary_panel():
    with gr.Column(visible=False) as summary_box:
        summary = gr.Markdown(elem_id="quiz-summary")
        table = gr.Dataframe(headers=["Tissue", "Correct", "Asked", "Score"], interactive=False, label="Per tissue")
        misses = gr.Gallery(label="Your misses above real examples (click to enlarge)", columns=3, height="auto",
                            fit_columns=False, format="png", interactive=False, elem_classes="pixelated", elem_id="quiz-misses",
                            object_fit="contain")
        retry_button = gr.Button("Retry the ones I missed", variant="primary")
    return summary_box, summary, table, misses, retry_button


def build(services, anon=None) -> QuizView:
    """The tab's components and events; returns the view other tabs start quizzes in. ``anon``: the session's
    anonymous id (``gr.State``, see ``progress.identity_components``); a new one when not given."""
    state = gr.State(None)  # this browser session's QuizSession
    anon = anon if anon is not None else gr.State("")
    settings, start_button, message, assignment_box = _settings_row(services)
    with gr.Row():
        score = gr.Markdown("Start a quiz to test yourself on the nine tissues." + real_tiles_line(services),
                            elem_id="quiz-score")
        clock = gr.Markdown(elem_id="quiz-clock")
    timer = gr.Timer(TICK_SECONDS, active=False)
    (question_box, header, image, look, choice, submit, next_button, feedback, flags, cam, pair_box,
     (pair_right, pair_chosen)) = _question_panel(tile_size(services), getattr(services, "real_tiles_note", ""))
    summary_box, summary, table, misses, retry_button = _summary_panel()
    status = gr.JSON(visible=False)

    view = [state, header, image, choice, submit, next_button, feedback, cam, score, status, summary_box, summary,
            table, misses, retry_button, question_box, message, clock, timer, pair_box, pair_right, pair_chosen]
    assert len(view) == VIEW_OUTPUTS
    flag_sync = _wire(services, view, settings, anon, look, start_button, flags)
    return QuizView(view, learner=settings[2], assignment_box=assignment_box, after_show=flag_sync)


def _wire(services, view, settings, anon, look, start_button, flags) -> dict:
    """The tab's events: start, answer, next, retry, the exam clock, view settings, flags; returns the event that
    syncs the flag row with the quiz shown."""
    (state, _, image, choice, submit, next_button, feedback, cam, score, status, _, _, _, _, retry_button, _, message,
     _, timer, pair_box, pair_right, pair_chosen) = view
    flag_box, flag_note, flag_button, flag_message = flags
    learner = settings[2]
    flag_sync = dict(fn=_flag_row, inputs=state, outputs=[flag_box, flag_note, flag_message], api_visibility="private")
    pair_sync = dict(fn=bind(pair_view, services), inputs=[state, *look], outputs=[pair_box, pair_right, pair_chosen],
                     api_visibility="private")
    inputs = [*settings, anon, *look]
    start_button.click(checked_inputs(bind(start, services), inputs, {settings[0]: "a number", settings[1]: "a number",
                                                                      settings[6]: "a number of minutes"}),
                       inputs, view, api_name="quiz_start", preprocess=False,
                       **pool_served_events(services)).then(**flag_sync)
    # answering and moving on call no model: their own queues (Gradio's default), never behind generation; so has
    # the map made after an answer that had none ready (a gallery quiz's: ``late_overlay``, bounded by model_slots)
    submit.click(bind(answer, services), [state, choice, learner, anon, *look],
                 [state, image, choice, submit, next_button, feedback, cam, score, status],
                 api_name="quiz_answer").then(**flag_sync).then(**pair_sync).then(
        bind(late_overlay, services), state, cam, api_visibility="private", show_progress="hidden")

    def shown_next(session, zoom="1×", interpolation="pixel-exact", scale_bar=True):
        """Show the next unanswered question, or the summary when the quiz is finished."""
        return next_question(session, zoom, interpolation, scale_bar, services=services)

    def shown_retry(session, zoom="1×", interpolation="pixel-exact", scale_bar=True):
        """A new quiz made of the questions answered wrongly."""
        return retry(session, zoom, interpolation, scale_bar, services=services)

    next_button.click(shown_next, [state, *look], view, api_name="quiz_next").then(**flag_sync)
    retry_button.click(shown_retry, [state, *look], view, api_name="quiz_retry").then(**flag_sync)
    timer.tick(bind(tick, services), [state, *look], view, api_visibility="private", show_progress="hidden")
    for control in look:
        control.change(bind(restyle, services), [state, *look], [image, message], api_visibility="private",
                       show_progress="hidden")
        control.change(**pair_sync, show_progress="hidden")
    flag_button.click(bind(flag_question, services), [state, flag_note, learner], [flag_message, flag_note],
                      api_name="quiz_flag")
    return flag_sync


def wire_resume(services, view: QuizView, page_loaded, anon) -> None:
    """After ``page_loaded`` (the event that restores the learner's name and anonymous id): their unfinished quiz
    (see :func:`resume`); API clients call it as ``/quiz_resume`` with the name."""
    page_loaded.then(bind(resume, services), [view.learner, anon], view.outputs, api_name="quiz_resume",
                     show_progress="hidden").then(**view.after_show)
