"""The optimizer and its schedule, composed by pretraining and fine-tuning alike.

AdamW with weight decay on matrices only (biases, norms and scalars are not decayed), a linear
warmup to the peak learning rate, then a cosine decay to ``min_lr_ratio`` of it at the last
step; gradient clipping and accumulation are the loop's (argusrec.fit).

Or NorMuon (Li et al. 2025, arXiv 2510.05491, "NorMuon: Making Muon more efficient and
scalable", Algorithm 1) on the encoder blocks' weight matrices, AdamW on the rest, as the
modded-nanoGPT recipe does. NorMuon is Muon (Jordan et al. 2024: Nesterov momentum, then a
quintic Newton-Schulz iteration that maps the update matrix to roughly its orthogonal polar
factor U V^T) followed by a per-neuron (per output row) Adam-like second moment that evens out
the rows' step sizes, and a scale that gives every matrix's update the RMS of a typical AdamW
update (0.2 lr), so AdamW's learning rate and weight decay carry over.

Legend: m rows (output neurons), n columns (inputs) of a weight matrix; k fused row blocks.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor


class OptimConfig(BaseModel):
    """Optimizer and schedule."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adamw", "normuon"] = Field(
        "adamw", description="adamw on every parameter, or normuon: NorMuon on the encoder "
        "blocks' weight matrices and AdamW on embeddings, heads, norms, biases and scalars")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a share of the peak")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay on matrices "
                                "(AdamW's, and NorMuon's)")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas")
    muon_lr: float | None = Field(None, gt=0, description="NorMuon's peak learning rate; "
                                  "None = lr (its updates have AdamW's RMS, so lr carries over)")
    muon_momentum: float = Field(0.95, ge=0, lt=1, description="NorMuon's Nesterov momentum "
                                 "on the gradient (beta1)")
    muon_beta2: float = Field(0.95, ge=0, lt=1, description="decay of NorMuon's per-neuron "
                              "second moment")
    muon_ns_steps: int = Field(5, ge=1, le=20, description="Newton-Schulz iterations that "
                               "orthogonalise each NorMuon update")
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 = no clipping")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")


# Jordan et al.'s quintic: chosen to maximise the slope at zero, so that 5 steps bring every
# singular value into roughly [0.7, 1.2] rather than exactly to 1 (which does not hurt).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
UPDATE_RMS = 0.2  # the RMS of a typical AdamW update, which NorMuon's updates are scaled to
# Fused projections of the encoders' blocks, by the Linear's name: rows stacked from k matrices
# (q, k, v; HSTU's u, v, q, k), each orthogonalised on its own as modded-nanoGPT does.
FUSED_ROWS = {"qkv": 3, "kv": 2, "f1": 4}


def newton_schulz(g: Tensor, steps: int = 5) -> Tensor:
    """Approximate orthogonalisation of (..., m, n) matrices: U S' V^T for g = U S V^T, with
    S' near 1 (float32). Runs in bf16 on CUDA, as modded-nanoGPT does, and in float32
    elsewhere (CPU bf16 matmuls are slow, and tests want the exact iteration)."""
    x = g.to(torch.bfloat16 if g.device.type == "cuda" else torch.float32)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide side: the Gram matrix x x^T is the smaller one
        x = x.mT
    # spectral norm <= Frobenius norm = 1: inside the iteration's basin
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).float()


def normalize_neurons(o: Tensor, second_moment: Tensor, beta2: float) -> Tensor:
    """NorMuon's per-neuron normalisation of an orthogonalised update ``o`` (m, n): update the
    running mean of each row's mean square, ``second_moment`` (m, 1), in place, and divide each
    row by its root. No bias correction: the RMS scale that follows cancels any common factor."""
    second_moment.lerp_(o.square().mean(dim=-1, keepdim=True), 1 - beta2)
    return o / (second_moment.sqrt() + 1e-10)


def normuon_direction(update: Tensor, second_moment: Tensor, *, beta2: float, ns_steps: int,
                      row_blocks: int = 1) -> Tensor:
    """The step NorMuon takes for one weight matrix, before the learning rate: ``update`` (m, n)
    (the Nesterov momentum) orthogonalised, each of its ``row_blocks`` stacked matrices on its
    own, rows normalised (``second_moment`` (m, 1) is updated in place), then each block
    scaled to RMS ``UPDATE_RMS`` -> (m, n) float32."""
    m, n = update.shape
    o = newton_schulz(update.reshape(row_blocks, m // row_blocks, n), ns_steps).reshape(m, n)
    o = normalize_neurons(o, second_moment, beta2).reshape(row_blocks, m // row_blocks, n)
    rms = o.square().mean(dim=(-2, -1), keepdim=True).sqrt()  # (k, 1, 1)
    return (o * (UPDATE_RMS / (rms + 1e-10))).reshape(m, n)


class NorMuon(torch.optim.Optimizer):
    """NorMuon on weight matrices and AdamW on every other parameter, as one optimizer.

    Each param group has a ``kind``: ``"normuon"`` (2-D matrices; ``row_blocks`` stacked
    matrices per parameter, orthogonalised separately) or ``"adamw"``. Both kinds read
    ``group["lr"]`` at every step, so a schedule that scales each group's lr (LambdaLR, as
    :func:`build_schedule`) scales both parts by the same factor: a NorMuon step moves the
    weights by ``lr * UPDATE_RMS`` in RMS, an AdamW step by about ``lr`` per coordinate.
    Weight decay is decoupled, ``p *= 1 - lr * weight_decay``, in both.

    State per parameter, only tensors (checkpoints keep them in safetensors): AdamW's
    ``step`` (a scalar tensor, as torch's AdamW), ``exp_avg`` and ``exp_avg_sq``; NorMuon's
    ``momentum_buffer`` (m, n) and ``second_moment`` (m, 1).

    Under FSDP2 a NorMuon matrix is a DTensor shard of rows; the orthogonalisation needs the
    whole matrix, so each rank gathers it, computes the step, and keeps its rows (every rank
    orthogonalises every matrix: simple and correct, not the paper's distributed scheme).
    """

    def __init__(self, params, *, lr: float, betas: tuple[float, float] = (0.9, 0.98),
                 weight_decay: float = 0.0, momentum: float = 0.95, beta2: float = 0.95,
                 ns_steps: int = 5, eps: float = 1e-8) -> None:
        defaults = dict(kind="adamw", lr=lr, betas=betas, weight_decay=weight_decay, eps=eps,
                        momentum=momentum, beta2=beta2, ns_steps=ns_steps, row_blocks=1)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["kind"] not in ("adamw", "normuon"):
                raise ValueError(f"param group kind {group['kind']!r}: choose adamw or normuon")
            for p in group["params"] if group["kind"] == "normuon" else ():
                if p.ndim != 2 or p.shape[0] % group["row_blocks"]:
                    raise ValueError(f"NorMuon needs 2-D matrices whose rows split into "
                                     f"{group['row_blocks']} blocks; got shape "
                                     f"{tuple(p.shape)}: give it to an adamw group")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["kind"] == "normuon":
                    self._normuon(p, group)
                else:
                    self._adamw(p, group)
        return loss

    def _adamw(self, p: Tensor, group: dict) -> None:
        """torch's AdamW (decoupled weight decay, bias-corrected moments), for one tensor."""
        state, (beta1, beta2), lr = self.state[p], group["betas"], group["lr"]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        t = float(state["step"])
        p.mul_(1 - lr * group["weight_decay"])
        state["exp_avg"].lerp_(p.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1 ** t))

    def _normuon(self, p: Tensor, group: dict) -> None:
        """Momentum, then the NorMuon direction (:func:`normuon_direction`), for one matrix."""
        state, mu = self.state[p], group["momentum"]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["second_moment"] = torch.zeros_like(p[:, :1])
        state["momentum_buffer"].lerp_(p.grad, 1 - mu)
        update = p.grad.lerp(state["momentum_buffer"], mu)  # Nesterov
        options = dict(beta2=group["beta2"], ns_steps=group["ns_steps"],
                       row_blocks=group["row_blocks"])
        if isinstance(p, DTensor):
            full_moment = state["second_moment"].full_tensor()
            direction = normuon_direction(update.full_tensor(), full_moment, **options)
            # every rank computed the same whole matrices: each keeps its own rows, no traffic
            state["second_moment"].copy_(_local_like(full_moment, state["second_moment"]))
            direction = _local_like(direction, p)
        else:
            direction = normuon_direction(update, state["second_moment"], **options)
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(direction.to(p.dtype), alpha=-group["lr"])


def _local_like(full: Tensor, like: DTensor) -> DTensor:
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)


def hidden_matrices(model: nn.Module) -> dict[int, list[nn.Parameter]]:
    """The encoder blocks' trainable Linear weights, by how many stacked matrices each holds
    (see ``FUSED_ROWS``): the parameters NorMuon takes."""
    blocks = getattr(getattr(model, "encoder", None), "blocks", None)
    if blocks is None:
        raise ValueError(f"optimizer normuon needs a model with encoder.blocks (an ArgusModel); "
                         f"{type(model).__name__} has none: use optimizer adamw")
    out: dict[int, list[nn.Parameter]] = {}
    for name, module in blocks.named_modules():
        if isinstance(module, nn.Linear) and module.weight.requires_grad:
            k = FUSED_ROWS.get(name.rsplit(".", 1)[-1], 1)
            k = k if module.weight.shape[0] % k == 0 else 1
            out.setdefault(k, []).append(module.weight)
    return out


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, matrices decayed, everything else not; or, with
    ``optimizer: normuon``, one :class:`NorMuon` whose AdamW groups come first (the loop logs
    the first group's lr) and whose NorMuon groups hold the encoder blocks' weight matrices,
    at ``muon_lr`` (default ``lr``)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        decay = [p for p in trainable if p.ndim >= 2]
        other = [p for p in trainable if p.ndim < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                  {"params": other, "weight_decay": 0.0}],
                                 lr=cfg.lr, betas=cfg.betas)
    hidden = hidden_matrices(model)
    taken = {id(p) for params in hidden.values() for p in params}
    rest = [p for p in trainable if id(p) not in taken]
    groups = [{"params": [p for p in rest if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in rest if p.ndim < 2], "weight_decay": 0.0}]
    groups += [{"params": params, "kind": "normuon", "row_blocks": k,
                "lr": cfg.muon_lr or cfg.lr, "weight_decay": cfg.weight_decay}
               for k, params in sorted(hidden.items())]
    return NorMuon([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas,
                   momentum=cfg.muon_momentum, beta2=cfg.muon_beta2,
                   ns_steps=cfg.muon_ns_steps)


def lr_factor(step: int, total: int, cfg: OptimConfig) -> float:
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``total``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_schedule(optimizer: torch.optim.Optimizer, total: int | Callable[[], int],
                   cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The warmup + cosine schedule over ``total`` optimizer steps: every param group's lr is
    its peak (AdamW's ``lr``; NorMuon's ``muon_lr``) times :func:`lr_factor`. ``total`` may
    be a function, read at every step: a time budget re-plans the length of a run."""
    planned = total if callable(total) else (lambda: total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer,
                                             lambda s: lr_factor(s, planned(), cfg))
