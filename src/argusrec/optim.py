"""The optimizer and its schedule, composed by pretraining and fine-tuning alike.

AdamW with weight decay on matrices only (biases, norms and scalars are not decayed), a linear
warmup to the peak learning rate, then a cosine decay to ``min_lr_ratio`` of it at the last
step; gradient clipping and accumulation are the loop's (argusrec.fit).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field


class OptimConfig(BaseModel):
    """Optimizer and schedule."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a share of the peak")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay on matrices")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas")
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 = no clipping")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: matrices decayed, everything else not."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=cfg.betas)


def lr_factor(step: int, total: int, cfg: OptimConfig) -> float:
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``total``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_schedule(optimizer: torch.optim.Optimizer, total: int,
                   cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The warmup + cosine schedule over ``total`` optimizer steps."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, cfg))
