#!/usr/bin/env python3
"""PathSynth for a class that one process cannot serve: PostgreSQL, app replicas, pool workers and nginx, on one machine.

    python deploy/stack.py --dir /srv/pathsynth [--port 8080] [--replicas 2] [--workers 1]

starts, in ``--dir``: a PostgreSQL server (``postgres/``; made with ``initdb`` the first time, as the ``postgres``
user when run as root), ``--workers`` ``pathsynth worker`` processes that fill the verified-image pool in the
database, ``--replicas`` app processes (``python app.py``) that serve pages and take from that pool
(``PATHSYNTH_POOL_FILLER=workers``), and nginx (``deploy/nginx.conf``) on ``--port``, keeping each browser on one
replica. It prints the address once every part answers, then waits; Ctrl-C or SIGTERM stops everything. Every log
is in ``--dir`` (``replica-N.log``, ``worker-N.log``, ``postgres/server.log``, ``nginx/error.log``).

Replicas share one ``PATHSYNTH_HOME`` (``--dir``/home: the key browsers' remembered names are encrypted with) and
the database, so a browser moved to another replica when its own dies resumes what it was doing. On several
machines: run PostgreSQL once, give every replica and worker its URL (``PATHSYNTH_DATABASE_URL``) and the same
``browser_state.key`` in their homes, and list the replicas in nginx's ``upstream`` (see docs/deployment.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pathsynth.storage.server import start_postgres, stop_postgres

ROOT = Path(__file__).resolve().parent.parent
NGINX_TEMPLATE = Path(__file__).resolve().parent / "nginx.conf"
START_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Service:
    """One process of the stack: its command line, environment, log and (once started) its ``Popen``."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    url: str | None = None  # answers HTTP 200 when ready (None: ready once started)
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> "Service":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20) -> None:
        if not self.alive():
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


class Stack:
    """PostgreSQL, ``workers`` pool workers, ``replicas`` app replicas and nginx on ``port``, under ``directory``."""

    def __init__(self, directory: Path, port: int = 8080, replicas: int = 2, workers: int = 1,
                 env: dict[str, str] | None = None):
        self.directory, self.port = Path(directory).resolve(), port
        self.count = {"replicas": replicas, "workers": workers}
        self.env = {**os.environ, **(env or {})}
        self.url = f"http://127.0.0.1:{port}/"
        self.database_url = ""
        self.replicas: list[Service] = []
        self.workers: list[Service] = []
        self.nginx: Service | None = None

    # ------------------------------------------------------------------------------------------- PostgreSQL
    def start_postgres(self) -> str:
        """The server in ``postgres/`` (created the first time), listening on a free localhost port."""
        return start_postgres(self.directory / "postgres", free_port())

    def stop_postgres(self) -> None:
        stop_postgres(self.directory / "postgres")

    # ------------------------------------------------------------------------------------------- the app
    def app_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, "PATHSYNTH_HOME": str(self.directory / "home"), "PATHSYNTH_DATABASE_URL": self.database_url,
                "PATHSYNTH_POOL_FILLER": "workers", "GRADIO_SERVER_NAME": "127.0.0.1", "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": self.env.get("HF_HUB_OFFLINE", "1"), **extra}

    def start_workers(self) -> None:
        for n in range(1, self.count["workers"] + 1):
            command = [sys.executable, "-m", "pathsynth", "worker"]
            self.workers.append(Service(f"worker-{n}", command, self.app_env(),
                                        self.directory / f"worker-{n}.log").start())

    def start_replicas(self) -> None:
        for n in range(1, self.count["replicas"] + 1):
            port = free_port()
            self.replicas.append(Service(f"replica-{n}", [sys.executable, "app.py"], self.app_env(PORT=str(port)),
                                         self.directory / f"replica-{n}.log", f"http://127.0.0.1:{port}/").start())
            self.wait(self.replicas[-1:])

    def start_nginx(self) -> None:
        prefix = self.directory / "nginx"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / name).mkdir(parents=True, exist_ok=True)
            os.chmod(prefix / name, 0o777)  # nginx's worker runs as nobody when started by root
        upstreams = "\n".join(f"        server {replica.url[len('http://'):].rstrip('/')} max_fails=1 fail_timeout=30s;"
                              for replica in self.replicas)
        config = (NGINX_TEMPLATE.read_text().replace("@PREFIX@", str(prefix)).replace("@UPSTREAMS@", upstreams)
                  .replace("@LISTEN@", f"127.0.0.1:{self.port}"))
        (prefix / "nginx.conf").write_text(config)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx = Service("nginx", [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], self.env,
                             self.directory / "nginx.log", self.url).start()

    # ------------------------------------------------------------------------------------------- all of it
    def start(self) -> "Stack":
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self.database_url = self.start_postgres()
            print(f"PostgreSQL: {self.database_url}", flush=True)
            # one at a time: on a small machine a start competing with another can miss Gradio's own 3 s check
            # that its page answers, and stop; the workers' generating waits until the replicas serve
            self.start_replicas()
            self.start_workers()
            self.start_nginx()
            self.wait([self.nginx])
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self, services: list[Service]) -> None:
        """Until each of ``services`` answers HTTP 200 (a dead one stops the wait with the end of its log)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        for service in services:
            while not answers(service.url):
                if not service.alive() or time.monotonic() > deadline:
                    tail = service.log.read_text(errors="replace")[-3000:] if service.log.exists() else ""
                    raise RuntimeError(f"{service.name} did not start:\n{tail}")
                time.sleep(0.5)
            print(f"{service.name} ready at {service.url}", flush=True)

    def stop(self) -> None:
        for service in [self.nginx, *self.replicas, *self.workers]:
            if service is not None:
                service.stop()
        self.stop_postgres()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, type=Path, help="where the database, logs and homes live")
    parser.add_argument("--port", type=int, default=8080, help="nginx's port (default 8080)")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    stack = Stack(args.dir, args.port, args.replicas, args.workers)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    stack.start()
    print(f"PathSynth is up: open {stack.url} (Ctrl-C stops it)", flush=True)
    try:
        while all(service.alive() for service in [stack.nginx, *stack.replicas, *stack.workers]):
            time.sleep(2)
        print("a process stopped: see the logs in", args.dir, file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
