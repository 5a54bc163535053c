"""Real or synthetic? (pathsynth.learning.challenge, the Challenge tab), flagged images and migration 0004.

Store tests run on SQLite and on PostgreSQL (``storage_url`` in tests/conftest.py)."""

import json
import math
import socket
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pytest
from alembic import command
from sqlalchemy import inspect, text

from pathsynth import quiz as Q
from pathsynth import storage
from pathsynth.app import about
from pathsynth.app import challenge as C
from pathsynth.app import common
from pathsynth.app import quiz as quiz_tab
from pathsynth.gallery import DB_NAME, GalleryStore
from pathsynth.pool import VerifiedPool
from pathsynth.learning import local_learner
from pathsynth.learning.challenge import (ChallengeStore, Tile, Vote, list_flags, realism_report,
                                          realism_report_from, wilson_interval)
from pathsynth.settings import Settings
from pathsynth.tissues import DISPLAY_NAMES, TISSUE_INDICES, tissue_index
from pathsynth.verify import VerifiedImage

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
ADI, MUS = tissue_index("ADI"), tissue_index("MUS")


def votes(tissue, synthetic: bool, judged_real: int, shown: int) -> list[Vote]:
    tile = Tile("generated", tissue, seed=7) if synthetic else Tile("real", tissue, real_index=3)
    return [Vote(tile, guessed_synthetic=i >= judged_real, voted_at=NOW + timedelta(seconds=i)) for i in range(shown)]


def wilson(k, n, z=1.959963984540054):
    """The Wilson score interval written out, to check the library's."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_votes_are_stored_and_add_up_to_the_realism_report(tmp_path, storage_url):
    scripted = (votes(ADI, True, 6, 10) + votes(ADI, False, 7, 8) + votes(MUS, True, 1, 4))
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        challenge = ChallengeStore(store.database)
        for i, vote in enumerate(scripted):
            challenge.vote(local_learner(f"learner {i % 3}"), vote)
        stored = challenge.votes()
        report = realism_report(store.database)
    assert sorted(stored, key=lambda v: (v.tile.tissue, v.tile.source, v.voted_at)) == \
        sorted(scripted, key=lambda v: (v.tile.tissue, v.tile.source, v.voted_at))
    assert [row.tissue for row in report.per_tissue] == [ADI, MUS]  # catalogue order, tissues with votes only
    adi, mus = report.per_tissue
    assert (adi.synthetic.judged_real, adi.synthetic.shown, adi.real.judged_real, adi.real.shown) == (6, 10, 7, 8)
    assert (mus.synthetic.judged_real, mus.synthetic.shown, mus.real.shown) == (1, 4, 0) and mus.real.interval is None
    assert (report.overall.synthetic.judged_real, report.overall.synthetic.shown) == (7, 14) and report.votes == 22
    for share in (adi.synthetic, adi.real, mus.synthetic, report.overall.synthetic, report.overall.real):
        low, high = share.interval
        assert low <= share.value <= high
        assert (low, high) == pytest.approx(wilson(share.judged_real, share.shown), abs=1e-9)


def test_an_empty_report_says_no_votes_yet(tmp_path, storage_url):
    with GalleryStore(tmp_path, database_url=storage_url) as store:
        report = realism_report(store.database)
        page = about.votes_section(SimpleNamespace(store=store))
    assert report.votes == 0 and report.per_tissue == [] and report.overall.synthetic.interval is None
    assert "No votes yet" in page and "What trainees think: real or synthetic?" in page
    assert wilson_interval(0, 0) is None and wilson_interval(0, 5)[0] == pytest.approx(0, abs=1e-12)


def test_the_about_section_shows_the_shares_with_intervals():
    page = about.trainee_votes(realism_report_from(votes(ADI, True, 6, 10) + votes(ADI, False, 7, 8)))
    assert "From **18** guesses" in page and "| Adipose tissue | 60% (31%–83%, n = 10) | 88%" in page


def test_bad_votes_are_refused(tmp_path):
    with GalleryStore(tmp_path) as store:
        challenge = ChallengeStore(store.database)
        with pytest.raises(ValueError, match="source"):
            challenge.vote(local_learner("ana"), Vote(Tile("uploaded", ADI), True, NOW))
        with pytest.raises(ValueError, match="timezone"):
            challenge.vote(local_learner("ana"), Vote(Tile("real", ADI), True, datetime(2026, 1, 1)))
        assert challenge.votes() == []


# ------------------------------------------------------------------------------------------ the tab

class FakeVerifier:
    """``Verifier.generate``'s contract: verified flat tiles of the requested tissue; counts its calls and notes how
    many ``model_slots`` were held during each (``slots``: a :class:`CountingSlots`, when given)."""

    def __init__(self, slots=None):
        self.calls, self.slots, self.slots_held = 0, slots, []

    def generate(self, tissues, seed=None, progress=None):
        self.calls += 1
        self.slots_held.append(self.slots.held if self.slots is not None else None)
        return [VerifiedImage(image=np.full((28, 28, 3), 200, np.uint8), tissue=t, verified=True, attempts=1,
                              seed=4242, probabilities=list(np.eye(len(TISSUE_INDICES))[t]), predicted=t,
                              confidence=1.0, realism=0.5) for t in tissues]


class CountingSlots:
    """Stands in for ``model_slots``: counts the slots held right now."""

    held = 0

    def __enter__(self):
        self.held += 1

    def __exit__(self, *exc_info):
        self.held -= 1


def fake_services(home, storage_url=None, spaces=False):
    env = {"PATHSYNTH_HOME": str(home), **({"SPACE_ID": "someone/pathsynth"} if spaces else {})}
    labels = np.repeat(np.array(TISSUE_INDICES), 2)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 28, 28, 3), dtype=np.uint8)
    verifier = FakeVerifier()
    return SimpleNamespace(settings=Settings.from_env(env), store=GalleryStore(home, database_url=storage_url),
                           real_images=images, real_labels=labels, verifier=verifier, images=verifier, pool=None,
                           explainer=lambda image, tissue: np.zeros(image.shape[:2], np.float32))


def test_a_round_shows_the_tile_then_says_what_it_was_and_stores_the_vote(tmp_path, storage_url):
    services = fake_services(tmp_path, storage_url)
    seen = set()
    for _ in range(40):
        state = C.next_tile(services, None)[0]
        seen.add(state.tile.source)
        outputs = C.guess(services, "Synthetic", state, "Ana")
        assert outputs[0].seen == 1 and outputs[-1] == ""
        assert ("synthetic" if state.tile.synthetic else "real") in outputs[3]
        assert DISPLAY_NAMES[state.tile.tissue] in outputs[3]
    assert seen == {"real", "generated"}  # 50/50: both in 40 draws (fails with probability 2 ** -39)
    assert "already guessed" in C.guess(services, "Real", state, "Ana")[-1]
    assert "Show a tile first" in C.guess(services, "Real", None, "Ana")[-1]
    assert "not counted" in C.guess(services, "Real", C.next_tile(services, None)[0], "")[3]  # nobody: not saved
    stored = ChallengeStore(services.store.database).votes()
    assert len(stored) == 40 and all(v.guessed_synthetic for v in stored)
    assert {v.tile.source for v in stored} == {"real", "generated"}
    assert all(v.tile.seed == 4242 for v in stored if v.tile.synthetic)
    assert all(services.real_labels[v.tile.real_index] == v.tile.tissue for v in stored if not v.tile.synthetic)
    services.store.close()


def test_a_stocked_pool_serves_the_next_tile_with_no_model_call_and_only_generating_takes_a_model_slot(
        tmp_path, monkeypatch):
    slots = CountingSlots()
    monkeypatch.setattr(common, "model_slots", slots)  # where verified_images takes its slots
    services = fake_services(tmp_path)
    verifier = services.verifier = FakeVerifier(slots)
    pool = VerifiedPool(verifier, per_tissue=2, borderline=0)
    while pool.fill_once():
        pass
    services.pool = services.images = pool
    monkeypatch.setattr(C._random, "random", lambda: 0.9)  # every draw a generated tile ...
    monkeypatch.setattr(C._random, "choice", lambda tissues: MUS)  # ... of smooth muscle
    stocked = verifier.calls
    for _ in range(2):
        state, image = C.next_tile(services, None)[:2]
        assert state.tile == Tile("generated", MUS, seed=4242) and image.shape == (336, 336, 3)
    assert verifier.calls == stocked and slots.held == 0  # from stock: no model call, no model slot
    assert pool.stock()[MUS] == 0
    assert C.next_tile(services, None)[0].tile.source == "generated"  # out of stock: generated now ...
    assert verifier.calls == stocked + 1 and verifier.slots_held[-1] == 1  # ... inside a model slot
    services.store.close()


def test_next_tile_waits_in_the_model_queue_only_without_a_pool(tmp_path):
    import gradio as gr

    services = fake_services(tmp_path)
    queues = []
    for pool in (None, VerifiedPool(services.verifier, per_tissue=1)):
        services.pool = pool
        with gr.Blocks() as demo:
            C.build(services)
        queues.append({fn.api_name: fn.concurrency_id for fn in demo.fns.values()}["challenge_next"])
    assert queues[0] == "model" and queues[1] != "model"
    services.store.close()


def test_the_next_tile_outputs_carry_no_answer_key(tmp_path):
    services = fake_services(tmp_path)
    shown = {}
    for _ in range(40):
        state, image, *rest = C.next_tile(services, None)
        shown[state.tile.source] = rest  # everything sent besides the image (the state stays on the server)
        assert image.shape == (336, 336, 3)
    assert shown["real"] == shown["generated"]
    services.store.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_next_tile_api_response_carries_no_answer_key(tmp_path):
    import gradio as gr
    import httpx
    from gradio_client import Client

    services = fake_services(tmp_path)
    with gr.Blocks() as demo:
        C.build(services)
    demo.queue().launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        words = ("real", "synthetic", "generated", "seed", "4242", *(d.lower() for d in DISPLAY_NAMES))
        for _ in range(6):
            event = httpx.post(f"{demo.local_url}gradio_api/call/challenge_next", json={"data": []}, timeout=60)
            body = httpx.get(f"{demo.local_url}gradio_api/call/challenge_next/{event.json()['event_id']}",
                             timeout=60).text
            payload = json.loads(body.split("data:", 1)[1].split("\n", 1)[0].strip() if "complete" in body else "null")
            assert payload is not None, body
            state, image, *rest = payload
            assert state is None and image is not None  # the key stays in the server-side state
            assert rest[0] == C.PROMPT  # the same question for every tile
            sent = " ".join([json.dumps(rest[1:]), str(image.get("path")), str(image.get("orig_name"))]).lower()
            assert not [w for w in words if w in sent], sent
        client = Client(demo.local_url, verbose=False)  # one session: the key waits in its state for the guess
        client.predict(api_name="/challenge_next")
        outputs = client.predict("Synthetic", "Ana", api_name="/challenge_guess")
        feedback, score, status = outputs  # the state and the buttons are not API outputs
        assert "It was **" in feedback and score.endswith(" / 1**") and status == ""
        assert len(ChallengeStore(services.store.database).votes()) == 1
    finally:
        demo.close()
        services.store.close()


# ------------------------------------------------------------------------------------------ flags

NASTY = "<img src=x onerror=alert(1)> **bold** [link](javascript:alert(1))\nsecond line"


def test_flags_are_stored_verbatim_and_listed_escaped(tmp_path, storage_url):
    services = fake_services(tmp_path, storage_url)
    state = C.next_tile(services, None)[0]
    assert "Guess first" in C.flag(services, state, "odd", "Ana")[0]
    C.guess(services, "Real", state, "Ana")
    message, note = C.flag(services, state, NASTY, "Ana")
    assert message.startswith("🚩") and note == ""
    session = Q.quiz_from_images([np.zeros((28, 28, 3), np.uint8)] * 2, ["STR", "ADI"])
    quiz_tab.question_view(session)
    assert "Answer the question first" in quiz_tab.flag_question(services, session, "", "Ben")[0]
    assert quiz_tab._flag_row(session)[0]["visible"] is False
    quiz_tab.answer(services, session, "Smooth muscle", "Ben")
    assert quiz_tab._flag_row(session)[0]["visible"] is True
    assert quiz_tab.flag_question(services, session, "", "Ben")[0].startswith("🚩")
    quiz_tab.next_question(session)
    assert quiz_tab._flag_row(session)[0]["visible"] is False
    flags = list_flags(services.store.database)
    assert [(f.context, f.learner, f.note) for f in flags] == [("quiz", "Ben", ""), ("challenge", "Ana", NASTY)]
    assert flags[0].tile.tissue == tissue_index("STR") and flags[1].tile == state.tile
    shown = C.flags_markdown(flags)
    assert "<img" not in shown and "&lt;img" in shown and "\\*\\*bold\\*\\*" in shown and "(no note)" in shown
    services.store.close()


@pytest.mark.parametrize("note, message", [("x" * 10_000, "too long"), ("bad\x00note", "control characters"),
                                           ("bell\x07", "control characters"), (42, "must be text")])
def test_bad_notes_get_one_line_messages_and_nothing_is_stored(tmp_path, note, message):
    services = fake_services(tmp_path)
    state = C.next_tile(services, None)[0]
    C.guess(services, "Real", state, "Ana")
    status, kept = C.flag(services, state, note, "Ana")
    assert status.startswith("⚠️") and message in status and "\n" not in status
    assert kept is not None  # the note box keeps what was typed (a skip), so it can be fixed
    assert "Type your name" in C.flag(services, state, "fine", "")[0]
    assert list_flags(services.store.database) == []
    services.store.close()


# ------------------------------------------------------------------------------------------ migration

def test_a_database_at_revision_0003_is_upgraded_to_0004_keeping_its_learners(tmp_path, storage_url):
    url = storage_url or storage.sqlite_url(tmp_path / DB_NAME)
    database = storage.Database(url)
    with database.write() as connection:
        command.upgrade(storage.alembic_config(connection), "0003")
        connection.execute(text("INSERT INTO learners (key, display_name, created_at) "
                                "VALUES ('local:ana', 'Ana', '2026-11-30T08:00:00.000+00:00')"))
    with database.write() as connection:
        command.upgrade(storage.alembic_config(connection), "0004")
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
        assert {"challenge_votes", "flags", "learners", "answers"} <= set(inspect(connection).get_table_names())
    with storage.migrating(database) as connection:  # the store's code writes today's columns
        command.upgrade(storage.alembic_config(connection), "head")
    ChallengeStore(database).vote(local_learner("ana"), Vote(Tile("real", ADI, real_index=1), False, NOW))
    ChallengeStore(database).flag(local_learner("ana"), Tile("generated", MUS, seed=1), "blurry", "challenge")
    with database.read() as connection:
        assert connection.execute(text("SELECT count(*) FROM learners")).scalar() == 1  # the same Ana
    with storage.migrating(database) as connection:  # and back down cleanly
        command.downgrade(storage.alembic_config(connection), "0003")
        assert not {"challenge_votes", "flags"} & set(inspect(connection).get_table_names())
    database.dispose()
    with GalleryStore(tmp_path, database_url=storage_url) as store:  # opening goes to head again
        assert realism_report(store.database).votes == 0
