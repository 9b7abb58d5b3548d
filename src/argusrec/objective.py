"""The pretraining objective: which positions are targets, and which losses score them.

ARGUS trains next-item prediction on *all* interactions, positive or negative (on
recommendation traffic it learns the logging policy, on organic traffic the user's taste), and
feedback prediction wherever a signal exists (arXiv 2507.15994, "Pretraining"). SASRec is the
same model trained on positives only, with the next-item loss only. The losses themselves are
modules from `argusrec.losses`; nothing here knows their formulas.

Legend: B batch, L events, T selected target positions, U user-vector width, F signals.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from argusrec.batch import Batch
from argusrec.losses import FeedbackLoss, LossOutput, make_next_item_loss
from argusrec.model import ArgusModel


class ObjectiveConfig(BaseModel):
    """Losses of pretraining."""

    model_config = ConfigDict(extra="forbid")

    next_item_loss: Literal["full", "sampled", "logq", "corrected"] = Field(
        "corrected", description="full softmax, or sampled softmax over in-batch + uniform "
        "negatives without correction / with logQ / with the corrected logQ of RecSys'25")
    num_uniform: int = Field(1024, ge=0, description="uniform negatives per batch (sampled)")
    max_in_batch: int | None = Field(
        2048, ge=1, description="in-batch negatives: at most this many of the batch's "
        "positives, drawn at random (None = all; the cost is quadratic in batch tokens)")
    nip_targets: Literal["all", "positive", "organic"] = Field(
        "all", description="next-item targets: every event (ARGUS), positives only, or the "
        "events the user chose (is_organic = organic; the feedback loss still sees all)")
    feedback_weight: float = Field(1.0, ge=0, description="weight of the feedback loss; "
                                   "0 = next-item only (SASRec)")
    feedback_weights: dict[str, float] | None = Field(
        None, description="per-signal weights inside the feedback loss (default 1 each)")


def target_positions(batch: Batch) -> Tensor:
    """(B, L) bool: targets of this window that have at least one event of history in it."""
    sel = batch.target & batch.mask
    sel[:, 0] = False  # the first event of a window has nothing before it to predict from
    return sel


class PretrainObjective(nn.Module):
    """Next-item + feedback losses for one batch; returns the weighted sum and its parts."""

    def __init__(self, cfg: ObjectiveConfig, model: ArgusModel, item_counts: Tensor,
                 organic: tuple[int, int] | None = None) -> None:
        """``organic``: (context column, code) of is_organic = organic, for
        ``nip_targets="organic"``."""
        super().__init__()
        if cfg.nip_targets == "organic" and organic is None:
            raise ValueError("nip_targets='organic' needs the is_organic context column")
        self.cfg, self.organic = cfg, organic
        spec = model.spec
        kwargs = ({"num_uniform": cfg.num_uniform, "max_in_batch": cfg.max_in_batch}
                  if cfg.next_item_loss != "full" else {})
        self.next_item = make_next_item_loss(cfg.next_item_loss, spec.num_items,
                                             item_counts=item_counts, **kwargs)
        use_fp = cfg.feedback_weight > 0 and model.feedback_head is not None
        self.feedback = (FeedbackLoss(dict(zip(spec.feedback_names, spec.feedback_kinds)),
                                      cfg.feedback_weights) if use_fp else None)

    def forward(self, model: ArgusModel, batch: Batch, forward: nn.Module | None = None
                ) -> LossOutput:
        """``forward`` is the module to run the batch through when it is not ``model`` itself
        (a DDP wrapper, whose forward synchronises gradients)."""
        out = (forward or model)(batch)
        sel = target_positions(batch)
        nip_sel = sel
        if self.cfg.nip_targets == "positive":
            nip_sel = sel & batch.positive
        elif self.cfg.nip_targets == "organic":
            column, code = self.organic
            nip_sel = sel & (batch.context[..., column] == code)
        nip = self.next_item(out.user[nip_sel], batch.item[nip_sel], model.item_vectors,
                             model.temperature)
        loss, metrics = nip.loss, {"nip_loss": float(nip.loss.detach()), **nip.metrics}
        if self.feedback is not None and out.feedback is not None:
            fp = self.feedback(out.feedback[sel], batch.feedback[sel])
            loss = loss + self.cfg.feedback_weight * fp.loss
            metrics.update({"fp_loss": float(fp.loss.detach()), **fp.metrics})
        metrics["targets"] = int(nip_sel.sum())
        return LossOutput(loss=loss, metrics=metrics)
