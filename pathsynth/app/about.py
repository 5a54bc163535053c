"""The About tab: a short plain-language page for trainees, with the model cards and plots one click away.

Every figure on the page is read from the evaluation reports (``assets/reports/*/*.json``) when the app starts,
so the page says what the last evaluation measured, never a number typed in by hand.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import gradio as gr

from ..generators.base import OUTPUT_SIZE
from ..images import PATHMNIST_TILE_UM, microns_per_pixel
from ..settings import ASSETS_DIR
from ..services import loaded
from ..tissues import DISPLAY_NAMES, TISSUES
from .common import logger

MODEL_CARDS = {"Classifier (ResNet-18)": ASSETS_DIR / "models" / "classifier" / "README.md",
               "Generator (class-conditional diffusion)": ASSETS_DIR / "models" / "generator" / "README.md"}
REPORTS_DIR = ASSETS_DIR / "reports"
REPORT_FILES = {"generator": Path("generator") / "report.json", "classifier": Path("classifier") / "classifier_report.json"}
RED_BLOOD_CELL_UM = 7.5  # a red blood cell's diameter: the yardstick trainees know
MARKDOWN_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_download_lock = threading.Lock()  # one download at a time, however many people click


def model_card(path: Path) -> tuple[str, list[Path]]:
    """A model card's Markdown without its YAML front matter (metadata for the Hub), and the image files it shows.

    Markdown image links are relative to the card and would not load in the app: they are taken out of the text
    and shown from their files instead."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        return f"_Model card unreadable: {error}_", []
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = text[end + 4:] if end != -1 else text
    images = [path.parent / target for _, target in MARKDOWN_IMAGE.findall(text)]
    text = MARKDOWN_IMAGE.sub(lambda m: f"_(figure: {m.group(1) or m.group(2)}, shown below)_", text)
    return text.strip(), [image for image in images if image.is_file()]


def load_reports(directory: Path = REPORTS_DIR) -> dict[str, dict]:
    """The evaluation reports that exist and parse (name -> JSON object)."""
    reports = {}
    for name, relative in REPORT_FILES.items():
        try:
            reports[name] = json.loads((directory / relative).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not evaluated yet: the page says so instead of showing a number
    return reports


def _percent(value) -> str | None:
    return f"{float(value):.0%}" if isinstance(value, (int, float)) else None


def _display_name(label: str) -> str:
    return next((t.display_name for t in TISSUES if t.label == label), label)


def how_well(reports: dict[str, dict]) -> list[str]:
    """Plain-language bullet points with the measured figures (only the ones the reports contain)."""
    generator, classifier = reports.get("generator", {}), reports.get("classifier", {})
    lines = []
    if _percent(generator.get("first_try_acceptance")):
        lines.append(f"**{_percent(generator['first_try_acceptance'])}** of generated images pass the check on the "
                     f"first try; the rest are redrawn (on average {generator.get('mean_attempts', 1):.2f} tries).")
    if _percent(generator.get("accuracy_raw")):
        lines.append(f"Before any checking, the classifier names the intended tissue for "
                     f"**{_percent(generator['accuracy_raw'])}** of generated images.")
    if _percent(classifier.get("accuracy")):
        low, high = (classifier.get("accuracy_ci95") or [None, None])[:2]
        interval = f" (95 % interval {_percent(low)}–{_percent(high)})" if _percent(low) and _percent(high) else ""
        lines.append(f"On **{classifier.get('n', 'held-out')}** real tiles it never saw, the classifier is right "
                     f"**{_percent(classifier['accuracy'])}**{interval} of the time — it is the answer key of the "
                     "quiz, so it can be wrong too.")
    if _percent(generator.get("c2st_balanced_accuracy")):
        lines.append(f"A network trained to spot fakes tells generated and real tiles apart "
                     f"**{_percent(generator['c2st_balanced_accuracy'])}** of the time (50 % would mean "
                     "indistinguishable): the images are good teaching material, not perfect copies of real tissue.")
    if _percent(generator.get("near_copy_rate")):
        lines.append(f"Near copies of training images: **{_percent(generator['near_copy_rate'])}**.")
    return lines


def weakest_tissue(reports: dict[str, dict]) -> str | None:
    """The tissue the classifier recognises least well on real tiles (lowest F1), as a sentence."""
    per_class = reports.get("classifier", {}).get("per_class") or {}
    scored = [(values.get("f1"), label) for label, values in per_class.items() if isinstance(values, dict)
              and isinstance(values.get("f1"), (int, float))]
    if not scored:
        return None
    f1, label = min(scored)
    return (f"The classifier is least reliable on **{_display_name(label)}** (F1 {f1:.2f} on real tiles): treat "
            "quiz answers for it with extra care.")


def tile_pixels(verifier=None) -> int:
    """The size of the tiles the app draws (its generator's), the shipped 28 px when it cannot tell."""
    return int(getattr(getattr(verifier, "generator", None), "output_size", OUTPUT_SIZE))


def scale_text(pixels: int) -> str:
    """The page's scale paragraph for ``pixels`` px tiles: every PathMNIST size shows 112 µm of tissue."""
    um = microns_per_pixel(pixels)
    cells = RED_BLOOD_CELL_UM / um
    yardstick = "roughly half a red blood cell" if cells < 3 else f"a red blood cell is about {cells:.0f} pixels wide"
    detail = "not nuclear detail" if um >= 1 else "and the shapes of nuclei"
    return (f"**Scale:** each tile is {pixels} × {pixels} pixels covering about {PATHMNIST_TILE_UM:.0f} µm of "
            f"tissue, so one pixel is about {um:g} µm — {yardstick}. The app shows them enlarged with sharp pixels: "
            f"you see the architecture (glands, fat vacuoles, sheets of lymphocytes), {detail}.")


def trainee_page(reports: dict[str, dict], verifier=None, storage_persistent: bool = True) -> str:
    """The plain-language page: what the images are, their scale, how they are checked, how well, the limits."""
    threshold = getattr(verifier, "threshold", None)
    attempts = getattr(verifier, "max_attempts", None)
    rule = (f"at least **{threshold:.0%}** sure" if isinstance(threshold, float) else "confident enough")
    tries = f"up to **{attempts}** times" if isinstance(attempts, int) else "a few times"
    measured = how_well(reports)
    weakest = weakest_tissue(reports)
    pixels = tile_pixels(verifier)
    tiles = ("tiny and low-resolution" if microns_per_pixel(pixels) >= 1
             else f"small ({PATHMNIST_TILE_UM:.0f} µm across)")
    parts = [
        "## What you are looking at",
        "Small synthetic microscope images of colorectal tissue stained with haematoxylin and eosin (H&E), in the "
        "nine tissue types of the PathMNIST data set (fat, background, debris, lymphocytes, mucus, smooth muscle, "
        "normal mucosa, tumour-associated stroma, adenocarcinoma). They are drawn by a small image-generating "
        "model trained on real tiles; no image shows a real patient.",
        scale_text(pixels),
        "## How each image is checked",
        f"Before you see an image, a separate classifier (a ResNet-18 network) must be {rule} that it shows the "
        "tissue you asked for, and the image must look like real tiles of that tissue (a realism check). If not, "
        f"it is redrawn, {tries}; an image that never passes is shown clearly marked **Not verified**.",
        "## How well it works",
        "\n".join(f"- {line}" for line in measured) if measured else
        "_No evaluation report found yet (run `pathsynth evaluate`)._",
        "## Limits",
        "\n".join([f"- Tiles are {tiles}: practise recognising tissue patterns, not diagnosing cells.",
                   "- The quiz's answer key is the classifier's label; for real tiles it can disagree with the "
                   "pathologist's.", *([f"- {weakest}"] if weakest else []),
                   "- For education only — not for diagnosis."]),
    ]
    if not storage_persistent:
        parts.append("> ⚠️ **Storage here is temporary:** galleries are kept on a disk that is wiped when this app "
                     "restarts. Attach persistent storage (the Space's `/data` volume) or set "
                     "`PATHSYNTH_DATABASE_URL` to keep them.")
    return "\n\n".join(parts)


def _share(share) -> str:
    if share.value is None:
        return "—"
    low, high = share.interval
    return f"{share.value:.0%} ({low:.0%}–{high:.0%}, n = {share.shown})"


def trainee_votes(report) -> str:
    """The "Real or synthetic?" section: how often trainees took synthetic tiles (and real ones) for real."""
    title = "## What trainees think: real or synthetic?"
    if report is None:
        return f"{title}\n\n_The votes could not be read just now._"
    if report.votes == 0:
        return f"{title}\n\n_No votes yet: play the **Real or synthetic?** tab to add yours._"
    overall = report.overall
    lines = [f"{title}", f"From **{report.votes}** guesses: trainees took **{_share(overall.synthetic)}** of "
             f"synthetic tiles for real, and **{_share(overall.real)}** of real tiles (the baseline; 95 % Wilson "
             "intervals). Synthetic tiles judged real as often as real ones means trainees cannot tell them apart.",
             "| Tissue | Synthetic judged real | Real judged real |", "|---|---|---|"]
    lines += [f"| {DISPLAY_NAMES[row.tissue]} | {_share(row.synthetic)} | {_share(row.real)} |"
              for row in report.per_tissue]
    return "\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:])


def votes_section(services) -> str:
    """Read at each page load, so the section follows the votes; a database failure only hides the figures."""
    try:
        from ..learning.challenge import realism_report

        return trainee_votes(realism_report(services.store.database))
    except Exception:  # noqa: BLE001 - the About page must open even when the database does not answer
        logger.exception("could not read the real-or-synthetic votes")
        return trainee_votes(None)


def report_images(directory: Path = REPORTS_DIR) -> list[tuple[str, str]]:
    if not directory.is_dir():
        return []
    return [(str(p), f"{p.parent.name}: {p.stem.replace('_', ' ')}") for p in sorted(directory.rglob("*.png"))]


def real_tiles_line(services) -> str:
    """Where the real tiles come from, or why there are none and how to get them (Markdown, one line)."""
    off = getattr(services, "real_tiles_off", "")
    if off:
        return f"⚠️ {off}"
    count = len(getattr(services, "real_labels", ()))
    return f"Real tiles: {count} PathMNIST tiles (official test split when the file has one; never trained on there)."


def download_real_tiles(services) -> str:
    """Download medmnist's PathMNIST file of the generator's size into ``$PATHSYNTH_MEDMNIST_ROOT`` (the app's
    "Download PathMNIST" button); the line saying what happened."""
    from ..data import DataUnavailableError, download_pathmnist

    size = int(getattr(services.generator, "output_size", OUTPUT_SIZE))
    if not _download_lock.acquire(blocking=False):
        return "A download is already running; wait for it to finish."
    try:
        path = download_pathmnist(size, services.settings.medmnist_root)
    except DataUnavailableError as error:
        return f"⚠️ {error}. Check the network, or set PATHSYNTH_DATA to a local npz."
    finally:
        _download_lock.release()
    return f"✅ Downloaded to `{path}`. Restart the app to use the real tiles."


def build(services, tab: gr.Tab | None = None) -> None:
    """The page; with ``tab`` (the About tab), its votes are read again each time it is opened."""
    settings = getattr(services, "settings", None)
    gr.Markdown(real_tiles_line(services), elem_id="about-real-tiles")
    if getattr(services, "real_tiles_off", ""):  # the line above says why; the button and its answer under it
        with gr.Row():
            download = gr.Button("Download PathMNIST", size="sm", scale=0, min_width=220, elem_id="about-download")
            downloaded = gr.Markdown(elem_id="about-download-status")
        download.click(lambda: download_real_tiles(services), None, downloaded, api_name="download_real_tiles")
    reports, persistent = load_reports(), getattr(settings, "home_persistent", True)
    # written when a page opens: on a fresh start the verifier (its thresholds) may still be loading
    gr.Markdown(lambda: trainee_page(reports, loaded(getattr(services, "verifier", None)), persistent),
                elem_id="about-trainees")
    if getattr(services, "store", None) is not None:
        votes = gr.Markdown(lambda: votes_section(services), elem_id="about-votes")
        if tab is not None:  # guesses made since the page loaded count at once, without a reload
            tab.select(lambda: votes_section(services), None, votes, api_visibility="private",
                       show_progress="hidden")
    with gr.Accordion("Technical details: model cards and evaluation plots", open=False):
        figures = []
        for title, path in MODEL_CARDS.items():
            text, images = model_card(path) if path.is_file() else (f"_No model card found at `{path}`._", [])
            gr.Markdown(f"## {title}\n\n{text}")
            figures += [(str(image.resolve()), f"{title}: {image.stem.replace('_', ' ')}") for image in images]
        shown = {path for path, _ in figures}
        plots = figures + [(path, caption) for path, caption in report_images() if str(Path(path).resolve()) not in shown]
        if plots:
            gr.Gallery(plots, label="Evaluation plots", columns=2, height="auto", interactive=False,
                       elem_id="about-plots")
        else:
            gr.Markdown("_No evaluation plots yet: run `pathsynth evaluate` to create assets/reports/*.png._")
