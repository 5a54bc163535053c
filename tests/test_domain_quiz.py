"""Quizzes of chest films (issue 33): answers are findings, feedback is the film catalogue's own words, and a kept
attempt, a retry and a gallery quiz stay in their domain. Histology quizzes are covered by test_quiz.py."""

import dataclasses

import numpy as np
import pytest

from pathsynth import quiz as Q
from pathsynth.gallery import GalleryItemInput, GalleryStore
from pathsynth.learning.attempts import restored_session, session_images, session_state
from pathsynth.tissues import DISPLAY_NAMES
from test_domains import XRAY, synthetic_films, tiny_film_classifier


def grey_rgb(films: np.ndarray) -> np.ndarray:
    return np.repeat(films[..., None], 3, axis=3)


def film_quiz() -> Q.QuizSession:
    films, _ = synthetic_films(4)
    return Q.quiz_from_images(grey_rgb(films), ["normal", "PNA", 1, "Normal film"],
                              sources=["real", "generated", "real", "generated"], probabilities=[[0.9, 0.1]] * 4,
                              domain="pneumoniamnist")


def test_a_film_quiz_takes_findings_and_explains_in_the_films_words():
    session = film_quiz()
    assert session.domain == "pneumoniamnist" and [q.answer for q in session.questions] == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="not a finding; choose one of: Normal film, Pneumonia"):
        Q.answer(session, "Adipose tissue")
    assert session.answers == [None] * 4  # a refused answer changes nothing
    right = Q.answer(session, "normal")
    assert right.correct and right.description == XRAY.teaching_text(0)
    wrong = Q.answer(session, "normal")
    assert not wrong.correct and wrong.explanation.startswith("Not quite: you chose Normal film, but this is Pneumonia.")
    assert "This film is synthetic" in wrong.explanation
    for text in (right.explanation, wrong.explanation, wrong.description):
        assert not any(name in text for name in DISPLAY_NAMES) and "tile" not in text


def test_a_film_quiz_keeps_its_domain_when_kept_resumed_and_retried():
    session = film_quiz()
    Q.answer(session, 1)
    restored = restored_session(session_state(session, now=10.0), session_images(session), clock=lambda: 20.0)
    assert restored.domain == "pneumoniamnist" and restored.answers == [1, None, None, None]
    for choice in ("PNA", "normal", "normal"):
        Q.answer(restored, choice)
    retry = Q.retry_missed(restored)
    assert retry.domain == "pneumoniamnist" and [q.answer for q in retry.questions] == [0, 1]
    assert Q.answer(retry, "Pneumonia").explanation.startswith("Not quite: you chose Pneumonia, but this is Normal film")


def test_a_quiz_built_from_real_films_asks_findings_only():
    films, labels = synthetic_films(24, seed=3)
    classifier = tiny_film_classifier()
    session = Q.build_quiz(6, classifier=classifier, real_images=grey_rgb(films), real_labels=labels,
                           generated_share=0.0, seed=0, domain="pneumoniamnist")
    assert session.domain == "pneumoniamnist" and session.total == 6
    assert {q.answer for q in session.questions} <= {0, 1} and all(len(q.probabilities) == 2 for q in session.questions)
    with pytest.raises(ValueError, match=r"real_probabilities must have shape \(24, 2\)"):
        Q.build_quiz(2, classifier=classifier, real_images=grey_rgb(films), real_labels=labels, generated_share=0.0,
                     real_probabilities=np.full((24, 9), 1 / 9), domain="pneumoniamnist")
    with pytest.raises(ValueError, match="not a finding"):
        Q.build_quiz(2, classifier=classifier, real_images=grey_rgb(films), real_labels=labels, tissues=["Mucus"],
                     domain="pneumoniamnist")


def test_a_film_gallery_makes_a_film_quiz(tmp_path):
    films, _ = synthetic_films(3)
    items = [GalleryItemInput(image, tissue=label, meta={"probabilities": [0.2, 0.8]})
             for image, label in zip(grey_rgb(films), ["normal", "pneumonia", "pneumonia"])]
    with GalleryStore(tmp_path) as store:
        gallery = store.get_gallery(store.create_gallery("Films", items=items, domain="pneumoniamnist"))
    session = Q.quiz_from_gallery(gallery, shuffle=False)
    assert session.domain == "pneumoniamnist" and session.mode == "gallery"
    assert [q.answer for q in session.questions] == [0, 1, 1] and session.questions[0].probabilities == [0.2, 0.8]


def test_film_answers_are_kept_apart_from_histology_progress(tmp_path, storage_url):
    """A finding's index 0 is not Adipose tissue: each domain's history holds only its own answers."""
    from pathsynth.learning import ProgressStore, local_learner
    from pathsynth.learning.progress import record_from

    learner = local_learner("Ana")
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        progress = ProgressStore(store.database)
        session = film_quiz()
        feedback = Q.answer(session, "pneumonia")  # a wrong answer: the first film is normal
        progress.record(learner, record_from(session, feedback))
        tiles = Q.quiz_from_images([np.zeros((28, 28, 3), np.uint8)], ["Mucus"])
        progress.record(learner, record_from(tiles, Q.answer(tiles, "Mucus")))
        films = progress.history(learner, "pneumoniamnist")
        assert [(r.tissue, r.chosen, r.correct, r.domain) for r in films] == [(0, 1, False, "pneumoniamnist")]
        assert [(r.tissue, r.domain) for r in progress.history(learner)] == [(4, "pathmnist")]
        with pytest.raises(ValueError, match="finding index 5 out of range"):
            progress.record(learner, dataclasses.replace(films[0], chosen=5))


def test_film_votes_and_flags_keep_their_domain(tmp_path, storage_url):
    from datetime import datetime, timezone

    from pathsynth.learning import local_learner
    from pathsynth.learning.challenge import ChallengeStore, Tile, Vote, list_flags

    learner, now = local_learner("Ana"), datetime.now(timezone.utc)
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        challenge = ChallengeStore(store.database)
        film = Tile("generated", "pneumonia", seed=3, domain="pneumoniamnist")
        challenge.vote(learner, Vote(film, guessed_synthetic=False, voted_at=now))
        challenge.vote(learner, Vote(Tile("real", "Mucus", real_index=2), guessed_synthetic=True, voted_at=now))
        assert [(v.tile.tissue, v.tile.domain) for v in challenge.votes("pneumoniamnist")] == [(1, "pneumoniamnist")]
        assert [(v.tile.tissue, v.tile.domain) for v in challenge.votes()] == [(4, "pathmnist")]
        challenge.flag(learner, film, "the heart looks odd", "challenge")
        assert [(f.tile.tissue, f.tile.domain) for f in list_flags(store.database)] == [(1, "pneumoniamnist")]
        with pytest.raises(ValueError, match="unknown finding"):
            challenge.vote(learner, Vote(Tile("real", "Mucus", domain="pneumoniamnist"), False, now))
