"""Native reader for Yandex's Yambda music logs (Ploshkin et al. 2025, the ARGUS data).

Yambda ships Parquet files with fixed columns: ``multi_event`` (every event type in one file),
the per-type ``listens``, ``likes``, ``dislikes``, ``unlikes``, ``undislikes`` (which together
duplicate ``multi_event``), and the item tables ``embeddings``, ``artist_mapping`` and
``album_mapping``. Each may be ``NAME.parquet`` or a directory ``NAME/`` of Parquet parts, and
comes in a *flat* layout (one row per event) or a *sequential* one (one row per user, every other
column a list, in time order). Both become the canonical :class:`~argusrec.events.EventLog`:
``is_organic`` is the context, ``played_ratio`` (= played_ratio_pct / 100), ``like`` and
``dislike`` the feedback (1 for like/dislike, 0 for unlike/undislike, null where the event says
nothing about it), and ``track_length`` an extra number.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from argusrec.errors import DataError
from argusrec.events import EVENT_TYPE, IS_ORGANIC, ITEM, ROW, SOURCE, TIMESTAMP, USER, EventLog
from argusrec.events import ItemFeatures
from argusrec.readers.failures import reading, shown
from argusrec.readers.kinds import check_column, check_columns, convert
from argusrec.readers.table import finish, has_rows, no_events, null_column, tag_rows

# Per-type files in the order their events are concatenated when there is no multi_event.
TYPE_FILES = {"listens": "listen", "likes": "like", "dislikes": "dislike", "unlikes": "unlike",
              "undislikes": "undislike"}
EVENT_FILES = ("multi_event", *TYPE_FILES)
ITEM_FILES = ("embeddings", "artist_mapping", "album_mapping")

_LIKE_COLUMNS = ("uid", "timestamp", "item_id", "is_organic")
_LISTEN_COLUMNS = (*_LIKE_COLUMNS, "played_ratio_pct", "track_length_seconds")
COLUMNS: dict[str, tuple[str, ...]] = {
    "multi_event": (*_LISTEN_COLUMNS, "event_type"),
    "listens": _LISTEN_COLUMNS,
    **{name: _LIKE_COLUMNS for name in ("likes", "dislikes", "unlikes", "undislikes")},
    "embeddings": ("item_id", "embed", "normalized_embed"),
    "artist_mapping": ("artist_id", "item_id"),
    "album_mapping": ("album_id", "item_id"),
}

# Column kinds (argusrec.readers.table.KINDS) of the event files' columns.
_KINDS = {"uid": "integer", "item_id": "integer", "timestamp": "timestamp",
          "is_organic": "boolean", "played_ratio_pct": "number",
          "track_length_seconds": "number", "event_type": "text"}

# canonical column -> the Yambda column it comes from (like/dislike: from event_type)
SOURCE_COLUMNS = {USER: "uid", ITEM: "item_id", TIMESTAMP: "timestamp", EVENT_TYPE: "event_type",
                  IS_ORGANIC: "is_organic", "played_ratio": "played_ratio_pct",
                  "track_length": "track_length_seconds"}

FEEDBACK_ORDER = ("played_ratio", "like", "dislike")
_FEEDBACK_OF = {"multi_event": FEEDBACK_ORDER, "listens": ("played_ratio",),
                "likes": ("like",), "unlikes": ("like",),
                "dislikes": ("dislike",), "undislikes": ("dislike",)}


def _parts(entry: Path) -> list[Path]:
    """The Parquet files behind one Yambda name: the file itself or a directory's parts."""
    if entry.is_file():
        return [entry]
    parts = sorted(p for p in entry.rglob("*.parquet") if p.is_file()
                   and not any(q.startswith(("_", ".")) for q in p.relative_to(entry).parts))
    if not parts:
        raise DataError("directory holds no .parquet parts", path=entry,
                        fix="point at a directory of Parquet files")
    return parts


def yambda_files(path: Path) -> dict[str, list[Path]]:
    """Yambda name -> its Parquet parts, for a directory of Yambda files or one file/part-dir."""
    if path.is_dir() and path.name not in COLUMNS:
        found: dict[str, list[Path]] = {}
        for name in COLUMNS:
            file, folder = path / f"{name}.parquet", path / name
            if file.exists() and folder.is_dir():
                raise DataError(f"both {file.name} and {name}/ exist", path=path,
                                fix="keep one of them")
            if file.exists() or folder.is_dir():
                found[name] = _parts(file if file.exists() else folder)
        return found
    name = path.stem if path.is_file() else path.name
    if name not in COLUMNS and path.is_file() and path.parent.name in COLUMNS:
        name = path.parent.name  # one part of a NAME/ directory
    if name not in COLUMNS:
        raise DataError(
            "cannot tell which Yambda file this is from its name", path=path,
            fix="name it after its Yambda file (" + ", ".join(f"{n}.parquet" for n in COLUMNS)
                + ") or read it with format='table' and a column mapping")
    return {name: _parts(path)}


def is_yambda(path: Path) -> bool:
    """Whether ``path`` looks like Yambda data by its file names (used by format='auto')."""
    if path.is_dir():
        if path.name in COLUMNS and any(path.glob("*.parquet")):
            return True
        return any((path / f"{n}.parquet").exists() or (path / n).is_dir() for n in COLUMNS)
    return path.suffix == ".parquet" and (path.stem in COLUMNS or path.parent.name in COLUMNS)


def _scan(name: str, part: Path) -> tuple[pl.LazyFrame, pl.Schema]:
    """Scan one part and check its columns against the Yambda schema of ``name``."""
    if part.stat().st_size == 0:
        raise no_events(part)
    try:
        lf = pl.scan_parquet(part)
        schema = lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as err:
        with reading([part]):
            raise err
    expected = COLUMNS[name]
    missing = [c for c in expected if c not in schema]
    extra = [c for c in schema.names() if c not in expected]
    if missing or extra:
        problem = "; ".join(filter(None, [
            missing and "missing column(s): " + ", ".join(missing),
            extra and "unexpected column(s): " + ", ".join(extra)]))
        raise DataError(
            f"{problem} (a Yambda {name} file has exactly: {', '.join(expected)})",
            path=part, column=(missing or extra)[0],
            fix=f"rename the file if it is not a Yambda {name} file, or read it with "
                "format='table' and a column mapping")
    return lf, schema


def _flatten(part: Path, lf: pl.LazyFrame, schema: pl.Schema, source: int) -> pl.LazyFrame:
    """The part as one row per event: the sequential layout exploded (and checked for order).

    In the sequential layout ``_row`` counts events, not users, so that ties in time keep the
    order of the user's lists; read-time errors name the user's row and list index instead.
    """
    listed = [c for c in schema.names() if c != "uid" and isinstance(schema[c], pl.List)]
    if not listed:
        return tag_rows(lf, source)
    flat = [c for c in schema.names() if c != "uid" and c not in listed]
    if flat:
        raise DataError(
            "mixes list columns (" + ", ".join(listed) + ") with flat ones ("
            + ", ".join(flat) + ")", path=part, column=flat[0],
            fix="in the sequential layout every column but uid is a list; in the flat one none is")
    inner = schema["timestamp"].inner
    if inner.is_integer() or inner.is_float():
        _check_order(part, lf)
    return tag_rows(lf.explode(listed), source)


def _check_order(part: Path, lf: pl.LazyFrame) -> None:
    """Timestamps inside each user's lists must not decrease (one streamed column read)."""
    steps = pl.col("timestamp").cast(pl.List(pl.Float64)).list.diff().list.min()
    hit = (lf.with_row_index("_user_row", offset=1).filter(steps < 0)
           .select("_user_row", "uid", "timestamp").head(1).collect())
    if hit.height == 0:
        return
    stamps = hit["timestamp"][0].to_list()
    index = next(i for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1])
    raise DataError(
        f"out-of-order timestamps in the list of uid {shown(hit['uid'][0])}: index {index} "
        "(0-based) "
        f"has {stamps[index]} after {stamps[index - 1]}",
        path=part, column="timestamp", row=int(hit["_user_row"][0]),
        fix="sort every user's lists by timestamp (the sequential layout is in time order)")


def _events(name: str, part: Path, source: int, columns: tuple[str, ...]) -> pl.LazyFrame:
    """One part of an event file as canonical columns ``columns`` (those of the whole log)."""
    lf, schema = _scan(name, part)
    with reading([part]):
        lf = _flatten(part, lf, schema, source)
        schema = lf.collect_schema()
        specs = [(c, schema[c], _KINDS[c]) for c in COLUMNS[name]]
        forms = check_columns(lf, specs, part, row_column=ROW)
    cast = {c: convert(c, schema[c], _KINDS[c], forms.get(c)) for c in COLUMNS[name]}
    if name == "multi_event":
        kind = cast["event_type"]
    else:
        kind = pl.lit(TYPE_FILES[name], dtype=pl.String)
    exprs = {USER: cast["uid"], ITEM: cast["item_id"], TIMESTAMP: cast["timestamp"],
             EVENT_TYPE: kind, IS_ORGANIC: cast["is_organic"]}
    if "played_ratio_pct" in cast:
        ratio = (cast["played_ratio_pct"] / 100).cast(pl.Float32)
        exprs["played_ratio"] = pl.when(kind == "listen").then(ratio)
        exprs["track_length"] = cast["track_length_seconds"]
    # like/dislike come from the event type: 1 for the signal, 0 for its withdrawal.
    exprs["like"] = pl.when(kind == "like").then(1.0).when(kind == "unlike").then(0.0)
    exprs["dislike"] = pl.when(kind == "dislike").then(1.0).when(kind == "undislike").then(0.0)
    selected = [(exprs[c] if c in (USER, ITEM, TIMESTAMP, EVENT_TYPE, IS_ORGANIC)
                 else exprs[c].cast(pl.Float32)).alias(c) if c in exprs
                else null_column(c, pl.Float32) for c in columns if c not in (SOURCE, ROW)]
    return lf.select(*selected, pl.col(SOURCE), pl.col(ROW))


def _item_table(name: str, parts: list[Path], value: str) -> pl.LazyFrame:
    frames = []
    for part in parts:
        lf, schema = _scan(name, part)
        with reading([part]):
            check_column(lf, "item_id", schema["item_id"], "integer", part)
        if name == "embeddings":
            dtype = schema["embed"]
            if not (isinstance(dtype, (pl.List, pl.Array)) and dtype.inner.is_numeric()):
                raise DataError(f"expected a list of floats, got dtype {dtype}", path=part,
                                column="embed", fix="store the embeddings as list<float>")
            out = pl.col("embed").cast(pl.List(pl.Float32)).alias(value)
        else:
            with reading([part]):
                check_column(lf, f"{value}_id", schema[f"{value}_id"], "integer", part)
            out = pl.col(f"{value}_id").cast(pl.Int64).alias(value)
        frames.append(lf.select(pl.col("item_id").cast(pl.Int64).alias(ITEM), out))
    return pl.concat(frames, how="vertical")


def read_yambda(path: str | Path) -> EventLog:
    """Read Yambda events (and item tables) from a directory, a file or a directory of parts.

    In a directory, ``multi_event`` is used when present (the per-type files would repeat its
    events); otherwise whichever of listens, likes, dislikes, unlikes, undislikes exist are
    concatenated in that order. ``embeddings``, ``artist_mapping`` and ``album_mapping`` become
    :class:`~argusrec.events.ItemFeatures`.
    """
    path = Path(path)
    files = yambda_files(path)
    event_names = ["multi_event"] if "multi_event" in files else [n for n in TYPE_FILES
                                                                   if n in files]
    if not event_names:
        raise DataError(
            "no Yambda event files (found only: " + (", ".join(files) or "nothing") + ")",
            path=path, fix="add multi_event or listens/likes/dislikes/unlikes/undislikes parquet")
    feedback = tuple(f for f in FEEDBACK_ORDER
                     if any(f in _FEEDBACK_OF[n] for n in event_names))
    extra = ("track_length",) if {"multi_event", "listens"} & set(event_names) else ()
    log = EventLog(frame=pl.LazyFrame(), sources=(), context=(IS_ORGANIC,), feedback=feedback,
                   extra=extra, format="yambda")
    sources: list[str] = []
    frames: list[pl.LazyFrame] = []
    for name in event_names:
        for part in files[name]:
            frames.append(_events(name, part, len(sources), tuple(log.columns)))
            sources.append(str(part))
    with reading(sources):
        if not any(has_rows(f) for f in frames):
            raise no_events(path)

    items = ItemFeatures(
        artist=_item_table("artist_mapping", files["artist_mapping"], "artist")
        if "artist_mapping" in files else None,
        album=_item_table("album_mapping", files["album_mapping"], "album")
        if "album_mapping" in files else None,
        embeddings=_item_table("embeddings", files["embeddings"], "embedding")
        if "embeddings" in files else None,
        sources=tuple(str(part) for name in ITEM_FILES for part in files.get(name, [])),
    )
    log = EventLog(frame=pl.LazyFrame(), sources=tuple(sources), context=log.context,
                   feedback=feedback, extra=extra, format="yambda",
                   source_columns=SOURCE_COLUMNS, percent=("played_ratio",), parts=tuple(frames))
    return finish(log, pl.concat(frames, how="vertical"), items)
