"""Tests of argusrec.simulate and argusrec.oracle on tiny configurations (a few seconds in all)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

import argusrec.simulate as sim
from argusrec.errors import DataError
from argusrec.oracle import Oracle, build_world
from argusrec.simulate import SimulatorConfig, simulate

TINY = SimulatorConfig(users=24, items=3000, events_scale=0.1, shard_users=10, seed=7)

EXPECTED_SCHEMAS = {
    "multi_event.parquet": pa.schema([
        ("uid", pa.uint32()), ("timestamp", pa.uint32()), ("item_id", pa.uint32()),
        ("is_organic", pa.uint8()), ("played_ratio_pct", pa.uint16()),
        ("track_length_seconds", pa.uint32()), ("event_type", pa.string()),
    ]),
    "embeddings.parquet": pa.schema([
        ("item_id", pa.uint32()), ("embed", pa.list_(pa.float32())),
        ("normalized_embed", pa.list_(pa.float32())),
    ]),
    "artist_mapping.parquet": pa.schema([("artist_id", pa.uint32()), ("item_id", pa.uint32())]),
    "album_mapping.parquet": pa.schema([("album_id", pa.uint32()), ("item_id", pa.uint32())]),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, sim.SimulationSummary]:
    out = tmp_path_factory.mktemp("sim") / "log"
    return out, simulate(TINY, out, progress=False)


@pytest.fixture(scope="module")
def log(run: tuple[Path, sim.SimulationSummary]) -> dict[str, np.ndarray]:
    table = pq.read_table(run[0] / "multi_event.parquet")
    cols = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}
    for name in ("played_ratio_pct", "track_length_seconds"):
        cols[name + "_null"] = table[name].is_null().to_numpy(zero_copy_only=False)
    return cols


def test_files_have_yambda_columns_and_dtypes(run: tuple[Path, sim.SimulationSummary]) -> None:
    out, _ = run
    for name, schema in EXPECTED_SCHEMAS.items():
        assert pq.read_schema(out / name).remove_metadata().equals(schema), name
    assert {p.name for p in (out / "truth").iterdir()} >= {"config.json", "users.npz", "items.npz"}
    emb = pq.read_table(out / "embeddings.parquet")
    assert emb.num_rows == TINY.items
    norms = np.linalg.norm(np.stack(emb["normalized_embed"].to_numpy(zero_copy_only=False)), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    mapping = pq.read_table(out / "artist_mapping.parquet")
    assert sorted(mapping["item_id"].to_pylist()) == list(range(TINY.items))


def test_null_feedback_only_on_non_listens(log: dict[str, np.ndarray]) -> None:
    listen = log["event_type"] == "listen"
    assert set(np.unique(log["event_type"])) <= set(sim.EVENT_TYPES)
    np.testing.assert_array_equal(log["played_ratio_pct_null"], ~listen)
    np.testing.assert_array_equal(log["track_length_seconds_null"], ~listen)
    played = log["played_ratio_pct"][listen]
    assert played.min() >= 0 and played.max() <= 100


def test_summary_matches_the_file(run: tuple[Path, sim.SimulationSummary],
                                  log: dict[str, np.ndarray]) -> None:
    _, summary = run
    kinds, counts = np.unique(log["event_type"], return_counts=True)
    by_kind = dict(zip(kinds.tolist(), counts.tolist()))
    assert summary.events == log["uid"].size
    assert summary.listens == by_kind["listen"]
    assert summary.likes == by_kind.get("like", 0) and summary.dislikes == by_kind.get("dislike", 0)
    assert summary.items == np.unique(log["item_id"]).size
    assert summary.user_events["max"] == np.bincount(log["uid"]).max()
    assert summary.organic_share == pytest.approx(log["is_organic"].mean())


def test_timestamps_in_steps_of_5_and_time_ordered_per_user(log: dict[str, np.ndarray]) -> None:
    uid, ts = log["uid"].astype(np.int64), log["timestamp"].astype(np.int64)
    assert np.all(ts % 5 == 0)
    assert ts.min() >= 0 and ts.max() < TINY.days * 86_400
    assert np.all(np.diff(uid) >= 0), "rows are grouped by user"
    same = uid[1:] == uid[:-1]
    assert np.all(ts[1:][same] >= ts[:-1][same])
    assert np.unique(uid).size == TINY.users


def test_feedback_and_both_traffic_kinds_present(run: tuple[Path, sim.SimulationSummary],
                                                 log: dict[str, np.ndarray]) -> None:
    _, summary = run
    assert summary.likes > 0 and summary.dislikes > 0
    assert 0.005 < summary.likes / summary.listens < 0.05
    organic = log["is_organic"].astype(bool)
    assert organic.any() and (~organic).any()
    assert 0.2 < summary.organic_share < 0.8


def test_same_seed_is_byte_identical_and_seeds_differ(
    tmp_path: Path, run: tuple[Path, sim.SimulationSummary]
) -> None:
    first = (run[0] / "multi_event.parquet").read_bytes()
    simulate(TINY, tmp_path / "again", progress=False)
    assert (tmp_path / "again" / "multi_event.parquet").read_bytes() == first
    simulate(TINY.model_copy(update={"seed": 8}), tmp_path / "other", progress=False)
    assert (tmp_path / "other" / "multi_event.parquet").read_bytes() != first


def test_recommendation_feedback_follows_oracle_affinity(run: tuple[Path, sim.SimulationSummary],
                                                         log: dict[str, np.ndarray]) -> None:
    oracle = Oracle.load(run[0])
    rec = (log["event_type"] == "listen") & (log["is_organic"] == 0)
    args = (log["uid"][rec], log["item_id"][rec], log["timestamp"][rec])
    aff = oracle.affinity(*args)
    played = log["played_ratio_pct"][rec].astype(np.float64)
    high = aff > np.median(aff)
    assert played[high].mean() > played[~high].mean() + 15.0
    # The oracle's expectation is the actual mean, not only ordered the same way.
    assert oracle.expected_played_ratio_pct(*args).mean() == pytest.approx(played.mean(), abs=3.0)
    liked = log["event_type"] == "like"
    liked_aff = oracle.affinity(log["uid"][liked], log["item_id"][liked], log["timestamp"][liked])
    assert liked_aff.mean() > aff.mean() + 0.5


def test_oracle_closed_form_matches_explicit_taste_vectors(
    run: tuple[Path, sim.SimulationSummary], log: dict[str, np.ndarray]
) -> None:
    """The fast <taste(t), v> from three dot products equals normalising taste(t) explicitly."""
    oracle = Oracle.load(run[0])
    pick = np.random.default_rng(0).choice(log["uid"].size, 500, replace=False)
    uid, item, ts = log["uid"][pick], log["item_id"][pick], log["timestamp"][pick]
    users, items = oracle.users, oracle.items
    ramp = np.clip((ts - users["t0"][uid]) / (users["t1"][uid] - users["t0"][uid]), 0, 1)
    w = (users["drift_max"][uid] * ramp)[:, None]
    taste = (1 - w) * users["base"][uid] + w * users["drift"][uid]
    taste /= np.linalg.norm(taste, axis=1, keepdims=True)
    reference = (oracle.feedback.affinity_scale * np.sum(taste * items["vector"][item], axis=1)
                 + items["bias"][item])
    np.testing.assert_allclose(oracle.affinity(uid, item, ts), reference, atol=1e-5)


def test_oracle_rejects_bad_input(tmp_path: Path, run: tuple[Path, sim.SimulationSummary]) -> None:
    oracle = Oracle.load(run[0])
    with pytest.raises(DataError, match="uid out of range"):
        oracle.affinity(np.array([TINY.users]), np.array([0]), np.array([0]))
    with pytest.raises(DataError, match="equal length"):
        oracle.affinity(np.array([0, 1]), np.array([0]), np.array([0]))
    with pytest.raises(DataError, match="truth/config.json"):
        Oracle.load(tmp_path)


def test_oracle_taste_drifts_only_when_asked(tmp_path: Path) -> None:
    def spread(drift: float) -> float:
        out = tmp_path / f"drift{drift}"
        simulate(TINY.model_copy(update={"drift": drift, "users": 4}), out, progress=False)
        oracle = Oracle.load(out)
        start = oracle.catalogue_affinity(0, 0.0)
        end = oracle.catalogue_affinity(0, TINY.days * 86_400.0)
        return float(np.abs(start - end).max())

    assert spread(0.0) < 1e-9
    assert spread(0.8) > 0.1


def test_content_embeddings_carry_artist_signal(run: tuple[Path, sim.SimulationSummary]) -> None:
    out, _ = run
    emb = np.stack(pq.read_table(out / "embeddings.parquet")["normalized_embed"]
                   .to_numpy(zero_copy_only=False))
    artist = np.load(out / "truth" / "items.npz")["artist"]
    first, second = np.flatnonzero(artist == 0)[:2]
    same = float(emb[first] @ emb[second])
    other = float(np.mean(emb[first] @ emb[artist != 0].T))
    assert same > other + 0.2


def test_activity_matches_yambda_quantiles() -> None:
    world = build_world(SimulatorConfig(users=4000, events_scale=1.0, items=20_000).resolved())
    events = world.n_listens * 1.029  # the listens plus their expected feedback events
    assert np.median(events) == pytest.approx(2654, rel=0.05)
    assert np.mean(events) == pytest.approx(4779, rel=0.05)
    assert np.percentile(events, 75) == pytest.approx(6856, rel=0.05)


def test_existing_out_dir_is_rejected_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "log"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(DataError, match="overwrite=True"):
        simulate(TINY.model_copy(update={"users": 2}), out, progress=False)
    assert (out / "old.txt").exists()
    simulate(TINY.model_copy(update={"users": 2}), out, progress=False, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "multi_event.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_failure_leaves_no_half_written_output(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = sim._feedback, []

    def failing(*args: object, **kwargs: object) -> dict[str, np.ndarray]:
        calls.append(1)
        if len(calls) == 15:  # after the first row group was written
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sim, "_feedback", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        simulate(TINY, tmp_path / "log", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError):
        SimulatorConfig(users=0)
    with pytest.raises(ValidationError):
        SimulatorConfig(userz=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SimulatorConfig(items=10, artists=20)
    resolved = SimulatorConfig(users=1000).resolved()
    assert resolved.items == 110_000 and resolved.artists == 11_000
    assert SimulatorConfig.yambda_50m().users == 10_000
