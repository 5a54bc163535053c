"""What a new user hit (issue 15), each checked in headless Chromium against ``python app.py``.

Failed actions answer in a status line beside their button (no Gradio error overlay or toast over the controls),
views never go stale, the seed shown reproduces the image, the quiz review shows the right answer, user text is
inert, the About page loads every image. Screenshots go to ``/tmp/shots`` for a human look.
"""

from __future__ import annotations

import io
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS

SHOTS = Path("/tmp/shots")
XSS_NAME = "<img src=x onerror=alert(1)>"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")]


@pytest.fixture(scope="module")
def browser(running_app):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, running_app):
    """A fresh browser session (its own quiz and batch state) on the app."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.dialogs = []  # an alert() would mean user text ran as script
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(running_app.url)
    page.get_by_role("button", name="Generate verified image").wait_for()
    yield page
    context.close()


def assert_no_error_overlays(page) -> None:
    """Neither Gradio's red "Error" over output components nor an error toast."""
    assert page.locator(".toast-body").count() == 0
    assert page.get_by_text("Error", exact=True).count() == 0


def image_pixels(page, locator) -> np.ndarray:
    source = locator.get_attribute("src")
    with urllib.request.urlopen(page.url.rstrip("/") + "/" + source.lstrip("/") if source.startswith("/")
                                else source, timeout=60) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def sign_in(page, password: str) -> None:
    page.get_by_role("tab", name="Galleries").click()
    page.get_by_text("Instructor tools").click()
    page.get_by_label("Instructor password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for()


def save_gallery(page, name: str) -> None:
    """Generate a one-tissue batch, keep its first two images and save them under ``name``."""
    page.locator("#batch-tissues").get_by_label("Mucus").check()
    page.get_by_role("button", name="Generate batch").click()
    page.get_by_text(re.compile(r"\d+ of 2 images verified")).wait_for()
    for box in page.locator("table input[type=checkbox]").all()[:2]:
        box.check()
    page.get_by_label("New gallery name").fill(name)
    page.get_by_role("button", name="Save as new gallery").click()
    page.get_by_text(re.compile("Saved")).first.wait_for()


# -------------------------------------------------------------------------------------------- errors

def test_generate_with_nothing_chosen_answers_beside_the_button(page):
    page.get_by_role("button", name="Generate verified image").click()
    status = page.locator("#gen-status")
    status.get_by_text("Choose a tissue from the list or describe one").wait_for()
    page.screenshot(path=str(SHOTS / "generate_nothing_chosen.png"), full_page=True)
    assert_no_error_overlays(page)
    page.locator("#gen-tissue input").click(timeout=5_000)  # not covered: a click reaches the dropdown
    page.get_by_role("option", name="Mucus").click(timeout=5_000)


def test_delete_without_confirmation_keeps_the_checkbox_usable(page, running_app):
    sign_in(page, running_app.password)
    save_gallery(page, "To delete")
    page.get_by_role("button", name="Delete gallery").click()
    page.get_by_text("Tick 'Yes, delete this gallery' to confirm").wait_for()
    page.screenshot(path=str(SHOTS / "delete_unconfirmed.png"), full_page=True)
    assert_no_error_overlays(page)
    page.get_by_label("Yes, delete this gallery").check(timeout=5_000)
    page.get_by_role("button", name="Delete gallery").click()
    page.get_by_text("Deleted").first.wait_for()


# --------------------------------------------------------------------------------------- stale views

def test_a_new_description_replaces_the_old_result(page):
    page.get_by_label("…or describe what you want to see").fill("mucin pool")
    page.get_by_role("button", name="Generate verified image").click()
    page.locator("#gen-resolution").get_by_text("Understood").wait_for()
    page.locator("#gen-image img").first.wait_for()
    page.get_by_label("…or describe what you want to see").fill("a liver")
    page.get_by_role("button", name="Generate verified image").click()
    page.locator("#gen-resolution").get_by_text("Not understood").wait_for()
    page.screenshot(path=str(SHOTS / "generate_not_understood.png"), full_page=True)
    assert page.get_by_text("Understood", exact=False).filter(has_not_text="Not understood").count() == 0
    assert page.locator("#gen-image img").count() == 0  # the mucus image is gone with its evidence
    assert page.locator("#gen-summary").inner_text().strip() == ""


def test_renaming_and_adding_update_the_shown_gallery(page, running_app):
    sign_in(page, running_app.password)
    save_gallery(page, "Stale check")
    page.locator("#gallery-info").get_by_text("2 image(s)").wait_for()
    page.get_by_label("New name").fill("Fresh name")
    page.get_by_role("button", name="Rename").click()
    page.locator("#gallery-info").get_by_role("heading", name="Fresh name").wait_for()
    page.get_by_role("button", name="Add to the chosen gallery").click()
    page.locator("#gallery-info").get_by_text("4 image(s)").wait_for()
    assert page.locator("#gallery-view img").count() == 4
    page.screenshot(path=str(SHOTS / "gallery_renamed_and_added.png"), full_page=True)


# ------------------------------------------------------------------------------------------------ seed

def test_the_seed_shown_under_an_image_reproduces_it(page):
    page.locator("#gen-tissue input").click()
    page.get_by_role("option", name="Cancer-associated stroma").click()
    page.get_by_role("button", name="Generate verified image").click()
    summary = page.locator("#gen-summary")
    summary.get_by_text("Seed").wait_for()
    if "Not verified" in summary.inner_text():
        pytest.skip("these models verified nothing (tiny test models); test_verify.py covers the round trip")
    seed = re.search(r"Seed\s*\|?\s*(\d+)", summary.inner_text()).group(1)
    first = image_pixels(page, page.locator("#gen-image img").first)
    page.locator("#gen-seed textarea, #gen-seed input").first.fill(seed)
    page.get_by_role("button", name="Generate verified image").click()
    summary.get_by_text(re.compile(r"Attempts\s*\|?\s*1\b")).wait_for()
    page.locator("#gen-summary").get_by_text(seed).wait_for()
    assert np.array_equal(image_pixels(page, page.locator("#gen-image img").first), first)


# ------------------------------------------------------------------------------------------------ quiz

def test_quiz_review_shows_the_right_answer_and_hides_the_empty_question(page, model_env):
    from pathsynth.classifier import DEFAULT_CLASSIFIER_DIR, TissueClassifier
    from pathsynth.tissues import DISPLAY_NAMES

    grader = TissueClassifier.from_pretrained(model_env.get("PATHSYNTH_CLASSIFIER", DEFAULT_CLASSIFIER_DIR))
    page.get_by_role("tab", name="Quiz").click()
    page.get_by_label("number input for Questions").fill("2")
    page.get_by_label("number input for Questions").press("Enter")
    page.get_by_label("number input for Share of generated images").fill("0")
    page.get_by_label("number input for Share of generated images").press("Enter")
    page.get_by_role("button", name="Start a new quiz").click()
    missed = 0
    for number in (1, 2):
        page.get_by_role("heading", name=f"Question {number} of 2").wait_for()
        tile = tile_from_display_pixels(image_pixels(page, page.locator("#quiz-question img").first))
        right = int(grader.predict(tile)[0])
        wrong = DISPLAY_NAMES[(right + 1) % len(DISPLAY_NAMES)]  # miss on purpose: the review must show it
        page.locator("#quiz-choice").get_by_text(wrong, exact=True).click()
        page.get_by_role("button", name="Submit answer").click()
        verdict = page.locator("#quiz-feedback").get_by_text(re.compile("Not quite|Correct!")).first
        verdict.wait_for()
        missed += "Not quite" in verdict.inner_text()
        page.get_by_role("button", name=re.compile("Next question|See results")).click()
    page.get_by_text(re.compile(r"Quiz finished: \d / 2")).first.wait_for()
    page.screenshot(path=str(SHOTS / "quiz_review.png"), full_page=True)
    assert not page.locator("#quiz-choice").is_visible() and not page.locator("#quiz-question").is_visible()
    assert missed >= 1  # the grader predicts the answer key (the same classifier), so the misses happened
    captions = page.locator("#quiz-misses .caption-label")
    assert captions.count() == missed
    for caption in captions.all():
        assert "it is" in caption.inner_text()
        assert caption.evaluate("e => e.scrollWidth <= e.clientWidth + 1")  # nothing cut off


def tile_from_display_pixels(image: np.ndarray) -> np.ndarray:
    step = image.shape[0] // 28
    return image[step // 2::step, step // 2::step][:28, :28]


def test_a_gallery_quiz_shows_the_instructors_captions(page, running_app):
    instructor = running_app.client()  # the gallery is made through the API; the trainee quizzes in the browser
    _, table, _ = instructor.predict(running_app.password, ["Mucus"], 2, "5", api_name="/instructor_generate")
    rows = [[True, row[1], row[2], row[3], f"Look at the pale lakes {n + 1}"] for n, row in enumerate(table["data"])]
    instructor.predict(running_app.password, "Captioned", "", {"headers": table["headers"], "data": rows},
                       api_name="/gallery_save")
    page.get_by_role("tab", name="Galleries").click()
    page.get_by_role("button", name="Refresh list").click()
    page.get_by_label("Gallery", exact=True).click()
    page.get_by_role("option", name=re.compile("^Captioned")).click()
    page.locator("#gallery-info").get_by_text("Captioned").wait_for()
    page.get_by_role("button", name="Quiz me on this gallery").click()
    page.get_by_role("heading", name=re.compile("Question 1 of 2")).wait_for()
    page.locator("#quiz-choice").get_by_text("Mucus", exact=True).click()
    page.get_by_role("button", name="Submit answer").click()
    page.locator("#quiz-feedback").get_by_text(re.compile(r"Look at the pale lakes [12]")).wait_for()
    # a gallery's tiles come without a heatmap: the answer did not wait for one; the map follows it
    page.locator("#quiz-cam img").wait_for(timeout=180_000)
    page.screenshot(path=str(SHOTS / "gallery_quiz_caption.png"), full_page=True)


# ---------------------------------------------------------------------------------------- user text

def test_a_gallery_name_with_markup_is_shown_as_text_everywhere(page, running_app):
    sign_in(page, running_app.password)
    save_gallery(page, XSS_NAME)
    page.locator("#gallery-info").get_by_text(XSS_NAME).wait_for()
    page.get_by_text(f"Saved {XSS_NAME}").wait_for()  # the "Saved" message shows the name literally
    page.screenshot(path=str(SHOTS / "gallery_markup_name.png"), full_page=True)
    assert page.locator("img[src='x']").count() == 0 and page.locator("img[onerror]").count() == 0
    assert page.dialogs == []


# ---------------------------------------------------------------------------------------------- about

def test_about_page_is_plain_language_with_working_images(page):
    page.get_by_role("tab", name="About").click()
    about = page.locator("#about-trainees")
    about.get_by_text("4 µm").wait_for()
    assert "How each image is checked" in about.inner_text() and "Limits" in about.inner_text()
    assert not page.get_by_text("Classifier (ResNet-18)").is_visible()  # technical detail: one click away
    page.get_by_text("Technical details: model cards and evaluation plots").click()
    page.get_by_text("Classifier (ResNet-18)").wait_for()
    page.locator("#about-plots img").first.wait_for()
    time.sleep(2)  # let the thumbnails load
    page.screenshot(path=str(SHOTS / "about.png"), full_page=True)
    broken = page.evaluate("() => [...document.images].filter(i => i.complete && i.naturalWidth === 0)"
                           ".map(i => i.src)")
    assert broken == []
