"""Learners' stored answers (pathsynth.learning.progress + migration 0003) and the My progress handlers.

Every store test runs on SQLite and on PostgreSQL (``storage_url`` in tests/conftest.py)."""

import io
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from pathsynth import quiz as Q
from pathsynth import storage
from pathsynth.app import progress as P
from pathsynth.app import quiz as quiz_tab
from pathsynth.gallery import DB_NAME, GalleryStore
from pathsynth.learning import AnswerRecord, ProgressStore, hf_learner, local_learner
from pathsynth.pool import ExplanationCache
from pathsynth.settings import Settings
from pathsynth.tissues import DISPLAY_NAMES, tissue_index

NOW = datetime(2026, 11, 20, 10, 30, tzinfo=timezone.utc)


def answer(tissue, chosen, minutes=0, **extra) -> AnswerRecord:
    return AnswerRecord(tissue=tissue_index(tissue), chosen=tissue_index(chosen),
                        answered_at=NOW + timedelta(minutes=minutes), **extra)


def test_answers_are_stored_with_their_provenance_and_survive_a_restart(tmp_path, storage_url):
    ana = local_learner("Ana")
    given = [answer("STR", "MUS", 0, seconds=12.25, mode="weak", quiz_id="q1", source="real", real_index=417),
             answer("ADI", "ADI", 1, seconds=None, source="generated", seed=2**62),
             answer("NORM", "TUM", 2, mode="gallery", source="uploaded", gallery_item_id=5)]
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        ProgressStore(store.database).record(ana, *given[:2])
        ProgressStore(store.database).record(local_learner("ana"), given[2])  # names are case-insensitive
    with GalleryStore(tmp_path, database_url=storage_url) as store:  # a restart: a new engine, same database
        history = ProgressStore(store.database).history(ana)
    assert history == given
    assert [r.correct for r in history] == [False, True, False]


def test_no_learner_sees_another_learners_answers(tmp_path, storage_url):
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        progress = ProgressStore(store.database)
        progress.record(local_learner("ana"), answer("STR", "MUS"))
        progress.record(local_learner("ben"), answer("ADI", "ADI"), answer("MUC", "DEB", 1))
        progress.record(hf_learner("ana"), answer("LYM", "LYM"))  # a login is never the same as a typed name
        assert [r.tissue for r in progress.history(local_learner("ana"))] == [tissue_index("STR")]
        assert len(progress.history(local_learner("ben"))) == 2
        assert [r.tissue for r in progress.history(hf_learner("ana"))] == [tissue_index("LYM")]
        assert progress.history(local_learner("carl")) == []


def test_bad_records_are_refused_before_anything_is_written(tmp_path, storage_url):
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        progress = ProgressStore(store.database)
        with pytest.raises(ValueError, match="mode"):
            progress.record(local_learner("ana"), answer("ADI", "ADI"), answer("ADI", "ADI", mode="cheating"))
        with pytest.raises(ValueError, match="timezone"):
            progress.record(local_learner("ana"), AnswerRecord(0, 0, datetime(2026, 1, 1)))
        assert progress.history(local_learner("ana")) == []


@pytest.mark.parametrize("name, message", [("", "empty"), ("x" * 10_000, "too long"), ("<b>ana</b>", "only contain"),
                                           (None, "empty"), (42, "text")])
def test_unusable_learner_names_are_refused_with_a_message(name, message):
    with pytest.raises(ValueError, match=message):
        local_learner(name)


def test_a_database_at_revision_0002_is_upgraded_keeping_its_galleries(tmp_path, storage_url):
    url = storage_url or storage.sqlite_url(tmp_path / DB_NAME)
    database = storage.Database(url)
    with database.write() as connection:  # the schema and a gallery as the 0002 release left them
        command.upgrade(storage.alembic_config(connection), "0002")
        stamp = {"now": "2026-11-24T08:00:00.000+00:00"}
        connection.execute(text("INSERT INTO galleries (name, description, created_by, created_at, updated_at) "
                                "VALUES ('Week 1', '', 'dr-who', :now, :now)"), stamp)
        connection.execute(text("INSERT INTO items (gallery_id, position, caption, tissue, source, image_png, "
                                "created_at) SELECT id, 0, 'a', 7, 'generated', :png, :now FROM galleries"),
                           {**stamp, "png": png_bytes()})
    database.dispose()
    with GalleryStore(tmp_path, database_url=storage_url) as store:  # opening upgrades to head
        with store.database.read() as connection:
            head = ScriptDirectory(str(storage.database.MIGRATIONS)).get_current_head()  # 0003 or a later one
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
            assert {"learners", "answers"} <= set(inspect(connection).get_table_names())
        assert store.get_gallery("Week 1").items[0].tissue == tissue_index("STR")
        ProgressStore(store.database).record(local_learner("ana"), answer("STR", "STR"))
        assert len(ProgressStore(store.database).history(local_learner("ana"))) == 1


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ app handlers

def fake_services(home, storage_url, spaces: bool):
    env = {"PATHSYNTH_HOME": str(home), **({"SPACE_ID": "someone/pathsynth"} if spaces else {})}
    explainer = ExplanationCache(lambda image, tissue: np.zeros(image.shape[:2], np.float32))
    return SimpleNamespace(settings=Settings.from_env(env), store=GalleryStore(home, database_url=storage_url),
                           explainer=explainer, explanations=explainer)


def play(services, answers: list[tuple[str, str]], name=None, profile=None):
    """A quiz answered through the Quiz tab's handlers, as the browser would; returns the feedback texts."""
    session = Q.quiz_from_images([np.zeros((28, 28, 3), np.uint8)] * len(answers), [a for a, _ in answers])
    quiz_tab.question_view(session)
    feedback = []
    for _, chosen in answers:
        feedback.append(quiz_tab.answer(services, session, DISPLAY_NAMES[tissue_index(chosen)], name, profile)[5])
        quiz_tab.next_question(session)
    return feedback


def test_the_progress_tab_shows_only_the_typed_learners_own_answers(tmp_path, storage_url):
    services = fake_services(tmp_path, storage_url, spaces=False)
    feedback = play(services, [("STR", "MUS"), ("ADI", "ADI")], name="Ana")[0]
    play(services, [("MUC", "DEB")] * 3, name="Ben")
    summary, accuracy, figure, matrix, status = P.my_progress(services, "ana")
    assert status == "" and "1 / 2 correct" in summary and "Smooth muscle" in summary
    assert {row[0] for row in accuracy} == {"Adipose tissue", "Cancer-associated stroma"}
    assert sum(sum(row[1:]) for row in matrix) == 2 and figure is not None
    assert "you chose Debris" not in summary  # Ben's mix-up, not Ana's
    history = P.progress_store(services).history(local_learner("Ana"))
    assert [r.mode for r in history] == ["practice", "practice"] and history[0].seconds is not None
    assert "Stroma is patchier" in feedback  # the pairwise teaching text (stroma vs smooth muscle)
    services.store.close()


@pytest.mark.parametrize("name, message", [("", "Type your name"), ("x" * 10_000, "too long"),
                                           ("<img src=x onerror=alert(1)>", "only contain")])
def test_bad_names_get_one_line_messages_not_tracebacks(tmp_path, name, message):
    services = fake_services(tmp_path, None, spaces=False)
    status = P.my_progress(services, name)[4]
    assert status.startswith("⚠️") and message in status and "\n" not in status
    session = Q.quiz_from_images([np.zeros((28, 28, 3), np.uint8)], ["ADI"])
    if name:  # an empty name only means "do not save"
        assert message in quiz_tab.answer(services, session, "Adipose tissue", name)[5]
        assert session.answers == [None]  # refused before the answer was taken
    services.store.close()


def test_on_spaces_the_login_is_the_identity_and_the_name_box_is_ignored(tmp_path):
    services = fake_services(tmp_path, None, spaces=True)
    alice, bob = SimpleNamespace(username="alice"), SimpleNamespace(username="bob")
    play(services, [("STR", "MUS")], name="bob", profile=alice)
    play(services, [("ADI", "ADI")] * 2, profile=bob)
    assert "0 / 1 correct" in P.my_progress(services, "bob", alice)[0]  # "bob" typed: still alice's own
    assert "2 / 2 correct" in P.my_progress(services, "alice", bob)[0]
    assert "Sign in" in P.my_progress(services, "alice", None)[4]
    play(services, [("ADI", "ADI")], name="alice")  # not signed in: nothing saved, for anyone
    assert len(P.progress_store(services).history(hf_learner("alice"))) == 1
    services.store.close()


def test_practice_my_weak_tissues_builds_a_quiz_of_the_due_tissues(tmp_path):
    services = fake_services(tmp_path, None, spaces=False)
    P.progress_store(services).record(local_learner("ana"), *[
        AnswerRecord(tissue_index(t), tissue_index(c), datetime.now(timezone.utc) - timedelta(days=d, minutes=k))
        for d in (1, 4, 9) for k, (t, c) in enumerate([("STR", "MUS")] + [(x, x) for x in ("ADI", "BACK", "DEB",
                                                      "LYM", "MUC", "MUS", "NORM", "TUM")])])
    tissues, note = quiz_tab.weak_tissues(services, "Ana", True, None)
    assert tissues == [tissue_index("STR"), tissue_index("MUS")] and "Cancer-associated stroma" in note
    with pytest.raises(quiz_tab.Refusal, match="Type your name"):
        quiz_tab.weak_tissues(services, "", True, None)
    assert quiz_tab.weak_tissues(services, "", False, None)[0] is None
    services.store.close()


def test_the_app_has_the_progress_tab_and_the_quiz_sends_the_learner(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny_models import tiny_classifier, tiny_generator

    from pathsynth.app import build_demo
    from pathsynth.resolver import TissueResolver
    from pathsynth.services import Services
    from pathsynth.verify import Verifier

    images = np.random.default_rng(0).integers(0, 256, (18, 28, 28, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(9), 2)
    classifier = tiny_classifier()
    verifier = Verifier(tiny_generator(steps=2), classifier, images, labels)
    services = Services(Settings.from_env({"PATHSYNTH_HOME": str(tmp_path)}), verifier,
                        TissueResolver(use_encoder=False), GalleryStore(tmp_path), images, labels,
                        classifier.predict_proba(images))
    demo = build_demo(services)
    events = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    # the name box, then the per-session anonymous browser id (a gr.State: no label, not part of the API)
    assert [getattr(c, "label", None) for c in events["my_progress"].inputs] == ["Your name", None]
    assert "Your name (saves your progress)" in [getattr(c, "label", None) for c in events["quiz_answer"].inputs]
    assert "Practice my weak tissues" in [getattr(c, "label", None) for c in events["quiz_start"].inputs]
    services.store.close()
