import json

import pytest

from pathsynth import bench as B
from pathsynth.resolver import TissueResolver
from tiny_models import save_tiny_models, tiny_classifier, tiny_generator

# A UNet2DConditionModel of the SD v1.5 *shape* (cross-attention down/up blocks) small enough for a test.
TINY_SD_CONFIG = {
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
}


def test_sd15_config_is_stable_diffusion_v15():
    from accelerate import init_empty_weights

    with init_empty_weights():  # meta tensors: the real architecture without allocating 3.4 GB
        unet = B.build_sd15_unet()
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD v1.5 UNet parameter count
    assert unet.config.cross_attention_dim == 768 and tuple(unet.config.block_out_channels) == (320, 640, 1280, 1280)


def test_time_sd15_unet_with_tiny_config():
    timing = B.time_sd15_unet(TINY_SD_CONFIG, resolution=224, steps_timed=2, total_steps=30)
    assert timing["sd15_latent"] == [4, 28, 28] and timing["sd15_steps_timed"] == 2
    assert timing["sd15_unet_step_s"] > 0
    assert timing["sd15_image_s_extrapolated"] == pytest.approx(30 * timing["sd15_unet_step_s"])
    assert "lower bound" in timing["sd15_note"]
    with pytest.raises(ValueError):
        B.time_sd15_unet(TINY_SD_CONFIG, resolution=100)


def test_cold_start_reports_failure_instead_of_raising():
    failed = B.measure_cold_start("raise SystemExit('no models here')")
    assert failed["cold_start_s"] is None and "no models here" in failed["cold_start_error"]
    ok = B.measure_cold_start("import json; print(json.dumps({'load_s': 0.25}))")
    assert ok["cold_start_s"] > 0 and ok["cold_start_load_s"] == 0.25 and ok["cold_start_error"] is None


class StubVerified:
    def __init__(self, image, attempts):
        self.image, self.attempts, self.verified = image, attempts, True


class StubVerifier:
    def __init__(self, generator, classifier):
        self.generator, self.classifier = generator, classifier
        self.calls = []

    def generate(self, tissues, seed=None, progress=None):
        self.calls.append(list(tissues))
        images = self.generator.generate(list(tissues), [seed + i for i in range(len(tissues))])
        return [StubVerified(image, 1) for image in images]


def test_run_benchmark_returns_every_measure(tmp_path):
    classifier_dir, _ = save_tiny_models(tmp_path / "models")
    verifier = StubVerifier(tiny_generator(steps=2), tiny_classifier())
    # Cold start of a fresh process that loads a saved classifier (the shipped models may not exist yet).
    code = ("import json, time; t = time.perf_counter(); from pathsynth.classifier import TissueClassifier; "
            f"TissueClassifier.from_pretrained({str(classifier_dir)!r}); "
            "print(json.dumps({'load_s': time.perf_counter() - t}))")
    result = B.run_benchmark(verifier, None, repeats=3, sd_steps_timed=1, sd_config=TINY_SD_CONFIG,
                             batch_repeats=1, classifier_batch=16, cold_start_code=code, out_dir=tmp_path,
                             resolver=TissueResolver(use_encoder=False), progress=False, measure_quiz=False)
    for key in ("verified_p50_s", "verified_p95_s", "batch9_s", "generator_images_per_s", "classifier_images_per_s",
                "classifier_tta_images_per_s", "cold_start_s", "sd15_unet_step_s", "sd15_image_s_extrapolated",
                "speedup_vs_sd15", "resolver_p50_ms", "resolver_p95_ms"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["verified_p95_s"] >= result["verified_p50_s"]
    assert result["cold_start_error"] is None and result["cold_start_load_s"] > 0
    assert result["speedup_vs_sd15"] == pytest.approx(result["sd15_image_s_extrapolated"] / result["verified_p50_s"])
    assert [0, 1, 2, 3, 4, 5, 6, 7, 8] in verifier.calls  # the batch of one image per tissue
    assert sum(len(c) == 1 for c in verifier.calls) == 1 + 3  # warm-up + the timed single images
    assert json.loads((tmp_path / "bench.json").read_text())["speedup_vs_sd15"] == result["speedup_vs_sd15"]
    assert "SD v1.5" in (tmp_path / "bench.md").read_text() and "resolver" in (tmp_path / "bench.md").read_text()
    assert result["resolver_semantic"] is False
    json.dumps(result, allow_nan=False)


def test_compare_verified_times_both_generators_on_the_same_requests():
    from pathsynth.verify import Verifier

    class Counting(Verifier):
        def generate(self, tissues, seed=None, progress=None):
            self.requests.append((tuple(tissues), seed))
            return super().generate(tissues, seed=seed)

    classifier = tiny_classifier()
    new, old = Counting(tiny_generator(steps=2), classifier), Counting(tiny_generator(seed=1, steps=2), classifier)
    new.requests, old.requests = [], []
    result = B.compare_verified(new, old, repeats=3, progress=False)
    assert new.requests == old.requests and len(new.requests) == 4  # warm-up + 3 interleaved pairs
    assert result["compare_verified_p50_s"] > 0 and result["baseline_verified_p50_s"] > 0
    assert result["verified_p50_ratio_vs_baseline"] == pytest.approx(
        result["compare_verified_p50_s"] / result["baseline_verified_p50_s"])


def test_latency_summary_percentiles():
    summary = B.latency_summary([0.1] * 19 + [2.0])
    assert summary == {"n": 20, "p50_s": 0.1, "p95_s": pytest.approx(0.195, abs=1e-3), "max_s": 2.0}
    assert B.latency_summary([]) == {"n": 0}


def test_quiz_start_is_timed_warm_with_the_pool_stocked_and_heatmaps_cached(tmp_path):
    import numpy as np

    from pathsynth.verify import Verifier

    classifier = tiny_classifier()
    classifier.gradcam = lambda image, target=None: np.zeros(np.shape(image)[:2], np.float32)  # cheap heatmaps
    verifier = Verifier(tiny_generator(steps=2), classifier, max_attempts=1)
    result = B.time_quiz_start(verifier, repeats=3, questions=4, per_tissue=1, progress=False)
    assert result["quiz_start_repeats"] == 3 and result["quiz_start_questions"] == 4
    assert 0 < result["quiz_start_p50_s"] <= result["quiz_start_p95_s"]
    markdown = B.bench_markdown({**FAKE_RESULT, **result})
    assert f"| start a 4-question quiz, app warm, p50 / p95 | {result['quiz_start_p50_s']:.4g} s" in markdown


FAKE_RESULT = {"machine": {"platform": "p", "python": "3", "torch": "2", "torch_threads": 1, "cpu_count": 2},
               "generator": "g", "repeats": 1, "verified_p50_s": 1.0, "verified_p95_s": 1.0,
               "verified_mean_attempts": 1.0, "batch9_s": 1.0, "generator_images_per_s": 1.0,
               "classifier_images_per_s": 1.0, "classifier_tta_images_per_s": 1.0, "resolver_p50_ms": 1.0,
               "resolver_p95_ms": 1.0, "cold_start_s": 1.0, "sd15_resolution": 224, "sd15_guidance_batch": 2,
               "sd15_unet_step_s": 1.0, "sd15_total_steps": 30, "sd15_image_s_extrapolated": 30.0,
               "speedup_vs_sd15": 30.0, "sd15_note": "note"}
