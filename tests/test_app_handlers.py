"""The app's handlers as plain functions over library calls: no server, tiny models."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from pathsynth.app import build_demo, galleries, generate, quiz
from pathsynth.gallery import GalleryStore
from pathsynth.resolver import TissueResolver
from pathsynth.app.generate import tile_size
from pathsynth.explain import MAP_LEGEND_HEIGHT
from pathsynth.services import Loading, Services, cached_probabilities
from pathsynth.settings import Settings
from pathsynth.tissues import DISPLAY_NAMES, NUM_TISSUES
from pathsynth.pool import ExplanationCache, VerifiedPool, gradcam_explainer
from pathsynth.verify import Verifier
from tiny_models import save_tiny_models, tiny_classifier, tiny_generator

MAP_SHAPE = (336 + MAP_LEGEND_HEIGHT, 336, 3)  # the occlusion map as shown: legend and reading under it


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (90, 28, 28, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(NUM_TISSUES), 10)
    classifier = tiny_classifier()
    verifier = Verifier(tiny_generator(steps=2), classifier, images, labels, max_attempts=2)
    settings = Settings.from_env({"PATHSYNTH_HOME": str(home), "PATHSYNTH_INSTRUCTOR_PASSWORD": "pw"})
    return Services(settings, verifier, TissueResolver(use_encoder=False), GalleryStore(home), images, labels,
                    classifier.predict_proba(images))


def test_generate_returns_the_image_its_record_and_a_download(services):
    image, cam, label, summary, card, download, details, *_ = generate.generate(services, "Mucus", "", "7", True)
    assert image.shape == (336, 336, 3) and cam.shape == MAP_SHAPE  # the map with its legend and reading
    assert set(label) == set(DISPLAY_NAMES) and details["tissue"] == 4 and details["seed"] is not None
    assert "| Seed |" in summary and "Mucus" in card and download["visible"] is True
    again = generate.generate(services, "Mucus", "", "7", False)
    assert np.array_equal(again[0], image) and again[1] is None  # same seed, same image


def test_generate_from_text_and_refusals(services):
    *_, details, _, tissue, understood, _ = generate.generate(services, None, "fat cells", "", False)
    assert details["tissue"] == 0 and tissue["value"] == "Adipose tissue" and "Understood" in understood
    result = generate.generate(services, None, "qwzx blorptang", "", False)
    assert result[0] is None and result[2] is None and "Not understood" in result[9] and result[3] == ""
    assert "not understood" in result[10]  # the status line beside the button says what to do
    # failures answer in the status line; every other output is left as it was (no error overlay)
    for args, message in ((("Mucus", "", "-5", False), "Seed must be"), ((None, " ", "", False), "Choose a tissue")):
        refused = generate.generate(services, *args)
        assert message in refused[10] and all(value == gr.skip() for value in refused[:10])


def test_quiz_start_answer_next_and_retry(services):
    view = quiz.start(services, 2, 0.0)
    session = view[0]
    assert session.total == 2 and view[9]["answered"] == 0
    wrong = next(i for i in range(NUM_TISSUES) if i != session.questions[0].answer)
    answered = quiz.answer(services, session, DISPLAY_NAMES[wrong])
    assert answered[-1]["correct"] is False and "Not quite" in answered[5]
    quiz.answer(services, session, DISPLAY_NAMES[session.questions[1].answer])
    finished = quiz.next_question(session)
    assert "Quiz finished: 1 / 2" in finished[11]
    assert quiz.retry(session)[0].total == 1
    assert "Start a quiz first" in quiz.answer(services, None, "Mucus")[5]



def test_the_score_line_names_the_question_the_header_shows(services):
    """Issue 32: after answering question 2 the score line said "question 3 of 8" under "Question 2 of 8"."""
    session = quiz.start(services, 3, 0.0)[0]
    quiz.answer(services, session, DISPLAY_NAMES[session.questions[0].answer])
    shown = quiz.next_question(session)
    assert shown[1].startswith("### Question 2 of 3") and "question 2 of 3" in shown[8]
    answered = quiz.answer(services, session, DISPLAY_NAMES[session.questions[1].answer])
    assert "question 2 of 3 answered" in answered[7] and "question 3" not in answered[7]
    quiz.answer(services, quiz.next_question(session)[0], DISPLAY_NAMES[session.questions[2].answer])
    assert "all 3 questions answered" in quiz._score_line(session)


def test_an_exam_hides_the_map_panel_and_refuses_a_retry_until_it_is_over(services):
    """Issue 32: an exam kept an empty occlusion-map panel on screen, and /quiz_retry mid-exam revealed which
    answers were wrong."""
    view = quiz.start(services, 2, 0.0, mode="exam")
    session = view[0]
    assert view[7]["visible"] is False  # no map in an exam: no empty panel
    wrong = next(i for i in range(NUM_TISSUES) if i != session.questions[0].answer)
    quiz.answer(services, session, DISPLAY_NAMES[wrong])
    refused = quiz.retry(session, services=services)
    assert "when the exam is over" in refused[quiz.STATUS] and all(v == gr.skip() for v in refused[:quiz.STATUS])
    quiz.answer(services, session, DISPLAY_NAMES[session.questions[1].answer])
    assert "Quiz finished: 1 / 2" in quiz.next_question(session)[11]
    again = quiz.retry(session, services=services)
    assert again[0].total == 1 and not again[0].exam and again[7]["visible"] is True  # practice: the map is back


def test_the_quiz_summary_says_how_the_learner_did_on_real_and_synthetic_tiles(services):
    """Issue 32: "Real tiles: 1 of 2 right; synthetic: 1 of 1." under the score (the real tiles come first)."""
    images = [np.full((28, 28, 3), 40 * i, np.uint8) for i in range(3)]
    session = quiz.Q.quiz_from_images(images, [0, 1, 2], sources=["generated", "real", "real"])
    for choice in (0, 1, 5):
        quiz.answer(services, session, DISPLAY_NAMES[choice])
    text = quiz.next_question(session)[11]
    assert "Quiz finished: 2 / 3" in text and "Real tiles: 1 of 2 right; synthetic: 1 of 1." in text

def test_gallery_round_trip_needs_the_instructor(services):
    request = SimpleNamespace(client=SimpleNamespace(host="test"))
    assert "password" in galleries.instructor_generate(services, "wrong", ["Mucus"], 2, "1", None, request)[3]
    batch, shown, rows, _ = galleries.instructor_generate(services, "pw", ["Mucus"], 2, "1", None, request)
    assert len(batch) == len(shown) == len(rows) == 2
    rows[0][0], rows[1][0] = True, False  # tiny models rarely verify: tick by hand
    message, _, saved = galleries.gallery_save(services, "pw", "Unit", "d", {"data": rows}, batch, None, request)
    assert saved["n_items"] == 1 and "Saved" in message
    images, info, details = galleries.gallery_get(services, str(saved["id"]))
    assert len(images) == 1 and details["items"][0]["tissue"] == "Mucus" and "Unit" in info
    assert galleries.gallery_quiz(services, "Unit")[0].title == "Unit"
    assert galleries.gallery_get(services, "  ") == (None, "", None)  # nothing chosen: an empty view
    images, info, details = galleries.gallery_get(services, "no such gallery")
    assert images is None and details is None and "no gallery named" in info


def test_probabilities_are_cached_on_disk_by_weight_hash(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"one")
    calls = []
    classifier = SimpleNamespace(predict_proba=lambda x: calls.append(1) or np.full((len(x), 9), 1 / 9))
    images = np.zeros((3, 28, 28, 3), np.uint8)
    first = cached_probabilities(classifier, images, tmp_path / "cache", weights)
    again = cached_probabilities(classifier, images, tmp_path / "cache", weights)
    assert np.array_equal(first, again) and len(calls) == 1
    weights.write_bytes(b"two")  # new weights: computed again
    cached_probabilities(classifier, images, tmp_path / "cache", weights)
    assert len(calls) == 2


def test_the_demo_builds_with_every_api_name(services):
    demo = build_demo(services)
    names = {fn.api_name for fn in demo.fns.values() if fn.api_name}
    assert {"resolve", "generate", "quiz_start", "quiz_answer", "quiz_next", "quiz_retry", "gallery_list",
            "gallery_get", "gallery_quiz", "instructor_sign_in", "instructor_generate", "gallery_save",
            "gallery_add_items", "gallery_update_caption", "gallery_rename", "gallery_delete"} <= names
    model_events = {fn.api_name for fn in demo.fns.values() if fn.concurrency_id == "model"}
    assert model_events == {"generate", "quiz_start", "instructor_generate", "challenge_next", "assignment_create"}


def test_with_a_pool_no_learner_event_waits_in_the_model_queue(pooled):
    """Served from the pool, starting a quiz and generating never queue behind generation; answering and moving
    on never do, pool or not."""
    queue_of = {fn.api_name: fn.concurrency_id for fn in build_demo(pooled).fns.values() if fn.api_name}
    model_events = {name for name, queue in queue_of.items() if queue == "model"}
    assert not model_events & {"instructor_generate", "assignment_create"}  # their model calls take model_slots
    learner_events = ("generate", "quiz_start", "quiz_answer", "quiz_next", "quiz_retry", "late_overlay")
    assert len({queue_of[name] for name in learner_events}) == len(learner_events)  # each its own queue


class AcceptingVerifier(Verifier):
    """The real loop and tiny generator; every image passes (random tiny models rarely verify anything)."""

    def judge(self, images, tissues):
        return np.eye(NUM_TISSUES)[list(tissues)], np.ones(len(images)), np.ones(len(images), bool)


@pytest.fixture
def pooled(services):
    """The services with a stocked pool (one image per tissue, not refilling) of verified, explained images."""
    verifier = AcceptingVerifier(services.generator, services.classifier, max_attempts=1)
    pool = VerifiedPool(verifier, services.explainer, per_tissue=1)
    pool.fill_once()
    return Services(services.settings, verifier, services.resolver, services.store, services.real_images,
                    services.real_labels, services.real_probabilities, pool, services.explanations)


def test_the_app_draws_from_a_pool_by_default(tmp_path):
    assert Settings.from_env({}).pool_per_tissue == 8
    assert Settings.from_env({"PATHSYNTH_POOL_PER_TISSUE": "0"}).pool_per_tissue == 0
    with pytest.raises(ValueError, match="PATHSYNTH_POOL_PER_TISSUE"):
        Settings.from_env({"PATHSYNTH_POOL_PER_TISSUE": "-1"})
    classifier_dir, generator_dir = save_tiny_models(tmp_path / "models")
    from sample_tiles import sample_npz

    settings = Settings.from_env({"PATHSYNTH_CLASSIFIER": str(classifier_dir), "PATHSYNTH_HOME": str(tmp_path),
                                  "PATHSYNTH_GENERATOR": str(generator_dir),
                                  "PATHSYNTH_DATA": str(sample_npz(tmp_path / "tiles.npz"))})
    built = Services.build(settings)
    try:
        assert built.pool is not None and built.images is built.pool and built.pool.per_tissue == 8
        assert built.pool.explainer is built.explainer  # pooled heatmaps land in the answers' cache
        assert 0 < len(built.pool._ahead) <= 45  # real quiz tiles to explain once stocked (5 per answer key)
        assert len(built.pool._ahead) + len(built.pool._later) == len(built.real_images)  # then every other one
    finally:
        built.pool.stop(timeout=60)
    assert Services.build(settings, pool_per_tissue=0).pool is None


def test_unseeded_generation_takes_a_ready_image_whose_seed_reproduces_it(pooled):
    image, cam, *_, details, _, _, _, status = generate.generate(pooled, "Mucus", "", "", True)
    assert details["from_pool"] is True and "pool" in status and cam is not None
    assert pooled.pool.stock()[4] == 0  # handed out once
    again = generate.generate(pooled, "Mucus", "", str(details["seed"]), False)
    assert np.array_equal(again[0], image) and again[6]["from_pool"] is False and "Freshly" in again[10]


def test_answering_needs_no_model_call(pooled, monkeypatch):
    view = quiz.start(pooled, 4, 0.5)
    session = view[0]
    assert [q.source for q in session.questions].count("generated") == 2  # drawn from the pool
    assert all(q.heatmap is not None for q in session.questions)

    def forbidden(*args, **kwargs):
        raise AssertionError("a model call while answering")

    for name in ("gradcam", "predict_proba", "features", "explain"):
        monkeypatch.setattr(pooled.classifier, name, forbidden)
    monkeypatch.setattr(pooled.explanations, "explainer", forbidden)
    for question in session.questions:
        answered = quiz.answer(pooled, session, DISPLAY_NAMES[question.answer])
        assert answered[-1]["correct"] is True and answered[6].shape == MAP_SHAPE  # the overlay, from cache
        quiz.next_question(session)
    assert session.score == 4


def forbid_model_calls(services, monkeypatch) -> None:
    """Every model call (classifier, generator, explanation) raises from now on."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a model call on a request path that must not make one")

    for name in ("gradcam", "predict_proba", "features", "explain"):
        monkeypatch.setattr(services.classifier, name, forbidden)
    monkeypatch.setattr(services.generator, "generate", forbidden)
    monkeypatch.setattr(services.explanations, "explainer", forbidden)


def with_real_tiles_explained_ahead(pooled, count: int = 20):
    """``pooled`` with its own explanation cache, ``count`` real tiles in it (what the pool's filler does)."""
    cache = ExplanationCache(gradcam_explainer(pooled.classifier))
    for pair in ((item.image, item.predicted) for item in pooled.pool.stocked()):
        cache.put(*pair, pooled.explanations(*pair))
    answers = pooled.real_probabilities.argmax(1)
    for i in range(count):
        cache.put(pooled.real_images[i], answers[i], np.full((28, 28), 0.5, np.float32))
    return Services(pooled.settings, pooled.verifier, pooled.resolver, pooled.store, pooled.real_images,
                    pooled.real_labels, pooled.real_probabilities, pooled.pool, cache)


def test_from_a_stocked_pool_no_learner_action_calls_a_model(pooled, monkeypatch):
    ready = with_real_tiles_explained_ahead(pooled)
    forbid_model_calls(ready, monkeypatch)
    image, cam, *_, details, _, _, _, status = generate.generate(ready, "Mucus", "", "", True)
    assert details["from_pool"] is True and cam.shape == MAP_SHAPE and "pool" in status
    session = quiz.start(ready, 4, 1.0)[0]  # the stock's other 8 tissues: the generated ones come from it
    assert session.total == 4 and [q.source for q in session.questions].count("generated") == 4
    for question in list(session.questions):
        answered = quiz.answer(ready, session, DISPLAY_NAMES[question.answer])
        assert answered[-1]["correct"] is True and answered[6].shape == MAP_SHAPE  # the overlay, ready
        assert quiz.late_overlay(ready, session) == gr.skip()  # nothing left to make after the answer
        quiz.next_question(session, services=ready)
    ready.pool.take(range(NUM_TISSUES))  # the rest of the class drained the pool
    mixed = quiz.start(ready, 4, 0.5)[0]  # real tiles (explained ahead) instead of generating on the spot
    assert [q.source for q in mixed.questions] == ["real"] * 4 and all(q.heatmap is not None for q in mixed.questions)
    assert "Quiz finished: 4 / 4" in quiz.next_question(session, services=ready)[11]


def test_an_answer_without_a_ready_heatmap_shows_it_after_calling_no_model(pooled, monkeypatch):
    """A gallery quiz's tiles come without heatmaps: the answer shows none rather than wait for the classifier;
    the event after it (its own queue) makes the map, unless the learner has moved on."""
    from pathsynth import quiz as Q

    tiles = [np.full((28, 28, 3), 40 * i, np.uint8) for i in range(3)]
    session = Q.quiz_from_images(tiles, [1, 2, 3], captions=["a", "b", "c"])
    with monkeypatch.context() as patch:
        forbid_model_calls(pooled, patch)
        answered = quiz.answer(pooled, session, "Mucus")
        assert answered[6] is None and "Not quite" in answered[5]
    assert len(pooled.pool._urgent) == 0  # nothing queued yet: the answer only looked
    late = quiz.late_overlay(pooled, session)
    assert late.shape == MAP_SHAPE and session.questions[0].heatmap is not None
    assert len(pooled.pool._urgent) == 2  # the quiz's other tiles: explained by the pool's filler next
    quiz.next_question(session, services=pooled)
    quiz.answer(pooled, session, "Mucus")
    session.questions[2].shown_at = 0.0  # ... the learner moved on before the map was made
    assert quiz.late_overlay(pooled, session) == gr.skip()


def test_quizzes_use_real_tiles_already_explained_when_there_are_enough(services):
    services = Services(services.settings, services.verifier, services.resolver, services.store, services.real_images,
                        services.real_labels, services.real_probabilities)  # an empty explanation cache
    answers = services.real_probabilities.argmax(1)
    for i in range(12):
        services.explanations.put(services.real_images[i], answers[i], np.zeros((28, 28), np.float32))
    real = services.real_sample(minimum=12)
    assert len(real["real_images"]) == 12 and np.array_equal(real["real_images"], services.real_images[:12])
    assert np.array_equal(real["real_probabilities"], services.real_probabilities[:12]) and real["real_ids"] == \
        list(range(12)) and np.array_equal(real["real_labels"], services.real_labels[:12])
    wanted = [int(answers[0])]
    only = services.real_sample(minimum=1, tissues=wanted)  # a weak-tissue quiz: only tiles of those tissues
    assert set(only["real_probabilities"].argmax(1)) == set(wanted) and 0 in only["real_ids"]
    whole = services.real_sample(minimum=13)  # too few ready: the whole sample
    assert whole["real_images"] is services.real_images and "real_ids" not in whole


def test_cached_images_are_never_rewritten_in_place(tmp_path):
    """Two sessions showing the same picture: the second save must not truncate the file the first is serving."""
    from PIL import Image
    from gradio import processing_utils

    from pathsynth.app.common import install_atomic_image_cache, save_pil_to_cache_atomically

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8))
    first = save_pil_to_cache_atomically(image, str(tmp_path), format="png")
    inode, content = os.stat(first).st_ino, Path(first).read_bytes()
    again = save_pil_to_cache_atomically(image, str(tmp_path), format="png")
    assert again == first and os.stat(again).st_ino == inode  # the same complete file, not a rewrite
    assert Path(again).read_bytes() == content == processing_utils.encode_pil_to_bytes(image, "png")
    assert not [p for p in Path(first).parent.iterdir() if p.name.startswith(".")]  # no staging files left
    install_atomic_image_cache()
    assert processing_utils.save_img_array_to_cache(np.asarray(image), str(tmp_path), format="png") == first


def test_each_server_process_caches_files_in_a_folder_of_its_own(tmp_path, monkeypatch):
    """A stopping Gradio server deletes every cached file it created; in a folder shared by the machine's servers
    that took a real tile from another server's page (CI: a quiz's second real example never appeared)."""
    import subprocess
    import sys

    from pathsynth.app.common import use_own_file_cache

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / str(gone.pid) / "abc").mkdir(parents=True)  # left by a process that crashed
    (tmp_path / "1").mkdir()  # a running process (init)
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    own = use_own_file_cache(tmp_path)
    assert own == tmp_path / str(os.getpid()) and os.environ["GRADIO_TEMP_DIR"] == str(own) and own.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["1", str(os.getpid())])
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "chosen"))
    assert use_own_file_cache(tmp_path) is None and os.environ["GRADIO_TEMP_DIR"] == str(tmp_path / "chosen")


class RecordingSlots:
    """Stands in for ``common.model_slots``: records whether model calls run while holding a slot."""

    def __init__(self):
        self.held = False

    def __enter__(self):
        self.held = True

    def __exit__(self, *exc):
        self.held = False


def test_an_instructors_batch_is_generated_in_a_model_slot(services, monkeypatch):
    slots, calls = RecordingSlots(), []
    monkeypatch.setattr(galleries, "model_slots", slots)
    generate_now = services.verifier.generate
    monkeypatch.setattr(services.verifier, "generate",
                        lambda *args, **kwargs: calls.append(slots.held) or generate_now(*args, **kwargs))
    request = SimpleNamespace(client=SimpleNamespace(host="test-slots"))
    batch = galleries.instructor_generate(services, "pw", ["Mucus"], 1, "3", None, request)[0]
    assert len(batch) == 1 and calls == [True] and slots.held is False


def test_a_gallery_quiz_has_the_pool_prepare_its_maps(pooled, monkeypatch):
    """A gallery's tiles come without heatmaps: starting its quiz hands them to the pool's filler at once (not
    after the first answer), and the view gets the services (the review's real examples)."""
    from pathsynth.gallery import GalleryItemInput

    tiles = [np.full((28, 28, 3), 60 + 50 * i, np.uint8) for i in range(3)]
    key = pooled.store.create_gallery("Pooled gallery quiz", items=[GalleryItemInput(t, tissue=i)
                                                                    for i, t in enumerate(tiles)])
    given = []
    view = galleries.question_view
    monkeypatch.setattr(galleries, "question_view",
                        lambda *args, **kwargs: given.append(kwargs) or view(*args, **kwargs))
    pooled.pool._urgent.clear()
    session = galleries.gallery_quiz(pooled, key)[0]
    assert session.total == 3 and given[0].get("services") is pooled
    assert sorted(tissue for _, tissue in pooled.pool._urgent) == [0, 1, 2]
    assert pooled.pool.explain_urgent() == 3  # the filler's next job: then the answers find their maps ready
    assert all(pooled.explanations.get(q.image, q.answer) is not None for q in session.questions)


def test_the_quiz_tab_opens_assignments_and_the_assignments_tab_lists_galleries_when_opened(services):
    demo = build_demo(services)
    fns = list(demo.fns.values())
    label = lambda block_id: getattr(demo.blocks[block_id], "label", None) or demo.blocks[block_id].value  # noqa: E731
    opening = [fn for fn in fns if getattr(fn.fn, "__name__", "") == "assignment_open_from_quiz"]
    assert sorted((label(block), event) for fn in opening for block, event in fn.targets) == [
        ("Have an assignment code?", "submit"), ("Open assignment", "click")]
    assert {label(c._id) for c in opening[0].inputs} == {"Have an assignment code?", "Your name (saves your progress)"}
    assert any(isinstance(c, gr.Tabs) for c in opening[0].outputs)  # it switches to the Assignments tab
    listing = [fn for fn in fns if getattr(fn.fn, "__name__", "") == "assignment_galleries"]
    assert ("Assignments", "select") in {(label(block), event) for fn in listing for block, event in fn.targets
                                         if block is not None}  # not only after a sign-in (``then``)


def test_the_real_tiles_answer_keys_can_come_after_the_page_and_quizzes_ask_only_classified_tiles(services, tmp_path):
    """serve_first (the app): the page is up before the real tiles are classified; until a tile is, its
    probabilities are NaN and no quiz or review asks it; AnswerKeys fills them, keeps them, queues explanations."""
    from pathsynth.learning.examples import example_index
    from pathsynth.services import AnswerKeys, read_probabilities

    images, labels = services.real_images[:36], services.real_labels[:36]
    unknown = np.full((36, NUM_TISSUES), np.nan, np.float32)
    waiting = Services(services.settings, services.verifier, services.resolver, services.store, images, labels,
                       unknown, None, ExplanationCache(gradcam_explainer(services.classifier)))
    assert len(waiting.real_sample(minimum=2)["real_images"]) == 0  # nothing classified: a quiz generates all
    expected = services.classifier.predict_proba(images)
    unknown[:12] = expected[:12]  # the first chunk done
    sample = waiting.real_sample(minimum=2)
    assert sample["real_ids"] == list(range(12)) and np.allclose(sample["real_probabilities"], expected[:12])
    assert all(example_index(labels, unknown, t) in (None, *range(12)) for t in range(NUM_TISSUES))

    pool = VerifiedPool(services.verifier, services.explainer, per_tissue=1)  # not started: only its queues
    keys = AnswerKeys(services.classifier, images, labels, unknown, tmp_path / "keys.npy", pool)
    keys.run()
    assert np.allclose(unknown, expected, atol=1e-6) and np.allclose(read_probabilities(keys.path, 36), expected)
    assert 0 < len(pool._ahead) and len(pool._ahead) + len(pool._later) == 36


def test_a_served_first_app_logs_each_start_up_stage_and_classifies_in_the_background(tmp_path, monkeypatch, caplog):
    import logging
    import time

    classifier_dir, generator_dir = save_tiny_models(tmp_path / "models")
    from sample_tiles import sample_npz

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # empty: nothing classified before
    settings = Settings.from_env({"PATHSYNTH_CLASSIFIER": str(classifier_dir), "PATHSYNTH_HOME": str(tmp_path),
                                  "PATHSYNTH_GENERATOR": str(generator_dir),
                                  "PATHSYNTH_DATA": str(sample_npz(tmp_path / "tiles.npz"))})
    with caplog.at_level(logging.INFO, logger="pathsynth.services"):
        built = Services.build(settings, pool_per_tissue=0, serve_first=True)
        assert isinstance(built.verifier, Loading) and isinstance(built.explanations, Loading)  # the page first
        assert tile_size(built) == 28 and not np.isfinite(built.real_probabilities).any()
        assert built.classifier.predict_proba(built.real_images[:1]).shape == (1, NUM_TISSUES)  # waits for it
        assert not isinstance(built.verifier, Loading)  # then the services hold the models themselves
    stages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("start-up:")]
    assert any("loading the classifier: done in" in line for line in stages), stages
    assert any("loading the generator: done in" in line for line in stages), stages
    assert not any("classifying the" in line and "done in" in line for line in stages)  # not before serving
    deadline = time.monotonic() + 120
    while not np.isfinite(built.real_probabilities).all() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert np.allclose(built.real_probabilities, built.classifier.predict_proba(built.real_images), atol=1e-5)
    again = Services.build(settings, pool_per_tissue=0, serve_first=True)  # kept: read back once loaded
    again.verifier.threshold  # noqa: B018 - waits for the models
    assert np.isfinite(again.real_probabilities).all()


def test_typed_seeds_asked_at_once_share_one_generator_batch_and_give_their_own_images(services):
    import threading

    from pathsynth.app.common import model_slots, seeded_batches, verified_images

    calls = []
    generate_alone = services.verifier.generate

    class Counting:  # the services' verifier, counting its calls
        def __getattr__(self, name):
            return getattr(services.verifier, name)

        def generate(self, *args, **kwargs):
            calls.append(len(args[0]))
            return generate_alone(*args, **kwargs)

    counted = SimpleNamespace(verifier=Counting(), pool=None)
    asked = [(tissue, 100 + tissue) for tissue in range(5)]
    results = {}
    for _ in range(2):  # hold both model slots until all five wait: then one thread takes them all
        model_slots.acquire()
    threads = [threading.Thread(target=lambda t=t, s=s: results.update({t: verified_images(counted, [t], s)[0]}))
               for t, s in asked]
    for thread in threads:
        thread.start()
    while len(seeded_batches._waiting) < len(asked):
        threading.Event().wait(0.01)
    for _ in range(2):
        model_slots.release()
    for thread in threads:
        thread.join(60)
    assert calls[0] == len(asked) and len(results) == len(asked)
    for tissue, seed in asked:
        alone = generate_alone([tissue], seed=seed)[0]
        assert results[tissue].seed == alone.seed and results[tissue].tissue == tissue
        assert np.abs(results[tissue].image.astype(int) - alone.image.astype(int)).max() <= 2  # batch rounding
