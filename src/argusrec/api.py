"""The Python API on DataFrames: a log in, a trained model, recommendations out as a DataFrame.

DESIGN.md, "Deployment", from Python: the pipeline's stages are the library's own functions
(re-exported here: :func:`prepare` takes a polars or pandas DataFrame directly, :func:`evaluate`,
:func:`export`), :func:`train` is :func:`argusrec.train.pretrain` with its config given as
keywords, and :class:`Recommender` answers many users at once from a snapshot: by their stored
vectors (the users the export encoded), or by raw histories in a DataFrame, encoded now with the
model in one batched call (:class:`argusrec.runtime.HistoryEncoder`, the encoder the HTTP
service's runtime path uses), then searched in the snapshot's HNSW index.

Results are polars DataFrames; ``.to_pandas()`` on them is the caller's choice. Ids come back
with the type they were given: user ids as passed, item ids as the log had them.

Legend: N users, U user-vector width, k items per user.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import polars as pl

from argusrec.checkpoint import find_checkpoint
from argusrec.errors import DataError
from argusrec.evaluate import evaluate
from argusrec.events import EVENT_TYPE, FEEDBACK_KINDS, IS_ORGANIC, ITEM, ROW, TIMESTAMP, USER
from argusrec.export import export
from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.readers import check_events
from argusrec.readers.table import FRAME, as_lazy_frame, is_frame, read_frame
from argusrec.runtime import HistoryEncoder
from argusrec.snapshot import Snapshot, latest_label
from argusrec.fit import TrainSummary
from argusrec.configs import apply_overrides
from argusrec.train import TrainConfig, pretrain, sasrec_overrides
from argusrec.vocab import Vocabulary

__all__ = ["Encoded", "PrepareConfig", "Recommender", "SplitConfig", "evaluate", "export",
           "prepare", "train"]

log = logging.getLogger("argusrec.api")
_ORGANIC = {True: "organic", False: "recommendation"}  # is_organic's values (prepare)


def train(data: str | Path, out: str | Path, *, preset: str = "debug",
          max_steps: int | None = None, sasrec: bool = False, progress: bool = True,
          **fields: Any) -> TrainSummary:
    """Pretrain on a prepared dataset: :func:`argusrec.train.pretrain` with a
    :class:`~argusrec.train.TrainConfig` of ``preset``, ``max_steps`` and any other of its
    fields as keywords (``batch_size=64``, ``model={"max_len": 200}``,
    ``objective={"next_item_loss": "full"}``). ``sasrec`` trains SASRec instead
    (:func:`argusrec.train.sasrec_overrides`). For ``resume`` / ``init_from`` call
    ``pretrain`` itself.
    """
    base = {"preset": preset, "max_steps": max_steps, **fields}
    cfg = TrainConfig(**apply_overrides(base, sasrec_overrides() if sasrec else {}))
    return pretrain(data, out, cfg, progress=progress)


@dataclass(frozen=True)
class Encoded:
    """User vectors of raw histories (:meth:`Recommender.encode`).

    users: (N,) the histories' user ids, in order of first appearance, with their dtype.
    vectors: (N, U) float32; a row of NaN where none of the user's items is in the snapshot.
    seen: N arrays of the snapshot rows of each history's known items (for ``exclude_seen``).
    skipped_events: events left out because the snapshot does not know their item.
    unknown_items: those items' distinct ids.
    """

    users: pl.Series
    vectors: np.ndarray
    seen: list[np.ndarray]
    skipped_events: int
    unknown_items: list

    def frame(self) -> pl.DataFrame:
        """(user, vector) as a DataFrame; ``vector`` is an Array(Float32, U) column."""
        return pl.DataFrame({USER: self.users, "vector": self.vectors})


class Recommender:
    """Top-k recommendations for many users at once, from one snapshot.

    Open one with :meth:`load`. ``model`` is the run whose encoder turns raw histories into
    vectors (:meth:`encode`, :meth:`recommend` on a DataFrame); it loads on first use.

    Example:
        >>> rec = Recommender.load("runs/snapshots")                 # doctest: +SKIP
        >>> rec.recommend([42, 7], k=10)                              # doctest: +SKIP
        >>> rec.recommend(pl.DataFrame({"user": ["a", "a"], "item": [3, 5],
        ...                             "timestamp": [100, 160]}))  # doctest: +SKIP
    """

    def __init__(self, snapshot: Snapshot, *, model: str | Path | None = None) -> None:
        self.snapshot = snapshot
        self.model = model
        self._encoder: HistoryEncoder | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None  # a snapshot made by load

    @classmethod
    def load(cls, path: str | Path, *, model: str | Path | None = None,
             data: str | Path | None = None, **export_options: Any) -> "Recommender":
        """A recommender over ``path``:

        - a snapshot directory (written by :func:`export`);
        - a snapshots directory: the snapshot its ``latest`` names;
        - a run directory (or checkpoint): it is exported first, from ``data`` (default the
          dataset it was trained on) with ``export_options`` (``lag``, ``as_of``, ...), into
          a temporary snapshot that lives as long as the recommender. That encodes every
          user of the data once, exactly as a deployed snapshot would.

        ``model`` defaults to the run itself, or to the checkpoint the snapshot names.
        """
        path = Path(path)
        snapshot = path if (path / "manifest.json").exists() else None
        if snapshot is None and (path / "latest").is_file():
            label = latest_label(path)  # a run's checkpoints/ has a latest pointer too
            snapshot = path / label if (path / label / "manifest.json").exists() else None
        if snapshot is not None:
            if data is not None or export_options:
                raise DataError("data= and export options apply to a run directory, and this "
                                "is a snapshot", path=path, fix="leave them out, or pass the "
                                "run to export from")
            return cls._over(Snapshot.open(snapshot), model)
        try:
            find_checkpoint(path)
        except DataError:
            raise DataError("not a snapshot, a snapshots directory or a run", path=path,
                            fix="pass what `argus export` wrote (or its OUT directory), or a "
                                "run of `argus pretrain` / `argus finetune`") from None
        workdir = tempfile.TemporaryDirectory(prefix="argusrec-snapshot-")
        try:
            summary = export(path, workdir.name, data=data, keep=None, progress=False,
                             **export_options)
            rec = cls(Snapshot.open(summary.out), model=model or path)
        except BaseException:
            workdir.cleanup()
            raise
        log.info("exported %s into a temporary snapshot: %d users, %d items", path,
                 summary.users, summary.items)
        rec._workdir = workdir
        return rec

    @classmethod
    def _over(cls, snapshot: Snapshot, model: str | Path | None) -> "Recommender":
        named = (snapshot.manifest.get("model") or {}).get("checkpoint")
        return cls(snapshot, model=model or named)

    # -- encoding ----------------------------------------------------------------------------
    @property
    def encoder(self) -> HistoryEncoder:
        """The model, built for the snapshot's vocabulary (loaded on first use)."""
        if self._encoder is None:
            if self.model is None:
                raise DataError("encoding raw histories needs a model, and this snapshot "
                                "names none", path=self.snapshot.path,
                                fix="pass model=RUN to Recommender.load")
            self._encoder = HistoryEncoder.for_snapshot(self.model, self.snapshot)
        return self._encoder

    def encode(self, histories: Any, *, as_of: int | None = None,
               strict: bool = False) -> Encoded:
        """User vectors of raw histories, all encoded in one batched call.

        ``histories`` is a polars DataFrame / LazyFrame or a pandas DataFrame with columns
        ``user``, ``item``, ``timestamp`` (seconds, or dates), optionally ``event_type`` (default:
        the type a recommendation is shown with) and the model's context and feedback columns
        by name (e.g. ``is_organic``, ``like``, ``played_ratio``). Any other column is an error.
        Each user's events are taken oldest first (ties in input order), the last ``max_len``.

        ``as_of`` is when the recommendation is shown (seconds); default, per user, the later
        of the snapshot's as-of time and the user's last event. Events of items the snapshot
        does not know are skipped, counted and logged; with ``strict`` they are a DataError.
        """
        events, users = self._history_events(histories)
        uniq = events[ITEM].unique(maintain_order=True)
        rows, missing = self.snapshot.rows_of(uniq.to_list())
        if missing and strict:
            raise DataError(f"{len(missing)} item id(s) of the histories are not in snapshot "
                            f"{self.snapshot.label}: {missing[:20]}"
                            f"{' and more' if len(missing) > 20 else ''}", path=FRAME,
                            column=ITEM, fix="drop those events, or pass strict=False to "
                            "skip them; a snapshot exported from newer data knows more items")
        absent = set(missing)
        found = iter(rows.tolist())
        lookup = pl.DataFrame({ITEM: uniq, "_item_row": [-1 if x in absent else next(found)
                                                    for x in uniq.to_list()]})
        events = events.join(lookup, on=ITEM, how="left", maintain_order="left")
        skipped = int((events["_item_row"] < 0).sum())
        if skipped:
            log.warning("skipped %d history event(s) of %d item(s) not in snapshot %s "
                        "(e.g. %s); strict=True makes this an error", skipped, len(missing),
                        self.snapshot.label, missing[:5])
            events = events.filter(pl.col("_item_row") >= 0)
        vectors, seen = self._vectors(events, len(users), as_of)
        return Encoded(users=users, vectors=vectors, seen=seen, skipped_events=skipped,
                       unknown_items=missing)

    def _history_events(self, histories: Any) -> tuple[pl.DataFrame, pl.Series]:
        """The histories checked and converted like a prepared log's rows, sorted by (user in
        order of first appearance, time, input order); and those users."""
        vocab: Vocabulary = self.snapshot.vocabulary
        lf = as_lazy_frame(histories)
        names = list(lf.collect_schema().names())
        mapping, unknown = {}, []
        for name in names:
            if name in (USER, ITEM, TIMESTAMP, EVENT_TYPE):
                mapping[name] = name
            elif name in vocab.context:
                mapping[name if name == IS_ORGANIC else f"context:{name}"] = name
            elif name in vocab.feedback:
                mapping[name if name in FEEDBACK_KINDS else f"feedback:{name}"] = name
            else:
                unknown.append(name)
        if unknown:
            raise DataError(f"history column(s) the model does not know: {unknown}",
                            path=FRAME, column=unknown[0],
                            fix="drop or rename them; besides user, item, timestamp and "
                                f"event_type it takes context {sorted(vocab.context)} and "
                                f"feedback {list(vocab.feedback)}")
        for required in (USER, ITEM, TIMESTAMP):
            if required not in mapping:
                raise DataError(f"the histories have no '{required}' column", path=FRAME,
                                column=required, fix=f"add '{required}'; the frame has "
                                + ", ".join(names))
        events = read_frame(lf, mapping)
        df = events.frame.collect()
        check_events(df, events)
        if EVENT_TYPE not in names:  # not the reader's default: the serving event type
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias(EVENT_TYPE))
        if IS_ORGANIC in df.columns:
            df = df.with_columns(pl.col(IS_ORGANIC).replace_strict(_ORGANIC,
                                                                   return_dtype=pl.String))
        users = df[USER].unique(maintain_order=True)
        order = pl.DataFrame({USER: users, "_user": np.arange(len(users), dtype=np.int64)})
        df = df.join(order, on=USER, maintain_order="left").sort(["_user", TIMESTAMP, ROW])
        return df, users

    def _vectors(self, events: pl.DataFrame, n: int, as_of: int | None
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
        """(n, U) vectors (NaN rows for users without events) and each user's rows."""
        encoder = self.encoder
        vocab = self.snapshot.vocabulary
        context = [c for c in vocab.context if c in events.columns]
        feedback = [f for f in vocab.feedback if f in events.columns]
        user = events["_user"].to_numpy()
        rows = events["_item_row"].to_numpy()
        times = events[TIMESTAMP].to_list()
        types = events[EVENT_TYPE].to_list()
        values = {c: events[c].to_list() for c in context + feedback}
        bounds = np.searchsorted(user, np.arange(n + 1))  # user u owns bounds[u]:bounds[u+1]
        default = int((self.snapshot.manifest.get("data") or {}).get("as_of") or 0)
        samples, when, owners = [], [], []
        seen = [np.unique(rows[bounds[u]:bounds[u + 1]]) for u in range(n)]
        for u in range(n):
            lo, hi = int(bounds[u]), int(bounds[u + 1])
            if lo == hi:
                continue
            lo = max(lo, hi - encoder.max_len)  # the encoder keeps the last max_len anyway
            history = [{"timestamp": times[j], "event_type": types[j],
                        "context": {c: values[c][j] for c in context
                                    if values[c][j] is not None},
                        "feedback": {f: values[f][j] for f in feedback
                                     if values[f][j] is not None}}
                       for j in range(lo, hi)]
            samples.append(encoder.sample(history, rows[lo:hi]))
            when.append(as_of if as_of is not None else max(default, times[hi - 1]))
            owners.append(u)
        vectors = np.full((n, encoder.model.cfg.user_dim), np.nan, dtype=np.float32)
        if samples:
            vectors[owners] = encoder.encode(samples, when)  # (N, U), one batched call
        return vectors, seen

    # -- recommending ------------------------------------------------------------------------
    def recommend(self, users: Any, k: int = 10, *, exclude_seen: bool = True,
                  as_of: int | None = None, strict: bool = False) -> pl.DataFrame:
        """Top-``k`` items for each of many users, as one DataFrame with columns ``user``,
        ``item``, ``score``, ``rank`` (1 = best) and ``fallback``.

        ``users`` is one of:
        - user ids (a list, polars or pandas Series, or numpy array): their stored vectors;
        - a DataFrame of raw histories (see :meth:`encode`, with ``as_of`` and ``strict``);
        - an :class:`Encoded` from :meth:`encode`.

        ``exclude_seen`` leaves out what the user has seen: by the snapshot's cut-off for a
        stored user, the history's items for a raw history. A user with no vector (unknown to
        the snapshot, or a history none of whose items it knows) gets the most popular items,
        with ``fallback`` true and ``score`` their event count in the popularity window.
        Fewer than ``k`` rows come back for a user only when the catalogue runs out.
        """
        if k < 1:
            raise DataError(f"k must be at least 1, got {k}", fix="pass k=10 or so")
        if is_frame(users):
            users = self.encode(users, as_of=as_of, strict=strict)
        if isinstance(users, Encoded):
            ids = users.users
            vectors = [None if np.isnan(v).any() else v for v in users.vectors]
            seen = users.seen
        else:
            ids = _user_ids(users)
            keys = [str(u) for u in ids.to_list()]  # the snapshot's keys: ids as text
            vectors = [self.snapshot.user_vector(key) for key in keys]
            seen = [self.snapshot.seen(key) if exclude_seen else None for key in keys]
        found = []
        for vector, rows in zip(vectors, seen):
            if vector is None:
                top, scores = self.snapshot.most_popular(k)
            else:
                top, scores = self.snapshot.recommend(vector, k,
                                                      exclude=rows if exclude_seen else None)
            found.append((np.asarray(top, dtype=np.int64), np.asarray(scores, np.float32),
                          vector is None))
        return self._frame(ids, found)

    def _frame(self, users: pl.Series, found: list[tuple[np.ndarray, np.ndarray, bool]]
               ) -> pl.DataFrame:
        counts = np.asarray([len(top) for top, _, _ in found], dtype=np.int64)
        empty = np.zeros(0, dtype=np.int64)
        rows = np.concatenate([top for top, _, _ in found] or [empty])
        return pl.DataFrame({
            USER: users.gather(np.repeat(np.arange(len(found)), counts)),
            ITEM: self.snapshot.vocabulary.items.gather(rows),
            "score": np.concatenate([s for _, s, _ in found] or [empty.astype(np.float32)]),
            "rank": np.concatenate([np.arange(1, n + 1, dtype=np.int32) for n in counts]
                                   or [empty.astype(np.int32)]),
            "fallback": np.repeat(np.asarray([f for _, _, f in found], dtype=bool), counts),
        })

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the snapshot (and remove it, when :meth:`load` exported it)."""
        self.snapshot.close()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> "Recommender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _user_ids(users: Any) -> pl.Series:
    """User ids given as a list, a polars / pandas Series or a numpy array, as a Series that
    keeps their type."""
    if isinstance(users, pl.Series):
        return users.rename(USER)
    pandas = sys.modules.get("pandas")  # a pandas Series exists only once pandas is imported
    if pandas is not None and isinstance(users, pandas.Series):
        return pl.from_pandas(users).rename(USER)
    if isinstance(users, (str, bytes, int)) or not isinstance(users, Iterable):
        raise DataError(f"expected a list of user ids, got {type(users).__name__}",
                        fix=f"pass a list, e.g. [{users!r}], or a DataFrame of histories")
    try:
        return pl.Series(USER, users if isinstance(users, np.ndarray) else list(users))
    except (TypeError, ValueError, pl.exceptions.PolarsError) as err:
        first = str(err).strip().splitlines()[0]
        raise DataError(f"the user ids do not form one column ({first})",
                        fix="give every user id one type (all int, or all str)") from None
