"""Fine-tuning ablations as one command: what pretraining, fine-tuning length and history length
are worth, each measured the same way (the final ranker's PairAccuracy uplift).

Variants (ARGUS paper, "Ablations"):

- ``history-<L>`` for each history length: pretrain with windows of L events, fine-tune, rank;
- ``no-pretraining``: the base history length, fine-tuned from random weights;
- ``short-finetune``: the base pretrained model, fine-tuned for a fraction of the steps.

The base history length's pretrained model is shared by its full and short fine-tuning.
Running the command again over the same OUT reuses the runs that finished.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from argusrec.finetune import FinetuneConfig, finetune
from argusrec.rank import RankConfig, rank
from argusrec.configs import apply_overrides
from argusrec.train import TrainConfig, pretrain

log = logging.getLogger(__name__)

# A small ARGUS model that trains on 2 cores in minutes (next-item + feedback, corrected logQ).
ABLATION_PRETRAIN = dict(preset="debug", model={"d_model": 64, "n_layers": 2, "n_heads": 2,
                                                "user_dim": 64, "time_buckets": 24},
                         objective={"next_item_loss": "corrected", "num_uniform": 512},
                         optim={"lr": 2e-3, "warmup_steps": 20}, batch_size=16, epochs=1)


class AblationConfig(BaseModel):
    """What `argus ablate` runs."""

    model_config = ConfigDict(extra="forbid")

    pretrain: TrainConfig = Field(default_factory=lambda: TrainConfig(**ABLATION_PRETRAIN),
                                  description="pretraining of every variant (its max_len and "
                                  "batch size are set per history length)")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig,
                                     description="fine-tuning of every variant")
    rank: RankConfig = Field(default_factory=RankConfig, description="the final ranker")
    history_lengths: list[int] = Field([128, 512, 2048], description="pretraining and "
                                       "fine-tuning windows to compare")
    base_history: int = Field(512, description="history of the other variants")
    tokens_per_batch: int | None = Field(
        8192, description="pretraining batch size = this / history, so every history length "
        "sees the same events per step (None: keep batch_size)")
    short_fraction: float = Field(0.1, gt=0, lt=1, description="short fine-tuning's share of "
                                  "the full fine-tuning's steps")
    no_pretraining: bool = Field(True, description="run the no-pretraining variant")
    short_finetune: bool = Field(True, description="run the short fine-tuning variant")


def ablate(data: str | Path, out: str | Path, cfg: AblationConfig | None = None, *,
           oracle: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every variant into ``out/<variant>`` and return (and write ``out/ablation.json``)
    one uplift row per variant."""
    cfg = cfg or AblationConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank_cfg = cfg.rank
    lengths = list(dict.fromkeys([*cfg.history_lengths, cfg.base_history]))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()

    def record(name: str, run: Path, steps: int, seconds: float) -> None:
        summary = rank(run, cfg=rank_cfg, oracle=oracle)
        by_model = {r["model"]: r for r in summary.rows}
        row = {"variant": name, "finetune_steps": steps, "seconds": round(seconds, 1),
               "argus_alone": by_model["ARGUS score alone"]["PairAccuracy"],
               "ranker": by_model["ranker, ordinary features"]["PairAccuracy"],
               "ranker_with_argus": by_model["ranker + ARGUS score"]["PairAccuracy"],
               "uplift": summary.uplift["ranker + ARGUS score: PairAccuracy"],
               "uplift_weighted": summary.uplift["ranker + ARGUS score: PairAccuracy/weighted"],
               "eval_pairs": summary.eval_pairs}
        if oracle is not None:
            row["oracle"] = by_model["oracle (true affinity, the ceiling)"]["PairAccuracy"]
        rows.append(row)
        if progress:
            log.info("   %s: PairAccuracy %.4f -> %.4f (%+.2f%%), ARGUS alone %.4f", name,
                     row["ranker"], row["ranker_with_argus"], 100 * row["uplift"],
                     row["argus_alone"])

    base_steps = None
    for length in lengths:
        name = f"history-{length}"
        t0 = time.perf_counter()
        overrides = {"model.max_len": length}
        if cfg.tokens_per_batch:
            overrides["batch_size"] = max(1, cfg.tokens_per_batch // length)
        train_cfg = TrainConfig(**apply_overrides(cfg.pretrain.model_dump(), overrides))
        if progress:
            log.info("== %s: pretrain (batch %d x %d) ==", name, train_cfg.batch_size, length)
        if not _finished(out / name / "pretrain"):
            pretrain(data, out / name / "pretrain", train_cfg, progress=progress)
        steps = _finetuned(out / name / "finetune") or finetune(
            data, out / name / "pretrain", out / name / "finetune",
            cfg.finetune, progress=progress).steps
        if length == cfg.base_history:
            base_steps = steps
        if length in cfg.history_lengths:
            record(name, out / name / "finetune", steps, time.perf_counter() - t0)
    base = out / f"history-{cfg.base_history}" / "pretrain"
    if cfg.no_pretraining:
        t0 = time.perf_counter()
        if progress:
            log.info("== no-pretraining: fine-tune from random weights ==")
        steps = _finetuned(out / "no-pretraining") or finetune(
            data, base, out / "no-pretraining",
            _changed(cfg.finetune, from_scratch=True), progress=progress).steps
        record("no-pretraining", out / "no-pretraining", steps, time.perf_counter() - t0)
    if cfg.short_finetune and base_steps:
        t0 = time.perf_counter()
        steps = max(1, int(round(cfg.short_fraction * base_steps)))
        if progress:
            log.info("== short-finetune: %d of %d steps ==", steps, base_steps)
        steps = _finetuned(out / "short-finetune") or finetune(
            data, base, out / "short-finetune",
            _changed(cfg.finetune, max_steps=steps), progress=progress).steps
        record("short-finetune", out / "short-finetune", steps, time.perf_counter() - t0)
    result = {"config": cfg.model_dump(), "rows": rows,
              "seconds": time.perf_counter() - started}
    tmp = out / "ablation.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out / "ablation.json")
    return result


def _changed(cfg: FinetuneConfig, **fields: Any) -> FinetuneConfig:
    """``cfg`` with ``fields`` set, validated again."""
    return FinetuneConfig(**{**cfg.model_dump(), **fields})


def _finished(run: Path) -> bool:
    """A pretraining run that reached its last step (re-running `ablate` skips it)."""
    return (run / "checkpoints" / "latest").exists()


def _finetuned(run: Path) -> int | None:
    """The steps of a finished fine-tuning run, or None."""
    summary = run / "finetune.json"
    return json.loads(summary.read_text())["steps"] if summary.exists() else None


def ablation_report(result: dict[str, Any]) -> str:
    rows = result["rows"]
    has_oracle = any("oracle" in r for r in rows)
    head = (f"  {'variant':<18} {'ft steps':>8} {'ARGUS':>7} {'ranker':>7} {'+ARGUS':>7} "
            f"{'uplift':>8} {'w-uplift':>8}" + (f" {'oracle':>7}" if has_oracle else ""))
    lines = ["PairAccuracy on the test period (ranker trained on the validation period)", head]
    for r in rows:
        lines.append(f"  {r['variant']:<18} {r['finetune_steps']:>8} {r['argus_alone']:>7.4f} "
                     f"{r['ranker']:>7.4f} {r['ranker_with_argus']:>7.4f} "
                     f"{100 * r['uplift']:>+7.2f}% {100 * r['uplift_weighted']:>+7.2f}%"
                     + (f" {r['oracle']:>7.4f}" if has_oracle else ""))
    return "\n".join(lines)
