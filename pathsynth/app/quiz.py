"""The Quiz tab: identify tiles (verified generated and real), graded by the classifier that verified them."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .. import quiz as Q
from .. import ui_helpers as ui
from ..images import DISPLAY_SIZE, upscale
from ..learning import practice_tissues, record_from
from ..learning.challenge import Tile
from ..tissues import DISPLAY_NAMES
from .common import MODEL_EVENTS, Refusal, bind, checked_inputs, logger, progress_callback, user_errors
from .challenge import flag_components, save_flag
from .generate import overlay
from .progress import LOCAL_NOTE, SPACES_NOTE, on_spaces, optional_learner, progress_store

MAX_QUIZ_QUESTIONS = 30


@dataclass
class QuizView:
    """The components that show a quiz; ``outputs`` is what every "show the quiz" handler returns to."""

    outputs: list


def _score_line(session) -> str:
    answered = sum(a is not None for a in session.answers)
    position = (f"question {session.current + 1} of {session.total}" if not session.finished
                else f"all {session.total} questions answered")
    return f"### Score: {session.score} / {answered}  \n{position}"


def _status(session, feedback=None) -> dict:
    status = {"quiz_id": session.id, "title": session.title, "score": session.score, "total": session.total,
              "answered": sum(a is not None for a in session.answers), "finished": session.finished,
              "current": session.current}
    if feedback is not None:
        status.update(correct=feedback.correct, chosen=DISPLAY_NAMES[feedback.chosen],
                      answer=DISPLAY_NAMES[feedback.answer], question=feedback.question)
    return status


VIEW_OUTPUTS = 17  # see ``build``: state ... retry button, question panel, status line
STATUS = VIEW_OUTPUTS - 1


def caption_of(question) -> str:
    """The instructor's caption of a gallery question ("" for generated and real tiles)."""
    return question.caption


def question_view(session, status: str = "") -> tuple:
    """Outputs showing the session's current question (or its summary when it is finished)."""
    if session.finished:
        return summary_view(session, status)
    index = session.current
    Q.mark_shown(session)  # time taken runs from here to the answer
    title = f" — {ui.escape_md(session.title)}" if session.title else ""
    header = f"### Question {index + 1} of {session.total}{title}\nWhich tissue is this?"
    return (session, header, upscale(session.questions[index].image), gr.update(value=None, interactive=True),
            gr.update(interactive=True, visible=True), gr.update(visible=False), "", None, _score_line(session),
            _status(session), gr.update(visible=False), "", None, None, gr.update(visible=False),
            gr.update(visible=True), status)


def review_line(session, index: int) -> str:
    """One missed question, the right answer first (it must never be cut off)."""
    question = session.questions[index]
    caption = caption_of(question)
    note = f" — {caption}" if caption else ""
    return (f"Q{index + 1}: it is {DISPLAY_NAMES[question.answer]} "
            f"(you said {DISPLAY_NAMES[session.answers[index]]}){note}")


def summary_view(session, status: str = "") -> tuple:
    result = Q.summary(session)
    table = [[DISPLAY_NAMES[t], correct, asked, f"{correct / asked:.0%}"]
             for t, (correct, asked) in result.per_tissue.items()]
    misses = [(upscale(session.questions[i].image), review_line(session, i)) for i in result.missed]
    review = "".join(f"\n- {ui.escape_md(review_line(session, i))}" for i in result.missed)
    text = (f"## Quiz finished: {result.score} / {result.total} ({result.percent:.0f}%)\n\n"
            + ("Perfect score — well done!" if not result.missed else
               f"You missed {len(result.missed)} question(s); review them below or retry them.\n{review}"))
    # the question panel is hidden: an empty question above the summary only confuses
    return (session, "", None, gr.update(value=None, interactive=False),
            gr.update(interactive=False, visible=False), gr.update(visible=False), "", None,
            _score_line(session), _status(session), gr.update(visible=True), text,
            table or None, misses or None, gr.update(visible=bool(result.missed)), gr.update(visible=False), status)


@user_errors(outputs=VIEW_OUTPUTS, status=STATUS)
def start(services, n, generated_share, learner_name=None, weak=False, profile: gr.OAuthProfile | None = None,
          progress=gr.Progress()):
    """Start a new quiz: ``n`` tiles, about ``generated_share`` of them verified generated images; with ``weak``,
    only the tissues the learner's spaced-repetition schedule says are due (and the ones they confuse them with)."""
    tissues, note = weak_tissues(services, learner_name, weak, profile)
    count = ui.parse_int(n, field="Number of questions", minimum=1, maximum=MAX_QUIZ_QUESTIONS, default=10)
    share = ui.parse_fraction(generated_share, field="Share of generated images", default=0.5)
    progress(0.0, desc="building the quiz")
    # ready images from the pool, real tiles already explained when enough are: answering then computes nothing
    real = services.real_sample(minimum=2 * count, tissues=tissues)  # images, labels, probabilities (, ids)
    session = Q.build_quiz(count, classifier=services.classifier, verifier=services.images if share > 0 else None,
                           generated_share=share, progress=progress_callback(progress),
                           explainer=services.explainer, tissues=tissues, **real)
    session.mode = "weak" if tissues else "practice"
    for question in session.questions:  # pooled heatmaps: the answer's overlay finds them in the cache
        services.explanations.put(question.image, question.answer, question.heatmap)
    return question_view(session, f"Started a quiz of {session.total} question{'s' if session.total != 1 else ''}."
                                  + note)


def weak_tissues(services, learner_name, weak, profile) -> tuple[list[int] | None, str]:
    """(the tissues to practise, or None for all of them; a note for the status line). The learner is checked
    here too, so a bad name is reported when the quiz starts rather than at the first answer."""
    learner = optional_learner(services, learner_name, profile)
    if not weak:
        return None, "" if learner else " Answers are not saved: " + (
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
def answer(services, session, choice, learner_name=None, profile: gr.OAuthProfile | None = None):
    """Answer the current question with a tissue (display name); the answer key is the ResNet-18's label. The
    answer is saved to the learner's progress (the login on Spaces, else the typed name; nobody: not saved)."""
    session = _require(session)
    if choice is None or (isinstance(choice, str) and not choice.strip()):
        raise Refusal("Pick a tissue first.")
    learner = optional_learner(services, learner_name, profile)  # a bad name is refused before anything changes
    feedback = Q.answer(session, choice)  # ValueError leaves the session unchanged
    saved = _save(services, learner, session, feedback)
    item = session.questions[feedback.question]
    verdict = "✅ **Correct!**" if feedback.correct else "❌ **Not quite.**"
    caption = caption_of(item)
    note = f"\n\n**Instructor's note:** {ui.escape_md(caption)}" if caption else ""
    text = (f"{verdict} The answer is **{DISPLAY_NAMES[feedback.answer]}**.{note}\n\n"
            f"{ui.escape_md(feedback.explanation)}{saved}")
    next_label = "See results" if feedback.finished else "Next question"
    return (session, upscale(item.image), gr.update(interactive=False), gr.update(interactive=False),
            gr.update(visible=True, value=next_label), text, overlay(services, item.image, feedback.answer),
            _score_line(session), _status(session, feedback))


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


@user_errors(outputs=VIEW_OUTPUTS, status=STATUS)
def next_question(session):
    """Show the next unanswered question, or the summary when the quiz is finished."""
    return question_view(_require(session))


@user_errors(outputs=VIEW_OUTPUTS, status=STATUS)
def retry(session):
    """A new quiz made of the questions answered wrongly."""
    return question_view(Q.retry_missed(_require(session)))


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


def build(services) -> QuizView:
    """The tab's components and events; returns the view other tabs start quizzes in."""
    state = gr.State(None)  # this browser session's QuizSession
    with gr.Row():
        n = gr.Slider(1, MAX_QUIZ_QUESTIONS, value=10, step=1, label="Questions")
        share = gr.Slider(0, 1, value=0.5, step=0.1, label="Share of generated images")
        with gr.Column():
            if on_spaces(services):
                gr.LoginButton()
            learner = gr.Textbox(label="Your name (saves your progress)", visible=not on_spaces(services),
                                 info=SPACES_NOTE if on_spaces(services) else LOCAL_NOTE, elem_id="quiz-learner")
            weak = gr.Checkbox(label="Practice my weak tissues", elem_id="quiz-weak")
        with gr.Column(scale=0, min_width=220):
            start_button = gr.Button("Start a new quiz", variant="primary")
            message = gr.Markdown(elem_id="quiz-status")
    score = gr.Markdown("Start a quiz to test yourself on the nine tissues.", elem_id="quiz-score")
    with gr.Row(visible=False) as question_box:
        with gr.Column(scale=3):
            header = gr.Markdown()
            image = gr.Image(label="Which tissue is this?", format="png", interactive=False, height=DISPLAY_SIZE,
                             buttons=[], elem_classes="pixelated", elem_id="quiz-question")
        with gr.Column(scale=3):
            choice = gr.Radio(list(DISPLAY_NAMES), label="Your answer", interactive=False, elem_id="quiz-choice")
            submit = gr.Button("Submit answer", variant="primary", interactive=False)
            next_button = gr.Button("Next question", visible=False)
            feedback = gr.Markdown(elem_id="quiz-feedback")
            flag_box, flag_note, flag_button, flag_message = flag_components("quiz")
        with gr.Column(scale=3):
            cam = gr.Image(label="Classifier's occlusion map for the answer (rough)", format="png", interactive=False,
                           height=DISPLAY_SIZE, buttons=[], elem_classes="pixelated")
    with gr.Column(visible=False) as summary_box:
        summary = gr.Markdown(elem_id="quiz-summary")
        table = gr.Dataframe(headers=["Tissue", "Correct", "Asked", "Score"], interactive=False, label="Per tissue")
        misses = gr.Gallery(label="Review the ones you missed", columns=4, height="auto", format="png",
                            interactive=False, elem_classes="pixelated", elem_id="quiz-misses")
        retry_button = gr.Button("Retry the ones I missed", variant="primary")
    status = gr.JSON(visible=False)

    view = [state, header, image, choice, submit, next_button, feedback, cam, score, status, summary_box, summary,
            table, misses, retry_button, question_box, message]
    settings = [n, share, learner, weak]
    flag_sync = dict(fn=_flag_row, inputs=state, outputs=[flag_box, flag_note, flag_message], api_visibility="private")
    start_button.click(checked_inputs(bind(start, services), settings, {n: "a number", share: "a number"}), settings,
                       view, api_name="quiz_start", preprocess=False, **MODEL_EVENTS).then(**flag_sync)
    submit.click(bind(answer, services), [state, choice, learner],
                 [state, image, choice, submit, next_button, feedback, cam, score, status],
                 api_name="quiz_answer").then(**flag_sync)
    next_button.click(next_question, state, view, api_name="quiz_next").then(**flag_sync)
    retry_button.click(retry, state, view, api_name="quiz_retry").then(**flag_sync)
    flag_button.click(bind(flag_question, services), [state, flag_note, learner], [flag_message, flag_note],
                      api_name="quiz_flag")
    return QuizView(view)
