"""PathSynth web app: generate verified tissue images, quiz yourself, browse and build teaching galleries.

``python app.py`` serves on 0.0.0.0 (port from ``$PORT`` / ``$GRADIO_SERVER_PORT``, default 7860); importing the
module builds ``demo`` without launching it (Hugging Face Spaces imports ``app.py`` and launches ``demo``).

This file only wires the UI to library calls. The models load once per process (``default_verifier()``),
everything that belongs to one user (quiz progress, an instructor's candidate batch) lives in ``gr.State``,
and every write to the gallery store re-checks the instructor's credentials on the server.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np

from pathsynth import ui_helpers as ui
from pathsynth.tissues import ABBREVIATIONS, DISPLAY_NAMES, NUM_TISSUES, TISSUES

ROOT = Path(__file__).resolve().parent
MODEL_CARDS = {"Classifier (ResNet-18)": ROOT / "assets" / "models" / "classifier" / "README.md",
               "Generator (class-conditional diffusion)": ROOT / "assets" / "models" / "generator" / "README.md"}
REPORTS_DIR = ROOT / "assets" / "reports"
MODEL_CONCURRENCY = 2  # generation is CPU-bound: more parallel runs only slow each other down
QUEUE_MAX_SIZE = 128
MAX_QUIZ_QUESTIONS = 30
MAX_BATCH_PER_TISSUE = 8
MAX_BATCH_IMAGES = 24

logger = logging.getLogger("pathsynth.app")


# ------------------------------------------------------------------------------------ shared resources

def verifier():
    """The shipped generator + classifier, loaded once per process (thread-safe, cached by the library)."""
    from pathsynth.verify import default_verifier

    return default_verifier()


def classifier():
    return verifier().classifier


# The shared models are not safe to use from two threads at once: the diffusers scheduler keeps per-call
# state (step index, previous outputs), and Grad-CAM hooks the classifier, so any concurrent forward pass
# would run the hook too. Every model call in this file holds this lock.
MODEL_LOCK = threading.RLock()


@functools.lru_cache(maxsize=1)
def real_sample() -> tuple[np.ndarray, np.ndarray]:
    from pathsynth.data import load_bundled_sample

    return load_bundled_sample()


_STORE = None
_STORE_LOCK = threading.Lock()


def store():
    """The gallery store under ``$PATHSYNTH_HOME`` (one per process)."""
    global _STORE
    with _STORE_LOCK:
        if _STORE is None:
            from pathsynth.gallery import GalleryStore

            _STORE = GalleryStore()
        return _STORE


def warm_up() -> None:
    """Load models and the resolver's encoder in the background so the first click does not wait for them."""
    started = time.perf_counter()
    try:
        from pathsynth.resolver import get_resolver

        verifier()
        real_probabilities()
        get_resolver()
        logger.info("models ready after %.1f s", time.perf_counter() - started)
    except Exception:  # the handlers report the problem to the user; the app keeps serving
        logger.exception("warm-up failed")


# ------------------------------------------------------------------------------------------ error policy

def user_errors(fn):
    """Turn exceptions into a short message in the UI (and for API clients); never show a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except PermissionError as error:
            raise gr.Error(str(error), title="Not allowed", print_exception=False) from None
        except (ValueError, KeyError, TypeError) as error:
            message = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
            raise gr.Error(message or "Invalid input.", title="Please check your input", print_exception=False) from None
        except Exception as error:
            from pathsynth.classifier import ModelFileError
            from pathsynth.data import DataUnavailableError

            if isinstance(error, (ModelFileError, DataUnavailableError)):
                raise gr.Error(str(error), title="Model or data files", print_exception=False) from None
            logger.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(error).__name__}). The app is still running; please try "
                           "again.", print_exception=False) from None

    return wrapper


def checked(component: type, expected: str) -> type:
    """``component`` whose input check names the field and what it expects, instead of a Python error.

    gradio's own preprocessing fails with e.g. "'<' not supported between 'str' and 'int'" when an API
    client sends text to a slider; this subclass keeps gradio's checks and rewords only those failures.
    """

    class Checked(component):
        def get_block_name(self) -> str:  # same front-end widget as the parent
            return component.__name__.lower()

        def preprocess(self, payload):
            if payload is None and isinstance(self, gr.Dataframe):
                return None  # "no table": the handler decides (after checking who is asking)
            try:
                return super().preprocess(payload)
            except gr.Error:
                raise
            except Exception:
                raise gr.Error(f"{self.label}: expected {expected}, got {str(payload)[:40]!r}.",
                               print_exception=False) from None

    Checked.__name__ = Checked.__qualname__ = f"Checked{component.__name__}"
    return Checked


Slider = checked(gr.Slider, "a number")
Number = checked(gr.Number, "a number")
Table = checked(gr.Dataframe, "a table with the columns Keep, #, Tissue, Verified, Caption")


def progress_callback(progress: gr.Progress):
    return lambda fraction, message: progress(float(fraction), desc=message)


# ------------------------------------------------------------------------------------------------ generate

def _resolution_outputs(resolution) -> tuple[str, dict, dict]:
    """(message Markdown, candidates radio update, tissue dropdown update) for a resolver answer."""
    message = ui.escape_md(resolution.message)
    if resolution.status == "ok":
        name = DISPLAY_NAMES[resolution.tissue]
        return (f"✅ {message}  \nConfidence: **{resolution.confidence:.0%}**",
                gr.update(choices=[], value=None, visible=False), gr.update(value=name))
    if resolution.status == "unsure":
        from pathsynth.resolver import NOT_UNDERSTOOD_BELOW

        closest = [DISPLAY_NAMES[i] for i, score in resolution.candidates[:3] if score >= NOT_UNDERSTOOD_BELOW]
        closest = closest or [DISPLAY_NAMES[resolution.tissue]]
        return (f"🤔 {message}", gr.update(choices=closest, value=None, visible=True), gr.update(value=None))
    return (f"❓ **Not understood.** {message}", gr.update(choices=[], value=None, visible=False),
            gr.update(value=None))


@user_errors
def resolve_description(description):
    """What the resolver understood from a free-text description (tissue, confidence, status, candidates)."""
    from pathsynth.resolver import resolve

    text = ui.clean_text(description, field="Description", max_chars=ui.MAX_DESCRIPTION_CHARS)
    resolution = resolve(text)
    message, candidates, tissue = _resolution_outputs(resolution)
    details = {"status": resolution.status, "confidence": round(resolution.confidence, 4),
               "tissue": DISPLAY_NAMES[resolution.tissue] if resolution.tissue is not None else None,
               "candidates": [{"tissue": DISPLAY_NAMES[i], "score": s} for i, s in resolution.candidates[:3]],
               "message": resolution.message}
    return message, candidates, tissue, details


@user_errors
def generate(tissue, description, seed, show_gradcam, progress=gr.Progress()):
    """Generate one verified image of the chosen (or described) tissue."""
    index = ui.parse_tissue(tissue)
    seed_value = ui.parse_seed(seed)
    text = ui.clean_text(description, field="Description", max_chars=ui.MAX_DESCRIPTION_CHARS)
    resolution_message, candidates, tissue_update = "", gr.update(), gr.update()
    if index is None:
        if not text:
            raise gr.Error("Choose a tissue from the list or describe one.", title="Nothing to generate",
                           print_exception=False)
        from pathsynth.resolver import resolve

        resolution = resolve(text)
        resolution_message, candidates, tissue_update = _resolution_outputs(resolution)
        if resolution.status != "ok":
            gr.Warning("Pick one of the suggested tissues, or describe it differently." if resolution.status ==
                       "unsure" else "The description was not understood; pick a tissue from the list.")
            return (None, None, None, resolution_message, "", gr.update(value=None, visible=False), None,
                    candidates, tissue_update)
        index = resolution.tissue

    progress(0.0, desc="loading models")
    with MODEL_LOCK:
        result = verifier().generate([index], seed=seed_value, progress=progress_callback(progress))[0]
    cam = None
    if show_gradcam:
        model = classifier()
        cam = ui.upscale(gradcam_overlay(model, result.image, result.predicted))
    name = DISPLAY_NAMES[result.tissue]
    download = ui.save_png(result.image, f"pathsynth_{ABBREVIATIONS[result.tissue]}_seed{result.seed}")
    if not result.verified:
        gr.Warning(f"No image passed verification in {result.attempts} attempts; showing the closest one.")
    summary = ui.verified_summary(result)
    if resolution_message:  # the description was resolved here: say what was understood
        summary = resolution_message + "\n\n" + summary
    details = result.to_dict()
    details.update(tissue_name=name, predicted_name=DISPLAY_NAMES[result.predicted])
    return (ui.upscale(result.image), cam, ui.probability_label(result.probabilities), summary,
            ui.tissue_card(result.tissue), gr.update(value=download, visible=True), details,
            candidates, tissue_update)


def gradcam_overlay(model, image: np.ndarray, target: int) -> np.ndarray:
    from pathsynth.classifier import gradcam_overlay as overlay

    with MODEL_LOCK:
        heatmap = model.gradcam(image, target=target)
    return overlay(image, heatmap)


# ---------------------------------------------------------------------------------------------------- quiz

_REAL_PROBABILITIES: dict[str, np.ndarray] = {}
_REAL_PROBABILITIES_LOCK = threading.Lock()


def real_probabilities() -> np.ndarray:
    """The classifier's probabilities for the bundled real tiles (the quiz's answer keys), computed once."""
    with _REAL_PROBABILITIES_LOCK:
        if "sample" not in _REAL_PROBABILITIES:
            with MODEL_LOCK:
                _REAL_PROBABILITIES["sample"] = classifier().predict_proba(real_sample()[0])
        return _REAL_PROBABILITIES["sample"]


def _score_line(session) -> str:
    answered = sum(a is not None for a in session.answers)
    position = (f"question {session.current + 1} of {session.total}" if not session.finished
                else f"all {session.total} questions answered")
    return f"### Score: {session.score} / {answered}  \n{position}"


def _quiz_status(session, feedback=None) -> dict:
    status = {"quiz_id": session.id, "title": session.title, "score": session.score, "total": session.total,
              "answered": sum(a is not None for a in session.answers), "finished": session.finished,
              "current": session.current}
    if feedback is not None:
        status.update(correct=feedback.correct, chosen=DISPLAY_NAMES[feedback.chosen],
                      answer=DISPLAY_NAMES[feedback.answer], question=feedback.question)
    return status


def _hidden_summary():
    return gr.update(visible=False), "", None, None, gr.update(visible=False)


def _quiz_question_view(session):
    """Outputs showing the session's current question (or its summary when it is finished)."""
    if session.finished:
        return _quiz_summary_view(session)
    index = session.current
    title = f" — {ui.escape_md(session.title)}" if session.title else ""
    header = f"### Question {index + 1} of {session.total}{title}\nWhich tissue is this?"
    return (session, header, ui.upscale(session.questions[index].image),
            gr.update(value=None, interactive=True), gr.update(interactive=True, visible=True),
            gr.update(visible=False), "", None, _score_line(session), _quiz_status(session), *_hidden_summary())


def _quiz_summary_view(session):
    from pathsynth.quiz import summary

    result = summary(session)
    table = [[DISPLAY_NAMES[t], correct, asked, f"{correct / asked:.0%}"]
             for t, (correct, asked) in result.per_tissue.items()]
    misses = [(ui.upscale(session.questions[i].image),
               f"Q{i + 1}: you said {DISPLAY_NAMES[session.answers[i]]}; it is "
               f"{DISPLAY_NAMES[session.questions[i].answer]}") for i in result.missed]
    text = (f"## Quiz finished: {result.score} / {result.total} ({result.percent:.0f}%)\n\n"
            + ("Perfect score — well done!" if not result.missed else
               f"You missed {len(result.missed)} question(s); review them below or retry them."))
    return (session, "### Quiz finished", None, gr.update(value=None, interactive=False),
            gr.update(interactive=False, visible=False), gr.update(visible=False), "", None,
            _score_line(session), _quiz_status(session), gr.update(visible=True), text,
            table or None, misses or None, gr.update(visible=bool(result.missed)))


@user_errors
def quiz_start(n, generated_share, progress=gr.Progress()):
    """Start a new quiz: ``n`` tiles, about ``generated_share`` of them verified generated images."""
    from pathsynth.quiz import build_quiz

    count = ui.parse_int(n, field="Number of questions", minimum=1, maximum=MAX_QUIZ_QUESTIONS, default=10)
    share = ui.parse_fraction(generated_share, field="Share of generated images", default=0.5)
    progress(0.0, desc="loading models")
    images, labels = real_sample()
    known = real_probabilities()
    with MODEL_LOCK:
        session = build_quiz(count, classifier=classifier(), verifier=verifier() if share > 0 else None,
                             real_images=images, real_labels=labels, generated_share=share,
                             real_probabilities=known, progress=progress_callback(progress))
    return _quiz_question_view(session)


def _require_quiz(session):
    if session is None:
        raise ValueError("Start a quiz first.")
    return session


@user_errors
def quiz_answer(session, choice):
    """Answer the current question with a tissue (display name); the answer key is the ResNet-18's label."""
    from pathsynth.quiz import answer

    session = _require_quiz(session)
    if choice is None or (isinstance(choice, str) and not choice.strip()):
        raise ValueError("Pick a tissue first.")
    feedback = answer(session, choice)  # ValueError leaves the session unchanged
    item = session.questions[feedback.question]
    verdict = "✅ **Correct!**" if feedback.correct else "❌ **Not quite.**"
    text = (f"{verdict} The answer is **{DISPLAY_NAMES[feedback.answer]}**.\n\n{ui.escape_md(feedback.explanation)}")
    cam = ui.upscale(gradcam_overlay(classifier(), item.image, feedback.answer))
    next_label = "See results" if feedback.finished else "Next question"
    return (session, ui.upscale(item.image), gr.update(interactive=False), gr.update(interactive=False),
            gr.update(visible=True, value=next_label), text, cam, _score_line(session),
            _quiz_status(session, feedback))


@user_errors
def quiz_next(session):
    """Show the next unanswered question, or the summary when the quiz is finished."""
    return _quiz_question_view(_require_quiz(session))


@user_errors
def quiz_retry(session):
    """A new quiz made of the questions answered wrongly."""
    from pathsynth.quiz import retry_missed

    return _quiz_question_view(retry_missed(_require_quiz(session)))


# ----------------------------------------------------------------------------------------------- galleries

BATCH_HEADERS = ["Keep", "#", "Tissue", "Verified", "Caption"]
_LIMITER = ui.AttemptLimiter()


def require_instructor(password, profile, request) -> str:
    """The instructor's name, or ``PermissionError``: every write handler calls this on the server."""
    config = ui.instructor_config()
    client = getattr(getattr(request, "client", None), "host", None) or "unknown"
    _LIMITER.check(client)
    username = getattr(profile, "username", None) if profile is not None else None
    try:
        return ui.authorize(config, password, username)
    except PermissionError:
        if password:
            _LIMITER.failed(client)
        raise


def _gallery_key(value):
    """A gallery id from a dropdown value or API argument (id or name)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("Choose a gallery first.")
    if isinstance(value, bool):
        raise ValueError("Choose a gallery first.")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, (int, str)):
        return value
    raise ValueError("A gallery is chosen by its id or name.")


def _gallery_choices():
    return [(f"{g.name} ({g.n_items} image{'s' if g.n_items != 1 else ''})", g.id) for g in store().list_galleries()]


@user_errors
def gallery_list():
    """All galleries: a dropdown of names and a JSON list (id, name, description, creator, image count)."""
    summaries = store().list_galleries()
    choices = [(f"{g.name} ({g.n_items} image{'s' if g.n_items != 1 else ''})", g.id) for g in summaries]
    listing = [{"id": g.id, "name": g.name, "description": g.description, "created_by": g.created_by,
                "n_items": g.n_items, "updated_at": g.updated_at} for g in summaries]
    message = "" if summaries else "_No galleries yet. Instructors can create them below._"
    return gr.update(choices=choices), listing, message


def _item_caption(item) -> str:
    caption = item.caption or DISPLAY_NAMES[item.tissue]
    if item.meta.get("verified") is False:
        caption += " (not verified)"
    return caption


@user_errors
def gallery_get(gallery):
    """One gallery: its images with captions, a description and a JSON record of the items."""
    record = store().get_gallery(_gallery_key(gallery))
    images = [(ui.upscale(item.image), _item_caption(item)) for item in record.items]
    info = (f"### {ui.escape_md(record.name)}\n{ui.escape_md(record.description)}\n\n"
            f"{len(record.items)} image(s) · created by {ui.escape_md(record.created_by or 'an instructor')}")
    details = {"id": record.id, "name": record.name, "description": record.description,
               "created_by": record.created_by, "updated_at": record.updated_at,
               "items": [{"number": n + 1, "id": item.id, "caption": item.caption, "tissue": DISPLAY_NAMES[item.tissue],
                          "seed": item.seed, "source": item.source, "verified": item.meta.get("verified")}
                         for n, item in enumerate(record.items)]}
    return images or None, info, details


@user_errors
def gallery_quiz(gallery):
    """Start a quiz made of one gallery's images (answers: the items' tissues)."""
    from pathsynth.quiz import MAX_QUESTIONS, quiz_from_images

    record = store().get_gallery(_gallery_key(gallery))
    items = record.items[:MAX_QUESTIONS]
    if not items:
        raise ValueError("This gallery has no images yet.")
    session = quiz_from_images([i.image for i in items], [i.tissue for i in items],
                               sources=[i.source if i.source in ("generated", "real") else "generated" for i in items],
                               seeds=[i.seed if i.seed is None or i.seed < 2**31 else None for i in items],
                               probabilities=[i.meta.get("probabilities") or [] for i in items]
                               if all(len(i.meta.get("probabilities") or []) == NUM_TISSUES for i in items) else None,
                               shuffle=True, title=record.name)
    return (*_quiz_question_view(session), gr.Tabs(selected="quiz"))


@user_errors
def instructor_sign_in(password, profile: gr.OAuthProfile | None = None, request: gr.Request = None):
    """Check instructor credentials and reveal the instructor tools (the tools re-check on every write)."""
    config = ui.instructor_config()
    if not config.enabled:
        return f"🔒 {config.disabled_message}", gr.update(visible=False)
    if not password and profile is None:
        return "Enter the instructor password to create or edit galleries.", gr.update(visible=False)
    name = require_instructor(password, profile, request)
    return f"✅ Signed in as **{ui.escape_md(name)}**.", gr.update(visible=True)


def selected_number(event: gr.SelectData):
    """The 1-based number of the image clicked in a gallery (fills the caption editor)."""
    return event.index + 1 if isinstance(event.index, int) else None


def _batch_rows(batch: list[dict]) -> list[list]:
    return [[b["verified"], n + 1, DISPLAY_NAMES[b["tissue"]], "yes" if b["verified"] else "no",
             DISPLAY_NAMES[b["tissue"]]] for n, b in enumerate(batch)]


@user_errors
def instructor_generate(password, tissues, per_tissue, seed, profile: gr.OAuthProfile | None = None,
                        request: gr.Request = None, progress=gr.Progress()):
    """Generate a batch of verified candidates for a gallery (instructors only)."""
    require_instructor(password, profile, request)
    wanted = ui.parse_tissues(tissues)
    count = ui.parse_int(per_tissue, field="Images per tissue", minimum=1, maximum=MAX_BATCH_PER_TISSUE, default=2)
    if len(wanted) * count > MAX_BATCH_IMAGES:
        raise ValueError(f"At most {MAX_BATCH_IMAGES} images per batch ({len(wanted)} tissues × {count} = "
                         f"{len(wanted) * count}); choose fewer tissues or fewer images per tissue.")
    requested = [t for t in wanted for _ in range(count)]
    progress(0.0, desc="loading models")
    seed_value = ui.parse_seed(seed)
    with MODEL_LOCK:
        results = verifier().generate(requested, seed=seed_value, progress=progress_callback(progress))
    batch = [{"image": r.image, "tissue": r.tissue, "seed": r.seed, "verified": r.verified, "result": r.to_dict()}
             for r in results]
    shown = [(ui.upscale(b["image"]), f"#{n + 1} {DISPLAY_NAMES[b['tissue']]} · "
              f"{'verified' if b['verified'] else 'NOT verified'}") for n, b in enumerate(batch)]
    verified = sum(b["verified"] for b in batch)
    return (batch, shown, _batch_rows(batch),
            f"{verified} of {len(batch)} images verified. Untick images you do not want, edit captions, then save.")


def _selected_items(table, batch):
    """Gallery items for the rows ticked in the batch table, with their captions."""
    from pathsynth.gallery import items_from_verified
    from pathsynth.verify import VerifiedImage

    if not batch:
        raise ValueError("Generate a batch first.")
    rows = _table_rows(table)
    if rows is None:  # no table sent (API): keep the verified images with default captions
        rows = _batch_rows(batch)
    if len(rows) != len(batch):
        raise ValueError(f"The table has {len(rows)} rows but the batch has {len(batch)} images; regenerate the batch.")
    chosen, captions = [], []
    for row, entry in zip(rows, batch):
        if len(row) != len(BATCH_HEADERS):
            raise ValueError(f"Each table row needs the columns {', '.join(BATCH_HEADERS)}.")
        keep = row[0]
        if isinstance(keep, str):
            keep = keep.strip().lower() in ("true", "yes", "1", "x")
        if not keep:
            continue
        caption = row[4] if isinstance(row[4], str) else ("" if row[4] is None else str(row[4]))
        result = entry["result"]
        chosen.append(VerifiedImage(image=np.asarray(entry["image"], np.uint8), **{
            k: result[k] for k in ("tissue", "verified", "attempts", "seed", "probabilities", "predicted",
                                   "confidence", "realism", "backend")}))
        captions.append(caption)
    if not chosen:
        raise ValueError("Tick at least one image to keep.")
    return items_from_verified(chosen, captions)


def _table_rows(table):
    if table is None:
        return None
    if hasattr(table, "values") and hasattr(table, "columns"):  # pandas
        return table.values.tolist()
    if isinstance(table, dict):
        table = table.get("data")
    if not isinstance(table, list) or not all(isinstance(r, list) for r in table):
        raise ValueError("The image table is malformed; regenerate the batch.")
    return table or None


@user_errors
def gallery_save(password, name, description, table, batch, profile: gr.OAuthProfile | None = None,
                 request: gr.Request = None):
    """Save the ticked batch images as a new named gallery (instructors only)."""
    instructor = require_instructor(password, profile, request)
    items = _selected_items(table, batch)
    gallery_id = store().create_gallery(name, description, created_by=instructor, items=items)
    record = store().get_gallery(gallery_id, with_images=False)
    gr.Info(f"Saved gallery {record.name!r} with {len(items)} image(s).")
    return (f"✅ Saved **{ui.escape_md(record.name)}** ({len(items)} images).",
            gr.update(choices=_gallery_choices(), value=gallery_id), {"id": gallery_id, "name": record.name,
                                                                      "n_items": len(items)})


@user_errors
def gallery_add(password, gallery, table, batch, profile: gr.OAuthProfile | None = None, request: gr.Request = None):
    """Append the ticked batch images to the chosen gallery (instructors only)."""
    require_instructor(password, profile, request)
    key = _gallery_key(gallery)
    items = _selected_items(table, batch)
    store().add_items(key, items)
    return f"✅ Added {len(items)} image(s).", gr.update(choices=_gallery_choices())


@user_errors
def gallery_caption(password, gallery, number, caption, profile: gr.OAuthProfile | None = None,
                    request: gr.Request = None):
    """Change the caption of image ``number`` (1-based) of the chosen gallery (instructors only)."""
    require_instructor(password, profile, request)
    record = store().get_gallery(_gallery_key(gallery), with_images=False)
    index = ui.parse_int(number, field="Image number", minimum=1, maximum=max(1, len(record.items)))
    if index is None or not record.items:
        raise ValueError("Choose an image number (click an image in the gallery).")
    store().update_caption(record.items[index - 1].id, caption)
    return f"✅ Caption of image {index} updated."


@user_errors
def gallery_rename(password, gallery, new_name, profile: gr.OAuthProfile | None = None, request: gr.Request = None):
    """Rename the chosen gallery (instructors only)."""
    require_instructor(password, profile, request)
    key = _gallery_key(gallery)
    store().rename_gallery(key, new_name)
    record = store().get_gallery(key if isinstance(key, int) else new_name, with_images=False)
    return f"✅ Renamed to **{ui.escape_md(record.name)}**.", gr.update(choices=_gallery_choices(), value=record.id)


@user_errors
def gallery_delete(password, gallery, confirm, profile: gr.OAuthProfile | None = None, request: gr.Request = None):
    """Delete the chosen gallery and its images (instructors only; needs the confirmation tick)."""
    require_instructor(password, profile, request)
    key = _gallery_key(gallery)
    if confirm is not True:
        raise ValueError("Tick 'Yes, delete this gallery' to confirm.")
    name = store().get_gallery(key, with_images=False).name
    store().delete_gallery(key)
    return (f"🗑️ Deleted **{ui.escape_md(name)}**.", gr.update(choices=_gallery_choices(), value=None), None, "",
            None, False)


# --------------------------------------------------------------------------------------------------- about

def about_markdown() -> str:
    parts = []
    for title, path in MODEL_CARDS.items():
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as error:
                text = f"_Model card unreadable: {error}_"
            # Model cards start with YAML front matter for the Hub; it is noise here.
            if text.startswith("---"):
                end = text.find("\n---", 3)
                text = text[end + 4:] if end != -1 else text
            parts.append(f"## {title}\n\n{text.strip()}")
        else:
            parts.append(f"## {title}\n\n_No model card found at `{path.relative_to(ROOT)}`._")
    return "\n\n---\n\n".join(parts)


def report_images() -> list[tuple[str, str]]:
    if not REPORTS_DIR.is_dir():
        return []
    return [(str(p), f"{p.parent.name}: {p.stem.replace('_', ' ')}") for p in sorted(REPORTS_DIR.rglob("*.png"))]


# ------------------------------------------------------------------------------------------------ layout

INTRO = """# PathSynth
Verified synthetic colorectal histology tiles (28 × 28 px H&E, PathMNIST classes) for teaching.
Every generated image is checked by a ResNet-18 classifier and a realism test before you see it.
_For education only — not for diagnosis._"""


CSS = """
.pixelated img { image-rendering: pixelated; }
"""


def build_demo() -> gr.Blocks:
    config = ui.instructor_config()
    with gr.Blocks(title="PathSynth", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        quiz_state = gr.State(None)  # this browser session's QuizSession
        batch_state = gr.State(None)  # this instructor's candidate batch (list of dicts)
        with gr.Tabs() as tabs:
            # ------------------------------------------------------------------------------- Generate
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=2, min_width=260):
                        gen_tissue = gr.Dropdown(list(DISPLAY_NAMES), value=None, label="Tissue",
                                                 info="Pick one of the nine tissues…")
                        gen_description = gr.Textbox(label="…or describe what you want to see",
                                                     placeholder="e.g. fat cells, tumour glands, immune cells",
                                                     max_length=ui.MAX_DESCRIPTION_CHARS)
                        resolve_button = gr.Button("Check description", size="sm")
                        resolution_md = gr.Markdown()
                        gen_candidates = gr.Radio([], label="Closest tissues — pick one", visible=False)
                        gen_seed = gr.Textbox(label="Seed (optional)", placeholder="blank = random", max_length=12)
                        gen_gradcam = gr.Checkbox(True, label="Show Grad-CAM (where the classifier looked)")
                        gen_button = gr.Button("Generate verified image", variant="primary")
                        resolution_json = gr.JSON(visible=False)
                    with gr.Column(scale=4):
                        with gr.Row():
                            gen_image = gr.Image(label="Generated image (28 px, enlarged)", format="png",
                                                 interactive=False, height=ui.DISPLAY_SIZE, buttons=["download"],
                                                 elem_classes="pixelated", elem_id="gen-image")
                            gen_cam = gr.Image(label="Grad-CAM overlay", format="png", interactive=False,
                                               height=ui.DISPLAY_SIZE, buttons=[], elem_classes="pixelated")
                        gen_download = gr.DownloadButton("Download original PNG (28 × 28)", visible=False)
                        gen_summary = gr.Markdown(elem_id="gen-summary")
                    with gr.Column(scale=2, min_width=260):
                        gen_probs = gr.Label(label="Classifier probabilities", num_top_classes=NUM_TISSUES)
                        gen_card = gr.Markdown()
                        with gr.Accordion("Technical details", open=False):
                            gen_details = gr.JSON(label="Verification record")

            # ----------------------------------------------------------------------------------- Quiz
            with gr.Tab("Quiz", id="quiz"):
                with gr.Row():
                    quiz_n = Slider(1, MAX_QUIZ_QUESTIONS, value=10, step=1, label="Questions")
                    quiz_share = Slider(0, 1, value=0.5, step=0.1, label="Share of generated images")
                    quiz_start_button = gr.Button("Start a new quiz", variant="primary", scale=0)
                quiz_score = gr.Markdown("Start a quiz to test yourself on the nine tissues.", elem_id="quiz-score")
                with gr.Row():
                    with gr.Column(scale=3):
                        quiz_header = gr.Markdown()
                        quiz_image = gr.Image(label="Which tissue is this?", format="png", interactive=False,
                                              height=ui.DISPLAY_SIZE, buttons=[], elem_classes="pixelated")
                    with gr.Column(scale=3):
                        quiz_choice = gr.Radio(list(DISPLAY_NAMES), label="Your answer", interactive=False,
                                               elem_id="quiz-choice")
                        quiz_submit = gr.Button("Submit answer", variant="primary", interactive=False)
                        quiz_next_button = gr.Button("Next question", visible=False)
                        quiz_feedback = gr.Markdown(elem_id="quiz-feedback")
                    with gr.Column(scale=3):
                        quiz_cam = gr.Image(label="Classifier's Grad-CAM for the answer", format="png",
                                            interactive=False, height=ui.DISPLAY_SIZE, buttons=[],
                                            elem_classes="pixelated")
                with gr.Column(visible=False) as quiz_summary_box:
                    quiz_summary = gr.Markdown()
                    quiz_table = gr.Dataframe(headers=["Tissue", "Correct", "Asked", "Score"], interactive=False,
                                              label="Per tissue")
                    quiz_misses = gr.Gallery(label="Review the ones you missed", columns=5, height="auto",
                                             format="png", interactive=False, elem_classes="pixelated")
                    quiz_retry_button = gr.Button("Retry the ones I missed", variant="primary")
                quiz_status = gr.JSON(visible=False)

            # ------------------------------------------------------------------------------ Galleries
            with gr.Tab("Galleries", id="galleries"):
                with gr.Row():
                    # custom values: API clients name a gallery by id or name; choices are filled per session
                    gallery_choice = gr.Dropdown([], value=None, label="Gallery", scale=3, allow_custom_value=True)
                    gallery_refresh = gr.Button("Refresh list", scale=0)
                    gallery_quiz_button = gr.Button("Quiz me on this gallery", variant="primary", scale=0)
                gallery_message = gr.Markdown()
                gallery_info = gr.Markdown(elem_id="gallery-info")
                gallery_view = gr.Gallery(label="Images", columns=6, height="auto", format="png",
                                          interactive=False, elem_classes="pixelated", elem_id="gallery-view")
                gallery_listing = gr.JSON(visible=False)
                gallery_details = gr.JSON(visible=False)

                with gr.Accordion("Instructor tools", open=False):
                    if not config.enabled:
                        gr.Markdown(f"🔒 {config.disabled_message}")
                    if config.on_spaces:
                        gr.LoginButton()
                    with gr.Row(visible=bool(config.password)):
                        instructor_password = gr.Textbox(label="Instructor password", type="password", scale=3)
                        sign_in_button = gr.Button("Sign in", scale=0)
                    instructor_message = gr.Markdown()
                    with gr.Column(visible=False) as instructor_tools:
                        gr.Markdown("#### 1. Generate candidates")
                        with gr.Row():
                            batch_tissues = gr.CheckboxGroup(list(DISPLAY_NAMES), label="Tissues (none = all nine)")
                        with gr.Row():
                            batch_count = Slider(1, MAX_BATCH_PER_TISSUE, value=2, step=1,
                                                    label="Images per tissue")
                            batch_seed = gr.Textbox(label="Seed (optional)", placeholder="blank = random",
                                                    max_length=12)
                            batch_button = gr.Button("Generate batch", variant="primary", scale=0)
                        batch_message = gr.Markdown()
                        batch_view = gr.Gallery(label="Candidates", columns=8, height="auto", format="png",
                                                interactive=False, elem_classes="pixelated")
                        gr.Markdown("#### 2. Pick images and write captions")
                        batch_table = Table(headers=BATCH_HEADERS,
                                                   datatype=["bool", "number", "str", "str", "str"],
                                                   type="array", interactive=True, static_columns=[1, 2, 3],
                                                   label="Tick the images to keep; edit the captions")
                        gr.Markdown("#### 3. Save")
                        with gr.Row():
                            save_name = gr.Textbox(label="New gallery name", max_length=100)
                            save_description = gr.Textbox(label="Description (optional)", max_length=2000)
                            save_button = gr.Button("Save as new gallery", variant="primary", scale=0)
                            add_button = gr.Button("Add to the chosen gallery", scale=0)
                        save_message = gr.Markdown()
                        save_json = gr.JSON(visible=False)
                        gr.Markdown("#### Edit the chosen gallery")
                        with gr.Row():
                            caption_number = Number(label="Image number (click an image)", minimum=1)
                            caption_text = gr.Textbox(label="New caption", max_length=500, scale=3)
                            caption_button = gr.Button("Update caption", scale=0)
                        with gr.Row():
                            rename_text = gr.Textbox(label="New name", max_length=100, scale=3)
                            rename_button = gr.Button("Rename", scale=0)
                        with gr.Row():
                            delete_confirm = gr.Checkbox(False, label="Yes, delete this gallery")
                            delete_button = gr.Button("Delete gallery", variant="stop", scale=0)
                        edit_message = gr.Markdown()

            # ---------------------------------------------------------------------------------- About
            with gr.Tab("About", id="about"):
                gr.Markdown(about_markdown())
                plots = report_images()
                if plots:
                    gr.Gallery(plots, label="Evaluation plots", columns=2, height="auto", interactive=False)
                else:
                    gr.Markdown("_No evaluation plots yet: run `pathsynth evaluate` to create assets/reports/*.png._")

        # --- Generate: the dropdown and the description are alternatives; touching one clears the other.
        gen_tissue.input(lambda: ("", "", gr.update(visible=False, value=None)), None,
                         [gen_description, resolution_md, gen_candidates], queue=False, api_visibility="private")
        gen_description.input(lambda: gr.update(value=None), None, gen_tissue, queue=False,
                               trigger_mode="always_last", api_visibility="private")
        gen_candidates.input(lambda choice: gr.update(value=choice), gen_candidates, gen_tissue, queue=False,
                             api_visibility="private")
        resolve_outputs = [resolution_md, gen_candidates, gen_tissue, resolution_json]
        resolve_button.click(resolve_description, gen_description, resolve_outputs, api_name="resolve")
        gen_description.submit(resolve_description, gen_description, resolve_outputs, api_visibility="private")
        gen_button.click(generate, [gen_tissue, gen_description, gen_seed, gen_gradcam],
                         [gen_image, gen_cam, gen_probs, gen_summary, gen_card, gen_download, gen_details,
                          gen_candidates, gen_tissue], api_name="generate", concurrency_id="model",
                         concurrency_limit=MODEL_CONCURRENCY)

        # --- Quiz
        quiz_view = [quiz_state, quiz_header, quiz_image, quiz_choice, quiz_submit, quiz_next_button, quiz_feedback,
                     quiz_cam, quiz_score, quiz_status, quiz_summary_box, quiz_summary, quiz_table, quiz_misses,
                     quiz_retry_button]
        quiz_start_button.click(quiz_start, [quiz_n, quiz_share], quiz_view, api_name="quiz_start",
                                concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY)
        quiz_submit.click(quiz_answer, [quiz_state, quiz_choice],
                          [quiz_state, quiz_image, quiz_choice, quiz_submit, quiz_next_button, quiz_feedback,
                           quiz_cam, quiz_score, quiz_status], api_name="quiz_answer")
        quiz_next_button.click(quiz_next, quiz_state, quiz_view, api_name="quiz_next")
        quiz_retry_button.click(quiz_retry, quiz_state, quiz_view, api_name="quiz_retry")

        # --- Galleries (reading: everyone)
        list_outputs = [gallery_choice, gallery_listing, gallery_message]
        gallery_refresh.click(gallery_list, None, list_outputs, api_name="gallery_list")
        demo.load(gallery_list, None, list_outputs, api_visibility="private")
        gallery_choice.change(gallery_get, gallery_choice, [gallery_view, gallery_info, gallery_details],
                              api_name="gallery_get")
        gallery_quiz_button.click(gallery_quiz, gallery_choice, [*quiz_view, tabs], api_name="gallery_quiz")
        gallery_view.select(selected_number, None, caption_number, api_visibility="private")

        # --- Galleries (writing: instructors; every handler re-checks the credentials)
        sign_in_button.click(instructor_sign_in, instructor_password, [instructor_message, instructor_tools],
                             api_name="instructor_sign_in")
        instructor_password.submit(instructor_sign_in, instructor_password, [instructor_message, instructor_tools],
                                   api_visibility="private")
        if config.on_spaces:
            demo.load(instructor_sign_in, instructor_password, [instructor_message, instructor_tools],
                      api_visibility="private")
        batch_button.click(instructor_generate, [instructor_password, batch_tissues, batch_count, batch_seed],
                           [batch_state, batch_view, batch_table, batch_message], api_name="instructor_generate",
                           concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY)
        save_button.click(gallery_save, [instructor_password, save_name, save_description, batch_table, batch_state],
                          [save_message, gallery_choice, save_json], api_name="gallery_save")
        add_button.click(gallery_add, [instructor_password, gallery_choice, batch_table, batch_state],
                         [save_message, gallery_choice], api_name="gallery_add_items")
        caption_button.click(gallery_caption, [instructor_password, gallery_choice, caption_number, caption_text],
                             edit_message, api_name="gallery_update_caption").success(
            gallery_get, gallery_choice, [gallery_view, gallery_info, gallery_details], api_visibility="private")
        rename_button.click(gallery_rename, [instructor_password, gallery_choice, rename_text],
                            [edit_message, gallery_choice], api_name="gallery_rename")
        delete_button.click(gallery_delete, [instructor_password, gallery_choice, delete_confirm],
                            [edit_message, gallery_choice, gallery_view, gallery_info, gallery_details,
                             delete_confirm], api_name="gallery_delete")
    return demo


demo = build_demo()
demo.queue(default_concurrency_limit=8, max_size=QUEUE_MAX_SIZE)


def _patient_url_ok(url: str) -> bool:
    """gradio's pre-launch check gives localhost 3 s to answer; a busy 2-core host can need longer."""
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.head(url, timeout=30, verify=False).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def models_startup_error() -> str | None:
    """Load the classifier and the generator's weights now; a missing, truncated or mismatched file gives one
    line naming it and the command that rebuilds it (the app would be useless without them, so it does not
    start). The realism reference and the resolver's encoder load later, in the background warm-up."""
    from pathsynth.classifier import ModelFileError
    from pathsynth.data import DataUnavailableError

    try:
        from pathsynth.classifier import load_classifier
        from pathsynth.generators import get_generator

        load_classifier()
        if os.environ.get("PATHSYNTH_BACKEND", "embedded") == "embedded":
            get_generator()  # not cached: the warm-up's default_verifier() loads it once more (under a second)
        else:
            verifier()  # a large backend is loaded once, here
    except (ModelFileError, DataUnavailableError) as error:
        return str(error)
    return None


def main() -> None:
    from gradio import networking

    networking.url_ok = _patient_url_ok
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problem = models_startup_error()
    if problem:
        print(f"PathSynth cannot start: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    port = int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), server_port=port,
                max_file_size="10mb", footer_links=["api", "gradio"], css=CSS,
                show_error=True)  # component input checks (e.g. a slider sent text) report their reason


if __name__ == "__main__":
    main()
