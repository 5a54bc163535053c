"""The Quiz tab: identify tiles (verified generated and real), graded by the classifier that verified them."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .. import quiz as Q
from .. import ui_helpers as ui
from ..images import DISPLAY_SIZE, upscale
from ..tissues import DISPLAY_NAMES
from .common import MODEL_EVENTS, Refusal, bind, checked_inputs, progress_callback, user_errors
from .generate import overlay

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
def start(services, n, generated_share, progress=gr.Progress()):
    """Start a new quiz: ``n`` tiles, about ``generated_share`` of them verified generated images."""
    count = ui.parse_int(n, field="Number of questions", minimum=1, maximum=MAX_QUIZ_QUESTIONS, default=10)
    share = ui.parse_fraction(generated_share, field="Share of generated images", default=0.5)
    progress(0.0, desc="building the quiz")
    session = Q.build_quiz(count, classifier=services.classifier, verifier=services.verifier if share > 0 else None,
                           real_images=services.real_images, real_labels=services.real_labels, generated_share=share,
                           real_probabilities=services.real_probabilities, progress=progress_callback(progress))
    return question_view(session, f"Started a quiz of {session.total} question{'s' if session.total != 1 else ''}.")


def _require(session):
    if session is None:
        raise Refusal("Start a quiz first.")
    return session


@user_errors(outputs=9, status=5)
def answer(services, session, choice):
    """Answer the current question with a tissue (display name); the answer key is the ResNet-18's label."""
    session = _require(session)
    if choice is None or (isinstance(choice, str) and not choice.strip()):
        raise Refusal("Pick a tissue first.")
    feedback = Q.answer(session, choice)  # ValueError leaves the session unchanged
    item = session.questions[feedback.question]
    verdict = "✅ **Correct!**" if feedback.correct else "❌ **Not quite.**"
    caption = caption_of(item)
    note = f"\n\n**Instructor's note:** {ui.escape_md(caption)}" if caption else ""
    text = (f"{verdict} The answer is **{DISPLAY_NAMES[feedback.answer]}**.{note}\n\n"
            f"{ui.escape_md(feedback.explanation)}")
    next_label = "See results" if feedback.finished else "Next question"
    return (session, upscale(item.image), gr.update(interactive=False), gr.update(interactive=False),
            gr.update(visible=True, value=next_label), text, overlay(services, item.image, feedback.answer),
            _score_line(session), _status(session, feedback))


@user_errors(outputs=VIEW_OUTPUTS, status=STATUS)
def next_question(session):
    """Show the next unanswered question, or the summary when the quiz is finished."""
    return question_view(_require(session))


@user_errors(outputs=VIEW_OUTPUTS, status=STATUS)
def retry(session):
    """A new quiz made of the questions answered wrongly."""
    return question_view(Q.retry_missed(_require(session)))


def build(services) -> QuizView:
    """The tab's components and events; returns the view other tabs start quizzes in."""
    state = gr.State(None)  # this browser session's QuizSession
    with gr.Row():
        n = gr.Slider(1, MAX_QUIZ_QUESTIONS, value=10, step=1, label="Questions")
        share = gr.Slider(0, 1, value=0.5, step=0.1, label="Share of generated images")
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
    settings = [n, share]
    start_button.click(checked_inputs(bind(start, services), settings, {n: "a number", share: "a number"}), settings,
                       view, api_name="quiz_start", preprocess=False, **MODEL_EVENTS)
    submit.click(bind(answer, services), [state, choice],
                 [state, image, choice, submit, next_button, feedback, cam, score, status], api_name="quiz_answer")
    next_button.click(next_question, state, view, api_name="quiz_next")
    retry_button.click(retry, state, view, api_name="quiz_retry")
    return QuizView(view)
