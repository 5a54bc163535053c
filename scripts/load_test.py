"""A class at once: N learners use the app at the same moment, through its API (gradio_client).

Each learner generates one verified image, then takes a quiz: start, then per question an answer and "next".
Prints p50 / p95 / max latency per action and writes them (with every raw timing) as JSON. A benchmark, not a
test: timings on a shared machine vary between runs, so compare versions back to back on the same machine.

    python scripts/load_test.py --learners 20                       # starts the app itself (shipped models)
    python scripts/load_test.py --learners 20 --url http://127.0.0.1:7860/   # an app that is already running

Started by this script, the app gets ``--pool-wait`` seconds to stock its pool of verified images and explain its
real quiz tiles first (a class arrives after the app has started), and runs with the library found on
``PYTHONPATH`` (an older checkout there times the older version).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pathsynth.bench import latency_summary
from pathsynth.tissues import DISPLAY_NAMES  # the names the app shows (and takes)

ENDPOINTS = {"generate": "/generate", "quiz_start": "/quiz_start", "answer": "/quiz_answer", "next": "/quiz_next"}
ACTIONS = tuple(ENDPOINTS)
CLIENT_TIMEOUT_S = 1800.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=20, help="simultaneous sessions (default 20)")
    parser.add_argument("--questions", type=int, default=5, help="quiz length (default 5)")
    parser.add_argument("--generated-share", type=float, default=0.5, help="quiz share of generated images")
    parser.add_argument("--url", default=None, help="an app that is already running (default: start one)")
    parser.add_argument("--port", type=int, default=7871, help="port of the app this script starts")
    parser.add_argument("--pool-per-tissue", type=int, default=None, help="the started app's pool size per tissue")
    parser.add_argument("--pool-wait", type=float, default=600, help="seconds the started app may stock its pool")
    parser.add_argument("--out", default="runs/load/load.json", help="where the JSON goes")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # internal: the app process
    args = parser.parse_args(argv)
    if not 1 <= args.learners <= 200 or not 1 <= args.questions <= 30:
        parser.error("--learners must be 1..200 and --questions 1..30")
    return args


# ------------------------------------------------------------------------------------------ the app

def serve(args) -> None:
    """The app process: load models, let the pool fill (when this version has one), then serve."""
    from pathsynth.app import build_demo
    from pathsynth.services import Services

    kwargs = {}
    if args.pool_per_tissue is not None and "pool_per_tissue" in inspect.signature(Services.build).parameters:
        kwargs["pool_per_tissue"] = args.pool_per_tissue
    services = Services.build(**kwargs)
    pool = getattr(services, "pool", None)
    if pool is not None:
        started = time.perf_counter()
        # the real quiz tiles' explanations too (``ahead``), where this version makes them
        wait = {"ahead": True} if "ahead" in inspect.signature(pool.wait_full).parameters else {}
        full = pool.wait_full(args.pool_wait, **wait)
        print(f"pool {'full' if full else 'not full'} after {time.perf_counter() - started:.0f} s: {pool.stock()}",
              file=sys.stderr, flush=True)
    build_demo(services).launch(server_name="127.0.0.1", server_port=args.port, prevent_thread_lock=False)


def start_app(args) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, __file__, "--serve", "--port", str(args.port), "--pool-wait", str(args.pool_wait)]
    if args.pool_per_tissue is not None:
        command += ["--pool-per-tissue", str(args.pool_per_tissue)]
    process = subprocess.Popen(command, env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    url = f"http://127.0.0.1:{args.port}/"
    wait_for(url, process, timeout=args.pool_wait + 600)
    return process, url


def wait_for(url: str, process: subprocess.Popen, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited with code {process.returncode} before serving")
        try:
            with urllib.request.urlopen(url + "config", timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise SystemExit(f"the app did not answer at {url} within {timeout:.0f} s")


# ------------------------------------------------------------------------------------------ learners

def learner(number: int, client, questions: int, share: float, start: threading.Barrier, timings: dict,
            errors: dict, lock: threading.Lock) -> None:
    """Learner ``number``'s session (it asks for the tissues in turn, as a class would); each action's wall time
    goes to ``timings[action]``, failures to ``errors``."""
    tissue = DISPLAY_NAMES[number % len(DISPLAY_NAMES)]

    def timed(action, **call):
        began = time.perf_counter()
        try:
            result = client.predict(api_name=ENDPOINTS[action], **call)
        except Exception as error:  # a failed action is counted, and the session goes on
            with lock:
                errors.setdefault(action, []).append(f"{type(error).__name__}: {str(error)[:120]}")
            return None
        with lock:
            timings[action].append(time.perf_counter() - began)
        return result

    start.wait()
    timed("generate", tissue=tissue, description="", seed="", show_gradcam=True)
    timed("quiz_start", n=questions, generated_share=share)
    for _ in range(questions):
        timed("answer", choice=tissue)
        timed("next")


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU time (user + system) used so far by this process, or by process ``pid`` (Linux), None if unknown."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_class(url: str, learners: int, questions: int, share: float,
              app_pid: int | None = None) -> tuple[dict, dict, float, dict]:
    from gradio_client import Client

    # connected before the clock starts; a learner waits as long as it takes (no client-side read timeout)
    clients = [Client(url, verbose=False, httpx_kwargs={"timeout": CLIENT_TIMEOUT_S}, analytics_enabled=False,
                      download_files=tempfile.mkdtemp(prefix="pathsynth-load-")) for _ in range(learners)]
    timings = {action: [] for action in ACTIONS}
    errors: dict[str, list[str]] = {}
    lock, start = threading.Lock(), threading.Barrier(learners + 1)
    threads = [threading.Thread(target=learner, args=(i, c, questions, share, start, timings, errors, lock))
               for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began, cpu = time.perf_counter(), {"clients": cpu_seconds(), "app": cpu_seconds(app_pid) if app_pid else None}
    for thread in threads:
        thread.join()
    # on one machine the clients compete with the app for the CPU: say how much each used during the class
    used = {f"{who}_cpu_s": round(cpu_seconds(app_pid if who == "app" else None) - before, 1)
            for who, before in cpu.items() if before is not None}
    return timings, errors, time.perf_counter() - began, used


def summarise(timings: dict, errors: dict) -> dict:
    return {action: {**latency_summary(values), "errors": len(errors.get(action, []))}
            for action, values in timings.items()}


def print_table(rows: dict) -> None:
    print(f"{'action':<12}{'n':>5}{'errors':>8}{'p50 s':>9}{'p95 s':>9}{'max s':>9}")
    for action, row in rows.items():
        cells = [f"{row.get(k, float('nan')):>9.2f}" for k in ("p50_s", "p95_s", "max_s")]
        print(f"{action:<12}{row['n']:>5}{row['errors']:>8}{''.join(cells)}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args)
        return 0
    process = None
    try:
        if args.url:
            url = args.url if args.url.endswith("/") else args.url + "/"
        else:
            process, url = start_app(args)
        timings, errors, wall, cpu = run_class(url, args.learners, args.questions, args.generated_share,
                                               process.pid if process is not None else None)
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
    rows = summarise(timings, errors)
    print_table(rows)
    result = {"learners": args.learners, "questions": args.questions, "generated_share": args.generated_share,
              "url": args.url or "started here", "wall_s": round(wall, 2), "cpus": os.cpu_count(),
              "load_average_1min": os.getloadavg()[0], "machine": platform.node(), **cpu, "actions": rows,
              "errors": errors, "raw_s": {a: [round(v, 4) for v in t] for a, t in timings.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"class of {args.learners} finished in {wall:.1f} s (CPU s used: {cpu}); JSON: {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
