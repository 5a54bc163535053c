"""The My progress tab: a learner's own accuracy per tissue, streak, confusions and what is due next.

Who the learner is comes from the session, never from a parameter naming someone: on Spaces the Hugging Face
login (the name box is ignored), locally the name typed here or in the Quiz tab, or without a name the browser's
own anonymous id. A typed name has no password, so locally it is an honour system for practice, and the tab says
so. The browser remembers the name and its anonymous id across reloads (``gr.BrowserState``, encrypted in its
local storage with a key kept in ``$PATHSYNTH_HOME``): see :func:`identity_components`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import gradio as gr

from .. import ui_helpers as ui
from ..learning import (ProgressStore, accuracy_per_tissue, browser_learner, confusion, due_tissues, hf_learner,
                        local_learner, new_browser_id, progress_figure, streak_days)
from ..learning.progress import Learner, confused_pairs
from ..tissues import ABBREVIATIONS, DISPLAY_NAMES, TISSUE_INDICES, confusable_pair
from .common import Refusal, bind, logger, user_errors

LOCAL_NOTE = ("Your answers are saved under the name you type in the Quiz tab or here (without a name: for this "
              "browser only). There is no password: anyone who types the same name sees the same progress, so use "
              "it for practice only.")
SPACES_NOTE = "Sign in with Hugging Face to save your answers; only you can see your progress."
ACCURACY_HEADERS = ["Tissue", "Correct", "Answered", "Accuracy"]
CONFUSION_HEADERS = ["Right tissue \\ you chose", *ABBREVIATIONS]


def on_spaces(services) -> bool:
    return bool(services.settings.instructors.on_spaces)


def _blank(name) -> bool:
    return name is None or (isinstance(name, str) and not name.strip())


def learner_for(services, name, profile, anon=None) -> Learner:
    """The learner asking: the login on Spaces, else the typed name, else this browser's anonymous id (``anon``);
    ``Refusal``/``ValueError`` when none."""
    if on_spaces(services):
        if profile is None:
            raise Refusal("Sign in with Hugging Face to see your progress.")
        return hf_learner(profile.username)
    if _blank(name):
        if anon:
            return browser_learner(anon)
        raise Refusal("Type your name to see your progress.")
    return local_learner(name)


def optional_learner(services, name, profile, anon=None) -> Learner | None:
    """For quizzes: the learner, or None when nobody is identified (the quiz runs, nothing is saved)."""
    if on_spaces(services) and profile is None:
        return None
    if not on_spaces(services) and _blank(name) and not anon:
        return None
    return learner_for(services, name, profile, anon)


# ------------------------------------------------------------------------------------ remembered by the browser

IDENTITY_KEY = "pathsynth-learner"  # the browser's local-storage key
SECRET_FILE = "browser_state.key"


def browser_secret(home) -> str | None:
    """The key that encrypts what browsers remember (kept in ``home``, so it survives restarts); None (a new key
    per process: browsers then forget after a restart) when ``home`` cannot hold it."""
    path = Path(home) / SECRET_FILE
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(secrets.token_urlsafe(24))
        return path.read_text().strip() or None
    except FileExistsError:  # another process wrote it a moment ago
        return path.read_text().strip() or None
    except OSError as error:
        logger.warning("browsers will forget learner names after a restart: %s", error)
        return None


def restore_identity(stored, boxes: int = 2):
    """On page load: (what the browser keeps, this session's anonymous id, the name for each of ``boxes`` name
    boxes). A first visit, or a value that cannot be read, gets a new anonymous id."""
    stored = dict(stored) if isinstance(stored, dict) else {}
    anon = stored.get("anon")
    try:
        browser_learner(anon)
    except ValueError:
        anon = new_browser_id()
    name = stored.get("name") if isinstance(stored.get("name"), str) else ""
    return ({"name": name, "anon": anon}, anon, *[name] * boxes)


def remember_name(name, stored):
    """A name box changed: the browser keeps the new name."""
    stored = dict(stored) if isinstance(stored, dict) else {}
    stored["name"] = name if isinstance(name, str) else ""
    return stored


def identity_components(services):
    """(the browser's memory of the learner, this session's anonymous id): make them before the tabs."""
    return (gr.BrowserState({"name": "", "anon": ""}, storage_key=IDENTITY_KEY,
                            secret=browser_secret(services.settings.home)), gr.State(""))


def wire_identity(demo, identity, anon, *name_boxes):
    """Fill the name boxes (the Quiz, My progress, Real or synthetic? and Assignments tabs') and the anonymous id
    from the browser on load; remember a name when it changes, and copy what is typed in one box to the others
    (``input`` and ``blur``: the learner's own actions only, so a copy never types back and never overwrites a
    newer name). Returns the load event (what needs the learner follows it)."""
    loaded = demo.load(lambda stored: restore_identity(stored, len(name_boxes)), identity,
                       [identity, anon, *name_boxes], api_visibility="private", queue=False)
    for box in name_boxes:
        others = [other for other in name_boxes if other is not box]
        box.change(remember_name, [box, identity], identity, api_visibility="private", queue=False,
                   trigger_mode="always_last")
        for typed in (box.input, box.blur):  # and on leaving the box: a pasted or autofilled name may send no
            typed(copy_name(len(others)), box, others, api_visibility="private", queue=False,  # input event
                  trigger_mode="always_last")
    return loaded


def copy_name(count: int):
    """An event function handing the name typed in one box to ``count`` other boxes."""
    return lambda name: name if count == 1 else (name,) * count


def progress_store(services) -> ProgressStore:
    """Answers live in the app's one database, beside the galleries (SQLite file or PostgreSQL)."""
    return ProgressStore(services.store.database)


def _summary(learner: Learner, history) -> str:
    correct = sum(r.correct for r in history)
    streak = streak_days(history)
    name = ui.escape_md(learner.display_name)
    lines = [f"### {name}: {correct} / {len(history)} correct ({correct / len(history):.0%})",
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
def my_progress(services, name, profile: gr.OAuthProfile | None = None, anon=None):
    """Your own progress: summary, accuracy per tissue, a plot and your confusion matrix (rows: right tissue)."""
    learner = learner_for(services, name, profile, anon)
    history = progress_store(services).history(learner)
    if not history:
        return (f"No saved answers yet for {ui.escape_md(learner.display_name)}: take a quiz with your name filled "
                "in.", None, None, None, "")
    accuracy = [[DISPLAY_NAMES[t], c, n, f"{c / n:.0%}"] for t, (c, n) in accuracy_per_tissue(history).items()]
    matrix = confusion(history)
    rows = [[ABBREVIATIONS[t], *(int(v) for v in matrix[t])] for t in TISSUE_INDICES]
    return _summary(learner, history), accuracy, progress_figure(history), rows, ""


def build(services, anon=None):
    """The tab's components and its one event (``my_progress``); returns the name box. ``anon``: the session's
    anonymous id (a ``gr.State``, see :func:`identity_components`)."""
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
        # the figure carries its own titles: Gradio's label badge would cover the left chart's title and axis
        plot = gr.Plot(label="Accuracy per tissue and per day", show_label=False, elem_id="progress-plot")
    confusions = gr.Dataframe(headers=CONFUSION_HEADERS, interactive=False,
                              label="Your confusion matrix (rows: the right tissue, columns: what you chose)")
    show.click(bind(my_progress, services), [name] if anon is None else [name, anon],
               [summary, accuracy, plot, confusions, message], api_name="my_progress")
    return name
