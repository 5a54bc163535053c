"""Learning that sticks, in headless Chromium at phone (390 x 844) and desktop width: a quiz question with its
zoom / enlargement / scale-bar controls, a miss shown beside real examples of both tissues, the review, an exam
that the server closes when its time runs out, and the learner the browser remembers across reloads (in the Quiz,
My progress and Real or synthetic? tabs).

Screenshots go to ``test-artifacts/`` (gitignored) for a human look: ``learning_{phone,desktop}_*.png``.
"""

from __future__ import annotations

import io
import re
import urllib.request

import numpy as np
import pytest
from PIL import Image

from sample_tiles import needs_real_data, real_data_file
from test_browser import CHROMIUM, TIMEOUT_MS, browser  # noqa: F401  (browser: the shared fixture)

VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1400, "height": 1000}}

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")]


@pytest.fixture(scope="module")
def grader(model_env):
    """The classifier the app grades with: its prediction on a tile is the quiz's answer key."""
    from pathsynth.classifier import DEFAULT_CLASSIFIER_DIR, TissueClassifier

    return TissueClassifier.from_pretrained(model_env.get("PATHSYNTH_CLASSIFIER", DEFAULT_CLASSIFIER_DIR))


def new_page(browser, url: str, viewport: dict, context=None):
    context = context or browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(url)
    page.get_by_role("button", name="Generate verified image").wait_for(state="attached")
    return page


def start_quiz(page, questions: int, mode: str = "practice", minutes: str | None = None) -> None:
    page.get_by_role("tab", name="Quiz").click()
    page.get_by_label("number input for Questions").fill(str(questions))
    page.get_by_label("number input for Questions").press("Enter")
    page.get_by_label("number input for Share of generated images").fill("0")
    page.get_by_label("number input for Share of generated images").press("Enter")
    if mode != "practice":
        page.locator("#quiz-mode").get_by_text(mode, exact=True).click()
    if minutes is not None:
        box = page.locator("#quiz-minutes input")
        box.fill(minutes)
        box.press("Tab")
    page.get_by_role("button", name="Start a new quiz").click()
    page.get_by_role("heading", name=f"Question 1 of {questions}").wait_for()


def shown_pixels(page, locator) -> np.ndarray:
    source = locator.get_attribute("src")
    url = page.url.rstrip("/") + "/" + source.lstrip("/") if source.startswith("/") else source
    with urllib.request.urlopen(url, timeout=60) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def answer_key(page, grader) -> int:
    """The answer to the question on screen, as the app's classifier sees the tile (zoom 1, pixel-exact)."""
    image = shown_pixels(page, page.locator("#quiz-question img").first)
    step = image.shape[0] // 28  # 12: the scale bar strip below is shorter than one tile pixel's block
    return int(grader.predict(image[step // 2::step, step // 2::step][:28, :28])[0])


def assert_fits_the_width(page, viewport: dict, *selectors: str) -> None:
    """Nothing wider than the screen (no sideways scrolling) and each element fully inside it."""
    assert page.evaluate("() => document.documentElement.scrollWidth") <= viewport["width"] + 1
    for selector in selectors:
        box = page.locator(selector).first.bounding_box()
        assert box is not None and box["x"] >= -1 and box["x"] + box["width"] <= viewport["width"] + 1, selector


def overlap(a: dict, b: dict) -> bool:
    """Whether two bounding boxes share more than a pixel's sliver."""
    return (min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"]) > 1
            and min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"]) > 1)


def assert_review_is_readable(page, viewport: dict, gallery: str = "#quiz-misses") -> None:
    """Each missed question's caption lies below its picture, whole (no text clipped) and inside the screen, and no
    picture or caption overlaps another, nor the gallery's label (``gallery``: the review's selector)."""
    page.wait_for_function(f"() => [...document.querySelectorAll('{gallery} .thumbnail-lg img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    items = page.locator(f"{gallery} .thumbnail-lg")
    boxes = [page.locator(f"{gallery} label").first.bounding_box()]
    for k in range(items.count()):
        picture = items.nth(k).locator("img").first.bounding_box()
        caption = items.nth(k).locator(".caption-label")
        text = caption.bounding_box()
        assert text["y"] >= picture["y"] + picture["height"] - 1, (k, picture, text)  # below, not over, the picture
        assert text["x"] >= -1 and text["x"] + text["width"] <= viewport["width"] + 1, (k, text)
        assert caption.evaluate("c => c.scrollWidth <= c.clientWidth + 1 && c.scrollHeight <= c.clientHeight + 1"
                                " && getComputedStyle(c).opacity === '1'"), k  # not cut off, not faded
        assert picture["height"] > 100 and picture["width"] > 100, (k, picture)  # a picture, not a sliver
        boxes += [picture, text]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not overlap(a, b), (a, b)


def assert_names_nothing(page, grader_names) -> None:
    """Before an answer, the question image's file name and alt text name no tissue."""
    image = page.locator("#quiz-question img").first
    name = (image.get_attribute("src") or "").rsplit("/", 1)[-1].lower()
    alt = (image.get_attribute("alt") or "").lower()
    assert not any(word.lower() in name or word.lower() in alt for word in grader_names), (name, alt)


@needs_real_data  # real examples of both tissues: without data there are none (test_offline)
@pytest.mark.parametrize("device", ["phone", "desktop"])
def test_a_missed_question_beside_real_examples_at_phone_and_desktop_width(browser, running_app, grader,
                                                                          artifacts_dir, device):
    from pathsynth.tissues import ABBREVIATIONS, DISPLAY_NAMES

    viewport = VIEWPORTS[device]
    page = new_page(browser, running_app.url, viewport)
    start_quiz(page, 2)
    assert_names_nothing(page, [*DISPLAY_NAMES, *ABBREVIATIONS])
    page.screenshot(path=str(artifacts_dir / f"learning_{device}_question.png"), full_page=True)
    assert_fits_the_width(page, viewport, "#quiz-question", "#quiz-choice", "#quiz-look", "#quiz-status")

    right = answer_key(page, grader)
    before = page.locator("#quiz-question img").first.get_attribute("src")
    page.locator("#quiz-zoom").get_by_text("2×", exact=True).click()  # the question is shown again, zoomed
    page.wait_for_function("src => { const i = document.querySelector('#quiz-question img');"
                           " return i && i.getAttribute('src') !== src; }", arg=before)
    wrong = DISPLAY_NAMES[(right + 1) % len(DISPLAY_NAMES)]
    page.locator("#quiz-choice").get_by_text(wrong, exact=True).click()
    page.get_by_role("button", name="Submit answer").click()
    page.locator("#quiz-feedback").get_by_text("Not quite").first.wait_for()
    pair = page.locator("#quiz-pair")
    pair.locator("img").nth(1).wait_for()
    labels = pair.inner_text()
    assert f"real {DISPLAY_NAMES[right]} (the right answer)" in labels and f"real {wrong} (your answer)" in labels
    question = shown_pixels(page, page.locator("#quiz-question img").first)
    example = shown_pixels(page, page.locator("#quiz-real-right img").first)
    assert question.shape == example.shape == (360, 336, 3)  # same size, same zoom, same scale bar strip
    for shown in (question, example):  # zoom 2, pixel-exact: each tile pixel is a flat 24 x 24 block
        assert len(np.unique(shown[24:48, 24:48].reshape(-1, 3), axis=0)) == 1
    pair.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / f"learning_{device}_feedback.png"), full_page=True)
    assert_fits_the_width(page, viewport, "#quiz-feedback", "#quiz-real-right", "#quiz-real-chosen")

    page.locator("#quiz-zoom").get_by_text("1×", exact=True).click()  # the next tile whole, to read its answer
    page.get_by_role("button", name="Next question").click()
    page.get_by_role("heading", name="Question 2 of 2").wait_for()
    assert not pair.is_visible()  # the examples belong to the previous question
    right = answer_key(page, grader)
    page.locator("#quiz-choice").get_by_text(DISPLAY_NAMES[(right + 2) % 9], exact=True).click()
    page.get_by_role("button", name="Submit answer").click()
    page.get_by_role("button", name="See results").click()
    page.get_by_text(re.compile(r"Quiz finished: 0 / 2")).first.wait_for()
    misses = page.locator("#quiz-misses .caption-label")
    assert misses.count() == 2 and "you said" in misses.first.inner_text()
    assert_fits_the_width(page, viewport, "#quiz-summary", "#quiz-misses")
    assert_review_is_readable(page, viewport)
    page.screenshot(path=str(artifacts_dir / f"learning_{device}_review.png"), full_page=True)
    assert page.dialogs == []
    page.context.close()


def test_an_exam_shows_no_map_panel_and_its_score_line_follows_the_header(browser, running_app, artifacts_dir):
    """Issue 32: an exam kept an empty occlusion-map panel on screen, and after answering question 1 the score line
    said "question 2 of 2" under "Question 1 of 2"; the summary says how the learner did on real tiles apart."""
    page = new_page(browser, running_app.url, VIEWPORTS["desktop"])
    start_quiz(page, 2, mode="exam")  # share of generated images 0: real tiles only
    cam = page.locator("#quiz-cam")
    assert cam.count() == 0 or not cam.first.is_visible()
    answers = page.locator("#quiz-choice").bounding_box()  # the question and the answers share the width:
    assert answers["x"] + answers["width"] > 0.8 * VIEWPORTS["desktop"]["width"], answers  # no empty map column
    page.screenshot(path=str(artifacts_dir / "learning_desktop_exam_question.png"), full_page=True)
    for number in (1, 2):
        page.get_by_role("heading", name=f"Question {number} of 2").wait_for()
        page.locator("#quiz-choice").get_by_text("Debris", exact=True).click()
        page.get_by_role("button", name="Submit answer").click()
        page.locator("#quiz-feedback").get_by_text("Answer saved").wait_for()
        score = page.locator("#quiz-score").inner_text()
        position = "question 1 of 2 answered" if number == 1 else "all 2 questions answered"
        assert position in score and f"question {number + 1}" not in score, score
        assert page.get_by_role("heading", name=f"Question {number} of 2").is_visible()  # the header agrees
        assert cam.count() == 0 or not cam.first.is_visible()
        page.get_by_role("button", name="See results" if number == 2 else "Next question").click()
    summary = page.locator("#quiz-summary")
    summary.get_by_text("Quiz finished").wait_for()
    assert re.search(r"Real tiles: [0-2] of 2 right\.", summary.inner_text()), summary.inner_text()
    page.screenshot(path=str(artifacts_dir / "learning_desktop_exam_summary.png"), full_page=True)
    assert page.dialogs == []
    page.context.close()


def test_the_server_closes_a_timed_exam_and_shows_the_results(browser, running_app, artifacts_dir):
    page = new_page(browser, running_app.url, VIEWPORTS["phone"])
    start_quiz(page, 3, mode="exam", minutes="0.1")  # six seconds
    page.locator("#quiz-clock").get_by_text("left").wait_for()
    page.locator("#quiz-choice").get_by_text("Mucus", exact=True).click()
    page.get_by_role("button", name="Submit answer").click()
    feedback = page.locator("#quiz-feedback")
    feedback.get_by_text(re.compile("Answer saved|Time is up")).first.wait_for()
    assert "Not quite" not in feedback.inner_text() and "Correct" not in feedback.inner_text()  # exam: no verdict
    timed_out = re.compile(r"Time ran out: [23] unanswered question\(s\) count as missed")
    page.get_by_text(timed_out).wait_for(timeout=60_000)
    page.screenshot(path=str(artifacts_dir / "learning_phone_exam_timeout.png"), full_page=True)
    assert not page.locator("#quiz-choice").is_visible()
    page.context.close()


def test_the_browser_remembers_the_learner_across_reloads(browser, running_app, artifacts_dir):
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = new_page(browser, running_app.url, VIEWPORTS["desktop"], context)
    # anonymous: no name typed, the answer is saved for this browser's own id
    start_quiz(page, 1)
    page.locator("#quiz-choice").get_by_text("Mucus", exact=True).click()
    page.get_by_role("button", name="Submit answer").click()
    page.locator("#quiz-feedback").get_by_text(re.compile("Correct!|Not quite")).first.wait_for()
    page.reload()
    page.get_by_role("tab", name="My progress").click()
    page.get_by_role("button", name="Show my progress").click()
    anonymous = re.compile(r"Anonymous learner \(this browser, …\w{4}\): [01] / 1")
    page.locator("#progress-summary").get_by_text(anonymous).wait_for()
    # a typed name is remembered too, and shows in both name boxes after a reload
    page.get_by_role("tab", name="Quiz").click()
    page.locator("#quiz-learner textarea, #quiz-learner input").first.press_sequentially("Reload Trainee")
    page.wait_for_function("() => { const b = document.querySelector('#progress-name textarea, #progress-name input');"
                           " return b && b.value === 'Reload Trainee'; }")  # typed in one box, copied to the other
    page.wait_for_timeout(1500)  # the name reaches the browser's storage
    page.reload()
    page.get_by_role("tab", name="Quiz").click()
    name_box = page.locator("#quiz-learner textarea, #quiz-learner input").first
    page.wait_for_function("() => { const b = document.querySelector('#quiz-learner textarea, #quiz-learner input');"
                           " return b && b.value === 'Reload Trainee'; }")
    page.get_by_role("tab", name="My progress").click()
    assert page.locator("#progress-name textarea, #progress-name input").first.input_value() == "Reload Trainee"
    page.screenshot(path=str(artifacts_dir / "learning_desktop_remembered.png"), full_page=True)
    other = new_page(browser, running_app.url, VIEWPORTS["desktop"])  # another browser knows nothing of it
    other.get_by_role("tab", name="Quiz").click()
    assert other.locator("#quiz-learner textarea, #quiz-learner input").first.input_value() == ""
    assert name_box.input_value() == "Reload Trainee"
    other.context.close()
    if real_data_file() is not None:  # the challenge shows real tiles half the time: off without data
        guess_and_flag_under_the_remembered_name(page, artifacts_dir)
    context.close()


def guess_and_flag_under_the_remembered_name(page, artifacts_dir) -> None:
    """After the reload, Real or synthetic? has the remembered name filled in: the guess counts and the flag is
    accepted without typing it again; the box stays editable, and a new name there reaches the Quiz tab."""
    page.get_by_role("tab", name="Real or synthetic?").click()
    box = page.locator("#challenge-learner textarea, #challenge-learner input").first
    assert box.input_value() == "Reload Trainee" and box.is_editable()
    page.get_by_role("button", name="Show a tile").click()
    page.wait_for_function("() => !document.querySelector('#challenge-real').disabled")
    page.locator("#challenge-real").click()
    feedback = page.locator("#challenge-feedback")
    feedback.get_by_text(re.compile(r"Right!|Not this time")).first.wait_for()
    assert "not counted" not in feedback.inner_text()
    page.locator("#challenge-flag-note textarea").fill("too blurry to tell")
    page.locator("#challenge-flag").click()
    page.locator("#challenge-flag-status").get_by_text("Flagged for the instructors").wait_for()
    page.screenshot(path=str(artifacts_dir / "learning_desktop_challenge_remembered.png"), full_page=True)
    box.fill("")
    box.press_sequentially("Renamed Trainee")  # typed: Gradio's input event (what copies a name) ignores fill()
    page.get_by_role("tab", name="Quiz").click()
    page.wait_for_function("() => { const b = document.querySelector('#quiz-learner textarea, #quiz-learner input');"
                           " return b && b.value === 'Renamed Trainee'; }")


def test_an_exam_goes_on_after_the_server_is_killed_and_the_page_reloaded(browser, model_env, tmp_path,
                                                                          artifacts_dir):
    """SIGKILL the app mid-exam; restarted (same address), the reloaded page shows the exam at the same question,
    says so, keeps the answers given so far and the time left; phone and desktop width."""
    import signal
    import time

    from conftest import start_app, stop_app

    home, log = tmp_path / "home", tmp_path / "app.log"
    app = start_app(home, log, model_env)
    port = int(app.url.rstrip("/").rsplit(":", 1)[1])
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    try:
        page = new_page(browser, app.url, VIEWPORTS["desktop"], context)
        start_quiz(page, 3, mode="exam", minutes="10")  # anonymous: kept for this browser's own id
        page.locator("#quiz-choice").get_by_text("Mucus", exact=True).click()
        page.get_by_role("button", name="Submit answer").click()
        page.locator("#quiz-feedback").get_by_text("Answer saved").wait_for()
        page.get_by_role("button", name="Next question").click()
        page.get_by_role("heading", name="Question 2 of 3").wait_for()
        app.process.send_signal(signal.SIGKILL)
        app.process.wait(timeout=30)
        time.sleep(3)
    finally:
        stop_app(app)
    app = start_app(home, tmp_path / "again.log", model_env, port=port)
    try:
        page.reload()
        page.get_by_role("tab", name="Quiz").click()
        page.get_by_role("heading", name="Question 2 of 3").wait_for()
        status = page.locator("#quiz-status")
        status.get_by_text(re.compile(r"Welcome back: your exam goes on where you left it \(1 of 3 answered\)")).wait_for()
        assert re.search(r"(9|10):\d\d left", status.inner_text())  # the clock stopped while the server was away
        page.screenshot(path=str(artifacts_dir / "learning_desktop_exam_resumed.png"), full_page=True)
        page.set_viewport_size(VIEWPORTS["phone"])
        assert_fits_the_width(page, VIEWPORTS["phone"], "#quiz-status", "#quiz-question")
        page.screenshot(path=str(artifacts_dir / "learning_phone_exam_resumed.png"), full_page=True)
        for _ in range(2):
            page.locator("#quiz-choice").get_by_text("Debris", exact=True).click()
            page.get_by_role("button", name="Submit answer").click()
            page.locator("#quiz-feedback").get_by_text("Answer saved").wait_for()
            page.get_by_role("button", name=re.compile("Next question|See results")).click()
        page.get_by_text(re.compile(r"Quiz finished: \d / 3")).wait_for()
        assert page.dialogs == []
    finally:
        context.close()
        stop_app(app)
