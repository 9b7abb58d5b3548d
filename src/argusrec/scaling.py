"""FLOPs per token, and `argus scaling`: test entropy against model size at equal tokens.

The ARGUS paper (arXiv 2507.15994, "Scaling") reports next-item and feedback entropy falling
log-linearly with the encoder's parameter count. :func:`run_scaling` trains several sizes on the
same data for the same number of training tokens, evaluates each on the test period, fits
entropy = a + b log10(parameters), and plots both to a PNG.

:func:`flops_per_token` is the analytic training cost used for utilisation (MFU) figures:
3 x the forward pass, whose matmuls cost 2 FLOPs per weight per token, plus attention scores
and values over the causal half of the window, plus the heads and the next-item logits.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from argusrec.model import ModelConfig, ModelOverrides
from argusrec.evaluate import evaluate
from argusrec.configs import apply_overrides
from argusrec.train import TrainConfig, pretrain

log = logging.getLogger(__name__)


def flops_per_token(cfg: ModelConfig, *, negatives: int = 3072, feedback_signals: int = 3
                    ) -> dict[str, float]:
    """Training FLOPs per event (forward + backward = 3 x forward), by part.

    ``negatives`` is the number of item vectors each target is scored against (the catalogue
    for the full softmax; in-batch + uniform for the sampled ones).
    """
    D, L = cfg.d_model, cfg.n_layers
    tokens_per_event = 3 if cfg.variant == "full" else 1
    S = tokens_per_event * cfg.max_len
    if cfg.encoder == "hstu":
        per_layer = 2 * (4 * D * D + D * D)  # f1 (D -> 4D) and f2 (D -> D)
    else:
        per_layer = 2 * (4 * D * D + 2 * cfg.ff_mult * D * D)  # qkv + out, feed-forward
    attention = L * 2 * 2 * (S / 2) * D  # QK^T and AV over the causal half, per token
    encoder = tokens_per_event * (L * per_layer + attention)
    U = cfg.user_dim
    hidden = cfg.head_hidden or D
    heads = 2 * (2 * D * hidden + hidden * U) + 2 * (3 * D * hidden + hidden * feedback_signals)
    logits = 2 * U * negatives
    forward = {"encoder": encoder, "heads": heads, "logits": logits}
    return {k: 3.0 * v for k, v in forward.items()} | {"total": 3.0 * sum(forward.values())}


class ScalingConfig(BaseModel):
    """What `argus scaling` trains."""

    model_config = ConfigDict(extra="forbid")

    sizes: list[ModelOverrides] = Field(
        default_factory=lambda: [ModelOverrides(d_model=d, n_layers=n)
                                 for d, n in ((32, 2), (64, 2), (128, 3), (256, 4))],
        description="model sizes (ModelConfig fields; d_model and n_layers at least) to "
        "compare")
    tokens: int = Field(2_000_000, ge=1, description="training tokens per size")
    batch_size: int = Field(16, ge=1)
    max_len: int = Field(256, ge=2)
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(objective={"next_item_loss": "corrected",
                                                       "num_uniform": 512},
                                            optim={"lr": 1e-3, "warmup_steps": 50}),
        description="pretraining shared by every size (its model size, batch and steps "
        "are set per size)")

    @field_validator("sizes")
    @classmethod
    def _sized(cls, sizes: list) -> list:
        for i, size in enumerate(sizes):
            if size.d_model is None or size.n_layers is None:
                raise ValueError(f"sizes[{i}] needs d_model and n_layers")
        return sizes

    @field_serializer("sizes")
    def _only_given(self, sizes: list) -> list[dict[str, Any]]:
        return [size.model_dump(exclude_none=True) for size in sizes]


def run_scaling(data: str | Path, out: str | Path, cfg: ScalingConfig | None = None, *,
                threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train every size for the same tokens; write scaling.json and scaling.png into ``out``."""

    cfg = cfg or ScalingConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for given in cfg.sizes:
        size = given.model_dump(exclude_none=True)
        width, layers = size["d_model"], size["n_layers"]
        name = f"d{width}-l{layers}"
        heads = max(1, width // 32)
        steps = max(1, cfg.tokens // (cfg.batch_size * cfg.max_len))
        fields = apply_overrides(cfg.train.model_dump(), {
            "preset": "debug", "batch_size": cfg.batch_size, "max_steps": steps,
            "threads": threads, "checkpoint_every": 10**9,
            "model.d_model": width, "model.n_layers": layers, "model.n_heads": heads,
            "model.user_dim": width, "model.max_len": cfg.max_len,
            "model.hash_table_size": 524_288, **{f"model.{k}": v for k, v in size.items()
                                                 if k not in ("d_model", "n_layers")}})
        if progress:
            log.info("== %s: %d steps of %d x %d ==", name, steps, cfg.batch_size, cfg.max_len)
        run_dir = out / name
        started = time.perf_counter()
        summary = pretrain(data, run_dir, TrainConfig(**fields), progress=progress)
        results = evaluate(run_dir, ks=(10, 100), progress=False)
        fp = [v for k, v in results.items() if k.startswith("logloss/")]
        rows.append({"size": name, "encoder_parameters": summary.parameters["encoder"],
                     "tokens": summary.tokens, "seconds": time.perf_counter() - started,
                     "entropy_next_item": results["entropy/next_item"],
                     "entropy_feedback": float(np.mean(fp)) if fp else math.nan,
                     "HR@100": results.get("HR@100", math.nan),
                     "NDCG@10": results.get("NDCG@10", math.nan)})
    result = {"config": cfg.model_dump(), "rows": rows,
              "fit": {key: fit_log_linear([r["encoder_parameters"] for r in rows],
                                          [r[key] for r in rows])
                      for key in ("entropy_next_item", "entropy_feedback")}}
    tmp = out / "scaling.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out / "scaling.json")
    plot_scaling(result, out / "scaling.png")
    return result


def fit_log_linear(params: list[float], values: list[float]) -> dict[str, float]:
    """Least squares value = a + b log10(params); a, b and R^2 (NaN values are left out)."""
    x = np.log10(np.asarray(params, dtype=np.float64))
    y = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(y)
    if ok.sum() < 2:
        return {"a": math.nan, "b": math.nan, "r2": math.nan}
    b, a = np.polyfit(x[ok], y[ok], 1)
    pred = a + b * x[ok]
    ss = float(((y[ok] - y[ok].mean()) ** 2).sum())
    r2 = 1.0 - float(((y[ok] - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    return {"a": float(a), "b": float(b), "r2": r2}


def plot_scaling(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    params = np.array([r["encoder_parameters"] for r in rows], dtype=np.float64)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in zip(axes, ("entropy_next_item", "entropy_feedback"),
                              ("next-item entropy (test)", "feedback entropy (test)")):
        y = np.array([r[key] for r in rows], dtype=np.float64)
        ax.scatter(params, y, color="C0")
        fit = result["fit"][key]
        if not math.isnan(fit["b"]):
            xs = np.logspace(np.log10(params.min()), np.log10(params.max()), 50)
            ax.plot(xs, fit["a"] + fit["b"] * np.log10(xs), color="C1",
                    label=f"{fit['a']:.3f} {fit['b']:+.3f} log10(N), R²={fit['r2']:.2f}")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("encoder parameters")
        ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
