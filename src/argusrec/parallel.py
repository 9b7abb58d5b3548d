"""Scale applied from outside the model (DESIGN.md, "Scale"; STYLE.md principle 2).

The model is written for one device. :func:`parallelize` wraps it for a run: activation
checkpointing per encoder block, optional ``torch.compile`` per block, then DDP or FSDP2
(``fully_shard`` per block, then the root, with a bf16 mixed-precision policy). Launch with
torchrun; a process started without it is a world of one and nothing here does anything.

    torchrun --nproc_per_node 8 -m argusrec.cli pretrain DATA OUT --preset 1b --parallel fsdp
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m argusrec.cli pretrain DATA OUT --preset 1b --parallel fsdp

Checkpoints come in two formats (argusrec.checkpoint). Consolidated: every rank takes part in
gathering the full model and optimizer state (:func:`full_state`), rank 0 writes it, and a run
resumes on any number of ranks by loading the full state and letting each rank keep its shard.
Sharded, for state too large for one host: each rank hands over only its own shards
(:func:`sharded_state`), torch.distributed.checkpoint writes them, and on resume each rank reads
back the slices its shards cover, whatever world size wrote them (:func:`load_sharded_state`).
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
    distributed: every rank must call it, and only rank 0 gets the states (with
    ``cpu_offload`` torch gathers them there alone, so that no rank holds two copies of
    the model); the other ranks get empty dicts."""
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


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer
                  ) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """This rank's part of the model and optimizer state, gathered nowhere.

    Returns the tensors, flat by canonical name (``model.NAME``, ``optim.NAME.SLOT``): DTensor
    shards under FSDP, whole tensors otherwise, the live ones (loading a checkpoint into them
    fills them in place); and the optimizer's param groups (hyperparameters, and parameters by
    canonical name), the same on every rank. A fresh optimizer's slots are created (zeros) so
    that there is something to load into."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    tensors = {f"model.{key}": value for key, value in _canonical(model_state).items()}
    for name, slots in optim_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{_canonical_key(name)}.{slot}"] = value
    groups = [{**group, "params": [_canonical_key(p) for p in group["params"]]}
              for group in optim_state["param_groups"]]
    return tensors, groups


def load_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                       tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> None:
    """Load the tensors and param groups of :func:`sharded_state` (filled from a checkpoint)
    into the model and optimizer, on every rank. A parameter with no ``optim.`` slots among
    ``tensors`` gets no optimizer state, as in the run that saved them."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_state_dict

    own = {_canonical_key(key): key for key in get_model_state_dict(model)}
    model_state, optim_state = {}, {}
    for key, value in tensors.items():
        part, name = key.split(".", 1)
        if part == "model":
            model_state[own.get(name, name)] = value
        else:
            param, slot = name.rsplit(".", 1)
            optim_state.setdefault(own.get(param, param), {})[slot] = value
    groups = [{**group, "params": [own.get(p, p) for p in group["params"]]}
              for group in param_groups]
    set_state_dict(model, optimizer, model_state_dict=model_state,
                   optim_state_dict={"state": optim_state, "param_groups": groups})


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; any other tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


_WRAPPERS = ("._orig_mod", ".block")


def _canonical_key(key: str) -> str:
    """A state-dict key without the wrappers' extra levels (compile, checkpointing)."""
    for wrapper in _WRAPPERS:
        key = key.replace(wrapper + ".", ".")
    return key


def _canonical(state: dict) -> dict:
    """State-dict keys without the wrappers' extra levels, so a checkpoint loads into a plain
    model."""
    return {_canonical_key(key): value for key, value in state.items()}


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
