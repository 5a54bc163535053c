"""The pool's stock in the database (pathsynth.stock.DatabaseStock, migration 0008): shared by replicas and workers,
kept across restarts, each image handed out once. Every test runs on SQLite and PostgreSQL (``storage_url``)."""

import threading

import numpy as np
import pytest

from pathsynth.gallery import GalleryStore
from pathsynth.pool import VerifiedPool, is_borderline
from pathsynth.stock import DatabaseStock, MemoryStock
from pathsynth.tissues import NUM_TISSUES
from pathsynth.verify import VerifiedImage
from test_pool import CountingExplainer, StubVerifier


def image(tissue: int, seed: int, confidence: float = 0.9, heatmap: bool = True, realism: float = 0.4) -> VerifiedImage:
    probabilities = np.full(NUM_TISSUES, (1 - confidence) / (NUM_TISSUES - 1))
    probabilities[tissue] = confidence
    rng = np.random.default_rng(seed)
    return VerifiedImage(image=rng.integers(0, 256, (28, 28, 3), dtype=np.uint8), tissue=tissue, verified=True,
                         attempts=2, seed=seed, probabilities=list(probabilities), predicted=tissue,
                         confidence=confidence, realism=realism, backend="embedded",
                         history=[{"seed": seed - 1, "predicted": 0, "confidence": 0.2, "realism": 0.1}],
                         heatmap=rng.random((28, 28), dtype=np.float32) if heatmap else None)


@pytest.fixture
def database(tmp_path, storage_url):
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        yield store.database


def test_a_stocked_image_comes_back_whole_once(database):
    stock = DatabaseStock(database, models="classifier-a")
    kept = [image(3, 11), image(3, 12, heatmap=False), image(5, 13)]
    stock.put(kept)
    assert stock.counts() == {t: {3: 2, 5: 1}.get(t, 0) for t in range(NUM_TISSUES)}
    assert [item.seed for item in stock.items()] == [11, 12, 13] and len(stock.items()) == 3  # left in stock
    first = stock.take(3)
    assert first.seed == 11 and np.array_equal(first.image, kept[0].image) and first.image.dtype == np.uint8
    assert np.array_equal(first.heatmap, kept[0].heatmap)
    assert first.to_dict() == {**kept[0].to_dict()}  # the classifier's whole record, history included
    assert stock.take(3).heatmap is None and stock.take(3) is None  # each image once, then none
    assert DatabaseStock(database, models="classifier-b").take(5) is None  # another classifier's: never served
    assert DatabaseStock(database, models="classifier-a").take(5).seed == 13  # a restart finds it


def test_preferences_and_filters_match_the_memory_stock(database):
    items = [image(2, seed, confidence) for seed, confidence in ((1, 0.6), (2, 0.99), (3, 0.8), (4, 0.7))]
    for prefer in (None, "confident", "borderline"):
        memory, shared = MemoryStock(), DatabaseStock(database, models=f"m-{prefer}")
        memory.put(items)
        shared.put(items)
        suits = lambda row: row.confidence < 0.75  # noqa: E731
        assert memory.counts(suits) == shared.counts(suits) and shared.counts(suits)[2] == 2
        assert [memory.take(2, prefer).seed for _ in items] == [shared.take(2, prefer).seed for _ in items]


def test_a_hard_quiz_takes_atypical_images_the_classifier_is_sure_of(database):
    """Issue 32: the generator's tiles are more prototypical than real ones, so a verified image as atypical as the
    least typical fifth of real tiles (realism < 0.2) suits a hard quiz even when the classifier is sure of it; a
    typical 0.95-sure one does not, though it is the least sure."""
    items = [image(2, 1, 0.95), image(2, 2, 0.99, realism=0.1), image(2, 3, 0.97)]
    assert [is_borderline(item) for item in items] == [False, True, False]
    memory, shared = MemoryStock(), DatabaseStock(database, models="m")
    memory.put(items)
    shared.put(items)
    assert memory.counts(is_borderline)[2] == shared.counts(is_borderline)[2] == 1
    assert memory.take(2, "borderline").seed == shared.take(2, "borderline").seed == 2
    assert memory.take(2, "borderline").seed == shared.take(2, "borderline").seed == 1  # then the least sure


def test_replicas_taking_at_once_never_get_the_same_image(database):
    stock = DatabaseStock(database, models="m")
    stock.put([image(4, seed) for seed in range(40)])
    taken, errors = [], []

    def replica():
        try:
            while (item := DatabaseStock(database, models="m").take(4)) is not None:
                taken.append(item.seed)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and sorted(taken) == list(range(40))


def test_a_worker_fills_the_stock_that_a_replica_only_takes_from(database):
    verifier, explainer = StubVerifier(), CountingExplainer()
    worker = VerifiedPool(verifier, explainer, per_tissue=2, stock=DatabaseStock(database, "m"))
    replica_verifier = StubVerifier()
    replica = VerifiedPool(replica_verifier, explainer, per_tissue=2, stock=DatabaseStock(database, "m"), fills=False)
    while not worker.full:
        worker.fill_once()
    assert replica.full and replica.stock() == {t: 2 for t in range(NUM_TISSUES)}
    served = replica.generate([0, 1, 1])
    assert replica_verifier.calls == [] and all(r.from_pool and r.heatmap is not None for r in served)
    assert worker.stock()[1] == 0 and replica.stocked_where(is_borderline) == dict.fromkeys(range(NUM_TISSUES), 0)
    worker.fill_once()
    assert worker.full
