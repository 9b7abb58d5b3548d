"""Which torch device a stage runs on: "auto" resolved, a device this machine lacks refused.

Pretraining, fine-tuning and evaluation all take a device name from the user; resolving it here,
before any work, turns `--device cuda` on a CPU-only torch build into one message that names the
build and the fix, instead of an AssertionError from deep inside torch. It sits below the stages
so that evaluation need not import the training loop for it.
"""

from __future__ import annotations

import torch

from argusrec.errors import DataError

_OR_CPU = "or pass --device cpu (or --device auto, which takes a GPU when there is one)"


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device ``name`` stands for: auto (cuda when available, else cpu), cpu, cuda,
    cuda:N, or any other device string torch knows.

    Raises:
        DataError: torch does not know the name, or it is a CUDA (or MPS) device this process
            cannot use: a torch build without CUDA, no GPU visible, or cuda:N past the last GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise DataError(f"unknown device {name!r}",
                        fix="pass --device auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        _check_cuda(str(name), device)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DataError(f"device {str(name)!r} needs Apple's MPS, which torch "
                        f"{torch.__version__} does not find here", fix=_OR_CPU)
    return device


def _check_cuda(name: str, device: torch.device) -> None:
    built_with = torch.version.cuda or getattr(torch.version, "hip", None)
    if not built_with:
        raise DataError(f"device {name!r} needs CUDA, but this torch build ({torch.__version__}) "
                        "has no CUDA", fix="install a CUDA build of torch "
                        "(https://pytorch.org/get-started/locally/), " + _OR_CPU)
    if not torch.cuda.is_available():
        raise DataError(f"device {name!r}: torch {torch.__version__} (built with CUDA "
                        f"{built_with}) finds no usable GPU",
                        fix="check the GPU driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, "
                        + _OR_CPU)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DataError(f"device {name!r}: this machine has {count} GPU(s), cuda:0 to "
                        f"cuda:{count - 1}", fix="pass --device cuda (the first GPU) or an index "
                        "below the GPU count")
