"""Issue 32, learners and layout: what a newcomer hit outside the quiz (My progress chart, dates and Late column,
Generate's summary table, the documented ``/challenge_guess`` call, one log line for a refused request).

The layout items themselves (tabs on a phone, the quiz's controls below the answers, the name in every tab, the
About tab's votes) are checked in Chromium by tests/test_browser_learners.py."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from matplotlib.colors import to_hex

from pathsynth import assignments as A
from pathsynth import quiz as Q
from pathsynth import ui_helpers as ui
from pathsynth.app import assignments as assignment_tab
from pathsynth.app import challenge as C
from pathsynth.app import common
from pathsynth.learning import AnswerRecord
from pathsynth.learning import progress as LP
from pathsynth.tissues import ABBREVIATIONS, tissue_index

from test_challenge import _free_port, fake_services

NOW = datetime(2026, 12, 14, 17, 0, tzinfo=timezone.utc)


def answers(tissue: str, right: int, wrong: int) -> list[AnswerRecord]:
    t, other = tissue_index(tissue), tissue_index("BACK" if tissue != "BACK" else "ADI")
    return [AnswerRecord(t, t if i < right else other, NOW + timedelta(minutes=i)) for i in range(right + wrong)]


# ------------------------------------------------------------------------------------------ My progress

def test_a_tissue_at_zero_percent_is_a_red_stub_marked_0_and_unpractised_ones_differ():
    history = answers("ADI", 0, 3) + answers("LYM", 3, 1)  # fat never right; lymphocytes 75 %; the rest unseen
    bars = LP.progress_figure(history).axes[0]
    patches = {label: patch for label, patch in zip(ABBREVIATIONS, bars.patches)}
    labels = dict(zip(ABBREVIATIONS, (text.get_text() for text in bars.texts)))
    fat, lymphocytes, mucus = patches["ADI"], patches["LYM"], patches["MUC"]
    assert fat.get_height() > 0 and to_hex(fat.get_facecolor()) == LP.WEAK_COLOUR  # visible, and red
    assert labels["ADI"] == "0 %" and labels["LYM"] == "75 %" and labels["MUC"] == "–"
    assert to_hex(mucus.get_facecolor()) == LP.NOT_PRACTISED_COLOUR and mucus.get_hatch()  # grey hatched: no data
    assert not fat.get_hatch() and lymphocytes.get_height() == pytest.approx(75)


# ------------------------------------------------------------------------------------------ cosmetic

def test_generates_summary_table_has_a_header_row_with_words():
    result = SimpleNamespace(tissue=0, predicted=0, verified=True, attempts=1, probabilities=[0.9] + [0.0125] * 8,
                             confidence=0.9, realism=0.5, seed=7)
    table = [line for line in ui.verified_summary(result).splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert all(header) and table[1].startswith("|---")


def test_due_dates_read_as_dates_and_late_says_no():
    assert A.format_due(A.parse_due("2026-12-14 17:00")) == "Mon 14 Dec 2026, 17:00 UTC"
    assert A.format_due(A.parse_due("2026-12-24")) == "Thu 24 Dec 2026, 23:59 UTC"  # the end of that day
    assert A.format_due(A.parse_due("2026-12-14 18:30+01:00")) == "Mon 14 Dec 2026, 17:30 UTC"
    assert A.format_due(None) == ""
    assignment = SimpleNamespace(due_at=A.parse_due("2026-12-14 17:00"), is_late=lambda moment: False)
    assert "Due Mon 14 Dec 2026, 17:00 UTC." in assignment_tab._due_note(assignment)
    assert assignment_tab.late_count(0) == "no" and assignment_tab.late_count(2) == "yes (2)"


def test_the_learners_own_results_say_no_when_an_answer_was_on_time(monkeypatch):
    question = SimpleNamespace(position=0, tissue=tissue_index("ADI"))
    assignment = SimpleNamespace(title="Week 1", questions=[question])
    mine = {0: SimpleNamespace(chosen=tissue_index("ADI"), correct=True, late=False)}
    monkeypatch.setattr(A, "learner_answers", lambda *args: mine)
    session = Q.quiz_from_images([np.zeros((28, 28, 3), np.uint8)], [tissue_index("ADI")], shuffle=False)
    attempt = SimpleNamespace(assignment=assignment, session=session, database=None, learner=None, services=None,
                              look=None)
    rows = assignment_tab.results_view(attempt)[8]["value"]
    assert rows[0][assignment_tab.RESULT_HEADERS.index("Late")] == "no"


# ------------------------------------------------------------------------------------------ API

@pytest.fixture
def challenge_app(tmp_path):
    from gradio_client import Client

    services = fake_services(tmp_path)
    with gr.Blocks() as demo:
        C.build(services)
    common.install_quiet_refusals()
    demo.queue().launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield services, demo, Client(demo.local_url, verbose=False)
    finally:
        demo.close()
        services.store.close()


def test_challenge_guess_works_as_its_api_page_documents_it(challenge_app):
    from gradio_client.exceptions import AppError

    _, _, client = challenge_app
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/challenge_guess"]
    names = [parameter["parameter_name"] for parameter in parameters["parameters"]]
    assert names == ["choice", "learner_name"]  # the guess is a parameter (a button input was left out)
    client.predict(api_name="/challenge_next")
    feedback, score, status = client.predict(choice="Synthetic", learner_name="Ana", api_name="/challenge_guess")
    assert "It was **" in feedback and score.endswith(" / 1**") and status == ""
    client.predict(api_name="/challenge_next")
    with pytest.raises(TypeError, match="required argument: choice"):  # the page says the guess is required
        client.predict(learner_name="Ana", api_name="/challenge_guess")
    with pytest.raises(AppError, match="Guess Real or Synthetic"):  # and the app says so too, in its own words
        client.predict(choice=None, learner_name="Ana", api_name="/challenge_guess")


def test_a_refused_request_is_one_log_line_not_a_traceback(challenge_app, caplog, capfd):
    from gradio_client.exceptions import AppError

    _, _, client = challenge_app
    client.predict(api_name="/challenge_next")
    with caplog.at_level(logging.INFO, logger="pathsynth.app"), pytest.raises(AppError):
        client.predict(choice="Maybe", learner_name="Ana", api_name="/challenge_guess")  # not a choice
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request refused")]
    assert len(refused) == 1 and "Maybe" in refused[0] and "\n" not in refused[0]
    assert "Traceback" not in capfd.readouterr().err


def test_a_bug_keeps_its_traceback():
    def in_gradio():
        raise ValueError("needed: 3, got: 2")

    try:
        in_gradio()
    except ValueError as error:
        assert common.is_ordinary_refusal(error)  # raised outside PathSynth: a request Gradio refused
    try:
        A.format_due("not a date")  # raised inside PathSynth's code: a bug to see in full
    except ValueError as error:
        assert not common.is_ordinary_refusal(error)
    assert common.is_ordinary_refusal(gr.Error("already worded")) and not common.is_ordinary_refusal(KeyError("x"))
