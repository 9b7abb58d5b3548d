"""The runtime path: raw histories in the log's own vocabulary, encoded now with a model.

DESIGN.md, "Deployment": besides the stored user vectors of a snapshot, a fresh history can be
encoded on request with the same encoder the export used, from HTTP (argusrec.serve) and from
Python (argusrec.api). :class:`HistoryEncoder` turns events given by original ids and names
(item id, event type, context values, feedback signals) into the codes of one vocabulary (a
snapshot's, so items new since training have rows) and encodes them exactly as
:func:`argusrec.export.encode_histories` encodes stored histories.

Legend: N histories, U user-vector width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from argusrec.checkpoint import Checkpoint
from argusrec.errors import DataError
from argusrec.export import ServingContext, encode_histories, history_sample
from argusrec.vocab import Vocabulary


class HistoryEncoder:
    """A model built for one vocabulary, and the maps from raw event fields to its codes.

    Args:
        checkpoint: a run or checkpoint directory.
        vocabulary: whose item rows the histories use (a snapshot's: row r is item r + 1).
        serving: how a recommendation shown now is described to the user head.
    """

    def __init__(self, checkpoint: str | Path, vocabulary: Vocabulary,
                 serving: ServingContext) -> None:
        ckpt = Checkpoint.open(checkpoint)
        self.checkpoint = str(ckpt.path)
        self.vocabulary = vocabulary
        self.model = ckpt.load_model(vocabulary)
        self.serving = serving
        self.event_types = {name: i + 1 for i, name in enumerate(vocabulary.event_types)}
        self.context_names = sorted(vocabulary.context)
        self.context_values = {name: {str(v): i + 1 for i, v in enumerate(values)}
                               for name, values in vocabulary.context.items()}
        self.feedback_names = list(vocabulary.feedback)

    @classmethod
    def for_snapshot(cls, checkpoint: str | Path, snapshot) -> "HistoryEncoder":
        """For an opened :class:`argusrec.snapshot.Snapshot`: its vocabulary, its serving
        context."""
        saved = snapshot.manifest["serving_context"]
        return cls(checkpoint, snapshot.vocabulary,
                   ServingContext(context=np.asarray(saved["context"], dtype=np.int64),
                                  event_type=int(saved["event_type"])))

    def serves(self, checkpoint: str | Path, snapshot) -> bool:
        """Whether this encoder is the one ``checkpoint`` would give for ``snapshot``."""
        try:
            same_model = str(Checkpoint.open(checkpoint).path) == self.checkpoint
        except DataError:
            return False
        mine, theirs = self.vocabulary, snapshot.vocabulary
        return same_model and mine.items.dtype == theirs.items.dtype and \
            mine.items.equals(theirs.items) and mine.context == theirs.context and \
            mine.event_types == theirs.event_types and mine.feedback == theirs.feedback

    @property
    def max_len(self) -> int:
        return self.model.cfg.max_len

    def sample(self, events: Sequence[Mapping[str, Any]], rows: np.ndarray
               ) -> dict[str, np.ndarray]:
        """A loader sample of the last ``max_len`` events. Each event has ``timestamp`` and
        optionally ``event_type``, ``context`` (field -> value) and ``feedback`` (signal ->
        number); ``rows`` (len(events),) are their items' rows in the vocabulary."""
        keep = slice(max(0, len(events) - self.max_len), len(events))
        events, rows = list(events)[keep], np.asarray(rows)[keep]
        unknown = sorted({e.get("event_type") for e in events if e.get("event_type") is not None
                          and e.get("event_type") not in self.event_types})
        if unknown:
            raise DataError(f"unknown event types {unknown}", column="event_type",
                            fix=f"use one of {sorted(self.event_types)}")
        fields = {f for e in events for f in (e.get("context") or {})} - set(self.context_names)
        if fields:
            raise DataError(f"unknown context fields {sorted(fields)}", column="context",
                            fix=f"this model knows {self.context_names}")
        signals = {f for e in events for f in (e.get("feedback") or {})} - set(
            self.feedback_names)
        if signals:
            raise DataError(f"unknown feedback signals {sorted(signals)}", column="feedback",
                            fix=f"this model knows {self.feedback_names}")
        arrays = {
            "item": rows + 1,
            "timestamp": np.asarray([e["timestamp"] for e in events], dtype=np.int64),
            "event_type": np.asarray([self.event_types.get(e.get("event_type"),
                                                           self.serving.event_type)
                                      for e in events], dtype=np.int64),
        }
        for name in self.context_names:
            codes = self.context_values[name]
            arrays[f"ctx_{name}"] = np.asarray(
                [codes.get(str((e.get("context") or {}).get(name)), 0) for e in events])
        for name in self.feedback_names:
            arrays[f"fb_{name}"] = np.asarray(
                [(e.get("feedback") or {}).get(name, np.nan) for e in events], dtype=np.float32)
        return history_sample(arrays, np.arange(len(events)), self.context_names,
                              self.feedback_names)

    def encode(self, samples: list[dict[str, np.ndarray]], as_of: Sequence[int]) -> np.ndarray:
        """(N, U) user vectors of N samples for a recommendation shown at ``as_of`` (N,)."""
        gaps = np.asarray([int(t) - int(s["timestamp"][-1]) for s, t in zip(samples, as_of)])
        return encode_histories(self.model, samples, gaps, self.serving)
