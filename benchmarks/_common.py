"""Helpers shared by the benchmark scripts: machine description, timed child runs, output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1),
            "python": platform.python_version(), "torch": torch.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def run_child(argv: list[str]) -> dict:
    """Run a command in a fresh process; wall seconds and the child's peak RSS in GB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"failed: {' '.join(argv)}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss is the largest child so far (KiB on Linux); run the biggest job last.
    return {"seconds": seconds, "peak_rss_gb": max(peak, before) / 2**20,
            "stdout": proc.stdout, "stderr": proc.stderr}


_SHIM = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
         "print('ARGUS_PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
         "file=sys.stderr); sys.exit(code)")


def run_own_peak(argv: list[str]) -> dict:
    """:func:`run_child`, with the peak RSS of this command alone (not the largest child so
    far): the command runs under a small shim process that reports its own child's peak."""
    out = run_child([sys.executable, "-c", _SHIM, *argv])
    lines = out["stderr"].splitlines()
    peak = [int(x.split()[1]) for x in lines if x.startswith("ARGUS_PEAK_KIB")]
    out["peak_rss_gb"] = peak[-1] / 2**20 if peak else float("nan")
    out["stderr"] = "\n".join(x for x in lines if not x.startswith("ARGUS_PEAK_KIB"))
    return out


def results_name(name: str) -> str:
    """An argparse ``type`` for a results file's NAME: checked when the flags are read, not
    when a long run ends."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise argparse.ArgumentTypeError(
            f"{name!r}: give a plain name (no '/', not starting with '.'); the file goes to "
            "benchmarks/results/NAME.json")
    return name


def write_json(name: str, payload: dict) -> Path:
    """``payload`` with the machine and the command, as benchmarks/results/NAME.json (written
    whole, then renamed). ``name`` is a name, never a path: a script's ``--json /x`` must not
    write outside the results folder."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise SystemExit(f"results name {name!r}: give a plain name (no '/', not starting "
                         "with '.'); the file goes to benchmarks/results/NAME.json")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine(), "command": " ".join(sys.argv),
                               **payload}, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def start_service(root: Path, port: int, *, runtime: bool = True, **options) -> "subprocess.Popen":
    """`argusrec.serve.serve(root, port=port, ...)` in a child process, returned once
    /healthz answers (with the runtime path ready when ``runtime``); at most 300 s."""
    import httpx

    args = ", ".join(f"{k}={v!r}" for k, v in {"port": port, "runtime": runtime,
                                               **options}.items())
    proc = subprocess.Popen([sys.executable, "-c", "from argusrec.serve import serve; "
                             f"serve({str(root)!r}, {args})"])
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited at start-up")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            if r.status_code == 200 and (r.json()["runtime"] or not runtime):
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start within 300 s")


def stop_service(proc: "subprocess.Popen") -> None:
    """Stop a :func:`start_service` child as Ctrl-C would, killing it after 30 s."""
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _tree_rss_kib(root: int) -> int:
    """Resident memory of process ``root`` and every descendant (a JVM, its Python
    workers), in KiB, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry.name)] = int(fields.get("PPid", "0"))
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(children)
        frontier += children
    return sum(rss.get(p, 0) for p in tree)


def run_tree_peak(argv: list[str], env: dict | None = None, every: float = 0.25) -> dict:
    """Run a command; wall seconds and the peak of the summed RSS of its whole process tree
    (sampled every ``every`` s: Spark's driver JVM and Python workers are separate
    processes, which ru_maxrss does not add up)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peak = 0
    import threading

    out: dict[str, str] = {}
    readers = [threading.Thread(target=lambda s=s, n=n: out.__setitem__(n, s.read()))
               for s, n in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
    for r in readers:
        r.start()
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kib(proc.pid))
        time.sleep(every)
    for r in readers:
        r.join()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(out.get("stdout", "") + out.get("stderr", ""))
        raise SystemExit(f"failed: {' '.join(argv)}")
    return {"seconds": seconds, "peak_rss_gb": peak / 2**20, **out}
