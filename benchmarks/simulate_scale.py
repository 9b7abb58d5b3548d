"""How fast the simulator runs and how closely its log matches Yambda-50M's shape.

Runs ``argusrec.simulate`` at its default size and, with ``--users N``, at N users with full
activity (``--users 10000`` is Yambda-50M's size, ~48M events), then prints a Markdown table of
events, wall time, peak memory and the per-user / per-item event distributions beside Yambda-50M's
(read from ``../shared/data/yambda-schema/YambdaStats_50m.csv`` relative to the repo root; only our
columns when it is absent), and writes the numbers as JSON.

    python benchmarks/simulate_scale.py --users 10000 --out /tmp/sim-bench

Peak memory is ``ru_maxrss`` of this whole process, read after each run: the high-water mark so
far, so a later (bigger) run's figure covers the earlier ones too.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from argusrec.simulate import SimulationSummary, SimulatorConfig, simulate

ROOT = Path(__file__).resolve().parents[1]
YAMBDA_STATS = ROOT.parent / "shared" / "data" / "yambda-schema" / "YambdaStats_50m.csv"
STATS = ("mean", "std", "min", "25%", "50%", "75%", "max")


def yambda_reference(path: Path = YAMBDA_STATS) -> dict[str, Any] | None:
    """Yambda-50M's multi_event numbers in the same shape as our runs, or None without the file."""
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = {row["interaction"]: row for row in csv.DictReader(f)}
    multi, listens = rows["multi_event"], float(rows["listens"]["total_interactions"])
    return {
        "name": "Yambda-50M",
        "events": int(float(multi["total_interactions"])),
        "users": int(float(multi["unique_users"])),
        "items": int(float(multi["unique_items"])),
        "listens": int(listens),
        **{f"{kind}_per_listen": float(rows[kind]["total_interactions"]) / listens
           for kind in ("likes", "dislikes", "unlikes", "undislikes")},
        "user_events": {s: float(multi[f"user_{s}"]) for s in STATS},
        "item_events": {s: float(multi[f"item_{s}"]) for s in STATS},
    }


def measure(name: str, config: SimulatorConfig, out: Path) -> dict[str, Any]:
    """Run one simulation and collect its numbers."""
    summary: SimulationSummary = simulate(config, out, progress=True, overwrite=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    listens = max(summary.listens, 1)
    return {
        "name": name,
        "config": json.loads(config.resolved().model_dump_json()),
        "events": summary.events,
        "users": summary.users,
        "items": summary.items,
        "catalogue_items": summary.catalogue_items,
        "artists": summary.artists,
        "listens": summary.listens,
        "likes_per_listen": summary.likes / listens,
        "dislikes_per_listen": summary.dislikes / listens,
        "unlikes_per_listen": summary.unlikes / listens,
        "undislikes_per_listen": summary.undislikes / listens,
        "organic_share": summary.organic_share,
        "wall_seconds": summary.wall_seconds,
        "events_per_second": summary.events / summary.wall_seconds,
        "peak_rss_mb_process": peak_mb,
        "output_mb": size_mb,
        "user_events": summary.user_events,
        "item_events": summary.item_events,
        "summary": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(summary).items()},
    }


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "float1":
        return f"{value:,.1f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def markdown(columns: list[dict[str, Any]]) -> str:
    """The comparison table: one column per run (and Yambda-50M last, when known)."""
    rows: list[tuple[str, Any, str]] = [
        ("events", lambda c: c.get("events"), "int"),
        ("users", lambda c: c.get("users"), "int"),
        ("items with events", lambda c: c.get("items"), "int"),
        ("catalogue items", lambda c: c.get("catalogue_items"), "int"),
        ("listens", lambda c: c.get("listens"), "int"),
        ("likes / listens", lambda c: c.get("likes_per_listen"), "pct"),
        ("dislikes / listens", lambda c: c.get("dislikes_per_listen"), "pct"),
        ("unlikes / listens", lambda c: c.get("unlikes_per_listen"), "pct"),
        ("undislikes / listens", lambda c: c.get("undislikes_per_listen"), "pct"),
        ("organic share (all events)", lambda c: c.get("organic_share"), "pct"),
        ("wall time, s", lambda c: c.get("wall_seconds"), "float1"),
        ("events / s", lambda c: c.get("events_per_second"), "int"),
        ("peak RSS of the process, MB", lambda c: c.get("peak_rss_mb_process"), "int"),
        ("output on disk, MB", lambda c: c.get("output_mb"), "int"),
    ]
    for group, label in (("user_events", "events per user"), ("item_events", "events per item")):
        for s in STATS:
            rows.append((f"{label}: {s}", lambda c, g=group, s=s: c.get(g, {}).get(s), "num"))
    lines = ["| metric | " + " | ".join(c["name"] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for label, get, kind in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(get(c), kind) for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=None,
                        help="also run this many users at full activity (10000 = Yambda-50M)")
    parser.add_argument("--events-scale", type=float, default=1.0,
                        help="events_scale of the --users run (default 1.0, Yambda's activity)")
    parser.add_argument("--out", type=Path, default=None,
                        help="parent directory of the generated logs (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                        "simulate_scale.json", help="where to write the results as JSON")
    parser.add_argument("--clean", action="store_true",
                        help="delete the generated logs afterwards (always, with a temp --out)")
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="simulate-scale-"))
    runs = [measure(f"default (users={SimulatorConfig().users})", SimulatorConfig(),
                    out / "default")]
    if args.users is not None:
        config = SimulatorConfig(users=args.users, events_scale=args.events_scale)
        runs.append(measure(f"users={args.users:,}", config, out / f"users-{args.users}"))
    if args.clean or args.out is None:
        shutil.rmtree(out, ignore_errors=True)

    yambda = yambda_reference()
    print(markdown(runs + ([yambda] if yambda else [])))
    if yambda is None:
        print(f"\n(Yambda-50M statistics not found at {YAMBDA_STATS}; only our runs shown.)")
    result = {
        "runs": runs,
        "yambda_50m": yambda,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "date": time.strftime("%Y-%m-%d", time.gmtime())},
        "command": " ".join(sys.argv),
        "note": "peak_rss_mb_process is ru_maxrss of the whole benchmark process after the run",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_suffix(".json.tmp")  # a crash never leaves half a JSON file
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.json)
    print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
