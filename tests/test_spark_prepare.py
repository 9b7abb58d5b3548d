"""`argus prepare --engine spark` writes the dataset the polars engine writes, row for row:
the simulator's Yambda log cut into several pieces and shards, a Hive-partitioned CSV table
with text ids, the daily cycle's base and append modes, and bad input reported as the same
DataError (raised inside a Spark task, carried back to the driver)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from argusrec.errors import DataError
from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.simulate import SimulatorConfig, simulate
from argusrec.spark_prepare import SparkEngine

pytestmark = pytest.mark.spark


def assert_same_dataset(a: Path, b: Path) -> None:
    """Every file of two prepared datasets equal (meta.json but its creation time)."""
    meta = [json.loads((p / "meta.json").read_text()) for p in (a, b)]
    for m in meta:
        m.pop("created")
    assert meta[0] == meta[1]
    for table in ("users.parquet", "items.parquet"):
        assert pl.read_parquet(a / table).equals(pl.read_parquet(b / table)), table
    files = sorted(p.relative_to(a) for p in a.rglob("*.npy"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.npy"))
    for name in files:
        x, y = np.load(a / name), np.load(b / name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spark-sim") / "sim"
    simulate(SimulatorConfig(users=20, events_scale=0.1, items=1500, seed=3), root,
             progress=False)
    return root


def both(source, tmp_path: Path, config: PrepareConfig, spark, **kwargs) -> tuple[Path, Path]:
    prepare(source, tmp_path / "polars", config, progress=False, **kwargs)
    prepare(source, tmp_path / "spark", config, progress=False,
            engine=SparkEngine(session=spark, piece_events=1_500), **kwargs)
    return tmp_path / "polars", tmp_path / "spark"


def test_the_simulator_log_in_pieces_and_shards(sim_log, tmp_path, spark):
    config = PrepareConfig(merge_reactions=True, shard_events=1_000,
                           split=SplitConfig(test_fraction=0.2, val_duration=86_400))
    a, b = both(sim_log, tmp_path, config, spark)
    meta = json.loads((a / "meta.json").read_text())
    assert len(meta["shards"]) > 3 and meta["counts"]["reactions_merged"] > 0
    assert meta["counts"]["input_events"] > 3 * 1_500  # several read pieces
    assert_same_dataset(a, b)


def _hive_table(root: Path) -> None:
    rng = np.random.default_rng(0)
    for day in range(3):
        n = 400
        rows = {"shopper": [f"u-{u:03d}" for u in rng.integers(0, 30, n)],
                "sku": [f"SKU{i:04d}" for i in rng.integers(0, 200, n)],
                "ts_ms": (day * 86_400 + np.sort(rng.integers(0, 86_400, n))) * 1000,
                "device": rng.choice(["web", "ios", "android"], n)}
        frame = pl.DataFrame(rows)
        frame = pl.concat([frame, frame.head(5)])  # exact duplicates, dropped
        part = root / f"date=2024-01-0{day + 1}"
        part.mkdir(parents=True)
        frame.write_csv(part / "part-00000.csv")
    (root / "_SUCCESS").write_text("")


def test_a_hive_partitioned_table_with_text_ids(tmp_path, spark):
    _hive_table(tmp_path / "log")
    config = PrepareConfig(format="table", ignore_extra=True, on_duplicate="drop",
                           timestamp_unit="ms", shard_events=1_000,
                           columns={"user": "shopper", "item": "sku", "timestamp": "ts_ms",
                                    "context:device": "device"},
                           split=SplitConfig(kind="leave-one-out"))
    a, b = both(tmp_path / "log", tmp_path, config, spark)
    assert json.loads((a / "meta.json").read_text())["counts"]["duplicates_dropped"] == 15
    assert_same_dataset(a, b)


def test_base_and_append_on_spark(sim_log, tmp_path, spark):
    events = pl.read_parquet(sim_log / "multi_event.parquet")
    cut = int(events["timestamp"].quantile(0.8))
    days = tmp_path / "days"
    for name, part in (("day1", events.filter(pl.col("timestamp") < cut)),
                       ("day2", events.filter(pl.col("timestamp") >= cut))):
        (days / name).mkdir(parents=True)
        part.write_parquet(days / name / "multi_event.parquet")
    config = PrepareConfig(shard_events=1_000, split=SplitConfig(test_fraction=0.2))
    prepare(days / "day1", tmp_path / "base", config, progress=False)
    spark_engine = SparkEngine(session=spark, piece_events=1_500)
    for mode in ({"append": True}, {}):
        name = "append" if mode else "with-base"
        prepare(days / "day2", tmp_path / f"polars-{name}", base=tmp_path / "base",
                progress=False, **mode)
        prepare(days / "day2", tmp_path / f"spark-{name}", base=tmp_path / "base",
                progress=False, engine=spark_engine, **mode)
        assert_same_dataset(tmp_path / f"polars-{name}", tmp_path / f"spark-{name}")


def test_bad_input_is_the_same_error(tmp_path, spark):
    root = tmp_path / "log"
    root.mkdir()
    (root / "a.csv").write_text("u,i,t\n1,10,5\n2,11,6\n")
    (root / "b.csv").write_text("u,i,t\n1,12,7\n2,13,x8\n")  # a text timestamp in b.csv row 2
    columns = {"user": "u", "item": "i", "timestamp": "t"}
    config = PrepareConfig(format="table", columns=columns)
    errors = []
    for engine in ("polars", SparkEngine(session=spark)):
        with pytest.raises(DataError) as caught:
            prepare(root, tmp_path / "out", config, progress=False, engine=engine)
        errors.append(caught.value.message())
    assert errors[0] == errors[1] and "b.csv" in errors[0]
    (root / "b.csv").write_text("u,i,t\n1,12,7\n2,13,-8\n")  # a negative timestamp
    errors = []
    for engine in ("polars", SparkEngine(session=spark)):
        with pytest.raises(DataError) as caught:
            prepare(root, tmp_path / "out", config, progress=False, engine=engine)
        errors.append(caught.value.message())
    assert errors[0] == errors[1]
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="--spark-master applies to --engine spark"):
        prepare(root, tmp_path / "out", config, progress=False, spark_master="local[1]")


def test_a_bucket_task_run_twice_writes_the_same_shard(sim_log, tmp_path):
    """Spark runs a failed task again: the second try reads its bucket again and replaces
    what the first wrote."""
    from argusrec.engines import PolarsEngine
    from argusrec.readers import read_events
    from argusrec.shard_writer import bucket_directories, prepare_bucket
    from argusrec.stages import _Encoder, _split_boundaries, in_seconds

    config = PrepareConfig(shard_events=1_000)
    log = read_events(sim_log)
    total, buckets = PolarsEngine().partition(log, tmp_path, config, False)
    scan = pl.scan_parquet(buckets / "**" / "*.parquet", hive_partitioning=False)
    bounds = _split_boundaries(scan, config.split, total, log)
    vocab = PolarsEngine().vocabularies(scan, log, buckets, None)
    directory = bucket_directories(buckets)[0]
    runs = [prepare_bucket(directory, tmp=tmp_path, log=log, config=config,
                           encode=_Encoder(log, config, bounds, vocab),
                           schema=in_seconds(log.frame, log, config).collect_schema(),
                           remove_input=False) for _ in range(2)]
    assert runs[0].directory == runs[1].directory and directory.exists()
    assert runs[0].user_table.equals(runs[1].user_table) and runs[0].events == runs[1].events
    assert len(list((tmp_path / runs[1].directory).glob("*.npy"))) > 5
