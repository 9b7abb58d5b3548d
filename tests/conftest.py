"""Shared fixtures: small event logs written in the exact formats readers accept."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_table(path: Path, rows: dict) -> Path:
    """Write a CSV or Parquet event table (by suffix) with the given columns."""
    df = pl.DataFrame(rows)
    if path.suffix == ".csv":
        df.write_csv(path)
    else:
        df.write_parquet(path)
    return path


TABLE_COLUMNS = {"user": "user", "item": "item", "timestamp": "timestamp"}


def random_log(n_users: int = 50, n_items: int = 40, n_events: int = 3000, seed: int = 0,
               with_ties: bool = True) -> dict:
    """A random event table with repeated timestamps (ties) and a feedback column."""
    rng = np.random.default_rng(seed)
    ts = rng.integers(0, 1000 if with_ties else 10**9, n_events)
    return {
        "user": rng.integers(0, n_users, n_events) * 7 + 3,  # sparse original ids
        "item": rng.integers(0, n_items, n_events) * 11 + 5,
        "timestamp": ts,
        "like": rng.integers(0, 2, n_events).astype(np.float64),
    }


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


def simulated_data(root: Path, **prepare_fields) -> Path:
    """A tiny simulated service under ``root``, prepared with a temporal split; ``prepare_fields``
    are PrepareConfig fields (e.g. shard_events for several shards)."""
    from argusrec.prepare import PrepareConfig, SplitConfig, prepare
    from argusrec.simulate import SimulatorConfig, simulate

    simulate(SimulatorConfig(users=24, events_scale=0.02, items=2000, seed=1), root / "events",
             progress=False)
    prepare(root / "events", root / "data",
            PrepareConfig(split=SplitConfig(test_fraction=0.2, val_duration=86_400 * 5),
                          **prepare_fields), progress=False)
    return root / "data"


@pytest.fixture(scope="session")
def sim_data(tmp_path_factory) -> Path:
    """A tiny simulated service, prepared with a temporal split (shared by model tests)."""
    return simulated_data(tmp_path_factory.mktemp("sim"))


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for every Spark test (starting one costs tens of seconds)."""
    pytest.importorskip("pyspark")
    import shutil as _shutil

    if _shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("no Java runtime for Spark")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("argusrec tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
