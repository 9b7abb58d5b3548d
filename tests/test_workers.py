"""A pool's workers die with the process that started them: a killed or interrupted `argus
study` or `argus bench` leaves nothing training for nobody. The plain ProcessPoolExecutor is
the reference that shows the test can fail: its worker outlives its killed parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.processes,
              pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")]

PARENT = textwrap.dedent("""
    import multiprocessing as mp, os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from argusrec.workers import process_pool

    if __name__ == "__main__":
        if sys.argv[1] == "interrupted":  # Ctrl-C while a run trains and another is queued
            with process_pool(1) as pool:
                print(pool.submit(os.getpid).result(), flush=True)
                pool.submit(time.sleep, 60)
                pool.submit(time.sleep, 60)
                raise KeyboardInterrupt
        pools = process_pool(1)  # held: the with block of a running study
        pool = (pools.__enter__() if sys.argv[1] == "watched"
                else ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")))
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 60)
        time.sleep(60)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its entry waits to be reaped


def _orphan_after_parent_killed(tmp_path: Path, kind: str, wait: float) -> tuple[int, bool]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), kind], stdout=subprocess.PIPE,
                              text=True)
    worker = int(parent.stdout.readline())
    assert _alive(worker)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + wait
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return worker, _alive(worker)


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    _, alive = _orphan_after_parent_killed(tmp_path, "watched", wait=10)
    assert not alive


def test_a_plain_pool_worker_outlives_its_killed_parent(tmp_path):
    worker, alive = _orphan_after_parent_killed(tmp_path, "plain", wait=2)
    try:
        assert alive
    finally:
        if alive:
            os.kill(worker, signal.SIGKILL)


def test_an_exception_in_the_pool_cancels_the_queue_and_ends_the_workers(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    started = time.monotonic()
    parent = subprocess.Popen([sys.executable, str(script), "interrupted"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    _, err = parent.communicate(timeout=30)  # a plain pool would wait 2 x 60 s here
    assert parent.returncode != 0 and "KeyboardInterrupt" in err
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)
