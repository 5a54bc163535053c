"""Latency and throughput of PathSynth on this machine, side by side with the paper's generator.

The paper generates with Stable Diffusion v1.5 at 224 px. We cannot ship (or download) its weights, but
its cost does not depend on them: a ``UNet2DConditionModel`` built from the v1.5 configuration with random
weights does exactly the same arithmetic. We time a few of its denoising steps in the same run as
PathSynth's own numbers and extrapolate to a full sampling run. Only the UNet is counted (no CLIP text
encoder, no VAE decoder), so the Stable Diffusion figure is a lower bound.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .tissues import NUM_TISSUES, TISSUE_INDICES

# runwayml/stable-diffusion-v1-5 unet/config.json (the values that set the architecture and its FLOPs).
SD15_UNET_CONFIG: dict = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "center_input_sample": False,
}
SD15_TEXT_TOKENS = 77  # CLIP context length
SD15_VAE_FACTOR = 8  # 224 px image <-> 28 x 28 latent
REPO_ROOT = Path(__file__).resolve().parent.parent
COLD_START_CODE = (
    "import json, time; start = time.perf_counter(); "
    "from pathsynth.verify import default_verifier; default_verifier(); "
    "print(json.dumps({'load_s': time.perf_counter() - start}))"
)


def build_sd15_unet(config: dict | None = None):
    """Stable Diffusion v1.5's UNet from its configuration only (random weights, nothing downloaded).

    ``config`` entries override :data:`SD15_UNET_CONFIG` (tests pass a tiny one).
    """
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**{**SD15_UNET_CONFIG, **(config or {})}).eval()


def time_sd15_unet(config: dict | None = None, resolution: int = 224, steps_timed: int = 1, warmup: bool = True,
                   guidance_batch: int = 2, total_steps: int = 30, seed: int = 0) -> dict:
    """Seconds per UNet step of SD v1.5 at ``resolution`` px with classifier-free guidance (batch 2: the
    conditional and the unconditional pass), and the extrapolation to ``total_steps`` steps per image."""
    import torch

    if resolution % SD15_VAE_FACTOR:
        raise ValueError(f"resolution must be a multiple of {SD15_VAE_FACTOR}, got {resolution}")
    start = time.perf_counter()
    torch.manual_seed(seed)
    unet = build_sd15_unet(config)
    build_s = time.perf_counter() - start
    params = sum(p.numel() for p in unet.parameters())
    latent = resolution // SD15_VAE_FACTOR
    sample = torch.randn(guidance_batch, unet.config.in_channels, latent, latent)
    text = torch.randn(guidance_batch, SD15_TEXT_TOKENS, unet.config.cross_attention_dim)
    times = []
    with torch.inference_mode():
        if warmup:  # first call pays one-off allocation / kernel selection
            unet(sample, 999, encoder_hidden_states=text)
        for step in range(max(1, steps_timed)):
            t = time.perf_counter()
            unet(sample, 999 - step * (1000 // max(total_steps, 1)), encoder_hidden_states=text)
            times.append(time.perf_counter() - t)
    del unet, sample, text
    gc.collect()
    step_s = float(np.median(times))
    return {
        "sd15_unet_params": int(params),
        "sd15_build_s": build_s,
        "sd15_resolution": resolution,
        "sd15_latent": [4, latent, latent],
        "sd15_guidance_batch": guidance_batch,
        "sd15_steps_timed": len(times),
        "sd15_unet_step_s": step_s,
        "sd15_total_steps": total_steps,
        "sd15_image_s_extrapolated": step_s * total_steps,
        "sd15_note": (f"UNet2DConditionModel with the SD v1.5 configuration (random weights, same FLOPs), "
                      f"{resolution} px (latent 4x{latent}x{latent}), classifier-free guidance batch "
                      f"{guidance_batch}, median of {len(times)} timed step(s) x {total_steps} steps. CLIP text "
                      f"encoder and VAE decoder are excluded, so this is a lower bound on SD v1.5's cost."),
    }


def measure_cold_start(code: str = COLD_START_CODE, timeout: float = 600.0) -> dict:
    """Time from launching a fresh Python process until both models are loaded.

    ``cold_start_s`` is the wall time of the whole process (interpreter, imports, loading from disk);
    ``cold_start_load_s`` is what the child reports for import + load when it prints ``{"load_s": ...}``.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"cold_start_s": None, "cold_start_load_s": None, "cold_start_error": f"timed out after {timeout:g} s"}
    wall = time.perf_counter() - start
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        return {"cold_start_s": None, "cold_start_load_s": None, "cold_start_error": last}
    load_s = None
    for line in reversed(done.stdout.strip().splitlines()):
        try:
            load_s = float(json.loads(line)["load_s"])
            break
        except (ValueError, KeyError, TypeError):
            continue
    return {"cold_start_s": wall, "cold_start_load_s": load_s, "cold_start_error": None}


def _sample_images(n: int, seed: int, size: int = 28) -> np.ndarray:
    """``size`` px tiles for classifier timing: this machine's real ones (resized when ``size`` is not their
    28 px) when there are any, otherwise random ones."""
    from .data import local_display_tiles
    from .images import resize_tensor, tensor_to_uint8, uint8_to_tensor

    real = local_display_tiles()
    if real is None:
        return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    images = np.resize(real[0], (n, *real[0].shape[1:]))
    return images if images.shape[1] == size else tensor_to_uint8(resize_tensor(uint8_to_tensor(images), size))


RESOLVER_PHRASES = (
    "fat cells", "immune cell infiltrate", "tumour glands", "mucin pool", "smooth muscle bundles",
    "normal crypts", "necrotic debris", "empty slide background", "desmoplastic stroma", "lymfocytes",
    "adipse", "pools of mucus around cells", "banana spaceship", "glands", "TUM",
)


def time_resolver(resolver=None, repeats: int = 3) -> dict:
    """Free-text -> tissue latency (warm), over :data:`RESOLVER_PHRASES` repeated ``repeats`` times."""
    if resolver is None:
        from .resolver import TissueResolver

        resolver = TissueResolver()
    resolver.resolve("warm up")
    times = []
    for _ in range(max(1, repeats)):
        for phrase in RESOLVER_PHRASES:
            start = time.perf_counter()
            resolver.resolve(phrase)
            times.append(time.perf_counter() - start)
    return {"resolver_p50_ms": 1000 * float(np.percentile(times, 50)),
            "resolver_p95_ms": 1000 * float(np.percentile(times, 95)),
            "resolver_semantic": bool(getattr(resolver, "uses_encoder", False))}


def time_explanation(classifier, repeats: int = 10, seed: int = 0) -> dict:
    """The app's map (``classifier.gradcam``: occlusion for one network) on one core, p50/p95 over ``repeats``
    tiles, beside the whole ensemble's occlusion map it replaced (median of 3), the same tiles."""
    import torch

    from .explain import occlusion_map

    images = _sample_images(repeats, seed, getattr(classifier, "input_size", 28))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        classifier.gradcam(images[0])  # warm-up
        app = [_median_time(lambda image=image: classifier.gradcam(image), 1) for image in images]
        whole = _median_time(lambda: occlusion_map(classifier, images[0]), 3)
    finally:
        torch.set_num_threads(threads)
    summary = latency_summary(app)
    return dict(explanation_p50_s=summary["p50_s"], explanation_p95_s=summary["p95_s"],
                explanation_whole_model_s=whole, explanation_threads=1)


def latency_summary(seconds) -> dict:
    """``n``, ``p50_s``, ``p95_s``, ``max_s`` of a list of latencies (only ``n`` when it is empty)."""
    values = np.asarray(seconds, dtype=np.float64)
    if not values.size:
        return {"n": 0}
    return {"n": int(values.size), "p50_s": round(float(np.percentile(values, 50)), 3),
            "p95_s": round(float(np.percentile(values, 95)), 3), "max_s": round(float(values.max()), 3)}


def _median_time(function, repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _one_verified(verifier, tissue: int, seed: int) -> tuple[float, int]:
    """Seconds for one verified image (regeneration included), and the attempts it took."""
    start = time.perf_counter()
    out = verifier.generate([tissue], seed=seed)
    return time.perf_counter() - start, int(out[0].attempts)


def time_verified(verifier, repeats: int, rng: np.random.Generator, seed: int, progress: bool = True) -> dict:
    """Latency of one verified image of a random tissue, ``repeats`` times (regeneration included)."""
    latencies, attempts = [], []
    for r in tqdm(range(repeats), desc="verified latency", unit="img", disable=not progress):
        seconds, tries = _one_verified(verifier, int(rng.integers(class_count(verifier))), seed + 1 + r)
        latencies.append(seconds)
        attempts.append(tries)
    return {"verified_p50_s": float(np.percentile(latencies, 50)),
            "verified_p95_s": float(np.percentile(latencies, 95)),
            "verified_mean_s": float(np.mean(latencies)), "verified_mean_attempts": float(np.mean(attempts))}


def compare_verified(verifier, baseline, repeats: int, seed: int = 0, progress: bool = True) -> dict:
    """One verified image from ``verifier`` and from ``baseline`` (e.g. the previous generator), interleaved on the
    same tissues and seeds, so a machine whose speed drifts during the run slows both alike."""
    rng = np.random.default_rng(seed)
    verifier.generate([0], seed=seed), baseline.generate([0], seed=seed)  # warm-up
    latencies = {"new": [], "baseline": []}
    for r in tqdm(range(repeats), desc="verified latency, new vs baseline", unit="pair", disable=not progress):
        tissue = int(rng.integers(NUM_TISSUES))
        for name, candidate in (("new", verifier), ("baseline", baseline)):
            latencies[name].append(_one_verified(candidate, tissue, seed + 1 + r)[0])
    p50 = {name: float(np.percentile(values, 50)) for name, values in latencies.items()}
    return {"compare_verified_p50_s": p50["new"], "baseline_verified_p50_s": p50["baseline"],
            "compare_verified_mean_s": float(np.mean(latencies["new"])),
            "baseline_verified_mean_s": float(np.mean(latencies["baseline"])),
            "verified_p50_ratio_vs_baseline": p50["new"] / p50["baseline"], "compare_repeats": repeats}


def class_count(verifier) -> int:
    """How many classes the verifier's domain has (9 tissues; 2 findings on a film)."""
    return int(getattr(verifier.classifier, "num_classes", NUM_TISSUES))


def compare_domains(verifiers: dict, repeats: int, seed: int = 0, progress: bool = True) -> dict:
    """One verified image of a random class in each domain (``{flag: verifier}``), interleaved, so a machine whose
    speed drifts during the run slows every domain alike: e.g. a chest film against a histology tile."""
    rng = np.random.default_rng(seed)
    for verifier in verifiers.values():
        verifier.generate([0], seed=seed)  # warm-up: lazy initialisation stays out of the percentiles
    latencies = {flag: [] for flag in verifiers}
    attempts = {flag: [] for flag in verifiers}
    for r in tqdm(range(repeats), desc="verified latency per domain", unit="round", disable=not progress):
        for flag, verifier in verifiers.items():
            seconds, tries = _one_verified(verifier, int(rng.integers(class_count(verifier))), seed + 1 + r)
            latencies[flag].append(seconds)
            attempts[flag].append(tries)
    return {"verified_by_domain": {flag: {"p50_s": float(np.percentile(latencies[flag], 50)),
                                          "p95_s": float(np.percentile(latencies[flag], 95)),
                                          "mean_attempts": float(np.mean(attempts[flag]))} for flag in verifiers},
            "domain_repeats": repeats}


def time_throughput(verifier, classifier, batch_repeats: int, classifier_batch: int, repeats: int, seed: int) -> dict:
    """Nine verified images in one call, the raw generator, and the classifier with and without TTA."""
    generator, all_tissues = verifier.generator, list(TISSUE_INDICES)
    batch_seeds = iter(range(seed + 10_000, seed + 10_000 + max(1, batch_repeats)))
    batch9_s = _median_time(lambda: verifier.generate(all_tissues, seed=next(batch_seeds)), batch_repeats)
    raw_s = _median_time(lambda: generator.generate(all_tissues, [seed + i for i in all_tissues]), batch_repeats)
    tiles = _sample_images(classifier_batch, seed, getattr(classifier, "input_size", 28))
    plain_s = _median_time(lambda: classifier.predict_proba(tiles, tta=False), batch_repeats)
    tta_s = _median_time(lambda: classifier.predict_proba(tiles, tta=True), batch_repeats)
    return {"batch9_s": batch9_s, "batch9_images_per_s": NUM_TISSUES / batch9_s, "generator_batch9_s": raw_s,
            "generator_images_per_s": NUM_TISSUES / raw_s,
            "generator_single_s": _median_time(lambda: generator.generate([0], [seed]), min(5, repeats)),
            "classifier_batch": classifier_batch, "classifier_images_per_s": classifier_batch / plain_s,
            "classifier_tta_images_per_s": classifier_batch / tta_s}


QUIZ_QUESTIONS = 10
QUIZ_POOL_PER_TISSUE = 3  # verified images ready per tissue (the app keeps 8; a 10-question quiz takes about 5)


def _warm_quiz_services(verifier, classifier, questions: int, per_tissue: int, seed: int):
    """What a warm app holds for quizzes: the real sample with its probabilities, a stocked pool of verified,
    explained images, and the real tiles explained ahead (enough for ``services.real_sample``'s fast path)."""
    from .pool import ExplanationCache, VerifiedPool, gradcam_explainer
    from .services import Services, quiz_tiles_ahead

    from .data import local_display_tiles

    real = local_display_tiles()
    if real is not None:
        images, labels = real
    else:  # no data on this machine: random tiles, labels spread over the tissues
        images = np.random.default_rng(seed).integers(0, 256, (20 * NUM_TISSUES, 28, 28, 3), dtype=np.uint8)
        labels = np.arange(len(images)) % NUM_TISSUES
    labels = np.asarray(labels).reshape(-1)
    probabilities = classifier.predict_proba(images)
    explanations = ExplanationCache(gradcam_explainer(classifier))
    ahead = quiz_tiles_ahead(labels, probabilities, per_tissue=-(-2 * questions // NUM_TISSUES), seed=seed)
    pool = VerifiedPool(verifier, explanations, per_tissue,
                        ahead=[(images[i], int(probabilities[i].argmax())) for i in ahead])
    while pool.fill_once() or pool.explain_ahead():  # what the background filler does, here in this thread
        pass
    return Services(None, verifier, None, None, images, labels, probabilities, pool, explanations)


def time_quiz_start(verifier, classifier=None, repeats: int = 10, questions: int = QUIZ_QUESTIONS,
                    generated_share: float = 0.5, per_tissue: int = QUIZ_POOL_PER_TISSUE, seed: int = 0,
                    progress: bool = True, difficulty: str = "mixed") -> dict:
    """Seconds to start a ``questions``-question quiz once the app is warm, the way the Quiz tab does: real tiles
    already explained (``Services.real_sample``), ``generated_share`` of the tiles drawn from a stocked pool of
    verified images, every heatmap in the cache, the first question rendered with its scale bar. The pool is
    refilled between starts (not timed), as the app's background filler does between learners. ``difficulty``: the
    quiz's (easy, mixed, hard), as the Quiz tab sends it."""
    from . import quiz as Q
    from .images import display_image

    classifier = classifier if classifier is not None else verifier.classifier
    services = _warm_quiz_services(verifier, classifier, questions, per_tissue, seed)
    times = []
    for _ in tqdm(range(max(1, repeats)), desc="quiz start (warm)", unit="quiz", disable=not progress):
        while services.pool.fill_once():
            pass
        start = time.perf_counter()
        real = services.real_sample(minimum=2 * questions)
        session = Q.build_quiz(questions, classifier=classifier, verifier=services.images,
                               generated_share=generated_share, explainer=services.explainer,
                               difficulty=difficulty, **real)
        for question in session.questions:
            services.explanations.put(question.image, question.answer, question.heatmap)
        display_image(session.questions[0].image)
        times.append(time.perf_counter() - start)
    return {"quiz_start_p50_s": float(np.percentile(times, 50)), "quiz_start_p95_s": float(np.percentile(times, 95)),
            "quiz_start_questions": questions, "quiz_start_repeats": len(times)}


def write_reports(result: dict, out_dir: str | Path) -> dict:
    """``bench.json`` and ``bench.md`` in ``out_dir``; returns ``result`` with their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    (out_dir / "bench.md").write_text(bench_markdown(result))
    result["report_json"], result["report_md"] = str(out_dir / "bench.json"), str(out_dir / "bench.md")
    return result


def run_benchmark(verifier, classifier=None, repeats: int = 20, sd_steps_timed: int = 1,
                  sd_config: dict | None = None, sd_resolution: int = 224, sd_total_steps: int = 30,
                  sd_warmup: bool = True, batch_repeats: int = 3, classifier_batch: int = 256,
                  cold_start: bool = True, cold_start_code: str = COLD_START_CODE, seed: int = 0,
                  resolver=None, measure_resolver: bool = True, out_dir: str | Path | None = None,
                  progress: bool = True, measure_quiz: bool = True, quiz_repeats: int = 10) -> dict:
    """Latency/throughput of verified generation, the raw generator and the classifier, cold start, and the
    SD v1.5 UNet's cost measured in the same run.

    * ``verified_p50_s``/``verified_p95_s``: one verified image, ``verifier.generate([t])`` for ``repeats``
      random tissues (includes regeneration when the first try is rejected).
    * ``batch9_s``: one verified image of each of the 9 tissues in one call (median of ``batch_repeats``).
    * ``generator_images_per_s``: raw ``generator.generate`` on a batch of 9.
    * ``classifier_images_per_s`` / ``classifier_tta_images_per_s``: a batch of ``classifier_batch`` tiles.
    * ``resolver_p50_ms``/``resolver_p95_ms``: free text -> tissue, warm (:func:`time_resolver`).
    * ``explanation_p50_s``/``explanation_p95_s``: the app's map of one tile on one core (:func:`time_explanation`),
      and ``explanation_whole_model_s``, the whole model's occlusion map it replaced.
    * ``quiz_start_p50_s``/``quiz_start_p95_s``: starting a 10-question quiz once the app is warm, ``quiz_repeats``
      times (:func:`time_quiz_start`; after the other timings, so its pool filling slows none of them).
    * ``cold_start_s``: a fresh process running ``cold_start_code`` (default: import and load both shipped
      models through ``default_verifier()``).
    * ``sd15_*``: see :func:`time_sd15_unet`; ``speedup_vs_sd15`` = SD v1.5 image time / verified p50.

    Returns a JSON-serialisable dict; with ``out_dir`` also writes ``bench.json`` and ``bench.md``.
    """
    import torch

    from .evaluation.report import jsonable

    classifier = classifier if classifier is not None else verifier.classifier
    generator = verifier.generator
    rng = np.random.default_rng(seed)
    result: dict = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "cpu_count": os.cpu_count()},
        "generator": getattr(generator, "name", type(generator).__name__),
        "image_size": getattr(generator, "output_size", None),
        "repeats": repeats,
    }

    # Warm-up: the first call of each model pays lazy initialisation we do not want in the percentiles.
    verifier.generate([0], seed=seed)
    classifier.predict_proba(_sample_images(2, seed, getattr(classifier, "input_size", 28)))

    result.update(time_verified(verifier, repeats, rng, seed, progress))

    result.update(time_throughput(verifier, classifier, batch_repeats, classifier_batch, repeats, seed))

    result.update(time_explanation(classifier, seed=seed))

    if measure_resolver:
        result.update(time_resolver(resolver))
    else:
        result.update(resolver_p50_ms=None, resolver_p95_ms=None, resolver_semantic=None)

    result.update(time_quiz_start(verifier, classifier, quiz_repeats, seed=seed, progress=progress) if measure_quiz
                  else dict(quiz_start_p50_s=None, quiz_start_p95_s=None, quiz_start_questions=QUIZ_QUESTIONS,
                            quiz_start_repeats=0))

    if cold_start:
        result.update(measure_cold_start(cold_start_code))
    else:
        result.update(cold_start_s=None, cold_start_load_s=None, cold_start_error="not measured")

    result.update(time_sd15_unet(sd_config, sd_resolution, sd_steps_timed, sd_warmup, total_steps=sd_total_steps,
                                 seed=seed))
    result["speedup_vs_sd15"] = result["sd15_image_s_extrapolated"] / result["verified_p50_s"]
    result["speedup_raw_vs_sd15"] = result["sd15_image_s_extrapolated"] / result["generator_single_s"]
    result["summary"] = (
        f"one verified image: p50 {result['verified_p50_s']:.3f} s (p95 {result['verified_p95_s']:.3f} s); "
        f"SD v1.5 UNet alone at {sd_resolution} px, {sd_total_steps} steps with guidance: "
        f"~{result['sd15_image_s_extrapolated']:.1f} s per image (lower bound) -> PathSynth is "
        f"{result['speedup_vs_sd15']:.0f}x faster per verified image on this machine{_quiz_summary(result)}"
    )
    result = jsonable(result)
    return write_reports(result, out_dir) if out_dir is not None else result


def _quiz_summary(result: dict) -> str:
    if result.get("quiz_start_p50_s") is None:
        return ""
    return (f"; a {result['quiz_start_questions']}-question quiz starts in p50 {result['quiz_start_p50_s']:.3f} s "
            f"(p95 {result['quiz_start_p95_s']:.3f} s) once warm")


def domain_lines(result: dict) -> list[str]:
    """bench.md's table of :func:`compare_domains` (none when it did not run)."""
    if not result.get("verified_by_domain"):
        return []
    lines = [f"One verified image per domain ({result['domain_repeats']} interleaved rounds, random classes):", "",
             "| domain | p50 | p95 | mean tries |", "|---|---|---|---|"]
    lines += [f"| {flag} | {row['p50_s']:.3f} s | {row['p95_s']:.3f} s | {row['mean_attempts']:.2f} |"
              for flag, row in result["verified_by_domain"].items()]
    return [*lines, ""]


def bench_markdown(result: dict) -> str:
    r = result

    def fmt(value, unit=""):
        return "n/a" if value is None else f"{value:.4g}{unit}"

    m = r["machine"]
    lines = [
        "# PathSynth benchmark", "",
        f"{m['platform']}, Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads, "
        f"{m['cpu_count']} CPUs); generator backend `{r['generator']}`.", "",
        "| measure | value |", "|---|---|",
        f"| one verified image, p50 | {fmt(r['verified_p50_s'], ' s')} |",
        f"| one verified image, p95 | {fmt(r['verified_p95_s'], ' s')} (mean attempts "
        f"{r['verified_mean_attempts']:.2f}, {r['repeats']} runs) |",
        f"| 9 verified images (one per tissue) | {fmt(r['batch9_s'], ' s')} |",
        f"| raw generator | {fmt(r['generator_images_per_s'], ' images/s')} |",
        f"| classifier | {fmt(r['classifier_images_per_s'], ' images/s')} |",
        f"| classifier with 8x TTA | {fmt(r['classifier_tta_images_per_s'], ' images/s')} |",
        f"| free text -> tissue (resolver), p50 / p95 | {fmt(r['resolver_p50_ms'], ' ms')} / "
        f"{fmt(r['resolver_p95_ms'], ' ms')} |",
        f"| explanation map, one core, p50 / p95 (whole ensemble's occlusion) | {fmt(r.get('explanation_p50_s'), ' s')}"
        f" / {fmt(r.get('explanation_p95_s'), ' s')} ({fmt(r.get('explanation_whole_model_s'), ' s')}) |",
        f"| start a {r.get('quiz_start_questions', QUIZ_QUESTIONS)}-question quiz, app warm, p50 / p95 | "
        f"{fmt(r.get('quiz_start_p50_s'), ' s')} / {fmt(r.get('quiz_start_p95_s'), ' s')} |",
        f"| cold start (fresh process, both models) | {fmt(r['cold_start_s'], ' s')} |",
        f"| SD v1.5 UNet step ({r['sd15_resolution']} px, CFG batch {r['sd15_guidance_batch']}) | "
        f"{fmt(r['sd15_unet_step_s'], ' s')} |",
        f"| SD v1.5 image, {r['sd15_total_steps']} steps (UNet only, lower bound) | "
        f"{fmt(r['sd15_image_s_extrapolated'], ' s')} |",
        f"| speed-up per verified image vs SD v1.5 | {fmt(r['speedup_vs_sd15'], 'x')} |", "",
        r["sd15_note"], "",
    ]
    if r.get("baseline_generator"):
        lines += [f"Side by side with `{r['baseline_generator']}` ({r['compare_repeats']} interleaved pairs): one "
                  f"verified image p50 {fmt(r['compare_verified_p50_s'], ' s')} vs {fmt(r['baseline_verified_p50_s'], ' s')}"
                  f" (ratio {fmt(r['verified_p50_ratio_vs_baseline'])}); means {fmt(r['compare_verified_mean_s'], ' s')}"
                  f" vs {fmt(r['baseline_verified_mean_s'], ' s')}.", ""]
    lines += domain_lines(r)
    if r.get("cold_start_error"):
        lines.append(f"Cold start: {r['cold_start_error']}")
    return "\n".join(lines) + "\n"
