"""What a newcomer hit as a learner (issue 32), in headless Chromium at phone (390 x 844) and desktop (1366) width:
every tab named on a phone, the quiz tile right above its answers, no label badge over a tile or the progress
chart, one learner name in every tab, the About tab counting guesses without a reload, a blank image number.

Screenshots go to ``test-artifacts/`` (gitignored) for a human look: ``learners_{phone,desktop}_*.png``.
"""

from __future__ import annotations

import re

import pytest

from sample_tiles import needs_real_data
from test_browser import CHROMIUM, browser  # noqa: F401  (browser: the shared fixture)
from test_browser_learning import assert_fits_the_width, new_page, start_quiz

VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1366, "height": 900}}
TABS = ("Generate", "Quiz", "My progress", "Real or synthetic?", "Galleries", "Assignments", "About")
NAME_BOXES = ("#quiz-learner", "#progress-name", "#challenge-learner", "#assignment-learner")

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")]


def name_box(page, box: str):
    return page.locator(f"{box} textarea, {box} input").first


def label_badges(page, selector: str) -> int:
    """How many of Gradio's label badges show inside ``selector`` (the badge sits over the block's corner)."""
    return page.locator(f"{selector} [data-testid='block-label']").evaluate_all(
        "badges => badges.filter(b => b.offsetParent !== null).length")


@pytest.mark.parametrize("device", ["phone", "desktop"])
def test_every_tab_shows_its_name_and_the_tile_sits_above_its_answers(browser, running_app, artifacts_dir,
                                                                    device):
    viewport = VIEWPORTS[device]
    page = new_page(browser, running_app.url, viewport)
    for name in TABS:  # all named and on screen: none hidden behind an unlabelled "•••"
        tab = page.get_by_role("tab", name=name, exact=True)
        assert tab.is_visible(), name
        box = tab.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], name
    assert not page.get_by_role("button", name="More tabs").is_visible()
    page.screenshot(path=str(artifacts_dir / f"learners_{device}_tabs.png"))

    start_quiz(page, 2)
    tile, choice, look = (page.locator(selector).first.bounding_box()
                          for selector in ("#quiz-question", "#quiz-choice", "#quiz-look"))
    if device == "phone":  # one column: tile, answers, then zoom and scale controls
        assert tile["y"] + tile["height"] <= choice["y"] <= look["y"], (tile, choice, look)
        assert look["y"] >= page.get_by_role("button", name="Submit answer").bounding_box()["y"]
    else:  # the answers beside the tile
        assert choice["x"] >= tile["x"] + tile["width"] and choice["y"] < tile["y"] + tile["height"]
    assert label_badges(page, "#quiz-question") == 0  # the heading above names the question
    assert_fits_the_width(page, viewport, "#quiz-question", "#quiz-choice", "#quiz-look")
    page.locator("#quiz-question").first.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / f"learners_{device}_quiz.png"), full_page=True)
    page.context.close()


def test_a_name_typed_in_any_tab_reaches_every_tab_at_once(browser, running_app, artifacts_dir):
    page = new_page(browser, running_app.url, VIEWPORTS["desktop"])
    page.wait_for_timeout(3000)  # the page's load event fills the boxes with the remembered name: let it land first
    for typed_in, name in (("#assignment-learner", "Ada Assign"), ("#quiz-learner", "Quinn Quiz"),
                           ("#challenge-learner", "Cleo Challenge")):
        tab = {"#assignment-learner": "Assignments", "#quiz-learner": "Quiz", "#challenge-learner":
               "Real or synthetic?"}[typed_in]
        page.get_by_role("tab", name=tab, exact=True).click()
        name_box(page, typed_in).fill(name)  # as pasted or autofilled: one input event, no typing
        for box, shown in (("#quiz-learner", "Quiz"), ("#progress-name", "My progress"),
                           ("#challenge-learner", "Real or synthetic?"), ("#assignment-learner", "Assignments")):
            page.get_by_role("tab", name=shown, exact=True).click()  # no reload in between
            page.wait_for_function("([selector, name]) => { const b = document.querySelector(selector);"
                                   " return b && b.value === name; }",
                                   arg=[f"{box} textarea, {box} input", name], timeout=30_000)
    page.reload()  # and the browser still remembers the last one everywhere
    page.get_by_role("button", name="Generate verified image").wait_for(state="attached")
    page.get_by_role("tab", name="Assignments", exact=True).click()
    page.wait_for_function("() => document.querySelector('#assignment-learner input, #assignment-learner textarea')"
                           ".value === 'Cleo Challenge'", timeout=30_000)
    page.context.close()


def votes_shown(page) -> int:
    text = page.locator("#about-votes").inner_text()
    found = re.search(r"From (\d+) guesses", text)
    assert found or "No votes yet" in text, text
    return int(found.group(1)) if found else 0


@needs_real_data  # the challenge draws real tiles half the time
def test_the_about_tab_counts_guesses_made_since_the_page_opened(browser, running_app, artifacts_dir):
    page = new_page(browser, running_app.url, VIEWPORTS["desktop"])
    page.get_by_role("tab", name="About", exact=True).click()
    page.locator("#about-votes").get_by_text("What trainees think").wait_for()
    before = votes_shown(page)
    page.get_by_role("tab", name="Real or synthetic?", exact=True).click()
    name_box(page, "#challenge-learner").fill("Vera Voter")
    for guess in ("Real", "Synthetic"):
        page.get_by_role("button", name="Show a tile").click()
        page.wait_for_function("() => !document.querySelector('#challenge-real').disabled")
        assert label_badges(page, "#challenge-tile") == 0  # the prompt above names the tile
        page.locator(f"#challenge-{guess.lower()}").click()
        page.locator("#challenge-feedback").get_by_text(re.compile(r"Right!|Not this time")).first.wait_for()
    page.screenshot(path=str(artifacts_dir / "learners_desktop_challenge.png"), full_page=True)
    page.get_by_role("tab", name="About", exact=True).click()  # no reload: the tab reads the votes as it opens
    page.locator("#about-votes").get_by_text(re.compile(rf"From {before + 2} guesses")).wait_for()
    page.screenshot(path=str(artifacts_dir / "learners_desktop_about.png"), full_page=True)
    page.context.close()


@needs_real_data  # a one-question quiz of real tiles gives the chart something to show
def test_the_progress_chart_has_no_badge_over_its_title(browser, running_app, artifacts_dir):
    page = new_page(browser, running_app.url, VIEWPORTS["desktop"])
    page.get_by_role("tab", name="Quiz", exact=True).click()
    name_box(page, "#quiz-learner").fill("Chart Learner")
    start_quiz(page, 1)
    page.locator("#quiz-choice").get_by_text("Mucus", exact=True).click()
    page.get_by_role("button", name="Submit answer").click()
    page.locator("#quiz-feedback").get_by_text(re.compile(r"Correct|Not quite")).first.wait_for()
    page.get_by_role("tab", name="My progress", exact=True).click()
    page.get_by_role("button", name="Show my progress").click()
    page.locator("#progress-summary").get_by_text("Chart Learner").first.wait_for()
    page.locator("#progress-plot img").first.wait_for()  # the matplotlib figure
    assert label_badges(page, "#progress-plot") == 0
    page.locator("#progress-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "learners_desktop_progress.png"), full_page=True)
    page.context.close()


def test_the_image_number_is_blank_until_an_image_is_clicked(browser, running_app, artifacts_dir):
    page = new_page(browser, running_app.url, VIEWPORTS["desktop"])
    page.get_by_role("tab", name="Galleries", exact=True).click()
    page.get_by_text("Instructor tools").click()
    page.get_by_label("Instructor password").fill(running_app.password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for()
    number = name_box(page, "#gallery-image-number")
    number.wait_for()
    assert number.input_value() == ""  # not 0, which reads as a chosen image
    number.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "learners_desktop_galleries.png"), full_page=True)
    page.context.close()
