"""The example configs shipped inside the package, found by name, and dotted-key overrides.

Each ``*.yaml`` file here overrides fields of one verb's config (``sasrec-ml1m`` of
TrainConfig, ``ablation-sim`` of AblationConfig, ...). Every ``--config`` option of the CLI
accepts one of these names, with or without ``.yaml``, where it accepts a path; they are read
through importlib.resources so they work from an installed wheel as well as from a checkout.
"""

from __future__ import annotations

import copy
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importlib.resources.abc is Python 3.11+; the package supports 3.10
    from importlib.resources.abc import Traversable


def names() -> list[str]:
    """The shipped configs' names, without ``.yaml``, sorted."""
    return sorted(p.name[: -len(".yaml")] for p in files(__name__).iterdir()
                  if p.name.endswith(".yaml"))


def find(name: str) -> Traversable | None:
    """The shipped config called ``name`` (``sasrec-ml1m`` or ``sasrec-ml1m.yaml``), else None."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if stem not in names():
        return None
    return files(__name__) / f"{stem}.yaml"


def apply_overrides(fields: dict, overrides: dict[str, Any]) -> dict:
    """A copy of config ``fields`` with dotted keys set: {"model.max_len": 200} sets
    fields["model"]["max_len"]. Used for command-line flags over YAML and for presets."""
    out = copy.deepcopy(fields)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
        node[leaf] = value
    return out
