"""Scale applied from outside the model (DESIGN.md, "Scale"; STYLE.md principle 2).

The model is written for one device. :func:`parallelize` wraps it for a run: activation
checkpointing per encoder block, optional ``torch.compile`` per block, then DDP or FSDP2
(``fully_shard`` per block, then the root, with a bf16 mixed-precision policy). Launch with
torchrun; a process started without it is a world of one and nothing here does anything.

    torchrun --nproc_per_node 8 -m argusrec.cli pretrain DATA OUT --preset 1b --parallel fsdp
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m argusrec.cli pretrain DATA OUT --preset 1b --parallel fsdp

Checkpoints stay one consolidated file whatever the sharding: every rank takes part in
gathering the full model and optimizer state, rank 0 writes it, and a run resumes on any number
of ranks by loading the full state and letting each rank keep its shard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

Mode = Literal["auto", "none", "ddp", "fsdp"]


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank, world size, and its device."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world(device: str = "auto") -> World:
    """Join the process group torchrun describes in the environment (a world of one without
    it): NCCL on CUDA, gloo on CPU."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return World(rank=rank, size=size, local_rank=local_rank)


def rank_device(world: World, device: torch.device) -> torch.device:
    """cuda:LOCAL_RANK for a CUDA run, else ``device``."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


class Checkpointed(nn.Module):
    """Recompute a block's activations in the backward pass instead of keeping them."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *args):
        if not self.training or not torch.is_grad_enabled():
            return self.block(*args)
        return checkpoint(self.block, *args, use_reentrant=False)


def encoder_blocks(model: nn.Module) -> nn.ModuleList:
    return model.encoder.blocks


def parallelize(model: nn.Module, world: World, *, mode: Mode = "auto",
                activation_checkpointing: bool = False, compile: bool = False,
                bf16: bool = False) -> nn.Module:
    """Wrap ``model`` for training: checkpointing and compile per block, then DDP or FSDP2.

    Returns the module to call (the wrapper); the parameters stay those of ``model`` (with FSDP
    they become DTensor shards of it).
    """
    blocks = encoder_blocks(model)
    for i, block in enumerate(list(blocks)):
        if activation_checkpointing:
            block = Checkpointed(block)
        if compile:
            block = torch.compile(block)
        blocks[i] = block
    if mode == "auto":
        mode = "ddp" if world.distributed else "none"
    if mode == "none" or not world.distributed:
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [world.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if bf16 else MixedPrecisionPolicy())
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (FSDP2 shards in place: the module itself)."""
    return module.module if hasattr(module, "module") and isinstance(
        module, torch.nn.parallel.DistributedDataParallel) else module


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None = None
               ) -> tuple[dict, dict | None]:
    """The full (unsharded) model and optimizer state dicts on CPU. A collective when
    distributed: every rank must call it; the result is complete on every rank."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, optimizer, options=options) if optimizer else None
    return _canonical(state), optim


def load_full_state(model: nn.Module, state: dict, optimizer: torch.optim.Optimizer | None = None,
                    optim_state: dict | None = None) -> None:
    """Load full state dicts into a (possibly sharded) model and optimizer on every rank."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, _wrapped_keys(model, state), options=options)
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(model, optimizer, optim_state, options=options)


_WRAPPERS = ("._orig_mod", ".block")


def _canonical(state: dict) -> dict:
    """State-dict keys without the wrappers' extra levels (compile, checkpointing), so a
    checkpoint loads into a plain model."""
    out = {}
    for key, value in state.items():
        for wrapper in _WRAPPERS:
            key = key.replace(wrapper + ".", ".")
        out[key] = value
    return out


def _wrapped_keys(model: nn.Module, state: dict) -> dict:
    """Map canonical keys onto the (possibly wrapped) model's own names."""
    own = list(unwrap(model).state_dict().keys())
    by_canonical = {k2: k for k, k2 in zip(own, _canonical(dict.fromkeys(own)).keys())}
    return {by_canonical.get(k, k): v for k, v in state.items()}


def all_reduce(value: float | int, world: World, op: str = "sum") -> float:
    """Sum (or max) a Python number over ranks."""
    if not world.distributed:
        return value
    device = (torch.device("cuda", world.local_rank) if dist.get_backend() == "nccl"
              else torch.device("cpu"))
    t = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return float(t)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
