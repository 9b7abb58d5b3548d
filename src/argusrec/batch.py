"""The batch types every stage passes around: padded event windows (:class:`Batch`).

The loader makes them, the model reads them, the losses and the evaluation score them; living
apart from all of them, they let each import this module without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    """A padded batch. Padding is on the right; ``mask`` is False there.

    Shapes: user (B,); item, timestamp, event_type, mask, target, positive (B, L);
    context (B, L, C) int codes (0 = unknown/padding); feedback (B, L, F) float32 with NaN
    where a signal is absent (and at padding); feedback_mask (B, L, F) bool.
    """

    user: torch.Tensor
    item: torch.Tensor
    timestamp: torch.Tensor
    event_type: torch.Tensor
    context: torch.Tensor
    feedback: torch.Tensor
    feedback_mask: torch.Tensor
    positive: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                        for f in fields(self)})

    def pin_memory(self) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def __len__(self) -> int:
        return int(self.item.shape[0])
