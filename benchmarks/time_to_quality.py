"""Time to quality: a validation metric against wall-clock minutes, for several training runs.

Each run's TensorBoard log (written by `argus pretrain` with `--eval-every`) holds the
validation metric at every evaluation together with the wall time at which it was written.
This script puts the runs on one plot, minutes since each run's first logged step on the x
axis, so that a faster configuration shows as quality reached sooner; and it reports, per run,
the best value and the first minute at which each threshold was reached.

    python benchmarks/time_to_quality.py RUN_A RUN_B --labels default,reference \\
        --metric val/NDCG@10 --thresholds 0.15,0.18,0.19 --png docs/img/time-to-quality.png

Wall time includes validation and checkpoints, as a user waits for them. Runs being compared
should have been trained with nothing else running (say so where they were not).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import markdown_table, results_name, write_json


def curve(run: Path, metric: str) -> tuple[list[float], list[float], list[int]]:
    """(minutes since the run's first logged scalar, values, steps) of ``metric``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = EventAccumulator(str(run / "tensorboard"))
    log.Reload()
    tags = log.Tags()["scalars"]
    if metric not in tags:
        raise SystemExit(f"{run}: no {metric} in its TensorBoard log (has: {', '.join(tags)}); "
                         "train with --eval-every")
    start = min(log.Scalars(tag)[0].wall_time for tag in tags)
    points = log.Scalars(metric)
    return ([(p.wall_time - start) / 60 for p in points], [p.value for p in points],
            [p.step for p in points])


def first_reaching(minutes: list[float], values: list[float], threshold: float) -> float | None:
    return next((m for m, v in zip(minutes, values) if v >= threshold), None)


def plot(curves: dict[str, tuple], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    for label, (minutes, values, _) in curves.items():
        ax.plot(minutes, values, marker="o", markersize=3, label=label)
    ax.set_xlabel("wall-clock minutes")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="pretraining run directories")
    parser.add_argument("--labels", default=None, help="comma-separated, one per run")
    parser.add_argument("--metric", default="val/NDCG@10")
    parser.add_argument("--thresholds", default="", help="comma-separated metric values")
    parser.add_argument("--png", type=Path, default=None, help="where to write the plot")
    parser.add_argument("--json", default="time_to_quality", type=results_name,
                        help="results/NAME.json")
    args = parser.parse_args()
    labels = args.labels.split(",") if args.labels else [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit("give one label per run")
    thresholds = [float(t) for t in args.thresholds.split(",") if t]
    curves = {label: curve(run, args.metric) for label, run in zip(labels, args.runs)}
    rows, results = [], {}
    for label, (minutes, values, steps) in curves.items():
        reached = {str(t): first_reaching(minutes, values, t) for t in thresholds}
        best = max(range(len(values)), key=values.__getitem__)
        results[label] = {"minutes": minutes, "values": values, "steps": steps,
                          "best": values[best], "best_minute": minutes[best],
                          "first_minute_reaching": reached}
        rows.append([label, f"{values[best]:.4f}", f"{minutes[best]:.1f}",
                     *[("-" if m is None else f"{m:.1f}") for m in reached.values()]])
    print(markdown_table(["run", f"best {args.metric}", "at minute",
                          *[f"first >= {t}" for t in thresholds]], rows))
    if args.png is not None:
        plot(curves, args.metric, args.png)
        print(f"wrote {args.png}")
    print(f"wrote {write_json(args.json, {'metric': args.metric, 'runs': results})}")


if __name__ == "__main__":
    main()
