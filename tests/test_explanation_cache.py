"""Explanation maps kept on disk across restarts (pathsynth.pool.ExplanationFiles, pathsynth.services)."""

import logging

import numpy as np

from pathsynth.pool import ExplanationCache, ExplanationFiles
from pathsynth.services import explanation_fingerprint, real_explanations, shared_cache_dir
from pathsynth.settings import Settings
from pathsynth.tissues import NUM_TISSUES
from tiny_models import tiny_classifier

TILES = [np.random.default_rng(i).integers(0, 256, (28, 28, 3), dtype=np.uint8) for i in range(3)]


class CountingExplainer:
    """A stand-in model: a map that depends on the image and tissue; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, image, tissue):
        self.calls += 1
        return (image[..., 0] / 255.0 * (tissue + 1) / NUM_TISSUES).astype(np.float64)


def cache_on(folder, fingerprint="classifier-a", images=TILES, **kwargs):
    """A fresh cache (an app start) over ``folder``; returns (cache, its explainer)."""
    explainer = CountingExplainer()
    return ExplanationCache(explainer, files=ExplanationFiles(folder, fingerprint, images), **kwargs), explainer


def test_a_second_cache_on_the_same_folder_reads_the_maps_without_a_model_call(tmp_path):
    first, explainer = cache_on(tmp_path)
    made = [first(tile, tissue) for tissue, tile in enumerate(TILES)]
    assert explainer.calls == len(TILES)
    restarted, explainer = cache_on(tmp_path)
    assert [restarted.get(tile, tissue) is not None for tissue, tile in enumerate(TILES)] == [True] * len(TILES)
    again = [restarted(tile, tissue) for tissue, tile in enumerate(TILES)]
    assert explainer.calls == 0 and all(np.array_equal(a, b) and b.dtype == np.float32 for a, b in zip(made, again))
    assert restarted.get(TILES[0], 5) is None  # another tissue is another map


def test_another_classifier_never_reads_these_maps(tmp_path):
    cache_on(tmp_path, "classifier-a")[0](TILES[0], 2)
    other, explainer = cache_on(tmp_path, "classifier-b")
    assert other.get(TILES[0], 2) is None
    other(TILES[0], 2)
    assert explainer.calls == 1


def test_a_corrupt_or_foreign_file_is_computed_again_and_replaced(tmp_path):
    cache, _ = cache_on(tmp_path)
    files = cache.files
    for tissue, tile in enumerate(TILES):
        cache(tile, tissue)
    paths = [files.path(ExplanationCache.key(tile, tissue)) for tissue, tile in enumerate(TILES)]
    paths[0].write_bytes(paths[0].read_bytes()[:60])  # truncated (a crash mid-copy, a full disk)
    paths[1].write_bytes(b"not a numpy file at all")
    np.save(paths[2], np.zeros((5, 5), np.float32))  # a readable array of the wrong shape
    restarted, explainer = cache_on(tmp_path)
    assert all(restarted.get(tile, tissue) is None for tissue, tile in enumerate(TILES))
    made = [restarted(tile, tissue) for tissue, tile in enumerate(TILES)]
    assert explainer.calls == len(TILES)
    third, explainer = cache_on(tmp_path)  # the files were rewritten whole
    assert all(np.array_equal(third(tile, tissue), m) for (tissue, tile), m in zip(enumerate(TILES), made))
    assert explainer.calls == 0
    assert not list(tmp_path.rglob("*.tmp"))  # no staging file left behind


def test_only_the_given_images_are_kept_on_disk_and_memory_stays_bounded(tmp_path):
    cache, explainer = cache_on(tmp_path, max_items=2)
    generated = np.full((28, 28, 3), 7, np.uint8)
    cache(generated, 1)
    for tissue, tile in enumerate(TILES):
        cache(tile, tissue)
    assert len(list(cache.files.folder.glob("*.npy"))) == len(TILES)  # not the generated image's
    assert len(cache) == 2 and explainer.calls == len(TILES) + 1  # memory bounded as before
    assert cache.get(TILES[0], 0) is not None and cache.get(generated, 1) is None  # back from disk; gone
    restarted, explainer = cache_on(tmp_path)
    restarted(generated, 1)
    assert explainer.calls == 1


def test_a_folder_that_cannot_be_written_only_costs_the_recomputation(tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # the cache folder would have to be inside a file
    cache, explainer = cache_on(blocked)
    with caplog.at_level(logging.WARNING, logger="pathsynth.pool"):
        first = [cache(tile, tissue) for tissue, tile in enumerate(TILES)]
    assert all(m.shape == (28, 28) for m in first) and explainer.calls == len(TILES)
    assert sum("could not keep explanation maps" in r.message for r in caplog.records) == 1  # said once
    restarted, explainer = cache_on(blocked)
    restarted(TILES[0], 0)
    assert explainer.calls == 1


def test_the_apps_cache_is_keyed_on_the_classifiers_files(tmp_path, monkeypatch):
    """``Services.build``'s cache: a restart with the same classifier files reads the real tiles' maps (the real
    occlusion maps of a tiny classifier), a retrained classifier computes its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    classifier_dir = tmp_path / "classifier"
    tiny_classifier(seed=0).save_pretrained(classifier_dir)
    settings = Settings.from_env({"PATHSYNTH_HOME": str(tmp_path / "home"),
                                  "PATHSYNTH_CLASSIFIER": str(classifier_dir)})
    classifier, images = tiny_classifier(seed=0), np.stack(TILES[:2])

    def start():
        cache = real_explanations(settings, classifier, images)
        calls, model = [], cache.explainer
        cache.explainer = lambda image, tissue: calls.append(tissue) or model(image, tissue)
        return cache, calls

    cache, calls = start()
    made = [cache(image, 3) for image in images]
    assert len(calls) == 2 and all(m.shape == (28, 28) and 0 <= m.min() <= m.max() <= 1 for m in made)
    assert cache.files.folder.parent == shared_cache_dir(settings)
    assert cache.files.folder.name == f"explanations-{explanation_fingerprint(classifier_dir)}"
    cache, calls = start()
    assert all(np.array_equal(cache(image, 3), m) for image, m in zip(images, made)) and calls == []
    tiny_classifier(seed=1).save_pretrained(classifier_dir)  # retrained: new weights under the same path
    cache, calls = start()
    assert cache.get(images[0], 3) is None
    cache(images[0], 3)
    assert calls == [3]
