"""App-level reliability: hostile input through the API, escaping, concurrent sessions, request size bounds.

Each bad input must give a clear message (a ``gradio_client`` ``AppError`` naming the problem, or a normal
"not understood" answer), the app must keep serving, and nothing already stored may be lost.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pathsynth import ui_helpers as ui
from pathsynth.tissues import DISPLAY_NAMES

pytestmark = pytest.mark.slow

HOSTILE_TEXTS = {
    "empty": "",
    "whitespace": " \t\n  ",
    "10k": "fat " * 2500,
    "emoji": "🧫🔬 fat cells 🍔",
    "rtl": "خلايا دهنية fat \u202eslleC",
    "control": "fat\x00\x07 cells\x1b[31m",
    "html": "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "sql": "'; DROP TABLE galleries; --",
    "path": "../../../../etc/passwd",
    "format": "%s%s%n {0} ${jndi:ldap://x}",
    "unicode": "Ｆａｔ\u200b ｃｅｌｌｓ",
}
GENERIC_FAILURE = "Something went wrong"


def app_error(call, *args, api_name) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        call(*args, api_name=api_name)
    message = str(caught.value)
    assert message and GENERIC_FAILURE not in message, message
    return message


def predict_or_message(call, *args, api_name):
    """The endpoint's result, or the text of a clear error (never an unexplained failure)."""
    from gradio_client.exceptions import AppError

    try:
        return call(*args, api_name=api_name)
    except AppError as error:
        message = str(error)
        assert message and GENERIC_FAILURE not in message, message
        return message


@pytest.fixture(scope="module")
def instructor(running_app):
    return running_app.client()


@pytest.fixture(scope="module")
def keeper_gallery(running_app, instructor):
    """A gallery saved before the abuse starts; it must come out intact."""
    password = running_app.password
    instructor.predict(password, ["Mucus"], 2, "3", api_name="/instructor_generate")
    rows = [[True, 1, "Mucus", "-", "keep me 1"], [True, 2, "Mucus", "-", "keep me 2"]]
    *_, saved = instructor.predict(password, "Keeper", "must survive", {"headers": ui_batch_headers(), "data": rows},
                                   api_name="/gallery_save")
    return saved["id"]


def ui_batch_headers():
    return ["Keep", "#", "Tissue", "Verified", "Caption"]


def assert_keeper_intact(client, gallery_id):
    images, info, details = client.predict(gallery_id, api_name="/gallery_get")
    assert details["name"] == "Keeper" and details["description"] == "must survive"
    assert [i["caption"] for i in details["items"]] == ["keep me 1", "keep me 2"]
    assert len(images) == 2


# ------------------------------------------------------------------------------------------- free text

@pytest.mark.parametrize("kind", sorted(HOSTILE_TEXTS))
def test_hostile_descriptions(client, kind):
    text = HOSTILE_TEXTS[kind]
    result = predict_or_message(client.predict, text, api_name="/resolve")
    if kind == "10k":
        assert "too long" in result
        assert "too long" in app_error(client.predict, None, text, "", False, api_name="/generate")
        return
    message, _, _, details = result
    assert details["status"] in ("ok", "unsure", "not_understood")
    assert "<script" not in message and "<img" not in message  # the quoted text is escaped
    if kind in ("empty", "whitespace"):
        assert details["status"] == "not_understood"
        assert "Choose a tissue" in app_error(client.predict, None, text, "", False, api_name="/generate")
    if kind in ("emoji", "control", "unicode"):
        assert details["tissue"] == "Adipose tissue"
    generated = predict_or_message(client.predict, None, text, "", False, api_name="/generate")
    if isinstance(generated, tuple):
        for shown in (generated[3], generated[9]):  # the image summary and what was understood
            assert "<script" not in shown and "<img" not in shown


@pytest.mark.parametrize("seed", ["-1", "2147483648", "1e400", "nan", "inf", "3.5", "seven", "0x10", "１２a",
                                  "9" * 12])
def test_bad_seeds(client, seed):
    message = app_error(client.predict, "Mucus", "", seed, False, api_name="/generate")
    assert "Seed" in message


def test_bad_tissue_choice(client):
    for choice in ("Unicorn tissue", "<script>", "9"):
        assert "not in the list of choices" in app_error(client.predict, choice, "", "", False, api_name="/generate")


@pytest.mark.parametrize("n, share", [(0, 0.5), (31, 0.5), (-3, 0.5), (2.5, 0.5), (3, -0.1), (3, 1.5),
                                      ("ten", 0.5), (3, "half")])
def test_bad_quiz_settings(client, n, share):
    app_error(client.predict, n, share, api_name="/quiz_start")


def test_bad_quiz_answers_leave_the_quiz_unchanged(client):
    started = client.predict(2, 0.0, api_name="/quiz_start")
    before = started[6]
    for choice in ("", "   ", "Unicorn", "<b>x</b>", None, 42):
        app_error(client.predict, choice, api_name="/quiz_answer")
    after = client.predict(api_name="/quiz_next")[6]
    assert after == before and after["answered"] == 0


# ------------------------------------------------------------------------------------------- galleries

@pytest.mark.parametrize("kind", sorted(HOSTILE_TEXTS))
def test_hostile_gallery_names_and_captions(running_app, instructor, keeper_gallery, kind):
    text = HOSTILE_TEXTS[kind]
    password = running_app.password
    rows = [[True, 1, "Mucus", "-", text], [True, 2, "Mucus", "-", "plain"]]
    table = {"headers": ui_batch_headers(), "data": rows}
    result = predict_or_message(instructor.predict, password, f"{kind} {text}"[:90], "desc " + text[:50], table,
                                api_name="/gallery_save")
    if isinstance(result, str):  # refused: must say why
        assert re.search(r"too long|empty|already exists|Generate a batch", result), result
        assert kind in ("10k",)
    else:
        message, _, saved = result
        assert "<script" not in message
        _, info, details = instructor.predict(saved["id"], api_name="/gallery_get")
        assert "<script" not in info and "<img" not in info
        caption = details["items"][0]["caption"]
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", caption)  # control/bidi-override characters dropped
        if kind in ("html", "sql", "path", "format", "emoji"):
            assert caption == text  # everything else is kept verbatim
    name_only = predict_or_message(instructor.predict, password, text, "", table, api_name="/gallery_save")
    if kind in ("empty", "whitespace"):
        assert "must not be empty" in name_only
    elif kind == "10k":
        assert "too long" in name_only
    assert_keeper_intact(instructor, keeper_gallery)


def test_script_gallery_name_shows_literally(running_app, instructor, keeper_gallery):
    name = "<script>alert(1)</script>"
    table = {"headers": ui_batch_headers(), "data": [[True, 1, "Mucus", "-", "<b>caption</b>"],
                                                     [False, 2, "Mucus", "-", ""]]}
    message, _, saved = instructor.predict(running_app.password, name, "<i>desc</i>", table, api_name="/gallery_save")
    listing = instructor.predict(api_name="/gallery_list")[1]
    assert any(g["name"] == name for g in listing)  # stored verbatim
    images, info, _ = instructor.predict(saved["id"], api_name="/gallery_get")
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in info and "<script>" not in info
    assert "&lt;i&gt;desc&lt;/i&gt;" in info
    assert images[0]["caption"] == "Mucus — <b>caption</b>"  # the tissue, then the caption stored verbatim;
    # gr.Gallery shows text, not HTML
    assert "&lt;script&gt;" in message


@pytest.mark.parametrize("count, tissues, seed", [(0, ["Mucus"], ""), (9, ["Mucus"], ""), ("many", ["Mucus"], ""),
                                                  (3, [], ""), (1, ["Unicorn"], ""), (1, ["Mucus"], "-4")])
def test_bad_batch_requests(running_app, instructor, count, tissues, seed):
    app_error(instructor.predict, running_app.password, tissues, count, seed, api_name="/instructor_generate")


def test_bad_gallery_edits_keep_the_store_intact(running_app, instructor, keeper_gallery):
    password = running_app.password
    assert "empty" in app_error(instructor.predict, password, keeper_gallery, "  ", api_name="/gallery_rename")
    assert "too long" in app_error(instructor.predict, password, keeper_gallery, "x" * 101, api_name="/gallery_rename")
    assert "confirm" in app_error(instructor.predict, password, keeper_gallery, None, api_name="/gallery_delete")
    assert "too long" in app_error(instructor.predict, password, keeper_gallery, 1, "c" * 501,
                                   api_name="/gallery_update_caption")
    for number in (0, 3, -1, "two", 1.5):
        app_error(instructor.predict, password, keeper_gallery, number, "x", api_name="/gallery_update_caption")
    for missing in (10**9, 2**64, "no such gallery", "", None):
        if missing in ("", None):  # nothing chosen (the dropdown after a delete): an empty view, not an error
            images, info, details = instructor.predict(missing, api_name="/gallery_get")
            assert not images and info == "" and details is None
        else:
            assert "no gallery" in app_error(instructor.predict, missing, api_name="/gallery_get")
        app_error(instructor.predict, password, missing, True, api_name="/gallery_delete")
    assert_keeper_intact(instructor, keeper_gallery)


def test_store_is_consistent_on_disk(running_app, keeper_gallery):
    from pathsynth.gallery import GalleryStore

    with GalleryStore(running_app.home) as store:
        assert store.integrity_check() == "ok"
        for summary in store.list_galleries():
            gallery = store.get_gallery(summary.id)  # every item's image file is there
            assert len(gallery.items) == summary.n_items


# ------------------------------------------------------------------------------------------ concurrency

def test_concurrent_sessions_stay_separate(running_app):
    sessions = 20
    errors: list[str] = []
    results: dict[int, dict] = {}
    barrier = threading.Barrier(sessions)

    def session(number: int):
        client = running_app.client()
        barrier.wait(timeout=300)  # everyone starts together
        image, _, label, _, _, download, details, *_ = client.predict(
            DISPLAY_NAMES[number % 9], "", str(number), False, api_name="/generate")
        assert details["tissue"] == number % 9 and Image.open(image).size == (336, 336)
        started = client.predict(3, 0.34, api_name="/quiz_start")
        quiz_id = started[6]["quiz_id"]
        answers = [DISPLAY_NAMES[(number + k) % 9] for k in range(3)]
        correct = 0
        for k, choice in enumerate(answers):
            *_, status = client.predict(choice, api_name="/quiz_answer")
            correct += status["correct"]
            assert status["quiz_id"] == quiz_id and status["chosen"] == choice
            assert status["answered"] == k + 1 and status["score"] == correct
            client.predict(api_name="/quiz_next")
        return {"quiz_id": quiz_id, "score": correct, "seed": details["seed"], "tissue": details["tissue"]}

    def run(number: int):
        try:
            results[number] = session(number)
        except Exception as error:  # collected and reported below, with the session number
            errors.append(f"session {number}: {type(error).__name__}: {error}")

    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(run, range(sessions)))
    assert not errors, errors
    assert len({r["quiz_id"] for r in results.values()}) == sessions  # one quiz per session
    # same tissue + same seed string -> same image: sessions 0 and 9 asked for different seeds, so differ
    assert results[0]["seed"] != results[9]["seed"]
    assert running_app.alive() and running_app.answers_http()


# ------------------------------------------------------------------------------------- limits and health

def test_upload_size_is_bounded(running_app):
    body = b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n\r\n" + \
        b"\0" * (11 * 1024 * 1024) + b"\r\n--b--\r\n"
    request = urllib.request.Request(running_app.url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": "multipart/form-data; boundary=b"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=120)
    assert caught.value.code in (400, 413)
    assert running_app.answers_http()


def test_app_still_serves_and_logged_no_unexpected_errors(running_app, client, keeper_gallery):
    result = client.predict("Adipose tissue", "", "11", False, api_name="/generate")
    assert result[0] is not None and result[6]["tissue"] == 0
    assert_keeper_intact(client, keeper_gallery)
    assert "unexpected error" not in running_app.log()


# --------------------------------------------------------------------------------------- pure helpers

def test_seed_and_count_parsing():
    assert ui.parse_seed(None) is None and ui.parse_seed("  ") is None
    assert ui.parse_seed("42") == 42 and ui.parse_seed(7.0) == 7 and ui.parse_seed(np.int64(3)) == 3
    for bad in ("-1", 2**31, "1e400", float("nan"), True, [1], "4.2"):
        with pytest.raises(ValueError, match="Seed"):
            ui.parse_seed(bad)
    assert ui.parse_int(None, field="n", minimum=1, maximum=5, default=3) == 3
    with pytest.raises(ValueError, match="between 1 and 5"):
        ui.parse_int(6, field="n", minimum=1, maximum=5)


def test_escape_md_makes_markup_inert():
    escaped = ui.escape_md("<script>x</script> **b** [l](javascript:alert(1)) # h & `c`")
    assert "<" not in escaped and ">" not in escaped
    assert "\\*\\*b\\*\\*" in escaped and "\\[l\\]\\(javascript:alert\\(1\\)\\)" in escaped
    assert "&amp;" in escaped and "\\`c\\`" in escaped


def test_password_check_and_authorisation():
    config = ui.instructor_config({"PATHSYNTH_INSTRUCTOR_PASSWORD": "s3cret"})
    assert ui.authorize(config, "s3cret") == "instructor"
    for wrong in ("", None, "s3cre", "s3cret ", "S3CRET", 123, ["s3cret"]):
        with pytest.raises(PermissionError):
            ui.authorize(config, wrong)
    disabled = ui.instructor_config({})
    with pytest.raises(PermissionError, match="disabled"):
        ui.authorize(disabled, "anything")
    spaces = ui.instructor_config({"SPACE_ID": "u/app", "PATHSYNTH_INSTRUCTORS": "Alice, bob"})
    assert spaces.enabled and ui.authorize(spaces, None, "alice") == "alice"
    with pytest.raises(PermissionError, match="not an instructor"):
        ui.authorize(spaces, None, "mallory")


def test_password_backoff_slows_guessing_but_never_locks_out_for_long():
    now = [0.0]
    backoff = ui.PasswordBackoff(free_failures=3, first_delay_s=1.0, max_delay_s=30.0, clock=lambda: now[0])
    key = ("instructor", "10.0.0.1")
    for _ in range(3):  # a few typos cost nothing
        backoff.check(key)
        backoff.failed(key)
    assert backoff.wait_s(key) == 1.0
    delays = []
    for _ in range(8):  # a guesser: each wrong password doubles the wait, up to the cap
        now[0] += backoff.wait_s(key)
        backoff.check(key)
        backoff.failed(key)
        delays.append(backoff.wait_s(key))
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    with pytest.raises(PermissionError, match=r"try again in 30 s"):
        backoff.check(key)
    backoff.check(("instructor", "10.0.0.2"))  # other addresses are not affected
    now[0] += 30.0  # the real instructor waits at most the cap, then the right password works and clears it
    backoff.check(key)
    backoff.succeeded(key)
    assert backoff.wait_s(key) == 0.0


def test_wrong_passwords_from_one_address_cannot_lock_the_instructor_out(running_app):
    """8 wrong passwords from the instructor's own address delay the right one by seconds, not for good."""
    trainee, teacher = running_app.client(), running_app.client()
    for _ in range(8):
        message = app_error_or_text(trainee.predict, "guess", api_name="/instructor_sign_in")
        assert "password" in message.lower()
    started = time.perf_counter()
    while True:
        answer = app_error_or_text(teacher.predict, running_app.password, api_name="/instructor_sign_in")
        if "Signed in as" in answer:
            break
        assert "try again in" in answer
        assert time.perf_counter() - started < ui.PasswordBackoff().max_delay_s + 5
        time.sleep(1)


def app_error_or_text(call, *args, api_name) -> str:
    """The endpoint's first output or the text of its error."""
    result = predict_or_message(call, *args, api_name=api_name)
    return result if isinstance(result, str) else str(result[0])


@pytest.mark.parametrize("damage", ["classifier_truncated", "generator_missing"])
def test_broken_model_files_stop_startup_with_the_file_and_the_fix(tmp_path, damage):
    """A broken weight file is a one-line startup error naming the file and the rebuild command (the models load
    behind the page: the app stops as soon as one cannot be loaded)."""
    import subprocess
    import sys

    from conftest import ROOT, free_port
    from tiny_models import save_tiny_models

    classifier_dir, generator_dir = save_tiny_models(tmp_path / "models")
    if damage == "classifier_truncated":
        broken = classifier_dir / "model.safetensors"
        broken.write_bytes(broken.read_bytes()[:4000])
        fix = "train/classifier.py"
    else:
        broken = generator_dir / "unet" / "diffusion_pytorch_model.safetensors"
        broken.unlink()
        fix = "train/generator.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATHSYNTH_")}
    env.update(PATHSYNTH_CLASSIFIER=str(classifier_dir), PATHSYNTH_GENERATOR=str(generator_dir),
               PATHSYNTH_HOME=str(tmp_path / "home"), PORT=str(free_port()), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("PathSynth cannot start:") and "Traceback" not in done.stderr
    assert fix in last_line and (broken.name in last_line or str(broken.parent) in last_line), last_line


# ------------------------------------------------------------------------------------------- durability

def test_app_killed_during_gallery_writes_restarts_with_galleries_intact(model_env, tmp_path):
    """SIGKILL the app while an instructor saves galleries; after a restart every saved gallery is whole,
    the half-written one is either whole or absent, and no image is left outside the database."""
    import secrets
    import signal

    from conftest import start_app, stop_app
    from pathsynth import gallery as G
    from pathsynth.gallery import GalleryStore

    home, password = tmp_path / "home", secrets.token_urlsafe(12)
    app = start_app(home, tmp_path / "first.log", model_env, password=password)
    saved: list[str] = []
    failures: list[str] = []
    try:
        writer = app.client()
        writer.predict(password, ["Mucus"], 3, "5", api_name="/instructor_generate")
        rows = [[True, k, "Mucus", "-", f"caption {k}"] for k in (1, 2, 3)]
        table = {"headers": ui_batch_headers(), "data": rows}

        def keep_saving():
            for i in range(200):
                try:
                    writer.predict(password, f"class {i}", "", table, api_name="/gallery_save")
                except Exception as error:  # the server died under us: expected
                    failures.append(f"{type(error).__name__}: {error}")
                    return
                saved.append(f"class {i}")

        thread = threading.Thread(target=keep_saving, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while len(saved) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        app.process.send_signal(signal.SIGKILL)  # mid-stream: the next save is in flight
        app.process.wait(timeout=30)
        thread.join(timeout=60)
    finally:
        stop_app(app)
    assert len(saved) >= 3, failures

    restarted = start_app(home, tmp_path / "second.log", model_env, password=password)
    try:
        client = restarted.client()
        _, listing, _ = client.predict(api_name="/gallery_list")
        names = {g["name"] for g in listing}
        assert set(saved) <= names and len(names - set(saved)) <= 1  # at most the in-flight one, whole
        for entry in listing:
            images, _, details = client.predict(entry["id"], api_name="/gallery_get")
            assert [i["caption"] for i in details["items"]] == ["caption 1", "caption 2", "caption 3"]
            assert len(images) == 3
    finally:
        stop_app(restarted)
    with GalleryStore(home) as store:
        assert store.integrity_check() == "ok"
        assert all(len(store.get_gallery(g.id).items) == 3 for g in store.list_galleries())
    assert not (home / G.IMAGES_DIR).exists()  # images live in the database: no file to orphan


def _status_of(result) -> dict:
    return next(x for x in result if isinstance(x, dict) and "quiz_id" in x)


def test_app_killed_mid_exam_resumes_the_exam_and_the_assignment(model_env, tmp_path, storage_url):
    """SIGKILL the app mid-exam and mid-assignment; after a restart (SQLite file or PostgreSQL) the learner's page
    carries on at the same question with the answers given so far, and the exam's clock did not run meanwhile."""
    import secrets
    import signal

    from conftest import start_app, stop_app
    from pathsynth import assignments as A
    from pathsynth.gallery import GalleryItemInput, GalleryStore
    from pathsynth.tissues import DISPLAY_NAMES

    home, password = tmp_path / "home", secrets.token_urlsafe(12)
    extra = {"PATHSYNTH_DATABASE_URL": storage_url} if storage_url else {}
    with GalleryStore(home, database_url=storage_url) as store:  # an instructor's assignment of 4 fixed images
        items = [GalleryItemInput(np.full((28, 28, 3), 40 * n, np.uint8), tissue=n) for n in range(4)]
        code = A.create_assignment(store.database, "Week 2", items, mode="exam").code
    app = start_app(home, tmp_path / "first.log", model_env, password=password, extra_env=extra)
    try:
        learner = app.client()
        learner.predict(code, "Kim", api_name="/assignment_open")
        learner.predict(DISPLAY_NAMES[4], api_name="/assignment_answer")  # question 1 of the assignment stored
        status = _status_of(learner.predict(4, 0.0, "Kim", False, "mixed", "exam", 10, api_name="/quiz_start"))
        assert status["mode"] == "exam" and status["total"] == 4
        for choice in DISPLAY_NAMES[:2]:
            learner.predict(choice, api_name="/quiz_answer")
            status = _status_of(learner.predict(api_name="/quiz_next"))
        left_at_kill = status["seconds_left"]
        app.process.send_signal(signal.SIGKILL)
        app.process.wait(timeout=30)
        killed = time.monotonic()
    finally:
        stop_app(app)

    restarted = start_app(home, tmp_path / "second.log", model_env, password=password, extra_env=extra)
    try:
        time.sleep(max(0.0, 5 - (time.monotonic() - killed)))  # the server was away at least 5 s
        back = restarted.client()  # a new page: only the learner's name is left (the browser remembers it)
        resumed = back.predict("Kim", api_name="/quiz_resume")
        status = _status_of(resumed)
        assert status["answered"] == 2 and status["current"] == 2 and status["finished"] is False
        assert any("Welcome back" in x for x in resumed if isinstance(x, str))
        assert left_at_kill - 3 <= status["seconds_left"] <= left_at_kill  # no time lost while the server was away
        for choice in DISPLAY_NAMES[2:4]:
            back.predict(choice, api_name="/quiz_answer")
            status = _status_of(back.predict(api_name="/quiz_next"))
        assert status["finished"] and status["answered"] == 4

        texts = [x for x in back.predict("Kim", api_name="/assignment_resume") if isinstance(x, str)]
        assert any("question 2 of 4" in x for x in texts) and any("You had answered 1" in x for x in texts)
        assert code in texts and "Kim" in texts  # the code and name boxes filled in again
        back.predict(DISPLAY_NAMES[0], api_name="/assignment_answer")
        assert any("question 3 of 4" in x for x in back.predict(api_name="/assignment_next") if isinstance(x, str))
    finally:
        stop_app(restarted)
