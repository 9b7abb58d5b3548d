"""The ARGUS model: shapes, causality, hashed embeddings, presets' parameter counts."""

from __future__ import annotations

import pytest
import torch

from argusrec.embeddings import ItemEmbedding, hash_rows, item_keys
from argusrec.loader import SequenceDataset, collate
from argusrec.model import (PRESETS, ArgusModel, DataSpec, ModelConfig, encoder_parameter_count,
                            model_config)
from argusrec.sequences import PreparedData


def _batch(sim_data, n=4, max_len=32):
    ds = SequenceDataset(sim_data, split="train", max_len=max_len)
    return collate([ds[i] for i in range(n)])


@pytest.mark.parametrize("variant", ["simplified", "full"])
@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_forward_shapes(sim_data, variant, positions):
    data = PreparedData(sim_data)
    cfg = model_config("debug", variant=variant, positions=positions, time_buckets=16)
    model = ArgusModel(cfg, DataSpec.from_prepared(data))
    batch = _batch(sim_data)
    out = model(batch)
    B, L = batch.item.shape
    assert out.user.shape == (B, L, cfg.user_dim)
    assert out.feedback.shape == (B, L, 3)
    assert out.hidden.shape == (B, L * (3 if variant == "full" else 1), cfg.d_model)
    assert model.item_vectors(torch.tensor([1, 2])).shape == (2, cfg.user_dim)
    assert 0.01 <= float(model.temperature.detach()) <= 100


@pytest.mark.parametrize("variant", ["simplified", "full"])
def test_causal_no_peeking_at_the_future(sim_data, variant):
    """Changing event t's item and feedback must not change predictions for events <= t."""
    data = PreparedData(sim_data)
    model = ArgusModel(model_config("debug", variant=variant, dropout=0.0),
                       DataSpec.from_prepared(data)).eval()
    batch = _batch(sim_data, n=2)
    t = 10
    changed = collate([_batch_row(batch, 0), _batch_row(batch, 1)])
    changed.item[:, t] = changed.item[:, t] % data.num_items + 1
    changed.feedback[:, t] = 0.0
    with torch.no_grad():
        a, b = model(batch), model(changed)
    # user vector at t predicts event t from events < t and context_t: unchanged up to t
    assert torch.allclose(a.user[:, : t + 1], b.user[:, : t + 1], atol=1e-5)
    assert not torch.allclose(a.user[:, t + 1:], b.user[:, t + 1:], atol=1e-5)
    # feedback logits at t read item_t (changed), but those before t are untouched
    assert torch.allclose(a.feedback[:, :t], b.feedback[:, :t], atol=1e-5)


def _batch_row(batch, b):
    n = int(batch.mask[b].sum())
    return {"user": batch.user[b].numpy(), "item": batch.item[b, :n].numpy().copy(),
            "timestamp": batch.timestamp[b, :n].numpy(), "event_type": batch.event_type[b, :n].numpy(),
            "context": batch.context[b, :n].numpy(), "feedback": batch.feedback[b, :n].numpy().copy(),
            "positive": batch.positive[b, :n].numpy(), "target": batch.target[b, :n].numpy()}


def test_padding_does_not_change_real_positions(sim_data):
    data = PreparedData(sim_data)
    model = ArgusModel(model_config("debug", dropout=0.0), DataSpec.from_prepared(data)).eval()
    ds = SequenceDataset(sim_data, split="train", max_len=32)
    sample = ds[0]
    n = len(sample["item"])
    with torch.no_grad():
        alone = model(collate([sample])).user[0, :n]
        padded = model(collate([sample], pad_to=n + 7)).user[0, :n]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_hashed_embeddings_are_deterministic_and_take_unseen_ids():
    keys = torch.tensor([0, 11, 12, 10**12])
    rows = hash_rows(keys, 3, 1000)
    assert rows.shape == (4, 3) and (rows >= 0).all() and (rows < 1000).all()
    assert torch.equal(rows, hash_rows(keys, 3, 1000))
    assert len(set(rows[1].tolist())) == 3  # three different rows for one id (w.h.p.)
    emb = ItemEmbedding(keys, 8, kind="hashed", num_hashes=3, table_size=1000)
    out = emb(torch.tensor([[1, 2, 0]]))
    assert out.shape == (1, 3, 8) and torch.all(out[0, 2] == 0)  # padding is zero
    assert item_keys(["a", "b"]).tolist() == item_keys(["a", "b"]).tolist()


def test_auto_item_embedding_choice(sim_data):
    spec = DataSpec.from_prepared(PreparedData(sim_data))
    small = ArgusModel(model_config("debug", hash_table_size=10**6), spec)
    hashed = ArgusModel(model_config("debug", hash_table_size=64), spec)
    assert small.items.kind == "exact" and hashed.items.kind == "hashed"
    assert hashed.items.table.weight.shape[0] == 64


@pytest.mark.parametrize("preset", ["debug", "3m"])
def test_encoder_count_formula_matches_the_model(sim_data, preset):
    spec = DataSpec.from_prepared(PreparedData(sim_data))
    for variant in ("simplified", "full"):
        cfg = model_config(preset, variant=variant)
        assert ArgusModel(cfg, spec).parameter_counts()["encoder"] == encoder_parameter_count(cfg)


def test_presets_match_the_papers_sizes():
    expected = {"3m": 3.2e6, "32m": 32e6, "126m": 126e6, "1b": 1.007e9}
    for name, target in expected.items():
        n = encoder_parameter_count(model_config(name))
        assert abs(n - target) / target < 0.04, (name, n)
    assert set(PRESETS) == {"debug", *expected}
    with pytest.raises(ValueError, match="unknown preset"):
        model_config("7b")


def test_heads_must_divide_the_width(sim_data):
    spec = DataSpec.from_prepared(PreparedData(sim_data))
    with pytest.raises(ValueError, match="divisible"):
        ArgusModel(ModelConfig(d_model=30, n_heads=4), spec)


def test_cpu_dropout_is_inverted_dropout():
    from argusrec.layers import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.2).train()
    out = drop(torch.ones(200_000))
    assert abs(float((out == 0).float().mean()) - 0.2) < 0.01
    assert abs(float(out.mean()) - 1.0) < 0.01 and set(out.unique().tolist()) == {0.0, 1.25}
    assert torch.equal(drop.eval()(torch.ones(5)), torch.ones(5))


@pytest.mark.parametrize("variant", ["simplified", "full"])
def test_hstu_encoder_in_the_model_is_causal_and_counted(sim_data, variant):
    from argusrec.loader import SequenceDataset, collate
    from argusrec.model import encoder_parameter_count
    from argusrec.sequences import PreparedData
    from argusrec.train import TrainConfig, build_model

    data = PreparedData(sim_data)
    cfg = TrainConfig(preset="debug", model={"encoder": "hstu", "variant": variant})
    model = build_model(cfg, data).eval()
    assert model.parameter_counts()["encoder"] == encoder_parameter_count(cfg.resolved_model())
    ds = SequenceDataset(data, split="train", max_len=32)
    batch = collate([ds[0], ds[1]])
    out = model(batch)
    changed = collate([ds[0], ds[1]])
    changed.item[:, 20:] = 1  # later events must not change earlier user vectors
    torch.testing.assert_close(model(changed).user[:, :21], out.user[:, :21])
    # padding a batch further does not change a window's outputs (HSTU's n is fixed)
    padded = collate([ds[0], ds[1]], pad_to=32)
    L = batch.item.shape[1]
    torch.testing.assert_close(model(padded).user[:, :L], out.user, atol=1e-6, rtol=1e-5)


def test_sasrec_item_scaling_and_init(sim_data):
    """scale_item_input multiplies the encoder's item input by sqrt(D), and only that input:
    the one-pass states equal the forward pass's, and the tied tower scores unscaled rows."""
    data = PreparedData(sim_data)
    cfg = model_config("debug", dropout=0.0, user_head="none", item_tower="tied",
                       user_dim=32, d_model=32, item_embedding="exact", item_init_std=0.02,
                       scale_item_input=True, use_content=False)
    torch.manual_seed(0)
    model = ArgusModel(cfg, DataSpec.from_prepared(data)).eval()
    table = model.items.table.weight[1:]
    assert abs(float(table.detach().std()) - 0.02) < 0.002
    batch = _batch(sim_data)
    with torch.no_grad():
        hidden = model(batch).hidden
        assert torch.allclose(model.event_states(batch), hidden, atol=1e-6)
        ids = torch.tensor([1, 2, 3])
        assert torch.equal(model.item_vectors(ids), model.items.table.weight[ids])
        plain = ArgusModel(cfg.model_copy(update={"scale_item_input": False}),
                           DataSpec.from_prepared(data)).eval()
        plain.load_state_dict(model.state_dict())
        assert not torch.allclose(plain(batch).hidden, hidden, atol=1e-4)


def test_sasrec_block_matches_a_plain_reference():
    """The SASRec block against SASRec's own formulation, written plainly with
    nn.MultiheadAttention: Q = LN1(x), K = V = x, residual on LN1(x), then LN2 and a ReLU
    feed-forward with its residual."""
    from argusrec.model import SASRecBlock

    torch.manual_seed(0)
    D, H, S = 16, 2, 9
    block = SASRecBlock(ModelConfig(d_model=D, n_heads=H, ff_mult=1, dropout=0.3), None).eval()
    mha = torch.nn.MultiheadAttention(D, H, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([block.q.weight, block.kv.weight]))
        mha.in_proj_bias.copy_(torch.cat([block.q.bias, block.kv.bias]))
        mha.out_proj.weight.copy_(block.out.weight)
        mha.out_proj.bias.copy_(block.out.bias)
    mha.eval()
    x = torch.randn(3, S, D)
    future = torch.triu(torch.ones(S, S, dtype=torch.bool), diagonal=1)
    with torch.no_grad():
        q = block.norm1(x)
        a, _ = mha(q, x, x, attn_mask=future, need_weights=False)
        y = block.norm2(q + a)
        lin1, _, _, lin2 = block.ff
        expected = y + lin2(torch.relu(lin1(y)))
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_sasrec_block_in_the_model_is_causal_and_counted(sim_data):
    data = PreparedData(sim_data)
    cfg = model_config("debug", block="sasrec", ff_mult=1, dropout=0.0)
    model = ArgusModel(cfg, DataSpec.from_prepared(data)).eval()
    assert model.parameter_counts()["encoder"] == encoder_parameter_count(cfg)
    batch = _batch(sim_data, n=2)
    changed = collate([_batch_row(batch, 0), _batch_row(batch, 1)])
    changed.item[:, 12:] = 1
    with torch.no_grad():
        torch.testing.assert_close(model(changed).user[:, :13], model(batch).user[:, :13])
