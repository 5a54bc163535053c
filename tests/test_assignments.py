"""Assignments (pathsynth.assignments + migration 0005) and the Assignments tab's handlers.

Every store test runs on SQLite and on PostgreSQL (``storage_url`` in tests/conftest.py)."""

import csv
import io
import re
import secrets
from datetime import datetime, timezone
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from pathsynth import assignments as A
from pathsynth import storage
from pathsynth.app import assignments as tab
from pathsynth.app import common
from pathsynth.gallery import DB_NAME, GalleryItemInput, GalleryStore
from pathsynth.images import DISPLAY_SIZE, SCALE_BAR_STRIP
from pathsynth.learning import ProgressStore, local_learner
from pathsynth.settings import Settings
from pathsynth.tissues import DISPLAY_NAMES, TISSUE_INDICES, tissue_index

PASSWORD = "correct horse battery staple"
KEYS = ["ADI", "LYM", "STR", "MUS"]  # the gallery's tissues, in gallery order


def services_for(home, storage_url=None, spaces=False):
    env = {"PATHSYNTH_HOME": str(home), "PATHSYNTH_INSTRUCTOR_PASSWORD": PASSWORD,
           **({"SPACE_ID": "someone/pathsynth", "PATHSYNTH_INSTRUCTORS": "prof"} if spaces else {})}
    return SimpleNamespace(settings=Settings.from_env(env), store=GalleryStore(home, database_url=storage_url),
                           pool=None)  # no pool: generated questions come from the verifier


def make_gallery(store) -> int:
    items = [GalleryItemInput(np.full((28, 28, 3), 30 * n, np.uint8), caption=f"note <b>{n}</b>", tissue=key)
             for n, key in enumerate(KEYS)]
    return store.create_gallery("Week 1", items=items)


def create(services, mode="practice", due="", title="Colon =1+1") -> str:
    message, record = tab.assignment_create(services, PASSWORD, title, mode, due, "Week 1", None, 2, "")
    assert message.startswith("✅"), message
    assert record["code"] in message and record["questions"] == len(KEYS)
    return record["code"]


def take(services, code, name, choices) -> list[tuple]:
    """An assignment taken through the tab's handlers as the browser would; ``choices``: tissue per question in
    the assignment's order (a callable of the right answer), stopping when they run out."""
    view = tab.assignment_open(services, code, name)
    attempt, shown = view[0], [view]
    for choose in choices:
        right = attempt.session.questions[attempt.session.current].answer
        shown.append(tab.assignment_answer(attempt, DISPLAY_NAMES[tissue_index(choose(right))]))
        if attempt.assignment.mode == "practice":
            shown.append(tab.assignment_next(attempt))
    return shown


def test_create_take_dashboard_and_csv_agree_with_the_stored_answers(tmp_path, storage_url):
    services = services_for(tmp_path, storage_url)
    make_gallery(services.store)
    code = create(services)
    assignment = A.open_assignment(services.store.database, code)
    assert sorted(q.tissue for q in assignment.questions) == sorted(tissue_index(k) for k in KEYS)
    ana = take(services, code, "Ana", [lambda right: right] * 3 + [lambda right: (right + 1) % len(TISSUE_INDICES)])
    assert "✅ **Correct!**" in ana[1][6] and "&lt;b&gt;" in ana[1][6] and "<b>" not in ana[1][6]  # caption escaped
    assert "4 questions" in ana[0][-1] and "3 / 4" in ana[-1][7]  # own results at the end
    take(services, code.lower(), "Ben", [lambda right: right] * 2)  # codes are case-insensitive; Ben stops early

    summary, learners, tissues, matrix, missed, status = tab.assignment_dashboard(services, PASSWORD, code)
    assert status == "" and "2 learner(s)" in summary and "6 answer(s)" in summary and "83%" in summary
    assert {row[0]: row[2:5] for row in learners} == {"Ana": [3, 4, 4], "Ben": [2, 2, 4]}
    assert sum(row[2] for row in tissues) == 6 and isinstance(matrix, np.ndarray) and len(missed) == 1

    path, status = tab.assignment_export(services, PASSWORD, code)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * len(KEYS)  # one row per learner x question, unanswered ones included
    stored = A.results(services.store.database, assignment)
    answered = [r for r in rows if r["chosen"]]
    assert [(r["learner"], int(r["question"]) - 1, r["answer_key"], r["chosen"], r["correct"]) for r in answered] == \
        [(a.learner, a.position, DISPLAY_NAMES[a.tissue], DISPLAY_NAMES[a.chosen], "yes" if a.correct else "no")
         for a in stored]
    assert {r["title"] for r in rows} == {"Colon =1+1"}  # not a formula: it does not start with =
    assert len(ProgressStore(services.store.database).history(local_learner("ana"))) == 4  # counts as progress
    services.store.close()


def test_formula_like_titles_and_names_are_inert_in_the_csv(tmp_path):
    services = services_for(tmp_path)
    make_gallery(services.store)
    code = create(services, title="=HYPERLINK(\"http://x\")")
    take(services, code, "@ana", [lambda right: right])
    path, _ = tab.assignment_export(services, PASSWORD, code)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["title"] for r in rows} == {"'=HYPERLINK(\"http://x\")"} and {r["learner"] for r in rows} == {"'@ana"}
    services.store.close()


def test_exam_mode_gives_feedback_only_at_the_end_and_marks_late_answers(tmp_path):
    services = services_for(tmp_path)
    make_gallery(services.store)
    code = create(services, mode="exam", due="2020-01-31")
    shown = take(services, code, "Ana", [lambda right: right] * len(KEYS))
    assert "late" in shown[0][1]  # the header warns before the first answer
    for view in shown[1:-1]:  # each answer: saved, the next question, nothing about right or wrong
        assert "saved" in view[-1] and view[6] == "" and "Correct" not in str(view) and view[2] is not None
    assert "4 / 4" in shown[-1][7] and "came after the due date" in shown[-1][7]
    answers = A.results(services.store.database, A.open_assignment(services.store.database, code))
    assert all(a.late for a in answers)
    again = tab.assignment_open(services, code, "ana")  # reopening: straight to the results, nothing to redo
    assert "4 / 4" in again[7] and again[4]["visible"] is False
    services.store.close()


def test_a_question_is_answered_once_and_reopening_resumes(tmp_path):
    services = services_for(tmp_path)
    make_gallery(services.store)
    code = create(services)
    take(services, code, "Ana", [lambda right: right])
    view = tab.assignment_open(services, code, "Ana")
    assert view[0].session.current == 1 and "You had answered 1" in view[-1]
    assignment = view[0].assignment
    with pytest.raises(ValueError, match="already answered question 1"):
        A.record_answer(services.store.database, assignment, local_learner("ana"), 0, "ADI")
    other_tab = tab.assignment_open(services, code, "Ana")[0]  # the same learner in a second browser tab
    tab.assignment_answer(view[0], "Adipose tissue")
    resumed = tab.assignment_answer(other_tab, "Lymphocytes")  # question 2 again: refused, and carried on
    assert "already answered question 2" in resumed[-1] and other_tab.session.current == 2
    services.store.close()


def test_learners_are_refused_the_dashboard_export_list_and_create(tmp_path):
    services = services_for(tmp_path)
    make_gallery(services.store)
    code = create(services)
    take(services, code, "Ana", [lambda right: right])
    for password in ("", None):
        dashboard = tab.assignment_dashboard(services, password, code)
        assert dashboard[-1].startswith("⚠️") and "password" in dashboard[-1]
        assert dashboard[:5] == (None,) * 5  # nothing of the class's results
        export = tab.assignment_export(services, password, code)
        assert export[0] is None and export[1].startswith("⚠️")
        assert tab.assignment_list(services, password)[1].startswith("⚠️")
        assert tab.assignment_create(services, password, "x", "exam", "", "Week 1", None, 1, "")[0].startswith("⚠️")
    assert len(A.list_assignments(services.store.database)) == 1
    services.store.close()


def request():
    """A request from a fresh address: the password backoff is per account and address, for the whole process."""
    return SimpleNamespace(client=SimpleNamespace(host=f"test-{secrets.token_hex(4)}"))


def test_the_instructor_tools_show_only_after_an_instructor_signs_in(tmp_path):
    services = services_for(tmp_path)
    shown = lambda outputs: (outputs[1]["visible"], outputs[2]["visible"])  # noqa: E731 (tools, "Sign out")
    for password, line in ((None, "Enter the instructor password to create assignments"),
                           ("a learner's guess", "⚠️ Instructor password missing or wrong")):
        outputs = tab.assignment_sign_in(services, password, None, request())
        assert outputs[0].startswith(line) and shown(outputs) == (False, False)
    outputs = tab.assignment_sign_in(services, PASSWORD, None, request())
    assert outputs[0] == "✅ Signed in as **instructor**." and shown(outputs) == (True, True)
    signed_out = tab.assignment_sign_out(3)
    assert signed_out[0] == "Signed out." and (signed_out[1]["visible"], signed_out[2]["visible"]) == (False, False)
    assert signed_out[3:] == ("", None, None, None)  # the password forgotten, the results emptied
    services.store.close()


def test_on_spaces_a_listed_login_signs_in_without_a_password(tmp_path, monkeypatch):
    monkeypatch.setattr(gr, "LoginButton", lambda: None)  # the real one needs a Hugging Face login to build
    services = services_for(tmp_path, spaces=True)
    student, prof = SimpleNamespace(username="student"), SimpleNamespace(username="prof")
    refused = tab.assignment_sign_in(services, "", student, request())
    assert "not an instructor" in refused[0] and refused[1]["visible"] is False
    assert tab.assignment_sign_in(services, "", prof, request())[1]["visible"] is True
    assert sign_in_events(services) == {"click", "submit", "load"}  # a listed login is checked as the page opens
    assert sign_in_events(services, given_the_demo=False) == {"click", "submit"}  # no guessing the app from context
    services.store.close()
    assert sign_in_events(services_for(tmp_path / "local")) == {"click", "submit"}


def sign_in_events(services, given_the_demo=True) -> set[str]:
    """The events that run the tab's instructor sign-in (the tab built with the app handed over, or not)."""
    with gr.Blocks() as demo:
        tab.build(services, demo if given_the_demo else None)
    return {event for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") == "assignment_sign_in"
            for _, event in fn.targets}


def test_on_spaces_only_listed_logins_see_results(tmp_path):
    services = services_for(tmp_path, spaces=True)
    make_gallery(services.store)
    code = create(services)  # the password still works
    student, prof = SimpleNamespace(username="student"), SimpleNamespace(username="prof")
    view = tab.assignment_open(services, code, "prof", student)  # the name box is ignored on Spaces
    assert view[0].learner.key == "hf:student"
    assert "not an instructor" in tab.assignment_dashboard(services, "", code, student)[-1]
    assert "not an instructor" in tab.assignment_export(services, "", code, student)[1]
    assert tab.assignment_dashboard(services, "", code, prof)[-1] == ""
    assert "Sign in" in tab.assignment_open(services, code, "ana", None)[-1]
    services.store.close()


@pytest.mark.parametrize("code, message", [("", "Type the assignment code"), ("ZZ", "No assignment has the code"),
                                           ("ABCDEF", "No assignment has the code 'ABCDEF'"),
                                           ("<script>", "No assignment has the code")])
def test_unknown_codes_get_a_clear_one_line_message(tmp_path, code, message):
    services = services_for(tmp_path)
    status = tab.assignment_open(services, code, "Ana")[-1]
    assert status.startswith("⚠️") and message.replace("'", "") in status.replace("'", "") and "\n" not in status
    assert "<script>" not in status  # shown escaped
    assert message.split("'")[0] in tab.assignment_dashboard(services, PASSWORD, code)[-1]
    services.store.close()


@pytest.mark.parametrize("args, message", [(("", "practice", "", "", None, 1, ""), "title"),
                                           (("T", "quiz", "", "Week 1", None, 1, ""), "practice or exam"),
                                           (("T", "exam", "soon", "Week 1", None, 1, ""), "Due date"),
                                           (("T", "exam", "", "Week 9", None, 1, ""), "no gallery")])
def test_bad_creation_input_gets_a_message_beside_the_button(tmp_path, args, message):
    services = services_for(tmp_path)
    make_gallery(services.store)
    status = tab.assignment_create(services, PASSWORD, *args)[0]
    assert status.startswith("⚠️") and message in status and "\n" not in status
    services.store.close()


def test_an_assignment_of_generated_images_keeps_only_the_verified_ones(tmp_path):
    services = services_for(tmp_path)
    results = [SimpleNamespace(image=np.zeros((28, 28, 3), np.uint8), tissue=t, seed=7 + t, verified=t != 2,
                               attempts=1, predicted=t, confidence=0.9, realism=0.5, probabilities=[0.1] * 9)
               for t in (0, 1, 2)]
    services.verifier = SimpleNamespace(generate=lambda tissues, seed=None, progress=None: results)
    message, record = tab.assignment_create(services, PASSWORD, "Generated", "practice", "2030-01-01 09:00",
                                            "", ["Adipose tissue"], 3, "5")
    assert record["questions"] == 2 and "1 unverified" in message and record["due_at"].startswith("2030-01-01T09:00")
    services.store.close()


def test_due_dates():
    assert A.parse_due("2026-12-24") == "2026-12-24T23:59:59.999+00:00"
    assert A.parse_due("2026-12-24 17:00+01:00") == "2026-12-24T16:00:00.000+00:00"
    assert A.parse_due("  ") is None
    assignment = A.Assignment(1, "ABCDEF", "t", "exam", A.parse_due("2026-12-24"), "", "", None)
    assert not assignment.is_late(datetime(2026, 12, 24, 23, 0, tzinfo=timezone.utc))
    assert assignment.is_late(datetime(2026, 12, 25, 0, 0, tzinfo=timezone.utc))


def test_a_database_at_revision_0004_is_upgraded_keeping_its_answers(tmp_path, storage_url):
    url = storage_url or storage.sqlite_url(tmp_path / DB_NAME)
    database = storage.Database(url)
    with database.write() as connection:  # the schema and an answer as the 0004 release left them
        command.upgrade(storage.alembic_config(connection), "0004")
        connection.execute(text("INSERT INTO learners (key, display_name, created_at) "
                                "VALUES ('local:ana', 'Ana', '2026-11-30T08:00:00.000+00:00')"))
        connection.execute(text("INSERT INTO answers (learner_id, answered_at, tissue, chosen, correct, mode, source) "
                                "SELECT id, '2026-11-30T08:01:00.000+00:00', 3, 3, true, 'practice', 'real' "
                                "FROM learners"))
    database.dispose()
    with GalleryStore(tmp_path, database_url=storage_url) as store:  # opening upgrades to head
        with store.database.read() as connection:
            head = ScriptDirectory(str(storage.database.MIGRATIONS)).get_current_head()  # 0005 or a later one
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
            assert {"assignments", "assignment_questions"} <= set(inspect(connection).get_table_names())
            assert connection.execute(text("SELECT assignment_id FROM answers")).scalar() is None
        assert len(ProgressStore(store.database).history(local_learner("ana"))) == 1
        make_gallery(store)
        assignment = A.create_from_gallery(store.database, store.get_gallery("Week 1"))
        A.record_answer(store.database, assignment, local_learner("ana"), 0, assignment.questions[0].tissue)
        assert [a.correct for a in A.results(store.database, assignment)] == [True]
        with storage.migrating(store.database) as connection:  # and back down cleanly, keeping the answers
            command.downgrade(storage.alembic_config(connection), "0004")
            assert not {"assignments", "assignment_questions"} & set(inspect(connection).get_table_names())
            assert "assignment_id" not in {c["name"] for c in inspect(connection).get_columns("answers")}
            assert connection.execute(text("SELECT count(*) FROM answers")).scalar() == 2


def test_the_tab_registers_its_api_endpoints(tmp_path):
    services = services_for(tmp_path)
    with gr.Blocks() as demo:
        tab.build(services)
    names = {fn.api_name for fn in demo.fns.values() if fn.api_name}
    assert {"assignment_open", "assignment_answer", "assignment_next", "assignment_create", "assignment_list",
            "assignment_dashboard", "assignment_export"} <= names
    services.store.close()


# --------------------------------------------------------------------------- the create form's gallery list

def gallery_list(services, password, current=None, account=None):
    """The "From gallery" dropdown's update as the browser gets it: (its choices, its value)."""
    update = tab.assignment_galleries(services, password, current, None, request(), account)
    return [tuple(choice) for choice in update["choices"]], update["value"]


def test_the_gallery_list_names_whose_each_gallery_is_and_its_id_picks_exactly_one(tmp_path):
    """Two galleries of one name (the instructor's private one, bob's shared one) read differently in the list,
    another instructor's private gallery is not there, and the id chosen creates from exactly that gallery."""
    services = services_for(tmp_path)
    store, pixels = services.store, np.zeros((28, 28, 3), np.uint8)
    mine = store.create_gallery("Week 1", created_by="Instructor", visibility="private",
                                items=[GalleryItemInput(pixels, tissue=t) for t in ("ADI", "MUC", "STR")])
    bobs = store.create_gallery("week 1", created_by="bob", items=[GalleryItemInput(pixels, tissue="LYM")])
    store.create_gallery("Bob's own", created_by="bob", visibility="private")
    choices, value = gallery_list(services, PASSWORD)
    assert choices == [tab.NO_GALLERY, ("Week 1 (private, yours; 3 images)", mine),
                       ("week 1 (shared, by bob; 1 image)", bobs)] and value == ""
    assert gallery_list(services, PASSWORD, bobs) == (choices, bobs)  # the choice stays while it is listed
    assert gallery_list(services, PASSWORD, 999)[1] == ""  # a deleted gallery: back to "generate"
    for password in (None, "", "a learner's guess"):  # learners and wrong passwords: nothing to choose from
        assert gallery_list(services, password, bobs) == ([tab.NO_GALLERY], "")

    message, record = tab.assignment_create(services, PASSWORD, "", "practice", "", bobs, None, 1, "")
    assert message.startswith("✅") and record["title"] == "week 1" and record["questions"] == 1
    assert tab.assignment_create(services, PASSWORD, "", "practice", "", str(mine), None, 1, "")[1]["questions"] == 3
    by_name = tab.assignment_create(services, PASSWORD, "T", "practice", "", "WEEK 1", None, 1, "")[0]
    assert by_name.startswith("⚠️") and "Choose one by its id" in by_name  # an API client's name: no guessing
    secret = store.list_galleries("bob")[-1].id  # bob's private gallery, sent by id anyway: refused
    refused = tab.assignment_create(services, PASSWORD, "T", "practice", "", secret, None, 1, "")[0]
    assert refused.startswith("⚠️") and f"no gallery with id {secret}" in refused
    assert len(A.list_assignments(services.store.database)) == 2
    services.store.close()


def events_running(demo, name: str) -> list[str]:
    """What triggers each event running ``name``: "select", or "then <the event it follows>"."""
    fns = list(demo.fns.values())
    return [f"then {getattr(fns[fn.trigger_after].fn, '__name__', 'lambda')}" if fn.trigger_after is not None
            else event for fn in fns if getattr(fn.fn, "__name__", "") == name for _, event in fn.targets]


def test_the_gallery_list_is_refreshed_on_sign_in_sign_out_and_when_the_tab_opens(tmp_path):
    services = services_for(tmp_path)
    with gr.Blocks() as demo:
        with gr.Tab("Assignments") as this_tab:
            tab.build(services, demo, this_tab)
    assert sorted(events_running(demo, "assignment_galleries")) == [
        "select", "then <lambda>", *["then assignment_sign_in"] * 3]  # click, Enter in either box; sign-out
    services.store.close()



def with_real_tiles(services):
    """``services`` with a real sample: four tiles per tissue, each tissue its own flat colour (found in a review)."""
    labels = np.repeat(np.arange(len(TISSUE_INDICES)), 4)
    services.real_images = np.stack([np.full((28, 28, 3), real_colour(t), np.uint8) for t in labels])
    services.real_labels = labels
    services.real_probabilities = np.eye(len(TISSUE_INDICES))[labels] * 0.9 + 0.1 / len(TISSUE_INDICES)
    return services


def real_colour(tissue: int) -> tuple[int, int, int]:
    return 200, 10 + 20 * tissue, 77


def shows_colour(image: np.ndarray, colour) -> bool:
    return bool((np.asarray(image) == colour).all(-1).any())


def test_an_exam_assignment_ends_with_the_quizs_review_of_each_miss(tmp_path):
    """Issue 32: assignments gave nothing to review (no zoom, no scale bar, after an exam only a table of answers):
    questions now carry the quiz's view controls and scale bar, and the results show each missed tile above real
    examples of the right tissue and of the one chosen, at one scale, with how to tell them apart."""
    services = with_real_tiles(services_for(tmp_path))
    make_gallery(services.store)
    code = create(services, mode="exam")
    opened = tab.assignment_open(services, code, "Ana")
    attempt = opened[0]
    assert opened[2]["value"].shape == (DISPLAY_SIZE + SCALE_BAR_STRIP, DISPLAY_SIZE, 3)  # with its scale bar
    assert opened[9]["visible"] is True and opened[10]["visible"] is False  # view controls; no review yet
    _, zoomed, status = tab.assignment_restyle(attempt, "2×", "pixel-exact", False)
    assert status == gr.skip()  # the "Opened ..." line it follows stays on screen
    assert zoomed.shape == (DISPLAY_SIZE, DISPLAY_SIZE, 3) and attempt.look.zoom == 2  # kept for the next ones
    debris = tissue_index("DEB")  # in no question: a sure miss
    first = attempt.session.questions[0].answer
    shown = tab.assignment_answer(attempt, DISPLAY_NAMES[debris])
    assert shown[2]["value"].shape == (DISPLAY_SIZE, DISPLAY_SIZE, 3)  # the next question as set: no bar
    for _ in range(len(KEYS) - 1):
        shown = tab.assignment_answer(attempt, DISPLAY_NAMES[attempt.session.questions[attempt.session.current].answer])
    assert "3 / 4" in shown[7] and "You missed 1 question(s)" in shown[7] and "real example" in shown[7]
    assert re.search(r"(Real tiles|Synthetic): \d of \d right", shown[7])  # real and generated tiles apart
    assert shown[9]["visible"] is False and shown[8]["visible"] is True  # the answers' table stays
    [(panel, caption)] = shown[10]["value"]
    assert caption.startswith(f"Q1: it is {DISPLAY_NAMES[first]} (you said {DISPLAY_NAMES[debris]}) — note")
    assert shows_colour(panel, real_colour(first)) and shows_colour(panel, real_colour(debris))
    again = tab.assignment_open(services, code, "ana")  # reopened: the same review from the stored answers
    assert [c for _, c in again[10]["value"]] == [caption]
    services.store.close()

# ------------------------------------------------------------------------------- opened from the Quiz tab

def test_the_quiz_tab_opens_an_assignment_as_the_assignments_tab_does(tmp_path):
    services = services_for(tmp_path)
    make_gallery(services.store)
    code = create(services)
    typed = f" {code.lower()[:3]} {code.lower()[3:]} "  # lower case and spaces, as on the Assignments tab
    outputs = tab.assignment_open_from_quiz(services, typed, "Ana")
    assert len(outputs) == tab.QUIZ_SHORTCUT_OUTPUTS
    attempt, header = outputs[0], outputs[1]
    assert attempt.assignment.code == code and attempt.learner.key == "local:ana" and "question 1 of 4" in header
    assert outputs[tab.VIEW_OUTPUTS:tab.VIEW_OUTPUTS + 2] == (code, "Ana")  # in the Assignments tab's boxes
    assert outputs[-2].selected == "assignments" and outputs[-1] == r"Opened Colon =1\+1 in the Assignments tab."
    tab.assignment_answer(attempt, DISPLAY_NAMES[attempt.session.questions[0].answer])
    again = tab.assignment_open(services, code, "ana")[0]  # the same learner, the same stored answers
    assert again.session.current == 1
    for args, message in (((" zz9 ", "Ana"), "No assignment has the code"), (("", "Ana"), "Type the assignment code"),
                          ((code, " "), "Type your name")):
        refused = tab.assignment_open_from_quiz(services, *args)
        assert refused[-1].startswith("⚠️") and message in refused[-1] and "\n" not in refused[-1]
        assert all(value == gr.skip() for value in refused[:-1])  # no tab switch; nothing else changes
    services.store.close()


# ------------------------------------------------------------------------------- generated questions

class RecordingSlots:
    """Stands in for ``common.model_slots``: records whether model calls run while holding a slot."""

    def __init__(self):
        self.held, self.entered = False, 0

    def __enter__(self):
        self.held, self.entered = True, self.entered + 1

    def __exit__(self, *exc):
        self.held = False


def fake_result(tissue: int):
    return SimpleNamespace(image=np.full((28, 28, 3), tissue, np.uint8), tissue=tissue, seed=tissue, verified=True,
                           attempts=1, predicted=tissue, confidence=0.9, realism=0.5, probabilities=[0.1] * 9)


def test_generated_questions_take_ready_pool_images_and_generate_the_rest_in_a_model_slot(monkeypatch):
    slots, made = RecordingSlots(), []
    monkeypatch.setattr(common, "model_slots", slots)  # where the shared verified_images takes its slots

    def generate(tissues, seed=None, progress=None):
        made.append((list(tissues), seed, slots.held))
        return [fake_result(t) for t in tissues]

    stocked = {0}  # the pool has adipose tissue ready, nothing else
    pool = SimpleNamespace(take=lambda tissues, prefer=None: [fake_result(t) if t in stocked else None for t in tissues])
    services = SimpleNamespace(pool=pool, verifier=SimpleNamespace(generate=generate))
    assert [r.tissue for r in tab.verified_images(services, [0, 1, 0, 2], None)] == [0, 1, 0, 2]
    assert made == [([1, 2], None, True)]  # only what the pool lacked, inside a slot
    stocked.update(range(9))
    tab.verified_images(services, [3, 4], None)
    assert len(made) == 1 and slots.entered == 1  # all ready: no model call, no slot
    tab.verified_images(services, [3, 4], 7)  # a typed seed reproduces its images: generated as asked
    services.pool = None
    tab.verified_images(services, [5], None)
    assert made[1:] == [([3, 4], 7, True), ([5], None, True)]


def test_assignment_creation_waits_in_the_model_queue_only_without_a_pool(tmp_path):
    services = services_for(tmp_path)
    queue = {}
    for pool in (None, object()):
        services.pool = pool
        with gr.Blocks() as demo:
            tab.build(services, demo)
        queue[pool is None] = next(fn.concurrency_id for fn in demo.fns.values() if fn.api_name == "assignment_create")
    assert queue[True] == "model" and queue[False] != "model"
    services.store.close()
