"""How much a user's older history tells about the next item: recurrence and a count model.

On a prepared dataset (the output of `argus prepare`), for the next-item targets of the test
period, this reports:

- where each target's item last appeared in the history before it: within the last ``--near``
  events, only ``near+1..far`` events back, or in neither;
- the test log-likelihood (nats per target, higher is better) of a count model over the last W
  events, for each W in ``--windows``, against popularity alone:

      p(i) = (count of i in the last W events + alpha * pop(i)) / (min(W, history) + alpha)

  pop is the training-period popularity, add-one smoothed (as argusrec.ceilings scores it), so
  p is a distribution over the full catalogue, like a model's softmax; alpha is picked from
  ``--alphas`` on the validation period and the figure is the test period's. With the
  simulator's output as ``--oracle``, each figure also gets the share of the popularity-to-truth
  gap it closes (argusrec.ceilings.gap_closed).

    python benchmarks/history_information.py DATA [--oracle SIM_DIR] [--near 512 --far 2048]
        [--windows 512,1024,2048,4096,all] [--json NAME]

Which events: the targets are the ones `argus evaluate` scores (ceilings.split_targets, checked
here), each with the history its loader feeds (loader.split_history: the gap between splits is
never history). The recurrence shares and the ``listens`` column cover the *listens* among
them, the events the truth's ``entropy/next_item`` and ``popularity_entropy`` are scored on;
evaluate's own ``entropy/next_item`` averages -log p over *every* target, reactions and
revocations included (on the simulator's log about 2% more: its unlikes and undislikes), which
the ``all targets`` column covers. The gap closed is
taken on listens, where the truth is scored.

A count model that closes much of the gap with a longer W means the older events carry
information a sequence model over W events could use.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from _common import markdown_table, results_name, write_json
from argusrec.ceilings import gap_closed, oracle_ceilings, popularity_entropy, split_targets
from argusrec.errors import DataError
from argusrec.loader import split_history
from argusrec.sequences import SPLIT_CODES, PreparedData

ALL = None  # the window that holds the whole usable history


@dataclass(frozen=True)
class Targets:
    """The targets evaluate scores on one split, with the usable history of their users.

    ``history`` (H,) holds the item index of every usable event, users back to back; the
    history of target t is ``history[start[t]:position[t]]``. The other fields are (T,).
    """

    history: np.ndarray
    position: np.ndarray
    start: np.ndarray
    item: np.ndarray
    event_type: np.ndarray  # code: 1 + index into meta.json's event_types
    is_organic: np.ndarray  # stored code: 1 organic, 2 recommendation, 0 unknown

    def __len__(self) -> int:
        return len(self.item)


def split_events(data: PreparedData, split: str) -> Targets:
    """The targets of ``split`` and their histories, chosen as ceilings.split_targets does:
    every event of the split but a user's first usable one; users with fewer than two usable
    events left out."""
    code = SPLIT_CODES[split]
    parts: dict[str, list[np.ndarray]] = {f: [] for f in Targets.__dataclass_fields__}
    offset = 0
    for shard in data.shards:
        ev = shard.events
        split_of, items = np.asarray(ev["split"]), np.asarray(ev["item"])
        types = np.asarray(ev["event_type"])
        organic = (np.asarray(ev["ctx_is_organic"]) if "ctx_is_organic" in ev
                   else np.zeros_like(types))
        for j in tqdm(range(len(shard)), desc=f"{split} histories", leave=False):
            lo, hi = int(shard.offsets[j]), int(shard.offsets[j + 1])
            usable = lo + np.flatnonzero(split_history(split_of[lo:hi], code))
            if usable.size < 2:  # SequenceDataset's min_len
                continue
            local = 1 + np.flatnonzero(split_of[usable[1:]] == code)
            rows = usable[local]
            parts["history"].append(items[usable])
            parts["position"].append(offset + local)
            parts["start"].append(np.full(local.size, offset))
            parts["item"].append(items[rows])
            parts["event_type"].append(types[rows])
            parts["is_organic"].append(organic[rows])
            offset += usable.size
    return Targets(**{f: np.concatenate(p).astype(np.int64) if p else np.zeros(0, np.int64)
                      for f, p in parts.items()})


def window_counts(t: Targets, windows: list[int | None]) -> tuple[np.ndarray, np.ndarray]:
    """(T, W) how often each target's item occurs in each window of history before it, and
    (T, W) how many events that window holds (fewer than W where the history is shorter).

    Every usable event is keyed ``item * H + position`` and sorted: the occurrences of item i in
    positions [lo, hi) are the keys in [i*H + lo, i*H + hi), two binary searches per window.
    """
    H = max(len(t.history), 1)
    keys = np.sort(t.history * H + np.arange(len(t.history)))
    end = np.searchsorted(keys, t.item * H + t.position)
    counts = np.empty((len(t), len(windows)), dtype=np.int64)
    sizes = np.empty_like(counts)
    for c, w in enumerate(windows):
        lo = t.start if w is ALL else np.maximum(t.start, t.position - w)
        counts[:, c] = end - np.searchsorted(keys, t.item * H + lo)
        sizes[:, c] = t.position - lo
    return counts, sizes


def check_counts(t: Targets, windows: list[int | None], counts: np.ndarray,
                 sample: int = 300) -> None:
    """The plain recount, by slicing each history, of a few targets: the searchsorted path in
    :func:`window_counts` must agree with it."""
    for k in np.random.default_rng(0).choice(len(t), min(sample, len(t)), replace=False):
        for c, w in enumerate(windows):
            lo = t.start[k] if w is ALL else max(t.start[k], t.position[k] - w)
            assert counts[k, c] == np.count_nonzero(t.history[lo:t.position[k]] == t.item[k])


def count_loglik(counts: np.ndarray, sizes: np.ndarray, prior: np.ndarray,
                 alpha: float) -> np.ndarray:
    """(T,) log p(target) of the count model with prior ``prior`` (T,) at strength alpha."""
    return np.log((counts + alpha * prior) / (sizes + alpha))


def recurrence(near_far: np.ndarray) -> dict:
    """From (T, 2) counts of each target's item in the last ``near`` and ``far`` events: the
    shares of targets whose item is in the near window, only in the far one, or in neither."""
    in_near, in_far = near_far[:, 0] > 0, near_far[:, 1] > 0
    share = (lambda x: float(x.mean()) if len(x) else float("nan"))
    return {"n": len(near_far), "near": share(in_near), "only_far": share(in_far & ~in_near),
            "neither": share(~in_far)}


def parse_windows(text: str) -> list[int | None]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            out.append(ALL)
        elif part.isdigit() and int(part) >= 1:
            out.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"window {part!r} is neither a count >= 1 nor 'all'")
    return out


def parse_alphas(text: str) -> list[float]:
    try:
        out = [float(a) for a in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"alphas must be numbers, got {text!r}") from None
    if not all(a > 0 for a in out):
        raise argparse.ArgumentTypeError(f"alphas must be > 0, got {text!r}")
    return out


def check_targets(data: PreparedData, t: Targets) -> None:
    """These must be the events ceilings.split_targets (and so evaluate) scores, in order."""
    original = np.zeros(data.num_items + 1, dtype=np.int64)
    items = data.items()
    original[items["index"].to_numpy()] = items["item"].to_numpy()
    theirs = split_targets(data, "test")["item"].to_numpy()
    if not np.array_equal(original[t.item], theirs):
        raise SystemExit(f"{len(t):,} test targets here, {len(theirs):,} in "
                         "ceilings.split_targets, or another order: the selection has drifted "
                         "from argusrec's; update split_events")


def count_models(split: dict[str, Targets], windows: list[int | None], alphas: list[float],
                 pop: np.ndarray, listen: int) -> list[dict]:
    """One row per window: alpha tuned on the validation listens, test log-likelihood on the
    listens and on every target."""
    counts, sizes = {}, {}
    for name, t in split.items():
        counts[name], sizes[name] = window_counts(t, windows)
        check_counts(t, windows, counts[name])
    listens = {name: t.event_type == listen for name, t in split.items()}

    def loglik(name: str, c: int, alpha: float, mask: np.ndarray | slice) -> float:
        prior = pop[split[name].item[mask]]
        return float(count_loglik(counts[name][mask, c], sizes[name][mask, c], prior,
                                  alpha).mean())

    rows = []
    for c, w in enumerate(windows):
        alpha = max(alphas, key=lambda a: loglik("val", c, a, listens["val"]))
        rows.append({"model": "count, all history" if w is ALL else f"count, last {w}",
                     "window": "all" if w is ALL else w, "alpha": alpha,
                     "val_loglik_listens": loglik("val", c, alpha, listens["val"]),
                     "loglik_listens": loglik("test", c, alpha, listens["test"]),
                     "loglik_all": loglik("test", c, alpha, slice(None))})
    return rows


def open_data(path: Path) -> tuple[PreparedData, int]:
    """The prepared dataset and its listen event code; SystemExit with the fix if unusable."""
    try:
        data = PreparedData(path)
    except DataError as e:
        raise SystemExit(str(e)) from None
    types = data.info.fields.event_types
    if "listen" not in types:
        raise SystemExit(f"{path}: no 'listen' event type in meta.json (has {', '.join(types)});"
                         " the next-item truth and popularity figures are scored on listens")
    return data, types.index("listen") + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a prepared dataset directory")
    parser.add_argument("--oracle", type=Path, help="the simulator's output, for the gap closed")
    parser.add_argument("--near", type=int, default=512, help="the recent window, in events")
    parser.add_argument("--far", type=int, default=2048, help="the long window, in events")
    parser.add_argument("--windows", type=parse_windows, default=parse_windows(
        "512,1024,2048,4096,all"), help="count-model windows, comma-separated ('all' = all)")
    parser.add_argument("--alphas", type=parse_alphas, default=parse_alphas(
        "1,3,10,30,100,300,1000,3000,10000"), help="the prior strengths tried on validation")
    parser.add_argument("--json", default="history_information", type=results_name,
                        help="results/NAME.json")
    args = parser.parse_args()
    if not 1 <= args.near < args.far:
        parser.error(f"need 1 <= --near < --far, got {args.near} and {args.far}")
    started = time.perf_counter()
    data, listen = open_data(args.data)
    truth = None
    if args.oracle is not None:  # first: a wrong directory fails before the long part
        try:
            truth = oracle_ceilings(data, args.oracle, split="test")
        except DataError as e:
            raise SystemExit(str(e)) from None
    split = {name: split_events(data, name) for name in ("val", "test")}
    for name, t in split.items():
        if not np.any(t.event_type == listen):
            raise SystemExit(f"{args.data}: no {name} listens with history to score; prepare "
                             "the data with validation and test periods")
    test = split["test"]
    check_targets(data, test)
    is_listen = test.event_type == listen

    groups = {"all listens": is_listen}
    context = data.info.fields.context.get("is_organic")
    if context is not None:
        for code, value in enumerate(context.values, start=1):
            groups[value] = is_listen & (test.is_organic == code)
    near_far, _ = window_counts(test, [args.near, args.far])
    shares = [{"targets": name, **recurrence(near_far[mask])} for name, mask in groups.items()]

    pop = data.item_counts().astype(np.float64) + 1.0  # as ceilings.popularity_entropy
    pop[0] = 0.0
    pop /= pop.sum()
    pop_entropy = popularity_entropy(data, "test")
    if abs(np.log(pop[test.item[is_listen]]).mean() + pop_entropy) > 1e-9:
        raise SystemExit("the popularity figure here differs from ceilings.popularity_entropy: "
                         "the listens scored have drifted from argusrec's")
    models = [{"model": "popularity", "window": None, "alpha": None,
               "loglik_listens": -pop_entropy,
               "loglik_all": float(np.log(pop[test.item]).mean())},
              *count_models(split, args.windows, args.alphas, pop, listen)]
    if truth is not None:
        if int(truth["targets/next_item"]) != int(is_listen.sum()):
            raise SystemExit(f"the truth scores {int(truth['targets/next_item']):,} listens, "
                             f"this script {int(is_listen.sum()):,}")
        for row in models:
            row["gap_closed"] = 0.0 + gap_closed(  # 0.0 +: popularity's is 0, not -0
                -row["loglik_listens"], pop_entropy, truth["entropy/next_item"],
                higher_is_better=False)
    seconds = time.perf_counter() - started

    print(markdown_table(["test targets", "n", f"item in last {args.near}",
                          f"only {args.near + 1}..{args.far} back", "in neither"],
                         [[r["targets"], f"{r['n']:,}", f"{r['near']:.1%}",
                           f"{r['only_far']:.1%}", f"{r['neither']:.1%}"] for r in shares]))
    print()
    header = ["predictor", "alpha (val)", f"log-lik, listens ({int(is_listen.sum()):,})",
              f"log-lik, all targets ({len(test):,})"]
    rows = [[r["model"], "-" if r["alpha"] is None else f"{r['alpha']:g}",
             f"{r['loglik_listens']:.3f}", f"{r['loglik_all']:.3f}"] for r in models]
    if truth is not None:
        header.append("gap closed")
        for row, r in zip(rows, models):
            row.append(f"{r['gap_closed']:.0%}")
        rows.append(["truth (oracle)", "-", f"{-truth['entropy/next_item']:.3f}", "-", "100%"])
    print(markdown_table(header, rows))
    print(f"\n{seconds:.1f} s")
    result = {"data": str(args.data), "oracle": None if args.oracle is None else str(args.oracle),
              "near": args.near, "far": args.far, "alphas": args.alphas,
              "targets": {"test": len(test), "test_listens": int(is_listen.sum()),
                          "val_listens": int((split["val"].event_type == listen).sum())},
              "recurrence": shares, "count_model": models,
              "truth_entropy": None if truth is None else truth["entropy/next_item"],
              "popularity_entropy": pop_entropy, "seconds": seconds}
    print(f"wrote {write_json(args.json, result)}")


if __name__ == "__main__":
    main()
