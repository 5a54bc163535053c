"""The ``pathsynth`` command line.

Convention for every subcommand: human-readable progress on stderr; with ``--json`` the last line of stdout
is one JSON object with the results; a non-zero exit code with a one-line reason on bad input.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path


from .errors import BadInputError as UsageError  # bad input from the user: one line, exit code 2


def _tissue_or_text(text: str) -> int:
    from .resolver import TissueResolver, tissue_from_text

    index, resolution = tissue_from_text(text, TissueResolver)
    if index is None:
        raise UsageError(f"could not match {text!r} to a tissue: {resolution.message}")
    if resolution is not None and resolution.status != "ok":
        print(f"note: {resolution.message}", file=sys.stderr)
    return index


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _emit(result: dict, as_json: bool, human: str) -> None:
    if as_json:
        print(json.dumps(result, default=_json_default))
    else:
        print(human)


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray,)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ------------------------------------------------------------------------------------------ commands

def cmd_resolve(args) -> dict:
    from .resolver import TissueResolver
    from .tissues import TISSUES

    r = TissueResolver().resolve(args.text)
    result = {"text": args.text, "tissue": r.tissue, "label": TISSUES[r.tissue].label if r.tissue is not None else None,
              "confidence": round(float(r.confidence), 4), "status": r.status, "message": r.message,
              "candidates": [{"tissue": int(t), "label": TISSUES[t].label, "score": round(float(s), 4)}
                             for t, s in r.candidates]}
    return result, r.message


def cmd_generate(args) -> dict:
    from PIL import Image

    from .generators import MAX_SEED
    from .images import scale
    from .tissues import TISSUES
    from .verify import default_verifier

    tissue = _tissue_or_text(args.tissue)
    verifier = default_verifier(args.backend, args.settings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed = args.seed
    if args.no_verify:
        import numpy as np

        base = seed if seed is not None else int(np.random.default_rng().integers(MAX_SEED + 1))
        seeds = [base + i for i in range(args.n)]
        images = verifier.generator.generate([tissue] * args.n, seeds)
        probabilities = verifier.classifier.predict_proba(images)
        records = [{"seed": s, "verified": None, "attempts": 1, "predicted": int(p.argmax()),
                    "confidence": float(p[tissue]), "probabilities": [round(float(x), 4) for x in p]}
                   for s, p in zip(seeds, probabilities)]
    else:
        def progress(fraction, message):
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr)

        results = verifier.generate([tissue] * args.n, seed=seed, progress=progress)
        images = [r.image for r in results]
        records = [{"seed": r.seed, "verified": r.verified, "attempts": r.attempts, "predicted": r.predicted,
                    "confidence": round(r.confidence, 4), "realism": round(r.realism, 4),
                    "probabilities": [round(x, 4) for x in r.probabilities]} for r in results]
    for i, (image, record) in enumerate(zip(images, records)):
        path = out / f"{TISSUES[tissue].abbreviation}_{record['seed']}.png"
        Image.fromarray(scale(image, args.scale)).save(path)
        record["path"] = str(path)
    verified = sum(1 for r in records if r["verified"])
    result = {"tissue": tissue, "label": TISSUES[tissue].label, "backend": getattr(verifier.generator, "name", ""),
              "verify": not args.no_verify, "n": len(records), "n_verified": verified, "images": records}
    summary = (f"wrote {len(records)} {TISSUES[tissue].display_name} image(s) to {out}"
               + ("" if args.no_verify else f" ({verified} verified)"))
    return result, summary


def cmd_classify(args) -> dict:
    from PIL import Image, UnidentifiedImageError

    from .classifier import load_classifier
    from .tissues import TISSUES

    images, paths = [], []
    for name in args.images:
        try:
            with Image.open(name) as img:
                img.load()
                images.append(img.convert("RGB"))
        except FileNotFoundError:
            raise UsageError(f"no such file: {name}") from None
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
            raise UsageError(f"not a readable image: {name} ({type(error).__name__})") from None
        paths.append(name)
    classifier = load_classifier(args.model or args.settings.classifier_dir)
    probabilities = classifier.predict_proba(images)
    rows = []
    for path, p in zip(paths, probabilities):
        top = int(p.argmax())
        rows.append({"path": path, "tissue": top, "label": TISSUES[top].label, "confidence": round(float(p[top]), 4),
                     "probabilities": {TISSUES[i].abbreviation: round(float(x), 4) for i, x in enumerate(p)}})
    human = "\n".join(f"{r['path']}: {r['label']} ({r['confidence']:.2f})" for r in rows)
    return {"predictions": rows}, human


def _load_eval_data(args):
    from .data import load_npz, load_pathmnist

    if args.data and args.data != "medmnist":
        return load_npz(args.data, args.split)
    return load_pathmnist(args.split, args.size, args.data)


def cmd_evaluate_classifier(args) -> dict:
    from .classifier import load_classifier
    from .data import BUNDLED_SAMPLE, train_val_split
    from .evaluation import evaluate_classifier

    if args.data is None:  # default: the held-out fold of the bundled sample (never trained on)
        from .data import load_npz

        images, labels = load_npz(BUNDLED_SAMPLE, "train")
        _, val_idx = train_val_split(labels)
        images, labels = images[val_idx], labels[val_idx]
        source = f"{BUNDLED_SAMPLE.name} validation fold 0"
    else:
        images, labels = _load_eval_data(args)
        source = f"{args.data}:{args.split}"
    result = evaluate_classifier(load_classifier(args.model or args.settings.classifier_dir), images, labels, out_dir=args.out,
                                 tta=None if args.tta is None else args.tta)
    result["data"] = source
    return result, (f"{source}: accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} "
                    f"on {result['n']} images")


def cmd_evaluate_generator(args) -> dict:
    from .evaluation import evaluate_generator, load_evaluator
    from .evaluation.protocol import real_split
    from .verify import Verifier, default_verifier

    shipped = default_verifier(args.backend, args.settings)
    split = real_split()
    # The realism reference is the training fold only, so held-out images stay unseen by every part of the loop.
    verifier = Verifier(shipped.generator, shipped.classifier, split.train_images, split.train_labels,
                        threshold=shipped.threshold, realism_threshold=shipped.realism_threshold,
                        max_attempts=shipped.max_attempts)
    result = evaluate_generator(verifier, split, load_evaluator(args.evaluator), per_class=args.per_class,
                                out_dir=args.out, seed=args.seed, cas_epochs=args.cas_epochs, cas_model=args.cas_model,
                                c2st_epochs=args.c2st_epochs)
    human = (f"C2ST {result['c2st_balanced_accuracy']:.3f} (AUC {result['c2st_auc']:.3f}); "
             f"FID {result['fid']:.2f} vs real {result['fid_real_baseline']:.2f}; precision/recall "
             f"{result['precision']:.2f}/{result['recall']:.2f}; macro-F1 raw {result['macro_f1_raw']:.4f}, "
             f"verified {result['macro_f1_verified']:.4f}; first-try acceptance {result['first_try_acceptance']:.2%}; "
             f"near copies {result['near_copy_rate']:.2%}; CAS {result['cas_accuracy']:.4f}")
    return result, human


def cmd_evaluate_curve(args) -> dict:
    from .evaluation import load_evaluator
    from .evaluation.protocol import real_split, realism_curve

    rows = realism_curve(args.run_dir, load_evaluator(args.evaluator), real_split(), step_offset=args.step_offset,
                         per_class=args.per_class)
    human = "\n".join(f"step {r['step']}: C2ST {r['c2st_balanced_accuracy']:.3f}, FID {r['fid']:.2f} "
                      f"(real {r['fid_real_baseline']:.2f})" for r in sorted(rows, key=lambda r: r["step"]))
    return {"points": rows, "png": str(Path(args.run_dir) / "realism.png")}, human


def cmd_bench(args) -> dict:
    from .bench import compare_verified, run_benchmark, write_reports
    from .verify import default_verifier

    verifier = default_verifier(args.backend, args.settings)
    result = run_benchmark(verifier, verifier.classifier, repeats=args.repeats, sd_steps_timed=args.sd_steps,
                           cold_start=not args.no_cold_start)
    if args.baseline_generator:  # e.g. the previous model: same classifier, same reference, interleaved runs
        from .generators.embedded import EmbeddedGenerator, PathSynthPipeline

        baseline = copy.copy(verifier)
        baseline.generator = EmbeddedGenerator(PathSynthPipeline.from_pretrained(args.baseline_generator),
                                               guidance_scale=args.baseline_guidance,
                                               guidance_interval=tuple(args.baseline_interval))
        result.update(compare_verified(verifier, baseline, args.repeats), baseline_generator=args.baseline_generator)
    if args.out:
        result = write_reports(result, args.out)
    human = "\n".join(f"{k}: {v}" for k, v in result.items() if not isinstance(v, (dict, list)))
    return result, human


def cmd_app(args) -> dict:
    from .app import main as serve

    serve(port=args.port)
    return {"stopped": True}, "app stopped"


# --------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pathsynth", description="Verified synthetic colorectal histopathology.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_text, parent=sub):
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
        p.set_defaults(func=func)
        return p

    p = add("generate", cmd_generate, "generate (verified) images of a tissue or a free-text description")
    p.add_argument("tissue", help="tissue index, name, abbreviation (e.g. TUM) or free text ('fat cells')")
    p.add_argument("-n", type=_positive, default=1, help="number of images")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default="pathsynth-out")
    p.add_argument("--scale", type=_positive, default=1, help="upscale factor for the saved PNGs (nearest)")
    p.add_argument("--no-verify", action="store_true", help="skip the classifier check")
    p.add_argument("--backend", default=None, help="embedded | sd-lora (default: $PATHSYNTH_BACKEND or embedded)")

    p = add("classify", cmd_classify, "classify image files with the ResNet-18")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", default=None, help="classifier directory (default: shipped model)")

    p = add("resolve", cmd_resolve, "turn a free-text description into a tissue")
    p.add_argument("text")

    evaluate = sub.add_parser("evaluate", help="evaluate the classifier or the generator")
    esub = evaluate.add_subparsers(dest="target", required=True)
    p = add("classifier", cmd_evaluate_classifier, "accuracy, macro-F1, AUC, per-class scores, confusion matrix", esub)
    p.add_argument("--data", default=None, help="npz in medmnist layout, or 'medmnist' (default: bundled held-out fold)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--model", default=None)
    p.add_argument("--out", default=None, help="directory for the confusion-matrix PNG and report")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    p = add("generator", cmd_evaluate_generator, "paper protocol, FID/KID, memorisation, CAS, loop statistics", esub)
    p.add_argument("--per-class", type=_positive, default=100)
    p.add_argument("--out", default="pathsynth-eval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cas-epochs", type=_positive, default=30, help="epochs of the classifier trained on generated images")
    p.add_argument("--cas-model", default="small", choices=["small", "resnet18"])
    p.add_argument("--c2st-epochs", type=_positive, default=30, help="epochs of the real-vs-generated discriminator")
    p.add_argument("--evaluator", default=None, help="evaluator network directory (default: assets/models/evaluator)")
    p.add_argument("--backend", default=None)
    p = add("curve", cmd_evaluate_curve, "realism (C2ST, evaluator FID) of every snapshot of a training run", esub)
    p.add_argument("run_dir", help="a train/generator.py --out_dir holding snapshots/step_*")
    p.add_argument("--per-class", type=_positive, default=40)
    p.add_argument("--step-offset", type=int, default=0, help="steps before the run (snapshots without total_step)")
    p.add_argument("--evaluator", default=None)

    p = add("bench", cmd_bench, "latency and throughput, side by side with Stable Diffusion v1.5's cost")
    p.add_argument("--repeats", type=_positive, default=20)
    p.add_argument("--sd-steps", type=_positive, default=1, help="Stable Diffusion UNet steps to time (then extrapolated)")
    p.add_argument("--no-cold-start", action="store_true", help="skip the fresh-process model-loading measurement")
    p.add_argument("--out", default=None, help="directory for bench.json and bench.md")
    p.add_argument("--backend", default=None)
    p.add_argument("--baseline-generator", default=None,
                   help="an embedded generator directory to time side by side (interleaved) with the current one")
    p.add_argument("--baseline-guidance", type=float, default=2.0, help="the baseline's guidance scale (first model: 2)")
    p.add_argument("--baseline-interval", type=float, nargs=2, default=[0.0, 1.0], metavar=("LO", "HI"),
                   help="the baseline's guidance interval in t/T (first model: 0 1, i.e. every step)")

    p = add("app", cmd_app, "launch the Gradio app")
    p.add_argument("--port", type=int, default=None, help="default: $PORT, $GRADIO_SERVER_PORT or 7860")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import DataUnavailableError, ModelFileError
    from .settings import Settings

    try:
        args.settings = Settings.from_env()
        result, human = args.func(args)
    except (UsageError, DataUnavailableError, ModelFileError, ValueError, KeyError) as error:
        message = error.args[0] if error.args else str(error)
        print(f"pathsynth {args.command}: error: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"error": str(message)}))
        return 2
    except KeyboardInterrupt:
        return 130
    if human and args.json:
        print(human, file=sys.stderr)
    _emit(result, args.json, human)
    return 0
