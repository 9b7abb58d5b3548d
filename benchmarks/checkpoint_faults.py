"""Fault experiments on training checkpoints: kill -9, damaged checkpoints, divergence.

    python benchmarks/checkpoint_faults.py --work /tmp/argus-faults

On a small simulated service (the debug preset, 300 steps, a checkpoint every 25):

1. a reference run goes straight to the end;
2. for each damage (the newest checkpoint's weights truncated, emptied, its resume state
   damaged, the checkpoint directory deleted under a `latest` that still names it): a run is
   killed with SIGKILL after its third checkpoint, the newest checkpoint is damaged, and
   `argus pretrain --resume` must pass over it, resume from the one before, and end on the
   reference's final loss;
3. divergence: `--lr 1e6` from the reference's weights, and a run started from weights with a
   NaN planted in them; each must stop with a clear error (exit 2), write no non-finite
   checkpoint, and leave the earlier good checkpoint untouched.

Prints a table and writes benchmarks/results/checkpoint_faults.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import markdown_table, write_json

ARGUS = str(Path(sys.executable).with_name("argus"))
STEPS, EVERY = 300, 25


def argus(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([ARGUS, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"argus {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def final_loss(output: str) -> float:
    return float(output.split("loss ")[1].split(",")[0])


def steps_of(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step-*"))


def killed_run(data: Path, run: Path, config: Path) -> list[str]:
    """Start a run and SIGKILL it once three checkpoints exist; the checkpoints left."""
    proc = subprocess.Popen([ARGUS, "pretrain", str(data), str(run), "--config", str(config),
                             "--max-steps", str(STEPS), "--quiet", "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (run / "checkpoints").exists() and len(list((run / "checkpoints").glob(
                "step-*"))) >= 2 and (run / "checkpoints" / f"step-{3 * EVERY:08d}").exists():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    return steps_of(run)


def damage(checkpoint: Path, kind: str) -> None:
    weights = checkpoint / "model.safetensors"
    if kind == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif kind == "empty weights":
        weights.write_bytes(b"")
    elif kind == "damaged resume state":
        (checkpoint / "state.safetensors").write_bytes(b"\0" * 64)
    elif kind == "dangling latest":
        shutil.rmtree(checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/argus-faults"))
    args = parser.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    argus("simulate", str(work / "sim"), "--users", "100", "--quiet")
    argus("prepare", str(work / "sim"), str(work / "data"), "--gap", "1800",
          "--test-duration", "86400", "--quiet")
    config = work / "train.yaml"
    config.write_text(f"checkpoint_every: {EVERY}\nkeep_checkpoints: 2\nbatch_size: 8\n")
    data = work / "data"
    reference = argus("pretrain", str(data), str(work / "reference"), "--config", str(config),
                      "--max-steps", str(STEPS), "--quiet", "--threads", "1")
    expected = final_loss(reference.stdout)
    rows, results = [], {"reference_final_loss": expected, "faults": []}
    for kind in ("truncated weights", "empty weights", "damaged resume state",
                 "dangling latest"):
        run = work / kind.replace(" ", "-")
        left = killed_run(data, run, config)
        newest = run / "checkpoints" / left[-1]
        damage(newest, kind)
        resumed = argus("pretrain", str(data), str(run), "--resume", "--quiet", "--threads",
                        "1", check=False)
        note = next((line for line in resumed.stderr.splitlines() if "passed over" in line), "")
        loss = final_loss(resumed.stdout) if resumed.returncode == 0 else float("nan")
        record = {"fault": f"SIGKILL after {left[-1]}, then {kind}", "exit": resumed.returncode,
                  "resumed_from": note.split("resuming from ")[-1] if note else None,
                  "final_loss": loss, "matches_reference": abs(loss - expected) < 1e-6,
                  "traceback": "Traceback" in resumed.stderr}
        results["faults"].append(record)
        rows.append([record["fault"], record["exit"], record["resumed_from"], f"{loss:.6f}",
                     record["matches_reference"]])
    # divergence
    good = work / "reference" / "checkpoints" / steps_of(work / "reference")[-1]
    before = (good / "model.safetensors").read_bytes()
    wild = argus("pretrain", str(data), str(work / "wild"), "--init-from",
                 str(work / "reference"), "--lr", "1e6", "--max-steps", "50", "--quiet",
                 check=False)
    import torch
    from safetensors.torch import load_file, save_file

    poisoned = work / "poisoned"
    shutil.copytree(work / "reference", poisoned)
    last = poisoned / "checkpoints" / steps_of(poisoned)[-1] / "model.safetensors"
    weights = load_file(str(last))
    weights["start"] = weights["start"] * float("nan")
    save_file(weights, str(last))
    nan = argus("pretrain", str(data), str(work / "nan"), "--init-from", str(poisoned),
                "--max-steps", "50", "--quiet", check=False)
    for name, proc, run in (("--lr 1e6 from a good run", wild, work / "wild"),
                            ("a NaN planted in the initial weights", nan, work / "nan")):
        written = steps_of(run) if (run / "checkpoints").exists() else []
        finite = all(bool(torch.isfinite(t).all()) for s in written
                     for t in load_file(str(run / "checkpoints" / s /
                                            "model.safetensors")).values())
        lines = proc.stderr.strip().splitlines()
        message = next((x for x in lines if x.startswith("error:")), lines[-1] if lines else "")
        skipped = sum("is skipped" in x for x in lines)
        record = {"fault": name, "exit": proc.returncode, "message": message,
                  "steps_skipped_with_a_warning": skipped,
                  "checkpoints_written": written, "all_written_finite": finite,
                  "traceback": "Traceback" in proc.stderr}
        results["faults"].append(record)
        rows.append([name, proc.returncode, message[:90], "-", finite])
    results["good_checkpoint_untouched"] = (good / "model.safetensors").read_bytes() == before
    print(markdown_table(["fault", "exit", "resumed from / message", "final loss",
                          "ok (loss matches / weights finite)"], rows))
    print("reference final loss", expected, "; good checkpoint untouched:",
          results["good_checkpoint_untouched"])
    print("->", write_json("checkpoint_faults", results))


if __name__ == "__main__":
    main()
