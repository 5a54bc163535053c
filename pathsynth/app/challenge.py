"""The Real or synthetic? tab: a real tile or a verified generated one, at random; the trainee guesses which.

The answer key (real or generated, the tissue, the seed) stays on the server in ``gr.State``: the "next tile"
response carries only the enlarged image (a PNG whose file name is its content hash) and labels that are the
same for every tile. Votes of an identified learner (the quiz's identity: the login on Spaces, else the typed
name, filled in from the name the browser remembers and still editable) are stored for the human realism report
in the About tab; flags need the same identity.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import gradio as gr
import numpy as np

from .. import ui_helpers as ui
from ..images import DISPLAY_SIZE, to_rgb_uint8, upscale
from ..learning.challenge import MAX_NOTE_CHARS, ChallengeStore, Tile, Vote
from ..learning.progress import _utcnow
from ..tissues import DISPLAY_NAMES, TISSUE_INDICES
from .common import Refusal, bind, logger, pool_served_events, user_errors, verified_images
from .progress import LOCAL_NOTE, SPACES_NOTE, on_spaces, optional_learner

GENERATION_TRIES = 3  # an unverified image is never shown here: draw again rather than show a bad tile
GUESSES = ("Real", "Synthetic")
PROMPT = "### Real or synthetic?\nIs this tile from a real slide, or drawn by the generator?"
_random = secrets.SystemRandom()  # unpredictable: the 50/50 draw must not be guessable from earlier tiles


@dataclass
class ChallengeState:
    """One browser session's challenge: the tile on screen (its key) and the running score."""

    tile: Tile | None = None
    guessed: bool | None = None  # guessed synthetic; None until the guess
    right: int = 0
    seen: int = 0
    history: list = field(default_factory=list)  # (truly synthetic, guessed synthetic) per guess


def challenge_store(services) -> ChallengeStore:
    return ChallengeStore(services.store.database)


def draw_tile(services) -> tuple[Tile, np.ndarray]:
    """A tissue from the catalogue at random, then a real or a verified generated tile of it, 50/50."""
    tissue = _random.choice(TISSUE_INDICES)
    if _random.random() < 0.5:
        return _real_tile(services, tissue)
    result = _generated_tile(services, tissue)
    return Tile("generated", int(result.tissue), seed=int(result.seed)), to_rgb_uint8(result.image)


def _generated_tile(services, tissue: int):
    """A verified generated image of ``tissue`` (:func:`~pathsynth.app.common.verified_images`): ready from the pool
    when it has one, the classifier's surest (the scarce borderline ones are left to hard quizzes), else generated
    now; drawn again when the verifier gives up, since this tab never shows an unverified tile. The tab shows no
    heatmap, so none is computed."""
    for _ in range(GENERATION_TRIES):
        result = verified_images(services, [tissue], seed=None, prefer="confident")[0]
        if result.verified:
            return result
    raise Refusal("No verified image could be made just now; please try again.")


def _real_tile(services, tissue: int) -> tuple[Tile, np.ndarray]:
    labels = np.asarray(services.real_labels).reshape(-1)
    candidates = np.flatnonzero(labels == tissue)
    index = int(_random.choice(candidates)) if len(candidates) else _random.randrange(len(labels))
    return Tile("real", int(labels[index]), real_index=index), to_rgb_uint8(services.real_images[index])


@user_errors(outputs=10, status=9)
def next_tile(services, state):
    """A new tile to judge. Returns only the image: what it is stays in the session state until the guess."""
    if getattr(services, "real_tiles_off", ""):  # half the tiles would be real: the game needs them
        raise Refusal(services.real_tiles_off)
    state = state if isinstance(state, ChallengeState) else ChallengeState()
    state.tile, image = draw_tile(services)
    state.guessed = None
    hidden = gr.update(visible=False)
    return (state, upscale(image), PROMPT, gr.update(interactive=True), gr.update(interactive=True), "", hidden, "",
            "", "")


def _verdict(tile: Tile, guessed_synthetic: bool) -> str:
    truth = "**synthetic** (drawn by the generator)" if tile.synthetic else "**real** (from a PathMNIST slide)"
    mark = "✅ **Right!**" if guessed_synthetic == tile.synthetic else "❌ **Not this time.**"
    return f"{mark} It was {truth}; the tissue is **{DISPLAY_NAMES[tile.tissue]}**."


@user_errors(outputs=7, status=6)
def guess(services, choice, state, learner_name=None, profile: gr.OAuthProfile | None = None):
    """Guess "Real" or "Synthetic" for the tile on screen; says which it was and its tissue, and stores the vote
    for an identified learner."""
    if not isinstance(state, ChallengeState) or state.tile is None:
        raise Refusal("Show a tile first.")
    if state.guessed is not None:
        raise Refusal("You already guessed this one: show the next tile.")
    if not isinstance(choice, str) or choice.strip().casefold() not in ("real", "synthetic"):
        raise Refusal("Guess Real or Synthetic.")
    learner = optional_learner(services, learner_name, profile)  # a bad name is refused before anything changes
    state.guessed = choice.strip().casefold() == "synthetic"
    state.seen += 1
    state.right += state.guessed == state.tile.synthetic
    state.history.append((state.tile.synthetic, state.guessed))
    saved = _save_vote(services, learner, Vote(state.tile, state.guessed, _utcnow()))
    score = f"Score: **{state.right} / {state.seen}**"
    off = gr.update(interactive=False)
    return state, off, off, _verdict(state.tile, state.guessed) + saved, score, gr.update(visible=True), ""


def _save_vote(services, learner, vote: Vote) -> str:
    if learner is None:
        return ("\n\n_Your guess is not counted: " + ("sign in" if on_spaces(services) else "type your name")
                + " to add it to the trainees' report._")
    try:
        challenge_store(services).vote(learner, vote)
    except Exception:  # noqa: BLE001 - a database hiccup must not stop the game; the log keeps the reason
        logger.exception("could not save a challenge vote")
        return "\n\n_Your guess could not be saved this time._"
    return ""


def save_flag(services, tile: Tile, note, learner_name, profile, context: str) -> str:
    """Store a flag for ``tile`` from the identified learner; the one-line confirmation to show."""
    learner = optional_learner(services, learner_name, profile)
    if learner is None:
        raise Refusal("Sign in to flag an image." if on_spaces(services) else "Type your name to flag an image.")
    challenge_store(services).flag(learner, tile, note, context)
    return "🚩 Flagged for the instructors — thank you."


@user_errors(outputs=2, status=0)
def flag(services, state, note, learner_name=None, profile: gr.OAuthProfile | None = None):
    """Flag the tile just judged as wrong or odd, with an optional note (kept as typed)."""
    if not isinstance(state, ChallengeState) or state.tile is None or state.guessed is None:
        raise Refusal("Guess first, then flag the image.")
    return save_flag(services, state.tile, note, learner_name, profile, "challenge"), ""


def flags_markdown(flags) -> str:
    """Flags (``pathsynth.learning.challenge.list_flags``) as Markdown for instructors: notes escaped, as typed."""
    if not flags:
        return "_No flagged images._"
    lines = []
    for f in flags:
        where = f"seed {f.tile.seed}" if f.tile.seed is not None else (
            f"real tile #{f.tile.real_index}" if f.tile.real_index is not None else f"item {f.tile.gallery_item_id}")
        note = ui.escape_md(" ".join(f.note.split())) if f.note.strip() else "_(no note)_"
        lines.append(f"- {f.flagged_at:%Y-%m-%d %H:%M} UTC, {ui.escape_md(f.learner)} ({f.context}): "
                     f"{f.tile.source} {DISPLAY_NAMES[f.tile.tissue]}, {where} — {note}")
    return "\n".join(lines)


def flag_components(prefix: str):
    """The "Flag this image" row (hidden until there is an answer): note box, button, message line."""
    with gr.Row(visible=False) as box:
        note = gr.Textbox(label="Flag this image (optional note)", max_lines=4, scale=3, elem_id=f"{prefix}-flag-note",
                          placeholder=f"What looks wrong? (at most {MAX_NOTE_CHARS} characters)")
        with gr.Column(scale=1, min_width=160):
            button = gr.Button("Flag this image", size="sm", elem_id=f"{prefix}-flag")
            message = gr.Markdown(elem_id=f"{prefix}-flag-status")
    return box, note, button, message


def build(services):
    """The tab's components and events (``challenge_next``, ``challenge_guess``, ``challenge_flag``); returns the
    name box, which the browser fills with the learner it remembers (``progress.wire_identity``)."""
    state = gr.State(None)
    gr.Markdown("Can you tell the generator's tiles from real ones? Half of the tiles are real, half synthetic. "
                f"_{SPACES_NOTE if on_spaces(services) else LOCAL_NOTE}_")
    off = getattr(services, "real_tiles_off", "")
    if off:
        gr.Markdown(f"⚠️ {off}", elem_id="challenge-off")  # the app's own line (Markdown: the command as code)
    with gr.Row():
        if on_spaces(services):
            gr.LoginButton()
        learner = gr.Textbox(label="Your name (counts your guesses)", visible=not on_spaces(services),
                             placeholder="the name you use in the Quiz tab", elem_id="challenge-learner")
        with gr.Column(scale=0, min_width=220):
            next_button = gr.Button("Show a tile", variant="primary", interactive=not off)
            status = gr.Markdown(elem_id="challenge-status")
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Markdown(PROMPT)
            image = gr.Image(label="Real or synthetic?", show_label=False, format="png", interactive=False,
                             height=DISPLAY_SIZE, buttons=[], elem_classes="pixelated", elem_id="challenge-tile")
        with gr.Column(scale=3):
            with gr.Row():
                real = gr.Button("Real", interactive=False, elem_id="challenge-real")
                synthetic = gr.Button("Synthetic", interactive=False, elem_id="challenge-synthetic")
            feedback = gr.Markdown(elem_id="challenge-feedback")
            score = gr.Markdown(elem_id="challenge-score")
            flag_box, note, flag_button, flag_message = flag_components("challenge")
    next_button.click(bind(next_tile, services), state,
                      [state, image, prompt, real, synthetic, feedback, flag_box, note, flag_message, status],
                      api_name="challenge_next", **pool_served_events(services))
    guess_outputs = [state, real, synthetic, feedback, score, flag_box, status]
    # The guess is a parameter of its own (a hidden radio) that each button fills in the browser: a button as an
    # input is left out of the API page, so the documented call sent one value too few.
    choice = gr.Radio(list(GUESSES), label="Your guess", visible=False)
    for button, guessed in ((real, "Real"), (synthetic, "Synthetic")):
        api = {"api_name": "challenge_guess"} if guessed == "Real" else {"api_visibility": "private"}
        button.click(bind(guess, services), [choice, state, learner], guess_outputs,
                     js=f"(choice, state, name) => [{guessed!r}, state, name]", **api)
    flag_button.click(bind(flag, services), [state, note, learner], [flag_message, note], api_name="challenge_flag")
    return learner
