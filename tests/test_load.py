"""scripts/load_test.py works end to end: a tiny-model app (started by the script), small classes through both of
its clients, every action timed, no failures, the quiz state kept per learner.

A functional check of the benchmark script only; its figures are not asserted (timings are not tests)."""

import asyncio
import importlib.util
import json
import os
import socket
from pathlib import Path

import pytest

from tiny_models import save_tiny_models

pytestmark = pytest.mark.slow  # an app process starts
REPO = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("load_test", REPO / "scripts" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


load_test = load_script()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory):
    """The app as the script starts it (``--serve``), with tiny models and no pool (nothing made in the background
    to slow the tests down): (url, process)."""
    directory = tmp_path_factory.mktemp("load")
    classifier_dir, generator_dir = save_tiny_models(directory / "models")
    from sample_tiles import sample_npz

    data = os.environ.get("PATHSYNTH_DATA") or str(sample_npz(directory / "tiles.npz"))  # tiny models verify little
    with pytest.MonkeyPatch.context() as patch:  # the app process inherits this environment
        for name, value in dict(PATHSYNTH_CLASSIFIER=str(classifier_dir), PATHSYNTH_GENERATOR=str(generator_dir),
                                PATHSYNTH_DATA=data,
                                PATHSYNTH_HOME=str(directory / "home"), HF_HUB_OFFLINE="1",
                                OMP_NUM_THREADS="1").items():
            patch.setenv(name, value)
        args = load_test.parse_args(["--port", str(free_port()), "--pool-per-tissue", "0", "--pool-wait", "0"])
        process, url = load_test.start_app(args)
    yield url, process
    process.terminate()
    process.wait(30)


def test_http_client_sends_what_gradio_client_sends(tiny_app, monkeypatch):
    """For every call of a learner's session, the light client's body (data list in the endpoint's order, defaults
    filled in, None for the gr.State inputs; fn_index) and headers are gradio_client's, read from the same app."""
    import gradio_client.client as gradio_client

    url, _ = tiny_app
    sent = []

    class Stop(Exception):
        pass

    def capture(self, data, hash_data, protocol, request_headers):  # what Client.predict would POST to queue/join
        sent.append(({**data, **hash_data}, dict(request_headers or {})))
        raise Stop

    monkeypatch.setattr(gradio_client.Client, "send_data", capture)
    client = gradio_client.Client(url, verbose=False, download_files=False)
    api = load_test.GradioApi.fetch(url)
    try:
        for action, kwargs in load_test.session_plan(3, questions=2, share=0.25):
            with pytest.raises(Stop):
                client.predict(api_name=load_test.ENDPOINTS[action], **kwargs)
            body, headers = sent[-1]
            ours = api.payload(load_test.ENDPOINTS[action], kwargs)
            assert ours == {"data": list(body["data"]), "fn_index": body["fn_index"]}, action
            assert set(body) == {"data", "fn_index", "session_hash"} and headers == load_test.API_HEADERS
    finally:
        client.close()
    assert [action for action, _ in load_test.session_plan(0, 2, 0.5)] == [
        "generate", "quiz_start", "answer", "next", "answer", "next"]


def test_the_files_of_an_answer_are_found_wherever_gradio_puts_them():
    image = {"path": "/tmp/a.png", "url": "http://app/gradio_api/file=/tmp/a.png", "meta": {"_type": "gradio.FileData"}}
    gallery = [{"image": {**image, "url": "http://app/b"}, "caption": "x"}]
    assert load_test.file_urls([image, "text", None, {"value": gallery}, 3]) == [image["url"], "http://app/b"]
    assert load_test.file_urls([{"path": None}, "http://not-a-file"]) == []


def test_http_class_keeps_each_quiz_and_reports_cpu(tiny_app):
    """Two learners, two questions (real tiles) through the light client: every action answered, none failed. An answer needs
    the session's quiz (the app refuses it with "Start a quiz first." otherwise, an error the client reports, as the
    last check shows), so no errors also means each learner's gr.State carried from quiz_start to its answers."""
    url, process = tiny_app
    timings, errors, wall, used = load_test.run_class(url, 2, 2, 0.0, process.pid, client="http")
    assert not errors, errors
    assert {action: len(values) for action, values in timings.items()} == {
        "generate": 2, "quiz_start": 2, "answer": 4, "next": 4}
    assert all(value > 0 for values in timings.values() for value in values) and wall > 0
    assert set(used) == {"clients_cpu_s", "app_cpu_s"} and used["app_cpu_s"] > 0

    async def answer_without_a_quiz() -> str:
        import httpx

        async with httpx.AsyncClient(timeout=120) as http:
            async with load_test.HttpSession(http, load_test.GradioApi.fetch(url)) as session:
                with pytest.raises(load_test.ActionError) as refused:
                    await session.call("/quiz_answer", choice="Debris")
        return str(refused.value)

    assert "Start a quiz first" in asyncio.run(answer_without_a_quiz())


def test_script_runs_a_class_through_gradio_client(tiny_app, tmp_path, capsys):
    """The old client (``--client gradio``) still runs, and the script prints its table and writes its JSON."""
    url, _ = tiny_app
    out_file = tmp_path / "load.json"
    code = load_test.main(["--client", "gradio", "--learners", "1", "--questions", "1", "--generated-share", "0",
                           "--url", url, "--out", str(out_file)])
    printed = capsys.readouterr().out
    result = json.loads(out_file.read_text())
    assert code == 0 and not result["errors"], result["errors"]
    assert result["client"] == "gradio" and "clients_cpu_s" in result
    assert {action: row["n"] for action, row in result["actions"].items()} == {
        "generate": 1, "quiz_start": 1, "answer": 1, "next": 1}
    assert all(row["p95_s"] >= row["p50_s"] > 0 for row in result["actions"].values())
    assert "p95 s" in printed and "quiz_start" in printed and "gradio client" in printed
