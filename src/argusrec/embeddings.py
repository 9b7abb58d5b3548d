"""Input embeddings of ARGUS events: items, context, feedback and time gaps.

Items use *unified hashed embeddings* (ARGUS, arXiv 2507.15994, "Model"): every item key is
hashed by k independent hash functions into one shared table and the k rows are summed, so the
table size is fixed whatever the catalogue and an unseen id still gets a vector. An exact
vocabulary table is the alternative for small catalogues. Optional content vectors (Yambda's
audio embeddings) are projected and added.

Legend: B batch, L events, D model width, V catalogue size, E content width.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

# Odd 64-bit multipliers for multiply-shift hashing; one pair per hash function.
_HASH_SEEDS = [(0x9E3779B97F4A7C15, 0x632BE59BD9B4E019), (0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9),
               (0xD6E8FEB86659FD93, 0xA0761D6478BD642F), (0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3),
               (0x589965CC75374CC3, 0x1D8E4E27C47D124F), (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)]


def _signed(value: int) -> int:
    """A 64-bit constant as the signed int64 torch stores."""
    return value - (1 << 64) if value >= 1 << 63 else value


def item_keys(original_ids) -> np.ndarray:
    """Stable int64 keys of original item ids (ints as is, strings by blake2b), for hashing.

    Hashing the *original* id rather than the dense index keeps an item's rows the same when
    the dataset is prepared again with new items, and lets an unseen id be embedded.
    """
    values = list(original_ids)
    if all(isinstance(v, (int, np.integer)) for v in values):
        return np.asarray(values, dtype=np.int64)
    import hashlib

    return np.asarray([int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(),
                                      "little", signed=True) for v in values], dtype=np.int64)


def hash_rows(keys: Tensor, num_hashes: int, table_size: int) -> Tensor:
    """(..., k) table rows of int64 ``keys`` under k multiply-shift-mod hash functions."""
    out = []
    for a, b in _HASH_SEEDS[:num_hashes]:
        mixed = keys * _signed(a) + _signed(b)  # wraps modulo 2^64, deterministic
        mixed = mixed ^ (mixed >> 29)
        out.append(torch.remainder(mixed * _signed(b | 1), table_size))
    return torch.stack(out, dim=-1)


class ItemEmbedding(nn.Module):
    """Item index -> (…, D) vector: hashed (k rows of a shared table) or exact, plus content.

    Args:
        keys: (V+1,) int64 keys of the original ids per item index (row 0: padding).
        dim: output width D.
        kind: "hashed" or "exact".
        num_hashes, table_size: the hashed table's k and rows.
        content: optional (V+1, E) float content vectors, projected to D and added.
        init_std: std of the table's initial values; 0 = 1/sqrt(D) (1/sqrt(kD) when hashed).
    """

    def __init__(self, keys: Tensor, dim: int, *, kind: str = "hashed", num_hashes: int = 3,
                 table_size: int = 524_288, content: Tensor | None = None,
                 init_std: float = 0.0) -> None:
        super().__init__()
        if kind not in ("hashed", "exact"):
            raise ValueError(f"item embedding kind must be hashed or exact, not {kind!r}")
        if not 1 <= num_hashes <= len(_HASH_SEEDS):
            raise ValueError(f"num_hashes must be 1..{len(_HASH_SEEDS)}")
        self.kind, self.num_hashes = kind, num_hashes
        num_rows = keys.shape[0]
        if kind == "hashed":
            self.register_buffer("rows", hash_rows(keys.long(), num_hashes, table_size),
                                 persistent=False)  # (V+1, k), cheap to recompute
            self.table = nn.Embedding(table_size, dim)
            nn.init.normal_(self.table.weight, std=init_std or 1.0 / math.sqrt(num_hashes * dim))
        else:
            self.table = nn.Embedding(num_rows, dim, padding_idx=0)
            nn.init.normal_(self.table.weight, std=init_std or 1.0 / math.sqrt(dim))
            with torch.no_grad():
                self.table.weight[0].zero_()
        self.register_buffer("keys", keys.long(), persistent=False)
        if content is not None:
            self.register_buffer("content", content.float(), persistent=False)
            self.content_proj = nn.Linear(content.shape[1], dim, bias=False)
        else:
            self.content, self.content_proj = None, None

    def forward(self, ids: Tensor) -> Tensor:
        if self.kind == "hashed":
            vec = self.table(self.rows[ids]).sum(dim=-2)  # (..., k, D) -> (..., D)
        else:
            vec = self.table(ids)
        if self.content_proj is not None:
            vec = vec + self.content_proj(self.content[ids])
        return vec * (ids != 0).unsqueeze(-1)


class ContextEmbedding(nn.Module):
    """Context codes (B, L, C) and event types (B, L) -> (B, L, D), a sum of field embeddings."""

    def __init__(self, cardinalities: list[int], num_event_types: int, dim: int) -> None:
        super().__init__()
        self.fields = nn.ModuleList(nn.Embedding(c, dim) for c in cardinalities)
        self.event_type = nn.Embedding(num_event_types + 1, dim)
        for emb in [*self.fields, self.event_type]:
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self, context: Tensor, event_type: Tensor) -> Tensor:
        out = self.event_type(event_type)
        for c, emb in enumerate(self.fields):
            out = out + emb(context[..., c])
        return out


class FeedbackEmbedding(nn.Module):
    """Feedback values (B, L, F), NaN where absent -> (B, L, D) from [values; present]."""

    def __init__(self, num_signals: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * num_signals, dim) if num_signals else None

    def forward(self, feedback: Tensor) -> Tensor | None:
        if self.proj is None:
            return None
        present = ~torch.isnan(feedback)
        return self.proj(torch.cat([torch.nan_to_num(feedback), present.float()], dim=-1))


class TimeGapEmbedding(nn.Module):
    """Seconds since the previous event, in log2 buckets -> (B, L, D); bucket 0 for the first."""

    def __init__(self, num_buckets: int, dim: int) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.table = nn.Embedding(num_buckets, dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, timestamp: Tensor) -> Tensor:
        gap = (timestamp[:, 1:] - timestamp[:, :-1])  # (B, L-1)
        bucket = self.bucket(gap)
        first = torch.zeros(bucket.shape[0], 1, dtype=bucket.dtype, device=bucket.device)
        bucket = torch.cat([first, bucket], dim=1)  # bucket 0 for the first event
        return self.table(bucket)

    def bucket(self, gap: Tensor) -> Tensor:
        """Bucket (>= 1) of gaps in seconds, any shape."""
        gap = gap.clamp(min=0).float()
        return (torch.log2(gap + 1.0).floor().long() + 1).clamp(max=self.num_buckets - 1)

    def of_gaps(self, gap: Tensor) -> Tensor:
        """(..., D) embeddings of explicit gaps in seconds (an impression after a lag)."""
        return self.table(self.bucket(gap))
