"""The app's named API endpoints, driven with gradio_client against a running ``python app.py``."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from pathsynth.explain import MAP_LEGEND_HEIGHT
from pathsynth.tissues import DISPLAY_NAMES

pytestmark = pytest.mark.slow

BATCH_HEADERS = ["Keep", "#", "Tissue", "Verified", "Caption"]


def app_error(call, *args, api_name):
    """The message of the error an endpoint raises (the test fails if it does not raise)."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        call(*args, api_name=api_name)
    return str(caught.value)


def tile_from_display(path: str) -> np.ndarray:
    """The 28 px tile behind an enlarged (NEAREST, x12) display image."""
    image = np.asarray(Image.open(path).convert("RGB"))
    step = image.shape[0] // 28
    return image[step // 2::step, step // 2::step][:28, :28]


@pytest.fixture(scope="module")
def grader(model_env):
    """The classifier the app grades with (the quiz's answer key is its prediction)."""
    from pathsynth.classifier import TissueClassifier, DEFAULT_CLASSIFIER_DIR

    return TissueClassifier.from_pretrained(model_env.get("PATHSYNTH_CLASSIFIER", DEFAULT_CLASSIFIER_DIR))


# ------------------------------------------------------------------------------------------------ resolve

def test_resolve_understands_unsure_and_nonsense(client):
    message, _, tissue, details = client.predict("fat cells", api_name="/resolve")
    assert details["status"] == "ok" and details["tissue"] == "Adipose tissue"
    assert tissue["value"] == "Adipose tissue"  # the dropdown is set to what was understood
    assert "Adipose tissue" in message and "Confidence" in message

    message, candidates, _, details = client.predict("glands", api_name="/resolve")
    assert details["status"] == "unsure"
    offered = [c[0] if isinstance(c, (list, tuple)) else c for c in candidates["choices"]]
    assert candidates["visible"] is True and len(offered) >= 2
    assert {"Colorectal adenocarcinoma epithelium", "Normal colon mucosa"} <= set(offered)

    message, candidates, _, details = client.predict("qwzx blorptang", api_name="/resolve")
    assert details["status"] == "not_understood" and details["tissue"] is None
    assert "Not understood" in message and candidates["visible"] is False


# ----------------------------------------------------------------------------------------------- generate

def test_the_app_caches_the_files_it_serves_in_a_folder_of_its_own(running_app, client):
    import tempfile
    from pathlib import Path

    from pathsynth.app.common import FILE_CACHE_ROOT

    client.predict("Mucus", "", "4321", True, api_name="/generate")
    own = Path(tempfile.gettempdir()) / FILE_CACHE_ROOT / str(running_app.process.pid)
    assert any(path.suffix in (".png", ".webp") for path in own.rglob("*"))


def test_generate_returns_image_probabilities_and_record(client):
    image, cam, label, summary, card, download, details, *_ = client.predict(
        "Lymphocytes", "", "1234", True, api_name="/generate")
    shown = Image.open(image)
    assert shown.size == (336, 336)
    assert np.asarray(shown.convert("RGB")).std() > 0  # a real picture, not a blank
    assert Image.open(cam).size == (336, 336 + MAP_LEGEND_HEIGHT)  # the map over the tile, legend and reading
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(confidences) == set(DISPLAY_NAMES)
    assert abs(sum(confidences.values()) - 1.0) < 1e-3
    assert details["tissue"] == DISPLAY_NAMES.index("Lymphocytes") and details["tissue_name"] == "Lymphocytes"
    assert isinstance(details["verified"], bool) and 1 <= details["attempts"] <= 5
    assert details["predicted"] == int(np.argmax(details["probabilities"]))
    assert label["label"] == DISPLAY_NAMES[details["predicted"]]
    assert ("Verified" in summary) if details["verified"] else ("Not verified" in summary)
    assert f"| Seed | {details['seed']} |" in summary
    assert "The darkest, most crowded tissue tile" in card and "At higher magnification" in card  # both scales, labelled
    original = Image.open(download["value"])
    assert original.size == (28, 28) and original.format == "PNG"
    # the enlarged image is the original, pixel for pixel
    assert np.array_equal(tile_from_display(image), np.asarray(original.convert("RGB")))


def test_generate_is_reproducible_from_its_seed(client):
    first = client.predict("Mucus", "", "77", False, api_name="/generate")
    second = client.predict("Mucus", "", "77", False, api_name="/generate")
    assert first[1] is None  # no Grad-CAM asked for
    assert first[6]["seed"] == second[6]["seed"]
    assert np.array_equal(np.asarray(Image.open(first[5]["value"])), np.asarray(Image.open(second[5]["value"])))


def test_generate_from_a_description(client):
    image, _, _, summary, _, _, details, _, tissue, understood, _ = client.predict(None, "fat cells", "", False,
                                                                                  api_name="/generate")
    assert image is not None and details["tissue_name"] == "Adipose tissue"
    assert "Understood" in understood and tissue["value"] == "Adipose tissue"


def test_generate_refuses_nonsense_and_unsure_without_generating(client):
    image, _, _, summary, _, download, details, candidates, _, understood, status = client.predict(
        None, "qwzx blorptang", "", True, api_name="/generate")
    assert image is None and details is None and "Not understood" in understood and "not understood" in status
    image, _, _, summary, _, _, details, candidates, _, understood, status = client.predict(
        None, "glands", "", True, api_name="/generate")
    assert image is None and candidates["visible"] is True and "Not sure" in understood and "Pick one" in status


def test_the_seed_shown_reproduces_the_image(client):
    """The seed in the summary and the download's name, typed back in, gives the same image on the first try."""
    first = client.predict("Cancer-associated stroma", "", "", False, api_name="/generate")
    if not first[6]["verified"]:
        pytest.skip("these models verified nothing (tiny test models); test_verify.py covers the round trip")
    shown_seed = first[6]["seed"]
    assert f"| Seed | {shown_seed} |" in first[3] and f"seed{shown_seed}" in os.path.basename(first[5]["value"])
    again = client.predict("Cancer-associated stroma", "", str(shown_seed), False, api_name="/generate")
    assert again[6]["seed"] == shown_seed and again[6]["attempts"] == 1
    assert np.array_equal(np.asarray(Image.open(first[5]["value"])), np.asarray(Image.open(again[5]["value"])))


def test_generate_reports_bad_input_clearly(client):
    assert "Choose a tissue" in app_error(client.predict, None, "", "", True, api_name="/generate")
    assert "Seed must be" in app_error(client.predict, "Mucus", "", "-5", True, api_name="/generate")
    assert "whole number" in app_error(client.predict, "Mucus", "", "abc", True, api_name="/generate")


# --------------------------------------------------------------------------------------------------- quiz

def quiz_status(result) -> dict:
    return next(x for x in result if isinstance(x, dict) and "quiz_id" in x)


def test_quiz_start_answer_and_score(client, grader):
    started = client.predict(3, 0.0, api_name="/quiz_start")
    status = quiz_status(started)
    assert status == {**status, "score": 0, "answered": 0, "total": 3, "current": 0, "finished": False}
    question_image = started[1]

    # The answer key is the classifier's label, so the grader's prediction is the right answer.
    right = DISPLAY_NAMES[int(grader.predict(tile_from_display(question_image))[0])]
    _, _, feedback, cam, score, status = client.predict(right, api_name="/quiz_answer")
    assert status["correct"] is True and status["score"] == 1 and status["answered"] == 1
    assert "Correct" in feedback and right in feedback and Image.open(cam).size == (336, 336 + MAP_LEGEND_HEIGHT)
    assert "Score: 1 / 1" in score

    shown = client.predict(api_name="/quiz_next")
    wrong = next(name for name in DISPLAY_NAMES
                 if name != DISPLAY_NAMES[int(grader.predict(tile_from_display(shown[1]))[0])])
    *_, feedback, _, score, status = client.predict(wrong, api_name="/quiz_answer")
    assert status["correct"] is False and status["score"] == 1 and status["answered"] == 2
    assert "Not quite" in feedback and status["answer"] in feedback
    assert "Score: 1 / 2" in score


def test_quiz_summary_and_retry_of_missed(client, grader):
    result = client.predict(2, 0.0, api_name="/quiz_start")
    for _ in range(2):
        predicted = DISPLAY_NAMES[int(grader.predict(tile_from_display(result[1]))[0])]
        wrong = next(name for name in DISPLAY_NAMES if name != predicted)
        client.predict(wrong, api_name="/quiz_answer")
        result = client.predict(api_name="/quiz_next")
    status = quiz_status(result)
    assert status["finished"] and status["score"] == 0
    summary_text, table, misses = result[7], result[8], result[9]
    assert "Quiz finished: 0 / 2" in summary_text
    assert sum(row[2] for row in table["data"]) == 2  # per-tissue "asked" adds up
    assert len(misses) == 2 and all("you said" in m["caption"] for m in misses)
    assert "finished" in app_error(client.predict, "Mucus", api_name="/quiz_answer")

    retry = client.predict(api_name="/quiz_retry")
    status = quiz_status(retry)
    assert status["total"] == 2 and status["answered"] == 0 and status["title"] == "Retry"


def test_quiz_retry_mid_exam_is_refused_until_the_exam_is_over(client):
    """Issue 32: /quiz_retry mid-exam answered with the questions missed so far: the verdicts the exam keeps for
    its end. It is refused with a message until every question is answered."""
    fresh = client.__class__(client.src, verbose=False)  # its own session: its own exam
    status = quiz_status(fresh.predict(2, 0.0, None, False, "mixed", "exam", None, api_name="/quiz_start"))
    assert status["mode"] == "exam"
    fresh.predict("Debris", api_name="/quiz_answer")
    assert "when the exam is over" in app_error(fresh.predict, api_name="/quiz_retry")
    fresh.predict(api_name="/quiz_next")
    fresh.predict("Debris", api_name="/quiz_answer")
    finished = quiz_status(fresh.predict(api_name="/quiz_next"))
    assert finished["finished"] and "score" in finished  # over: the results, and a retry if anything was missed


def test_quiz_bad_input(client):
    fresh = client.__class__(client.src, verbose=False)  # a new session has no quiz yet
    assert "Start a quiz first" in app_error(fresh.predict, "Mucus", api_name="/quiz_answer")
    assert "less than minimum value 1" in app_error(client.predict, 0, 0.5, api_name="/quiz_start")
    assert "Questions: expected a number" in app_error(client.predict, "ten", 0.5, api_name="/quiz_start")


def test_out_of_range_and_malformed_api_input_answers_one_line_without_tracebacks(running_app, client):
    """Inputs that deserve a warning get a clear one-line message and leave no traceback in the server log."""
    before = running_app.log().count("Traceback")
    assert "no gallery with id" in app_error(client.predict, 2**64, api_name="/gallery_get")
    assert "no gallery with id" in app_error(client.predict, -(2**70), api_name="/gallery_get")
    for n, bound in ((0, "less than minimum value 1"), (10**9, "greater than maximum value 30")):
        assert f"Questions: Value {n} is {bound}" in app_error(client.predict, n, 0.5, api_name="/quiz_start")
    table_as_list = [[True, 1, "Mucus", "yes", "a caption"]]
    message = app_error(client.predict, running_app.password, "as a list", "", table_as_list, api_name="/gallery_save")
    assert "Generate a batch first" in message  # the rows were accepted as the table; the batch is what is missing
    message = app_error(client.predict, running_app.password, "garbage", "", "not a table", api_name="/gallery_save")
    assert message.startswith("Tick the images to keep") and "expected a table" in message
    assert "validation error" not in message and "\n" not in message
    assert running_app.log().count("Traceback") == before


def test_quiz_with_generated_images(client):
    status = quiz_status(client.predict(2, 1.0, api_name="/quiz_start"))
    assert status["total"] == 2 and status["answered"] == 0  # unverified tiles are replaced by real ones


# ---------------------------------------------------------------------------------------------- galleries

def batch_table(rows: list[list]) -> dict:
    return {"headers": BATCH_HEADERS, "data": rows}


def test_instructor_writes_need_the_right_password(running_app):
    trainee, instructor = running_app.client(), running_app.client()
    password = running_app.password

    for given in ("", "wrong password"):
        message = app_error(trainee.predict, given, ["Adipose tissue"], 1, "", api_name="/instructor_generate")
        assert "password" in message.lower()
        message = app_error(trainee.predict, given, "sneaky", "", None, api_name="/gallery_save")
        assert "password" in message.lower()
    listing = trainee.predict(api_name="/gallery_list")[1]
    assert all(g["name"] != "sneaky" for g in listing)

    assert "Signed in as" in instructor.predict(password, api_name="/instructor_sign_in")
    shown, table, message = instructor.predict(password, ["Adipose tissue", "Mucus"], 2, "9",
                                                  api_name="/instructor_generate")
    assert len(shown) == 4 and len(table["data"]) == 4 and "verified" in message
    assert [row[2] for row in table["data"]] == ["Adipose tissue"] * 2 + ["Mucus"] * 2
    rows = [[True, n + 1, row[2], row[3], f"caption {n + 1}"] for n, row in enumerate(table["data"])]
    rows[1][0] = False  # drop the second image
    message, choice, saved = instructor.predict(password, "API test gallery", "made by a test",
                                                batch_table(rows), api_name="/gallery_save")
    assert "Saved" in message and saved["n_items"] == 3

    # a trainee sees it, with the captions the instructor wrote, but cannot change it
    listing = trainee.predict(api_name="/gallery_list")[1]
    entry = next(g for g in listing if g["name"] == "API test gallery")
    assert entry["n_items"] == 3 and entry["description"] == "made by a test"
    images, info, details = trainee.predict(entry["id"], api_name="/gallery_get")
    assert [item["caption"] for item in details["items"]] == ["caption 1", "caption 3", "caption 4"]
    for shown_image, item in zip(images, details["items"]):  # unverified images are flagged to trainees
        suffix = " (not verified)" if item["verified"] is False else ""
        assert shown_image["caption"] == f"{item['tissue']} — {item['caption']}{suffix}"  # the tissue, then the caption
    assert [item["tissue"] for item in details["items"]] == ["Adipose tissue", "Mucus", "Mucus"]
    assert "API test gallery" in info
    for call in ((entry["id"], "renamed", "/gallery_rename"), (entry["id"], True, "/gallery_delete"),
                 (entry["id"], 1, "hacked", "/gallery_update_caption")):
        *args, api_name = call
        assert "password" in app_error(trainee.predict, "", *args, api_name=api_name).lower()
        assert "password" in app_error(trainee.predict, "guess", *args, api_name=api_name).lower()
    images, _, details = trainee.predict("API test gallery", api_name="/gallery_get")  # by name, unchanged
    assert len(images) == 3 and details["items"][0]["caption"] == "caption 1"

    # the instructor can edit, quiz from and delete it
    assert "updated" in instructor.predict(password, entry["id"], 2, "new caption",
                                           api_name="/gallery_update_caption")
    assert trainee.predict(entry["id"], api_name="/gallery_get")[2]["items"][1]["caption"] == "new caption"
    # issue 32: a scale given as text answers the library's message, not Gradio's preprocessing error
    from gradio_client import handle_file

    slide = running_app.home / "slide.png"
    Image.fromarray(np.full((56, 56, 3), 200, np.uint8)).save(slide)
    refused = app_error(instructor.predict, password, entry["id"], [handle_file(str(slide))], "Mucus", "abc", "",
                        False, api_name="/gallery_upload")
    assert "microns per pixel must be a number" in refused and "abc" in refused
    quiz = trainee.predict(entry["id"], api_name="/gallery_quiz")
    assert quiz_status(quiz)["total"] == 3 and quiz_status(quiz)["title"] == "API test gallery"
    assert "Renamed" in instructor.predict(password, entry["id"], "API gallery v2", api_name="/gallery_rename")[0]
    assert "confirm" in app_error(instructor.predict, password, entry["id"], False, api_name="/gallery_delete")
    assert "Deleted" in instructor.predict(password, entry["id"], True, api_name="/gallery_delete")[0]
    assert all(g["id"] != entry["id"] for g in trainee.predict(api_name="/gallery_list")[1])
    assert "no gallery" in app_error(trainee.predict, entry["id"], api_name="/gallery_get")
    images_dir = running_app.home / "images"  # image files, where the store keeps them outside the database
    saved_files = os.listdir(images_dir) if images_dir.is_dir() else []
    assert not any(name.endswith(".tmp") for name in saved_files)


def test_instructor_features_disabled_without_password(model_env, tmp_path):
    from conftest import start_app, stop_app

    app = start_app(tmp_path / "home", tmp_path / "app.log", model_env, password=None)
    try:
        client = app.client()
        assert "disabled" in client.predict("anything", api_name="/instructor_sign_in")
        assert "disabled" in app_error(client.predict, "anything", "x", "", None, api_name="/gallery_save")
        assert client.predict(api_name="/gallery_list")[1] == []
    finally:
        stop_app(app)
