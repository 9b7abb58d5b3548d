"""Process pools whose workers exit when the process that started them dies.

A :class:`~concurrent.futures.ProcessPoolExecutor` queues work ahead of its workers, so a
worker whose parent was killed (``kill``, a cluster scheduler's SIGTERM, a closed notebook
kernel) keeps taking the queued runs and trains them for nobody. Each worker started here
watches its parent's pid and exits within about a second of the parent's death.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

# How often a worker checks that its parent is alive (seconds).
WATCH_EVERY = 0.5


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: a daemon thread ends this process once ``parent`` is gone."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_EVERY)
        os._exit(1)  # nobody is left to take the result; atomic writes leave no half files

    threading.Thread(target=watch, name="argus-parent-watch", daemon=True).start()


def process_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes that exit when this process dies."""
    return ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
