"""The About tab: the model cards and the evaluation plots."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..settings import ASSETS_DIR

MODEL_CARDS = {"Classifier (ResNet-18)": ASSETS_DIR / "models" / "classifier" / "README.md",
               "Generator (class-conditional diffusion)": ASSETS_DIR / "models" / "generator" / "README.md"}
REPORTS_DIR = ASSETS_DIR / "reports"


def model_card(path: Path) -> str:
    """A model card's Markdown without its YAML front matter (metadata for the Hub, noise here)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        return f"_Model card unreadable: {error}_"
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = text[end + 4:] if end != -1 else text
    return text.strip()


def about_markdown(cards: dict[str, Path] = MODEL_CARDS) -> str:
    parts = [f"## {title}\n\n{model_card(path) if path.is_file() else f'_No model card found at `{path}`._'}"
             for title, path in cards.items()]
    return "\n\n---\n\n".join(parts)


def report_images(directory: Path = REPORTS_DIR) -> list[tuple[str, str]]:
    if not directory.is_dir():
        return []
    return [(str(p), f"{p.parent.name}: {p.stem.replace('_', ' ')}") for p in sorted(directory.rglob("*.png"))]


def build(services) -> None:
    gr.Markdown(about_markdown())
    plots = report_images()
    if plots:
        gr.Gallery(plots, label="Evaluation plots", columns=2, height="auto", interactive=False)
    else:
        gr.Markdown("_No evaluation plots yet: run `pathsynth evaluate` to create assets/reports/*.png._")
