"""The My progress tab: a learner's own accuracy per tissue, streak, confusions and what is due next.

Who the learner is comes from the session, never from a parameter naming someone: on Spaces the Hugging Face
login (the name box is ignored), locally the name typed here or in the Quiz tab. A typed name has no password,
so locally it is an honour system for practice, and the tab says so.
"""

from __future__ import annotations

import gradio as gr

from .. import ui_helpers as ui
from ..learning import (ProgressStore, accuracy_per_tissue, confusion, due_tissues, hf_learner, local_learner,
                        progress_figure, streak_days)
from ..learning.progress import Learner, confused_pairs
from ..tissues import ABBREVIATIONS, DISPLAY_NAMES, TISSUE_INDICES, confusable_pair
from .common import Refusal, bind, user_errors

LOCAL_NOTE = ("Your answers are saved under the name you type in the Quiz tab or here. There is no password: "
              "anyone who types the same name sees the same progress, so use it for practice only.")
SPACES_NOTE = "Sign in with Hugging Face to save your answers; only you can see your progress."
ACCURACY_HEADERS = ["Tissue", "Correct", "Answered", "Accuracy"]
CONFUSION_HEADERS = ["Right tissue \\ you chose", *ABBREVIATIONS]


def on_spaces(services) -> bool:
    return bool(services.settings.instructors.on_spaces)


def learner_for(services, name, profile) -> Learner:
    """The learner asking: the login on Spaces, else the typed name; ``Refusal``/``ValueError`` when none."""
    if on_spaces(services):
        if profile is None:
            raise Refusal("Sign in with Hugging Face to see your progress.")
        return hf_learner(profile.username)
    if name is None or (isinstance(name, str) and not name.strip()):
        raise Refusal("Type your name to see your progress.")
    return local_learner(name)


def optional_learner(services, name, profile) -> Learner | None:
    """For quizzes: the learner, or None when nobody is identified (the quiz runs, nothing is saved)."""
    if on_spaces(services) and profile is None:
        return None
    if not on_spaces(services) and (name is None or (isinstance(name, str) and not name.strip())):
        return None
    return learner_for(services, name, profile)


def progress_store(services) -> ProgressStore:
    """Answers live in the app's one database, beside the galleries (SQLite file or PostgreSQL)."""
    return ProgressStore(services.store.database)


def _summary(learner: Learner, history) -> str:
    correct = sum(r.correct for r in history)
    streak = streak_days(history)
    lines = [f"### {ui.escape_md(learner.name)}: {correct} / {len(history)} correct ({correct / len(history):.0%})",
             f"Practice streak: **{streak} day{'s' if streak != 1 else ''}** in a row."]
    due = due_tissues(history)
    lines.append("Due for review now: " + (", ".join(DISPLAY_NAMES[t] for t in due) if due else "nothing, well done."))
    unseen = [DISPLAY_NAMES[t] for t in TISSUE_INDICES if t not in accuracy_per_tissue(history)]
    if unseen:
        lines.append("Not practised yet: " + ", ".join(unseen) + ".")
    mixups = confused_pairs(history, limit=3)
    if mixups:
        lines.append("You most often confuse: " + "; ".join(
            f"{DISPLAY_NAMES[t]} → you chose {DISPLAY_NAMES[c]} ({n}×)" for t, c, n in mixups))
        pair = confusable_pair(mixups[0][0], mixups[0][1])
        if pair is not None:
            lines.append(f"**How to tell them apart:** {pair.text}")
    return "\n\n".join(lines)


@user_errors(outputs=5, status=4, clear=(0, 1, 2, 3))
def my_progress(services, name, profile: gr.OAuthProfile | None = None):
    """Your own progress: summary, accuracy per tissue, a plot and your confusion matrix (rows: right tissue)."""
    learner = learner_for(services, name, profile)
    history = progress_store(services).history(learner)
    if not history:
        return (f"No saved answers yet for {ui.escape_md(learner.name)}: take a quiz with your name filled in.",
                None, None, None, "")
    accuracy = [[DISPLAY_NAMES[t], c, n, f"{c / n:.0%}"] for t, (c, n) in accuracy_per_tissue(history).items()]
    matrix = confusion(history)
    rows = [[ABBREVIATIONS[t], *(int(v) for v in matrix[t])] for t in TISSUE_INDICES]
    return _summary(learner, history), accuracy, progress_figure(history), rows, ""


def build(services) -> None:
    """The tab's components and its one event (``my_progress``)."""
    gr.Markdown(f"_{SPACES_NOTE if on_spaces(services) else LOCAL_NOTE}_")
    with gr.Row():
        if on_spaces(services):
            gr.LoginButton()
        name = gr.Textbox(label="Your name", placeholder="the name you use in the Quiz tab",
                          visible=not on_spaces(services), elem_id="progress-name")
        with gr.Column(scale=0, min_width=220):
            show = gr.Button("Show my progress", variant="primary")
            message = gr.Markdown(elem_id="progress-status")
    summary = gr.Markdown(elem_id="progress-summary")
    with gr.Row():
        accuracy = gr.Dataframe(headers=ACCURACY_HEADERS, interactive=False, label="Accuracy per tissue")
        plot = gr.Plot(label="Accuracy per tissue and per day")
    confusions = gr.Dataframe(headers=CONFUSION_HEADERS, interactive=False,
                              label="Your confusion matrix (rows: the right tissue, columns: what you chose)")
    show.click(bind(my_progress, services), [name], [summary, accuracy, plot, confusions, message],
               api_name="my_progress")
