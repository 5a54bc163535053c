"""An assignment from start to finish in headless Chromium (issue 17): an instructor signs in, creates one and reads
its share code; a learner in a fresh browser (no instructor session) takes it by that code, missing one question on
purpose, and sees their own result; the instructor's dashboard shows the learner and that score; the CSV downloaded
through the page has one row per learner x question with the answers given. A learner sees only the "open by code"
part (the create form and the class's results show after an instructor signs in, and hide on sign-out) and can
reach neither the dashboard nor the export through the API either. A gallery saved in the Galleries tab appears in
the create form's "From gallery" list (labelled whose it is) without a reload, and a learner can open an assignment
from the Quiz tab's "Have an assignment code?" box too.

Screenshots go to ``test-artifacts/`` (gitignored) for a human look: ``assignment_*.png``.
"""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from playwright.sync_api import expect

from sample_tiles import needs_real_data
from test_browser import CHROMIUM, TIMEOUT_MS, browser  # noqa: F401  (browser: the shared fixture)
from test_browser_learning import VIEWPORTS as VIEWPORTS_BY_DEVICE
from test_browser_learning import assert_fits_the_width, assert_review_is_readable, shown_pixels

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")]

VIEWPORT = {"width": 1400, "height": 1000}
TITLE = "Browser assignment: <b>fat</b> & mucus"  # typed by a person: shown as text, never as markup
TISSUES = ["Adipose tissue", "Mucus"]  # one verified image of each: two questions
WRONG = "Debris"  # not among TISSUES: answering it is a sure miss, whatever the shuffled order
LEARNER = "Ada Learner"
QUIZ_LEARNER = "Quinn Quiztab"  # opens the assignment from the Quiz tab, answers nothing (the dashboard counts answers)
SEED = "2024"
GALLERY = "Browser assignment gallery"  # see save_gallery
GALLERY_LABEL = f"{GALLERY} (shared, yours; {len(TISSUES)} images)"  # as the create form lists it
GENERATE_LABEL = "None: new verified images of the tissues ticked"


def open_assignments(browser, url: str):
    """A fresh browser context (its own session: nobody signed in) on the Assignments tab; returns the page and the
    tab's panel (other tabs hold look-alike fields, so every lookup stays inside it)."""
    page = browser.new_context(viewport=VIEWPORT, accept_downloads=True).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(url)
    page.get_by_role("button", name="Generate verified image").wait_for(state="attached")
    page.get_by_role("tab", name="Assignments").click()
    panel = page.locator(".tabitem:visible")
    panel.get_by_role("button", name="Open assignment").wait_for()
    return page, panel


INSTRUCTOR_CONTROLS = ("Create assignment", "Show results", "Download CSV", "List my assignments")


def open_instructor_section(panel) -> None:
    """Unfold the instructors' accordion: its sign-in row shows to everyone."""
    panel.get_by_text("Instructors: create assignments and see class results").click()
    panel.get_by_role("button", name="Sign in", exact=True).wait_for()


def sign_in(page, panel, password: str) -> None:
    open_instructor_section(panel)
    panel.get_by_label("Instructor password").fill(password)
    panel.get_by_role("button", name="Sign in", exact=True).click()
    page.locator("#assignment-sign-in-status").get_by_text("Signed in as").wait_for()
    panel.get_by_role("button", name="Create assignment", exact=True).wait_for()


def expect_no_instructor_controls(panel) -> None:
    """Neither the create form nor the class's results (their buttons and fields) are on the learner's screen."""
    for name in INSTRUCTOR_CONTROLS:
        expect(panel.get_by_role("button", name=name, exact=True)).to_be_hidden()
    expect(panel.get_by_label("Title (blank: the gallery's name)")).to_be_hidden()
    expect(panel.locator("#assignment-instructor-tools")).to_be_hidden()


def table_rows(locator) -> list[list[str]]:
    """The cells of a Gradio dataframe's rows, as shown (its grid: the header row has no grid cells)."""
    return locator.evaluate("el => [...el.querySelectorAll('[role=grid] [role=row]')]"
                            ".map(row => [...row.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()))"
                            ".filter(cells => cells.length)")


@pytest.fixture(scope="module")
def instructor(browser, running_app):
    """The instructor's page, signed in on the Assignments tab (its create form and class results showing)."""
    page, panel = open_assignments(browser, running_app.url)
    sign_in(page, panel, running_app.password)
    yield page, panel
    page.context.close()


def set_images_per_tissue(panel, count: int) -> None:
    box = panel.get_by_label("number input for Images per tissue")
    box.fill(str(count))
    box.press("Enter")


def save_gallery(page, password: str) -> None:
    """A gallery ``GALLERY`` of one image of each of ``TISSUES``, kept whatever the classifier says, made through
    the Galleries tab: the tiny test models verify nothing, so no assignment can be generated with them."""
    page.get_by_role("tab", name="Galleries").click()
    panel = page.locator(".tabitem:visible")
    panel.get_by_text("Instructor tools").click()
    panel.get_by_label("Instructor password").fill(password)
    panel.get_by_role("button", name="Sign in").click()
    panel.get_by_text("Signed in as").wait_for()
    for tissue in TISSUES:
        page.locator("#batch-tissues").get_by_label(tissue, exact=True).check()
    set_images_per_tissue(panel, 1)
    panel.get_by_role("button", name="Generate batch").click()
    panel.get_by_text(re.compile(fr"\d+ of {len(TISSUES)} images verified")).wait_for()
    for box in panel.locator("table input[type=checkbox]").all():
        box.check()
    panel.get_by_label("New gallery name").fill(GALLERY)
    panel.get_by_role("button", name="Save as new gallery").click()
    page.locator("#gallery-info").get_by_text(GALLERY).wait_for()
    page.get_by_role("tab", name="Assignments").click()


@pytest.fixture(scope="module")
def saved_gallery(running_app, instructor) -> str:
    """``GALLERY``, saved once through the Galleries tab of the instructor's page (which is back on Assignments)."""
    save_gallery(instructor[0], running_app.password)
    return GALLERY


def gallery_field(panel):
    return panel.locator("#assignment-gallery").get_by_role("combobox")


def open_gallery_list(page, panel) -> list[str]:
    """Unfold the create form's "From gallery" list; returns its entries as shown."""
    gallery_field(panel).blur()  # it unfolds on focus: a field still focused from before would stay folded
    gallery_field(panel).click()
    options = page.get_by_role("option")
    options.first.wait_for()
    return [text.replace("✓", "").strip() for text in options.all_inner_texts()]


def pick_gallery(page, panel, label: str) -> None:
    """Choose ``label`` in the "From gallery" list the way a person does: unfold it, click the entry."""
    open_gallery_list(page, panel)
    page.get_by_role("option").filter(has_text=label).click()
    expect(gallery_field(panel)).to_have_value(label)


@pytest.fixture(scope="module")
def assignment(running_app, instructor, saved_gallery, artifacts_dir) -> dict:
    """Created through the page from one verified image of each of ``TISSUES`` (tiny models: from the gallery of
    them, picked in the list); its share code read off the page."""
    page, panel = instructor
    if running_app.models == "tiny":
        pick_gallery(page, panel, GALLERY_LABEL)
    else:
        pick_gallery(page, panel, GENERATE_LABEL)
        for tissue in TISSUES:
            panel.get_by_role("checkbox", name=tissue, exact=True).check()
        set_images_per_tissue(panel, 1)
        panel.get_by_label("Seed (optional)").fill(SEED)
    panel.get_by_label("Title (blank: the gallery's name)").fill(TITLE)
    panel.get_by_role("button", name="Create assignment", exact=True).click()
    created = page.locator("#assignment-created")
    created.get_by_text(re.compile(r"Share code|⚠")).first.wait_for()
    text = created.inner_text()
    page.screenshot(path=str(artifacts_dir / "assignment_instructor_create.png"), full_page=True)
    found = re.search(r"\(practice, (\d+) questions.*\)\. Share code: ([A-Z0-9]{6})$", text.strip())
    assert found, text
    assert TITLE in text and created.locator("b", has_text="fat").count() == 0  # the title as text
    return {"code": found.group(2), "questions": int(found.group(1))}


def take_assignment(page, panel, code: str, artifacts_dir) -> list[dict]:
    """Answer every question: the first with ``WRONG`` (a sure miss), then each with a tissue not yet revealed as
    an earlier answer (with two tissues, the second is then sure to be right). Returns what was chosen and the
    verdict shown for each."""
    panel.locator("#assignment-code").get_by_role("textbox").fill(f" {code.lower()[:3]}-{code.lower()[3:]} ")
    panel.get_by_label("Your name").fill(LEARNER)
    question_area = page.locator("#assignment-question, #assignment-choice")
    assert question_area.count() == 0 or not any(q.is_visible() for q in question_area.all())  # nothing to answer
    panel.get_by_role("button", name="Open assignment").click()
    page.locator("#assignment-status").get_by_text(re.compile(r"Opened .* \(\d+ questions\)")).wait_for()
    remaining, given = list(TISSUES), []
    while panel.get_by_role("heading", name=re.compile(r"question \d+ of \d+")).count():
        heading = panel.get_by_role("heading", name=re.compile(r"question \d+ of \d+")).inner_text()
        number, total = map(int, re.search(r"question (\d+) of (\d+)", heading).groups())
        assert number == len(given) + 1
        if number == 1:
            assert TITLE in heading  # the title as typed
            page.locator("#assignment-question img").first.wait_for()
            page.screenshot(path=str(artifacts_dir / "assignment_learner_question.png"), full_page=True)
        chosen = WRONG if number == 1 else remaining[0]
        page.locator("#assignment-choice").get_by_text(chosen, exact=True).click()
        panel.get_by_role("button", name="Submit answer").click()
        feedback = page.locator("#assignment-feedback")
        feedback.get_by_text(re.compile(r"Correct!|Not quite")).first.wait_for()
        right = re.search(r"The answer is (.+?)\.\n", feedback.inner_text() + "\n").group(1)
        given.append({"question": number, "chosen": chosen, "right": right, "correct": chosen == right})
        assert ("Correct!" in feedback.inner_text()) == (chosen == right)
        if right in remaining:
            remaining.remove(right)
        if number == 1:
            page.screenshot(path=str(artifacts_dir / "assignment_learner_feedback.png"), full_page=True)
        panel.get_by_role("button", name="See my results" if number == total else "Next question").click()
        if number < total:
            panel.get_by_role("heading", name=re.compile(fr"question {number + 1} of {total}")).wait_for()
        else:
            page.locator("#assignment-summary").get_by_text(re.compile(r"\d+ / \d+")).wait_for()
    question_area.first.wait_for(state="hidden")  # the results, without an empty picture and answer choices
    assert not any(q.is_visible() for q in question_area.all())
    return given


def test_the_whole_assignment_flow(browser, running_app, instructor, assignment, artifacts_dir, tmp_path):
    code, total = assignment["code"], assignment["questions"]
    assert total == len(TISSUES)  # one question per tissue: none left out as unverified

    learner, panel = open_assignments(browser, running_app.url)  # no instructor session in this context
    given = take_assignment(learner, panel, code, artifacts_dir)
    correct = sum(answer["correct"] for answer in given)
    assert len(given) == total and sorted(a["right"] for a in given) == sorted(TISSUES)
    assert [a["correct"] for a in given] == [False, True]  # one missed on purpose, one right by elimination
    summary = learner.locator("#assignment-summary").inner_text()
    assert f"{correct} / {total} ({correct / total:.0%})" in summary and "<b>fat</b>" in summary
    learner.locator("#assignment-answers [role=gridcell]").get_by_text(WRONG, exact=True).wait_for()
    mine = table_rows(learner.locator("#assignment-answers"))
    assert [row[:4] for row in mine] == [[str(a["question"]), a["right"], a["chosen"], "yes" if a["correct"] else "no"]
                                         for a in given]
    learner.screenshot(path=str(artifacts_dir / "assignment_learner_result.png"), full_page=True)
    open_instructor_section(panel)
    expect_no_instructor_controls(panel)  # the class's results are not the learner's to see
    assert learner.dialogs == []
    learner.context.close()

    page, tools = instructor
    learners = show_dashboard(page, tools, code)
    assert learners == [[LEARNER, f"local:{LEARNER.lower()}", str(correct), str(total), str(total),
                         f"{correct / total:.0%}", "no"]], learners  # "Late": no, not 0
    missed = page.locator("#assignment-missed")
    caption = missed.get_by_text(f"Q1: {given[0]['right']}, missed by 1 of 1")  # the only miss, readable
    caption.wait_for()
    box, frame = caption.bounding_box(), missed.bounding_box()
    assert box["width"] > 0 and frame["y"] <= box["y"] and box["y"] + box["height"] <= frame["y"] + frame["height"]
    tile = missed.locator("img").first.bounding_box()
    assert tile["width"] < frame["width"] / 3 and abs(tile["width"] - tile["height"]) < 2  # a whole tile, not a crop
    page.screenshot(path=str(artifacts_dir / "assignment_dashboard.png"), full_page=True)

    rows = download_csv(page, tools, code, tmp_path)
    assert len(rows) == 1 * total  # one learner x every question
    assert [(r["assignment"], r["title"], r["learner"], r["question"], r["answer_key"], r["chosen"], r["correct"],
             r["late"]) for r in rows] == [
        (code, TITLE, LEARNER, str(a["question"]), a["right"], a["chosen"], "yes" if a["correct"] else "no", "no")
        for a in given]
    assert page.dialogs == []



@needs_real_data  # the review's real examples: without data there are none
@pytest.mark.parametrize("device", ["phone", "desktop"])
def test_a_learner_reviews_each_miss_beside_real_examples(browser, running_app, assignment, artifacts_dir, device):
    """Issue 32: an assignment's questions carry the quiz's view controls and scale bar, and its results end with
    the quiz's review: each missed tile above real examples of the right tissue and of the one chosen, at one
    scale, captioned below (never cut off), at phone and desktop width."""
    viewport = VIEWPORTS_BY_DEVICE[device]
    page, panel = open_assignments(browser, running_app.url)
    page.set_viewport_size(viewport)  # after choosing the tab (at phone width some tabs fold into a menu)
    panel.locator("#assignment-code").get_by_role("textbox").fill(assignment["code"])
    panel.get_by_label("Your name").fill(f"Rev {device}")
    panel.get_by_role("button", name="Open assignment").click()
    image = page.locator("#assignment-question img").first
    image.wait_for()
    assert shown_pixels(page, image).shape == (360, 336, 3)  # the tile with its scale bar strip
    before = image.get_attribute("src")
    page.locator("#assignment-zoom").get_by_text("2×", exact=True).click()  # the question is shown again, zoomed
    page.wait_for_function("src => { const i = document.querySelector('#assignment-question img');"
                           " return i && i.getAttribute('src') !== src; }", arg=before)
    zoomed = shown_pixels(page, image)
    assert len(np.unique(zoomed[24:48, 24:48].reshape(-1, 3), axis=0)) == 1  # a tile pixel: a flat 24 x 24 block
    page.screenshot(path=str(artifacts_dir / f"assignment_{device}_question_zoomed.png"), full_page=True)
    assert_fits_the_width(page, viewport, "#assignment-question", "#assignment-look")
    for number in range(1, assignment["questions"] + 1):  # every answer a miss
        page.locator("#assignment-choice").get_by_text(WRONG, exact=True).click()
        panel.get_by_role("button", name="Submit answer").click()
        page.locator("#assignment-feedback").get_by_text("Not quite").first.wait_for()
        last = number == assignment["questions"]
        panel.get_by_role("button", name="See my results" if last else "Next question").click()
    review = page.locator("#assignment-review")
    review.locator(".caption-label").first.wait_for()
    captions = review.locator(".caption-label").all_inner_texts()
    assert len(captions) == assignment["questions"] and all(f"(you said {WRONG})" in c for c in captions), captions
    assert "You missed 2 question(s)" in page.locator("#assignment-summary").inner_text()
    expect(page.locator("#assignment-look")).to_be_hidden()  # no question left: no view controls
    review.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / f"assignment_{device}_review.png"), full_page=True)
    assert_fits_the_width(page, viewport, "#assignment-summary", "#assignment-review")
    assert_review_is_readable(page, viewport, "#assignment-review")
    panel_pixels = shown_pixels(page, review.locator(".thumbnail-lg img").first)
    assert panel_pixels.shape[0] > panel_pixels.shape[1] // 2  # the miss above a row of examples, not a tile alone
    assert page.dialogs == []
    page.context.close()

def test_a_gallery_saved_meanwhile_is_listed_saying_whose_it_is(instructor, saved_gallery, artifacts_dir):
    """The gallery saved in the Galleries tab (after this tab's sign-in) is in the "From gallery" list on coming
    back, without a reload, labelled shared and yours; "None" (generate) comes first. The list sits beside the
    tissues without overlapping them."""
    page, panel = instructor
    field = gallery_field(panel)
    field.scroll_into_view_if_needed()
    entries = open_gallery_list(page, panel)
    assert entries[0] == GENERATE_LABEL and GALLERY_LABEL in entries, entries
    page.screenshot(path=str(artifacts_dir / "assignment_gallery_list.png"))
    page.keyboard.press("Escape")
    field.blur()
    expect(page.get_by_role("option")).to_have_count(0)  # folded again
    tissues = panel.get_by_text("Or generate: tissues (none = all nine)")
    left, right = page.locator("#assignment-gallery").bounding_box(), tissues.bounding_box()
    beside, below = left["x"] + left["width"] <= right["x"], left["y"] + left["height"] <= right["y"]
    assert beside or below  # never on top of each other
    assert page.dialogs == []


def test_a_learner_opens_the_assignment_from_the_quiz_tab(browser, running_app, assignment, artifacts_dir):
    """The Quiz tab's "Have an assignment code?" box: an unknown code is refused beside it (the Quiz tab stays);
    a known one, typed in lower case with spaces, opens the assignment in the Assignments tab under the name typed
    in the Quiz tab."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(running_app.url)
    page.get_by_role("button", name="Generate verified image").wait_for(state="attached")
    page.get_by_role("tab", name="Quiz").click()
    quiz = page.locator(".tabitem:visible")
    code_box = quiz.locator("#quiz-assignment-code").get_by_role("textbox")
    status = page.locator("#quiz-assignment-status")
    code_box.fill(assignment["code"])
    quiz.get_by_role("button", name="Open assignment").click()
    status.get_by_text("Type your name to take an assignment").wait_for()  # the instructor sees answers under it
    quiz.get_by_label("Your name (saves your progress)").fill(QUIZ_LEARNER)
    code_box.fill("zzz 999")
    code_box.press("Enter")
    status.get_by_text("No assignment has the code 'ZZZ999'").wait_for()
    expect(page.get_by_role("tab", name="Quiz")).to_have_attribute("aria-selected", "true")
    box = page.locator("#quiz-assignment").first.bounding_box()  # (Gradio repeats a group's id inside it)
    start = quiz.get_by_role("button", name="Start a new quiz")
    mode = page.locator("#quiz-mode").bounding_box()
    assert box["x"] >= mode["x"] + mode["width"] and box["x"] + box["width"] <= VIEWPORT["width"]  # not cut off
    assert box["y"] >= start.bounding_box()["y"] + start.bounding_box()["height"]  # under "Start a new quiz"
    page.screenshot(path=str(artifacts_dir / "assignment_from_quiz_refused.png"))

    code = assignment["code"]
    code_box.fill(f" {code.lower()[:3]} {code.lower()[3:]} ")
    quiz.get_by_role("button", name="Open assignment").click()
    expect(page.get_by_role("tab", name="Assignments")).to_have_attribute("aria-selected", "true")
    panel = page.locator(".tabitem:visible")
    panel.get_by_role("heading", name=re.compile(fr"question 1 of {assignment['questions']}")).wait_for()
    page.locator("#assignment-status").get_by_text(re.compile(r"Opened .* \(\d+ questions\)")).wait_for()
    expect(panel.get_by_label("Your name", exact=True)).to_have_value(QUIZ_LEARNER)
    expect(panel.locator("#assignment-code").get_by_role("textbox")).to_have_value(code)  # as stored
    expect(panel.locator("#assignment-question img").first).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "assignment_from_quiz_opened.png"))
    assert page.dialogs == []
    page.context.close()


def show_dashboard(page, panel, code: str) -> list[list[str]]:
    """The instructor's class results for ``code``; returns the rows of the "Who took it" table."""
    panel.locator("#assignment-results-code").get_by_role("textbox").fill(code)
    panel.get_by_role("button", name="Show results").click()
    dashboard = page.locator("#assignment-dashboard")
    dashboard.get_by_text(re.compile(r"1 learner\(s\) · \d+ answer\(s\)")).wait_for()
    assert code in dashboard.inner_text() and TITLE in dashboard.inner_text()
    page.locator("#assignment-confusion img").wait_for()
    page.locator("#assignment-learners [role=gridcell]").get_by_text(LEARNER, exact=True).wait_for()
    return table_rows(page.locator("#assignment-learners"))


def download_csv(page, panel, code: str, folder) -> list[dict]:
    """Export through the page and download the file the way a person would: by clicking its link."""
    panel.locator("#assignment-results-code").get_by_role("textbox").fill(code)
    panel.get_by_role("button", name="Download CSV").click()
    page.locator("#assignment-dashboard-status").get_by_text(re.compile(r"Results of .*: 1 learner")).wait_for()
    link = page.locator("#assignment-export a[download]")
    with page.expect_download() as info:
        link.click()
    path = folder / info.value.suggested_filename
    info.value.save_as(path)
    assert path.suffix == ".csv" and code in path.name
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_only_a_signed_in_instructor_sees_the_instructor_controls(browser, running_app, artifacts_dir):
    """A learner sees the code form and the sign-in row, not the create form or the dashboard; a wrong password
    keeps them hidden with the refusal beside the button; the right one shows them; signing out hides them again
    and forgets the password."""
    page, panel = open_assignments(browser, running_app.url)
    expect(panel.locator("#assignment-code").get_by_role("textbox")).to_be_visible()
    expect(panel.get_by_role("button", name="Open assignment")).to_be_visible()
    expect(panel.locator("#assignment-answers")).to_be_hidden()  # their own answers come with their result
    open_instructor_section(panel)
    expect_no_instructor_controls(panel)
    page.screenshot(path=str(artifacts_dir / "assignment_learner_view.png"), full_page=True)

    panel.get_by_label("Instructor password").fill("a learner's guess")
    panel.get_by_role("button", name="Sign in", exact=True).click()
    status = page.locator("#assignment-sign-in-status")
    status.get_by_text("Instructor password missing or wrong").wait_for()
    assert "Traceback" not in status.inner_text()
    expect_no_instructor_controls(panel)

    panel.get_by_label("Instructor password").fill(running_app.password)
    panel.get_by_label("Instructor password").press("Enter")  # Enter signs in as the button does
    status.get_by_text("Signed in as").wait_for()
    for name in INSTRUCTOR_CONTROLS:
        expect(panel.get_by_role("button", name=name, exact=True)).to_be_visible()
    expect(panel.get_by_role("button", name="Open assignment")).to_be_visible()  # an instructor can take one too
    page.screenshot(path=str(artifacts_dir / "assignment_instructor_view.png"), full_page=True)

    panel.get_by_role("button", name="Sign out").click()
    status.get_by_text("Signed out").wait_for()
    expect_no_instructor_controls(panel)
    expect(panel.get_by_label("Instructor password")).to_have_value("")
    assert page.dialogs == []
    page.context.close()


def test_a_learner_reaches_neither_the_dashboard_nor_the_export(browser, running_app, assignment, artifacts_dir):
    """The page shows a learner no instructor controls (``test_only_a_signed_in_instructor_sees_the_instructor_
    controls``); the server refuses every instructor endpoint to a learner calling the API directly."""
    from gradio_client.exceptions import AppError

    code = assignment["code"]
    client = running_app.client()  # the same endpoints without the page: refused on the server too
    for api_name, args in (("/assignment_dashboard", (code,)), ("/assignment_export", (code,)),
                           ("/assignment_list", ())):
        for password in ("", "a learner's guess"):  # 3 wrong guesses: under the password backoff's free 5
            with pytest.raises(AppError) as caught:
                client.predict(password, *args, "", api_name=api_name)
            assert "password" in str(caught.value).lower(), (api_name, str(caught.value))


def test_one_sign_in_for_galleries_and_assignments(browser, running_app, artifacts_dir):
    """Signing in under Galleries signs the instructor in under Assignments too (no second password); "Sign out" in
    either tab signs out of both, and a wrong password in one tab leaves the other as it was."""
    page, panel = open_assignments(browser, running_app.url)
    page.get_by_role("tab", name="Galleries").click()
    galleries = page.locator(".tabitem:visible")
    galleries.get_by_text("Instructor tools").click()
    galleries.get_by_label("Instructor password").fill(running_app.password)
    galleries.get_by_role("button", name="Sign in", exact=True).click()
    page.locator("#gallery-sign-in-status").get_by_text("Signed in as").wait_for()

    page.get_by_role("tab", name="Assignments").click()
    panel = page.locator(".tabitem:visible")
    panel.get_by_text("Instructors: create assignments and see class results").click()
    page.locator("#assignment-sign-in-status").get_by_text("Signed in as").wait_for()  # nothing typed here
    for name in INSTRUCTOR_CONTROLS:
        expect(panel.get_by_role("button", name=name, exact=True)).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "assignment_signed_in_from_galleries.png"), full_page=True)

    panel.get_by_role("button", name="Sign out").click()
    page.locator("#assignment-sign-in-status").get_by_text("Signed out").wait_for()
    expect_no_instructor_controls(panel)
    page.get_by_role("tab", name="Galleries").click()
    galleries = page.locator(".tabitem:visible")
    page.locator("#gallery-sign-in-status").get_by_text("Signed out").wait_for()
    expect(galleries.get_by_role("button", name="Generate batch")).to_be_hidden()
    expect(galleries.get_by_label("Instructor password")).to_have_value("")

    # signed in under Assignments this time; Galleries follows; its own "Sign out" ends both
    page.get_by_role("tab", name="Assignments").click()
    panel = page.locator(".tabitem:visible")
    panel.get_by_label("Instructor password").fill(running_app.password)
    panel.get_by_role("button", name="Sign in", exact=True).click()
    page.locator("#assignment-sign-in-status").get_by_text("Signed in as").wait_for()
    page.get_by_role("tab", name="Galleries").click()
    galleries = page.locator(".tabitem:visible")
    page.locator("#gallery-sign-in-status").get_by_text("Signed in as").wait_for()
    expect(galleries.get_by_role("button", name="Generate batch")).to_be_visible()
    galleries.get_by_label("Instructor password").fill("a wrong guess")
    galleries.get_by_role("button", name="Sign in", exact=True).click()
    page.locator("#gallery-sign-in-status").get_by_text("password missing or wrong").wait_for()
    page.get_by_role("tab", name="Assignments").click()
    expect(page.locator("#assignment-sign-in-status")).to_contain_text("Signed in as")  # one wrong try, one place
    page.get_by_role("tab", name="Galleries").click()
    galleries = page.locator(".tabitem:visible")
    galleries.get_by_label("Instructor password").fill(running_app.password)
    galleries.get_by_role("button", name="Sign in", exact=True).click()
    page.locator("#gallery-sign-in-status").get_by_text("Signed in as").wait_for()
    page.locator("#gallery-sign-out").click()
    page.locator("#gallery-sign-in-status").get_by_text("Signed out").wait_for()
    page.get_by_role("tab", name="Assignments").click()
    page.locator("#assignment-sign-in-status").get_by_text("Signed out").wait_for()
    expect_no_instructor_controls(page.locator(".tabitem:visible"))
    assert page.dialogs == []
    page.context.close()
