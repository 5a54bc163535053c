"""The Assignments tab: learners take an instructor's assignment by its code; instructors create assignments and
see the class's results (who took it, scores, accuracy per tissue, confusions, most-missed images, CSV).

The learner is who the Quiz tab saves answers for (the login on Spaces, else the typed name) and sees only their
own answers (shown with their result). The instructor's create form and class results show only after an
instructor signs in, and hide again on sign-out or a wrong password. That is for clarity, not security: every
instructor handler re-checks the credentials on the server (``require_instructor``), exactly as the galleries' write
actions do (the account name is the last input, after Gradio's own arguments). An assignment from a gallery needs
the gallery to be visible to the instructor (a private one: its owner's); the form lists exactly those (by id, so
two of one name never get mixed up) and "Create" checks again. Learners with the code can take it whatever the
gallery's visibility, since its questions are a copy; they may also type the code in the Quiz tab, which opens it
here.
"""

from __future__ import annotations

import functools
import io
import time
from dataclasses import dataclass, field

import gradio as gr
import numpy as np

from .. import assignments as A
from .. import quiz as Q
from .. import ui_helpers as ui
from ..images import DISPLAY_SIZE, SCALE_BAR_STRIP, upscale
from ..gallery import same_person
from ..learning import accuracy_per_tissue, confusion
from ..learning.attempts import AttemptStore
from ..learning.progress import Learner
from ..tissues import DISPLAY_NAMES
from .common import (SIGNED_OUT_LINE, Refusal, SignIn, bind, checked_inputs, logger, pool_served_events,
                     progress_callback, user_errors, verified_images, warning_line)
from .galleries import download_path, instructor_config, require_instructor, sign_in_view, viewer
from .progress import learner_for, on_spaces
from .generate import tile_size
from .quiz import (REVIEW_CSS, REVIEW_INTRO, Look, QuizView, _view_controls, look_from, missed_review,
                   question_image, question_on_screen, source_line)

MAX_PER_TISSUE = 10
MAX_GENERATED = 30  # generated questions per assignment: generation is the slow part
VIEW_OUTPUTS = 12  # see ``_learner_section``: state, header, image, choice, submit, next, feedback, summary, table,
# the view controls, the review of the misses, message
MESSAGE = VIEW_OUTPUTS - 1
RESULT_HEADERS = ["Question", "Right answer", "Your answer", "Correct", "Late"]
# the most-missed images and the learner's review laid out as the quiz review's: captions below, never cut off
MISSED_CSS = (REVIEW_CSS.replace("#quiz-misses", "#assignment-missed")
              + REVIEW_CSS.replace("#quiz-misses", "#assignment-review"))


@dataclass
class Attempt:
    """One learner taking one assignment in this browser session (held in ``gr.State``, never sent out)."""

    assignment: A.Assignment
    learner: Learner
    session: Q.QuizSession
    database: object  # the app's one database (``services.store.database``), for this learner's own results
    services: object = None  # the app's services: the review's real examples and the tiles' scale
    look: Look = field(default_factory=Look)  # how the question is shown (the view controls)


# ------------------------------------------------------------------------------------------------ learners

def _learner(services, name, profile) -> Learner:
    if on_spaces(services) and profile is None:
        raise Refusal("Sign in with Hugging Face to take an assignment: your instructor sees your answers under "
                      "your login.")
    if not on_spaces(services) and (name is None or (isinstance(name, str) and not name.strip())):
        raise Refusal("Type your name to take an assignment: your instructor sees your answers under it.")
    return learner_for(services, name, profile)


def _due_note(assignment: A.Assignment) -> str:
    if assignment.due_at is None:
        return ""
    late = assignment.is_late(A.utc_now())
    return f" Due {A.format_due(assignment.due_at)}" + (": answers now are marked late." if late else ".")


def question_view(attempt: Attempt, feedback: str = "", message: str = "") -> tuple:
    """Outputs showing the attempt's current question (or the learner's own results when it is finished)."""
    session = attempt.session
    if session.finished:
        return results_view(attempt, message)
    index = session.current
    Q.mark_shown(session)  # time taken runs from here to the answer
    mode = "exam: your results appear at the end" if attempt.assignment.mode == "exam" else "practice"
    header = (f"### {ui.escape_md(attempt.assignment.title)}: question {index + 1} of {session.total}\n"
              f"_{mode}._{ui.escape_md(_due_note(attempt.assignment))}")
    image = question_image(attempt.look, session.questions[index], attempt.services)  # scale bar, zoom: the quiz's
    return (attempt, header, gr.update(value=image, visible=True),
            gr.update(value=None, interactive=True, visible=True),
            gr.update(interactive=True, visible=True), gr.update(visible=False), feedback, "",
            gr.update(value=None, visible=False),  # the learner's answers and review show with the results
            gr.update(visible=True), gr.update(value=None, visible=False), message)


def results_view(attempt: Attempt, message: str = "") -> tuple:
    """The learner's own results: score, per question the right answer beside theirs, and the quiz's review of the
    misses (each missed tile above real examples of the right tissue and of the one chosen, at one scale)."""
    assignment, session = attempt.assignment, attempt.session
    mine = A.learner_answers(attempt.database, assignment, attempt.learner)
    for position, answer in mine.items():  # the stored answers are the ones graded
        session.answers[position] = answer.chosen
    rows = [[q.position + 1, DISPLAY_NAMES[q.tissue],
             DISPLAY_NAMES[mine[q.position].chosen] if q.position in mine else "",
             "yes" if q.position in mine and mine[q.position].correct else "no",
             "yes" if q.position in mine and mine[q.position].late else "no"] for q in assignment.questions]
    correct = sum(a.correct for a in mine.values())
    late = sum(a.late for a in mine.values())
    misses, review = missed_review(attempt.services, session, attempt.look)
    text = (f"## {ui.escape_md(assignment.title)}: {correct} / {session.total} "
            f"({correct / session.total:.0%})\n\nYour answers are with your instructor."
            + (f" {late} of them came after the due date." if late else "")
            + f"\n\n{source_line(Q.summary(session))}"
            + (f"\n\nYou missed {len(misses)} question(s); {REVIEW_INTRO}.\n{review}" if misses else ""))
    return (attempt, "", gr.update(value=None, visible=False),  # no question left: no empty picture or choices
            gr.update(value=None, interactive=False, visible=False), gr.update(visible=False),
            gr.update(visible=False), "", text, gr.update(value=rows, visible=True), gr.update(visible=False),
            gr.update(value=misses or None, visible=bool(misses)), message)


@user_errors(outputs=VIEW_OUTPUTS, status=MESSAGE)
def assignment_open(services, code, learner_name=None, profile: gr.OAuthProfile | None = None):
    """Open an assignment by its code and resume where this learner left off (answers are saved under the login
    on Spaces, else the typed name)."""
    return opened_view(services, code, learner_name, profile)


QUIZ_SHORTCUT_OUTPUTS = VIEW_OUTPUTS + 4  # the assignment's view, its code and name boxes, the tabs, the Quiz's line


@user_errors(outputs=QUIZ_SHORTCUT_OUTPUTS, status=QUIZ_SHORTCUT_OUTPUTS - 1)
def assignment_open_from_quiz(services, code, learner_name=None, profile: gr.OAuthProfile | None = None):
    """The Quiz tab's "Have an assignment code?": opens it exactly as the Assignments tab does (same code rules,
    same learner) and shows it there, its code (as stored) and the name filled in; a refusal stays beside the Quiz
    tab's box."""
    view = opened_view(services, code, learner_name, profile)
    assignment = view[0].assignment
    return (*view, assignment.code, learner_name, gr.Tabs(selected="assignments"),
            f"Opened {ui.escape_md(assignment.title)} in the Assignments tab.")


def opened_view(services, code, learner_name=None, profile=None) -> tuple:
    """The view of the assignment with this code for this learner, resumed where they left off."""
    learner = _learner(services, learner_name, profile)
    database = services.store.database
    assignment = A.open_assignment(database, code)
    session = A.learner_quiz(assignment, A.learner_answers(database, assignment, learner))
    attempt = Attempt(assignment, learner, session, database, services)
    _keep_open(services, learner, assignment.code)
    answered = sum(a is not None for a in session.answers)
    resumed = f" You had answered {answered}; carrying on." if answered and not session.finished else ""
    return question_view(attempt, message=f"Opened {ui.escape_md(assignment.title)} "
                                          f"({session.total} questions).{resumed}")


def _keep_open(services, learner: Learner, code: str) -> None:
    """Remember the assignment this learner has open, so it reopens by itself after a restart (its answers are
    stored as they are given); a database hiccup is logged and the assignment goes on."""
    try:
        AttemptStore(services.store.database).keep_assignment(learner, code)
    except Exception:  # noqa: BLE001 - the log keeps the reason
        logger.exception("could not remember an open assignment")


RESUME_OUTPUTS = VIEW_OUTPUTS + 2  # the assignment's view, its code box and name box


@user_errors(outputs=RESUME_OUTPUTS, status=MESSAGE)
def assignment_resume(services, learner_name=None, profile: gr.OAuthProfile | None = None):
    """On page load (after a restart, a reload, or on another replica): the assignment this learner had open and
    not finished, at their first unanswered question. Nothing changes otherwise."""
    nothing = tuple(gr.skip() for _ in range(RESUME_OUTPUTS))
    try:
        learner = _learner(services, learner_name, profile)
    except (Refusal, ValueError):  # nobody identified (or a name no longer accepted): nothing to reopen
        return nothing
    code = AttemptStore(services.store.database).assignment_code(learner)
    if code is None:
        return nothing
    try:
        view = opened_view(services, code, learner_name, profile)
    except A.AssignmentNotFoundError:  # deleted since
        return nothing
    if view[0].session.finished:
        return nothing
    return (*view, view[0].assignment.code, learner_name)


def wire_resume(services, learner: dict, page_loaded, name_box) -> None:
    """After ``page_loaded`` (the event that restores the learner's name, in ``name_box``): the assignment they had
    open (see :func:`assignment_resume`); API clients call it as ``/assignment_resume`` with the name."""
    page_loaded.then(bind(assignment_resume, services), name_box, [*learner["view"], learner["code"], learner["name"]],
                     api_name="assignment_resume", show_progress="hidden").then(**learner["restyled"])


def _require(attempt) -> Attempt:
    if attempt is None:
        raise Refusal("Open an assignment with its code first.")
    return attempt


@user_errors(outputs=VIEW_OUTPUTS, status=MESSAGE)
def assignment_answer(attempt, choice):
    """Answer the current question. Practice: the right answer and why, at once; exam: saved, and the next
    question follows (results at the end)."""
    attempt = _require(attempt)
    if choice is None or (isinstance(choice, str) and not choice.strip()):
        raise Refusal("Pick a tissue first.")
    session = attempt.session
    if session.finished:
        raise Refusal("You have answered every question of this assignment.")
    chosen = Q._check_choice(choice)  # bad input is refused before anything is stored
    index = session.current
    try:
        late = A.record_answer(attempt.database, attempt.assignment, attempt.learner, index, chosen,
                               seconds=_seconds(session.questions[index]))
    except A.AlreadyAnsweredError as error:  # answered in another tab: carry on from what is stored
        mine = A.learner_answers(attempt.database, attempt.assignment, attempt.learner)
        attempt.session = A.learner_quiz(attempt.assignment, mine)
        return question_view(attempt, message=ui.escape_md(str(error)))
    feedback = Q.answer(session, chosen)  # stored first: a refused store leaves the question open
    saved = " (after the due date: marked late)" if late else ""
    if attempt.assignment.mode == "exam":
        return question_view(attempt, message=f"Answer to question {index + 1} saved{saved}.")
    item = session.questions[index]
    verdict = "✅ **Correct!**" if feedback.correct else "❌ **Not quite.**"
    note = f"\n\n**Instructor's note:** {ui.escape_md(item.caption)}" if item.caption else ""
    text = (f"{verdict} The answer is **{DISPLAY_NAMES[feedback.answer]}**.{note}\n\n"
            f"{ui.escape_md(feedback.explanation)}")
    next_label = "See my results" if feedback.finished else "Next question"
    return (attempt, gr.skip(), gr.skip(), gr.update(interactive=False), gr.update(interactive=False),
            gr.update(visible=True, value=next_label), text, *[gr.skip()] * 4, f"Saved{saved}.")


def assignment_restyle(attempt, zoom="1×", interpolation="pixel-exact", scale_bar=True):
    """The question on screen shown again with the view controls' settings, which the attempt keeps for the next
    questions (also after an assignment opens: the controls may have been set before). The status line is left
    alone unless the settings are refused: it runs right after "Opened ..." and must not blank it."""
    try:
        look = look_from(zoom, interpolation, scale_bar)
    except ValueError as error:
        return gr.skip(), gr.skip(), f"⚠️ {ui.escape_md(str(error))}"
    if attempt is None:
        return gr.skip(), gr.skip(), gr.skip()
    attempt.look = look
    index = question_on_screen(attempt.session)
    if index is None or attempt.session.finished:
        return attempt, gr.skip(), gr.skip()
    return attempt, question_image(look, attempt.session.questions[index], attempt.services), gr.skip()


def _seconds(question) -> float | None:
    return None if question.shown_at is None else max(0.0, time.monotonic() - question.shown_at)


@user_errors(outputs=VIEW_OUTPUTS, status=MESSAGE)
def assignment_next(attempt):
    """The next unanswered question, or this learner's results when every question is answered."""
    return question_view(_require(attempt))


# ------------------------------------------------------------------------------------------------ instructors

def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _questions_source(services, gallery, tissues, per_tissue, seed, progress, instructor: str) -> dict:
    """Where the questions come from: a gallery ``instructor`` may see (by id, or by a name only one such gallery
    has), else tissues x N verified images."""
    if not _blank(gallery):
        return {"gallery": services.store.get_gallery(ui.parse_gallery_key(gallery), viewer=instructor)}
    wanted = ui.parse_tissues(tissues)
    count = ui.parse_int(per_tissue, field="Images per tissue", minimum=1, maximum=MAX_PER_TISSUE, default=2)
    if len(wanted) * count > MAX_GENERATED:
        raise ValueError(f"At most {MAX_GENERATED} generated questions ({len(wanted)} tissues × {count} = "
                         f"{len(wanted) * count}); choose fewer tissues or fewer images per tissue.")
    seed_value = ui.parse_seed(seed)  # a bad seed is refused before anything is taken from the pool
    progress(0.0, desc="generating")
    results = verified_images(services, [t for t in wanted for _ in range(count)], seed_value,
                              progress_callback(progress))
    return {"results": results}


@user_errors(outputs=2, status=0)
def assignment_create(services, password, title, mode, due, gallery, tissues, per_tissue, seed,
                      profile: gr.OAuthProfile | None = None, request: gr.Request = None, progress=gr.Progress(),
                      account=None):
    """Create an assignment from a gallery (its id from the form's list; API clients may send a name only one
    gallery open to the instructor has) or from tissues × N verified images (instructors only); answers with its
    share code."""
    instructor = require_instructor(services, password, profile, request, account)
    options = {"mode": A.clean_mode(mode or "practice"), "due": A.parse_due(due), "created_by": instructor}
    if not _blank(title):
        A.clean_title(title)  # a bad title is refused before the slow generation, not after it
    elif _blank(gallery):
        raise Refusal("Give the assignment a title (a gallery's assignment may take the gallery's name).")
    source = _questions_source(services, gallery, tissues, per_tissue, seed, progress, instructor)
    database = services.store.database
    if "gallery" in source:
        assignment = A.create_from_gallery(database, source["gallery"], title, **options)
    else:
        assignment = A.create_from_verified(database, source["results"], title, **options)
    dropped = "" if "gallery" in source else (
        f" ({len(source['results']) - len(assignment.questions)} unverified image(s) left out)"
        if len(source["results"]) > len(assignment.questions) else "")
    return (f"✅ Created **{ui.escape_md(assignment.title)}** ({assignment.mode}, {len(assignment.questions)} "
            f"questions{dropped}). Share code: **{assignment.code}**", _record(assignment))


NO_GALLERY = ("None: new verified images of the tissues ticked", "")  # the form's default: generate


def gallery_choices(summaries, instructor: str | None) -> list[tuple[str, int | str]]:
    """The create form's "From gallery" entries (label, gallery id), "none" first: each gallery says whether it is
    shared or private and whose it is, so two galleries of one name (the instructor's private one and someone's
    shared one) read differently and the id picks exactly one."""
    choices = [NO_GALLERY]
    for g in summaries:
        whose = "yours" if same_person(instructor, g.created_by) else f"by {g.created_by or 'an instructor'}"
        choices.append((f"{g.name} ({g.visibility}, {whose}; {g.n_items} image{'s' if g.n_items != 1 else ''})",
                        g.id))
    return choices


def assignment_galleries(services, password, current=None, profile: gr.OAuthProfile | None = None,
                         request: gr.Request = None, account=None):
    """The "From gallery" list for the signed-in instructor: their own galleries and the shared ones (asked afresh
    on sign-in and whenever the tab opens, so a gallery saved meanwhile is there); only "none" for anyone else.
    The current choice stays while it is still listed. Which galleries an assignment may use is checked again on
    "Create" (``assignment_create``)."""
    instructor = viewer(services, password, profile, request, account)
    summaries = services.store.list_galleries(instructor) if instructor else []
    choices = gallery_choices(summaries, instructor)
    listed = not isinstance(current, bool) and any(current == value for _, value in choices)
    return gr.update(choices=choices, value=current if listed else NO_GALLERY[1])


def _record(assignment: A.Assignment) -> dict:
    return {"code": assignment.code, "id": assignment.id, "title": assignment.title, "mode": assignment.mode,
            "due_at": assignment.due_at, "questions": len(assignment.questions)}


@user_errors(outputs=2, status=1)
def assignment_list(services, password, profile: gr.OAuthProfile | None = None, request: gr.Request = None,
                    account=None):
    """Every assignment with its code (instructors only: the codes open them)."""
    require_instructor(services, password, profile, request, account)
    rows = [[a.code, a.title, a.mode, A.format_due(a.due_at), a.created_by, a.created_at[:16].replace("T", " ")]
            for a in A.list_assignments(services.store.database)]
    return rows or None, "" if rows else "No assignments yet."


def late_count(late: int) -> str:
    """The Late column: "no", or how many answers came after the due date (a bare 0 read as a number)."""
    return f"yes ({late})" if late else "no"


DASHBOARD_OUTPUTS = 6  # summary, learners, tissues, confusion image, most-missed images, message


@user_errors(outputs=DASHBOARD_OUTPUTS, status=DASHBOARD_OUTPUTS - 1, clear=(0, 1, 2, 3, 4))
def assignment_dashboard(services, password, code, profile: gr.OAuthProfile | None = None,
                         request: gr.Request = None, account=None):
    """The class's results for one assignment (instructors only): who took it and their scores, accuracy per
    tissue, the class's confusion matrix and the most-missed images."""
    require_instructor(services, password, profile, request, account)
    database = services.store.database
    assignment = A.open_assignment(database, code)
    answers = A.results(database, assignment)
    scores = A.learner_scores(assignment, answers)
    learners = [[s["learner"], s["key"], s["correct"], s["answered"], s["total"],
                 f"{s['correct'] / s['total']:.0%}", late_count(s["late"])] for s in scores]
    tissues = [[DISPLAY_NAMES[t], c, n, f"{c / n:.0%}"] for t, (c, n) in accuracy_per_tissue(answers).items()]
    missed = [(upscale(assignment.questions[p].image),
               f"Q{p + 1}: {DISPLAY_NAMES[assignment.questions[p].tissue]}, missed by {m} of {n}")
              for p, m, n in A.most_missed(assignment, answers)]
    correct = sum(a.correct for a in answers)
    due = f" · due {A.format_due(assignment.due_at)}" if assignment.due_at else ""
    text = (f"### {ui.escape_md(assignment.title)} ({assignment.code}, {assignment.mode}{due})\n"
            f"{len(scores)} learner(s) · {len(answers)} answer(s)"
            + (f" · class accuracy {correct / len(answers):.0%}" if answers else " · nobody has answered yet"))
    image = _png_image(A.confusion_png(confusion(answers))) if answers else None
    return text, learners or None, tissues or None, image, missed or None, ""


def _png_image(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


@user_errors(outputs=2, status=1, clear=(0,))
def assignment_export(services, password, code, profile: gr.OAuthProfile | None = None, request: gr.Request = None,
                      account=None):
    """The assignment's results as CSV, one row per learner × question (instructors only)."""
    require_instructor(services, password, profile, request, account)
    database = services.store.database
    assignment = A.open_assignment(database, code, with_images=False)
    answers = A.results(database, assignment)
    path = download_path(f"{assignment.title}-{assignment.code}", ".csv", A.results_csv(assignment, answers))
    learners = len({a.learner_key for a in answers})
    return path, f"⬇️ Results of {ui.escape_md(assignment.title)}: {learners} learner(s)."


# ------------------------------------------------------------------------------------------------- sign-in

SIGN_IN_PURPOSE = "to create assignments and see class results"


@user_errors(outputs=3, status=0)
def assignment_sign_in(services, password, profile: gr.OAuthProfile | None = None, request: gr.Request = None,
                       account=None):
    """Show the create form and class results for right instructor credentials; hide them otherwise (a wrong
    password also hides what an earlier sign-in showed). Outputs: the sign-in line, the tools, "Sign out"."""
    try:
        line, tools = sign_in_view(services, password, profile, request, account, SIGN_IN_PURPOSE)
    except PermissionError as error:
        return warning_line(str(error)), gr.update(visible=False), gr.update(visible=False)
    return line, tools, gr.update(visible=tools.get("visible", False))


def assignment_sign_out(n_shown: int):
    """Hide the instructor tools, forget the typed password and empty what they showed (the class's results stay
    off a shared screen); the server keeps no session to end."""
    return (SIGNED_OUT_LINE, gr.update(visible=False), gr.update(visible=False), "",
            *([None] * n_shown))


# ------------------------------------------------------------------------------------------------- layout

def build(services, demo: gr.Blocks | None = None, tab: gr.Tab | None = None, quiz_view: QuizView | None = None,
          tabs: gr.Tabs | None = None) -> dict:
    """The tab's components and events: taking an assignment for everyone; the instructor's tools behind a sign-in.
    ``demo``: the app, to sign a listed Hugging Face login in on page load on Spaces; ``tab``: this tab, whose
    opening refreshes the create form's gallery list; ``quiz_view`` and ``tabs``: the Quiz tab's "Have an
    assignment code?" box opens assignments here (and switches ``tabs`` to this one). Returns the learner's part
    (see ``_learner_section``) and, under ``"sign_in"``, the instructor's sign-in (the app shares it with Galleries)."""
    gr.Markdown("Open an assignment with the code your instructor gave you. Every learner gets the same questions; "
                "your answers go to your instructor.")
    learner = _learner_section(services)
    with gr.Accordion("Instructors: create assignments and see class results", open=False):
        learner["sign_in"] = _instructor_section(services, demo, tab)  # shared with Galleries by the app
    if quiz_view is not None and quiz_view.assignment_box and tabs is not None:
        _wire_quiz_shortcut(services, quiz_view, learner, tabs)
    return learner


def _wire_quiz_shortcut(services, quiz_view: QuizView, learner: dict, tabs: gr.Tabs) -> None:
    """The Quiz tab's code box and button open the assignment in this tab's view."""
    code, button, message = quiz_view.assignment_box
    handler = bind(assignment_open_from_quiz, services)
    outputs = [*learner["view"], learner["code"], learner["name"], tabs, message]
    for event in (button.click, code.submit):
        event(handler, [code, quiz_view.learner], outputs, api_visibility="private").then(**learner["restyled"])


def _instructor_section(services, demo, tab) -> SignIn:
    config = instructor_config(services)
    if not config.enabled:
        gr.Markdown(f"🔒 {config.disabled_message}")
    if config.on_spaces:
        gr.LoginButton()
    with gr.Row(visible=config.enabled):
        account = gr.Textbox(label="Instructor account", max_length=40, visible=config.accounts, scale=2,
                             placeholder="blank: the shared password" if config.password else "")
        password = gr.Textbox(label="Instructor password", type="password", scale=3,
                              visible=bool(config.password) or config.accounts)
        sign_in = gr.Button("Sign in", scale=0, elem_id="assignment-sign-in")
        sign_out = gr.Button("Sign out", scale=0, visible=False, elem_id="assignment-sign-out")
    signed_in = gr.Markdown(elem_id="assignment-sign-in-status")
    with gr.Column(visible=False, elem_id="assignment-instructor-tools") as tools:
        gallery, shown = _create_section(services, password, account)
        shown += _results_section(services, password, account)
    outputs = [signed_in, tools, sign_out]
    handler = bind(assignment_sign_in, services)
    # the gallery list follows who is signed in: filled on sign-in, emptied on sign-out, fresh when the tab opens
    galleries = {"fn": bind(assignment_galleries, services), "inputs": [password, gallery, account],
                 "outputs": gallery, "api_visibility": "private", "show_progress": "hidden"}
    sign_in.click(handler, [password, account], outputs, api_visibility="private").then(**galleries)
    for box in (password, account):
        box.submit(handler, [password, account], outputs, api_visibility="private").then(**galleries)
    sign_out.click(lambda: assignment_sign_out(len(shown)), None, [*outputs, password, *shown],
                   api_visibility="private", queue=False).then(**galleries)
    if tab is not None:
        tab.select(**galleries)
    if config.on_spaces and demo is not None:  # a listed Hugging Face login is signed in as the page opens
        demo.load(handler, [password, account], outputs, api_visibility="private").then(**galleries)
    return SignIn(line=signed_in, password=password, account=account, outputs=[*outputs, *shown],
                  sign_in=functools.partial(_signed_in_elsewhere, services, len(shown)),
                  sign_out=functools.partial(_signed_out_elsewhere, len(shown)), after=galleries)


def _signed_in_elsewhere(services, n_shown: int, password, account, request) -> tuple:
    """This tab after the Galleries tab signed the instructor in: the tools (what they showed is left as is)."""
    return (*assignment_sign_in(services, password, None, request, account), *[gr.skip()] * n_shown)


def _signed_out_elsewhere(n_shown: int) -> tuple:
    """This tab after the Galleries tab signed out: as its own "Sign out" (the password box is the caller's)."""
    line, tools, sign_out, _password, *shown = assignment_sign_out(n_shown)
    return (line, tools, sign_out, *shown)


def _learner_section(services) -> dict:
    """Taking an assignment; returns its view (what ``question_view`` fills) and its code and name boxes."""
    state = gr.State(None)  # this browser session's Attempt
    with gr.Row():
        code = gr.Textbox(label="Assignment code", max_length=20, scale=2, elem_id="assignment-code")
        if on_spaces(services):
            gr.LoginButton()
        name = gr.Textbox(label="Your name", max_length=40, visible=not on_spaces(services), scale=2,
                          elem_id="assignment-learner")
        open_button = gr.Button("Open assignment", variant="primary", scale=0)
    message = gr.Markdown(elem_id="assignment-status")
    header = gr.Markdown()
    with gr.Row(elem_id="assignment-question-row"):  # on a phone: the view controls after the answers (PHONE_CSS)
        with gr.Column():
            image = gr.Image(label="Which tissue is this?", show_label=False, format="png", interactive=False,
                             height=DISPLAY_SIZE + SCALE_BAR_STRIP, buttons=["fullscreen"], elem_classes="pixelated",
                             elem_id="assignment-question", visible=False)
            with gr.Column(visible=False, elem_id="assignment-look-box") as look_box:  # shown with a question
                look = _view_controls(tile_size(services), prefix="assignment")
        with gr.Column():
            choice = gr.Radio(list(DISPLAY_NAMES), label="Your answer", interactive=False, visible=False,
                              elem_id="assignment-choice")  # shown with a question
            submit = gr.Button("Submit answer", variant="primary", interactive=False, visible=False)
            next_button = gr.Button("Next question", visible=False)
            feedback = gr.Markdown(elem_id="assignment-feedback")
    summary = gr.Markdown(elem_id="assignment-summary")
    table = gr.Dataframe(headers=RESULT_HEADERS, interactive=False, label="My answers", elem_id="assignment-answers",
                         visible=False)  # shown with the learner's results
    review = gr.Gallery(label="Your misses above real examples (click to enlarge)", columns=3, height="auto",
                        fit_columns=False, format="png", interactive=False, elem_classes="pixelated",
                        object_fit="contain", elem_id="assignment-review", visible=False)
    view = [state, header, image, choice, submit, next_button, feedback, summary, table, look_box, review, message]
    assert len(view) == VIEW_OUTPUTS
    # the controls' settings follow the learner into a newly opened assignment
    restyled = dict(fn=assignment_restyle, inputs=[state, *look], outputs=[state, image, message],
                    api_visibility="private", show_progress="hidden")
    open_button.click(bind(assignment_open, services), [code, name], view, api_name="assignment_open").then(**restyled)
    code.submit(bind(assignment_open, services), [code, name], view, api_visibility="private").then(**restyled)
    submit.click(assignment_answer, [state, choice], view, api_name="assignment_answer")
    next_button.click(assignment_next, state, view, api_name="assignment_next")
    for control in look:
        control.change(**restyled)
    return {"view": view, "code": code, "name": name, "restyled": restyled}


def _create_section(services, password, account) -> tuple:
    """The create form; returns its gallery list and what it shows (emptied on sign-out)."""
    gr.Markdown("#### Create an assignment\nFrom a gallery (its images, shuffled once), or from new verified images "
                "of the tissues you tick.")
    with gr.Row():
        title = gr.Textbox(label="Title (blank: the gallery's name)", max_length=100)
        mode = gr.Radio(["practice", "exam"], value="practice", label="Mode",
                        info="practice: feedback after each answer; exam: only at the end")
        due = gr.Textbox(label="Due (optional, UTC)", placeholder="2026-12-24 or 2026-12-24 17:00", max_length=40)
    with gr.Row():
        # filled per instructor (their galleries and the shared ones); custom values: API clients may send an id or
        # a name, which the server looks up among the galleries open to that instructor
        gallery = gr.Dropdown([NO_GALLERY], value=NO_GALLERY[1], label="From gallery", allow_custom_value=True,
                              info="Your galleries and the shared ones; none: generate new images",
                              elem_id="assignment-gallery")
        tissues = gr.CheckboxGroup(list(DISPLAY_NAMES), label="Or generate: tissues (none = all nine)")
    with gr.Row():
        per_tissue = gr.Slider(1, MAX_PER_TISSUE, value=2, step=1, label="Images per tissue")
        seed = gr.Textbox(label="Seed (optional)", placeholder="blank = random", max_length=12)
        create = gr.Button("Create assignment", variant="primary", scale=0)
    message = gr.Markdown(elem_id="assignment-created")
    created = gr.JSON(visible=False)
    inputs = [password, title, mode, due, gallery, tissues, per_tissue, seed]  # the account follows Gradio's args
    # served from the pool when it can: its own queue, never behind generation; model calls wait for model_slots
    create.click(checked_inputs(bind(assignment_create, services), inputs, {per_tissue: "a number"}),
                 [*inputs, account], [message, created], api_name="assignment_create", preprocess=False,
                 **pool_served_events(services))
    return gallery, [message, created]


def _results_section(services, password, account) -> list:
    """The class results: dashboard, CSV and the list of assignments; returns what it shows (emptied on
    sign-out)."""
    gr.Markdown("#### Class results")
    with gr.Row():
        code = gr.Textbox(label="Assignment code", max_length=20, scale=2, elem_id="assignment-results-code")
        show = gr.Button("Show results", variant="primary", scale=0)
        export = gr.Button("Download CSV", scale=0)
        listing = gr.Button("List my assignments", scale=0)
    message = gr.Markdown(elem_id="assignment-dashboard-status")
    summary = gr.Markdown(elem_id="assignment-dashboard")
    learners = gr.Dataframe(headers=["Learner", "Login", "Correct", "Answered", "Questions", "Score", "Late"],
                            interactive=False, label="Who took it",
                            elem_id="assignment-learners")
    with gr.Row():
        tissues = gr.Dataframe(headers=["Tissue", "Correct", "Answered", "Accuracy"], interactive=False,
                               label="Class accuracy per tissue")
        matrix = gr.Image(label="Class confusion matrix", format="png", interactive=False, buttons=["download"],
                          elem_id="assignment-confusion")
    missed = gr.Gallery(label="Most-missed images", columns=6, height="auto", fit_columns=False, object_fit="contain",
                        format="png", interactive=False, elem_classes="pixelated", elem_id="assignment-missed")
    file = gr.File(label="Results CSV", interactive=False, elem_id="assignment-export")
    table = gr.Dataframe(headers=["Code", "Title", "Mode", "Due", "Created by", "Created"], interactive=False,
                         label="Assignments", visible=True)
    show.click(bind(assignment_dashboard, services), [password, code, account],
               [summary, learners, tissues, matrix, missed, message], api_name="assignment_dashboard")
    export.click(bind(assignment_export, services), [password, code, account], [file, message],
                 api_name="assignment_export")
    listing.click(bind(assignment_list, services), [password, account], [table, message], api_name="assignment_list")
    return [message, summary, learners, tissues, matrix, missed, file, table]
