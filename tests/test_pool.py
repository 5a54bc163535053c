"""The pool of verified images and the batched verify loop (pathsynth.pool)."""

import time

import numpy as np
import pytest

from pathsynth import quiz as Q
from sample_tiles import sample_tiles
from pathsynth.pool import REQUESTS, ExplanationCache, ExplanationFiles, RequestActivity, VerifiedPool, verify_batch
from pathsynth.tissues import NUM_TISSUES
from pathsynth.verify import VerifiedImage, Verifier
from tiny_models import tiny_classifier, tiny_generator


class StubVerifier:
    """``Verifier.generate``'s contract with flat tiles; ``reject(tissue)`` marks unverified ones; counts calls."""

    def __init__(self, reject=lambda tissue: False):
        self.reject, self.calls = reject, []

    def generate(self, tissues, seed=None, progress=None):
        self.calls.append((list(tissues), seed))
        probabilities = np.full(NUM_TISSUES, 0.01)
        out = []
        for slot, tissue in enumerate(tissues):
            p = probabilities.copy()
            p[tissue] = 0.92
            out.append(VerifiedImage(image=np.full((28, 28, 3), 20 * tissue + slot, np.uint8), tissue=tissue,
                                     verified=not self.reject(tissue), attempts=1, seed=(seed or 0) + slot,
                                     probabilities=list(p), predicted=tissue, confidence=0.92, realism=0.5))
        return out


class CountingExplainer:
    def __init__(self):
        self.calls = 0

    def __call__(self, image, tissue):
        self.calls += 1
        return np.full(image.shape[:2], tissue / NUM_TISSUES, np.float32)


def filled_pool(verifier, per_tissue=2, explainer=None):
    pool = VerifiedPool(verifier, explainer, per_tissue=per_tissue, fill_batch=9)
    for _ in range(10):
        if pool.full:
            break
        pool.fill_once()
    return pool


def test_unseeded_requests_come_from_stock_with_their_heatmaps():
    verifier, explainer = StubVerifier(), CountingExplainer()
    pool = filled_pool(verifier, 2, explainer)
    assert pool.full and pool.stock() == {t: 2 for t in range(NUM_TISSUES)}
    calls, explained = len(verifier.calls), explainer.calls
    served = pool.generate([0, 0, 5])
    assert len(verifier.calls) == calls and explainer.calls == explained  # no model call while serving
    assert [r.tissue for r in served] == [0, 0, 5] and all(r.verified for r in served)
    assert all(r.heatmap is not None and r.heatmap.shape == (28, 28) for r in served)
    assert "heatmap" not in served[0].to_dict()  # the app's JSON details stay small
    assert all(r.from_pool for r in served)  # the app says "taken ready from the pool"
    assert pool.stock()[0] == 0 and pool.stock()[5] == 1  # each image is handed out once
    on_the_spot = pool.generate([0])  # stock ran out: generated now, still explained
    assert verifier.calls[-1] == ([0], None) and on_the_spot[0].heatmap is not None
    assert not on_the_spot[0].from_pool


def test_the_filler_renders_one_image_per_generator_call():
    """Batch-mates shift pixels by float rounding: a pooled image must be exactly what its seed gives alone."""
    verifier = StubVerifier()
    VerifiedPool(verifier, per_tissue=1, fill_batch=9).fill_once()
    assert len(verifier.calls) == 9 and all(len(tissues) == 1 for tissues, _ in verifier.calls)


class AcceptingVerifier(Verifier):
    """The real attempt loop and generator; every image passes (random tiny models rarely verify anything)."""

    def judge(self, images, tissues):
        probabilities = np.eye(NUM_TISSUES)[list(tissues)]
        return probabilities, np.ones(len(images)), np.ones(len(images), bool)


def test_a_pooled_images_seed_reproduces_it_exactly():
    verifier = AcceptingVerifier(tiny_generator(steps=2), tiny_classifier(), max_attempts=1)
    pool = filled_pool(verifier, 1)
    for tissue in (0, 4, 8):
        pooled = pool.generate([tissue])[0]
        again = verifier.generate([tissue], seed=pooled.seed)[0]  # the seed shown, typed back in
        assert pooled.from_pool and again.attempts == 1 and np.array_equal(again.image, pooled.image)


def test_seeded_requests_bypass_the_stock():
    verifier = StubVerifier()
    pool = filled_pool(verifier, 1)
    result = pool.generate([3], seed=42)
    assert verifier.calls[-1] == ([3], 42) and result[0].seed == 42
    assert pool.stock()[3] == 1


def test_unverified_images_are_never_stocked():
    pool = filled_pool(StubVerifier(reject=lambda tissue: tissue == 4), 1)
    assert pool.stock()[4] == 0 and all(n == 1 for t, n in pool.stock().items() if t != 4)


def test_background_filler_fills_refills_and_stops():
    verifier = StubVerifier()
    pool = VerifiedPool(verifier, per_tissue=2, fill_batch=5).start()
    try:
        assert pool.wait_full(timeout=30)
        pool.generate([1, 1])
        assert pool.wait_full(timeout=30)  # taking wakes the filler
    finally:
        pool.stop(timeout=10)
    assert not pool._thread.is_alive()


def test_request_activity_is_quiet_only_after_requests_end():
    activity = RequestActivity()
    assert activity.quiet(0.05)
    with activity.serving():
        assert not activity.quiet(0.0)
        began = time.monotonic()
        assert activity.wait_quiet(0.05, max_wait_s=0.2) is False  # gives up after max_wait_s
        assert 0.15 <= time.monotonic() - began < 2
    assert not activity.quiet(10)  # just ended
    assert activity.wait_quiet(0.05, max_wait_s=2) is True


def test_the_filler_waits_for_requests_to_end_before_a_model_call():
    verifier = StubVerifier()
    pool = VerifiedPool(verifier, per_tissue=1)
    with REQUESTS.serving():  # a request is being served: the filler holds back (up to MAX_YIELD_S)
        pool.start()
        time.sleep(0.5)
        assert verifier.calls == []
    try:
        assert pool.wait_full(timeout=30) and verifier.calls  # once quiet, it fills
    finally:
        pool.stop(timeout=10)


def test_quiz_from_the_pool_generates_nothing_and_needs_no_model_call_to_answer():
    verifier, explainer = StubVerifier(), CountingExplainer()
    pool = filled_pool(verifier, 3, explainer)
    images, labels = sample_tiles()
    probabilities = np.eye(NUM_TISSUES)[labels]
    calls = len(verifier.calls)
    session = Q.build_quiz(6, classifier=None, real_images=images, real_labels=labels, verifier=pool,
                           generated_share=0.5, real_probabilities=probabilities, explainer=explainer)
    assert len(verifier.calls) == calls  # drawn from stock
    assert [q.source for q in session.questions].count("generated") == 3
    assert all(q.heatmap is not None for q in session.questions)
    explained = explainer.calls
    for question in session.questions:
        Q.answer(session, question.answer)
        assert Q.heatmap(question, explainer) is question.heatmap
    assert explainer.calls == explained  # answering computed nothing
    Q.build_quiz(2, classifier=None, real_images=images, real_labels=labels, verifier=pool, generated_share=1.0,
                 real_probabilities=probabilities, seed=5)
    assert verifier.calls[-1][1] is not None  # a seeded quiz stays reproducible: generated from its seed


def test_gallery_quizzes_and_retries_keep_precomputed_heatmaps():
    explainer = CountingExplainer()
    tiles = [np.full((28, 28, 3), 30 * i, np.uint8) for i in range(3)]
    session = Q.quiz_from_images(tiles, [1, 2, 3], explainer=explainer)
    assert explainer.calls == 3 and all(q.heatmap is not None for q in session.questions)
    for question in session.questions:
        Q.answer(session, 0)  # all wrong
    retry = Q.retry_missed(session)
    assert all(r.heatmap is q.heatmap for r, q in zip(retry.questions, session.questions)) and explainer.calls == 3


def test_explanations_are_computed_once_per_image_and_tissue():
    explainer = CountingExplainer()
    cache = ExplanationCache(explainer, max_items=2)
    a, b = np.zeros((28, 28, 3), np.uint8), np.full((28, 28, 3), 9, np.uint8)
    first = cache(a, 1)
    assert cache(a.copy(), 1) is first and explainer.calls == 1  # same pixels: same key
    cache(a, 2), cache(b, 1)
    assert explainer.calls == 3 and len(cache) == 2  # bounded: the least recently used went
    assert cache.get(a, 1) is None and cache.get(b, 1) is not None
    given = np.ones((28, 28), np.float32)
    cache.put(a, 5, given)
    assert cache(a, 5) is given and explainer.calls == 3


def test_the_filler_explains_queued_tiles_once_stocked():
    explainer = CountingExplainer()
    cache = ExplanationCache(explainer)
    tiles = [(np.full((28, 28, 3), 250 - i, np.uint8), i % NUM_TISSUES) for i in range(3)]  # unlike the stock
    pool = VerifiedPool(StubVerifier(), cache, per_tissue=1, fill_batch=9, ahead=tiles).start()
    try:
        assert pool.wait_full(timeout=30, ahead=True) and pool.ready
    finally:
        pool.stop(timeout=10)
    assert all(cache.get(image, tissue) is not None for image, tissue in tiles)
    assert explainer.calls == NUM_TISSUES + len(tiles)  # the stock's heatmaps and the queued ones, once each
    assert pool.explain_ahead() == 0


def test_take_hands_out_stock_only_and_never_calls_a_model():
    verifier, explainer = StubVerifier(), CountingExplainer()
    pool = filled_pool(verifier, 1, explainer)
    calls, explained = len(verifier.calls), explainer.calls
    taken = pool.take([2, 2, 7])
    assert taken[0].tissue == 2 and taken[0].from_pool and taken[0].heatmap is not None
    assert taken[1] is None and taken[2].tissue == 7  # tissue 2 ran out: nothing made on the spot
    assert len(verifier.calls) == calls and explainer.calls == explained
    assert pool.stock()[2] == 0 and pool._wake.is_set()  # the filler is told to refill
    with pytest.raises(ValueError, match="prefer"):
        pool.take([1], prefer="sharpest")


def test_tiles_to_explain_soon_come_before_any_refill():
    explained = []
    cache = ExplanationCache(lambda image, tissue: explained.append(int(image[0, 0, 0])) or np.zeros((28, 28)))
    verifier = StubVerifier()
    pool = VerifiedPool(verifier, cache, per_tissue=1, fill_batch=9)
    tiles = [(np.full((28, 28, 3), 250 - i, np.uint8), i) for i in range(2)]  # unlike any stocked image
    pool.explain_soon(tiles)
    assert pool.fill_once() == 1 and len(verifier.calls) == 1  # a refill round stops at once for them
    pool.start()
    try:
        assert pool.wait_full(timeout=30, ahead=True)
    finally:
        pool.stop(timeout=10)
    assert explained[1:3] == [250, 249]  # the filler's first work: the queued tiles, then the refill
    assert all(cache.get(image, tissue) is not None for image, tissue in tiles)


def test_tiles_queued_for_later_are_explained_once_nothing_else_is_left():
    explained = []
    cache = ExplanationCache(lambda image, tissue: explained.append(int(image[0, 0, 0])) or np.zeros((28, 28)))
    first, rest = ([(np.full((28, 28, 3), value, np.uint8), 1) for value in values] for values in ((250, 249), (248,)))
    pool = VerifiedPool(StubVerifier(), cache, per_tissue=1, fill_batch=9, ahead=first, later=rest, borderline=0)
    pool.start()
    try:
        assert pool.wait_full(timeout=30, ahead=True)
        deadline = time.monotonic() + 30
        while cache.get(*rest[0]) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pool.stop(timeout=10)
    assert explained[NUM_TISSUES:] == [250, 249, 248]  # the stock, the tiles ahead, then the later ones


def test_after_a_restart_the_filler_reads_the_real_tiles_maps_from_disk_instead_of_calling_the_model(tmp_path):
    tiles = [(np.full((28, 28, 3), 250 - i, np.uint8), i % NUM_TISSUES) for i in range(4)]  # unlike the stock

    def run_once():
        """An app start: a fresh cache on the same folder, a pool that explains the tiles ahead and later."""
        explainer = CountingExplainer()
        files = ExplanationFiles(tmp_path, "classifier-a", images=[image for image, _ in tiles])
        cache = ExplanationCache(explainer, files=files)
        pool = VerifiedPool(StubVerifier(), cache, per_tissue=1, fill_batch=9, ahead=tiles[:2], later=tiles[2:],
                            borderline=0).start()
        try:
            assert pool.wait_full(timeout=30, ahead=True)
            deadline = time.monotonic() + 30
            while pool._later and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            pool.stop(timeout=10)
        return explainer.calls, [cache.get(image, tissue) for image, tissue in tiles]

    calls, maps = run_once()
    assert calls == NUM_TISSUES + len(tiles)  # first start: the stock's maps and the real tiles'
    calls_again, maps_again = run_once()
    assert calls_again == NUM_TISSUES  # restart: only the new stock (generated images are not kept on disk)
    assert all(np.array_equal(a, b) for a, b in zip(maps, maps_again))


class ScriptedConfidenceVerifier(StubVerifier):
    """StubVerifier whose n-th image of a tissue is ``confidences(tissue, n)`` sure of it."""

    def __init__(self, confidences):
        super().__init__()
        self.confidences, self.made = confidences, {}

    def generate(self, tissues, seed=None, progress=None):
        out = super().generate(tissues, seed, progress)
        for result in out:
            n = self.made[result.tissue] = self.made.get(result.tissue, -1) + 1
            result.confidence = self.confidences(result.tissue, n)
            result.probabilities[result.tissue] = result.confidence
        return out


def test_once_stocked_the_filler_looks_for_borderline_images_within_a_budget():
    from pathsynth.pool import HUNT_TRIES, is_borderline

    # tissue 5 (MUS) is borderline every other image, tissue 0 (ADI) never, as with the real generator
    verifier = ScriptedConfidenceVerifier(lambda tissue, n: 0.7 if tissue == 5 and n % 2 else 0.97)
    explainer = CountingExplainer()
    pool = VerifiedPool(verifier, explainer, per_tissue=2, fill_batch=9, borderline=1)
    while pool.fill_once():
        pass
    assert pool.stocked_where(is_borderline) == {t: int(t == 5) for t in range(NUM_TISSUES)}  # one came by chance
    explained = explainer.calls
    tries = 0
    while pool.hunt_borderline():
        tries += 1
    assert tries == (NUM_TISSUES - 1) * HUNT_TRIES  # every other tissue tried its budget, none found one
    assert pool.stock() == {t: 2 for t in range(NUM_TISSUES)} and explainer.calls == explained  # misses dropped
    assert pool.generate([5], prefer="borderline")[0].confidence == 0.7  # a hard quiz takes it ...
    assert pool.stocked_where(is_borderline)[5] == 0 and pool.hunt_borderline() == 1  # ... renewing the budget
    while pool.hunt_borderline():
        pass
    assert pool.stocked_where(is_borderline)[5] == 1 and pool.stock()[5] == 2  # found again, explained and stocked
    assert pool.generate([5], prefer="borderline")[0].heatmap is not None
    assert VerifiedPool(verifier, per_tissue=8).borderline == 2 and VerifiedPool(verifier, per_tissue=1).borderline == 0


def test_verify_batch_gives_each_request_what_it_gets_alone():
    verifier = Verifier(tiny_generator(steps=2), tiny_classifier(), threshold=0.0, max_attempts=2)
    tissues, seeds = [0, 3, 8, 8, 5], [11, 12, 13, 14, 15]
    batched = verify_batch(verifier, tissues, seeds)
    for tissue, seed, result in zip(tissues, seeds, batched):
        alone = verifier.generate([tissue], seed=seed)[0]
        # the same image up to float rounding between batch sizes (the verifier's own chunking has the same)
        assert np.abs(result.image.astype(int) - alone.image.astype(int)).max() <= 2
        assert (result.seed, result.verified, result.attempts) == (alone.seed, alone.verified, alone.attempts)
        assert [h["seed"] for h in result.history] == [h["seed"] for h in alone.history]
        assert result.probabilities == pytest.approx(alone.probabilities, abs=0.02)
    with pytest.raises(ValueError, match="one seed"):
        verify_batch(verifier, [0, 1], [1])


def test_app_handlers_mark_themselves_as_requests():
    from pathsynth.app.common import user_errors

    @user_errors(outputs=1, status=0)
    def handler():
        return REQUESTS.quiet(0.0)

    assert handler() is False and not REQUESTS.quiet(10) and REQUESTS.wait_quiet(0.05, max_wait_s=2)
