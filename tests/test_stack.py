"""The deployment for a class one process cannot serve (deploy/stack.py): PostgreSQL, 2 app replicas, 1 pool worker
and nginx, started by the script as an operator would. A class of 40 learners takes an assignment through the proxy
(each browser kept on one replica by its route cookie); one replica is killed mid-class. Every answer is stored,
one instructor's dashboard sees them all, and the dead replica's learners carry on from the other one after a
reload, at the question they were at."""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, free_port

from pathsynth.storage.server import postgres_program

LEARNERS = 40
QUESTIONS = 4
pytestmark = pytest.mark.slow


def load_stack_module():
    spec = importlib.util.spec_from_file_location("pathsynth_deploy_stack", ROOT / "deploy" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def needs(program: str, found: bool) -> None:
    if not found:
        message = f"the stack test needs {program} (scripts/test.sh installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def stack(model_env, tmp_path):
    """The stack as ``deploy/stack.py`` starts it; its logs end up in ``tmp_path/stack``."""
    module = load_stack_module()
    needs("nginx", bool(shutil.which("nginx") or Path("/usr/sbin/nginx").exists()))
    try:
        postgres_program("initdb")
    except FileNotFoundError:
        needs("PostgreSQL", False)
    password = secrets.token_urlsafe(12)
    env = {**model_env, "PATHSYNTH_INSTRUCTOR_PASSWORD": password, "PATHSYNTH_POOL_PER_TISSUE": "2",
           "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    directory = Path(tempfile.mkdtemp(prefix="pathsynth-stack-"))  # under /tmp: the postgres user can reach it
    running = module.Stack(directory, port=free_port(), replicas=2, workers=1, env=env).start()
    running.password = password
    try:
        yield running
    finally:
        running.stop()
        shutil.copytree(directory, tmp_path / "stack", ignore=shutil.ignore_patterns("postgres"))  # the logs
        shutil.rmtree(directory, ignore_errors=True)


def make_assignment(database_url: str, home: Path) -> str:
    from pathsynth import assignments as A
    from pathsynth.gallery import GalleryItemInput, GalleryStore

    with GalleryStore(home, database_url=database_url) as store:
        items = [GalleryItemInput(np.full((28, 28, 3), 50 * n, np.uint8), tissue=n) for n in range(QUESTIONS)]
        return A.create_assignment(store.database, "Class of 40", items, mode="practice").code


def texts(outputs) -> list[str]:
    return [x for x in outputs if isinstance(x, str)]


def upstream_of(stack, route: str) -> str:
    """The replica nginx sent this route's last request to (from its access log)."""
    lines = [line for line in (stack.directory / "nginx" / "access.log").read_text().splitlines()
             if f"route={route}" in line and "upstream=" in line]
    return re.search(r"upstream=(\S+)", lines[-1]).group(1).split(",")[-1].strip()


class Learner:
    """One learner's browser: a gradio client sending its route cookie through the proxy."""

    def __init__(self, stack, number: int, code: str):
        self.stack, self.name, self.code = stack, f"Learner {number:02d}", code
        self.route = f"learner-{number:02d}"
        self.reloaded = False
        self.client = self.page()

    def page(self):
        from gradio_client import Client

        return Client(self.stack.url, headers={"Cookie": f"pathsynth_route={self.route}"}, verbose=False)

    def open(self) -> None:
        assert any(f"question 1 of {QUESTIONS}" in t for t in texts(self.client.predict(
            self.code, self.name, api_name="/assignment_open")))

    def answer(self, question: int) -> None:
        """Answer ``question`` (1-based); when the replica is gone, reload the page (a new session on the other
        replica), which reopens the assignment where this learner was, then answer."""
        try:
            self.client.predict("Mucus", api_name="/assignment_answer")
        except Exception:  # noqa: BLE001 - the replica died, or the new one has no session: reload
            self.reloaded = True
            self.client = self.page()
            shown = texts(self.client.predict(self.name, api_name="/assignment_resume"))
            assert any(f"question {question} of {QUESTIONS}" in t for t in shown), shown
            self.client.predict("Mucus", api_name="/assignment_answer")
        if question < QUESTIONS:
            self.client.predict(api_name="/assignment_next")


def test_a_class_of_40_through_nginx_survives_a_replica_dying(stack):
    code = make_assignment(stack.database_url, stack.directory / "home")
    learners = [Learner(stack, n, code) for n in range(1, LEARNERS + 1)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(Learner.open, learners))
        list(pool.map(lambda learner: learner.answer(1), learners))
    on = {learner.route: upstream_of(stack, learner.route) for learner in learners}
    doomed = stack.replicas[0]
    doomed_address = doomed.url[len("http://"):].rstrip("/")
    on_doomed = [learner for learner in learners if on[learner.route] == doomed_address]
    assert 0 < len(on_doomed) < LEARNERS, on  # the routes spread the class over both replicas

    doomed.process.send_signal(signal.SIGKILL)  # mid-class
    doomed.process.wait(timeout=30)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=10) as pool:
        for question in range(2, QUESTIONS + 1):
            list(pool.map(lambda learner: learner.answer(question), learners))
    print(f"\n{len(on_doomed)} learners moved to the other replica; the class finished in "
          f"{time.perf_counter() - started:.0f} s after the kill")
    assert all(learner.reloaded for learner in on_doomed)
    assert not any(learner.reloaded for learner in learners if learner not in on_doomed)

    from gradio_client import Client

    instructor = Client(stack.url, headers={"Cookie": "pathsynth_route=instructor"}, verbose=False)
    summary, table, *_ = instructor.predict(stack.password, code, api_name="/assignment_dashboard")
    assert f"{LEARNERS} learner(s) · {LEARNERS * QUESTIONS} answer(s)" in summary
    rows = {row[0]: row for row in table["data"]}
    assert set(rows) == {learner.name for learner in learners}
    assert all(row[3] == QUESTIONS for row in rows.values())  # every stored answer, none twice
