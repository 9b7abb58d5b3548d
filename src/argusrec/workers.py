"""Process pools that stop when the process that started them stops.

A plain :class:`~concurrent.futures.ProcessPoolExecutor` goes on after its parent is gone or
interrupted, in two ways:
- it queues work ahead of its workers, so a worker whose parent was killed (``kill``, a
  scheduler's SIGTERM, a closed notebook kernel) keeps taking the queued runs and trains them
  for nobody;
- leaving its ``with`` block on an exception (Ctrl-C, one run's error) waits for every run
  still queued, so Ctrl-C on ``argus study --jobs 2`` did not stop the study.

Each worker started here watches its parent's pid and exits within a second of its death, and
an exception inside :func:`process_pool` cancels the queued runs and ends the workers before it
propagates. Finished runs are on disk (atomic writes), so a rerun reuses them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

# How often a worker checks that its parent is alive (seconds).
WATCH_EVERY = 0.5


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: a daemon thread ends this process once ``parent`` is gone."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_EVERY)
        os._exit(1)  # nobody is left to take the result; atomic writes leave no half files

    threading.Thread(target=watch, name="argus-parent-watch", daemon=True).start()


def _end_workers(pool: ProcessPoolExecutor) -> None:
    pool.shutdown(wait=False, cancel_futures=True)
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


@contextmanager
def process_pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """``jobs`` spawned worker processes that end with this process, or with an exception
    raised inside the ``with`` block (the queued runs are cancelled)."""
    pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        _end_workers(pool)
        raise
    pool.shutdown(wait=True)
