"""HSTU: the Hierarchical Sequential Transduction Unit encoder, an alternative to the transformer.

Zhai et al. 2024, "Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers
for Generative Recommendations" (arXiv 2402.17152), section 3.1, equations (1)-(3). Each block
replaces attention + feed-forward by one layer:

- U, V, Q, K = split(SiLU(f1(LayerNorm(X))))                                 (pointwise projection)
- A = SiLU(Q K^T + rab_pos + rab_time) / n on causal, non-padding pairs; O = A V  (no softmax)
- Y = f2(LayerNorm(O) * U); output X + Dropout(Y)                            (pointwise transform)

rab_pos is a learned scalar per head and relative position i - j (clipped to the last of
``max_len`` buckets); rab_time a learned scalar per head and time gap t_i - t_j in seconds,
bucketed as floor(log2(gap + 1)) and clipped to the last of ``time_buckets`` buckets. The
normaliser n is the block's window length ``max_len``, a constant, so a window's output does
not depend on how far its batch is padded.

The fast path computes all heads' scores with one batched matmul, adds the biases gathered
from the two small tables by bucket index, and applies the causal and padding mask once.
Query rows are processed ``query_chunk`` (1024) at a time, each against the keys up to its
last row only, so memory is O(chunk x S) and 8,192-event windows run.
:func:`hstu_block_reference` is the same block written as plain loops; the tests hold the
two together.

Legend: B batch, S tokens, D width, H heads, dqk / dv per-head query-key / value width,
c query rows in a chunk, e keys a chunk can see (its last row + 1), T time buckets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from argusrec.layers import Dropout

if TYPE_CHECKING:  # model.py will import this module; a runtime import back would be circular
    from argusrec.model import ModelConfig

TIME_BUCKETS = 32  # log2 gap buckets: 2^31 s is 68 years, so the last bucket is never crowded
QUERY_CHUNK = 1024  # query rows per chunk: a (B, H, 1024, S) score tensor at a time


def time_bucket(gap: Tensor, num_buckets: int) -> Tensor:
    """Bucket floor(log2(gap + 1)) of int64 gaps in seconds (negative gaps count as 0),
    clipped to ``num_buckets - 1``; any shape, int32, exact for every int64 gap."""
    # Clipping the gap first clips the bucket (log2 is monotonic) and keeps it at most 2^52,
    # which float64 holds exactly; frexp's exponent is then floor(log2) + 1 with no rounding
    # at all (a float32 log2 would round 2^k - 1 up to k once k >= 24).
    g = gap.clamp(0, 2 ** (num_buckets - 1) - 1) + 1
    return torch.frexp(g.double()).exponent - 1


class HSTUBlock(nn.Module):
    """One HSTU layer, (B, S, D) -> (B, S, D), causal, for right-padded windows.

    The attention normaliser n is the block's ``max_len``, one constant for every query and
    batch: dividing by a query's own prefix length i + 1 would make the sum a mean again and
    lose the intensity that dropping the softmax keeps, and dividing by the padded length would
    make a window's outputs depend on its batch-mates.

    ``query_chunk`` sets how many query rows are scored at once; lower it to bound memory.
    """

    def __init__(self, d_model: int, n_heads: int, qk_dim: int, v_dim: int, max_len: int,
                 time_buckets: int, dropout: float) -> None:
        super().__init__()
        if not 1 <= time_buckets <= 53:
            raise ValueError(f"time_buckets must be in 1..53 (exact log2 in float64), got "
                             f"{time_buckets}; the default is {TIME_BUCKETS}")
        self.n_heads, self.qk_dim, self.v_dim = n_heads, qk_dim, v_dim
        self.query_chunk = QUERY_CHUNK
        self.norm_in = nn.LayerNorm(d_model)
        self.f1 = nn.Linear(d_model, n_heads * (2 * v_dim + 2 * qk_dim))
        # Relative attention biases, one scalar per head and bucket. Zero at first: the block
        # starts as plain content attention and learns where recency and position matter.
        self.rab_pos = nn.Parameter(torch.zeros(n_heads, max_len))  # (H, max_len)
        self.rab_time = nn.Parameter(torch.zeros(n_heads, time_buckets))  # (H, T)
        self.norm_out = nn.LayerNorm(n_heads * v_dim)
        self.f2 = nn.Linear(n_heads * v_dim, d_model)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, timestamp: Tensor, mask: Tensor) -> Tensor:
        """x (B, S, D), timestamp (B, S) int64 seconds, mask (B, S) bool (False = padding,
        always on the right) -> (B, S, D)"""
        B, S, _ = x.shape
        H, dqk, dv = self.n_heads, self.qk_dim, self.v_dim
        u, v, q, k = F.silu(self.f1(self.norm_in(x))).split([H * dv, H * dv, H * dqk, H * dqk],
                                                            dim=-1)
        q = q.view(B, S, H, dqk).transpose(1, 2)  # (B, H, S, dqk)
        k = k.view(B, S, H, dqk).transpose(1, 2)  # (B, H, S, dqk)
        v = v.view(B, S, H, dv).transpose(1, 2)  # (B, H, S, dv)
        o = torch.cat([self._attend(q, k, v, timestamp, mask, start)
                       for start in range(0, S, self.query_chunk)], dim=2)  # (B, H, S, dv)
        o = o.transpose(1, 2).reshape(B, S, H * dv)
        return x + self.drop(self.f2(self.norm_out(o) * u))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, timestamp: Tensor, mask: Tensor,
                start: int) -> Tensor:
        """O = A V for query rows start..start+c-1 against keys 0..start+c-1 (later keys are
        all masked, so they are never scored) -> (B, H, c, dv)."""
        S = q.shape[2]
        end = min(start + self.query_chunk, S)
        rows = torch.arange(start, end, device=q.device)
        rel = rows[:, None] - torch.arange(end, device=q.device)  # (c, e) i - j
        gap = timestamp[:, start:end, None] - timestamp[:, None, :end]  # (B, c, e) t_i - t_j
        scores = q[:, :, start:end] @ k[:, :, :end].transpose(-1, -2)  # (B, H, c, e)
        scores += self.rab_pos[:, rel.clamp(0, self.rab_pos.shape[1] - 1)]  # (H, c, e)
        scores += self.rab_time[:, time_bucket(gap, self.rab_time.shape[1])].transpose(0, 1)
        # One mask for causality and padding: padded keys get weight exactly 0.
        keep = (rel >= 0) & mask[:, None, :end]  # (B, c, e)
        a = torch.where(keep.unsqueeze(1), F.silu(scores), 0.0)  # (B, H, c, e)
        # n = the block's window (max_len), a constant: the output of a window does not depend on
        # how far the batch happens to be padded, so training, evaluation and serving agree.
        return (a @ v[:, :, :end]) / self.rab_pos.shape[1]


class HSTUEncoder(nn.Module):
    """HSTU blocks and a final LayerNorm: token embeddings (B, S, D) -> hidden states (B, S, D).

    No absolute position embedding: positions and time enter through each block's relative
    biases. Heads are d_model // n_heads wide for queries, keys and values alike.
    """

    def __init__(self, cfg: ModelConfig, max_tokens: int) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")

        head = cfg.d_model // cfg.n_heads
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            HSTUBlock(cfg.d_model, cfg.n_heads, head, head, max_tokens, TIME_BUCKETS,
                      cfg.dropout) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: Tensor, timestamp: Tensor, mask: Tensor) -> Tensor:
        """x (B, S, D), timestamp (B, S) int64 seconds, mask (B, S) bool -> (B, S, D)"""
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, timestamp, mask)
        return self.norm(x)


def hstu_parameter_count(cfg: ModelConfig, max_tokens: int) -> int:
    """Exact parameter count of HSTUEncoder(cfg, max_tokens) from the config alone.

    Per block, with h = d_model // n_heads (so H h = D when D divides): LayerNorm 2D, f1
    D (4 H h) + 4 H h, rab_pos H max_tokens, rab_time H T, LayerNorm 2 H h, f2 H h D + D;
    that is 5 D^2 + 9 D + H (max_tokens + 32). Plus the final LayerNorm, 2D.
    """
    D, H = cfg.d_model, cfg.n_heads
    inner = H * (D // H)  # H dv, and H dqk
    f1_out = 2 * inner + 2 * inner
    block = (2 * D + (D * f1_out + f1_out) + H * max_tokens + H * TIME_BUCKETS + 2 * inner
             + (inner * D + D))
    return cfg.n_layers * block + 2 * D


def hstu_block_reference(block: HSTUBlock, x: Tensor, timestamp: Tensor, mask: Tensor) -> Tensor:
    """The same block written plainly, for tests: python loops over batch b, query i, head h
    and key j <= i, one dot product at a time. Dropout is not applied (compare with the block
    in eval mode). Returns (B, S, D)."""
    B, S, _ = x.shape
    H, dqk, dv = block.n_heads, block.qk_dim, block.v_dim
    num_pos, num_time = block.rab_pos.shape[1], block.rab_time.shape[1]
    out = torch.empty_like(x)
    for b in range(B):
        proj = [F.silu(block.f1(block.norm_in(x[b, t]))) for t in range(S)]
        u = [p[: H * dv] for p in proj]
        v = [p[H * dv: 2 * H * dv].view(H, dv) for p in proj]
        q = [p[2 * H * dv: 2 * H * dv + H * dqk].view(H, dqk) for p in proj]
        k = [p[2 * H * dv + H * dqk:].view(H, dqk) for p in proj]
        for i in range(S):
            heads = []
            for h in range(H):
                o = torch.zeros(dv, dtype=x.dtype, device=x.device)
                for j in range(i + 1):
                    if not mask[b, j]:
                        continue
                    gap = max(int(timestamp[b, i]) - int(timestamp[b, j]), 0)
                    time = min((gap + 1).bit_length() - 1, num_time - 1)  # floor(log2(gap+1))
                    pos = min(i - j, num_pos - 1)
                    score = (torch.dot(q[i][h], k[j][h]) + block.rab_pos[h, pos]
                             + block.rab_time[h, time])
                    o = o + F.silu(score) / num_pos * v[j][h]
                heads.append(o)
            y = block.f2(block.norm_out(torch.cat(heads)) * u[i])
            out[b, i] = x[b, i] + y
    return out
