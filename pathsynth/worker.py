"""``pathsynth worker``: fill the verified-image pool that the app replicas take from, apart from serving.

A worker loads the models (CPU or GPU: ``$PATHSYNTH_DEVICE``), opens the app's database (``$PATHSYNTH_DATABASE_URL``,
e.g. the PostgreSQL every replica shares; by default the SQLite file under ``$PATHSYNTH_HOME``) and keeps the
pool's stock (``pathsynth.stock.DatabaseStock``) at ``$PATHSYNTH_POOL_PER_TISSUE`` verified, explained images per
tissue. Replicas started with ``PATHSYNTH_POOL_FILLER=workers`` only take from that stock (a claimed row is locked
with ``FOR UPDATE SKIP LOCKED`` and deleted), so generation scales with the number of workers, not of replicas.
Several workers may fill one stock: each tops up what it sees missing, so the stock may briefly hold a few extra.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time

from .settings import Settings

logger = logging.getLogger("pathsynth.worker")
REPORT_EVERY_S = 30.0


def run_worker(settings: Settings, stop: threading.Event | None = None, until_full: bool = False,
               report_every_s: float = REPORT_EVERY_S) -> dict[int, int]:
    """Fill the stock until ``stop`` is set (or SIGTERM / Ctrl-C; with ``until_full``: until it is full), logging
    the stock every ``report_every_s``; returns the stock per tissue at the end."""
    from .services import Services

    if settings.pool_per_tissue <= 0:
        raise ValueError("PATHSYNTH_POOL_PER_TISSUE is 0: a worker has no pool to fill")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    services = Services.build(dataclasses.replace(settings, pool_filler="app"), serve_first=True)
    pool, started = services.pool, time.perf_counter()
    where = services.store.database.url.render_as_string(hide_password=True)
    logger.info("worker: filling the pool in %s to %d images per tissue", where, settings.pool_per_tissue)
    try:
        while not stop.is_set():
            full = pool.full
            logger.info("worker: stock %s (%s) after %.0f s", pool.stock(), "full" if full else "filling",
                        time.perf_counter() - started)
            if until_full and full:
                break
            stop.wait(min(report_every_s, 2.0) if until_full else report_every_s)
    except KeyboardInterrupt:
        pass
    finally:
        pool.stop(timeout=60)
    return pool.stock()
