"""Evaluation reports: PNG figures (matplotlib's Agg canvas, no pyplot state), markdown and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..tissues import ABBREVIATIONS, LABELS, NUM_TISSUES


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)  # Agg canvas: no display, no global pyplot backend switch
    return figure


def plot_confusion_matrix(cm, path: str | Path, title: str = "", names=None) -> Path:
    """Counts in the cells, colour = row-normalised share (recall), class abbreviations on both axes."""
    cm = np.asarray(cm)
    k = cm.shape[0]
    if names is None:
        names = list(ABBREVIATIONS) if k == NUM_TISSUES else [str(c) for c in range(k)]
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    figure = _figure(6.4, 5.6)
    ax = figure.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true tissue")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.55 else "black")
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true / requested")
    ax.set_title(title or "Confusion matrix")
    figure.tight_layout()
    return _save(figure, path)


def plot_f1_comparison(f1_raw: Sequence[float], f1_verified: Sequence[float], path: str | Path,
                       title: str = "", names: Sequence[str] | None = None) -> Path:
    """Per-class F1 bars, raw generator output next to the verified output (``names``: the classes'
    abbreviations; default the tissues' for 9 classes)."""
    x = np.arange(len(f1_raw))
    if names is None:
        names = list(ABBREVIATIONS) if len(f1_raw) == NUM_TISSUES else [str(c) for c in x]
    figure = _figure(7.5, 3.8)
    ax = figure.add_subplot()
    ax.bar(x - 0.2, [v or 0 for v in f1_raw], 0.4, label="raw", color="#9aa5b1")
    ax.bar(x + 0.2, [v or 0 for v in f1_verified], 0.4, label="verified", color="#2b6cb0")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("F1")
    ax.legend(loc="upper center", ncol=2, frameon=False)
    ax.set_title(title or "Per-tissue F1 of generated images (classified by the tissue classifier)")
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def enlargement(tile_size: int, shown_px: int = 112) -> int:
    """The whole-number NEAREST enlargement that shows a tile about ``shown_px`` px across (28 px: 4x; 224 px: 1x)."""
    return max(1, round(shown_px / tile_size))


def plot_near_copy_pairs(generated: np.ndarray, training: np.ndarray, pairs: Sequence[dict], path: str | Path,
                         scale: int | None = None, title: str = "", names: Sequence[str] = ABBREVIATIONS) -> Path:
    """Rows of (generated | nearest training image), upscaled with NEAREST so no detail is invented
    (``scale``: the enlargement; default :func:`enlargement` of the tile size).

    Each pair dict has ``gen_index``, ``train_index``, ``distance`` and optionally ``tissue``,
    ``train_tissue`` (indices) and ``is_copy``.
    """
    from PIL import Image

    scale = scale or enlargement(np.asarray(generated).shape[1])

    def big(image):
        image = Image.fromarray(np.asarray(image, np.uint8))
        return np.asarray(image.resize((image.width * scale, image.height * scale), Image.NEAREST))

    per_row = 2 if len(pairs) > 1 else 1  # two pairs side by side keeps 8 pairs on one readable page
    rows = max(1, math.ceil(len(pairs) / per_row))
    figure = _figure(4.4 * per_row, 2.3 * rows + 0.6)
    for k, pair in enumerate(pairs):
        tissue, train_tissue = pair.get("tissue"), pair.get("train_tissue")
        left = figure.add_subplot(rows, 2 * per_row, 2 * k + 1)
        left.imshow(big(generated[pair["gen_index"]]), interpolation="nearest")
        left.set_title(f"generated #{pair['gen_index']}" + (f" {names[tissue]}" if tissue is not None else ""),
                       fontsize=8)
        right = figure.add_subplot(rows, 2 * per_row, 2 * k + 2)
        right.imshow(big(training[pair["train_index"]]), interpolation="nearest")
        flag = " COPY" if pair.get("is_copy") else ""
        right.set_title(f"train #{pair['train_index']}"
                        + (f" {names[train_tissue]}" if train_tissue is not None else "")
                        + f"\nd={pair['distance']:.3g}{flag}", fontsize=8, color="red" if flag else "black")
        for ax in (left, right):
            ax.set_axis_off()
    if not pairs:
        figure.text(0.5, 0.5, "no generated images", ha="center")
    figure.suptitle(title or "Generated images nearest to a training image", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def plot_sample_grid(generated: np.ndarray, generated_labels: Sequence[int], path: str | Path,
                     real: np.ndarray | None = None, real_labels: Sequence[int] | None = None,
                     per_tissue: int = 8, scale: int | None = None, title: str = "",
                     names: Sequence[str] = ABBREVIATIONS) -> Path:
    """One row per tissue: ``per_tissue`` generated images, then as many real ones when given (NEAREST
    upscaling by ``scale``, default :func:`enlargement`, so no detail is invented). Tiles are drawn at the
    generated images' size."""
    from PIL import Image

    tile = int(np.asarray(generated).shape[1])
    scale = scale or enlargement(tile)

    def row_of(images, labels, tissue):
        picked = np.asarray(images)[np.asarray(labels).reshape(-1) == tissue][:per_tissue]
        row = np.full((tile, tile * per_tissue, 3), 255, np.uint8)
        for k, image in enumerate(picked):
            resized = Image.fromarray(np.asarray(image, np.uint8)).resize((tile, tile))
            row[:, tile * k:tile * (k + 1)] = np.asarray(resized)
        return np.asarray(Image.fromarray(row).resize((row.shape[1] * scale, tile * scale), Image.NEAREST))

    columns = 1 if real is None else 2
    rows = len(names)  # one row per class
    figure = _figure(0.5 * per_tissue * columns + 1.6, 0.55 * rows + 0.7)
    for tissue in range(rows):
        panels = [row_of(generated, generated_labels, tissue)]
        if real is not None:
            panels.append(row_of(real, real_labels, tissue))
        for column, panel in enumerate(panels):
            ax = figure.add_subplot(rows, columns, tissue * columns + column + 1)
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(names[tissue], rotation=0, ha="right", va="center", fontsize=8)
            if tissue == 0:
                ax.set_title("generated" if column == 0 else "real (held out)", fontsize=9)
    figure.suptitle(title or "Samples per tissue", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_realism_curve(rows: Sequence[dict], path: str | Path) -> Path:
    """C2ST balanced accuracy (overall and worst tissue) and evaluator FID against training steps."""
    steps = [r["step"] for r in rows]
    figure = _figure(7.5, 3.6)
    left = figure.add_subplot(1, 2, 1)
    left.plot(steps, [r["c2st_balanced_accuracy"] for r in rows], "o-", label="C2ST overall")
    left.plot(steps, [r["c2st_worst_balanced_accuracy"] for r in rows], "s--", label="C2ST worst tissue")
    left.axhline(0.70, color="green", lw=0.8, ls=":", label="target overall (0.70)")
    left.axhline(0.5, color="grey", lw=0.8, label="indistinguishable")
    left.set_ylim(0.45, 1.02)
    left.set_xlabel("training steps (total)")
    left.set_ylabel("balanced accuracy")
    left.legend(fontsize=7)
    right = figure.add_subplot(1, 2, 2)
    right.plot(steps, [r["fid"] / r["fid_real_baseline"] for r in rows], "o-", color="#b7410e")
    right.axhline(1.5, color="green", lw=0.8, ls=":", label="target (1.5x)")
    right.set_xlabel("training steps (total)")
    right.set_ylabel("FID / real-vs-real FID (evaluator)")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    figure.suptitle("Realism against training steps (lower is more realistic)", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------- writing

def jsonable(value):
    """numpy scalars/arrays -> Python; NaN/inf -> None, so ``json.dumps`` gives strict JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(data), indent=2, allow_nan=False))


def markdown_table(rows: dict, columns: dict[str, str], index_name: str) -> str:
    """A markdown table of ``rows`` (name -> dict), ``columns`` mapping keys to headers (pandas + tabulate)."""
    frame = pd.DataFrame.from_dict(rows, orient="index")[list(columns)].rename(columns=columns)
    return frame.rename_axis(index_name).to_markdown(floatfmt=".4f")


def write_classifier_report(result: dict, out_dir: str | Path | None) -> dict:
    if out_dir is not None:
        out_dir = Path(out_dir)
        title = f"Classifier on {result['n']} images (acc {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f})"
        result["confusion_matrix_png"] = str(plot_confusion_matrix(result["confusion_matrix"],
                                                                   out_dir / "classifier_confusion.png", title,
                                                                   result.get("class_abbreviations")))
        if result.get("calibration"):
            result["reliability_png"] = str(plot_reliability(result["calibration"],
                                                             out_dir / "classifier_reliability.png"))
        result["report_json"] = str(out_dir / "classifier_report.json")
        write_json(out_dir / "classifier_report.json", result)
        (out_dir / "classifier_report.md").write_text(classifier_markdown(result))
    return jsonable(result)


def plot_reliability(calibration: dict, path: str | Path) -> Path:
    """Reliability diagram: accuracy vs confidence per bin, before and after (cross-fitted) temperature scaling."""
    figure = _figure(5.2, 4.8)
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for key, label, colour in (("uncalibrated", "T = 1", "#c05621"),
                               ("cross_fitted", "temperature-scaled (cross-fitted)", "#2b6cb0")):
        bins = calibration[f"reliability_{key}"]
        used = [i for i, c in enumerate(bins["count"]) if c]
        ax.plot([bins["confidence"][i] for i in used], [bins["accuracy"][i] for i in used], "o-", color=colour,
                label=f"{label}: ECE {calibration[f'ece_{key}']:.3f}")
        for i in used:
            ax.annotate(str(bins["count"][i]), (bins["confidence"][i], bins["accuracy"][i]), fontsize=6,
                        textcoords="offset points", xytext=(3, -8), color=colour)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability, held-out fold (T = {calibration['temperature']:.2f}; counts per bin)")
    ax.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def classifier_markdown(result: dict) -> str:
    lo, hi = result["accuracy_ci95"]
    size = f"{result['input_size']} px input, " if result.get("input_size") else ""
    lines = [
        f"# Classifier evaluation ({size}{result['n']} images, TTA {'on' if result['tta'] else 'off'})", "",
        f"- accuracy **{result['accuracy']:.4f}** (95% Wilson CI {lo:.3f}-{hi:.3f})",
        f"- macro precision {result['macro_precision']:.4f}, recall {result['macro_recall']:.4f}, "
        f"F1 **{result['macro_f1']:.4f}**, one-vs-rest AUC {jsonable(result['auc_macro'])}", "",
        markdown_table(result["per_class"], {"precision": "precision", "recall": "recall", "f1": "F1", "auc": "AUC",
                                             "support": "support"},
                       "tissue" if result.get("domain", "pathmnist") == "pathmnist" else "finding"), ""]
    return "\n".join(lines + robustness_markdown(result))


def robustness_markdown(result: dict) -> list[str]:
    """Calibration, stain-shift and external-tile sections (absent when not measured)."""
    lines = []
    if cal := result.get("calibration"):
        t_a, t_b = cal["temperatures_cross_fitted"]
        lines += ["## Calibration", "",
                  f"- temperature shipped **T = {cal['temperature']:.3f}** (fitted on the whole held-out fold)",
                  f"- ECE ({cal['n_bins']} bins, torchmetrics) uncalibrated {cal['ece_uncalibrated']:.4f}; "
                  f"**cross-fitted {cal['ece_cross_fitted']:.4f}** (T fitted on one half, measured on the other: "
                  f"T = {t_a:.3f} / {t_b:.3f}); with the shipped T in-sample {cal['ece_shipped_in_sample']:.4f}",
                  f"- NLL uncalibrated {cal['nll_uncalibrated']:.4f}, cross-fitted {cal['nll_cross_fitted']:.4f}; "
                  f"mean top-1 confidence {cal['mean_confidence_uncalibrated']:.3f} -> "
                  f"{cal['mean_confidence_cross_fitted']:.3f}", ""]
    if shift := result.get("stain_shift"):
        lines += ["## Simulated stain shifts (held-out tiles)", "",
                  markdown_table(shift, {"accuracy": "accuracy"}, "shift"), ""]
    if ext := result.get("external"):
        rows = {name: {"accuracy": row["accuracy"], "correct": f"{row['correct']}/{ext['n']}"}
                for name, row in ext["modes"].items()}
        lines += [f"## Tiles from another lab ({ext['n']} tiles, {ext['microns_per_pixel']} um/px)", "",
                  markdown_table(rows, {"accuracy": "accuracy", "correct": "correct"}, "preparation"), ""]
    figures = [(k, result[k]) for k in ("confusion_matrix_png", "reliability_png") if result.get(k)]
    if figures:
        lines += ["## Figures", ""] + [f"![{k}]({Path(v).name})" for k, v in figures] + [""]
    return lines


def write_generator_report(result: dict, out_dir: str | Path | None, raw: np.ndarray, tissues: np.ndarray,
                           split) -> dict:
    """PNGs, ``report.json`` and ``report.md`` of :func:`~pathsynth.evaluation.evaluate_generator`."""
    result["timings"]["total_s"] = float(sum(result["timings"].values()))
    if out_dir is None:
        return jsonable(result)
    out_dir = Path(out_dir)
    labels = list(result["per_class"]) if result.get("class_abbreviations") else list(LABELS)  # the domain's order
    names = result.get("class_abbreviations") or list(ABBREVIATIONS)
    f1_raw = [result["per_class"][label]["f1_raw"] for label in labels]
    f1_verified = [result["per_class"][label]["f1_verified"] for label in labels]
    result["pngs"] = {k: str(v) for k, v in {
        "confusion_raw": plot_confusion_matrix(result["confusion_matrix_raw"], out_dir / "confusion_raw.png",
                                               f"Raw generated images (macro-F1 {result['macro_f1_raw']:.3f})"),
        "confusion_verified": plot_confusion_matrix(result["confusion_matrix_verified"],
                                                    out_dir / "confusion_verified.png",
                                                    f"Verified images (macro-F1 {result['macro_f1_verified']:.3f})"),
        "f1_bars": plot_f1_comparison(f1_raw, f1_verified, out_dir / "f1_raw_vs_verified.png", names=names),
        "samples": plot_sample_grid(raw, tissues, out_dir / "samples_generated_vs_real.png", split.heldout_images,
                                    split.heldout_labels,
                                    title="Raw generated (left, first 8 seeds per class) vs held-out real (right)",
                                    names=names),
        "near_copies": plot_near_copy_pairs(raw, split.train_images, result["nearest_pairs"],
                                            out_dir / "nearest_training_pairs.png",
                                            title="Generated images nearest to a training image (evaluator "
                                                  f"features; near copy if d <= {result['near_copy_threshold']:.3g})",
                                            names=names),
    }.items()}
    result["report_json"], result["report_md"] = str(out_dir / "report.json"), str(out_dir / "report.md")
    write_json(out_dir / "report.json", result)
    (out_dir / "report.md").write_text(generator_markdown(result))
    return jsonable(result)


# the figures a side-by-side table shows, in order: report key -> row name
COMPARED_FIGURES = {
    "generator": "backend", "image_size": "tile size (px)", "n_generated": "images generated",
    "c2st_balanced_accuracy": "C2ST balanced accuracy (0.5 = indistinguishable)", "c2st_auc": "C2ST AUC",
    "fid": "FID, evaluator features, raw", "fid_real_baseline": "FID real-vs-real", "fid_ratio": "FID ratio",
    "fid_whole_fold": "FID vs the whole held-out fold, raw", "fid_whole_fold_real_baseline": "its real-vs-real",
    "fid_whole_fold_ratio": "FID ratio, whole held-out fold",
    "precision": "precision, raw", "recall": "recall, raw", "macro_f1_raw": "macro-F1, raw (paper protocol)",
    "macro_f1_verified": "macro-F1, verified", "first_try_acceptance": "first-try acceptance",
    "near_copy_rate": "near-copy rate", "cas_accuracy": "CAS accuracy",
}


def load_generator_report(path: str | Path) -> dict:
    """A ``pathsynth evaluate generator`` result from its ``--out`` directory or its ``report.json``."""
    path = Path(path)
    path = path / "report.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no generator report at {path}: give an `evaluate generator --out` directory")
    return json.loads(path.read_text())


def comparison_markdown(reports: dict[str, dict]) -> str:
    """Several generator reports side by side (name -> report): one column each, a row per headline figure and
    the worst tissue's C2ST; a figure a report lacks (an older or partial one) is left blank."""
    columns = {}
    for name, report in reports.items():
        column = {label: _cell(report.get(key)) for key, label in COMPARED_FIGURES.items()}
        worst = max((report.get("per_class") or {}).values(), key=lambda row: row.get("c2st_balanced_accuracy") or 0, default={})
        column["C2ST, worst tissue"] = (f"{worst.get('abbreviation', '?')} {worst['c2st_balanced_accuracy']:.4f}"
                                        if worst.get("c2st_balanced_accuracy") is not None else "")
        columns[name] = column
    return pd.DataFrame(columns).rename_axis("measure").to_markdown()


def _cell(value) -> str:
    """A table cell: floats to 4 decimals, a missing figure blank."""
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def generator_markdown(r: dict) -> str:
    """A readable markdown report of an ``evaluate_generator`` result."""
    summary = {
        "C2ST balanced accuracy (0.5 = indistinguishable)": (r["c2st_balanced_accuracy"], f"AUC {r['c2st_auc']:.3f}"),
        "FID, evaluator features, raw": (r["fid"], f"real-vs-real {r['fid_real_baseline']:.3f} "
                                                   f"(ratio {r['fid_ratio']:.2f})"),
        "FID, evaluator features, raw, whole held-out fold": (
            r["fid_whole_fold"], f"real-vs-real {r['fid_whole_fold_real_baseline']:.3f} "
                                 f"(ratio {r['fid_whole_fold_ratio']:.2f}); n = {r['fid_whole_fold_n_query']} vs "
                                 f"{r['n_heldout']}"),
        "FID, evaluator features, verified": (r["fid_verified"], f"n = {r['fid_n_query']} vs {r['fid_n_reference']}"),
        "KID, raw": (r["kid"], f"± {r['kid_std']:.4f}; real-vs-real {r['kid_real_baseline']:.4f}"),
        "precision / recall, raw": (r["precision"], f"recall {r['recall']:.3f}; real-vs-real "
                                                    f"{r['precision_real_baseline']:.3f} / {r['recall_real_baseline']:.3f}"),
        "macro-F1, raw (paper protocol)": (r["macro_f1_raw"], "paper 0.6727"),
        "macro-F1, verified": (r["macro_f1_verified"], "graded by the verifier's own classifier"),
        "first-try acceptance": (r["first_try_acceptance"], f"mean attempts {r['mean_attempts']:.2f}"),
        "near-copy rate (evaluator features)": (r["near_copy_rate"], f"pixels {r['near_copy_rate_pixel']:.2%}"),
        "CAS accuracy (trained on verified)": (r["cas_accuracy"], f"trained on real {r['real_trained_accuracy']:.4f}"),
    }
    rows = {name: {"value": value, "reference": ref} for name, (value, ref) in summary.items()}
    columns = {"abbreviation": "", "c2st_balanced_accuracy": "C2ST bal. acc.", "f1_raw": "F1 raw",
               "f1_verified": "F1 verified", "first_try_acceptance": "first try", "mean_attempts": "attempts",
               "near_copies": "near copies", "cas_recall": "CAS recall", "real_trained_recall": "real recall"}
    scale = f" ({r['microns_per_pixel']:g} µm/px)" if r.get("microns_per_pixel") else ""
    size = f"{r['image_size']} px {'tiles' if scale else 'images'}{scale}; " if r.get("image_size") else ""
    lines = [f"# Generator evaluation ({r['generator']})", "",
             f"{size}{r['per_class_requested']} images per tissue ({r['n_generated']} in all), seed {r['seed']}; "
             f"{r['n_train']} training and {r['n_heldout']} held-out real images.", "", "## Summary", "",
             markdown_table(rows, {"value": "value", "reference": "reference"}, "measure"), "", "## Per tissue", "",
             markdown_table(r["per_class"], columns, "tissue"), "", "## Protocol", ""]
    lines += [f"- **{k}**: {v}" for k, v in r["protocol"].items()]
    lines += ["", "## Timings (s)", ""] + [f"- {k}: {v:.1f}" for k, v in r["timings"].items()]
    lines += ["", "## Figures", ""] + [f"![{k}]({Path(v).name})" for k, v in r.get("pngs", {}).items()]
    return "\n".join(lines) + "\n"
