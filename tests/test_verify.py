import numpy as np
import pytest

from pathsynth.verify import REFERENCE_NAME, RealismCheck, RealismReference, Verifier, realism_reference
from sample_tiles import needs_real_data, real_tiles, sample_tiles
from tiny_models import tiny_classifier, tiny_generator


class StubClassifier:
    """Test-only: agrees with the requested tissue only for seeds the test chooses."""

    def __init__(self, accept):
        self.accept = accept  # callable(seed) -> bool
        self.seen = []

    def predict_proba(self, images):
        out = np.full((len(images), 9), 0.01, np.float32)
        for i, image in enumerate(images):
            tissue, seed = int(image[0, 0, 0]), int(image[0, 0, 1])
            self.seen.append(seed)
            out[i, tissue if self.accept(seed) else (tissue + 1) % 9] = 0.92
        return out

    def features(self, images):
        return np.zeros((len(images), 4), np.float32)


class StubGenerator:
    """Test-only: encodes tissue and seed into the pixels so the stub classifier can read them."""

    name = "stub"

    def __init__(self):
        self.calls = []

    def generate(self, tissues, seeds):
        self.calls.append(list(seeds))
        images = np.zeros((len(tissues), 28, 28, 3), np.uint8)
        for i, (t, s) in enumerate(zip(tissues, seeds)):
            images[i, 0, 0, 0], images[i, 0, 0, 1] = t, s % 256
        return images


def test_accepts_agreeing_images_first_time():
    verifier = Verifier(StubGenerator(), StubClassifier(lambda seed: True))
    results = verifier.generate([0, 4, 8], seed=1)
    assert [r.tissue for r in results] == [0, 4, 8]
    assert all(r.verified and r.attempts == 1 and r.predicted == r.tissue for r in results)
    assert all(abs(sum(r.probabilities) - 1) < 0.2 and r.confidence > 0.9 for r in results)


def test_regenerates_only_rejected_images_with_new_seeds():
    generator = StubGenerator()
    first_seeds = set()

    def accept(seed):  # reject every image on its first attempt only
        if seed % 256 in first_seeds:
            return True
        first_seeds.add(seed % 256)
        return len(generator.calls) > 1

    verifier = Verifier(generator, StubClassifier(accept), max_attempts=3)
    results = verifier.generate([2, 3], seed=7)
    assert len(generator.calls) == 2 and len(generator.calls[1]) == 2
    assert set(generator.calls[0]).isdisjoint(generator.calls[1])
    assert all(r.verified and r.attempts == 2 and len(r.history) == 1 for r in results)
    assert all(r.seed in generator.calls[1] for r in results)


def test_respects_max_attempts_and_never_passes_off_a_rejected_image():
    generator = StubGenerator()
    verifier = Verifier(generator, StubClassifier(lambda seed: False), max_attempts=4)
    progress = []
    results = verifier.generate([5], seed=3, progress=lambda f, m: progress.append(f))
    assert len(generator.calls) == 4
    assert not results[0].verified and results[0].attempts == 4 and len(results[0].history) == 4
    assert results[0].predicted != 5
    assert progress[-1] == 1.0 and progress == sorted(progress)


def test_partial_acceptance_mixes_outcomes():
    generator = StubGenerator()
    verifier = Verifier(generator, StubClassifier(lambda seed: seed % 2 == 0), max_attempts=6)
    results = verifier.generate(list(range(9)), seed=11)
    assert all(r.verified == (r.seed % 256 % 2 == 0) for r in results)
    assert [len(c) for c in generator.calls] == sorted([len(c) for c in generator.calls], reverse=True)


def test_same_seed_reproduces_the_call():
    verifier = Verifier(tiny_generator(), tiny_classifier(), max_attempts=2)
    a = verifier.generate([1, 6], seed=42)
    b = verifier.generate([1, 6], seed=42)
    assert all(np.array_equal(x.image, y.image) and x.seed == y.seed for x, y in zip(a, b))
    again = verifier.generator.generate([a[0].tissue], [a[0].seed])[0]
    assert np.array_equal(again, a[0].image)


def test_the_shown_seed_typed_back_in_gives_the_same_image_first_try():
    accepted_seeds = set()

    def accept(seed):  # reject the entered seed's first attempt, accept the regenerated one
        return seed % 256 != 5 or seed in accepted_seeds

    verifier = Verifier(StubGenerator(), StubClassifier(accept), max_attempts=3)
    first = verifier.generate([3], seed=5)[0]
    assert first.attempts == 2 and first.seed != 5 and first.history[0]["seed"] == 5
    again = verifier.generate([3], seed=first.seed)[0]  # what a person types after reading the shown seed
    assert again.attempts == 1 and again.seed == first.seed and np.array_equal(again.image, first.image)

    # with a real generator: the retyped seed's first attempt renders the shown image
    real = Verifier(tiny_generator(), tiny_classifier(), max_attempts=3)
    first_attempt_only = Verifier(real.generator, real.classifier, max_attempts=1)
    for seed in (0, 123, 2**31 - 1):
        shown = real.generate([7], seed=seed)[0]
        retyped = first_attempt_only.generate([7], seed=shown.seed)[0]
        assert retyped.seed == shown.seed and np.array_equal(retyped.image, shown.image)


def test_generation_is_chunked_and_chunking_changes_nothing():
    generator = StubGenerator()
    chunked = Verifier(generator, StubClassifier(lambda seed: seed % 3 != 0), max_attempts=3, batch_size=2)
    results = chunked.generate([0, 1, 2, 3, 4], seed=11)
    assert max(len(call) for call in generator.calls) == 2  # never more than batch_size per generator call
    whole = Verifier(StubGenerator(), StubClassifier(lambda seed: seed % 3 != 0), max_attempts=3).generate(
        [0, 1, 2, 3, 4], seed=11)
    assert [(r.seed, r.attempts, r.verified) for r in results] == [(r.seed, r.attempts, r.verified) for r in whole]


def test_realism_check_scores_real_images_high_and_outliers_zero():
    images, labels = sample_tiles()
    clf = tiny_classifier()
    feats = clf.features(images)
    check = RealismCheck(feats, labels)
    own = check.score(feats[:50], labels[:50])
    assert own.mean() > 0.3
    far = check.score(feats[:5] + 1e3, labels[:5])
    assert (far == 0).all()


def test_realism_rejects_out_of_distribution_images_the_classifier_accepts():
    images, labels = sample_tiles()
    clf = tiny_classifier()

    class Noise:
        name = "noise"

        def generate(self, tissues, seeds):
            rng = np.random.default_rng(seeds[0])
            return rng.integers(0, 256, (len(tissues), 28, 28, 3), dtype=np.uint8)

    class AlwaysAgree:  # a classifier that agrees with everything, but with real features
        def predict_proba(self, x):
            return np.eye(9, dtype=np.float32)[[0] * len(x)]

        def features(self, x):
            return clf.features(x)

    verifier = Verifier(Noise(), AlwaysAgree(), images, labels, max_attempts=2, realism_threshold=0.05)
    result = verifier.generate([0], seed=0)[0]
    assert not result.verified and result.realism < 0.05


def test_a_realism_reference_ships_beside_the_classifier_and_is_ignored_once_the_weights_change(tmp_path):
    images, labels = sample_tiles()
    clf = tiny_classifier()
    clf.save_pretrained(tmp_path)
    made = RealismReference.from_tiles(clf, images, labels, "tiles.npz")
    made.save(tmp_path)
    loaded = RealismReference.load(tmp_path)
    assert loaded.size == 28 and loaded.source == "tiles.npz" and np.array_equal(loaded.labels, labels)
    assert np.allclose(loaded.features, made.features, rtol=1e-2, atol=1e-2)  # kept as fp16
    shipped = Verifier(StubGenerator(), clf, reference=loaded)
    from_tiles = Verifier(StubGenerator(), clf, images, labels)
    batch = images[::7]
    assert np.abs(shipped.judge(batch, labels[::7])[1] - from_tiles.judge(batch, labels[::7])[1]).max() <= 0.05
    tiny_classifier(seed=3).save_pretrained(tmp_path)  # retrained: the reference no longer describes it
    assert RealismReference.load(tmp_path) is None
    assert realism_reference(tmp_path, clf) is None  # and with no real tiles, no realism check (logged)
    assert realism_reference(tmp_path, clf, images, labels).features.shape == made.features.shape


@needs_real_data
def test_the_shipped_reference_judges_as_the_real_tiles_it_was_made_from():
    from pathsynth.classifier import DEFAULT_CLASSIFIER_DIR, load_classifier, model_files_present

    if not model_files_present(DEFAULT_CLASSIFIER_DIR):
        pytest.skip("no shipped classifier")
    reference = RealismReference.load(DEFAULT_CLASSIFIER_DIR)
    assert reference is not None, f"{REFERENCE_NAME} missing or stale: python train/realism_reference.py --data ..."
    images, labels = real_tiles()
    assert np.bincount(reference.labels, minlength=9).tolist() == np.bincount(labels, minlength=9).tolist()
    classifier = load_classifier(DEFAULT_CLASSIFIER_DIR)
    probe = images[::40]  # real tiles and shifted copies: near and far from the reference
    probe = np.concatenate([probe, np.clip(probe.astype(int) + 60, 0, 255).astype(np.uint8)])
    tissues = np.concatenate([labels[::40]] * 2)
    shipped = Verifier(StubGenerator(), classifier, reference=reference).judge(probe, tissues)[1]
    from_tiles = Verifier(StubGenerator(), classifier, images, labels).judge(probe, tissues)[1]
    assert np.abs(shipped - from_tiles).max() <= 0.01


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Verifier(StubGenerator(), StubClassifier(lambda s: True), threshold=1.5)
    with pytest.raises(ValueError):
        Verifier(StubGenerator(), StubClassifier(lambda s: True), max_attempts=0)
    with pytest.raises(ValueError):
        Verifier(StubGenerator(), StubClassifier(lambda s: True), batch_size=0)
    with pytest.raises(KeyError):
        Verifier(StubGenerator(), StubClassifier(lambda s: True)).generate([42])


def test_per_request_seeds_give_each_image_what_it_gets_alone():
    """``seeds=``: several requests share each generator batch (the pool's and batched requests' path, the same
    attempt loop), and each result, rejected tries included, is the one its seed gives alone."""
    accept = lambda seed: seed % 3 != 0  # noqa: E731 - some requests need a second attempt, some never pass
    generator = StubGenerator()
    verifier = Verifier(generator, StubClassifier(accept), max_attempts=3)
    tissues, seeds = [0, 4, 4, 8], [3, 5, 6, 9]
    shared = verifier.generate(tissues, seeds=seeds)
    assert len(generator.calls[0]) == 4  # one generator batch for the four requests' first attempts
    for tissue, seed, result in zip(tissues, seeds, shared):
        alone = Verifier(StubGenerator(), StubClassifier(accept), max_attempts=3).generate([tissue], seed=seed)[0]
        assert (result.tissue, result.seed, result.attempts, result.verified) == \
            (alone.tissue, alone.seed, alone.attempts, alone.verified)
        assert result.history == alone.history and np.array_equal(result.image, alone.image)
    assert shared[0].history[0]["seed"] == 3  # the request's own seed is its first attempt
    drawn = verifier.generate([1, 2], seeds=[None, 7])
    assert (drawn[1].seed, drawn[1].attempts) == (7, 1) and drawn[0].tissue == 1  # None: a seed is drawn
    with pytest.raises(ValueError, match="one seed"):
        verifier.generate([0, 1], seeds=[1])
    with pytest.raises(ValueError, match="either seed"):
        verifier.generate([0], seed=1, seeds=[1])


def test_the_record_leaves_out_the_heatmap():
    result = Verifier(StubGenerator(), StubClassifier(lambda seed: True)).generate([2], seed=4)[0]
    assert result.heatmap is None and result.from_pool is False
    result.heatmap = np.ones((28, 28), np.float32)
    record = result.to_dict()
    assert "heatmap" not in record and "image" not in record and record["seed"] == 4
    assert "heatmap" not in result.to_dict(with_image=True) and result.heatmap is not None  # the object keeps it
