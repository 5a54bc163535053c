"""A private PostgreSQL server in a folder: what the deployment stack (deploy/stack.py) and the test suite
(tests/conftest.py) start. initdb the first time, pg_ctl start on a localhost port, pg_ctl stop.

PostgreSQL refuses to run as root; as root its programs run as the ``postgres`` user (Debian's package makes it).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["as_server_user", "postgres_program", "start_postgres", "stop_postgres"]


def postgres_program(name: str) -> str:
    """The path of a PostgreSQL program (``initdb``, ``pg_ctl``): on PATH, else Debian's newest version."""
    found = shutil.which(name) or max(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), default=None,
                                       key=lambda path: int(Path(path).parts[-3].split(".")[0]))
    if found is None:
        raise FileNotFoundError(f"{name} not found: install PostgreSQL (Debian: apt-get install postgresql)")
    return found


def as_server_user() -> list[str]:
    """The command prefix that runs a PostgreSQL program: ``runuser -u postgres --`` as root, none otherwise."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(command: list[str], root: Path) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        log = (root / "server.log").read_text()[-800:] if (root / "server.log").exists() else ""
        program = next(Path(part).name for part in command if "initdb" in part or "pg_ctl" in part)
        raise RuntimeError(f"{program} failed: {done.stderr.strip()[-800:]} {log}")


def start_postgres(root: Path, port: int, throwaway: bool = False) -> str:
    """Start the server whose data is ``root``/data (created the first time, trust authentication) on
    127.0.0.1:``port``; its log is ``root``/server.log. ``throwaway``: no fsync (test data only). Returns the
    SQLAlchemy URL of its ``postgres`` database."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    prefix = as_server_user()
    if prefix:  # the postgres user must reach its folder (the folders above it must let others pass too)
        shutil.chown(root, "postgres")
        os.chmod(root.parent, root.parent.stat().st_mode | 0o711)
    if not (root / "data" / "PG_VERSION").exists():
        _run(prefix + [postgres_program("initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres",
                       "-E", "UTF8"] + (["--no-sync"] if throwaway else []), root)
    options = f"-p {port} -k {root} -h 127.0.0.1" + (" -F" if throwaway else "")
    _run(prefix + [postgres_program("pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"), "-w",
                   "-t", "60", "-o", options, "start"], root)
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def stop_postgres(root: Path, mode: str = "fast") -> None:
    """Stop the server of ``root`` if it runs (``mode``: pg_ctl's fast or immediate)."""
    data = Path(root) / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(as_server_user() + [postgres_program("pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"],
                       capture_output=True, timeout=120)
