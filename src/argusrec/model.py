"""The ARGUS model: a causal transformer over (context, item, feedback) events, with heads.

ARGUS (arXiv 2507.15994, "Model"): every event of a user's history becomes one token, the sum
of its context, item and feedback embeddings (*simplified ARGUS*), or three tokens in a row
(*full ARGUS*). A pre-norm causal transformer gives a state h_t after each event, and two heads
read it:

- next-item prediction (NIP): u_t = MLP([h_{t-1}; context_t]) is the user vector; the item
  tower gives v_i; the score is <u_t, v_i> / T with T = exp(theta) clipped to [0.01, 100];
- feedback prediction (FP): MLP([h_{t-1}; context_t; item_t]) gives one logit per signal;
  with ``feedback_interaction`` the MLP also gets h_{t-1} * item_t (elementwise), so a
  user-item affinity (a dot product) is one linear layer away instead of something a small
  concatenation MLP must approximate (Rendle et al. 2020, "Neural Collaborative Filtering vs.
  Matrix Factorization Revisited").

In full ARGUS, the context token of event t has seen everything up to event t-1 plus context_t,
so NIP reads its hidden state; the item token has also seen item_t, so FP reads that.

The model is written for one device and knows nothing of distribution (STYLE.md principle 2).

Legend: B batch, L events, S tokens (L or 3L), D width, U user-vector width, F feedback
signals, C context fields, V catalogue size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from torch import Tensor, nn

from argusrec.embeddings import (ContextEmbedding, FeedbackEmbedding, ItemEmbedding,
                                 TimeGapEmbedding, item_keys)
from argusrec.hstu import HSTUEncoder, hstu_parameter_count
from argusrec.layers import Dropout, Rotary, causal_attention, mlp, norm_layer
from argusrec.batch import Batch
from argusrec.vocab import Vocabulary


# The modded-nanoGPT options of the pre_norm block, and their values that leave it as it was.
MODERN_DEFAULTS = {"norm": "layer", "qk_norm": False, "activation": "gelu",
                   "zero_init_out": False}


class ModelConfig(BaseModel):
    """Architecture of the encoder and its heads."""

    model_config = ConfigDict(extra="forbid")

    variant: Literal["simplified", "full"] = Field(
        "simplified", description="one token per event, or three (context, item, feedback)")
    encoder: Literal["transformer", "hstu"] = Field(
        "transformer", description="the ARGUS transformer, or HSTU (pointwise SiLU attention "
        "with relative position and time biases, Zhai et al. 2024)")
    d_model: int = Field(64, ge=8, description="transformer width D")
    n_layers: int = Field(2, ge=1, description="transformer blocks")
    n_heads: int = Field(2, ge=1, description="attention heads (d_model divisible by it)")
    ff_mult: int = Field(4, ge=1, description="feed-forward width as a multiple of d_model")
    block: Literal["pre_norm", "sasrec"] = Field(
        "pre_norm", description="transformer block: pre_norm (residual stream; norm, qk_norm, "
        "activation and zero_init_out choose its parts), or sasrec: SASRec's block as its "
        "public PyTorch code writes it (queries from the normalised input, keys and values "
        "from the raw one, the residual added to the normalised input, a ReLU feed-forward "
        "with inner dropout)")
    norm: Literal["layer", "rms"] = Field(
        "layer", description="the blocks' and the final norm: LayerNorm, or RMSNorm (no "
        "centring, no bias) as in modded-nanoGPT (pre_norm transformer only)")
    qk_norm: bool = Field(
        False, description="RMSNorm over each head's queries and keys before rotary and "
        "attention, with a learnable gain per head dimension (pre_norm transformer only)")
    activation: Literal["gelu", "relu2"] = Field(
        "gelu", description="feed-forward activation: GELU, or ReLU^2 = relu(x)**2 "
        "(pre_norm transformer only)")
    zero_init_out: bool = Field(
        False, description="zero-initialise each block's attention output projection and "
        "last feed-forward layer, so every block starts as the identity (pre_norm "
        "transformer only)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on embeddings and blocks")
    attention_dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout on attention weights; > 0 forces the unfused "
        "attention kernel, which is several times slower")
    max_len: int = Field(512, ge=2, description="longest history window, in events")
    positions: Literal["learned", "rotary", "none"] = Field(
        "learned", description="position encoding inside a window")
    time_buckets: int = Field(0, ge=0, description="log2 time-gap buckets; 0 turns them off")
    item_embedding: Literal["auto", "hashed", "exact"] = Field(
        "auto", description="hashed (k hashes into one table), exact, or auto: exact when "
        "the catalogue fits in the hashed table")
    num_hashes: int = Field(3, ge=1, le=6, description="hash functions per item (paper: 3)")
    hash_table_size: int = Field(524_288, ge=16, description="rows of the hashed table "
                                 "(paper: 512K)")
    use_content: bool = Field(True, description="add projected item content vectors when the "
                              "dataset has them")
    use_context: bool = Field(True, description="embed context fields and event types")
    use_feedback: bool = Field(True, description="embed feedback signals into the tokens")
    user_dim: int = Field(64, ge=4, description="width U of user and item vectors")
    head_hidden: int = Field(0, ge=0, description="hidden width of head MLPs; 0 = d_model")
    user_head: Literal["mlp", "none"] = Field(
        "mlp", description="user vector: an MLP over [h_{t-1}; context_t], or none: "
        "h_{t-1} + context_t itself (SASRec; needs user_dim == d_model)")
    item_tower: Literal["mlp", "tied"] = Field(
        "mlp", description="item vectors: an MLP over the item embedding, or tied: the input "
        "item embedding itself (SASRec; needs user_dim == d_model)")
    feedback_head: bool = Field(True, description="predict feedback signals (FP head)")
    feedback_interaction: bool = Field(
        False, description="FP head input also gets h_{t-1} * item_t (elementwise): likes "
        "follow a user-item affinity, a dot product that an MLP over the concatenation alone "
        "learns slowly (simplified variant only)")
    init_temperature: float = Field(1.0, gt=0, description="initial softmax temperature T")
    item_init_std: float = Field(0.0, ge=0, description="std of the item table's initial "
                                 "values; 0 = 1/sqrt(D) (1/sqrt(kD) when hashed)")
    scale_item_input: bool = Field(False, description="multiply item embeddings by sqrt(D) "
                                   "where they enter the encoder (SASRec's convention); the "
                                   "tied item tower scores with them unscaled")

    @model_validator(mode="after")
    def _shapes_fit(self) -> "ModelConfig":
        """Fields that constrain each other, checked when the config is read rather than
        when the model is built (the Encoder and the heads check again)."""
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads "
                             f"{self.n_heads}; set n_heads to a divisor of d_model (each head "
                             "is d_model / n_heads wide)")
        if self.feedback_interaction and self.variant == "full":
            raise ValueError("feedback_interaction needs the simplified variant: full ARGUS's "
                             "FP head reads the item token's state, which has already seen "
                             "item_t; set feedback_interaction: false or variant: simplified")
        for name in ("user_head", "item_tower"):
            if getattr(self, name) != "mlp" and self.user_dim != self.d_model:
                raise ValueError(f"{name}={getattr(self, name)} needs user_dim == d_model (got "
                                 f"{self.user_dim} and {self.d_model}); set user_dim: "
                                 f"{self.d_model}")
        modern = {name: getattr(self, name) for name, default in MODERN_DEFAULTS.items()
                  if getattr(self, name) != default}
        if modern and (self.encoder != "transformer" or self.block != "pre_norm"):
            where = "encoder: hstu" if self.encoder == "hstu" else "block: sasrec"
            given = ", ".join(f"{name}: {_as_yaml(value)}" for name, value in modern.items())
            defaults = ", ".join(f"{name}: {_as_yaml(MODERN_DEFAULTS[name])}" for name in modern)
            raise ValueError(f"{given} applies to the pre_norm transformer block only, not to "
                             f"{where}; set encoder: transformer and block: pre_norm, or "
                             f"{defaults}")
        return self


def _as_yaml(value) -> str:
    """A scalar as a config file spells it (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _overrides_of(config: type[BaseModel]) -> type[BaseModel]:
    """``config`` with every field optional (None = not given): a typed set of overrides,
    checked field by field (types, ranges, typos) with the field's own description."""
    def optional(field):  # the field's type with its constraints (ge, lt ...), or None
        kind = (Annotated[(field.annotation, *field.metadata)] if field.metadata
                else field.annotation)
        return Optional[kind]

    fields = {name: (optional(field), Field(None, description=field.description))
              for name, field in config.model_fields.items()}
    return create_model(f"{config.__name__}Overrides", __config__=ConfigDict(extra="forbid"),
                        __doc__=f"Fields of {config.__name__} set over a preset; None keeps "
                        "the preset's value.", **fields)


# TrainConfig.model: ModelConfig fields set over the preset (`--model.d_model 128`).
ModelOverrides = _overrides_of(ModelConfig)

@dataclass(frozen=True)
class DataSpec:
    """What the model needs to know about a prepared dataset."""

    num_items: int
    item_keys: np.ndarray  # (V+1,) int64; row 0 padding
    context_cardinalities: list[int]
    num_event_types: int
    feedback_names: list[str]
    feedback_kinds: list[str]
    content: np.ndarray | None = None  # (V+1, E)

    @classmethod
    def from_prepared(cls, data) -> "DataSpec":
        """From an opened :class:`argusrec.sequences.PreparedData`."""
        return cls.from_vocabulary(Vocabulary.of_data(data))

    @classmethod
    def from_vocabulary(cls, vocab: Vocabulary) -> "DataSpec":
        """From a :class:`argusrec.vocab.Vocabulary` (a dataset's, a checkpoint's own, or a
        snapshot's)."""
        keys = np.zeros(vocab.num_items + 1, dtype=np.int64)
        keys[1:] = item_keys(vocab.items.to_list())
        fields = vocab.context_cardinalities
        return cls(num_items=vocab.num_items, item_keys=keys,
                   context_cardinalities=[fields[name] for name in sorted(fields)],
                   num_event_types=len(vocab.event_types),
                   feedback_names=list(vocab.feedback),
                   feedback_kinds=list(vocab.feedback.values()),
                   content=vocab.content)


class Block(nn.Module):
    """Pre-norm transformer block: causal SDPA self-attention, then a feed-forward.

    By default LayerNorm and GELU. The modded-nanoGPT recipe is a set of options: RMSNorm
    (``norm``), RMSNorm of each head's queries and keys (``qk_norm``: with SDPA's fixed
    1/sqrt(Dh) scale, unit-RMS queries and keys cap the logits at +-sqrt(Dh), so the norms keep
    a learnable gain, shared by the heads, as in OLMo 2 and Qwen3), ReLU^2 (``activation``),
    and zero output projections (``zero_init_out``: the block starts as the identity)."""

    def __init__(self, cfg: ModelConfig, rotary: Rotary | None) -> None:
        super().__init__()
        self.n_heads, self.attention_dropout, self.rotary = cfg.n_heads, cfg.attention_dropout, rotary
        D = cfg.d_model
        self.norm1 = norm_layer(cfg.norm, D)
        self.qkv = nn.Linear(D, 3 * D)
        self.out = nn.Linear(D, D)
        self.norm2 = norm_layer(cfg.norm, D)
        self.ff = mlp(D, cfg.ff_mult * D, D, cfg.activation)
        self.drop = Dropout(cfg.dropout)
        self.q_norm = norm_layer("rms", D // cfg.n_heads) if cfg.qk_norm else None
        self.k_norm = norm_layer("rms", D // cfg.n_heads) if cfg.qk_norm else None
        if cfg.zero_init_out:
            for layer in (self.out, self.ff[-1]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, S, D = x.shape
        # each (B, S, H, Dh)
        q, k, v = self.qkv(self.norm1(x)).view(B, S, 3, self.n_heads, D // self.n_heads).unbind(2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        a = causal_attention(*(t.transpose(1, 2) for t in (q, k, v)), self.rotary,
                              self.attention_dropout if self.training else 0.0)
        x = x + self.drop(self.out(a))
        return x + self.drop(self.ff(self.norm2(x)))


class SASRecBlock(nn.Module):
    """SASRec's block (Kang & McAuley 2018, as in its widely used PyTorch port): the
    attention's queries come from LN1(x) but its keys and values from x itself; the residual
    is added to LN1(x), and the feed-forward's input and residual are LN2 of that. The stream
    is thus re-normalised in every block instead of growing along a pre-norm residual path."""

    def __init__(self, cfg: ModelConfig, rotary: Rotary | None) -> None:
        super().__init__()
        self.n_heads, self.attention_dropout, self.rotary = cfg.n_heads, cfg.attention_dropout, rotary
        D, hidden = cfg.d_model, cfg.ff_mult * cfg.d_model
        self.norm1 = nn.LayerNorm(D)
        self.q = nn.Linear(D, D)
        self.kv = nn.Linear(D, 2 * D)
        self.out = nn.Linear(D, D)
        self.norm2 = nn.LayerNorm(D)
        self.ff = nn.Sequential(nn.Linear(D, hidden), Dropout(cfg.dropout), nn.ReLU(),
                                nn.Linear(hidden, D))
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, S, D = x.shape
        H = self.n_heads
        normed = self.norm1(x)
        q = self.q(normed).view(B, S, H, D // H).transpose(1, 2)
        k, v = (t.transpose(1, 2) for t in self.kv(x).view(B, S, 2, H, D // H).unbind(2))
        a = causal_attention(q, k, v, self.rotary,
                              self.attention_dropout if self.training else 0.0)
        x = self.norm2(normed + self.out(a))
        return x + self.drop(self.ff(x))


class Encoder(nn.Module):
    """The causal transformer: token embeddings (B, S, D) -> hidden states (B, S, D)."""

    def __init__(self, cfg: ModelConfig, max_tokens: int) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")
        rotary = Rotary(cfg.d_model // cfg.n_heads, max_tokens) if cfg.positions == "rotary" \
            else None
        self.position = nn.Embedding(max_tokens, cfg.d_model) if cfg.positions == "learned" \
            else None
        if self.position is not None:
            nn.init.normal_(self.position.weight, std=0.02)
        self.drop = Dropout(cfg.dropout)
        block = SASRecBlock if cfg.block == "sasrec" else Block
        self.blocks = nn.ModuleList(block(cfg, rotary) for _ in range(cfg.n_layers))
        self.norm = norm_layer(cfg.norm, cfg.d_model)

    def forward(self, x: Tensor, timestamp: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        """x (B, S, D) -> (B, S, D); timestamp and mask are for HSTU's signature (unused)."""
        if self.position is not None:
            x = x + self.position.weight[: x.shape[1]]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


@dataclass
class ModelOutput:
    """user: (B, L, U) NIP user vectors, where position t predicts event t; feedback: (B, L, F)
    FP logits for event t (None without the FP head); hidden: (B, S, D) encoder states."""

    user: Tensor | None
    feedback: Tensor | None
    hidden: Tensor


class ArgusModel(nn.Module):
    """ARGUS encoder with next-item and feedback heads, sized for one prepared dataset."""

    def __init__(self, cfg: ModelConfig, spec: DataSpec) -> None:
        super().__init__()
        self.cfg, self.spec = cfg, spec
        D, U = cfg.d_model, cfg.user_dim
        hidden = cfg.head_hidden or D
        kind = cfg.item_embedding
        if kind == "auto":
            kind = "exact" if spec.num_items + 1 <= cfg.hash_table_size else "hashed"
        content = (torch.from_numpy(np.array(spec.content, dtype=np.float32)) if cfg.use_content and
                   spec.content is not None else None)
        self.items = ItemEmbedding(torch.from_numpy(spec.item_keys), D, kind=kind,
                                   num_hashes=cfg.num_hashes, table_size=cfg.hash_table_size,
                                   content=content, init_std=cfg.item_init_std)
        self.item_input_scale = math.sqrt(D) if cfg.scale_item_input else 1.0
        self.context = (ContextEmbedding(spec.context_cardinalities, spec.num_event_types, D)
                        if cfg.use_context else None)
        self.feedback = (FeedbackEmbedding(len(spec.feedback_names), D)
                         if cfg.use_feedback else None)
        self.time_gap = TimeGapEmbedding(cfg.time_buckets, D) if cfg.time_buckets else None
        tokens_per_event = 3 if cfg.variant == "full" else 1
        if cfg.variant == "full":
            self.token_type = nn.Embedding(3, D)
            nn.init.normal_(self.token_type.weight, std=0.02)
        self.encoder = (Encoder(cfg, tokens_per_event * cfg.max_len) if cfg.encoder ==
                        "transformer" else HSTUEncoder(cfg, tokens_per_event * cfg.max_len))
        # Simplified ARGUS: the state before the first event of a window is a learned vector.
        self.start = nn.Parameter(torch.zeros(D))
        nip_in = D if cfg.variant == "full" else 2 * D
        fp_in = D if cfg.variant == "full" else (4 if cfg.feedback_interaction else 3) * D
        for name in ("user_head", "item_tower"):
            if getattr(cfg, name) != "mlp" and U != D:
                raise ValueError(f"{name}={getattr(cfg, name)} needs user_dim == d_model "
                                 f"(got {U} and {D}); set model.user_dim: {D}")
        self.user_head = mlp(nip_in, hidden, U) if cfg.user_head == "mlp" else None
        self.item_tower = mlp(D, hidden, U) if cfg.item_tower == "mlp" else None
        self.feedback_head = (mlp(fp_in, hidden, len(spec.feedback_names))
                              if cfg.feedback_head and spec.feedback_names else None)
        # (1,), not a scalar: FSDP2 shards only parameters with at least one dimension
        self.log_temperature = nn.Parameter(torch.tensor([math.log(cfg.init_temperature)]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "log_temperature"
        if key in state_dict and state_dict[key].dim() == 0:  # checkpoints before FSDP support
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- pieces --------------------------------------------------------------------------------
    @property
    def temperature(self) -> Tensor:
        """T = exp(theta), clipped to [0.01, 100]."""
        return self.log_temperature.exp().clamp(0.01, 100.0)

    def item_vectors(self, ids: Tensor) -> Tensor:
        """Item tower: item indices (...,) -> (..., U)."""
        vec = self.items(ids)
        return vec if self.item_tower is None else self.item_tower(vec)

    def _user(self, state: Tensor, ctx: Tensor | None) -> Tensor:
        """User head over the state before an event (and its context, in simplified ARGUS)."""
        if self.user_head is None:
            return state if ctx is None else state + ctx
        return self.user_head(state if ctx is None else torch.cat([state, ctx], dim=-1))

    def _context(self, batch: Batch) -> Tensor:
        B, L = batch.item.shape
        ctx = self.context(batch.context, batch.event_type) if self.context is not None \
            else batch.item.new_zeros(B, L, self.cfg.d_model, dtype=self.start.dtype)
        if self.time_gap is not None:
            ctx = ctx + self.time_gap(batch.timestamp)
        return ctx

    def _feedback(self, batch: Batch, like: Tensor) -> Tensor:
        fb = self.feedback(batch.feedback) if self.feedback is not None else None
        return torch.zeros_like(like) if fb is None else fb

    def _feedback_inputs(self, prev: Tensor, ctx: Tensor, item: Tensor) -> list[Tensor]:
        """The FP head's inputs for event t, each (B, L, D): h_{t-1}, context_t, item_t, and
        with ``feedback_interaction`` their product h_{t-1} * item_t. Never event t's own
        feedback, nor any state that has seen it: that is the label."""
        parts = [prev, ctx, item]
        if self.cfg.feedback_interaction:
            parts.append(prev * item)
        return parts

    # -- one-pass scoring (fine-tuning, export) ----------------------------------------------------
    def event_states(self, batch: Batch) -> Tensor:
        """(B, L, D) state h_t after each event of the windows (simplified ARGUS)."""
        if self.cfg.variant != "simplified":
            raise ValueError("per-event user states need the simplified variant (one token per "
                             "event); this model is full ARGUS")
        ctx = self._context(batch)
        item = self.items(batch.item) * self.item_input_scale
        fb = self._feedback(batch, item)
        return self.encoder((ctx + item + fb) * batch.mask.unsqueeze(-1), batch.timestamp,
                            batch.mask)

    def user_vectors_at(self, state: Tensor, context: Tensor, event_type: Tensor,
                        gap: Tensor) -> Tensor:
        """User vectors (N, U) for events shown after ``state`` (N, D): their context codes
        (N, C), event types (N,) and seconds since the state's event (N,)."""
        ctx = (self.context(context, event_type) if self.context is not None
               else state.new_zeros(state.shape))
        if self.time_gap is not None:
            ctx = ctx + self.time_gap.of_gaps(gap)
        return self._user(state, ctx)

    # -- forward -------------------------------------------------------------------------------
    def forward(self, batch: Batch, states_only: bool = False) -> ModelOutput:
        """The heads' outputs over ``batch``; with ``states_only``, the encoder states alone
        (fine-tuning scores impressions from them, through the parallel wrapper)."""
        if states_only:
            return ModelOutput(user=None, feedback=None, hidden=self.event_states(batch))
        ctx = self._context(batch)  # (B, L, D)
        item = self.items(batch.item)  # (B, L, D)
        fb = self._feedback(batch, item)  # (B, L, D)
        keep = batch.mask.unsqueeze(-1)
        item_in = item * self.item_input_scale if self.item_input_scale != 1.0 else item
        if self.cfg.variant == "simplified":
            hidden = self.encoder((ctx + item_in + fb) * keep, batch.timestamp, batch.mask)
            # h_{t-1}: shift right by one event, the learned start state first
            prev = torch.cat([self.start.expand(hidden.shape[0], 1, -1), hidden[:, :-1]], 1)
            user = self._user(prev, ctx)
            fb_logits = (self.feedback_head(torch.cat(self._feedback_inputs(prev, ctx, item),
                                                      dim=-1))
                         if self.feedback_head is not None else None)
        else:
            B, L, D = item.shape
            types = self.token_type.weight  # (3, D)
            tokens = torch.stack([ctx + types[0], item_in + types[1], fb + types[2]], dim=2)
            hidden = self.encoder((tokens * keep.unsqueeze(2)).reshape(B, 3 * L, D),
                                  batch.timestamp.repeat_interleave(3, 1),
                                  batch.mask.repeat_interleave(3, 1))
            per_event = hidden.view(B, L, 3, D)
            user = self._user(per_event[:, :, 0], None)  # context token: history + context_t
            fb_logits = (self.feedback_head(per_event[:, :, 1])  # item token: + item_t
                         if self.feedback_head is not None else None)
        return ModelOutput(user=user, feedback=fb_logits, hidden=hidden)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the encoder, the heads and the embedding tables, separately."""
        def count(*modules):
            return sum(p.numel() for m in modules if m is not None for p in m.parameters())

        heads = count(self.user_head, self.item_tower, self.feedback_head) + 1
        embeddings = count(self.items, self.context, self.feedback, self.time_gap) + (
            self.token_type.weight.numel() if self.cfg.variant == "full" else 0)
        encoder = count(self.encoder) + self.start.numel()
        return {"encoder": encoder, "heads": heads, "embeddings": embeddings,
                "total": sum(p.numel() for p in self.parameters())}


# Named sizes. Encoder parameters ~ 12 * n_layers * d_model^2 (attention 4 d^2, MLP 8 d^2);
# the four large ones match the paper's 3.2M / 32M / 126M / 1.007B encoders.
PRESETS: dict[str, dict] = {
    "debug": dict(d_model=32, n_layers=2, n_heads=2, max_len=64, user_dim=32,
                  hash_table_size=4096),
    "3m": dict(d_model=256, n_layers=4, n_heads=4, user_dim=128),
    "32m": dict(d_model=512, n_layers=10, n_heads=8, user_dim=256),
    "126m": dict(d_model=1024, n_layers=10, n_heads=16, user_dim=256),
    "1b": dict(d_model=2048, n_layers=20, n_heads=16, user_dim=512),
}


def encoder_parameter_count(cfg: ModelConfig) -> int:
    """Exact parameters of the encoder (blocks, positions, final norm, start state), from the
    config alone, so the 1B preset can be sized without building it."""
    tokens = (3 if cfg.variant == "full" else 1) * cfg.max_len
    if cfg.encoder == "hstu":
        return hstu_parameter_count(cfg, tokens) + cfg.d_model  # + the start state
    D, H = cfg.d_model, cfg.ff_mult * cfg.d_model
    norm = 2 * D if cfg.norm == "layer" else D  # gain and bias, or the gain alone
    qk_norm = 2 * (D // cfg.n_heads) if cfg.qk_norm else 0  # gains over a head's width
    block = (3 * D * D + 3 * D) + (D * D + D) + (D * H + H) + (H * D + D) + 2 * norm + qk_norm
    positions = tokens * D if cfg.positions == "learned" else 0
    return cfg.n_layers * block + positions + norm + D


def model_config(preset: str = "debug", **overrides) -> ModelConfig:
    """A preset's ModelConfig with field overrides (YAML or keyword)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[preset], **overrides})
