"""Quiz sessions: building from verified generated + real tiles, answering, scoring, retry, serialisation."""

import copy
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pathsynth import quiz as Q
from pathsynth.classifier import TissueClassifier
from sample_tiles import sample_tiles
from pathsynth.tissues import CONFUSABLE_PAIRS, DISPLAY_NAMES, NUM_TISSUES, TISSUES
from pathsynth.verify import VerifiedImage


def tiny_random_classifier(seed: int = 0) -> TissueClassifier:
    """A real TissueClassifier around a tiny random linear model: fast, deterministic, varied predictions."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, NUM_TISSUES))
    with torch.no_grad():
        model[2].weight.mul_(20.0)  # spread the logits so predictions differ between tiles
    return TissueClassifier(model, {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 28, "tta": False})


class FakeVerifier:
    """Test double for ``pathsynth.verify.Verifier.generate``: flat-colour tiles; ``reject`` picks unverified ones."""

    def __init__(self, reject=lambda slot: False):
        self.reject = reject
        self.calls = []

    def generate(self, tissues, seed=None, progress=None):
        self.calls.append((list(tissues), seed))
        results = []
        for slot, tissue in enumerate(tissues):
            image = np.full((28, 28, 3), 20 * tissue + slot % 7, np.uint8)
            probabilities = [0.01] * NUM_TISSUES
            probabilities[tissue] = 0.92
            verified = not self.reject(slot)
            results.append(VerifiedImage(image=image, tissue=int(tissue), verified=verified, attempts=1,
                                         seed=1000 * (seed or 0) + slot, probabilities=probabilities,
                                         predicted=int(tissue), confidence=0.92, realism=0.5))
        return results


@pytest.fixture(scope="module")
def sample():
    return sample_tiles()


@pytest.fixture(scope="module")
def classifier():
    return tiny_random_classifier()


def build(sample, classifier, **kwargs):
    images, labels = sample
    kwargs.setdefault("seed", 0)
    return Q.build_quiz(kwargs.pop("n", 10), classifier=classifier, real_images=images, real_labels=labels, **kwargs)


def snapshot(session):
    """Everything a session holds, comparable with ==."""
    questions = [(q.image.tobytes(), q.image.shape, q.answer, q.source, q.true_label, q.seed, list(q.probabilities))
                 for q in session.questions]
    return json.dumps([session.id, session.title, list(session.answers), repr(questions)])


# ------------------------------------------------------------------------------------------ building

def test_build_mixes_verified_generated_and_real(sample, classifier):
    verifier = FakeVerifier()
    session = build(sample, classifier, verifier=verifier, generated_share=0.5)
    assert session.total == 10 and session.answers == [None] * 10
    sources = [q.source for q in session.questions]
    assert sources.count("generated") == 5 and sources.count("real") == 5
    assert len(verifier.calls) == 1 and len(verifier.calls[0][0]) == 5
    for q in session.questions:
        assert q.image.dtype == np.uint8 and q.image.shape == (28, 28, 3)
        assert len(q.probabilities) == NUM_TISSUES and 0 <= q.answer < NUM_TISSUES
        if q.source == "generated":
            assert q.seed is not None and q.true_label is None
            assert q.answer == int(q.image[0, 0, 0]) // 20  # the verified tissue is the key
        else:
            assert q.seed is None and q.true_label is not None
            # the key for a real tile is the classifier's own prediction on it
            assert q.answer == int(classifier.predict(q.image)[0])
            assert np.allclose(q.probabilities, classifier.predict_proba(q.image)[0], atol=1e-5)


def test_real_tiles_are_distinct_and_prefer_agreement(sample, classifier):
    images, labels = sample
    predicted = np.where(np.arange(len(labels)) % 2 == 0, labels, (labels + 1) % NUM_TISSUES)
    half_right = np.eye(NUM_TISSUES)[predicted]  # the classifier is right on every other tile
    session = build(sample, classifier, n=40, generated_share=0.0, real_probabilities=half_right)
    assert all(q.source == "real" for q in session.questions)
    assert len({q.image.tobytes() for q in session.questions}) == 40  # never the same tile twice
    assert all(q.answer == q.true_label for q in session.questions)  # agreeing tiles first
    assert max(np.bincount([q.answer for q in session.questions], minlength=9)) <= 5  # balanced over tissues


def test_unverified_generated_images_are_replaced_by_real(sample, classifier):
    session = build(sample, classifier, verifier=FakeVerifier(reject=lambda slot: slot % 2 == 0),
                    generated_share=1.0, n=6)
    sources = [q.source for q in session.questions]
    assert session.total == 6
    assert sources.count("generated") == 3 and sources.count("real") == 3
    session = build(sample, classifier, verifier=FakeVerifier(reject=lambda slot: True), generated_share=1.0, n=4)
    assert [q.source for q in session.questions] == ["real"] * 4


def test_with_no_real_tiles_every_tile_is_generated_and_unverified_ones_are_drawn_again(classifier):
    no_real = (np.zeros((0, 28, 28, 3), np.uint8), np.zeros(0, np.int64))
    verifier = FakeVerifier(reject=lambda slot: slot % 2 == 0)  # every call: its even slots unverified
    session = build(no_real, classifier, verifier=verifier, generated_share=0.0, n=6)  # the share cannot hold
    assert {q.source for q in session.questions} == {"generated"}
    # 6 asked (3 verified), the 3 others drawn again (1 verified), the last 2 once more (1): one left out
    assert session.total == 5 and [len(tissues) for tissues, _ in verifier.calls] == [6, 3, 2]
    with pytest.raises(ValueError, match="no verified generated image"):
        build(no_real, classifier, verifier=FakeVerifier(reject=lambda slot: True), n=3)
    with pytest.raises(ValueError, match="no real tiles"):
        build(no_real, classifier, verifier=None, n=3)


def test_tissue_restriction_with_cached_probabilities(sample, classifier):
    images, labels = sample
    perfect = np.eye(NUM_TISSUES)[labels]  # as if the classifier were always right
    session = build(sample, classifier, n=8, tissues=["ADI", 8], real_probabilities=perfect,
                    verifier=FakeVerifier(), generated_share=0.5)
    assert {q.answer for q in session.questions} <= {0, 8}
    assert {q.answer for q in session.questions if q.source == "real"} == {0, 8}  # balanced round-robin
    assert all(q.true_label == q.answer for q in session.questions if q.source == "real")


def test_same_seed_same_quiz_and_other_seed_differs(sample, classifier):
    a = build(sample, classifier, seed=3, verifier=FakeVerifier())
    b = build(sample, classifier, seed=3, verifier=FakeVerifier())
    c = build(sample, classifier, seed=4, verifier=FakeVerifier())
    assert [q.answer for q in a.questions] == [q.answer for q in b.questions]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a.questions, b.questions))
    assert a.id != b.id  # distinct sessions
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a.questions, c.questions))


@pytest.mark.parametrize("kwargs,match", [
    ({"n": 0}, "number of questions"), ({"n": 101}, "number of questions"), ({"n": 2.5}, "number of questions"),
    ({"generated_share": 1.5}, "generated_share"), ({"generated_share": float("nan")}, "generated_share"),
    ({"generated_share": "half"}, "generated_share"), ({"tissues": ["banana"]}, "not a tissue"),
    ({"tissues": [9]}, "not a tissue")])
def test_build_rejects_bad_arguments(sample, classifier, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(sample, classifier, **kwargs)


def test_too_few_real_tiles_is_a_clear_error(sample, classifier):
    images, labels = sample
    one_class = np.eye(NUM_TISSUES)[np.zeros(len(labels), int)]  # classifier says adipose for everything
    with pytest.raises(ValueError, match="only 0 real images are classified as Mucus"):
        build(sample, classifier, tissues=["MUC"], real_probabilities=one_class)


# ------------------------------------------------------------------------------------------ playing

def make_session(answers=(0, 1, 2, 3), sources=None):
    images = [np.full((28, 28, 3), 10 * i, np.uint8) for i in range(len(answers))]
    return Q.quiz_from_images(images, list(answers), sources=sources)


def test_answers_are_taken_in_order_and_scored():
    session = make_session((0, 1, 2, 3))
    assert session.current == 0
    first = Q.answer(session, 0)
    assert first.correct and first.question == 0 and first.answer == 0 and first.chosen == 0
    assert first.description == TISSUES[0].description
    assert first.explanation.startswith("Correct: this is Adipose tissue")
    second = Q.answer(session, "Mucus")  # display names and abbreviations work too
    assert not second.correct and second.chosen == 4 and second.answer == 1
    assert "you chose Mucus, but this is Background" in second.explanation
    assert session.current == 2 and session.score == 1 and not session.finished
    Q.answer(session, "DEB")
    last = Q.answer(session, 3, question=3)
    assert last.finished and session.finished and session.score == 3
    assert session.answers == [0, 4, 2, 3]


def test_answering_a_specific_question_out_of_order():
    session = make_session((5, 6, 7))
    Q.answer(session, 7, question=2)
    assert session.current == 0 and session.answers == [None, None, 7]


@pytest.mark.parametrize("choice", [9, -1, "banana", "", None, True, 1.5, [1], {"a": 1}, object()])
def test_invalid_choice_leaves_state_unchanged(choice):
    session = make_session()
    Q.answer(session, 0)
    before = snapshot(session)
    with pytest.raises(ValueError):
        Q.answer(session, choice)
    assert snapshot(session) == before


@pytest.mark.parametrize("question", [4, -1, 99, "1", 1.0, True])
def test_invalid_question_leaves_state_unchanged(question):
    session = make_session()
    before = snapshot(session)
    with pytest.raises(ValueError):
        Q.answer(session, 0, question=question)
    assert snapshot(session) == before


def test_answering_twice_and_after_the_end_fail_cleanly():
    session = make_session((0, 1))
    Q.answer(session, 0)
    with pytest.raises(ValueError, match="already been answered"):
        Q.answer(session, 1, question=0)
    Q.answer(session, 1)
    before = snapshot(session)
    with pytest.raises(ValueError, match="finished"):
        Q.answer(session, 1)
    assert snapshot(session) == before


def test_summary_per_tissue_and_missed():
    session = make_session((0, 0, 3, 8, 8))
    for choice in (0, 3, 3, 2):  # the last question stays unanswered
        Q.answer(session, choice)
    s = Q.summary(session)
    assert (s.score, s.total, s.answered) == (2, 5, 4)
    assert s.per_tissue == {0: (1, 2), 3: (1, 1), 8: (0, 1)}
    assert s.missed == [1, 3] and s.unanswered == [4]
    assert s.percent == pytest.approx(40.0)


def test_retry_missed_makes_a_new_session_with_only_missed_questions():
    session = make_session((0, 1, 2, 3))
    for choice in (0, 5, 2, 6):
        Q.answer(session, choice)
    retry = Q.retry_missed(session)
    assert retry.total == 2 and retry.answers == [None, None] and retry.id != session.id
    assert [q.answer for q in retry.questions] == [1, 3]
    assert np.array_equal(retry.questions[0].image, session.questions[1].image)
    Q.answer(retry, 1)
    assert session.answers == [0, 5, 2, 6]  # the original is untouched
    Q.answer(retry, 3)
    with pytest.raises(ValueError, match="no missed questions"):
        Q.retry_missed(retry)


def test_sessions_are_independent(sample, classifier):
    a = build(sample, classifier, seed=1, verifier=FakeVerifier())
    b = copy.deepcopy(a)
    Q.answer(a, a.questions[0].answer)
    assert b.answers[0] is None
    images = [np.zeros((28, 28, 3), np.uint8)]
    session = Q.quiz_from_images(images, [0])
    images[0][:] = 255  # the caller's array changing later does not change the quiz
    assert session.questions[0].image.max() == 0


def test_feedback_for_real_tile_where_dataset_disagrees():
    session = Q.quiz_from_images([np.zeros((28, 28, 3), np.uint8)], [7], sources=["real"], true_labels=[5],
                                 probabilities=[[0.0] * 7 + [0.8, 0.2]])
    feedback = Q.answer(session, 5)
    assert not feedback.correct
    assert "dataset labels this real tile Smooth muscle" in feedback.explanation
    assert "80%" in feedback.explanation


def test_quiz_from_images_checks_lengths_and_names():
    image = np.zeros((28, 28, 3), np.uint8)
    with pytest.raises(ValueError, match="answers has 1 entries for 2 images"):
        Q.quiz_from_images([image, image], [0])
    with pytest.raises(ValueError, match="not a tissue"):
        Q.quiz_from_images([image], ["spleen"])
    with pytest.raises(ValueError, match="at least one image"):
        Q.quiz_from_images([], [])
    shuffled = Q.quiz_from_images([np.full((4, 4, 3), i, np.uint8) for i in range(9)], list(DISPLAY_NAMES),
                                  shuffle=True, seed=0)
    assert sorted(q.answer for q in shuffled.questions) == list(range(9))
    assert all(int(q.image[0, 0, 0]) == q.answer for q in shuffled.questions)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=12))
def test_property_score_counts_correct_answers(pairs):
    session = make_session([key for key, _ in pairs])
    for _, choice in pairs:
        Q.answer(session, choice)
    s = Q.summary(session)
    assert s.score == sum(key == choice for key, choice in pairs) == session.score
    assert s.total == s.answered == len(pairs) and s.unanswered == []
    assert sum(asked for _, asked in s.per_tissue.values()) == len(pairs)
    assert len(s.missed) == len(pairs) - s.score


def test_quiz_from_gallery_keeps_sources_seeds_and_probabilities():
    from types import SimpleNamespace

    def item(tissue, source, seed, probabilities):
        return SimpleNamespace(image=np.full((28, 28, 3), tissue, np.uint8), tissue=tissue, source=source,
                               seed=seed, meta={"probabilities": probabilities}, caption=f"note {tissue}")

    full = [1.0 / 9] * 9
    gallery = SimpleNamespace(name="Week 1", items=[item(0, "generated", 5, full), item(4, "uploaded", 2**40, full)])
    session = Q.quiz_from_gallery(gallery, shuffle=False)
    assert session.title == "Week 1" and [q.answer for q in session.questions] == [0, 4]
    assert [q.source for q in session.questions] == ["generated", "uploaded"]
    assert [q.seed for q in session.questions] == [5, None]  # beyond MAX_SEED: not a seed this app can replay
    assert session.questions[0].probabilities == full
    assert [q.caption for q in session.questions] == ["note 0", "note 4"]
    # Shuffled quizzes and retries of missed questions keep each image's instructor caption.
    shuffled = Q.quiz_from_gallery(gallery, seed=3)
    assert all(q.caption == f"note {q.answer}" for q in shuffled.questions)
    for _ in shuffled.questions:
        Q.answer(shuffled, (shuffled.questions[shuffled.current].answer + 1) % 9)
    retry = Q.retry_missed(shuffled)
    assert sorted(q.caption for q in retry.questions) == ["note 0", "note 4"]
    gallery.items[1].meta = {}
    assert Q.quiz_from_gallery(gallery).questions[0].probabilities == []  # all or none
    with pytest.raises(ValueError, match="no images"):
        Q.quiz_from_gallery(SimpleNamespace(name="empty", items=[]))


def test_a_caption_that_only_repeats_the_tissue_name_is_no_instructors_note():
    """Galleries saved with the old default caption (the tissue's name) do not print "Instructor's note: Mucus"."""
    from types import SimpleNamespace

    from pathsynth.tissues import DISPLAY_NAMES, tissue_index

    mucus = tissue_index("MUC")
    items = [SimpleNamespace(image=np.zeros((28, 28, 3), np.uint8), tissue=mucus, source="generated", seed=1,
                             meta={}, caption=caption) for caption in (DISPLAY_NAMES[mucus], "pools of mucin")]
    session = Q.quiz_from_gallery(SimpleNamespace(name="old", items=items), shuffle=False)
    assert [q.caption for q in session.questions] == ["", "pools of mucin"]


# ------------------------------------------------------------------------------------------ difficulty

def scripted_sample(confidences_per_tile: list[float], agree_every: int = 1):
    """Real tiles 0..N-1, tile i of tissue i % 9 (dataset label), the classifier ``confidences_per_tile[i]`` sure of
    it (the rest spread over the other tissues); every ``agree_every``-th tile agrees, the others are predicted as
    the next tissue."""
    n = len(confidences_per_tile)
    images = np.stack([np.full((28, 28, 3), i % 256, np.uint8) for i in range(n)])
    labels = np.arange(n) % NUM_TISSUES
    predicted = np.where(np.arange(n) % agree_every == 0, labels, (labels + 1) % NUM_TISSUES)
    probabilities = np.zeros((n, NUM_TISSUES))
    for i, confidence in enumerate(confidences_per_tile):
        probabilities[i] = (1 - confidence) / (NUM_TISSUES - 1)
        probabilities[i, predicted[i]] = confidence
    return images, labels, probabilities


def confidence_of(question) -> float:
    return question.probabilities[question.answer]


def test_easy_asks_prototypical_real_tiles_and_hard_borderline_ones():
    confidences = [0.99, 0.95, 0.75, 0.6, 0.4] * 36  # 180 tiles, 20 per tissue, five confidence levels
    images, labels, probabilities = scripted_sample([confidences[i // 9 % 5] for i in range(180)])
    common = dict(classifier=None, real_images=images, real_labels=labels, real_probabilities=probabilities)
    easy = Q.build_quiz(18, difficulty="easy", seed=0, **common)
    hard = Q.build_quiz(18, difficulty="hard", seed=0, **common)
    mixed = Q.build_quiz(18, seed=0, **common)
    assert easy.difficulty == "easy" and hard.difficulty == "hard" and mixed.difficulty == "mixed"
    assert all(confidence_of(q) >= 0.9 for q in easy.questions)
    assert all(0.5 <= confidence_of(q) < 0.9 for q in hard.questions)  # borderline, never below the sound key
    assert all(q.answer == q.true_label for q in easy.questions + hard.questions)  # the answer keys are sound
    assert {round(confidence_of(q), 2) for q in mixed.questions} > {0.99, 0.95}  # mixed: any agreeing tile


def test_hard_draws_confusable_pairs_together():
    images, labels, probabilities = scripted_sample([0.7] * 180)
    session = Q.build_quiz(10, classifier=None, real_images=images, real_labels=labels,
                           real_probabilities=probabilities, difficulty="hard", seed=1)
    asked = [q.answer for q in session.questions]
    pairs = {frozenset((p.first, p.second)) for p in CONFUSABLE_PAIRS}
    for tissue in asked:  # every tissue asked comes with a confusable partner in the same quiz
        assert any(frozenset((tissue, other)) in pairs for other in asked if other != tissue), asked
    only = Q.build_quiz(6, classifier=None, real_images=images, real_labels=labels, real_probabilities=probabilities,
                        difficulty="hard", tissues=["STR", "MUS", "ADI"], seed=2)
    assert sorted(q.answer for q in only.questions) == [5, 5, 5, 7, 7, 7]  # the one pair among the tissues asked


def test_difficulty_filters_generated_tiles_and_replaces_them_with_real_ones(sample, classifier):
    # FakeVerifier's tiles are 92 % sure and realism 0.5: prototypical, so easy keeps them and hard does not
    easy = build(sample, classifier, verifier=FakeVerifier(), generated_share=1.0, n=6, difficulty="easy")
    hard = build(sample, classifier, verifier=FakeVerifier(), generated_share=1.0, n=6, difficulty="hard")
    assert [q.source for q in easy.questions] == ["generated"] * 6
    assert [q.source for q in hard.questions] == ["real"] * 6
    with pytest.raises(ValueError, match="Difficulty must be easy, mixed or hard"):
        build(sample, classifier, difficulty="brutal")


def test_the_pool_hands_out_its_most_or_least_certain_image_when_asked():
    from pathsynth.pool import VerifiedPool

    pool = VerifiedPool(FakeVerifier(), per_tissue=3)
    for confidence in (0.7, 0.99, 0.8):
        image = VerifiedImage(image=np.zeros((28, 28, 3), np.uint8), tissue=2, verified=True, attempts=1, seed=1,
                              probabilities=[0.0] * 9, predicted=2, confidence=confidence, realism=0.5)
        pool.put([image])
    assert pool.generate([2], prefer="confident")[0].confidence == 0.99
    assert pool.generate([2], prefer="borderline")[0].confidence == 0.7
    assert pool.generate([2])[0].confidence == 0.8 and pool.stock()[2] == 0
    with pytest.raises(ValueError, match="prefer"):
        pool.generate([2], prefer="sharpest")


def scripted_pool(borderline: dict[int, int], confident: dict[int, int]):
    """A VerifiedPool (never started) stocked by hand: per tissue, ``borderline[t]`` images the classifier is 70 %
    sure of and ``confident[t]`` it is 97 % sure of; its verifier (a FakeVerifier) records any on-the-spot call."""
    from pathsynth.pool import VerifiedPool

    pool = VerifiedPool(FakeVerifier(), per_tissue=4)
    for tissue in range(NUM_TISSUES):
        for confidence in [0.7] * borderline.get(tissue, 0) + [0.97] * confident.get(tissue, 0):
            probabilities = [(1 - confidence) / (NUM_TISSUES - 1)] * NUM_TISSUES
            probabilities[tissue] = confidence
            pool.put([VerifiedImage(
                image=np.full((28, 28, 3), 200 + tissue, np.uint8), tissue=tissue, verified=True, attempts=1, seed=7,
                probabilities=probabilities, predicted=tissue, confidence=confidence, realism=0.5)])
    return pool


def test_hard_quizzes_ask_atypical_generated_images_too():
    """Issue 32: the generator's tiles are more prototypical than real ones; a verified image as atypical as the
    least typical fifth of real tiles (realism < 0.2) is asked in a hard quiz even when the classifier is sure of
    it, while a typical sure one stays for other quizzes."""
    from pathsynth.pool import VerifiedPool

    DEB, MUS = 2, 5  # a confusable pair: a hard quiz of these two tissues asks both
    pool = VerifiedPool(FakeVerifier(), per_tissue=4)
    for tissue, realism in ((DEB, 0.1), (DEB, 0.6), (MUS, 0.05), (MUS, 0.6)):
        probabilities = [0.03 / (NUM_TISSUES - 1)] * NUM_TISSUES
        probabilities[tissue] = 0.97
        pool.put([VerifiedImage(image=np.full((28, 28, 3), 100 + 10 * tissue + int(10 * realism), np.uint8),
                                tissue=tissue, verified=True, attempts=1, seed=7, probabilities=probabilities,
                                predicted=tissue, confidence=0.97, realism=realism)])
    images, labels, probabilities = scripted_sample([0.7] * 180)
    hard = Q.build_quiz(2, classifier=None, real_images=images, real_labels=labels, real_probabilities=probabilities,
                        verifier=pool, generated_share=1.0, difficulty="hard", tissues=[DEB, MUS])
    assert [q.source for q in hard.questions] == ["generated"] * 2 and pool.verifier.calls == []
    assert sorted(q.answer for q in hard.questions) == [DEB, MUS]
    assert sorted(item.realism for item in pool.stocked()) == [0.6, 0.6]  # the typical ones stay in stock


def test_hard_quizzes_mix_borderline_images_from_the_pool_with_borderline_real_tiles():
    # as with the real generator: only some tissues have a borderline image in stock (DEB, MUS, STR, TUM), two have
    # none at all (ADI, BACK: asking for them would generate on the spot, seconds, only to be rejected)
    DEB, MUS, STR, TUM = 2, 5, 7, 8
    pool = scripted_pool(borderline={DEB: 2, MUS: 1, STR: 1, TUM: 1}, confident={t: 2 for t in range(2, NUM_TISSUES)})
    images, labels, probabilities = scripted_sample([(0.99, 0.7)[i // 9 % 2] for i in range(180)])
    common = dict(classifier=None, real_images=images, real_labels=labels, real_probabilities=probabilities,
                  verifier=pool, generated_share=0.5, difficulty="hard")
    hard = Q.build_quiz(10, **common)  # unseeded: from the pool, as in the app
    sources = [q.source for q in hard.questions]
    assert sources.count("generated") == 5 and sources.count("real") == 5  # all five borderline stocked images
    assert sorted(q.answer for q in hard.questions if q.source == "generated") == [DEB, DEB, MUS, STR, TUM]
    assert all(0.5 <= confidence_of(q) < 0.9 for q in hard.questions)  # generated and real alike: borderline
    assert pool.verifier.calls == []  # nothing generated on the spot
    assert pool.stock() == {0: 0, 1: 0, **{t: 2 for t in range(2, NUM_TISSUES)}}  # the confident ones stay
    again = Q.build_quiz(10, **common)  # the pool holds no borderline image now: borderline real tiles only
    assert [q.source for q in again.questions] == ["real"] * 10 and pool.verifier.calls == []
    assert all(0.5 <= confidence_of(q) < 0.9 for q in again.questions)
    easy = Q.build_quiz(9, **{**common, "difficulty": "easy", "generated_share": 1.0})  # one of each tissue
    assert [q.source == "generated" for q in easy.questions] == [q.answer > 1 for q in easy.questions]  # not ADI, BACK
    assert all(confidence_of(q) >= 0.9 for q in easy.questions) and pool.verifier.calls == []


def test_an_unseeded_mixed_quiz_takes_only_stocked_images_and_never_waits_for_the_generator():
    # a class drained the pool: two tissues left in stock, one image each
    pool = scripted_pool(borderline={}, confident={3: 1, 6: 1})
    images, labels, probabilities = scripted_sample([0.95] * 90)
    common = dict(classifier=None, real_images=images, real_labels=labels, real_probabilities=probabilities,
                  verifier=pool, generated_share=1.0)
    session = Q.build_quiz(6, **common)
    generated = sorted(q.answer for q in session.questions if q.source == "generated")
    assert generated == [3, 6] and session.total == 6  # what the stock held; real tiles make up the rest
    assert pool.verifier.calls == [] and pool.stock() == {t: 0 for t in range(NUM_TISSUES)}
    assert [q.source for q in Q.build_quiz(4, **common).questions] == ["real"] * 4 and pool.verifier.calls == []
    Q.build_quiz(2, seed=3, **common)  # a seeded quiz stays reproducible: generated from its seed
    assert pool.verifier.calls and pool.verifier.calls[-1][1] is not None


# ------------------------------------------------------------------------------------------ exams

class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def timed_exam(minutes=1.0, answers=(0, 1, 2, 3)):
    session = make_session(answers)
    session.clock = FakeClock()
    return Q.start_exam(session, minutes)


def test_the_exam_time_limit_is_enforced_from_the_stored_start_time():
    session = timed_exam(minutes=1.0)
    assert session.exam and session.time_limit == 60.0 and session.started_at == 1000.0
    session.clock.now += 30
    assert Q.remaining(session) == 30.0
    Q.answer(session, 0)  # in time
    session.clock.now += 31  # 61 s after the start: nothing the browser says can reopen it
    assert Q.remaining(session) == 0.0
    with pytest.raises(Q.TimeUp, match="Time is up"):
        Q.answer(session, 1)
    assert session.closed and session.finished and session.current is None and session.answers == [0, None, None, None]
    with pytest.raises(Q.TimeUp):
        Q.answer(session, 1, question=2)
    result = Q.summary(session)
    assert result.score == 1 and result.missed == [1, 2, 3] and result.unanswered == [1, 2, 3]  # count as missed
    assert result.per_tissue == {0: (1, 1), 1: (0, 1), 2: (0, 1), 3: (0, 1)} and result.percent == 25.0
    assert [q.answer for q in Q.retry_missed(session).questions] == [1, 2, 3]


def test_an_exam_answered_in_time_is_not_closed_and_no_limit_never_closes():
    session = timed_exam(minutes=1.0, answers=(0, 1))
    Q.answer(session, 0)
    Q.answer(session, 5)
    session.clock.now += 3600
    assert not Q.close_if_time_is_up(session)
    assert Q.summary(session).missed == [1] and Q.summary(session).unanswered == []
    untimed = timed_exam(minutes=None)
    untimed.clock.now += 10**6
    assert Q.remaining(untimed) is None and Q.answer(untimed, 0).correct



def test_retrying_the_missed_questions_waits_for_the_end_of_an_exam():
    """Issue 32: a retry mid-exam listed the questions answered wrongly so far, i.e. the verdicts the exam keeps
    for its end."""
    session = timed_exam(minutes=None)
    Q.answer(session, 5)  # wrong
    with pytest.raises(ValueError, match="when the exam is over"):
        Q.retry_missed(session)
    for choice in (1, 2, 3):
        Q.answer(session, choice)
    assert [q.answer for q in Q.retry_missed(session).questions] == [0]  # over: the review may go on


def test_the_summary_counts_real_and_generated_tiles_apart():
    """Issue 32: generated tiles can be easier than real ones, so the summary says how the learner did on each."""
    session = make_session((0, 1, 2, 3, 4), sources=["real", "generated", "real", "generated", "real"])
    for choice in (0, 1, 5, 5):  # real: right, wrong; generated: right, wrong; the last real one unanswered
        Q.answer(session, choice)
    result = Q.summary(session)
    assert result.per_source == {"generated": (1, 2), "real": (1, 2)}  # unanswered: not counted
    assert list(result.per_source) == ["generated", "real"]  # in images.SOURCES order

@pytest.mark.parametrize("minutes,expected", [(None, None), ("", None), (0, None), (2.5, 2.5), ("10", 10.0)])
def test_time_limits_in_minutes(minutes, expected):
    assert Q.check_minutes(minutes) == expected


@pytest.mark.parametrize("minutes", [-1, 181, "soon", float("nan"), True])
def test_bad_time_limits_are_refused(minutes):
    with pytest.raises(ValueError, match="Time limit must be a number of minutes"):
        Q.check_minutes(minutes)


def test_time_taken_uses_the_sessions_clock():
    session = make_session((0, 1))
    session.clock = FakeClock(50.0)
    Q.mark_shown(session)
    session.clock.now = 54.25
    assert Q.answer(session, 0).seconds == pytest.approx(4.25)


def test_public_choice_check_keeps_its_old_private_name():
    assert Q.check_choice("Mucus") == 4 and Q._check_choice is Q.check_choice
