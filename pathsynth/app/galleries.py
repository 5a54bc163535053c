"""The Galleries tab: everyone browses, quizzes and downloads (ZIP, Anki, handout); instructors generate, caption,
save, edit, import galleries and upload their own slides.

Every write handler re-checks the instructor's credentials on the server (``require_instructor``): an instructor
account (name + password), the shared password, or a listed Hugging Face login on Spaces. The account name is
each handler's last input (``account``, after Gradio's own arguments), so API clients that send only the password
keep working. Reads take the same credentials, optionally: a signed-in instructor also sees their own private
galleries; everyone else sees the shared ones.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import tempfile
import time

import gradio as gr

from .. import exports, instructors
from .. import quiz as Q
from .. import ui_helpers as ui
from .. import uploads
from ..gallery import item_label, items_from_verified
from ..images import upscale
from ..settings import SHARED_PASSWORD_ACCOUNT, InstructorConfig
from ..text import clip_text
from ..tissues import DISPLAY_NAMES
from .common import (SIGNED_OUT_LINE, Refusal, SignIn, bind, checked_in_handler, checked_inputs, model_slots,
                     pool_served_events, progress_callback, user_errors)
from .quiz import VIEW_OUTPUTS, explain_soon, question_view

_CAPTIONS_IN_FULL = """
#ID .thumbnail-lg { aspect-ratio: auto; height: auto; display: flex; flex-direction: column; }
#ID .thumbnail-lg > img { width: 100%; height: auto; object-fit: contain; }
#ID .thumbnail-lg .caption-label { position: static; max-width: none; white-space: normal;
  overflow: visible; text-overflow: clip; border: 0; border-radius: 0; opacity: 1; }
#ID .preview .caption { white-space: normal; overflow: visible; text-overflow: clip; }
#ID .grid-container { grid-template-rows: none; grid-auto-rows: auto; align-items: start; }
"""
# A gallery's pictures and an instructor's batch of candidates show their captions in full, below each picture
# (Gradio cuts them to one line over the picture).
GALLERY_CSS = "".join(_CAPTIONS_IN_FULL.replace("#ID", f"#{name}") for name in ("gallery-view", "gallery-candidates"))
BATCH_HEADERS = ["Keep", "#", "Tissue", "Verified", "Caption"]
MAX_BATCH_PER_TISSUE = 8
MAX_BATCH_IMAGES = 24
# uploads decode large images and run stain normalisation: one at a time, beside the model queue
UPLOAD_EVENTS = {"concurrency_id": "uploads", "concurrency_limit": 1}
_LIMITER = ui.PasswordBackoff()  # wrong passwords per account and address, for this process
PASSWORD_ACCOUNT = SHARED_PASSWORD_ACCOUNT  # the account the shared instructor password opens
VISIBILITY_CHOICES = [("Shared: every instructor and learner sees it", "shared"), ("Private: only I see it", "private")]


# ------------------------------------------------------------------------------------------------ reading

def _choices(summaries) -> list[tuple[str, int]]:
    """Dropdown entries (label, id). A name listed twice (the viewer's private gallery and someone's shared one)
    names the shared one's owner too, so the two read differently."""
    names = [g.name.lower() for g in summaries]
    choices = []
    for g in summaries:
        if g.visibility == "private":
            whose = ", private"
        else:
            whose = f", by {g.created_by or 'an instructor'}" if names.count(g.name.lower()) > 1 else ""
        choices.append((f"{g.name} ({g.n_items} image{'s' if g.n_items != 1 else ''}{whose})", g.id))
    return choices


def _dropdown(services, viewer: str | None, **value):
    """The gallery dropdown's update after a write: the galleries ``viewer`` may see (and ``value=`` to select)."""
    return gr.update(choices=_choices(services.store.list_galleries(viewer)), **value)


def viewer(services, password=None, profile=None, request=None, account=None) -> str | None:
    """Who is looking: the signed-in instructor (their private galleries show too), else None (shared ones only).
    Wrong credentials are not an error here, just a learner's view (the sign-in line says what is wrong)."""
    if not password and profile is None:
        return None
    try:
        return require_instructor(services, password, profile, request, account)
    except PermissionError:
        return None


@user_errors(outputs=3, status=2)
def gallery_list(services, password=None, profile: gr.OAuthProfile | None = None, request: gr.Request = None,
                 account=None):
    """The galleries you may see: a dropdown of names and a JSON list (id, name, description, creator, image
    count, visibility). Learners see shared galleries; a signed-in instructor also their own private ones."""
    summaries = services.store.list_galleries(viewer(services, password, profile, request, account))
    listing = [{"id": g.id, "name": g.name, "description": g.description, "created_by": g.created_by,
                "n_items": g.n_items, "updated_at": g.updated_at, "visibility": g.visibility} for g in summaries]
    message = "" if summaries else "_No galleries yet. Instructors can create them below._"
    return gr.update(choices=_choices(summaries)), listing, message


def _item_caption(item) -> str:
    caption = item_label(item)  # the tissue's name once, then the instructor's caption in full
    return caption + " (not verified)" if item.meta.get("verified") is False else caption


@user_errors(outputs=3, status=1, clear=(0, 2))
def gallery_get(services, gallery, password=None, profile: gr.OAuthProfile | None = None,
                request: gr.Request = None, account=None):
    """One gallery: its images with captions, a description and a JSON record of the items."""
    if gallery is None or (isinstance(gallery, str) and not gallery.strip()):
        return None, "", None  # nothing chosen (e.g. just deleted): an empty view, not a complaint
    who = viewer(services, password, profile, request, account)
    record = services.store.get_gallery(ui.parse_gallery_key(gallery), viewer=who)
    images = [(upscale(item.image), _item_caption(item)) for item in record.items]
    private = " · 🔒 private: only you see it" if record.visibility == "private" else ""
    info = (f"### {ui.escape_md(record.name)}\n{ui.escape_md(record.description)}\n\n"
            f"{len(record.items)} image(s) · created by {ui.escape_md(record.created_by or 'an instructor')}{private}")
    details = {"id": record.id, "name": record.name, "description": record.description,
               "created_by": record.created_by, "updated_at": record.updated_at, "visibility": record.visibility,
               "items": [{"number": n + 1, "id": item.id, "caption": item.caption, "tissue": DISPLAY_NAMES[item.tissue],
                          "seed": item.seed, "source": item.source, "verified": item.meta.get("verified")}
                         for n, item in enumerate(record.items)]}
    return images or None, info, details


@user_errors(outputs=VIEW_OUTPUTS + 2, status=VIEW_OUTPUTS + 1)
def gallery_quiz(services, gallery, password=None, profile: gr.OAuthProfile | None = None,
                 request: gr.Request = None, account=None):
    """Start a quiz made of one gallery's images (answers: the items' tissues)."""
    who = viewer(services, password, profile, request, account)
    record = services.store.get_gallery(ui.parse_gallery_key(gallery), viewer=who)
    session = Q.quiz_from_gallery(record)  # shuffled; each question keeps its item's caption
    explain_soon(services, session)  # the pool's filler prepares the answers' occlusion maps while the learner looks
    status = f"Quiz on {ui.escape_md(record.name)}: {session.total} question{'s' if session.total != 1 else ''}."
    return (*question_view(session, status, services=services), gr.Tabs(selected="quiz"), "")


EXPORTS_KEPT_S = 3600  # Gradio copies a download into its cache at once; our copy only needs to outlive that


def download_path(name: str, suffix: str, data: bytes | str) -> str:
    """A fresh temporary file for Gradio to serve (named after the gallery, made filename-safe); exports older
    than ``EXPORTS_KEPT_S`` are removed first, so the folder never grows without bound."""
    root = os.path.join(tempfile.gettempdir(), "pathsynth-exports")
    os.makedirs(root, exist_ok=True)
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False) and time.time() - entry.stat().st_mtime > EXPORTS_KEPT_S:
            shutil.rmtree(entry.path, ignore_errors=True)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:60] or "gallery"
    path = os.path.join(tempfile.mkdtemp(prefix="export-", dir=root), stem + suffix)
    with open(path, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


DOWNLOADS = {"zip": (".zip", exports.export_zip, "ZIP (PNGs, gallery.json, metadata.csv)"),
             "anki": (".apkg", exports.export_anki, "Anki deck"),
             "handout": (".html", exports.export_handout, "printable handout (open it, then print)")}


def gallery_download(services, gallery, kind: str, who: str | None = None):
    """The chosen gallery as a file to download (anyone who can see the gallery): ``kind`` in ``DOWNLOADS``."""
    suffix, export, what = DOWNLOADS[kind]
    record = services.store.get_gallery(ui.parse_gallery_key(gallery), viewer=who)
    path = download_path(record.name, suffix, export(record))
    return path, f"⬇️ {ui.escape_md(record.name)}: {what}, {len(record.items)} image(s)."


@user_errors(outputs=2, status=1, clear=(0,))
def gallery_download_zip(services, gallery, password=None, profile: gr.OAuthProfile | None = None,
                         request: gr.Request = None, account=None):
    """The chosen gallery as a ZIP: full-resolution PNGs, gallery.json and metadata.csv (imports back losslessly)."""
    return gallery_download(services, gallery, "zip", viewer(services, password, profile, request, account))


@user_errors(outputs=2, status=1, clear=(0,))
def gallery_download_anki(services, gallery, password=None, profile: gr.OAuthProfile | None = None,
                          request: gr.Request = None, account=None):
    """The chosen gallery as an Anki deck (.apkg): image on the front, tissue and key features on the back."""
    return gallery_download(services, gallery, "anki", viewer(services, password, profile, request, account))


@user_errors(outputs=2, status=1, clear=(0,))
def gallery_download_handout(services, gallery, password=None, profile: gr.OAuthProfile | None = None,
                             request: gr.Request = None, account=None):
    """The chosen gallery as a printable one-page HTML handout."""
    return gallery_download(services, gallery, "handout", viewer(services, password, profile, request, account))


def selected_number(event: gr.SelectData):
    """The 1-based number of the image clicked in a gallery (fills the caption editor)."""
    return event.index + 1 if isinstance(event.index, int) else None


# ------------------------------------------------------------------------------------------------ writing

def instructor_config(services) -> InstructorConfig:
    """The settings' instructor configuration, with whether the database has an enabled instructor account
    (asked each time: an account added with the CLI can sign in at once)."""
    return dataclasses.replace(services.settings.instructors,
                               accounts=instructors.accounts_exist(services.store.database))


def require_instructor(services, password, profile, request, account=None) -> str:
    """The instructor's name (the account's, ``"instructor"`` for the shared password, or the Hugging Face login),
    or ``PermissionError``: every write handler calls this on the server. Wrong passwords slow down per account
    name and address (``PasswordBackoff``)."""
    address = getattr(getattr(request, "client", None), "host", None) or "unknown"
    username = getattr(profile, "username", None) if profile is not None else None
    config = instructor_config(services)
    sign_in = functools.partial(instructors.authenticate, services.store.database)
    if not password:  # no guess to rate-limit: an OAuth login, or nothing entered
        return ui.authorize(config, password, username, account, sign_in)
    named = isinstance(account, str) and account.strip()
    key = (clip_text(account, 40).lower() if named else PASSWORD_ACCOUNT, address)
    _LIMITER.check(key)
    try:
        name = ui.authorize(config, password, username, account, sign_in)
    except PermissionError:
        _LIMITER.failed(key)
        raise
    _LIMITER.succeeded(key)
    return name


def sign_in_view(services, password, profile, request, account, purpose: str) -> tuple[str, dict]:
    """The sign-in line and whether the instructor tools show: shown only for right credentials (the tools
    re-check them on every write); ``purpose`` ends the prompt ("to create or edit galleries")."""
    config = instructor_config(services)
    if not config.enabled:
        return f"🔒 {config.disabled_message}", gr.update(visible=False)
    if not password and profile is None:
        what = "your instructor account name and password" if config.accounts else "the instructor password"
        return f"Enter {what} {purpose}.", gr.update(visible=False)
    name = require_instructor(services, password, profile, request, account)
    return f"✅ Signed in as **{ui.escape_md(name)}**.", gr.update(visible=True)


@user_errors(outputs=2, status=0)
def instructor_sign_in(services, password, profile: gr.OAuthProfile | None = None, request: gr.Request = None,
                       account=None):
    """Check instructor credentials and reveal the instructor tools (the tools re-check on every write)."""
    return sign_in_view(services, password, profile, request, account, "to create or edit galleries")


def _batch_rows(batch) -> list[list]:
    # no default caption: the tissue's name is shown anyway, so a caption is only ever the instructor's own words
    return [[r.verified, n + 1, DISPLAY_NAMES[r.tissue], "yes" if r.verified else "no", ""]
            for n, r in enumerate(batch)]


@user_errors(outputs=4, status=3)
def instructor_generate(services, password, tissues, per_tissue, seed, profile: gr.OAuthProfile | None = None,
                        request: gr.Request = None, progress=gr.Progress(), account=None):
    """Generate a batch of verified candidates for a gallery (instructors only)."""
    require_instructor(services, password, profile, request, account)
    wanted = ui.parse_tissues(tissues)
    count = ui.parse_int(per_tissue, field="Images per tissue", minimum=1, maximum=MAX_BATCH_PER_TISSUE, default=2)
    if len(wanted) * count > MAX_BATCH_IMAGES:
        raise ValueError(f"At most {MAX_BATCH_IMAGES} images per batch ({len(wanted)} tissues × {count} = "
                         f"{len(wanted) * count}); choose fewer tissues or fewer images per tissue.")
    seed_value = ui.parse_seed(seed)
    progress(0.0, desc="generating")
    with model_slots:  # the event has its own queue (with a pool): the generation itself takes turns here
        batch = services.verifier.generate([t for t in wanted for _ in range(count)], seed=seed_value,
                                           progress=progress_callback(progress))
    shown = [(upscale(r.image), f"#{n + 1} {DISPLAY_NAMES[r.tissue]} · {'verified' if r.verified else 'NOT verified'}")
             for n, r in enumerate(batch)]
    verified = sum(r.verified for r in batch)
    return (batch, shown, _batch_rows(batch),
            f"{verified} of {len(batch)} images verified. Untick images you do not want, edit captions, then save.")


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


def selected_items(table, batch):
    """Gallery items for the rows ticked in the batch table (a list of ``VerifiedImage``), with their captions."""
    if not batch:
        raise ValueError("Generate a batch first.")
    rows = _table_rows(table)
    if rows is None:  # no table sent (API): keep the verified images with default captions
        rows = _batch_rows(batch)
    if len(rows) != len(batch):
        raise ValueError(f"The table has {len(rows)} rows but the batch has {len(batch)} images; regenerate the batch.")
    chosen, captions = [], []
    for row, result in zip(rows, batch):
        if len(row) != len(BATCH_HEADERS):
            raise ValueError(f"Each table row needs the columns {', '.join(BATCH_HEADERS)}.")
        keep = row[0].strip().lower() in ("true", "yes", "1", "x") if isinstance(row[0], str) else row[0]
        if keep:
            chosen.append(result)
            captions.append(row[4] if isinstance(row[4], str) else ("" if row[4] is None else str(row[4])))
    if not chosen:
        raise ValueError("Tick at least one image to keep.")
    return items_from_verified(chosen, captions)


@user_errors(outputs=3, status=0)
def gallery_save(services, password, name, description, table, batch, profile: gr.OAuthProfile | None = None,
                 request: gr.Request = None, account=None, visibility="shared"):
    """Save the ticked batch images as a new named gallery, shared or private to you (instructors only)."""
    instructor = require_instructor(services, password, profile, request, account)
    items = selected_items(table, batch)
    store = services.store
    gallery_id = store.create_gallery(name, description, created_by=instructor, items=items,
                                      visibility=visibility or "shared")
    record = store.get_gallery(gallery_id, with_images=False, viewer=instructor)
    private = ", private" if record.visibility == "private" else ""
    return (f"✅ Saved **{ui.escape_md(record.name)}** ({len(items)} images{private}).",
            _dropdown(services, instructor, value=gallery_id),
            {"id": gallery_id, "name": record.name, "n_items": len(items), "visibility": record.visibility})


@user_errors(outputs=2, status=0)
def gallery_add(services, password, gallery, table, batch, profile: gr.OAuthProfile | None = None,
                request: gr.Request = None, account=None):
    """Append the ticked batch images to the chosen gallery (instructors only)."""
    instructor = require_instructor(services, password, profile, request, account)
    key = ui.parse_gallery_key(gallery)
    items = selected_items(table, batch)
    services.store.add_items(key, items, actor=instructor)
    return f"✅ Added {len(items)} image(s).", _dropdown(services, instructor)


@user_errors(outputs=1, status=0)
def gallery_caption(services, password, gallery, number, caption, profile: gr.OAuthProfile | None = None,
                    request: gr.Request = None, account=None):
    """Change the caption of image ``number`` (1-based) of the chosen gallery (instructors only)."""
    instructor = require_instructor(services, password, profile, request, account)
    record = services.store.get_gallery(ui.parse_gallery_key(gallery), with_images=False, viewer=instructor)
    index = ui.parse_int(number, field="Image number", minimum=1, maximum=max(1, len(record.items)))
    if index is None or not record.items:
        raise ValueError("Choose an image number (click an image in the gallery).")
    services.store.update_caption(record.items[index - 1].id, caption, actor=instructor)
    return f"✅ Caption of image {index} updated."


@user_errors(outputs=2, status=0)
def gallery_rename(services, password, gallery, new_name, profile: gr.OAuthProfile | None = None,
                   request: gr.Request = None, account=None):
    """Rename the chosen gallery (instructors only)."""
    instructor = require_instructor(services, password, profile, request, account)
    gallery_id = services.store.rename_gallery(ui.parse_gallery_key(gallery), new_name, actor=instructor)
    record = services.store.get_gallery(gallery_id, with_images=False, viewer=instructor)
    return (f"✅ Renamed to **{ui.escape_md(record.name)}**.",
            _dropdown(services, instructor, value=record.id))


@user_errors(outputs=2, status=0)
def gallery_visibility(services, password, gallery, visibility, profile: gr.OAuthProfile | None = None,
                       request: gr.Request = None, account=None):
    """Make the chosen gallery shared or private (its owner only: the instructor who made it)."""
    instructor = require_instructor(services, password, profile, request, account)
    key = ui.parse_gallery_key(gallery)
    services.store.set_visibility(key, visibility, actor=instructor)
    record = services.store.get_gallery(key, with_images=False, viewer=instructor)
    what = "private: only you see it" if record.visibility == "private" else "shared with everyone"
    return (f"✅ **{ui.escape_md(record.name)}** is now {what}.",
            _dropdown(services, instructor, value=record.id))


@user_errors(outputs=6, status=0)
def gallery_delete(services, password, gallery, confirm, profile: gr.OAuthProfile | None = None,
                   request: gr.Request = None, account=None):
    """Delete the chosen gallery and its images (instructors only; needs the confirmation tick)."""
    instructor = require_instructor(services, password, profile, request, account)
    key = ui.parse_gallery_key(gallery)
    if confirm is not True:
        raise Refusal("Tick 'Yes, delete this gallery' to confirm.")
    name = services.store.get_gallery(key, with_images=False, viewer=instructor).name
    services.store.delete_gallery(key, actor=instructor)
    return (f"🗑️ Deleted **{ui.escape_md(name)}**.",
            _dropdown(services, instructor, value=None), None, "", None,
            False)


def _paths(files) -> list:
    if files is None:
        return []
    return list(files) if isinstance(files, (list, tuple)) else [files]


@user_errors(outputs=2, status=0)
def gallery_import(services, password, upload, new_name, profile: gr.OAuthProfile | None = None,
                   request: gr.Request = None, account=None):
    """A new (shared) gallery from a PathSynth gallery ZIP (instructors only); ``new_name`` replaces the exported
    name. The importing instructor owns the copy (its ``created_by``)."""
    instructor = require_instructor(services, password, profile, request, account)
    files = uploads.read_paths(_paths(upload))
    if len(files) != 1:
        raise Refusal("Choose one PathSynth gallery ZIP to import.")
    name = new_name.strip() if isinstance(new_name, str) and new_name.strip() else None
    gallery_id = exports.import_zip(services.store, files[0].data, name=name, created_by=instructor,
                                    file_name=files[0].name, actor=instructor)
    record = services.store.get_gallery(gallery_id, with_images=False, viewer=instructor)
    return (f"✅ Imported **{ui.escape_md(record.name)}** ({len(record.items)} images).",
            _dropdown(services, instructor, value=gallery_id))


def _upload_message(report) -> str:
    lines = [f"✅ Added {len(report.tiles)} tile(s) as instructor-validated (your label is the answer key)."]
    if report.disagreements:
        lines[0] += f" ⚠️ The classifier disagrees on {report.disagreements}: check those tiles."
    if report.refused:
        lines.append(f"⚠️ Not added: {len(report.refused)} file(s) (fix them and upload them again):")
        lines += [f"- {ui.escape_md(reason)}" for reason in report.refused]
    if report.skipped:
        lines.append(f"Skipped {len(report.skipped)} file(s) in the ZIP that are not PNG, JPEG or TIFF.")
    return "\n".join([lines[0], *lines[1:], "", *(f"- {ui.escape_md(line)}" for line in report.lines())])


@user_errors(outputs=3, status=0, clear=(2,))
def gallery_upload(services, password, gallery, files, tissue, microns_per_pixel,
                   profile: gr.OAuthProfile | None = None, request: gr.Request = None, account=None,
                   skip_stain_normalisation=False):
    """Add the instructor's own tiles (PNG/JPEG/TIFF or a ZIP) to the chosen gallery with their tissue label
    (instructors only); the classifier's opinion is reported beside the label. ``microns_per_pixel``: blank for
    "not given", else a number (text is parsed here, so "abc" gets a message, not Gradio's preprocessing error).
    The file list is emptied after every upload, added or refused (the message says which file went where)."""
    instructor = require_instructor(services, password, profile, request, account)
    key = ui.parse_gallery_key(gallery)
    report = uploads.upload_tiles(services.store, key, services.classifier, uploads.read_paths(_paths(files)),
                                  tissue, microns_per_pixel, instructor,
                                  normalise_stain=skip_stain_normalisation is not True)
    return _upload_message(report), _dropdown(services, instructor), None


# ------------------------------------------------------------------------------------------------- layout

def build(services, demo, quiz_view, tabs) -> SignIn:
    """The tab's components and events; "Quiz me" shows the quiz in ``quiz_view`` and switches ``tabs`` to it.
    Returns the instructor's sign-in (``SignIn``: the app shares it with the Assignments tab)."""
    with gr.Row():
        # custom values: API clients name a gallery by id or name; choices are filled per session
        choice = gr.Dropdown([], value=None, label="Gallery", scale=3, allow_custom_value=True)
        refresh = gr.Button("Refresh list", scale=0)
        quiz_button = gr.Button("Quiz me on this gallery", variant="primary", scale=0)
    message = gr.Markdown(elem_id="gallery-status")
    info = gr.Markdown(elem_id="gallery-info")
    view = gr.Gallery(label="Images", columns=6, height="auto", format="png", interactive=False,
                      elem_classes="pixelated", elem_id="gallery-view")
    listing = gr.JSON(visible=False)
    details = gr.JSON(visible=False)
    shown = [view, info, details]
    list_outputs = [choice, listing, message]
    config = instructor_config(services)
    # made here, shown in the instructor tools below: reads send them too (optional), so a signed-in instructor
    # also sees their own private galleries
    credentials = [gr.Textbox(label="Instructor password", type="password", scale=3, render=False),
                   gr.Textbox(label="Instructor account", max_length=40, scale=2, visible=config.accounts,
                              placeholder="blank: the shared password" if config.password else "", render=False)]
    refresh.click(bind(gallery_list, services), credentials, list_outputs, api_name="gallery_list")
    demo.load(bind(gallery_list, services), credentials, list_outputs, api_visibility="private")
    choice.change(bind(gallery_get, services), [choice, *credentials], shown, api_name="gallery_get")
    quiz_button.click(bind(gallery_quiz, services), [choice, *credentials], [*quiz_view.outputs, tabs, message],
                      api_name="gallery_quiz")
    _download_section(services, choice, credentials)
    with gr.Accordion("Instructor tools", open=False):
        # after a save or a delete the list, its counts and its "no galleries yet" line are refreshed too
        return _instructor_tools(services, demo, config, credentials, choice, shown, list_outputs)


def _instructor_tools(services, demo, config, credentials, choice, shown, list_outputs) -> SignIn:
    if not config.enabled:
        gr.Markdown(f"🔒 {config.disabled_message}")
    if config.on_spaces:
        gr.LoginButton()
    password, account = credentials
    with gr.Row(visible=bool(config.password) or config.accounts):
        account.render()
        password.render()
        sign_in = gr.Button("Sign in", scale=0)
    signed_in = gr.Markdown(elem_id="gallery-sign-in-status")
    refresh_list = {"fn": bind(gallery_list, services), "inputs": credentials, "outputs": list_outputs,
                    "api_visibility": "private"}
    refresh_view = {"fn": bind(gallery_get, services), "inputs": [choice, *credentials], "outputs": shown,
                    "api_visibility": "private"}
    with gr.Column(visible=False) as tools:
        sign_out = gr.Button("Sign out", size="sm", elem_id="gallery-sign-out")
        batch_state = gr.State(None)  # this instructor's candidate batch (list of VerifiedImage)
        table = _batch_section(services, credentials, batch_state)
        _save_section(services, credentials, choice, table, batch_state, refresh_list, refresh_view)
        _edit_section(services, credentials, choice, shown, refresh_list, refresh_view)
        _import_section(services, credentials, choice, refresh_list, refresh_view)
    sign_in_outputs = [signed_in, tools]
    sign_in.click(bind(instructor_sign_in, services), credentials, sign_in_outputs,
                  api_name="instructor_sign_in").then(**refresh_list)  # the instructor's private galleries too
    for box in credentials:
        box.submit(bind(instructor_sign_in, services), credentials, sign_in_outputs,
                   api_visibility="private").then(**refresh_list)
    sign_out.click(gallery_sign_out, None, [*sign_in_outputs, password], api_visibility="private",
                   queue=False).then(**refresh_list)  # private galleries leave the list
    if config.on_spaces:
        demo.load(bind(instructor_sign_in, services), credentials, sign_in_outputs, api_visibility="private")
    return SignIn(line=signed_in, password=password, account=account, outputs=sign_in_outputs,
                  sign_in=functools.partial(_sign_in_outputs, services), sign_out=lambda: gallery_sign_out()[:2],
                  after=refresh_list)


def _sign_in_outputs(services, password, account, request) -> tuple:
    """What a sign-in shows in this tab (the line, the tools): when another tab signed the instructor in."""
    return instructor_sign_in(services, password, None, request, account)


def gallery_sign_out():
    """Hide the instructor tools and forget the typed password (the list loses private galleries next); the
    server keeps no session to end. Outputs: the sign-in line, the tools, the password box."""
    return SIGNED_OUT_LINE, gr.update(visible=False), ""


def _batch_section(services, credentials, batch_state):
    gr.Markdown("#### 1. Generate candidates")
    with gr.Row():
        tissues = gr.CheckboxGroup(list(DISPLAY_NAMES), label="Tissues (none = all nine)", elem_id="batch-tissues")
    with gr.Row():
        count = gr.Slider(1, MAX_BATCH_PER_TISSUE, value=2, step=1, label="Images per tissue")
        seed = gr.Textbox(label="Seed (optional)", placeholder="blank = random", max_length=12)
        button = gr.Button("Generate batch", variant="primary", scale=0)
    message = gr.Markdown()
    view = gr.Gallery(label="Candidates", columns=8, height="auto", format="png", interactive=False,
                      elem_classes="pixelated", elem_id="gallery-candidates", visible=False)  # shown with a batch
    gr.Markdown("#### 2. Pick images and write captions")
    table = checked_in_handler(gr.Dataframe(
        headers=BATCH_HEADERS, datatype=["bool", "number", "str", "str", "str"], type="array", interactive=True,
        static_columns=[1, 2, 3], label="Tick the images to keep; edit the captions"))
    password, account = credentials
    inputs = [password, tissues, count, seed]  # checked here; the account name follows Gradio's own arguments
    button.click(checked_inputs(bind(instructor_generate, services), inputs, {count: "a number"}), [*inputs, account],
                 [batch_state, view, table, message], api_name="instructor_generate", preprocess=False,
                 **pool_served_events(services)  # with a pool: its own queue, never ahead of learners
                 ).then(lambda: gr.Gallery(visible=True), None, view, queue=False, api_visibility="private")
    return table


def _save_section(services, credentials, choice, table, batch_state, refresh_list, refresh_view) -> None:
    gr.Markdown("#### 3. Save")
    with gr.Row():
        name = gr.Textbox(label="New gallery name", max_length=100)
        description = gr.Textbox(label="Description (optional)", max_length=2000)
        visibility = gr.Radio(VISIBILITY_CHOICES, value="shared", label="Who sees the new gallery")
    with gr.Row():
        save = gr.Button("Save as new gallery", variant="primary", scale=0)
        add = gr.Button("Add to the chosen gallery", scale=0)
    message = gr.Markdown()
    saved = gr.JSON(visible=False)
    expected = {table: "a table with the columns " + ", ".join(BATCH_HEADERS)}
    password, account = credentials
    inputs = [password, name, description, table, batch_state]
    save.click(checked_inputs(bind(gallery_save, services), inputs, expected), [*inputs, account, visibility],
               [message, choice, saved], api_name="gallery_save", preprocess=False).then(**refresh_list)
    inputs = [password, choice, table, batch_state]
    add.click(checked_inputs(bind(gallery_add, services), inputs, expected), [*inputs, account], [message, choice],
              api_name="gallery_add_items", preprocess=False).then(**refresh_view)  # new count and images


def _edit_section(services, credentials, choice, shown, refresh_list, refresh_view) -> None:
    gr.Markdown("#### Edit the chosen gallery")
    with gr.Row():
        # a text box: Gradio's number box shows an empty value as 0, which reads as a chosen image; the handler
        # checks the number and its range (ui.parse_int)
        number = gr.Textbox(label="Image number (click an image)", placeholder="blank: no image chosen",
                            max_length=12, elem_id="gallery-image-number")
        caption = gr.Textbox(label="New caption", max_length=500, scale=3)
        caption_button = gr.Button("Update caption", scale=0)
    with gr.Row():
        new_name = gr.Textbox(label="New name", max_length=100, scale=3)
        rename = gr.Button("Rename", scale=0)
    with gr.Row():
        visibility = gr.Radio(VISIBILITY_CHOICES, value="shared", label="Who sees it (its owner decides)", scale=3)
        set_visibility = gr.Button("Set visibility", scale=0)
    with gr.Row():
        confirm = gr.Checkbox(False, label="Yes, delete this gallery")
        delete = gr.Button("Delete gallery", variant="stop", scale=0)
    message = gr.Markdown()
    shown[0].select(selected_number, None, number, api_visibility="private")
    password, account = credentials
    inputs = [password, choice, number, caption]
    caption_button.click(checked_inputs(bind(gallery_caption, services), inputs, {number: "a number"}),
                         [*inputs, account], message, api_name="gallery_update_caption",
                         preprocess=False).then(**refresh_view)
    rename.click(bind(gallery_rename, services), [password, choice, new_name, account], [message, choice],
                 api_name="gallery_rename").then(**refresh_view)  # the header shows the new name
    set_visibility.click(bind(gallery_visibility, services), [password, choice, visibility, account],
                         [message, choice], api_name="gallery_set_visibility").then(**refresh_view)
    delete.click(bind(gallery_delete, services), [password, choice, confirm, account],
                 [message, choice, *shown, confirm], api_name="gallery_delete").then(**refresh_list)


def _download_section(services, choice, credentials) -> None:
    with gr.Row():
        buttons = {"zip": gr.Button("Download ZIP", size="sm"), "anki": gr.Button("Download Anki deck", size="sm"),
                   "handout": gr.Button("Download handout", size="sm")}
    with gr.Row():
        file = gr.File(label="Download", interactive=False, elem_id="gallery-download")
        message = gr.Markdown(elem_id="gallery-download-status")
    handlers = {"zip": gallery_download_zip, "anki": gallery_download_anki, "handout": gallery_download_handout}
    for kind, button in buttons.items():
        button.click(bind(handlers[kind], services), [choice, *credentials], [file, message],
                     api_name=f"gallery_download_{kind}")


def _import_section(services, credentials, choice, refresh_list, refresh_view) -> None:
    password, account = credentials
    gr.Markdown("#### Import a gallery ZIP (exported from any PathSynth)")
    with gr.Row():
        archive = gr.File(label="Gallery ZIP", file_types=[".zip"], type="filepath")
        new_name = gr.Textbox(label="Name (optional: keeps the exported name)", max_length=100)
        import_button = gr.Button("Import ZIP", scale=0)
    import_message = gr.Markdown()
    import_button.click(bind(gallery_import, services), [password, archive, new_name, account],
                        [import_message, choice], api_name="gallery_import").then(**refresh_list)
    gr.Markdown("#### Upload my slides into the chosen gallery\nPNG, JPEG or TIFF tiles, or a ZIP of them. They are "
                "stain-normalised and scaled like PathMNIST; your label is the answer key.")
    with gr.Row():
        files = gr.File(label="Tiles or a ZIP", file_count="multiple", type="filepath",
                        file_types=[*uploads.IMAGE_SUFFIXES, ".zip"], elem_id="upload-files")
        tissue = gr.Dropdown(list(DISPLAY_NAMES), value=None, label="Tissue these tiles show")
        # text, parsed by the library: blank means "not given", and "abc" gets a message beside the button
        scale = gr.Textbox(label="Microns per pixel (optional)", placeholder="blank = not given; 40x is about 0.25",
                           max_length=20, elem_id="upload-scale")
    with gr.Row():
        skip_stain = gr.Checkbox(False, label="Skip stain normalisation (tiles already normalised, e.g. PathMNIST)")
        upload_button = gr.Button("Upload my slides", scale=0, elem_id="upload-button")
    upload_message = gr.Markdown(elem_id="upload-status")
    upload_button.click(bind(gallery_upload, services), [password, choice, files, tissue, scale, account, skip_stain],
                        [upload_message, choice, files], api_name="gallery_upload",
                        **UPLOAD_EVENTS).then(**refresh_view)
