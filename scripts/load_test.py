"""A class at once: N learners use the app at the same moment, through its API.

Each learner generates one verified image, then takes a quiz: start, then per question an answer and "next".
Prints p50 / p95 / max latency per action and writes them (with every raw timing) as JSON. A benchmark, not a
test: timings on a shared machine vary between runs, so compare versions back to back on the same machine.

    python scripts/load_test.py --learners 20                       # starts the app itself (shipped models)
    python scripts/load_test.py --learners 20 --url http://127.0.0.1:7860/   # an app that is already running
    python scripts/load_test.py --learners 20 --client gradio       # the same class, one gradio_client per learner
    python scripts/load_test.py --learners 20 --cold --seeded       # a class 30 s after a cold start, typed seeds

Two clients send the same calls (endpoints ``/generate``, ``/quiz_start``, ``/quiz_answer``, ``/quiz_next``, same
arguments, Gradio filling in the defaults of the rest, each learner its own session so its quiz lives in the app's
``gr.State``):

* ``--client http`` (default): one asyncio loop in this process, one ``httpx.AsyncClient``, one coroutine per
  learner, speaking Gradio's queue protocol itself (what gradio_client speaks): ``POST {root}/gradio_api/queue/join``
  with ``{"data": [...], "fn_index": i, "session_hash": h}`` and header ``x-gradio-user: api``, then the event
  stream ``GET {root}/gradio_api/queue/data?session_hash=h`` read until ``process_completed`` for that event (an
  error is ``success: false`` / an ``error`` in its output), plus the session's ``heartbeat`` stream, as
  gradio_client keeps one. The data list is built from the app's ``/config`` and ``/gradio_api/info`` exactly as
  gradio_client builds it (``construct_args`` for the parameters and their defaults, ``None`` for each ``gr.State``
  input). Each answer's files (the images it shows) are then downloaded at once, as a browser showing it would,
  inside the action's timing (``--no-files`` times the answer alone).
* ``--client gradio``: one ``gradio_client.Client`` per learner, each in its own thread (the old way; it also
  downloads the returned images). Its threads, polling loops and downloads cost several times the CPU the app uses
  for the class (measured with 20 learners: 36.9 CPU-s for the clients against 7.7 for the app), so on a small
  machine the clients take the cores from the app and every latency measures them too; the light client is the
  default so that the figures measure the server.

Both report the CPU seconds this process (the clients) and the app (when started here) used during the class:
clients near the app's figure, or above it, mean the timings are inflated by the clients.

Started by this script, the app gets ``--pool-wait`` seconds to stock its pool of verified images and explain its
real quiz tiles first (a class arrives after the app has started), and runs with the library found on
``PYTHONPATH`` (an older checkout there times the older version). With ``--cold`` it starts as ``python app.py``
does on a fresh machine instead: empty home and caches (new temporary ``PATHSYNTH_HOME`` and ``XDG_CACHE_HOME``),
no waiting for the pool; the script reports the seconds to the first page and lets the class in
``--arrive-after`` seconds after the start (default 30). ``--seeded``: each learner types a seed of its own in
Generate (a typed seed is always generated, never taken from the pool).
"""

from __future__ import annotations

import argparse
import asyncio
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
import uuid
from pathlib import Path

from pathsynth.bench import latency_summary
from pathsynth.tissues import DISPLAY_NAMES  # the names the app shows (and takes)

ENDPOINTS = {"generate": "/generate", "quiz_start": "/quiz_start", "answer": "/quiz_answer", "next": "/quiz_next"}
ACTIONS = tuple(ENDPOINTS)
CLIENT_TIMEOUT_S = 1800.0
CLIENTS = ("http", "gradio")
API_HEADERS = {"x-gradio-user": "api"}  # gradio_client's mark: the app then answers a refusal as an error
PROTOCOLS = ("sse_v1", "sse_v2", "sse_v2.1", "sse_v3")  # queue/join + queue/data, the ones the http client speaks


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=20, help="simultaneous sessions (default 20)")
    parser.add_argument("--questions", type=int, default=5, help="quiz length (default 5)")
    parser.add_argument("--generated-share", type=float, default=0.5, help="quiz share of generated images")
    parser.add_argument("--client", choices=CLIENTS, default="http",
                        help="http: one asyncio loop speaking Gradio's queue protocol (default, light); "
                             "gradio: one gradio_client.Client per learner, in threads (heavy)")
    parser.add_argument("--no-files", dest="files", action="store_false",
                        help="http client: time each answer alone, without downloading its images as a browser does")
    parser.add_argument("--url", default=None, help="an app that is already running (default: start one)")
    parser.add_argument("--port", type=int, default=7871, help="port of the app this script starts")
    parser.add_argument("--pool-per-tissue", type=int, default=None, help="the started app's pool size per tissue")
    parser.add_argument("--pool-wait", type=float, default=600, help="seconds the started app may stock its pool")
    parser.add_argument("--cold", action="store_true",
                        help="start the app as on a fresh machine (empty caches, no pool wait); the class arrives "
                             "--arrive-after seconds after the start")
    parser.add_argument("--arrive-after", type=float, default=30.0, help="with --cold: seconds from start to class")
    parser.add_argument("--seeded", action="store_true", help="each learner types its own seed in Generate")
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

    kwargs, parameters = {}, inspect.signature(Services.build).parameters
    if args.pool_per_tissue is not None and "pool_per_tissue" in parameters:
        kwargs["pool_per_tissue"] = args.pool_per_tissue
    if args.cold and "serve_first" in parameters:
        kwargs["serve_first"] = True  # as pathsynth.app.main: the real tiles' answer keys after the page is up
    services = Services.build(**kwargs)
    pool = getattr(services, "pool", None)
    if pool is not None and not args.cold:
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
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    if args.cold:  # a fresh machine: nothing cached, no galleries, no learners
        command.append("--cold")
        fresh = Path(tempfile.mkdtemp(prefix="pathsynth-cold-"))
        env.update(PATHSYNTH_HOME=str(fresh / "home"), XDG_CACHE_HOME=str(fresh / "cache"),
                   MPLCONFIGDIR=str(fresh / "matplotlib"))
    started = time.monotonic()
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{args.port}/"
    wait_for(url, process, timeout=args.pool_wait + 600)
    args.first_page_s = round(time.monotonic() - started, 1)
    print(f"first page after {args.first_page_s} s", flush=True)
    if args.cold:
        time.sleep(max(0.0, args.arrive_after - (time.monotonic() - started)))
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
            time.sleep(0.2)
    raise SystemExit(f"the app did not answer at {url} within {timeout:.0f} s")


# ------------------------------------------------------------------------------------------ learners

def session_plan(number: int, questions: int, share: float, seeded: bool = False) -> list[tuple[str, dict]]:
    """Learner ``number``'s calls, in order: ``(action, keyword arguments)`` (it asks for the tissues in turn, as a
    class would, types seed 1000 + ``number`` when ``seeded``, and answers every question with that tissue). The
    same for both clients."""
    tissue = DISPLAY_NAMES[number % len(DISPLAY_NAMES)]
    seed = str(1000 + number) if seeded else ""
    plan = [("generate", {"tissue": tissue, "description": "", "seed": seed, "show_gradcam": True}),
            ("quiz_start", {"n": questions, "generated_share": share})]
    for _ in range(questions):
        plan += [("answer", {"choice": tissue}), ("next", {})]
    return plan


def record_error(errors: dict, action: str, error: Exception) -> None:
    errors.setdefault(action, []).append(f"{type(error).__name__}: {str(error)[:120]}")


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


def run_class(url: str, learners: int, questions: int, share: float, app_pid: int | None = None,
              client: str = "http", files: bool = True, seeded: bool = False) -> tuple[dict, dict, float, dict]:
    """The class, through ``client`` ("http" or "gradio"): (timings per action, errors per action, wall seconds,
    CPU seconds the clients and the app used during the class)."""
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}, not {client!r}")
    timings = {action: [] for action in ACTIONS}
    errors: dict[str, list[str]] = {}
    cpu: dict = {}

    def clock_starts() -> None:  # called when every learner is connected, just before the first call
        cpu.update(began=time.perf_counter(), clients=cpu_seconds(), app=cpu_seconds(app_pid) if app_pid else None)

    if client == "http":
        asyncio.run(http_class(url, learners, questions, share, timings, errors, clock_starts, files, seeded))
    else:
        gradio_class(url, learners, questions, share, timings, errors, clock_starts, seeded)
    wall = time.perf_counter() - cpu.pop("began")
    # on one machine the clients compete with the app for the CPU: say how much each used during the class
    used = {f"{who}_cpu_s": round(cpu_seconds(app_pid if who == "app" else None) - before, 1)
            for who, before in cpu.items() if before is not None}
    return timings, errors, wall, used


# ------------------------------------------------------------------ the light client: Gradio's queue protocol

class ActionError(Exception):
    """The app answered a call with an error (or no answer): counted under ``errors``."""


class GradioApi:
    """What the http client needs of a Gradio app: its queue's URLs and, per named endpoint, how to turn keyword
    arguments into the data list gradio_client would send (read from ``/config`` and ``/gradio_api/info``)."""

    def __init__(self, url: str, config: dict, info: dict):
        self.protocol = config.get("protocol", "ws")
        if self.protocol not in PROTOCOLS:
            raise SystemExit(f"the app speaks Gradio protocol {self.protocol!r}; the http client speaks "
                             f"{', '.join(PROTOCOLS)} (use --client gradio)")
        self.root = url.rstrip("/") + "/" + (config.get("api_prefix", "") or "").strip("/") + "/"
        self.heartbeat = config.get("connect_heartbeat", True)
        state_ids = {c["id"] for c in config["components"] if c.get("type") == "state"}
        self.endpoints = {}  # "/name" -> (fn_index, parameters, positions of the gr.State inputs)
        for index, dependency in enumerate(config["dependencies"]):
            name = dependency.get("api_name")
            if isinstance(name, str) and f"/{name}" in info["named_endpoints"]:
                states = [i for i, component in enumerate(dependency["inputs"]) if component in state_ids]
                self.endpoints[f"/{name}"] = (dependency.get("id", index),
                                              info["named_endpoints"][f"/{name}"]["parameters"], states)

    @classmethod
    def fetch(cls, url: str) -> "GradioApi":
        import httpx

        url = url if url.endswith("/") else url + "/"
        with httpx.Client(timeout=60) as http:
            config = http.get(url + "config").raise_for_status().json()
            prefix = (config.get("api_prefix", "") or "").strip("/")
            info = http.get(url + (prefix + "/" if prefix else "") + "info", params={"serialize": "False"})
            return cls(url, config, info.raise_for_status().json())

    def payload(self, api_name: str, kwargs: dict) -> dict:
        """``{"data": [...], "fn_index": i}`` for a call of ``api_name`` with ``kwargs``: the parameters in the
        endpoint's order, the defaults of those not given, ``None`` for each ``gr.State`` input (the app keeps the
        session's value), as ``client.predict(api_name=..., **kwargs)`` sends it."""
        from gradio_client.utils import construct_args

        if api_name not in self.endpoints:
            raise ValueError(f"the app has no API endpoint {api_name} (it has {', '.join(sorted(self.endpoints))})")
        fn_index, parameters, states = self.endpoints[api_name]
        data = list(construct_args(parameters, (), kwargs))
        for position in states:
            data.insert(position, None)
        return {"data": data, "fn_index": fn_index}


class HttpSession:
    """One learner's browser session: its own ``session_hash`` (so its own quiz state in the app), calls made one
    at a time through the app's queue, over a shared ``httpx.AsyncClient``."""

    def __init__(self, http, api: GradioApi, session_hash: str | None = None):
        self.http, self.api = http, api
        self.session_hash = session_hash or str(uuid.uuid4())  # as gradio_client's
        self._heartbeat = None

    async def __aenter__(self) -> "HttpSession":
        if self.api.heartbeat:  # as gradio_client (and a browser): the app sees the session as open
            self._heartbeat = asyncio.create_task(self._keep_alive())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)

    async def _keep_alive(self) -> None:
        import httpx

        try:
            async with self.http.stream("GET", f"{self.api.root}heartbeat/{self.session_hash}",
                                        headers=API_HEADERS) as response:
                async for _ in response.aiter_bytes():
                    pass
        except httpx.HTTPError:
            pass  # only the session's liveness: the calls report their own failures

    async def call(self, api_name: str, **kwargs) -> list:
        """Call endpoint ``api_name`` and wait for its answer: the output data list, without downloading files.
        Raises ``ActionError`` when the app refuses the call or answers with an error."""
        body = {**self.api.payload(api_name, kwargs), "session_hash": self.session_hash}
        joined = await self.http.post(f"{self.api.root}queue/join", json=body, headers=API_HEADERS)
        if joined.status_code != 200:
            detail = joined.text[:200]
            raise ActionError("queue full" if joined.status_code == 503 else f"HTTP {joined.status_code}: {detail}")
        event_id = joined.json()["event_id"]
        async with self.http.stream("GET", f"{self.api.root}queue/data", params={"session_hash": self.session_hash},
                                    headers=API_HEADERS) as stream:
            if stream.status_code != 200:
                raise ActionError(f"event stream: HTTP {stream.status_code}")
            async for line in stream.aiter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                kind = message.get("msg")
                if kind == "process_completed" and message.get("event_id") == event_id:
                    output = message.get("output") or {}
                    if not message.get("success", True) or "error" in output:
                        raise ActionError(output.get("error") or "the app raised an error (show_error is off)")
                    return output.get("data", [])
                if kind == "unexpected_error":
                    raise ActionError(message.get("message") or "unexpected error")
                if kind == "close_stream":
                    break
        raise ActionError("the event stream closed before the answer")


def file_urls(data) -> list[str]:
    """The URLs of the files in an answer's data (Gradio ``FileData``: images, galleries' images), which a browser
    fetches to show the answer."""
    if isinstance(data, dict):
        if data.get("url") and "path" in data:
            return [data["url"]]
        return [url for value in data.values() for url in file_urls(value)]
    if isinstance(data, (list, tuple)):
        return [url for value in data for url in file_urls(value)]
    return []


async def fetch_files(http, data) -> None:
    """Download every file of an answer, at once, as a browser showing it would (serving them is the app's work)."""
    responses = await asyncio.gather(*(http.get(url, headers=API_HEADERS) for url in file_urls(data)))
    failed = [r for r in responses if r.status_code != 200]
    if failed:
        raise ActionError(f"file download: HTTP {failed[0].status_code} for {failed[0].url}")


async def http_learner(number: int, http, api: GradioApi, questions: int, share: float, start: asyncio.Event,
                       timings: dict, errors: dict, files: bool = True, seeded: bool = False) -> None:
    async with HttpSession(http, api) as session:
        await start.wait()
        for action, kwargs in session_plan(number, questions, share, seeded):
            began = time.perf_counter()
            try:
                data = await session.call(ENDPOINTS[action], **kwargs)
                if files:
                    await fetch_files(http, data)
            except Exception as error:  # a failed action is counted, and the session goes on
                record_error(errors, action, error)
                continue
            timings[action].append(time.perf_counter() - began)


async def http_class(url: str, learners: int, questions: int, share: float, timings: dict, errors: dict,
                     clock_starts, files: bool = True, seeded: bool = False) -> None:
    import httpx

    api = GradioApi.fetch(url)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)  # two streams per learner at most
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as http:
        start = asyncio.Event()
        tasks = [asyncio.create_task(http_learner(i, http, api, questions, share, start, timings, errors, files,
                                                       seeded))
                 for i in range(learners)]
        await asyncio.sleep(0.5)  # the heartbeats connected, as the gradio clients are before the clock starts
        clock_starts()
        start.set()
        await asyncio.gather(*tasks)


# ------------------------------------------------------------- the heavy client: gradio_client, one per learner

def gradio_learner(number: int, client, questions: int, share: float, start: threading.Barrier, timings: dict,
                   errors: dict, lock: threading.Lock, seeded: bool = False) -> None:
    """Learner ``number``'s session through its own ``gradio_client.Client``; each action's wall time goes to
    ``timings[action]``, failures to ``errors``."""
    start.wait()
    for action, kwargs in session_plan(number, questions, share, seeded):
        began = time.perf_counter()
        try:
            client.predict(api_name=ENDPOINTS[action], **kwargs)
        except Exception as error:  # a failed action is counted, and the session goes on
            with lock:
                record_error(errors, action, error)
            continue
        with lock:
            timings[action].append(time.perf_counter() - began)


def gradio_class(url: str, learners: int, questions: int, share: float, timings: dict, errors: dict,
                 clock_starts, seeded: bool = False) -> None:
    from gradio_client import Client

    # connected before the clock starts; a learner waits as long as it takes (no client-side read timeout)
    clients = [Client(url, verbose=False, httpx_kwargs={"timeout": CLIENT_TIMEOUT_S}, analytics_enabled=False,
                      download_files=tempfile.mkdtemp(prefix="pathsynth-load-")) for _ in range(learners)]
    lock, start = threading.Lock(), threading.Barrier(learners + 1)
    threads = [threading.Thread(target=gradio_learner, args=(i, c, questions, share, start, timings, errors, lock, seeded))
               for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    clock_starts()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()


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
                                               process.pid if process is not None else None, client=args.client,
                                               files=args.files, seeded=args.seeded)
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
    rows = summarise(timings, errors)
    print_table(rows)
    result = {"client": args.client, "files_downloaded": args.files or args.client == "gradio", "learners": args.learners, "questions": args.questions,
              "generated_share": args.generated_share, "url": args.url or "started here", "wall_s": round(wall, 2),
              "cold": args.cold, "seeded": args.seeded, "first_page_s": getattr(args, "first_page_s", None),
              "arrive_after_s": args.arrive_after if args.cold else None,
              "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0], "machine": platform.node(), **cpu,
              "actions": rows,
              "errors": errors, "raw_s": {a: [round(v, 4) for v in t] for a, t in timings.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"class of {args.learners} ({args.client} client) finished in {wall:.1f} s (CPU s used: {cpu}); "
          f"JSON: {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
