"""The Generate tab: pick or describe a tissue, get one verified image with its evidence."""

from __future__ import annotations

import gradio as gr
import numpy as np

from .. import ui_helpers as ui
from ..explain import MAP_LEGEND_HEIGHT, map_figure
from ..generators.base import OUTPUT_SIZE
from ..images import DISPLAY_SIZE, INTERPOLATIONS, display_image, microns_per_pixel
from ..resolver import NOT_UNDERSTOOD_BELOW, tissue_from_text
from ..tissues import ABBREVIATIONS, DISPLAY_NAMES, NUM_TISSUES
from .common import (Refusal, bind, check_interpolation, model_slots, pool_served_events, progress_callback,
                     user_errors, verified_images)


def resolution_outputs(resolution) -> tuple[str, dict, dict]:
    """(message Markdown, candidates radio update, tissue dropdown update) for a resolver answer."""
    message = ui.escape_md(resolution.message)
    if resolution.status == "ok":
        return (f"✅ {message}  \nConfidence: **{resolution.confidence:.0%}**",
                gr.update(choices=[], value=None, visible=False), gr.update(value=DISPLAY_NAMES[resolution.tissue]))
    if resolution.status == "unsure":
        closest = [DISPLAY_NAMES[i] for i, score in resolution.candidates[:3] if score >= NOT_UNDERSTOOD_BELOW]
        closest = closest or [DISPLAY_NAMES[resolution.tissue]]
        return (f"🤔 {message}", gr.update(choices=closest, value=None, visible=True), gr.update(value=None))
    return (f"❓ **Not understood.** {message}", gr.update(choices=[], value=None, visible=False),
            gr.update(value=None))


def _description(text) -> str:
    return ui.clean_text(text, field="Description", max_chars=ui.MAX_DESCRIPTION_CHARS)


@user_errors(outputs=4, status=0)
def resolve_description(services, description):
    """What the resolver understood from a free-text description (tissue, confidence, status, candidates)."""
    resolution = services.resolver.resolve(_description(description))
    message, candidates, tissue = resolution_outputs(resolution)
    details = {"status": resolution.status, "confidence": round(resolution.confidence, 4),
               "tissue": DISPLAY_NAMES[resolution.tissue] if resolution.tissue is not None else None,
               "candidates": [{"tissue": DISPLAY_NAMES[i], "score": s} for i, s in resolution.candidates[:3]],
               "message": resolution.message}
    return message, candidates, tissue, details


def overlay(services, image, target: int, heatmap=None):
    """The classifier's occlusion map for ``target`` (``heatmap`` when given, else computed once per image:
    ``services.explainer`` caches) over ``image`` in grey, enlarged, with its legend and reading under it."""
    heatmap = services.explainer(image, target) if heatmap is None else heatmap
    return map_figure(image, heatmap, DISPLAY_NAMES[target])


def origin_line(result) -> str:
    """Where the image came from: ready-made (the pool) or generated for this request."""
    if result.from_pool:
        return "⚡ Taken ready from the pool of verified images made ahead (no wait)."
    return f"🧪 Freshly generated for this request ({result.attempts} attempt{'s' if result.attempts != 1 else ''})."


GENERATE_OUTPUTS = 11  # image, cam, probabilities, summary, card, download, details, candidates, tissue,
#                        resolution message, status line


def _resolve_for_generation(services, text):
    """(tissue index or None, resolution message, candidates update, tissue update, status line) for a
    description: ``None`` when it was not understood well enough to generate."""
    index, resolution = tissue_from_text(text, services.resolver)
    if resolution is None:  # a catalogue name typed as a description
        return index, "", gr.update(choices=[], value=None, visible=False), gr.update(value=DISPLAY_NAMES[index]), ""
    message, candidates, tissue_update = resolution_outputs(resolution)
    if resolution.status == "ok":
        return index, message, candidates, tissue_update, ""
    status = ("⚠️ Pick one of the suggested tissues, or describe it differently." if resolution.status == "unsure"
              else "⚠️ The description was not understood; pick a tissue from the list.")
    return None, message, candidates, tissue_update, status


def shown(image, interpolation="pixel-exact", scale_bar=False):
    """The generated tile as displayed: enlarged pixel-exact or smooth, with a scale bar when asked (a generated
    tile is a whole PathMNIST tile, so its pixel size follows from its width: 4 µm at 28 px)."""
    smooth = check_interpolation(interpolation, Refusal) == "smooth"
    return display_image(image, 1, smooth, bool(scale_bar), um_per_pixel=microns_per_pixel(image.shape[1]))


def tile_size(services) -> int:
    """The size of the tiles this app's generator draws (the shipped 28 px when it cannot tell): the real tiles'
    (read at that size, and known before the generator has loaded), else the generator's own."""
    real = getattr(services, "real_images", None)
    if isinstance(real, np.ndarray) and real.ndim == 4:
        return int(real.shape[1])
    return int(getattr(getattr(getattr(services, "verifier", None), "generator", None), "output_size", OUTPUT_SIZE))


def verified_image(services, tissue: int, seed: int | None, on_progress=None):
    """One verified image of ``tissue``: ready from the pool when it has one, else generated now
    (:func:`~pathsynth.app.common.verified_images`). A typed seed is generated as asked, so it reproduces its
    image. ``on_progress``: ``(fraction, message)`` while generating."""
    return verified_images(services, [tissue], seed, on_progress)[0]


def occlusion_overlay(services, result):
    """The occlusion map of a verified image's predicted tissue: the pool's ready one, else computed (at most
    ``MODEL_CONCURRENCY`` at a time)."""
    if result.heatmap is not None:
        return overlay(services, result.image, result.predicted, result.heatmap)
    with model_slots:
        return overlay(services, result.image, result.predicted)


@user_errors(outputs=GENERATE_OUTPUTS, status=10)
def generate(services, tissue, description, seed, show_gradcam, interpolation="pixel-exact", scale_bar=False,
             progress=gr.Progress()):
    """Generate one verified image of the chosen (or described) tissue (shown pixel-exact or smooth, with a
    scale bar when asked)."""
    check_interpolation(interpolation, Refusal)  # a bad setting is refused before anything is made
    index = ui.parse_tissue(tissue)
    seed_value = ui.parse_seed(seed)
    text = _description(description)
    resolution_message, candidates, tissue_update, status = "", gr.update(), gr.update(), ""
    if text:  # a description wins: choosing from the list clears it in the browser, typing one may not clear the list
        index, resolution_message, candidates, tissue_update, status = _resolve_for_generation(services, text)
        if index is None:  # nothing generated: the old image must not stay under the new message
            return (None, None, None, "", "", gr.update(value=None, visible=False), None, candidates,
                    tissue_update, resolution_message, status)
    elif index is None:
        raise Refusal("Choose a tissue from the list or describe one.")
    progress(0.0, desc="generating")
    result = verified_image(services, index, seed_value, progress_callback(progress))
    cam = occlusion_overlay(services, result) if show_gradcam else None
    download = ui.save_png(result.image, f"pathsynth_{ABBREVIATIONS[result.tissue]}_seed{result.seed}")
    if not result.verified:
        status = f"⚠️ No image passed verification in {result.attempts} attempts; showing the closest one."
    elif not status:
        status = origin_line(result)
    details = result.to_dict()
    details.update(tissue_name=DISPLAY_NAMES[result.tissue], predicted_name=DISPLAY_NAMES[result.predicted])
    return (shown(result.image, interpolation, scale_bar), cam, ui.probability_label(result.probabilities),
            ui.verified_summary(result), ui.tissue_card(result.tissue), gr.update(value=download, visible=True), details,
            candidates, tissue_update, resolution_message, status)


def cleared_result(count: int = GENERATE_OUTPUTS - 4):
    """Empty image, occlusion map, probabilities, summary, card, download, record: the request changed."""
    return (None, None, None, "", "", gr.update(value=None, visible=False), None)[:count]


def build(services) -> None:
    """The tab's components and events (inside a ``gr.Blocks``)."""
    size = tile_size(services)
    with gr.Row():
        with gr.Column(scale=2, min_width=260):
            tissue = gr.Dropdown(list(DISPLAY_NAMES), value=None, label="Tissue", info="Pick one of the nine tissues…",
                                 elem_id="gen-tissue")
            description = gr.Textbox(label="…or describe what you want to see",
                                     placeholder="e.g. fat cells, tumour glands, immune cells",
                                     max_length=ui.MAX_DESCRIPTION_CHARS)
            resolve_button = gr.Button("Check description", size="sm")
            resolution_md = gr.Markdown(elem_id="gen-resolution")
            candidates = gr.Radio([], label="Closest tissues — pick one", visible=False)
            seed = gr.Textbox(label="Seed (optional)", placeholder="blank = random", max_length=12, elem_id="gen-seed")
            show_gradcam = gr.Checkbox(
                False, label="Show occlusion map (rough: where hiding part of the tile changes the answer most)")
            button = gr.Button("Generate verified image", variant="primary")
            status = gr.Markdown(elem_id="gen-status")
            resolution_json = gr.JSON(visible=False)
        with gr.Column(scale=4):
            with gr.Row():
                image = gr.Image(label=f"Generated image ({size} px, enlarged)", format="png", interactive=False,
                                 height=DISPLAY_SIZE, buttons=["download", "fullscreen"], elem_classes="pixelated",
                                 elem_id="gen-image")
                cam = gr.Image(label="Occlusion map", show_label=False, format="png", interactive=False,
                               height=DISPLAY_SIZE + MAP_LEGEND_HEIGHT, buttons=[], elem_id="gen-cam")
                # not "pixelated": the legend's text is scaled smoothly (the tile is already in 12 px blocks)
            with gr.Row():
                interpolation = gr.Radio(list(INTERPOLATIONS), value="pixel-exact", label="Enlarge (next image)",
                                         min_width=160, elem_id="gen-interpolation")
                scale_bar = gr.Checkbox(False, label=f"Scale bar ({microns_per_pixel(size):g} µm per pixel)",
                                        min_width=120,
                                        elem_id="gen-scale-bar")
            download = gr.DownloadButton(f"Download original PNG ({size} × {size})", visible=False)
            summary = gr.Markdown(elem_id="gen-summary")
        with gr.Column(scale=2, min_width=260):
            probabilities = gr.Label(label="Classifier probabilities", num_top_classes=NUM_TISSUES)
            card = gr.Markdown()
            with gr.Accordion("Technical details", open=False):
                details = gr.JSON(label="Verification record")

    result_views = [image, cam, probabilities, summary, card, download, details]
    # The dropdown and the description are alternatives; touching one clears the other (the description at once in
    # the browser, so a Generate click right after sees it; a typed description wins anyway), and a new request
    # clears the evidence shown for the previous one (it would describe a different image).
    tissue.input(None, None, [description, resolution_md], js="() => ['', '']", queue=False, api_visibility="private")
    description.input(None, None, resolution_md, js="() => ''", queue=False, api_visibility="private")
    tissue.input(lambda: (gr.update(visible=False, value=None), *cleared_result()), None, [candidates, *result_views],
                 queue=False, api_visibility="private")
    description.input(lambda: (gr.update(value=None), *cleared_result()), None, [tissue, *result_views], queue=False,
                      trigger_mode="always_last", api_visibility="private")
    candidates.input(None, None, description, js="() => ''", queue=False, api_visibility="private")  # picked instead
    candidates.input(lambda choice: gr.update(value=choice), candidates, tissue, queue=False, api_visibility="private")
    resolve_outputs = [resolution_md, candidates, tissue, resolution_json]
    resolve_button.click(bind(resolve_description, services), description, resolve_outputs, api_name="resolve")
    description.submit(bind(resolve_description, services), description, resolve_outputs, api_visibility="private")
    button.click(bind(generate, services), [tissue, description, seed, show_gradcam, interpolation, scale_bar],
                 [*result_views, candidates, tissue, resolution_md, status],
                 api_name="generate", **pool_served_events(services))
