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
from .domains import DOMAIN_FLAGS
from .images import MAX_SEED

MAX_IMAGES = 10_000  # per `generate` run: images are written as they are made, but a run should end today
MAX_SCALE = 32  # 28 px x 32 = 896 px PNGs
MAX_PER_CLASS = 2_000
MAX_EPOCHS = 1_000
MAX_REPEATS = 1_000
MAX_SD_STEPS = 50
GENERATE_BATCH = 64  # images verified and written per step of `generate`
MAX_AUDIT_ROWS = 100_000
MAX_REAL, MAX_REAL_DEFAULT = 100_000, 2_000  # real images per side of a generator evaluation (the 800-tile sample: 640)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and exit code 2, for the command and every subcommand."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def whole_number(low: int, high: int, what: str = "a whole number"):
    """An argparse ``type`` accepting integers in [low, high]; its message names the allowed range."""

    def parse(text: str) -> int:
        try:
            number = int(text.strip())
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise argparse.ArgumentTypeError(f"expected {what} from {low:,} to {high:,}, got {text!r}")
        return number

    parse.__name__ = what  # argparse shows this name if it ever reports the type itself
    return parse


def decimal(low: float, high: float):
    """An argparse ``type`` accepting a finite number in [low, high]."""

    def parse(text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            number = float("nan")
        if not low <= number <= high:  # also rejects NaN
            raise argparse.ArgumentTypeError(f"expected a number from {low:g} to {high:g}, got {text!r}")
        return number

    parse.__name__ = "a number"
    return parse


seed_number = whole_number(0, MAX_SEED, "a seed")


def writable_dir(path: str | Path) -> Path:
    """``path`` created if needed and checked writable (before any model is loaded); ``UsageError`` otherwise."""
    import tempfile

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"cannot write to {str(path)!r}: {reason}") from None
    return path


def _tissue_or_text(text: str, domain=None) -> int:
    """A class of ``domain`` (histology by default) from its name or a description."""
    from .domains import get_domain
    from .resolver import TissueResolver, tissue_from_text

    domain = get_domain(domain)
    resolver = TissueResolver if domain.flag == "pathmnist" else TissueResolver(domain=domain)
    index, resolution = tissue_from_text(text, resolver)
    if index is None:
        raise UsageError(f"could not match {text!r} to a {domain.class_noun}: {resolution.message}")
    if resolution is not None and resolution.status != "ok":
        print(f"note: {resolution.message}", file=sys.stderr)
    return index


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

    domain = _domain(args)
    if not args.text.strip():
        examples = "'fat cells' or 'tumour glands'" if domain.flag == "pathmnist" else \
            " or ".join(f"'{word}'" for word in domain.examples[:2])
        raise UsageError(f"describe a {domain.class_noun} in a few words, e.g. {examples}")
    r = TissueResolver(domain=domain).resolve(args.text)
    classes = domain.classes
    result = {"domain": domain.flag, "text": args.text, "tissue": r.tissue,
              "label": classes[r.tissue].label if r.tissue is not None else None,
              "confidence": round(float(r.confidence), 4), "status": r.status, "message": r.message,
              "candidates": [{"tissue": int(t), "label": classes[t].label, "score": round(float(s), 4)}
                             for t, s in r.candidates]}
    return result, r.message


def batch_seed(seed: int, batch: int) -> int:
    """The verify-loop seed of one batch of a seeded run: batch 0 uses ``seed`` itself (so a run of up to
    GENERATE_BATCH images is what ``Verifier.generate(tissues, seed)`` gives), later batches a derived one."""
    import numpy as np

    return seed if batch == 0 else int(np.random.SeedSequence([seed, batch]).generate_state(1)[0] & MAX_SEED)


def _generate_batch(verifier, tissue: int, count: int, seed: int, verify: bool, bar) -> tuple[list, list]:
    """(images, records) for one batch of ``count`` images of ``tissue``."""
    if not verify:
        seeds = [(seed + i) % (MAX_SEED + 1) for i in range(count)]
        images = verifier.generator.generate([tissue] * count, seeds)
        probabilities = verifier.classifier.predict_proba(images)
        return images, [{"seed": s, "verified": None, "attempts": 1, "predicted": int(p.argmax()),
                         "confidence": round(float(p[tissue]), 4), "probabilities": [round(float(x), 4) for x in p]}
                        for s, p in zip(seeds, probabilities)]
    results = verifier.generate([tissue] * count, seed=seed,
                                progress=lambda fraction, message: bar.set_postfix_str(message))
    return [r.image for r in results], [
        {"seed": r.seed, "verified": r.verified, "attempts": r.attempts, "predicted": r.predicted,
         "confidence": round(r.confidence, 4), "realism": round(r.realism, 4),
         "probabilities": [round(x, 4) for x in r.probabilities]} for r in results]


def cmd_generate(args) -> dict:
    import secrets

    from PIL import Image
    from tqdm.auto import tqdm

    from .images import scale
    from .verify import default_verifier

    domain = _domain(args)
    tissue = _tissue_or_text(args.tissue, domain)
    entry = domain.classes[tissue]
    out = writable_dir(args.out)  # every argument is checked before the models load
    verifier = default_verifier(args.backend, args.settings, domain.flag)
    seed = args.seed if args.seed is not None else secrets.randbelow(MAX_SEED + 1)
    records = []
    with tqdm(total=args.n, desc=f"{entry.abbreviation} images", unit="img", file=sys.stderr) as bar:
        for batch, start in enumerate(range(0, args.n, GENERATE_BATCH)):  # written batch by batch: memory stays flat
            count = min(GENERATE_BATCH, args.n - start)
            first = batch_seed(seed, batch) if not args.no_verify else (seed + start) % (MAX_SEED + 1)
            images, batch_records = _generate_batch(verifier, tissue, count, first, not args.no_verify, bar)
            for image, record in zip(images, batch_records):
                path = out / f"{entry.abbreviation}_{record['seed']}.png"
                Image.fromarray(scale(image, args.scale)).save(path)
                record["path"] = str(path)
            records.extend(batch_records)
            bar.update(count)
    verified = sum(1 for r in records if r["verified"])
    result = {"domain": domain.flag, "tissue": tissue, "label": entry.label,
              "backend": getattr(verifier.generator, "name", ""),
              "verify": not args.no_verify, "seed": seed, "n": len(records), "n_verified": verified, "images": records}
    summary = (f"wrote {len(records)} {entry.display_name} image(s) to {out}"
               + ("" if args.no_verify else f" ({verified} verified)"))
    return result, summary


def _read_images(names: list[str]) -> list:
    """Every named file as an RGB uint8 array (any size, grey/RGBA/16-bit), or ``UsageError`` naming the file."""
    from PIL import Image, UnidentifiedImageError

    from .images import load_image

    images = []
    for name in names:
        try:
            images.append(load_image(name))
        except FileNotFoundError:
            raise UsageError(f"no such file: {name}") from None
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
            raise UsageError(f"not a readable image: {name} ({type(error).__name__})") from None
    return images


def cmd_classify(args) -> dict:
    from .classifier import load_classifier
    from .images import undo_pixel_upscale

    domain = _domain(args)
    if args.microns_per_pixel and domain.flag != "pathmnist":
        raise UsageError(f"--microns-per-pixel is for histology tiles; {domain.name} images are classified as given")
    images = _read_images(args.images)  # all files checked before the model loads
    classifier = _domain_classifier(args, domain)
    # A tile saved enlarged (e.g. `generate --scale 8`) is shrunk back exactly, so the answer does not depend on
    # the size it was saved at; other sizes are left to the classifier's own resizing.
    reduced = [undo_pixel_upscale(image, classifier.input_size) for image in images]
    if args.microns_per_pixel:  # another lab's tile: physical scale and stain normalisation, with notes
        probabilities, notes = classifier.predict_external([image for image, _ in reduced], args.microns_per_pixel)
    else:
        probabilities, notes = classifier.predict_proba([image for image, _ in reduced]), [[] for _ in images]
    rows = []
    for path, original, (_, factor), p, note in zip(args.images, images, reduced, probabilities, notes):
        top = int(p.argmax())
        rows.append({"path": path, "tissue": top, "label": domain.classes[top].label,
                     "confidence": round(float(p[top]), 4), "size": list(original.shape[:2]), "reduced_by": factor,
                     "preparation": note,
                     "probabilities": {domain.classes[i].abbreviation: round(float(x), 4) for i, x in enumerate(p)}})
    human = "\n".join(f"{r['path']}: {r['label']} ({r['confidence']:.2f})"
                      + (f" [pixel-exact {r['reduced_by']}x enlargement, classified at its original size]"
                         if r["reduced_by"] > 1 else "")
                      + (f" [{'; '.join(r['preparation'])}]" if r["preparation"] else "") for r in rows)
    return {"predictions": rows}, human


def _domain(args):
    """The ``--domain`` of a subcommand (:mod:`pathsynth.domains`); histology when absent."""
    from .domains import get_domain

    return get_domain(getattr(args, "domain", None))


def _domain_classifier(args, domain):
    """``--model``, else the domain's shipped classifier, on the settings' device; the classifier must be of the
    domain (a histology network cannot grade films)."""
    from .classifier import load_classifier
    from .settings import model_dir

    classifier = load_classifier(args.model or model_dir(args.settings, domain.flag, "classifier"))
    trained_on = classifier.config.get("domain", "pathmnist")  # classifiers before domains: histology
    if trained_on != domain.flag:
        raise UsageError(f"the classifier in {args.model} is a {trained_on} model, not {domain.flag}: "
                         f"pass --domain {trained_on}")
    return classifier.to(args.settings.device)


def _domain_evaluator(args, domain):
    """The evaluator network of a domain (another seed and recipe than its verifier): histology's default, else
    ``assets/models/<flag>/evaluator``."""
    from .settings import model_dir

    return None if domain.flag == "pathmnist" else model_dir(args.settings, domain.flag, "evaluator")


def _load_eval_data(args, size: int):
    """(images, labels, source) for ``evaluate classifier``: the ``--split`` of ``--data`` (default
    ``$PATHSYNTH_DATA``, else medmnist) at ``size`` px; a train-only npz (like the 800-tile sample the shipped
    models were trained on) gives its held-out fold 0 (never trained on). An npz of another size is refused."""
    from .data import display_split, load_domain, load_npz, load_pathmnist, train_val_split

    domain = _domain(args)
    if domain.flag != "pathmnist":  # other domains ship their official splits: no folds
        data = args.data or None
        return (*load_domain(domain, args.split, data), f"{data or domain.flag}:{args.split}")

    data = args.data or args.settings.data or "medmnist"
    if data == "medmnist":
        return (*load_pathmnist(args.split, size, data), f"medmnist:{args.split}")
    if display_split(data) == "train":  # no val or test split: the project's held-out fold
        images, labels = load_npz(data, "train", size)
        _, val_idx = train_val_split(labels)
        return images[val_idx], labels[val_idx], f"{Path(data).name} validation fold 0"
    return (*load_npz(data, args.split, size), f"{data}:{args.split}")


def cmd_evaluate_classifier(args) -> dict:
    from .evaluation import evaluate_classifier

    if args.out:
        writable_dir(args.out)
    domain = _domain(args)
    classifier = _domain_classifier(args, domain)
    size = args.size or classifier.input_size  # the classifier's own tile size unless asked otherwise
    if size != classifier.input_size:
        print(f"note: the classifier takes {classifier.input_size} px tiles; the {size} px images are resized",
              file=sys.stderr)
    images, labels, source = _load_eval_data(args, size)
    result = evaluate_classifier(classifier, images, labels, out_dir=args.out, tta=args.tta, domain=domain)
    result["data"] = source
    return result, (f"{source}: accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} "
                    f"on {result['n']} images ({size} px)")


def cmd_evaluate_generator(args) -> dict:
    from .evaluation import evaluate_generator, load_evaluator
    from .evaluation.protocol import check_sizes, real_split
    from .verify import Verifier, default_verifier

    writable_dir(args.out)
    domain = _domain(args)
    shipped = default_verifier(args.backend, args.settings, domain.flag)
    size = getattr(shipped.generator, "output_size", 28)
    # refuses data of another size, naming the fix
    split = real_split(args.data, args.fold, size, args.max_real, domain=domain)
    evaluator = load_evaluator(args.evaluator or _domain_evaluator(args, domain)).to(args.settings.device)
    check_sizes(shipped.generator, split, evaluator)  # before the loop's reference features are computed
    # The realism reference is the training fold only, so held-out images stay unseen by every part of the loop.
    verifier = Verifier(shipped.generator, shipped.classifier, split.train_images, split.train_labels,
                        threshold=shipped.threshold, realism_threshold=shipped.realism_threshold,
                        max_attempts=shipped.max_attempts)
    result = evaluate_generator(verifier, split, evaluator, per_class=args.per_class,
                                out_dir=args.out, seed=args.seed, cas_epochs=args.cas_epochs, cas_model=args.cas_model,
                                c2st_epochs=args.c2st_epochs)
    human = (f"{size} px: C2ST {result['c2st_balanced_accuracy']:.3f} (AUC {result['c2st_auc']:.3f}); "
             f"FID {result['fid']:.2f} vs real {result['fid_real_baseline']:.2f}, whole held-out fold "
             f"{result['fid_whole_fold']:.2f} vs real {result['fid_whole_fold_real_baseline']:.2f}; precision/recall "
             f"{result['precision']:.2f}/{result['recall']:.2f}; macro-F1 raw {result['macro_f1_raw']:.4f}, "
             f"verified {result['macro_f1_verified']:.4f}; first-try acceptance {result['first_try_acceptance']:.2%}; "
             f"near copies {result['near_copy_rate']:.2%}; CAS {result['cas_accuracy']:.4f}")
    return result, human


def cmd_evaluate_compare(args) -> dict:
    from .evaluation.report import comparison_markdown, load_generator_report

    names = [Path(path).name if Path(path).is_dir() else Path(path).parent.name for path in args.reports]
    if len(set(names)) < len(names):  # two reports in folders of one name: tell them apart by their whole path
        names = list(args.reports)
    try:
        reports = {name: load_generator_report(path) for name, path in zip(names, args.reports)}
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    table = comparison_markdown(reports)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    return {"table": table, "out": args.out}, table


def cmd_evaluate_curve(args) -> dict:
    from .evaluation import load_evaluator
    from .evaluation.protocol import real_split, realism_curve
    from .generators.embedded import pipeline_sample_size

    if not (Path(args.run_dir) / "snapshots").is_dir():
        raise UsageError(f"no snapshots/ folder in {args.run_dir!r}: expected a train/generator.py --out_dir")
    writable_dir(args.run_dir)
    snapshots = sorted((Path(args.run_dir) / "snapshots").glob("step_*"))
    size = pipeline_sample_size(snapshots[0]) if snapshots else 28  # the real tiles must be the snapshots' size
    split = real_split(args.data, args.fold, size, args.max_real)
    rows = realism_curve(args.run_dir, load_evaluator(args.evaluator), split, step_offset=args.step_offset,
                         per_class=args.per_class)
    human = "\n".join(f"step {r['step']}: C2ST {r['c2st_balanced_accuracy']:.3f}, FID {r['fid']:.2f} "
                      f"(real {r['fid_real_baseline']:.2f})" for r in sorted(rows, key=lambda r: r["step"]))
    return {"points": rows, "png": str(Path(args.run_dir) / "realism.png")}, human


def cmd_bench(args) -> dict:
    from .bench import compare_domains, compare_verified, run_benchmark, write_reports
    from .verify import default_verifier

    if args.out:
        writable_dir(args.out)
    verifier = default_verifier(args.backend, args.settings)
    result = run_benchmark(verifier, verifier.classifier, repeats=args.repeats, sd_steps_timed=args.sd_steps,
                           cold_start=not args.no_cold_start)
    if args.baseline_generator:  # e.g. the previous model: same classifier, same reference, interleaved runs
        from .generators.embedded import EmbeddedGenerator, PathSynthPipeline

        baseline = copy.copy(verifier)
        baseline.generator = EmbeddedGenerator(PathSynthPipeline.from_pretrained(args.baseline_generator),
                                               guidance_scale=args.baseline_guidance,
                                               guidance_interval=tuple(args.baseline_interval),
                                               timestep_power=args.baseline_timestep_power)
        if args.baseline_one_sampler:
            baseline.generator.tissue_sampler = {}
        result.update(compare_verified(verifier, baseline, args.repeats), baseline_generator=args.baseline_generator)
    if args.domains:  # one verified image per domain, interleaved (e.g. a chest film beside a histology tile)
        verifiers = {flag: verifier if flag == "pathmnist" else default_verifier("embedded", args.settings, flag)
                     for flag in dict.fromkeys(["pathmnist", *args.domains])}
        result.update(compare_domains(verifiers, args.repeats))
    if args.out:
        result = write_reports(result, args.out)
    human = "\n".join(f"{k}: {v}" for k, v in result.items() if not isinstance(v, (dict, list)))
    for flag, row in result.get("verified_by_domain", {}).items():
        human += f"\nverified {flag}: p50 {row['p50_s']:.3f} s, p95 {row['p95_s']:.3f} s, {row['mean_attempts']:.2f} tries"
    return result, human


def _store(settings):
    """The app's database (galleries, learners, accounts), upgraded to this PathSynth's schema if older."""
    from .gallery import GalleryStore

    return GalleryStore(settings.home, database_url=settings.database_url)


def _read_password(args) -> str:
    """A new password: the first line of stdin (``--password-stdin``) or typed twice at a prompt (not echoed)."""
    import getpass

    from .instructors import check_password

    if args.password_stdin:
        return check_password(sys.stdin.readline().rstrip("\r\n"))
    try:
        password = check_password(getpass.getpass(f"New password for {args.name}: "))
        again = getpass.getpass("Type it again: ")
    except EOFError:
        raise UsageError("no password given (use --password-stdin in scripts)") from None
    if again != password:
        raise UsageError("the two passwords differ; nothing was changed")
    return password


def cmd_instructors_add(args) -> dict:
    from .instructors import clean_username, create_account

    name = clean_username(args.name)  # a bad name is refused before the password is asked
    password = _read_password(args)
    with _store(args.settings) as store:
        account = create_account(store.database, name, password)
    return {"username": account.username, "created_at": account.created_at}, f"added instructor account {name}"


def cmd_instructors_passwd(args) -> dict:
    from .instructors import get_account, set_password

    with _store(args.settings) as store:
        name = get_account(store.database, args.name).username  # an unknown name is refused before the prompt
        set_password(store.database, name, _read_password(args))
    return {"username": name}, f"changed the password of {name}"


def cmd_instructors_disable(args) -> dict:
    from .instructors import get_account, set_disabled

    disable = args.action == "disable"
    with _store(args.settings) as store:
        name = get_account(store.database, args.name).username
        set_disabled(store.database, name, disable)
    return {"username": name, "disabled": disable}, f"{'disabled' if disable else 'enabled'} {name}"


def cmd_instructors_list(args) -> dict:
    from .instructors import list_accounts

    with _store(args.settings) as store:
        accounts = list_accounts(store.database)
    rows = [{"username": a.username, "disabled": a.disabled, "created_at": a.created_at} for a in accounts]
    human = "\n".join(f"{a.username:<40} {'disabled' if a.disabled else 'active  '} created {a.created_at[:16]}"
                      for a in accounts) or "no instructor accounts yet (add one: pathsynth instructors add NAME)"
    return {"accounts": rows}, human


def cmd_instructors_audit(args) -> dict:
    from dataclasses import asdict

    from .instructors import audit_log

    with _store(args.settings) as store:
        entries = audit_log(store.database, limit=args.limit, actor=args.actor)
    human = "\n".join(f"{e.at[:19]}  {e.actor or '-':<20} {e.action} {e.target_kind}"
                      f"{'' if e.target_id is None else f' {e.target_id}'}{f': {e.detail}' if e.detail else ''}"
                      for e in entries) or "no instructor writes recorded yet"
    return {"entries": [asdict(e) for e in entries]}, human


def cmd_app(args) -> dict:
    from .app import main as serve

    serve(port=args.port)
    return {"stopped": True}, "app stopped"


def cmd_worker(args) -> dict:
    import logging

    from .worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stock = run_worker(args.settings, until_full=args.until_full)
    return {"stock": stock}, f"worker stopped; stock per tissue: {stock}"


# --------------------------------------------------------------------------------------------- parser

def _instructors_parser(sub, add) -> None:
    """``pathsynth instructors add|passwd|disable|enable|list|audit`` (``add`` makes a subcommand, as in
    ``build_parser``)."""
    data = sub.add_parser("data", help="where real tiles come from; download PathMNIST",
                          description="No dataset ships with PathSynth: real tiles come from $PATHSYNTH_DATA (a local "
                                      "npz), else medmnist's file under $PATHSYNTH_MEDMNIST_ROOT (~/.medmnist).")
    dsub = data.add_subparsers(dest="action", required=True)
    for action, func, text in (("download", cmd_data_download, "download medmnist's PathMNIST file once (progress bar)"),
                               ("status", cmd_data_status, "where the app's real tiles come from (downloads nothing)")):
        add(action, func, text, dsub).add_argument("--size", type=int, choices=[28, 64, 128, 224], default=28,
                                                   help="tile size in px (default 28, the shipped models')")
    instructors = sub.add_parser("instructors", help="instructor accounts (name + password) and the audit log",
                                 description="Instructor accounts in the app's database ($PATHSYNTH_HOME or "
                                             "$PATHSYNTH_DATABASE_URL) and the log of their writes.")
    isub = instructors.add_subparsers(dest="action", required=True)
    stdin_help = "read the password from the first line of standard input (for scripts) instead of a prompt"
    p = add("add", cmd_instructors_add, "add an instructor account (password asked twice)", isub)
    p.add_argument("name", help="1 to 40 letters, digits, '.', '_' or '-' (stored in lower case)")
    p.add_argument("--password-stdin", action="store_true", help=stdin_help)
    p = add("passwd", cmd_instructors_passwd, "change an instructor account's password", isub)
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true", help=stdin_help)
    for action, text in (("disable", "stop an account signing in (what it made stays)"),
                         ("enable", "let a disabled account sign in again")):
        add(action, cmd_instructors_disable, text, isub).add_argument("name")
    add("list", cmd_instructors_list, "list the instructor accounts", isub)
    p = add("audit", cmd_instructors_audit, "the newest instructor writes: who, what, on what, when", isub)
    p.add_argument("--limit", type=whole_number(1, MAX_AUDIT_ROWS), default=50, help=f"rows (1 to {MAX_AUDIT_ROWS:,})")
    p.add_argument("--actor", default=None, help="only this instructor's writes")


def cmd_data_download(args) -> dict:
    from .data import download_pathmnist

    path = download_pathmnist(args.size, args.settings.medmnist_root)
    return {"path": str(path)}, f"PathMNIST ({args.size} px) is at {path}: the app shows real tiles after a restart"


def cmd_data_status(args) -> dict:
    """Where the app's real tiles would come from now (nothing is downloaded)."""
    from .data import DataUnavailableError, display_split, local_pathmnist_file, no_real_tiles_message

    try:
        path = local_pathmnist_file(args.size, args.settings.data, args.settings.medmnist_root)
    except DataUnavailableError as error:
        return {"path": None, "split": None, "reason": str(error)}, f"{no_real_tiles_message(args.size)} ({error})"
    split = display_split(path)
    return {"path": str(path), "split": split}, f"real tiles: the {split} split of {path}"


def _real_data_arguments(p) -> None:
    """The real images a generator is measured against: the data it was trained on, at the generator's tile size."""
    p.add_argument("--data", default=None, help="the generator's training data: npz in medmnist layout or 'medmnist' "
                   "(default: $PATHSYNTH_DATA, else medmnist); loaded at the generator's tile size")
    p.add_argument("--fold", type=whole_number(0, 4, "a fold"), default=0, help="held-out fold of a train-only npz")
    p.add_argument("--max-real", type=whole_number(2, MAX_REAL), default=MAX_REAL_DEFAULT,
                   help=f"at most this many training and held-out real images each (stratified; default "
                        f"{MAX_REAL_DEFAULT:,}: full PathMNIST has 90,000 training tiles)")


# Subcommands that work for every domain so far; the others are histology's until their chest X-ray models ship.
EVERY_DOMAIN = frozenset({"cmd_classify", "cmd_evaluate_classifier", "cmd_evaluate_generator", "cmd_generate",
                          "cmd_resolve"})


def check_domain(args) -> None:
    """A clear refusal for a subcommand asked for a domain it cannot serve yet (instead of histology's models)."""
    if getattr(args, "domain", "pathmnist") != "pathmnist" and args.func.__name__ not in EVERY_DOMAIN:
        name = " ".join(filter(None, (args.command, getattr(args, "target", None), getattr(args, "action", None))))
        raise UsageError(f"`pathsynth {name}` is histology-only so far (no {args.domain} model for it ships yet); "
                         f"for {args.domain}, use: generate, classify, resolve, evaluate classifier, evaluate "
                         "generator")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pathsynth", description="Verified synthetic colorectal histopathology.")
    sub = parser.add_subparsers(dest="command", required=True)  # subparsers are Parser too (parser_class)

    def add(name, func, help_text, parent=sub):
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
        p.add_argument("--domain", choices=DOMAIN_FLAGS, default="pathmnist",
                       help="pathmnist (histology, the default) or pneumoniamnist (chest X-ray)")
        p.set_defaults(func=func)
        return p

    p = add("generate", cmd_generate, "generate (verified) images of a tissue or a free-text description")
    p.add_argument("tissue", help="a class of the --domain: index, name, abbreviation (e.g. TUM, PNA) or free text "
                   "('fat cells', 'lobar consolidation')")
    p.add_argument("-n", type=whole_number(1, MAX_IMAGES), default=1,
                   help=f"number of images (1 to {MAX_IMAGES:,}; written {GENERATE_BATCH} at a time)")
    p.add_argument("--seed", type=seed_number, default=None, help=f"0 to {MAX_SEED} (default: random)")
    p.add_argument("--out", default="pathsynth-out")
    p.add_argument("--scale", type=whole_number(1, MAX_SCALE), default=1,
                   help=f"upscale factor for the saved PNGs (nearest, 1 to {MAX_SCALE})")
    p.add_argument("--no-verify", action="store_true", help="skip the classifier check")
    p.add_argument("--backend", default=None, help="embedded | sd-lora (default: $PATHSYNTH_BACKEND or embedded)")

    p = add("classify", cmd_classify, "classify image files with the ResNet-18")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", default=None, help="classifier directory (default: shipped model)")
    p.add_argument("--microns-per-pixel", type=decimal(0.01, 100.0), default=None,
                   help="the images' scale (e.g. 0.5 for a 20x scan): resize to the classifier's PathMNIST scale "
                        "(112 um per tile: 4 um/px at 28 px) and normalise the stain, for tiles from other labs")

    p = add("resolve", cmd_resolve, "turn a free-text description into a tissue")
    p.add_argument("text")

    evaluate = sub.add_parser("evaluate", help="evaluate the classifier or the generator")
    esub = evaluate.add_subparsers(dest="target", required=True)
    p = add("classifier", cmd_evaluate_classifier, "accuracy, macro-F1, AUC, per-class scores, confusion matrix", esub)
    p.add_argument("--data", default=None, help="npz in medmnist layout, or 'medmnist' (default: $PATHSYNTH_DATA, else medmnist; a train-only "
                   "npz gives its held-out fold 0)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--size", type=whole_number(1, 224, "an image size"), default=None, choices=[28, 64, 128, 224],
                   help="tile size of the data (default: the classifier's own input size)")
    p.add_argument("--model", default=None)
    p.add_argument("--out", default=None, help="directory for the confusion-matrix PNG and report")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    p = add("generator", cmd_evaluate_generator, "paper protocol, FID/KID, memorisation, CAS, loop statistics", esub)
    p.add_argument("--per-class", type=whole_number(1, MAX_PER_CLASS), default=100)
    p.add_argument("--out", default="pathsynth-eval")
    p.add_argument("--seed", type=seed_number, default=0)
    p.add_argument("--cas-epochs", type=whole_number(1, MAX_EPOCHS), default=30, help="epochs of the classifier trained on generated images")
    p.add_argument("--cas-model", default="small", choices=["small", "resnet18"])
    p.add_argument("--c2st-epochs", type=whole_number(1, MAX_EPOCHS), default=30, help="epochs of the real-vs-generated discriminator")
    p.add_argument("--evaluator", default=None, help="evaluator network directory (default: assets/models/evaluator; "
                   "it must take the generator's tile size)")
    p.add_argument("--backend", default=None)
    _real_data_arguments(p)
    p = add("compare", cmd_evaluate_compare, "generator reports side by side in one table (any backends, sizes)", esub)
    p.add_argument("reports", nargs="+", help="`evaluate generator --out` directories (or their report.json)")
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    p = add("curve", cmd_evaluate_curve, "realism (C2ST, evaluator FID) of every snapshot of a training run", esub)
    p.add_argument("run_dir", help="a train/generator.py --out_dir holding snapshots/step_*")
    p.add_argument("--per-class", type=whole_number(1, MAX_PER_CLASS), default=40)
    p.add_argument("--step-offset", type=whole_number(0, 10**9), default=0, help="steps before the run (snapshots without total_step)")
    p.add_argument("--evaluator", default=None)
    _real_data_arguments(p)

    p = add("bench", cmd_bench, "latency and throughput, side by side with Stable Diffusion v1.5's cost")
    p.add_argument("--repeats", type=whole_number(1, MAX_REPEATS), default=20)
    p.add_argument("--sd-steps", type=whole_number(1, MAX_SD_STEPS), default=1, help="Stable Diffusion UNet steps to time (then extrapolated)")
    p.add_argument("--no-cold-start", action="store_true", help="skip the fresh-process model-loading measurement")
    p.add_argument("--out", default=None, help="directory for bench.json and bench.md")
    p.add_argument("--backend", default=None)
    p.add_argument("--domains", nargs="+", choices=DOMAIN_FLAGS, default=[],
                   help="also time one verified image of these domains, interleaved with histology's (same run)")
    p.add_argument("--baseline-generator", default=None,
                   help="an embedded generator directory to time side by side (interleaved) with the current one")
    p.add_argument("--baseline-timestep-power", type=decimal(0.1, 10.0), default=1.0,
                   help="the baseline's timestep spacing T(1-i/N)^power (models before v2.2: 1, evenly spaced)")
    p.add_argument("--baseline-guidance", type=decimal(0.0, 50.0), default=2.0, help="the baseline's guidance scale (first model: 2)")
    p.add_argument("--baseline-interval", type=decimal(0.0, 1.0), nargs=2, default=[0.0, 1.0], metavar=("LO", "HI"),
                   help="the baseline's guidance interval in t/T (first model: 0 1, i.e. every step)")
    p.add_argument("--baseline-one-sampler", action="store_true",
                   help="the baseline draws every tissue with the same sampler (models before v2.9: no per-tissue "
                        "settings such as background's 40 steps)")

    _instructors_parser(sub, add)

    p = add("worker", cmd_worker, "fill the verified-image pool the app replicas share (see docs/deployment.md)")
    p.add_argument("--until-full", action="store_true", help="stop once every tissue is stocked")

    p = add("app", cmd_app, "launch the Gradio app")
    p.add_argument("--port", type=whole_number(1, 65535, "a port"), default=None, help="default: $PORT, $GRADIO_SERVER_PORT or 7860")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import DataUnavailableError, ModelFileError
    from .settings import Settings

    try:
        args.settings = Settings.from_env()
        check_domain(args)
        result, human = args.func(args)
    except (UsageError, DataUnavailableError, ModelFileError, ValueError, KeyError) as error:
        message = error.args[0] if error.args else str(error)
        print(f"pathsynth {args.command}: error: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"error": str(message)}))
        return 2
    except OSError as error:  # e.g. the disk filled up mid-run: one line, not a traceback
        print(f"pathsynth {args.command}: error: {error}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"error": str(error)}))
        return 1
    except KeyboardInterrupt:
        return 130
    if human and args.json:
        print(human, file=sys.stderr)
    _emit(result, args.json, human)
    return 0
