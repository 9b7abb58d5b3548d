"""Vocabularies that grow: weights carried to a newer vocabulary by original id, the rules for
what the old model never saw, self-contained checkpoints, and `--resume` / `--init-from`."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
import torch

from argusrec.checkpoint import Checkpoint, load_model
from argusrec.errors import DataError
from argusrec.model import ArgusModel, DataSpec, model_config
from argusrec.train import TrainConfig, pretrain
from argusrec.vocab import Vocabulary, adapt_state, code_map, item_map


def _vocab(items, context=None, types=("listen", "like"), feedback=None) -> Vocabulary:
    return Vocabulary(items=pl.Series("item", items),
                      context=context if context is not None else
                      {"is_organic": ["organic", "recommendation"], "surface": ["home", "feed"]},
                      event_types=list(types),
                      feedback=feedback if feedback is not None else
                      {"played_ratio": "ratio", "like": "binary"})


def _model(vocab: Vocabulary, **fields) -> ArgusModel:
    torch.manual_seed(0)
    return ArgusModel(model_config("debug", **fields), DataSpec.from_vocabulary(vocab))


def test_maps_by_id():
    assert item_map(pl.Series(["a", "b", "c"]), pl.Series(["c", "x", "a"])).tolist() == \
        [0, 3, -1, 1]
    assert code_map(["home", "feed"], ["feed", "new", "home"]).tolist() == [0, 2, -1, 1]
    with pytest.raises(DataError, match="String"):
        item_map(pl.Series(["a"]), pl.Series([1]))


def test_exact_items_follow_their_ids_and_new_ones_get_the_mean():
    old = _vocab(["a", "b", "c"])
    new = _vocab(["c", "a", "b", "d"], context={"is_organic": ["organic", "recommendation"],
                                               "surface": ["feed", "search", "home"]},
                 types=("like", "listen", "skip"),
                 feedback={"like": "binary", "played_ratio": "ratio", "dislike": "binary"})
    trained, fresh = _model(old), _model(new)
    assert trained.items.kind == "exact"
    state = adapt_state(trained.state_dict(), old, new, fresh)
    fresh.load_state_dict(state)
    table, before = fresh.items.table.weight, trained.items.table.weight
    for new_row, old_row in ((1, 3), (2, 1), (3, 2)):
        torch.testing.assert_close(table[new_row], before[old_row])
    torch.testing.assert_close(table[4], before[1:].mean(0))
    surface_new, surface_old = fresh.context.fields[1].weight, trained.context.fields[1].weight
    torch.testing.assert_close(surface_new[1], surface_old[2])  # feed
    torch.testing.assert_close(surface_new[2], surface_old[0])  # search: unknown's row
    torch.testing.assert_close(surface_new[3], surface_old[1])  # home
    types_new, types_old = fresh.context.event_type.weight, trained.context.event_type.weight
    torch.testing.assert_close(types_new[1], types_old[2])
    torch.testing.assert_close(types_new[3], types_old[1:].mean(0))  # skip: new
    # feedback input: columns follow the signal; a new signal has zero weights
    w_new, w_old = fresh.feedback.proj.weight, trained.feedback.proj.weight  # (D, 2F)
    torch.testing.assert_close(w_new[:, 0], w_old[:, 1])  # like value
    torch.testing.assert_close(w_new[:, 1], w_old[:, 0])  # played_ratio value
    assert torch.all(w_new[:, 2] == 0) and torch.all(w_new[:, 5] == 0)  # dislike
    torch.testing.assert_close(w_new[:, 3], w_old[:, 3])  # like present
    head_new, head_old = fresh.feedback_head[-1].weight, trained.feedback_head[-1].weight
    torch.testing.assert_close(head_new[0], head_old[1])


def test_hashed_items_need_no_mapping():
    old, new = _vocab([10, 20, 30]), _vocab([30, 10, 40, 20])
    trained = _model(old, item_embedding="hashed")
    fresh = _model(new, item_embedding="hashed")
    fresh.load_state_dict(adapt_state(trained.state_dict(), old, new, fresh))
    with torch.no_grad():
        torch.testing.assert_close(fresh.items(torch.tensor([1, 2, 4])),
                                   trained.items(torch.tensor([3, 1, 2])))


def test_a_run_loads_without_its_dataset(sim_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sim_data, data)
    pretrain(data, tmp_path / "run", TrainConfig(max_steps=2, batch_size=4), progress=False)
    model, _, found = load_model(tmp_path / "run")
    assert found is not None
    shutil.move(tmp_path / "run", tmp_path / "moved")
    shutil.rmtree(data)
    alone, config, found = load_model(tmp_path / "moved")
    assert found is None and config["data"]["meta"]["counts"]["items"] == alone.spec.num_items
    for a, b in zip(model.state_dict().values(), alone.state_dict().values()):
        torch.testing.assert_close(a, b)
    ckpt = Checkpoint.open(tmp_path / "moved")
    assert ckpt.vocabulary().users is not None
    assert (ckpt.path / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_resume_uses_the_saved_config(sim_data, tmp_path):
    cfg = TrainConfig(max_steps=2, batch_size=4, model={"max_len": 32})
    pretrain(sim_data, tmp_path / "run", cfg, progress=False)
    with pytest.raises(DataError, match="already complete"):
        pretrain(sim_data, tmp_path / "run", resume=True, progress=False)
    with pytest.raises(DataError, match="batch_size"):
        pretrain(sim_data, tmp_path / "run", TrainConfig(max_steps=4, batch_size=8),
                 resume=True, progress=False)
    more = pretrain(sim_data, tmp_path / "run", cfg.model_copy(update={"max_steps": 4}),
                    resume=True, progress=False)
    assert more.steps == 4
    saved = Checkpoint.open(tmp_path / "run").config["train"]
    assert saved["max_steps"] == 4 and saved["model"] == {"max_len": 32}


def test_init_from_an_older_vocabulary(sim_data, tmp_path):
    pretrain(sim_data, tmp_path / "run", TrainConfig(max_steps=2, batch_size=4),
             progress=False)
    warm = pretrain(sim_data, tmp_path / "warm", TrainConfig(max_steps=1, batch_size=4),
                    init_from=tmp_path / "run", progress=False)
    assert warm.steps == 1
    with pytest.raises(DataError, match="architecture"):
        pretrain(sim_data, tmp_path / "wide", TrainConfig(max_steps=1, batch_size=4,
                                                          model={"d_model": 64}),
                 init_from=tmp_path / "run", progress=False)
    assert np.isfinite(warm.final_loss)


def test_no_pickle_is_loaded_from_a_run(sim_data, tmp_path):
    """A planted pickle (it would create a file when unpickled) is never executed: resume
    and export read JSON and safetensors only, and an old pickle-only state is refused."""
    import pickle

    from argusrec.export import export
    from argusrec.treefile import load_tree, save_tree

    tree = {"optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [
        {"lr": 1e-3, "betas": (0.9, 0.98), "params": [0]}]}, "rng": {"numpy": (
            "MT19937", np.arange(4, dtype=np.uint32), 1, 0, 0.0)}, "best": float("-inf")}
    save_tree(tree, tmp_path / "tree")
    back = load_tree(tmp_path / "tree")
    assert back["optimizer"]["state"][0]["step"] == 3.0
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.98)
    assert back["rng"]["numpy"][1].dtype == np.uint32 and back["best"] == float("-inf")

    pretrain(sim_data, tmp_path / "run", TrainConfig(max_steps=2, batch_size=4),
             progress=False)
    ckpt = Checkpoint.open(tmp_path / "run")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ("state.pt", "optimizer.pt", "model.pt"):
        (ckpt.path / name).write_bytes(pickle.dumps(Exploit()))
    export(tmp_path / "run", tmp_path / "snaps", progress=False)
    more = TrainConfig(max_steps=3, batch_size=4)
    pretrain(sim_data, tmp_path / "run", more, resume=True, progress=False)
    assert not marker.exists()
    # an older checkpoint: no checksums, its resume state only as a pickle
    import json

    for step in (tmp_path / "run" / "checkpoints").glob("step-*"):
        config = json.loads((step / "config.json").read_text())
        config.pop("files")
        (step / "config.json").write_text(json.dumps(config))
        (step / "state.json").unlink()
        (step / "state.pt").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(DataError, match="never loads"):
        pretrain(sim_data, tmp_path / "run", TrainConfig(max_steps=4, batch_size=4),
                 resume=True, progress=False)
    assert not marker.exists()
