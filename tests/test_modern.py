"""The modded-nanoGPT recipe as options: RMSNorm, QK-norm, ReLU^2, zero-initialised outputs
(argusrec.model, argusrec.layers), and the NorMuon optimizer (argusrec.optim), each against a
plain reference; the defaults stay as they were (tests/test_golden.py, tests/test_model.py)."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch import nn

from argusrec.layers import RMS_EPS, ReLU2, mlp, norm_layer
from argusrec.loader import SequenceDataset, collate
from argusrec.model import (ArgusModel, Block, DataSpec, Encoder, ModelConfig,
                            encoder_parameter_count, model_config)
from argusrec.optim import (UPDATE_RMS, NorMuon, OptimConfig, build_optimizer, build_schedule,
                            lr_factor, newton_schulz, normalize_neurons, normuon_direction)
from argusrec.parallel import full_state, load_full_state, load_sharded_state, sharded_state
from argusrec.sequences import PreparedData
from argusrec.treefile import load_tree, save_tree

MODERN = dict(norm="rms", qk_norm=True, activation="relu2", zero_init_out=True)


# -- the model options ---------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{"norm": "rms"}, {"qk_norm": True},
                                     {"activation": "relu2"}, {"zero_init_out": True},
                                     {**MODERN, "positions": "rotary"}])
def test_each_option_builds_runs_and_is_counted(sim_data, options):
    spec = DataSpec.from_prepared(PreparedData(sim_data))
    cfg = model_config("debug", **options)
    torch.manual_seed(0)
    model = ArgusModel(cfg, spec)
    ds = SequenceDataset(sim_data, split="train", max_len=16)
    out = model(collate([ds[i] for i in range(3)]))
    (out.user.square().mean() + out.feedback.square().mean()).backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.parameter_counts()["encoder"] == encoder_parameter_count(cfg)
    kinds = {type(m) for m in model.encoder.modules()}
    assert (nn.RMSNorm in kinds) == (options.get("norm") == "rms" or bool(options.get("qk_norm")))
    assert (nn.LayerNorm in kinds) == (options.get("norm") != "rms")
    assert (ReLU2 in kinds) == (options.get("activation") == "relu2")


def test_zero_init_out_makes_every_block_the_identity():
    cfg = ModelConfig(d_model=16, n_heads=2, n_layers=3, dropout=0.0, positions="rotary",
                      **MODERN)
    encoder = Encoder(cfg, max_tokens=12)
    x = torch.randn(2, 12, 16, requires_grad=True)
    y = x
    for block in encoder.blocks:
        y = block(y)
    assert torch.equal(y, x)
    y.sum().backward()  # ... yet the zero layers get gradients, so they leave zero at once
    assert encoder.blocks[0].out.weight.grad.abs().sum() > 0
    assert encoder.blocks[0].ff[-1].weight.grad.abs().sum() > 0


def test_modern_options_reject_the_blocks_they_do_not_apply_to():
    for name, value in MODERN.items():
        with pytest.raises(ValueError, match=f"{name}: .*pre_norm transformer block only.*hstu"):
            ModelConfig(encoder="hstu", **{name: value})
        with pytest.raises(ValueError, match="block: sasrec"):
            ModelConfig(block="sasrec", **{name: value})
    assert ModelConfig().norm == "layer" and ModelConfig().activation == "gelu"


def _rms_norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + RMS_EPS) * gain


def test_rms_norm_and_relu2_match_their_formulas():
    torch.manual_seed(0)
    norm = norm_layer("rms", 6)
    nn.init.normal_(norm.weight)
    x = torch.randn(3, 5, 6) * 4
    torch.testing.assert_close(norm(x), _rms_norm(x, norm.weight))
    assert torch.equal(mlp(6, 8, 6, "relu2")[1](x), torch.clamp(x, min=0) ** 2)
    assert isinstance(mlp(6, 8, 6)[1], nn.GELU)  # the default stays GELU


def _rotate(x: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary positions as complex numbers: pair (x_2i, x_2i+1) turned by pos * base^(-2i/Dh)."""
    S, Dh = x.shape[-2], x.shape[-1]
    freq = base ** (-torch.arange(0, Dh, 2, dtype=torch.float64) / Dh)
    turn = torch.polar(torch.ones(S, Dh // 2, dtype=torch.float64),
                       torch.arange(S, dtype=torch.float64)[:, None] * freq)
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], Dh // 2, 2).contiguous())
    return torch.view_as_real(pairs * turn).flatten(-2).to(x.dtype)


def test_qk_norm_block_matches_a_plain_reference():
    """The whole block with RMSNorm, QK-norm (learned gains), rotary and ReLU^2, against
    softmax attention written out by hand."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=8, n_heads=2, ff_mult=2, dropout=0.0, positions="rotary",
                      norm="rms", qk_norm=True, activation="relu2")
    encoder = Encoder(cfg, max_tokens=5)
    block: Block = encoder.blocks[0]
    for norm in (block.norm1, block.norm2, block.q_norm, block.k_norm):
        nn.init.normal_(norm.weight)  # gains away from 1, so a missing one would show
    x = torch.randn(2, 5, 8)
    B, S, D, H, Dh = 2, 5, 8, 2, 4
    qkv = _rms_norm(x, block.norm1.weight) @ block.qkv.weight.T + block.qkv.bias
    q, k, v = (t.reshape(B, S, H, Dh).transpose(1, 2) for t in qkv.split(D, dim=-1))
    q, k = _rotate(_rms_norm(q, block.q_norm.weight)), _rotate(_rms_norm(k, block.k_norm.weight))
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    scores = scores.masked_fill(~torch.ones(S, S, dtype=torch.bool).tril(), -math.inf)
    a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, S, D)
    h = x + a @ block.out.weight.T + block.out.bias
    ff = block.ff
    inner = torch.relu(_rms_norm(h, block.norm2.weight) @ ff[0].weight.T + ff[0].bias) ** 2
    expected = h + inner @ ff[2].weight.T + ff[2].bias
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


# -- NorMuon --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (32, 32), (3, 8, 8)])
def test_newton_schulz_brings_singular_values_near_one(shape):
    torch.manual_seed(0)
    g = torch.randn(*shape) * 7.0  # the scale does not matter
    s = torch.linalg.svdvals(newton_schulz(g, steps=5))
    assert s.min() > 0.6 and s.max() < 1.3, (s.min(), s.max())
    exact = torch.linalg.svd(g, full_matrices=False)
    polar = exact.U @ exact.Vh  # the direction it approximates: U V^T
    cos = F.cosine_similarity(newton_schulz(g).flatten(-2), polar.flatten(-2), dim=-1)
    assert (cos > 0.95).all()


def test_neuron_normalisation_evens_the_rows_and_the_scale_matches_adamw_rms():
    torch.manual_seed(0)
    o = newton_schulz(torch.randn(12, 20)) * torch.linspace(0.1, 3.0, 12)[:, None]
    moment = torch.zeros(12, 1)
    rows = normalize_neurons(o, moment, beta2=0.95).square().mean(-1).sqrt()
    # a fresh second moment is (1 - beta2) * mean square: every row gets RMS 1/sqrt(1-beta2)
    torch.testing.assert_close(rows, torch.full((12,), 1 / math.sqrt(0.05)))
    torch.testing.assert_close(moment[:, 0], 0.05 * o.square().mean(-1))
    step = normuon_direction(torch.randn(12, 20), torch.zeros(12, 1), beta2=0.95, ns_steps=5,
                             row_blocks=3)
    blocks = step.reshape(3, 4, 20).square().mean(dim=(1, 2)).sqrt()
    torch.testing.assert_close(blocks, torch.full((3,), UPDATE_RMS))


def test_adamw_groups_are_torch_adamw():
    torch.manual_seed(0)
    ours = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    a = NorMuon([{"params": ours, "weight_decay": 0.1}], lr=0.01, betas=(0.9, 0.98))
    b = torch.optim.AdamW([{"params": theirs, "weight_decay": 0.1}], lr=0.01,
                          betas=(0.9, 0.98), foreach=False)
    for _ in range(5):
        grads = [torch.randn_like(p) for p in ours]
        for params, opt in ((ours, a), (theirs, b)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


class _Tiny(nn.Module):
    """Embeddings -> the ARGUS transformer encoder -> a linear head: a next-token problem."""

    def __init__(self, vocab: int = 11, **model) -> None:
        super().__init__()
        cfg = ModelConfig(d_model=16, n_heads=2, n_layers=2, dropout=0.0, **model)
        self.embed = nn.Embedding(vocab, 16)
        self.encoder = Encoder(cfg, max_tokens=12)
        self.head = nn.Linear(16, vocab)

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.encoder(self.embed(tokens[:, :-1])))  # (B, S-1, V)
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())


def _problem() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 11, (8, 12), generator=g)


def test_normuon_takes_the_blocks_matrices_and_the_schedule_scales_both_parts():
    model = _Tiny()
    cfg = OptimConfig(optimizer="normuon", lr=1e-3, muon_lr=0.02, warmup_steps=2)
    opt = build_optimizer(model, cfg)
    kinds = [g["kind"] for g in opt.param_groups]
    assert kinds == ["adamw", "adamw", "normuon", "normuon"]  # the loop logs group 0's lr
    muon = {id(p): g["row_blocks"] for g in opt.param_groups if g["kind"] == "normuon"
            for p in g["params"]}
    blocks = model.encoder.blocks
    assert muon == {id(m.weight): 3 if name.endswith("qkv") else 1
                    for name, m in blocks.named_modules() if isinstance(m, nn.Linear)}
    adam = {id(p) for g in opt.param_groups if g["kind"] == "adamw" for p in g["params"]}
    assert id(model.embed.weight) in adam and id(model.head.weight) in adam
    assert id(blocks[0].qkv.bias) in adam and id(model.encoder.norm.weight) in adam
    assert len(adam) + len(muon) == len(list(model.parameters()))
    schedule = build_schedule(opt, total=10, cfg=cfg)
    for step in range(4):
        f = lr_factor(step, 10, cfg)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(
            [1e-3 * f, 1e-3 * f, 0.02 * f, 0.02 * f])
        opt.step()
        schedule.step()
    assert build_optimizer(model, OptimConfig(optimizer="normuon")).param_groups[-1]["lr"] == 1e-3


def test_normuon_trains_a_tiny_model():
    torch.manual_seed(0)
    model, tokens = _Tiny(positions="rotary", **MODERN), _problem()
    opt = build_optimizer(model, OptimConfig(optimizer="normuon", lr=0.02))
    losses = []
    for _ in range(50):
        loss = model.loss(tokens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0], losses[::10]


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        model.loss(_problem()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _fresh(model: nn.Module) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A model of the same shape with other weights, and its fresh NorMuon optimizer."""
    torch.manual_seed(99)
    other = _Tiny()
    assert not torch.equal(other.encoder.blocks[0].qkv.weight, model.encoder.blocks[0].qkv.weight)
    return other, build_optimizer(other, OptimConfig(optimizer="normuon", lr=0.01))


def _same_next_step(a: nn.Module, opt_a, b: nn.Module, opt_b) -> None:
    _train(a, opt_a, 1)
    _train(b, opt_b, 1)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_normuon_state_round_trips_through_a_consolidated_checkpoint(tmp_path):
    """As argusrec.fit saves and resumes: full_state -> save_tree (safetensors + JSON) ->
    load_tree -> load_full_state into a fresh model and optimizer."""
    torch.manual_seed(0)
    model = _Tiny()
    opt = build_optimizer(model, OptimConfig(optimizer="normuon", lr=0.01))
    _train(model, opt, 3)
    weights, optim_state = full_state(model, opt)
    save_tree({"optimizer": optim_state}, tmp_path / "state")  # refuses anything but tensors,
    back = load_tree(tmp_path / "state")["optimizer"]  # numbers, strings and containers
    other, other_opt = _fresh(model)
    load_full_state(other, weights, other_opt, back)
    def groups(o):  # betas come back as a list from torch's state-dict helpers (AdamW too)
        return [{**g, "betas": tuple(g["betas"])} for g in o.state_dict()["param_groups"]]

    assert groups(other_opt) == groups(opt)
    _same_next_step(model, opt, other, other_opt)
    # the plain state_dict / load_state_dict round trip too (a copy: in one process, loading
    # keeps the very tensors, as torch's own optimizers do)
    other, other_opt = _fresh(model)
    other.load_state_dict(model.state_dict())
    other_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    _same_next_step(model, opt, other, other_opt)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # one process is meant
def test_normuon_state_round_trips_through_a_sharded_checkpoint(tmp_path):
    """The sharded format: sharded_state's tensors through DCP, its param groups through
    save_tree, then load_sharded_state into a fresh model and optimizer."""
    torch.manual_seed(0)
    model = _Tiny()
    opt = build_optimizer(model, OptimConfig(optimizer="normuon", lr=0.01))
    _train(model, opt, 3)
    tensors, groups = sharded_state(model, opt)
    assert {k.rsplit(".", 1)[-1] for k in tensors if k.startswith("optim.")} == {
        "step", "exp_avg", "exp_avg_sq", "momentum_buffer", "second_moment"}
    dcp.save(tensors, checkpoint_id=tmp_path / "shards", no_dist=True)
    save_tree({"param_groups": groups}, tmp_path / "state")
    other, other_opt = _fresh(model)
    into, _ = sharded_state(other, other_opt)
    dcp.load(into, checkpoint_id=tmp_path / "shards", no_dist=True)
    load_sharded_state(other, other_opt, into, load_tree(tmp_path / "state")["param_groups"])
    _same_next_step(model, opt, other, other_opt)


@pytest.mark.slow
@pytest.mark.distributed
def test_normuon_under_fsdp_matches_one_process(tmp_path):
    """Two gloo ranks, the tiny model sharded with FSDP2 (NorMuon's matrices are DTensor row
    shards): the same parameters as one unsharded process, also after a consolidated resume."""
    result = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", __file__, str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(result.read_text()) == {"trained": 0.0, "resumed": 0.0}


class _Called(_Tiny):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # FSDP's root hooks run on forward
        return self.loss(tokens)


def _fsdp_worker(out: Path) -> None:
    """One rank of the test above: every rank sees the whole batch, so FSDP's averaged
    gradients are exactly one process's."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    cfg = OptimConfig(optimizer="normuon", lr=0.01)

    def build(shard: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = _Called(positions="rotary", **MODERN)
        if shard:
            for block in model.encoder.blocks:
                fully_shard(block)
            fully_shard(model)
        return model, build_optimizer(model, cfg)

    def gap(a: nn.Module, b: nn.Module) -> float:
        full = [(p.full_tensor() if hasattr(p, "full_tensor") else p) for p in b.parameters()]
        return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), full))

    def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            model(_problem()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    (plain, plain_opt), (sharded, sharded_opt) = build(False), build(True)
    train(plain, plain_opt, 4)
    train(sharded, sharded_opt, 4)
    trained = gap(plain, sharded)
    weights, optim_state = full_state(sharded, sharded_opt)  # whole on rank 0
    if dist.get_rank() == 0:
        save_tree({"weights": weights, "optimizer": optim_state}, out / "state")
    dist.barrier()
    saved = load_tree(out / "state")
    resumed, resumed_opt = build(True)
    load_full_state(resumed, saved["weights"], resumed_opt, saved["optimizer"])
    train(plain, plain_opt, 1)
    train(resumed, resumed_opt, 1)
    result = {"trained": trained, "resumed": gap(plain, resumed)}
    if dist.get_rank() == 0:
        (out / "result.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":  # a rank of test_normuon_under_fsdp_matches_one_process
    _fsdp_worker(Path(sys.argv[1]))
