"""Tests for argusrec.readers: every format to the canonical EventLog, and every bad input.

Small files in each exact format are written into tmp_path (Yambda Parquet with the dtypes the
real dataset uses); tests marked ``data`` read the real benchmark files beside the project and
skip when they are absent.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from argusrec.errors import DataError
from argusrec.events import EventLog
from argusrec.readers import (
    FORMATS, check_events, detect_format, duplicate_error, find_duplicates, read_events,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# -- Yambda fixtures --------------------------------------------------------------------------

_TYPES = {"uid": pa.uint32(), "timestamp": pa.uint32(), "item_id": pa.uint32(),
          "is_organic": pa.uint8(), "played_ratio_pct": pa.uint16(),
          "track_length_seconds": pa.uint32(), "event_type": pa.string()}

MULTI = {
    "uid": [100, 100, 100, 100, 200, 200],
    "timestamp": [10, 15, 15, 20, 5, 30],
    "item_id": [7, 7, 8, 7, 9, 9],
    "is_organic": [0, 1, 1, 1, 0, 0],
    "played_ratio_pct": [100, None, 40, None, 55, None],
    "track_length_seconds": [170, 170, 200, 170, 90, 90],
    "event_type": ["listen", "like", "listen", "unlike", "listen", "dislike"],
}


def write_parquet(path: Path, columns: dict[str, list], types: dict | None = None) -> Path:
    """Write ``columns`` with Yambda's dtypes (or ``types``) to ``path``."""
    types = {**_TYPES, **(types or {})}
    table = pa.table({c: pa.array(v, type=types.get(c)) for c, v in columns.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_sequential(path: Path, columns: dict[str, list]) -> Path:
    """The sequential layout: uid flat, every other column a list per user."""
    types = {c: (t if c == "uid" else pa.list_(t)) for c, t in _TYPES.items()}
    return write_parquet(path, columns, types)


def _subset(columns: dict[str, list], rows: list[int], names: tuple[str, ...]) -> dict:
    return {c: [columns[c][i] for i in rows] for c in names}


LIKE = ("uid", "timestamp", "item_id", "is_organic")
LISTEN = (*LIKE, "played_ratio_pct", "track_length_seconds")


def per_type(root: Path) -> Path:
    """listens/likes/unlikes/dislikes files holding exactly the events of MULTI."""
    write_parquet(root / "listens.parquet", _subset(MULTI, [0, 2, 4], LISTEN))
    write_parquet(root / "likes.parquet", _subset(MULTI, [1], LIKE))
    write_parquet(root / "unlikes.parquet", _subset(MULTI, [3], LIKE))
    write_parquet(root / "dislikes.parquet", _subset(MULTI, [5], LIKE))
    return root


def canonical(log: EventLog) -> pl.DataFrame:
    df = log.frame.collect()
    assert df.columns == log.columns
    assert df.schema["_source"] == pl.UInt16 and df.schema["_row"] == pl.Int64
    assert df.schema["timestamp"] == pl.Int64 and df.schema["event_type"] == pl.String
    return df


def _events(df: pl.DataFrame) -> list[tuple]:
    cols = ["user", "item", "timestamp", "event_type", "played_ratio", "like", "dislike"]
    return sorted(df.select([c for c in cols if c in df.columns]).rows())


# -- Yambda -----------------------------------------------------------------------------------

def test_yambda_multi_event(tmp_path: Path) -> None:
    write_parquet(tmp_path / "multi_event.parquet", MULTI)
    log = read_events(tmp_path)
    df = canonical(log)
    assert log.format == "yambda" and log.has_time
    assert log.context == ("is_organic",)
    assert log.feedback == ("played_ratio", "like", "dislike")
    assert log.extra == ("track_length",)
    assert df.schema["user"] == pl.Int64 and df.schema["item"] == pl.Int64
    assert df.schema["is_organic"] == pl.Boolean and df.schema["played_ratio"] == pl.Float32
    assert df["_row"].to_list() == [1, 2, 3, 4, 5, 6]
    assert df["is_organic"].to_list() == [False, True, True, True, False, False]
    assert df["played_ratio"].to_list()[:3] == [1.0, None, pytest.approx(0.4)]
    assert df["like"].to_list() == [None, 1.0, None, 0.0, None, None]
    assert df["dislike"].to_list() == [None, None, None, None, None, 1.0]
    assert df["track_length"].to_list()[0] == 170.0


def test_yambda_per_type_files_concatenate_like_multi_event(tmp_path: Path) -> None:
    write_parquet(tmp_path / "multi" / "multi_event.parquet", MULTI)
    per_type(tmp_path / "split")
    multi, split = read_events(tmp_path / "multi"), read_events(tmp_path / "split")
    assert split.feedback == multi.feedback and split.extra == ("track_length",)
    df = canonical(split)
    assert _events(df) == _events(canonical(multi))
    # sources in the order listens, likes, dislikes, unlikes
    assert [Path(s).stem for s in split.sources] == ["listens", "likes", "dislikes", "unlikes"]
    assert df["event_type"].to_list() == ["listen"] * 3 + ["like", "dislike", "unlike"]


def test_yambda_multi_event_wins_over_per_type_files(tmp_path: Path) -> None:
    write_parquet(tmp_path / "multi_event.parquet", MULTI)
    per_type(tmp_path)
    log = read_events(tmp_path)
    assert [Path(s).name for s in log.sources] == ["multi_event.parquet"]
    assert log.frame.collect().height == 6


def test_yambda_lone_likes_file(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "likes.parquet", _subset(MULTI, [1, 3], LIKE))
    log = read_events(path)
    assert log.format == "yambda"
    assert log.feedback == ("like",) and log.extra == ()
    df = canonical(log)
    assert df["like"].to_list() == [1.0, 1.0] and set(df["event_type"]) == {"like"}


def test_yambda_directory_of_parts_and_other_int_widths(tmp_path: Path) -> None:
    rows = _subset(MULTI, [0, 2, 4], LISTEN)
    write_parquet(tmp_path / "listens" / "part-0.parquet", _subset(rows, [0, 1], LISTEN))
    wide = {"uid": pa.int64(), "item_id": pa.int64(), "timestamp": pa.int64(),
            "played_ratio_pct": pa.float64(), "track_length_seconds": pa.float32()}
    write_parquet(tmp_path / "listens" / "part-1.parquet", _subset(rows, [2], LISTEN), wide)
    log = read_events(tmp_path)
    df = canonical(log)
    assert len(log.sources) == 2
    assert df["_source"].to_list() == [0, 0, 1] and df["_row"].to_list() == [1, 2, 1]
    assert df["played_ratio"].to_list() == [1.0, pytest.approx(0.4), pytest.approx(0.55)]
    # pointing at the parts directory itself works too
    assert read_events(tmp_path / "listens").frame.collect().height == 3


def test_yambda_event_type_as_categorical(tmp_path: Path) -> None:
    types = {"event_type": pa.dictionary(pa.int8(), pa.string())}
    write_parquet(tmp_path / "multi_event.parquet", MULTI, types)
    df = canonical(read_events(tmp_path))
    assert df["event_type"].to_list() == MULTI["event_type"]


def test_yambda_sequential_layout(tmp_path: Path) -> None:
    users = {100: [0, 1, 2, 3], 200: [4, 5]}
    seq = {"uid": list(users)}
    for c in MULTI:
        if c != "uid":
            seq[c] = [[MULTI[c][i] for i in rows] for rows in users.values()]
    write_sequential(tmp_path / "seq" / "multi_event.parquet", seq)
    write_parquet(tmp_path / "flat" / "multi_event.parquet", MULTI)
    log = read_events(tmp_path / "seq")
    df = canonical(log)
    assert _events(df) == _events(canonical(read_events(tmp_path / "flat")))
    assert df["_row"].to_list() == [1, 2, 3, 4, 5, 6]  # events in list order


def test_yambda_sequential_out_of_order(tmp_path: Path) -> None:
    seq = {"uid": [100, 200], "timestamp": [[5, 10], [20, 30, 25]],
           "item_id": [[1, 2], [3, 4, 5]], "is_organic": [[1, 1], [0, 0, 0]]}
    path = write_sequential(tmp_path / "likes.parquet", seq)
    with pytest.raises(DataError, match="out-of-order timestamps") as err:
        read_events(path)
    msg = str(err.value)
    assert "likes.parquet" in msg and "row 2" in msg and "index 2" in msg and "uid 200" in msg
    assert "fix:" in msg


def test_yambda_item_features(tmp_path: Path) -> None:
    write_parquet(tmp_path / "multi_event.parquet", MULTI)
    emb = pa.table({"item_id": pa.array([7, 8], pa.uint32()),
                    "embed": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float64())),
                    "normalized_embed": pa.array([[0.4, 0.9], [0.6, 0.8]],
                                                 pa.list_(pa.float64()))})
    pq.write_table(emb, tmp_path / "embeddings.parquet")
    write_parquet(tmp_path / "artist_mapping.parquet", {"artist_id": [1, 2], "item_id": [7, 8]},
                  {"artist_id": pa.uint32()})
    write_parquet(tmp_path / "album_mapping" / "0.parquet", {"album_id": [5], "item_id": [9]},
                  {"album_id": pa.uint32()})
    items = read_events(tmp_path).items
    assert items.artist.collect().rows() == [(7, 1), (8, 2)]
    assert items.album.collect().rows() == [(9, 5)]
    embeddings = items.embeddings.collect()
    assert embeddings.columns == ["item", "embedding"]
    assert embeddings.schema["embedding"] == pl.List(pl.Float32)
    assert embeddings.schema["item"] == pl.Int64


def test_yambda_missing_and_extra_columns(tmp_path: Path) -> None:
    cols = {c: v for c, v in MULTI.items() if c != "event_type"}
    write_parquet(tmp_path / "a" / "multi_event.parquet", cols)
    with pytest.raises(DataError) as err:
        read_events(tmp_path / "a")
    msg = str(err.value)
    assert "multi_event.parquet" in msg and "missing column(s): event_type" in msg
    assert "track_length_seconds" in msg and "fix:" in msg  # the expected set is listed

    write_parquet(tmp_path / "b" / "likes.parquet", {**_subset(MULTI, [1], LIKE), "x": [1]},
                  {"x": pa.int8()})
    with pytest.raises(DataError, match="unexpected column.*x") as err:
        read_events(tmp_path / "b")
    assert "likes.parquet" in str(err.value)


def test_yambda_wrong_type_names_value_and_row(tmp_path: Path) -> None:
    cols = _subset(MULTI, [0, 1, 2], LIKE)
    cols["timestamp"] = ["10", "15", "soon"]
    write_parquet(tmp_path / "likes.parquet", cols, {"timestamp": pa.string()})
    with pytest.raises(DataError) as err:
        read_events(tmp_path)
    msg = str(err.value)
    assert "likes.parquet" in msg and "column 'timestamp'" in msg and "row 3" in msg
    assert "'soon'" in msg and "fix:" in msg


def test_yambda_text_numbers_are_accepted(tmp_path: Path) -> None:
    cols = _subset(MULTI, [0, 1], LIKE)
    cols["uid"] = ["100", "100"]
    write_parquet(tmp_path / "likes.parquet", cols, {"uid": pa.string()})
    assert canonical(read_events(tmp_path))["user"].to_list() == [100, 100]


def test_yambda_empty_file(tmp_path: Path) -> None:
    write_parquet(tmp_path / "likes.parquet", {c: [] for c in LIKE})
    with pytest.raises(DataError, match="no events"):
        read_events(tmp_path)
    (tmp_path / "likes.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="no events"):
        read_events(tmp_path / "likes.parquet")


def test_yambda_without_event_files(tmp_path: Path) -> None:
    write_parquet(tmp_path / "artist_mapping.parquet", {"artist_id": [1], "item_id": [2]},
                  {"artist_id": pa.uint32()})
    with pytest.raises(DataError, match="no Yambda event files"):
        read_events(tmp_path, "yambda")


# -- MovieLens and RecBole --------------------------------------------------------------------

def test_movielens_ratings_dat(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1357::4.5::978298709\n")
    log = read_events(path)
    df = canonical(log)
    assert log.format == "movielens" and log.feedback == ("rating",) and log.has_time
    assert df.rows() == [(1, 1193, 978300760, "rating", 5.0, 0, 1),
                         (1, 661, 978302109, "rating", 3.0, 0, 2),
                         (2, 1357, 978298709, "rating", 4.5, 0, 3)]
    assert df.schema["rating"] == pl.Float32
    assert detect_format(tmp_path) == "movielens"


def test_movielens_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text("1::2::3::4\n1::3::4::x5\n")
    with pytest.raises(DataError) as err:
        read_events(path)
    msg = str(err.value)
    assert "ratings.dat" in msg and "Timestamp" in msg and "row 2" in msg and "'x5'" in msg
    path.write_text("1::2::3\n")
    with pytest.raises(DataError, match="expected 4"):
        read_events(path, "movielens")


INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def test_recbole_inter(tmp_path: Path) -> None:
    path = tmp_path / "toy.inter"
    path.write_text(INTER + "196\t242\t3\t881250949\n186\t302\t3.5\t891717742.7\n")
    log = read_events(path)
    df = canonical(log)
    assert log.format == "recbole" and log.feedback == ("rating",) and log.has_time
    assert df.rows() == [(196, 242, 881250949, "rating", 3.0, 0, 1),
                         (186, 302, 891717742, "rating", 3.5, 0, 2)]


def test_recbole_text_tokens_and_no_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "toy.inter"
    path.write_text("user_id:token\titem_id:token\nu1\t10\nu2\t11\nu1\t12\n")
    log = read_events(path)
    df = canonical(log)
    assert not log.has_time and log.feedback == ()
    assert df.schema["user"] == pl.String and df.schema["item"] == pl.Int64
    assert df["timestamp"].to_list() == [0, 0, 1]  # positions within each user


def test_recbole_header_errors(tmp_path: Path) -> None:
    path = tmp_path / "toy.inter"
    path.write_text("user_id:token\trating:float\n1\t3\n")
    with pytest.raises(DataError, match="missing column.*item_id") as err:
        read_events(path)
    assert "toy.inter" in str(err.value) and "timestamp:float" in str(err.value)

    path.write_text("user_id:token\titem_id:token\tlabel:float\n1\t2\t1\n")
    with pytest.raises(DataError, match="unexpected column.*label") as err:
        read_events(path)
    assert "ignore_extra" in str(err.value)
    assert read_events(path, ignore_extra=True).frame.collect().height == 1

    path.write_text(INTER + "1\t2\t3\t100\n1\t3\t4\tlate\n")
    with pytest.raises(DataError) as err:
        read_events(path)
    msg = str(err.value)
    assert "column 'timestamp'" in msg and "row 2" in msg and "'late'" in msg

    path.write_text(INTER)
    with pytest.raises(DataError, match="no events"):
        read_events(path)


# -- SASRec and S3-Rec lines ------------------------------------------------------------------

def test_sasrec_lines(tmp_path: Path) -> None:
    path = tmp_path / "toy.txt"
    path.write_text("1 1\n1 2\n2 3\n1 4\n2 1\n")
    log = read_events(path)
    df = canonical(log)
    assert log.format == "sasrec" and not log.has_time and log.feedback == ()
    assert df.select("user", "item", "timestamp", "_row").rows() == [
        (1, 1, 0, 1), (1, 2, 1, 2), (2, 3, 0, 3), (1, 4, 2, 4), (2, 1, 1, 5)]
    assert set(df["event_type"]) == {"interaction"}


def test_s3rec_lines(tmp_path: Path) -> None:
    path = tmp_path / "toy.txt"
    path.write_text("1 5 6 7\n2 8\n3 9 5\n")
    log = read_events(path)
    df = canonical(log)
    assert log.format == "s3rec" and not log.has_time
    assert df.select("user", "item", "timestamp", "_row").rows() == [
        (1, 5, 0, 1), (1, 6, 1, 1), (1, 7, 2, 1), (2, 8, 0, 2), (3, 9, 0, 3), (3, 5, 1, 3)]


@pytest.mark.parametrize("fmt", ["sasrec", "s3rec"])
def test_line_formats_reject_text(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "toy.txt"
    path.write_text("1 2\n1 3\n1 x4\n")
    with pytest.raises(DataError) as err:
        read_events(path, fmt)
    msg = str(err.value)
    assert "toy.txt" in msg and "row 3" in msg and "'1 x4'" in msg and "fix:" in msg


@pytest.mark.parametrize("fmt", ["sasrec", "s3rec"])
def test_line_formats_empty(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "toy.txt"
    path.write_text("")
    with pytest.raises(DataError, match="no events"):
        read_events(path, fmt)


# -- table ------------------------------------------------------------------------------------

def test_table_parquet_with_mapping(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pl.DataFrame({"u": ["a", "b"], "i": [10, 11], "ts": [5.0, 6.9], "kind": ["view", "buy"],
                  "organic": [1, 0], "stars": [4, 5], "device": ["web", "ios"],
                  "dwell": [0.5, None]}).write_parquet(path)
    columns = {"user": "u", "item": "i", "timestamp": "ts", "event_type": "kind",
               "is_organic": "organic", "rating": "stars", "context:device": "device",
               "feedback:dwell": "dwell"}
    log = read_events(path, columns=columns)
    df = canonical(log)
    assert log.format == "table" and log.has_time
    assert log.context == ("is_organic", "device") and log.feedback == ("rating", "dwell")
    assert df.rows() == [("a", 10, 5, "view", True, "web", 4.0, 0.5, 0, 1),
                         ("b", 11, 6, "buy", False, "ios", 5.0, None, 0, 2)]


def test_table_csv_directory_without_timestamp(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("uid,iid\n1,10\n1,11\n")
    (tmp_path / "b.csv").write_text("uid,iid\n2,12\n1,13\n")
    log = read_events(tmp_path, columns={"user": "uid", "item": "iid"})
    df = canonical(log)
    assert not log.has_time and len(log.sources) == 2
    assert df.select("user", "item", "timestamp", "event_type", "_source", "_row").rows() == [
        (1, 10, 0, "interaction", 0, 1), (1, 11, 1, "interaction", 0, 2),
        (2, 12, 0, "interaction", 1, 1), (1, 13, 2, "interaction", 1, 2)]


def test_table_hive_partitions_as_spark_writes_them(tmp_path: Path) -> None:
    root = tmp_path / "events"
    for day, rows in (("2024-01-02", {"u": [2], "i": [12], "ts": [20]}),
                      ("2024-01-01", {"u": [1, 1], "i": [10, 11], "ts": [5, 6]})):
        part = root / f"date={day}" / "region=eu"
        part.mkdir(parents=True)
        pl.DataFrame(rows).write_parquet(part / "part-00000-abc.snappy.parquet")
        (part / ".part-00000-abc.snappy.parquet.crc").write_bytes(b"crc")
    (root / "_SUCCESS").write_text("")
    (root / "_temporary" / "0").mkdir(parents=True)
    pl.DataFrame({"u": [9], "i": [9], "ts": [9]}).write_parquet(root / "_temporary" / "0" / "x.parquet")
    mapping = {"user": "u", "item": "i", "timestamp": "ts"}
    log = read_events(root, columns={**mapping, "context:region": "region"}, ignore_extra=True)
    assert [Path(s).parent.parent.name for s in log.sources] == ["date=2024-01-01",
                                                                  "date=2024-01-02"]
    assert canonical(log).select("user", "item", "region", "_source", "_row").rows() == [
        (1, 10, "eu", 0, 1), (1, 11, "eu", 0, 2), (2, 12, "eu", 1, 1)]
    with pytest.raises(DataError, match="not in the mapping: date, region"):
        read_events(root, columns=mapping)


def test_table_errors(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("uid,iid,ts,note\n1,10,100,x\n2,11,200,y\n")
    with pytest.raises(DataError) as err:
        read_events(path, columns={"user": "uid", "item": "iid", "timestamp": "ts"})
    msg = str(err.value)
    assert "log.csv" in msg and "note" in msg and "ignore_extra" in msg
    log = read_events(path, columns={"user": "uid", "item": "iid", "timestamp": "ts"},
                      ignore_extra=True)
    assert log.frame.collect().height == 2

    with pytest.raises(DataError) as err:
        read_events(path, columns={"user": "uid", "item": "item_id"}, ignore_extra=True)
    msg = str(err.value)
    assert "item_id" in msg and "uid, iid, ts, note" in msg

    with pytest.raises(DataError, match="unknown column mapping key 'colour'"):
        read_events(path, columns={"user": "uid", "item": "iid", "colour": "note"})
    with pytest.raises(DataError, match="has no 'item'"):
        read_events(path, columns={"user": "uid"}, ignore_extra=True)

    path.write_text("uid,iid,ts\n1,10,100\n2,11,yesterday\n")
    with pytest.raises(DataError) as err:
        read_events(path, columns={"user": "uid", "item": "iid", "timestamp": "ts"})
    msg = str(err.value)
    assert "column 'ts'" in msg and "row 2" in msg and "'yesterday'" in msg
    assert "an integer or float" in msg

    path.write_text("uid,iid,ts\n")
    with pytest.raises(DataError, match="no events"):
        read_events(path, columns={"user": "uid", "item": "iid", "timestamp": "ts"})
    path.write_text("")
    with pytest.raises(DataError, match="no events"):
        read_events(path, columns={"user": "uid", "item": "iid"})



def test_csv_types_come_from_every_row(tmp_path: Path) -> None:
    """A CSV is read as text and typed from all its values, not from the first 10,000 rows."""
    path = tmp_path / "log.csv"
    head = [f"{u},{u},{u},0,{u % 3},true" for u in range(10_500)]
    tail = ["007,x7,10500,1,7,FALSE", f"{'9' * 25},5,10501.9,1,home,false"]
    path.write_text("u,i,ts,org,ctx,flag\n" + "\n".join(head + tail) + "\n")
    log = read_events(path, columns={"user": "u", "item": "i", "timestamp": "ts",
                                     "is_organic": "org", "context:page": "ctx",
                                     "context:flag": "flag"})
    df = canonical(log)
    # '007' and a 25-digit id are not Int64's decimal form: the ids stay text, exactly
    assert df.schema["user"] == pl.String and df.schema["item"] == pl.String
    assert df["user"][-2:].to_list() == ["007", "9" * 25]
    assert df["timestamp"][-1] == 10501 and df["is_organic"][-2:].to_list() == [True, True]
    assert df.schema["page"] == pl.String and df.schema["flag"] == pl.Boolean
    assert log.source_columns["is_organic"] == "org"
    only_ints = tmp_path / "ints.csv"
    only_ints.write_text("u,i,org\n1,2,1\n3,4,0\n")
    df = canonical(read_events(only_ints, columns={"user": "u", "item": "i", "context:o": "org"}))
    assert df.schema["user"] == pl.Int64 and df.schema["o"] == pl.Int64


def test_errors_quote_at_most_200_characters_of_a_value(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("u,i,ts\n1,2,3\n1,2," + "x" * 1_000_000 + "\n")
    with pytest.raises(DataError) as err:
        read_events(path, columns={"user": "u", "item": "i", "timestamp": "ts"})
    assert "row 2" in str(err.value) and "(1,000,000 characters)" in str(err.value)
    assert len(str(err.value)) < 600

# -- in-memory frames -------------------------------------------------------------------------

FRAME_ROWS = {"user": [1, 1, 2], "item": ["sku1", "sku2", "sku1"], "timestamp": [5, 6, 7],
              "like": [1, 0, 1]}


def test_frame_default_mapping_is_identity() -> None:
    log = read_events(pl.DataFrame(FRAME_ROWS))
    df = canonical(log)
    assert log.format == "table" and log.sources == ("<DataFrame>",)
    assert log.feedback == ("like",) and log.has_time
    assert df.rows() == [(1, "sku1", 5, "interaction", 1.0, 0, 1),
                         (1, "sku2", 6, "interaction", 0.0, 0, 2),
                         (2, "sku1", 7, "interaction", 1.0, 0, 3)]


def test_frame_matches_the_same_table_file(tmp_path: Path) -> None:
    frame = pl.DataFrame({"u": [1, 2], "i": ["sku1", "sku2"], "ts": [5.0, 6.5],
                          "device": ["web", "ios"]})
    frame.write_parquet(tmp_path / "t.parquet")
    columns = {"user": "u", "item": "i", "timestamp": "ts", "context:device": "device"}
    from_file = read_events(tmp_path / "t.parquet", columns=columns)
    for source in (frame, frame.lazy()):
        log = read_events(source, "table", columns=columns)
        assert log.context == from_file.context
        assert canonical(log).equals(canonical(from_file))


def test_frame_errors_name_column_and_row() -> None:
    bad = pl.DataFrame({"user": [1, 2, 3], "item": [4, 5, 6], "timestamp": ["1", "2", "later"]})
    with pytest.raises(DataError) as err:
        read_events(bad)
    msg = str(err.value)
    assert "<DataFrame>" in msg and "column 'timestamp'" in msg and "row 3" in msg
    assert "'later'" in msg
    with pytest.raises(DataError, match="column 'item'.*got dtype List"):
        read_events(pl.DataFrame({"user": [1], "item": [[1, 2]]}))
    with pytest.raises(DataError, match="(?s)column 'colour'.*ignore_extra"):
        read_events(pl.DataFrame({**FRAME_ROWS, "colour": ["r", "g", "b"]}))
    assert read_events(pl.DataFrame({**FRAME_ROWS, "colour": ["r", "g", "b"]}),
                       ignore_extra=True).frame.collect().height == 3
    with pytest.raises(DataError, match="no 'user' column") as err:
        read_events(pl.DataFrame({"uid": [1], "item": [2]}))
    assert "uid, item" in str(err.value)
    with pytest.raises(DataError, match="mapped column.*not in the frame: ts"):
        read_events(pl.DataFrame(FRAME_ROWS), columns={"user": "user", "item": "item",
                                                       "timestamp": "ts"}, ignore_extra=True)
    with pytest.raises(DataError, match="frame has no rows"):
        read_events(pl.DataFrame(FRAME_ROWS).clear())
    with pytest.raises(DataError, match="table format, not 'yambda'"):
        read_events(pl.DataFrame(FRAME_ROWS), "yambda")
    with pytest.raises(DataError, match="expected a path or a DataFrame, got int"):
        read_events(3)


def test_pandas_frame() -> None:
    pd = pytest.importorskip("pandas")
    log = read_events(pd.DataFrame(FRAME_ROWS))
    assert canonical(log).equals(canonical(read_events(pl.DataFrame(FRAME_ROWS))))
    with pytest.raises(DataError, match="<DataFrame>, column 'timestamp', row 2"):
        read_events(pd.DataFrame({"user": [1, 2], "item": [3, 4], "timestamp": ["1", "x"]}))


def test_binary_ids_stay_binary(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pl.DataFrame({"u": [b"\x00a", b"\xff"], "i": [b"sku1", b"sku2"], "ts": [1, 2]},
                 schema={"u": pl.Binary, "i": pl.Binary, "ts": pl.Int64}).write_parquet(path)
    df = canonical(read_events(path, columns={"user": "u", "item": "i", "timestamp": "ts"}))
    assert df.schema["user"] == pl.Binary and df.schema["item"] == pl.Binary
    assert df["user"].to_list() == [b"\x00a", b"\xff"]


# -- detection and entry point ----------------------------------------------------------------

def test_auto_detection(tmp_path: Path) -> None:
    write_parquet(tmp_path / "y" / "multi_event.parquet", MULTI)
    (tmp_path / "a.inter").write_text(INTER + "1\t2\t3\t4\n")
    (tmp_path / "r.dat").write_text("1::2::3::4\n")
    (tmp_path / "sas.txt").write_text("1 2\n1 3\n")
    (tmp_path / "s3.txt").write_text("1 2 3\n2 4\n")
    (tmp_path / "t.csv").write_text("u,i\n1,2\n")
    assert detect_format(tmp_path / "y") == "yambda"
    assert detect_format(tmp_path / "y" / "multi_event.parquet") == "yambda"
    assert detect_format(tmp_path / "a.inter") == "recbole"
    assert detect_format(tmp_path / "r.dat") == "movielens"
    assert detect_format(tmp_path / "sas.txt") == "sasrec"
    assert detect_format(tmp_path / "s3.txt") == "s3rec"
    assert detect_format(tmp_path / "t.csv", {"user": "u", "item": "i"}) == "table"
    with pytest.raises(DataError, match="column mapping"):
        read_events(tmp_path / "t.csv")


def test_unknown_format_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("1 2\n")
    with pytest.raises(DataError) as err:
        read_events(tmp_path / "x.txt", "netflix")
    msg = str(err.value)
    assert "unknown format 'netflix'" in msg and all(name in msg for name in FORMATS)
    with pytest.raises(DataError, match="does not exist") as err:
        read_events(tmp_path / "nope.parquet")
    assert "nope.parquet" in str(err.value)


# -- data-level checks on collected chunks ----------------------------------------------------

def _log_of(df: pl.DataFrame, feedback: tuple[str, ...] = ()) -> EventLog:
    return EventLog(frame=df.lazy(), sources=("a.csv", "b.csv"), feedback=feedback)


def _chunk(**overrides: list) -> pl.DataFrame:
    data = {"user": [1, 1, 2], "item": [5, 6, 5], "timestamp": [10, 11, 12],
            "event_type": ["listen"] * 3, "like": [None, 1.0, None],
            "_source": [0, 1, 1], "_row": [1, 7, 8]}
    data.update(overrides)
    return pl.DataFrame(data, schema_overrides={"_source": pl.UInt16, "_row": pl.Int64,
                                                "like": pl.Float32})


def test_check_events_passes_clean_chunk() -> None:
    df = _chunk()
    check_events(df, _log_of(df, ("like",)))


@pytest.mark.parametrize("column", ["user", "item", "timestamp", "event_type"])
def test_check_events_nulls(column: str) -> None:
    df = _chunk()
    values = df[column].to_list()
    values[2] = None
    df = df.with_columns(pl.Series(column, values, dtype=df.schema[column]))
    with pytest.raises(DataError) as err:
        check_events(df, _log_of(df))
    msg = str(err.value)
    assert "b.csv" in msg and f"column '{column}'" in msg and "row 8" in msg and "null" in msg
    assert "fix:" in msg


def test_check_events_negative_timestamp() -> None:
    df = _chunk(timestamp=[10, -3, 12])
    with pytest.raises(DataError) as err:
        check_events(df, _log_of(df))
    msg = str(err.value)
    assert "b.csv" in msg and "row 7" in msg and "-3" in msg and "fix:" in msg


def test_find_duplicates() -> None:
    df = pl.concat([_chunk(), _chunk(_source=[1, 1, 1], _row=[20, 21, 22])])
    log = _log_of(df, ("like",))
    dups = find_duplicates(df, log)
    assert dups.select("_source", "_row", "_first_source", "_first_row").rows() == [
        (1, 20, 0, 1), (1, 21, 1, 7), (1, 22, 1, 8)]
    msg = str(duplicate_error(dups, log))
    assert "b.csv" in msg and "row 20" in msg and "row 1 of a.csv" in msg
    assert "--on-duplicate drop" in msg and "keep" in msg
    # a different feedback value is a different event
    other = _chunk(like=[None, 0.0, None], _source=[1, 1, 1], _row=[20, 21, 22])
    df = pl.concat([_chunk(), other])
    assert find_duplicates(df, log)["_row"].to_list() == [20, 22]
    assert find_duplicates(_chunk(), log).height == 0


def test_read_then_check_reports_source_row(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("uid,iid,ts\n1,10,100\n2,,200\n")
    log = read_events(path, columns={"user": "uid", "item": "iid", "timestamp": "ts"})
    with pytest.raises(DataError) as err:
        check_events(log.frame.collect(), log)
    msg = str(err.value)
    assert "log.csv" in msg and "column 'item'" in msg and "row 2" in msg


# -- the real benchmark files -----------------------------------------------------------------

def _real(relative: str) -> Path:
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


@pytest.mark.data
@pytest.mark.parametrize("relative, fmt, users, items, events", [
    ("ml-1m/ml-1m.txt", "sasrec", 6_040, 3_416, 999_611),
    ("amazon-beauty/Beauty.txt", "s3rec", 22_363, 12_101, 198_502),
    ("ml-100k/ml-100k.inter", "recbole", 943, 1_682, 100_000),
])
def test_real_data(relative: str, fmt: str, users: int, items: int, events: int) -> None:
    path = _real(relative)
    started = time.perf_counter()
    log = read_events(path)
    df = log.frame.collect()
    seconds = time.perf_counter() - started
    assert log.format == fmt
    assert (df["user"].n_unique(), df["item"].n_unique(), df.height) == (users, items, events)
    assert seconds < 5, f"{relative} took {seconds:.2f}s"
    check_events(df, log)
    if fmt == "recbole":
        assert log.has_time and log.feedback == ("rating",)
        assert df["timestamp"].min() > 800_000_000  # real Unix seconds (1997-1998)
        assert set(df["rating"].unique().to_list()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    else:
        assert not log.has_time
