"""Nested state (optimizer, scheduler, RNG) saved without pickle: tensors in safetensors, the
rest in JSON.

`--resume` needs the optimizer's moments, the schedule, every random state and the position in
the data. ``torch.save`` would pickle them, and loading a pickle runs whatever code the file
names: a crafted run directory would execute code during `argus export` or `--resume`. Here a
tree of dicts, lists and tuples is written as ``NAME.json`` (the structure and the scalars) plus
``NAME.safetensors`` (every torch tensor and numpy array, by a path key), and read back exactly:
int dict keys stay ints, tuples stay tuples, numpy arrays come back as numpy arrays.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from argusrec.errors import DataError


def save_tree(tree: Any, path: Path) -> None:
    """Write ``tree`` to ``path.json`` and ``path.safetensors`` (``path`` has no suffix)."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = node.detach().contiguous().cpu()
            return {"__tensor__": key}
        if isinstance(node, np.ndarray):
            key = f"t{len(tensors)}"
            tensors[key] = torch.from_numpy(np.ascontiguousarray(node))
            return {"__ndarray__": key}
        if isinstance(node, dict):
            return {"__dict__": [[encode(k), encode(v)] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"__tuple__": [encode(v) for v in node]}
        if isinstance(node, list):
            return [encode(v) for v in node]
        if isinstance(node, float) and not math.isfinite(node):
            return {"__float__": repr(node)}
        if isinstance(node, (np.integer, np.floating, np.bool_)):
            return encode(node.item())
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot save a {type(node).__name__} without pickle")

    structure = encode(tree)
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(structure) + "\n")


def load_tree(path: Path) -> Any:
    """Read what :func:`save_tree` wrote; a damaged or missing file is a DataError."""
    try:
        structure = json.loads(path.with_suffix(".json").read_text())
        tensors = load_file(str(path.with_suffix(".safetensors")))
    except (OSError, ValueError, RuntimeError) as e:  # safetensors raises its own errors too
        raise DataError(f"the resume state cannot be read: {e}", path=path.parent,
                        fix="resume from an earlier checkpoint, or start a new run") from None
    except Exception as e:  # e.g. safetensors' SafetensorError on a truncated file
        raise DataError(f"the resume state cannot be read: {type(e).__name__}: {e}",
                        path=path.parent, fix="resume from an earlier checkpoint, or start a "
                        "new run") from None

    def decode(node: Any) -> Any:
        if isinstance(node, list):
            return [decode(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__ndarray__" in node:
            return tensors[node["__ndarray__"]].numpy()
        if "__dict__" in node:
            return {decode(k): decode(v) for k, v in node["__dict__"]}
        if "__tuple__" in node:
            return tuple(decode(v) for v in node["__tuple__"])
        if "__float__" in node:
            return float(node["__float__"])
        raise DataError(f"unexpected entry in the resume state: {sorted(node)[:3]}",
                        path=path.parent, fix="resume from an earlier checkpoint")

    try:
        return decode(structure)
    except KeyError as e:
        raise DataError(f"the resume state names a missing tensor {e}", path=path.parent,
                        fix="resume from an earlier checkpoint") from None
