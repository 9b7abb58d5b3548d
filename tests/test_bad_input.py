"""A corpus of bad inputs: every one refused with a message naming file, column/row and fix.

One generated case per class of bad input and per format (Yambda, MovieLens, RecBole, SASRec,
S3-Rec, table CSV/Parquet), written into tmp_path as test_readers does. Each refusal must be
a DataError (exit 2 on the command line) whose message names the file, the column or row where
there is one, and a fix; stays short however long the user's value; and leaves nothing on disk
(no output directory, no ``.out.tmp-*``). The inputs that are accepted on purpose (ids beyond
Int64 as text, a declared unit or event type, a percentage column mapped as such) are checked
for what they become. docs/reliability.md tabulates the outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from argusrec.cli import app
from argusrec.errors import DataError
from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.sequences import PreparedData

MAX_MESSAGE = 1000  # characters: a 200,000-character id must not come back whole
TABLE = {"user": "user", "item": "item", "timestamp": "timestamp"}
LATE = 10_500  # a data row after polars' 10,000-row type inference window

_YAMBDA_TYPES = {"uid": pa.uint32(), "timestamp": pa.uint32(), "item_id": pa.uint32(),
                 "is_organic": pa.uint8(), "played_ratio_pct": pa.uint16(),
                 "track_length_seconds": pa.uint32(), "event_type": pa.string()}


# -- builders: each writes its input under tmp_path/in and returns (source, config, words) --

Case = tuple[Path, PrepareConfig, list[str]]


def _dir(tmp: Path) -> Path:
    (tmp / "in").mkdir(exist_ok=True)
    return tmp / "in"


def _lines(tmp: Path, name: str, lines: list[str], data: bytes | None = None) -> Path:
    path = _dir(tmp) / name
    path.write_bytes(data if data is not None else ("\n".join(lines) + "\n").encode())
    return path


def _ratings(n: int = 100) -> list[str]:
    return [f"{u % 50 + 1}::{u % 40 + 1}::{u % 5 + 1}::{1000 + u}" for u in range(n)]


def _recbole(n: int = 100) -> list[str]:
    return (["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
            + [f"{u % 50}\t{u % 40}\t{u % 5 + 1}\t{1000 + u}" for u in range(n)])


def _csv_lines(n: int = 100) -> list[str]:
    return ["user,item,timestamp,rating"] + [f"{u % 50},{u % 40},{1000 + u},{u % 5 + 1}"
                                             for u in range(n)]


def _table(tmp: Path, suffix: str, extra: dict, columns: dict, n: int = 200,
           **config) -> tuple[Path, PrepareConfig]:
    df = pl.DataFrame({"user": [i % 20 for i in range(n)], "item": [i % 30 for i in range(n)],
                       "timestamp": list(range(n)), **extra})
    path = _dir(tmp) / f"log.{suffix}"
    df.write_csv(path) if suffix == "csv" else df.write_parquet(path)
    return path, PrepareConfig(format="table", columns={**TABLE, **columns}, **config)


def _yambda(tmp: Path, **changes: list) -> Path:
    rows = {"uid": [1, 1, 2, 2], "timestamp": [1, 2, 3, 4], "item_id": [5, 6, 5, 7],
            "is_organic": [0, 1, 0, 1], "played_ratio_pct": [100, 40, 55, 90],
            "track_length_seconds": [170, 200, 170, 90],
            "event_type": ["listen"] * 4, **changes}
    pq.write_table(pa.table({c: pa.array(v, type=_YAMBDA_TYPES[c]) for c, v in rows.items()}),
                   _dir(tmp) / "multi_event.parquet")
    return _dir(tmp)


def _damage(path: Path, group: int = 2, column: int = 1) -> None:
    """Scramble 200 bytes inside one compressed data page of a Parquet file."""
    data = bytearray(path.read_bytes())
    start = pq.ParquetFile(path).metadata.row_group(group).column(column).data_page_offset + 100
    for i in range(start, start + 200):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def late_text_movielens(tmp):
    lines = _ratings(2000)
    lines[1499] = "1::2::abc::5000"
    return _lines(tmp, "ratings.dat", lines), PrepareConfig(format="movielens"), [
        "column 'Rating'", "row 1500", "'abc'"]


def late_text_recbole(tmp):
    lines = _recbole(LATE + 100)
    lines[LATE] = "1\t2\t3\tsoon"
    return _lines(tmp, "x.inter", lines), PrepareConfig(format="recbole"), [
        "column 'timestamp'", f"row {LATE}", "'soon'"]


def late_text_csv(tmp):
    lines = _csv_lines(LATE + 100)
    lines[LATE] = "1,2,5000,abc"
    return (_lines(tmp, "log.csv", lines),
            PrepareConfig(format="table", columns={**TABLE, "rating": "rating"}),
            ["column 'rating'", f"row {LATE}", "'abc'"])


def late_text_sasrec(tmp):
    lines = [f"{u % 50 + 1} {u % 40 + 1}" for u in range(2000)]
    lines[1499] = "1 two"
    return _lines(tmp, "seq.txt", lines), PrepareConfig(format="sasrec"), ["row 1500"]


def late_text_yambda(tmp):
    types = {**_YAMBDA_TYPES, "played_ratio_pct": pa.string()}
    rows = {"uid": [1] * 3, "timestamp": [1, 2, 3], "item_id": [5, 6, 7],
            "is_organic": [0, 1, 0], "played_ratio_pct": ["100", "40", "lots"],
            "track_length_seconds": [1, 2, 3], "event_type": ["listen"] * 3}
    pq.write_table(pa.table({c: pa.array(v, type=types[c]) for c, v in rows.items()}),
                   _dir(tmp) / "multi_event.parquet")
    return _dir(tmp), PrepareConfig(), ["column 'played_ratio_pct'", "row 3", "'lots'"]


def utf8_movielens(tmp):
    data = ("\n".join(_ratings()) + "\n").encode().replace(b"\n7::", b"\n7::\xff", 1)
    return _lines(tmp, "ratings.dat", [], data), PrepareConfig(format="movielens"), [
        "UTF-8", "row 7"]


def utf8_csv(tmp):
    lines = _csv_lines()
    lines[40] = "u\udcff,2,3,4"
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    return (_lines(tmp, "log.csv", [], data),
            PrepareConfig(format="table", columns={**TABLE, "rating": "rating"}),
            ["UTF-8", "row 40"])


def utf8_recbole(tmp):
    lines = _recbole()
    lines[30] = "1\t\udcff2\t3\t4"
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    return _lines(tmp, "x.inter", [], data), PrepareConfig(format="recbole"), [
        "UTF-8", "row 30"]


def utf8_s3rec(tmp):
    data = b"1 2 3\n2 4 5\n3 \xff 6\n"
    return _lines(tmp, "seq.txt", [], data), PrepareConfig(format="s3rec"), ["UTF-8", "row 3"]


def fields_csv(tmp):
    lines = _csv_lines()
    lines[50] = "1,2,3,4,5,6"
    return (_lines(tmp, "log.csv", lines),
            PrepareConfig(format="table", columns={**TABLE, "rating": "rating"}),
            ["row 50", "6 comma-separated fields, expected 4"])


def fields_movielens(tmp):
    lines = _ratings()
    lines[60] = "1::2::3::5000::9"
    return _lines(tmp, "ratings.dat", lines), PrepareConfig(format="movielens"), [
        "row 61", "5 '::'-separated fields, expected 4"]


def fields_recbole(tmp):
    lines = _recbole()
    lines[30] = "1\t2\t3\t4\t5"
    return _lines(tmp, "x.inter", lines), PrepareConfig(format="recbole"), [
        "row 30", "5 tab-separated fields, expected 4"]


def fields_sasrec(tmp):
    return (_lines(tmp, "seq.txt", ["1 2", "1 3", "2 3 4"]), PrepareConfig(format="sasrec"),
            ["row 3", "'2 3 4'"])


def damaged_parquet_table(tmp):
    n = 200_000
    path = _dir(tmp) / "log.parquet"
    pl.DataFrame({"user": np.arange(n) % 1000, "item": np.arange(n) % 777,
                  "timestamp": np.arange(n)}).write_parquet(path, row_group_size=50_000)
    _damage(path)
    return path, PrepareConfig(format="table", columns=TABLE), [
        "row group 2", "row 100001", "damaged"]


def damaged_parquet_yambda(tmp):
    n = 200_000
    ts = np.arange(n, dtype=np.uint32)
    table = pa.table({"uid": pa.array(np.arange(n) // 100, pa.uint32()),
                      "timestamp": pa.array(ts, pa.uint32()),
                      "item_id": pa.array(np.arange(n) % 777, pa.uint32()),
                      "is_organic": pa.array(np.arange(n) % 2, pa.uint8()),
                      "played_ratio_pct": pa.array(np.arange(n) % 100, pa.uint16()),
                      "track_length_seconds": pa.array(np.arange(n) % 300, pa.uint32()),
                      "event_type": pa.array(["listen"] * n, pa.string())})
    path = _dir(tmp) / "multi_event.parquet"
    pq.write_table(table, path, row_group_size=50_000, compression="zstd")
    _damage(path)
    return _dir(tmp), PrepareConfig(), ["multi_event.parquet", "row group 2", "damaged"]


def ragged_yambda(tmp):
    lists = {c: pa.list_(t) for c, t in _YAMBDA_TYPES.items() if c != "uid"}
    rows = {"timestamp": [[1, 2], [3, 4, 5]], "item_id": [[5, 6], [5, 7]],
            "is_organic": [[0, 1], [0, 1, 1]], "played_ratio_pct": [[10, 20], [1, 2, 3]],
            "track_length_seconds": [[1, 2], [1, 2, 3]],
            "event_type": [["listen"] * 2, ["listen"] * 3]}
    table = pa.table({"uid": pa.array([1, 2], pa.uint32()),
                      **{c: pa.array(v, lists[c]) for c, v in rows.items()}})
    pq.write_table(table, _dir(tmp) / "multi_event.parquet")
    return _dir(tmp), PrepareConfig(), ["row 2", "item_id: 2", "timestamp: 3", "uid 2"]


def big_id_sasrec(tmp):
    lines = [f"{u % 50 + 1} {u % 40 + 1}" for u in range(100)]
    lines[50] = "1" * 200_000 + " 2"
    return _lines(tmp, "seq.txt", lines), PrepareConfig(format="sasrec"), [
        "row 51", "64-bit", "(200,000 characters)"]


def big_id_s3rec(tmp):
    lines = [f"{u} 1 2 3" for u in range(1, 100)]
    lines[50] = "9" * 200_000 + " 2 3"
    return _lines(tmp, "seq.txt", lines), PrepareConfig(format="s3rec"), [
        "row 51", "64-bit", "(200,000 characters)"]


def big_id_in_duplicate_csv(tmp):
    big = "7" * 200_000
    lines = ["user,item,timestamp"] + [f"{big},1,5", "2,3,4", f"{big},1,5"]
    return (_lines(tmp, "log.csv", lines),
            PrepareConfig(format="table", columns=TABLE, split=SplitConfig(cutoff=5)),
            ["row 3", "duplicate", "(200,000 characters)"])


def event_type_csv(tmp):
    src, cfg = _table(tmp, "csv", {"ev": ["listen", "dislke"] * 100},
                      {"event_type": "ev"})
    return src, cfg, ["column 'ev'", "row 2", "'dislke'", "did you mean 'dislike'",
                      "--event-type"]


def event_type_parquet(tmp):
    src, cfg = _table(tmp, "parquet", {"ev": ["like"] * 150 + ["clik"] + ["like"] * 49},
                      {"event_type": "ev"})
    return src, cfg, ["column 'ev'", "row 151", "'clik'", "--event-type"]


def event_type_yambda(tmp):
    return (_yambda(tmp, event_type=["listen", "listen", "dislke", "listen"]),
            PrepareConfig(split=SplitConfig(cutoff=3)),
            ["column 'event_type'", "row 3", "did you mean 'dislike'"])


def percent_csv(tmp):
    src, cfg = _table(tmp, "csv", {"pr": [0.5] * 150 + [50.0] + [0.3] * 49},
                      {"played_ratio": "pr"})
    return src, cfg, ["column 'pr'", "row 151", "played_ratio_pct=pr", "divide it by 100"]


def negative_ratio_parquet(tmp):
    src, cfg = _table(tmp, "parquet", {"pr": [0.5] * 150 + [-3.0] + [0.3] * 49},
                      {"played_ratio": "pr"})
    return src, cfg, ["column 'pr'", "row 151", "-3", "0..1"]


def percent_over_100_yambda(tmp):
    return (_yambda(tmp, played_ratio_pct=[100, 150, 55, 90]),
            PrepareConfig(split=SplitConfig(cutoff=3)),
            ["column 'played_ratio_pct'", "row 2", "150", "0..100"])


def like_3_csv(tmp):
    src, cfg = _table(tmp, "csv", {"lk": [1] * 150 + [3] + [0] * 49}, {"like": "lk"})
    return src, cfg, ["column 'lk'", "row 151", "like 3", "0 or 1"]


def like_6_parquet(tmp):
    src, cfg = _table(tmp, "parquet", {"lk": [1.0] * 150 + [6.0] + [0.0] * 49},
                      {"like": "lk"})
    return src, cfg, ["column 'lk'", "row 151", "like 6", "0 or 1"]


def organic_7_csv(tmp):
    src, cfg = _table(tmp, "csv", {"org": ["true"] * 150 + ["7"] + ["0"] * 49},
                      {"is_organic": "org"})
    return src, cfg, ["column 'org'", "row 151", "'7'", "0/1 or true/false"]


def organic_7_parquet(tmp):
    src, cfg = _table(tmp, "parquet", {"org": [1] * 150 + [7] + [0] * 49},
                      {"is_organic": "org"})
    return src, cfg, ["column 'org'", "row 151", "found 7", "0/1 or true/false"]


def organic_7_yambda(tmp):
    return (_yambda(tmp, is_organic=[0, 7, 0, 1]), PrepareConfig(split=SplitConfig(cutoff=3)),
            ["column 'is_organic'", "row 2", "found 7"])


def nan_rating_movielens(tmp):
    lines = _ratings()
    lines[60] = "1::2::NaN::5000"
    return _lines(tmp, "ratings.dat", lines), PrepareConfig(format="movielens"), [
        "column 'Rating'", "row 61", "nan", "finite"]


def inf_rating_recbole(tmp):
    lines = _recbole()
    lines[20] = "1\t2\tinf\t5000"
    return _lines(tmp, "x.inter", lines), PrepareConfig(format="recbole"), [
        "column 'rating'", "row 20", "inf", "finite"]


def inf_rating_parquet(tmp):
    src, cfg = _table(tmp, "parquet", {"r": [1.0] * 150 + [float("inf")] + [2.0] * 49},
                      {"rating": "r"})
    return src, cfg, ["column 'r'", "row 151", "inf", "finite"]


def repeated_user_s3rec(tmp):
    return (_lines(tmp, "seq.txt", ["1 1 2 3", "2 4 5", "1 6 7"]),
            PrepareConfig(format="s3rec", split=SplitConfig(kind="leave-one-out")),
            ["row 3", "user 1 has two lines, 1 and 3", "one line"])


def same_column_csv(tmp):
    src, cfg = _table(tmp, "csv", {}, {})
    cfg.columns = {"user": "user", "item": "user", "timestamp": "timestamp"}
    return src, cfg, ["column 'user'", "'user' and 'item' are both mapped", "different"]


def same_column_parquet(tmp):
    src, cfg = _table(tmp, "parquet", {"lk": [1.0] * 200}, {})
    cfg.columns = {**TABLE, "like": "lk", "feedback:liked": "lk"}
    return src, cfg, ["column 'lk'", "'like' and 'liked' are both mapped"]


def _ms(n: int = 1000) -> dict:
    return {"user": [i % 50 for i in range(n)], "item": [i % 30 for i in range(n)],
            "timestamp": [1_600_000_000_000 + i * 60_000 for i in range(n)]}


def milliseconds_csv(tmp):
    path = _dir(tmp) / "log.csv"
    pl.DataFrame(_ms()).write_csv(path)
    return path, PrepareConfig(format="table", columns=TABLE), [
        "column 'timestamp'", "milliseconds", "2020-09-13", "--timestamp-unit ms"]


def milliseconds_movielens(tmp):
    lines = [f"{u % 50 + 1}::{u % 40 + 1}::3::{1_600_000_000_000 + u * 1000}" for u in range(200)]
    return _lines(tmp, "ratings.dat", lines), PrepareConfig(format="movielens"), [
        "column 'Timestamp'", "milliseconds", "--timestamp-unit ms"]


def microseconds_recbole(tmp):
    lines = (["user_id:token\titem_id:token\ttimestamp:float"]
             + [f"{u % 50}\t{u % 40}\t{1_600_000_000_000_000 + u * 10**6}" for u in range(200)])
    return _lines(tmp, "x.inter", lines), PrepareConfig(format="recbole"), [
        "column 'timestamp'", "microseconds", "--timestamp-unit us"]


def _outlier(n: int = 10_000) -> dict:
    ts = list(range(1_600_000_000, 1_600_000_000 + n * 60, 60))
    ts[-1] = 4_000_000_000  # one event 75 years after the rest
    return {"user": [i % 500 for i in range(n)], "item": [i % 300 for i in range(n)],
            "timestamp": ts}


def outlier_csv(tmp):
    path = _dir(tmp) / "log.csv"
    pl.DataFrame(_outlier()).write_csv(path)
    return (path, PrepareConfig(format="table", columns=TABLE,
                                split=SplitConfig(test_duration=86_400)),
            ["column 'timestamp'", "holds 1 of 10,000 events", "1 of 500 users",
             "4000000000", "99.9th percentile", "--cutoff"])


def outlier_movielens(tmp):
    rows = _outlier()
    lines = [f"{u + 1}::{i + 1}::4::{t}" for u, i, t in zip(*rows.values())]
    return (_lines(tmp, "ratings.dat", lines),
            PrepareConfig(format="movielens", split=SplitConfig(test_duration=86_400, gap=1800)),
            ["holds 1 of 10,000 events", "--cutoff"])


CASES: dict[str, Callable[[Path], Case]] = {f.__name__: f for f in [
    late_text_movielens, late_text_recbole, late_text_csv, late_text_sasrec, late_text_yambda,
    utf8_movielens, utf8_csv, utf8_recbole, utf8_s3rec,
    fields_csv, fields_movielens, fields_recbole, fields_sasrec,
    damaged_parquet_table, damaged_parquet_yambda, ragged_yambda,
    big_id_sasrec, big_id_s3rec, big_id_in_duplicate_csv,
    event_type_csv, event_type_parquet, event_type_yambda,
    percent_csv, negative_ratio_parquet, percent_over_100_yambda,
    like_3_csv, like_6_parquet, organic_7_csv, organic_7_parquet, organic_7_yambda,
    nan_rating_movielens, inf_rating_recbole, inf_rating_parquet,
    repeated_user_s3rec, same_column_csv, same_column_parquet,
    milliseconds_csv, milliseconds_movielens, microseconds_recbole,
    outlier_csv, outlier_movielens,
]}


def _left_behind(tmp: Path) -> list[str]:
    return [p.name for p in tmp.iterdir() if p.name == "out" or p.name.startswith(".out.")]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_clearly(tmp_path: Path, name: str) -> None:
    source, config, words = CASES[name](tmp_path)
    with pytest.raises(DataError) as err:
        prepare(source, tmp_path / "out", config, progress=False)
    message = str(err.value)
    shown = source if source.is_file() else next(source.iterdir())
    assert shown.name in message, message  # the file
    for word in words:  # the column or row, the value, the cause
        assert word in message, (word, message)
    assert "\n  fix: " in message, message
    assert len(message) < MAX_MESSAGE, len(message)
    assert _left_behind(tmp_path) == []


@pytest.mark.parametrize("name", ["late_text_csv", "ragged_yambda", "big_id_sasrec",
                                  "event_type_csv", "outlier_csv"])
def test_cli_exits_2_with_one_message(tmp_path: Path, name: str) -> None:
    source, config, words = CASES[name](tmp_path)
    args = ["prepare", str(source), str(tmp_path / "out"), "--quiet",
            "--format", config.format]
    for key, column in (config.columns or {}).items():
        args += ["--column", f"{key}={column}"]
    if config.split.test_duration is not None:
        args += ["--test-duration", str(config.split.test_duration)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "error: " in result.output
    assert words[0] in result.output and len(result.output) < MAX_MESSAGE
    assert _left_behind(tmp_path) == []


# -- what is accepted on purpose, and what it becomes -----------------------------------------

def test_ids_beyond_int64_stay_text(tmp_path: Path) -> None:
    big = "1" * 30
    path = _lines(tmp_path, "log.csv", ["user,item,timestamp"]
                  + [f"{u},{u % 3},{u}" for u in range(LATE + 10)] + [f"{big},1,{LATE + 20}"])
    prepare(path, tmp_path / "a", PrepareConfig(format="table", columns=TABLE), progress=False)
    users = PreparedData(tmp_path / "a").users()
    assert users["user"].dtype == pl.String and big in users["user"].to_list()
    wide = _dir(tmp_path) / "wide.parquet"
    pq.write_table(pa.table({"user": pa.array([2**64 - 1, 5, 5], pa.uint64()),
                             "item": pa.array([1, 2, 3], pa.uint64()), "timestamp": [1, 2, 3]}),
                   wide)
    prepare(wide, tmp_path / "b", PrepareConfig(format="table", columns=TABLE,
                                                split=SplitConfig(cutoff=3)), progress=False)
    data = PreparedData(tmp_path / "b")
    assert str(2**64 - 1) in data.users()["user"].to_list()
    assert data.items()["item"].dtype == pl.Int64  # ids that fit stay integers


def test_declared_event_type_unit_and_percentage_are_accepted(tmp_path: Path) -> None:
    src, cfg = _table(tmp_path, "csv", {"ev": ["listen", "dislke"] * 100,
                                        "pr": [float(i % 100) for i in range(200)]},
                      {"event_type": "ev", "played_ratio_pct": "pr"},
                      extra_event_types=["dislke"])
    prepare(src, tmp_path / "a", cfg, progress=False)
    data = PreparedData(tmp_path / "a")
    assert "dislke" in data.meta["fields"]["event_types"]
    ratio = np.concatenate([data.user_events(u)["fb_played_ratio"] for u in range(20)])
    assert ratio.max() == pytest.approx(0.99) and ratio.min() == 0.0
    path = _dir(tmp_path) / "ms.csv"
    pl.DataFrame(_ms()).write_csv(path)
    prepare(path, tmp_path / "b", PrepareConfig(format="table", columns=TABLE,
                                                timestamp_unit="ms"), progress=False)
    meta = PreparedData(tmp_path / "b").meta
    assert meta["split"]["time_min"] == 1_600_000_000
    assert meta["config"]["timestamp_unit"] == "ms"


def test_fraction_split_is_not_collapsed_by_an_outlier(tmp_path: Path) -> None:
    rows = _outlier()
    rows["timestamp"][-1] = 9 * 10**18  # stretches a one-pass histogram into one bin
    path = _dir(tmp_path) / "log.parquet"
    pl.DataFrame(rows).write_parquet(path)
    summary = prepare(path, tmp_path / "out", PrepareConfig(format="table", columns=TABLE),
                      progress=False)
    assert summary.split_events["test"] == 1000  # 10%, as asked


def test_timestamp_unit_needs_timestamps(tmp_path: Path) -> None:
    path = _lines(tmp_path, "seq.txt", ["1 2", "1 3", "2 3"])
    with pytest.raises(DataError, match="no timestamps"):
        prepare(path, tmp_path / "out", PrepareConfig(format="sasrec", timestamp_unit="ms"),
                progress=False)
    assert _left_behind(tmp_path) == []
