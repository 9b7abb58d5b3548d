"""The vocabulary a model is trained with, and how its weights follow a newer one.

A model's embedding tables are indexed by codes that a prepared dataset assigned: item indices
1..V, context value codes, event-type codes, feedback signal positions. A run keeps the
vocabulary it was trained with beside its weights (DESIGN.md, "Deployment": a run directory is
self-contained), so it can be loaded without the dataset, and so its weights can be carried to
a *newer* vocabulary: tomorrow's dataset, with new items, users and context values.

:func:`adapt_state` moves a state dict from one vocabulary to another by original id, never by
position. The rules for what the old model never saw:

- **items**, hashed table (``item_embedding: hashed``): nothing to do: a new id hashes into the
  shared table like any other, so it gets its vector from the trained rows;
- **items**, exact table: a new item's row is the mean of the trained rows, the model's
  "average item" (its content vector, when the dataset has them, still tells items apart);
- **context values** new to a field get the row of code 0, the one unknown values are encoded
  with at serving time; a new context field contributes nothing (its rows are zeros);
- **event types** new to the model get the mean of the trained type rows;
- **feedback signals**: a new signal's input weights are zero (it cannot move the state the
  model learned); its feedback-head output is freshly initialised; a signal the new data lacks
  is dropped.

On disk (``<dir>/``): ``items.parquet`` (index, item), ``fields.json`` (context values, event
types, feedback kinds), ``item_embeddings.npy`` (V+1, E) when the dataset has content vectors,
and optionally ``users.parquet`` (index, user).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from argusrec.errors import DataError

FIELDS_FILE = "fields.json"


@dataclass(frozen=True)
class Vocabulary:
    """What the codes of a prepared dataset mean.

    items: the original id of each item index 1..V, as a polars Series (any id type).
    context: field -> its values; value i (0-based) has code i + 1, code 0 is unknown.
    event_types: type names; name i (0-based) has code i + 1.
    feedback: signal -> kind (binary, ratio, value), in the order of the feedback arrays.
    content: (V+1, E) float32 content vectors (row 0 padding), or None.
    users: the original id of each user index 0..U-1, or None where not kept.
    """

    items: pl.Series
    context: dict[str, list]
    event_types: list[str]
    feedback: dict[str, str]
    content: np.ndarray | None = None
    users: pl.Series | None = None

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def context_cardinalities(self) -> dict[str, int]:
        """Field -> codes including 0 (unknown)."""
        return {name: len(values) + 1 for name, values in self.context.items()}

    @classmethod
    def of_data(cls, data, *, users: bool = False) -> "Vocabulary":
        """The vocabulary of an opened :class:`argusrec.sequences.PreparedData`."""
        items = data.items().sort("index")
        if items["index"].to_list() != list(range(1, len(items) + 1)):
            raise DataError("items.parquet does not list indices 1..V", path=data.path,
                            fix="prepare the data again")
        fields = data.info.fields
        content_path = data.path / "item_embeddings.npy"
        return cls(
            items=items["item"],
            context={name: list(f.values) for name, f in fields.context.items()},
            event_types=list(fields.event_types),
            feedback=dict(fields.feedback),
            content=np.load(content_path, mmap_mode="r") if content_path.exists() else None,
            users=data.users().sort("index")["user"] if users else None)

    def save(self, directory: Path) -> None:
        """Write the vocabulary into ``directory`` (created; must not exist)."""
        directory.mkdir(parents=True)
        pl.DataFrame({"index": np.arange(1, self.num_items + 1, dtype=np.int32),
                      "item": self.items}).write_parquet(directory / "items.parquet")
        (directory / FIELDS_FILE).write_text(json.dumps(
            {"context": self.context, "event_types": self.event_types,
             "feedback": self.feedback}, indent=2) + "\n")
        if self.content is not None:
            np.save(directory / "item_embeddings.npy", np.asarray(self.content, np.float32))
        if self.users is not None:
            pl.DataFrame({"index": np.arange(len(self.users), dtype=np.int32),
                          "user": self.users}).write_parquet(directory / "users.parquet")

    @classmethod
    def load(cls, directory: Path) -> "Vocabulary":
        directory = Path(directory)
        if not (directory / FIELDS_FILE).exists():
            raise DataError("no vocabulary here (fields.json is missing)", path=directory,
                            fix="use a run written by this version of argusrec")
        fields = json.loads((directory / FIELDS_FILE).read_text())
        items = pl.read_parquet(directory / "items.parquet").sort("index")["item"]
        content = directory / "item_embeddings.npy"
        users = directory / "users.parquet"
        return cls(items=items, context=fields["context"], event_types=fields["event_types"],
                   feedback=fields["feedback"],
                   content=np.load(content, mmap_mode="r") if content.exists() else None,
                   users=pl.read_parquet(users).sort("index")["user"] if users.exists()
                   else None)

    def new_since(self, older: "Vocabulary") -> dict[str, int]:
        """How many items (and users, where both keep them) this vocabulary has that
        ``older`` has not."""
        out = {"items": int((~self.items.is_in(_same_type(older.items, self.items).implode())).sum())}
        if self.users is not None and older.users is not None:
            out["users"] = int((~self.users.is_in(_same_type(older.users, self.users).implode())).sum())
        return out


def id_text(value) -> str:
    """An original id as text: the user store's key and the id's JSON form over HTTP. Integers
    and strings as themselves, binary ids in hex."""
    return value.hex() if isinstance(value, (bytes, bytearray)) else str(value)


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link a file tree (no extra space on one file system), copying where links fail."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_dir():
            link_or_copy(path, target / path.name)
            continue
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)


def _same_type(ids: pl.Series, like: pl.Series) -> pl.Series:
    """``ids`` cast to the dtype of ``like``, or an error naming both (int vs string ids)."""
    if ids.dtype == like.dtype:
        return ids
    try:
        return ids.cast(like.dtype, strict=True)
    except pl.exceptions.PolarsError:
        raise DataError(f"the model's ids are {ids.dtype}, this data's are {like.dtype}",
                        fix="prepare the new log with the same id columns as the old one "
                            "(argus prepare --base)") from None


def code_map(old: list, new: list) -> np.ndarray:
    """(len(new) + 1,) old code of each new code (code = position + 1; 0 stays 0); -1 where
    the old vocabulary lacks the value."""
    position = {v: i + 1 for i, v in enumerate(old)}
    return np.asarray([0] + [position.get(v, -1) for v in new], dtype=np.int64)


def item_map(old: pl.Series, new: pl.Series) -> np.ndarray:
    """(V_new + 1,) old item index of each new item index (0 stays 0); -1 for new items."""
    old_index = pl.DataFrame({"item": _same_type(old, new),
                              "old": np.arange(1, len(old) + 1, dtype=np.int64)})
    joined = (pl.DataFrame({"item": new}).with_row_index("pos")
              .join(old_index, on="item", how="left").sort("pos"))
    return np.concatenate([[0], joined["old"].fill_null(-1).to_numpy()]).astype(np.int64)


def _gather(old: torch.Tensor, mapping: np.ndarray, fill: torch.Tensor,
            dim: int = 0) -> torch.Tensor:
    """Rows (or columns, ``dim=1``) of ``old`` by ``mapping``; ``fill`` where it is -1."""
    index = torch.as_tensor(np.maximum(mapping, 0))
    out = old.index_select(dim, index).clone()
    missing = torch.as_tensor(mapping < 0)
    if missing.any():
        if dim == 0:
            out[missing] = fill.to(out.dtype)
        else:
            out[:, missing] = fill.to(out.dtype)
    return out


def adapt_state(state: dict[str, torch.Tensor], old: Vocabulary, new: Vocabulary,
                model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``state`` (trained on ``old``) for ``model``, an ArgusModel built for ``new``;
    the module docstring gives the rules for what ``old`` never saw."""
    state = dict(state)
    target = model.state_dict()
    key = "items.table.weight"
    if getattr(model.items, "kind", None) == "exact" and key in state:
        trained = state[key]
        mapping = item_map(old.items, new.items)
        state[key] = _gather(trained, mapping, trained[1:].mean(0) if len(trained) > 1
                             else trained[0])
    key = "items.content_proj.weight"  # (D, E)
    if key in state and key not in target:  # the new data has no content vectors
        state.pop(key)
    elif key in target and key not in state:  # new content: no influence until trained
        state[key] = torch.zeros_like(target[key])
    if key in state and key in target and state[key].shape[1] != target[key].shape[1]:
        raise DataError("the item content vectors of the new data have another width than "
                        "the model's", fix="use the same item embeddings as in training")
    if model.context is not None:
        old_fields = sorted(old.context)
        for i, name in enumerate(sorted(new.context)):
            key = f"context.fields.{i}.weight"
            if name not in old.context:
                state[key] = torch.zeros_like(target[key])
                continue
            trained = state[f"context.fields.{old_fields.index(name)}.weight"]
            state[key] = _gather(trained, code_map(old.context[name], new.context[name]),
                                 trained[0])
        for j in range(len(new.context), len(old.context)):
            state.pop(f"context.fields.{j}.weight", None)
        key = "context.event_type.weight"
        if key in state:
            trained = state[key]
            state[key] = _gather(trained, code_map(old.event_types, new.event_types),
                                 trained[1:].mean(0) if len(trained) > 1 else trained[0])
    if list(old.feedback) != list(new.feedback):
        _adapt_feedback(state, target, old, new, model)
    return state


def _adapt_feedback(state: dict, target: dict, old: Vocabulary, new: Vocabulary,
                    model: torch.nn.Module) -> None:
    """The feedback rules of the module docstring, in place on ``state``."""
    signals = code_map(list(old.feedback), list(new.feedback))[1:] - 1  # old position; -1 new
    fresh = torch.as_tensor(signals < 0)
    key = "feedback.proj.weight"  # (D, 2F): the values first, then their presence flags
    if key in target:
        if key in state:
            columns = np.concatenate([signals, np.where(signals >= 0,
                                                        signals + len(old.feedback), -1)])
            state[key] = _gather(state[key], columns, torch.zeros(()), dim=1)
        else:
            state[key] = torch.zeros_like(target[key])
            state["feedback.proj.bias"] = torch.zeros_like(target["feedback.proj.bias"])
    head = [k for k in target if k.startswith("feedback_head.")]
    if not head:
        for k in [k for k in state if k.startswith(("feedback_head.", "feedback.proj."))
                  and k not in target]:
            state.pop(k)
        return
    if not any(k in state for k in head):
        state.update({k: target[k].clone() for k in head})
        return
    last = len(model.feedback_head) - 1
    for part in ("weight", "bias"):
        k = f"feedback_head.{last}.{part}"
        rows = _gather(state[k], signals, torch.zeros(()))
        rows[fresh] = target[k][fresh]
        state[k] = rows
