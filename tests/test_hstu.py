"""HSTU: fast block vs the plain reference, causality, padding, chunking, parameter counts."""

from __future__ import annotations

import pytest
import torch

from argusrec.hstu import (HSTUBlock, HSTUEncoder, hstu_block_reference, hstu_parameter_count,
                           time_bucket)
from argusrec.model import ModelConfig


def _block(seed: int = 0, n_heads: int = 3, max_len: int = 8) -> HSTUBlock:
    """A small block in eval mode with random (not zero) bias tables, so they are exercised.
    max_len 8 < the test windows, so the position clip is exercised too."""
    torch.manual_seed(seed)
    block = HSTUBlock(d_model=12, n_heads=n_heads, qk_dim=5, v_dim=4, max_len=max_len,
                      time_buckets=6, dropout=0.1).eval()
    with torch.no_grad():
        block.rab_pos.normal_()
        block.rab_time.normal_()
    return block


def _inputs(B: int = 2, S: int = 12, D: int = 12, seed: int = 1):
    """Random tokens, increasing timestamps with gaps from 0 s to ~1 h, and the second row
    padded after 7 events."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, S, D, generator=g)
    gaps = torch.randint(0, 4000, (B, S), generator=g) * torch.randint(0, 2, (B, S), generator=g)
    timestamp = 1_700_000_000 + gaps.cumsum(1)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 7:] = False
    return x, timestamp, mask


def test_time_bucket_is_exact_log2():
    gaps = [0, 1, 2, 3, 4, 7, 8, -5] + [2 ** k + d for k in range(20, 40) for d in (-2, -1, 0)]
    got = time_bucket(torch.tensor(gaps), 32).tolist()
    want = [min((max(g, 0) + 1).bit_length() - 1, 31) for g in gaps]
    assert got == want


def test_fast_block_matches_reference():
    block = _block()
    x, timestamp, mask = _inputs()
    with torch.no_grad():
        fast = block(x, timestamp, mask)
        slow = hstu_block_reference(block, x, timestamp, mask)
    assert fast.shape == x.shape
    assert torch.allclose(fast, slow, atol=1e-5)


def test_chunked_rows_match_one_chunk():
    block = _block()
    x, timestamp, mask = _inputs()
    with torch.no_grad():
        whole = block(x, timestamp, mask)
        block.query_chunk = 5  # chunks of 5, 5, 2 rows
        chunked = block(x, timestamp, mask)
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_causal_and_padding_do_not_leak():
    block = _block()
    x, timestamp, mask = _inputs()
    t = 5
    later = x.clone()
    later[:, t] += 1.0
    later_time = timestamp.clone()
    later_time[:, t:] += 10_000
    padding = x.clone()
    padding[1, 7:] = torch.randn(5, 12) * 100
    pad_time = timestamp.clone()
    pad_time[1, 7:] = 0
    with torch.no_grad():
        base = block(x, timestamp, mask)
        changed = block(later, later_time, mask)
        padded = block(padding, pad_time, mask)
    assert torch.allclose(base[:, :t], changed[:, :t], atol=1e-6)
    assert not torch.allclose(base[:, t:], changed[:, t:], atol=1e-4)
    assert torch.equal(base[0], padded[0])
    assert torch.allclose(base[1, :7], padded[1, :7], atol=1e-6)


def test_gradients_reach_bias_tables():
    block = _block().train()
    x, timestamp, mask = _inputs()
    block(x, timestamp, mask).square().sum().backward()
    for table in (block.rab_pos, block.rab_time):
        assert table.grad is not None and table.grad.abs().sum() > 0


@pytest.mark.parametrize("cfg, max_tokens", [
    (ModelConfig(d_model=32, n_layers=2, n_heads=2, max_len=64), 64),
    (ModelConfig(d_model=48, n_layers=3, n_heads=4, max_len=20), 60),
])
def test_parameter_count(cfg, max_tokens):
    encoder = HSTUEncoder(cfg, max_tokens)
    assert hstu_parameter_count(cfg, max_tokens) == sum(p.numel() for p in encoder.parameters())


def test_encoder_smoke():
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, max_len=64)
    encoder = HSTUEncoder(cfg, 64)
    x, timestamp, mask = _inputs(B=2, S=64, D=32)
    out = encoder(x, timestamp, mask)
    assert out.shape == (2, 64, 32)
    assert torch.isfinite(out).all()
