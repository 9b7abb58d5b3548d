"""Export: a checkpoint's user and item vectors encoded in batches and written as a snapshot.

DESIGN.md, "Deployment". The user vector stored for user u is the one the fine-tuned model scores
with (argusrec.finetune): the state after u's last event at or before the data cut-off
``as_of - lag``, read by the user head with the context of a recommendation shown at ``as_of``.
:func:`user_vector_reference` encodes one user with the plain accessor of the prepared data and
no batching; a test holds the batched export to it, and the service's runtime path to both.
The snapshot's layout and reader are in argusrec.snapshot.

Users are encoded on ``device`` (a GPU when there is one), by every rank of a torchrun world
(argusrec.export_parallel: each rank its shards, rank 0 alone writes and publishes), and with
``parquet`` also written as Parquet inside the snapshot for downstream jobs.

Legend: V items, U user/item-vector width, D model width, B users in a batch, L events, C context
fields, F feedback signals.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from argusrec.checkpoint import Checkpoint
from argusrec.device import resolve_device
from argusrec.errors import DataError
from argusrec.export_parallel import (PARQUET_DIR, PartWriter, UserBatch, assign_shards, on_main,
                                      open_staging, read_parts)
from argusrec.loader import collate
from argusrec.parallel import World, all_reduce, barrier, init_world, rank_device
from argusrec.sequences import GAP, PreparedData
from argusrec.retention import check_keep, prune_snapshots
from argusrec.snapshot import DAY, write_snapshot
from argusrec.vocab import Vocabulary

RECOMMENDATION = "recommendation"  # the is_organic value of recommender traffic


# -- encoding users ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ServingContext:
    """How a recommendation shown now is described to the user head: context codes (C,) in
    ``sorted(context_fields)`` order (is_organic = recommendation, other fields unknown) and the
    event type (listen where the log has it, else the most common type)."""

    context: np.ndarray
    event_type: int

    @classmethod
    def of(cls, data: PreparedData) -> "ServingContext":
        fields = data.info.fields
        codes = []
        for name in sorted(data.context_fields):
            values = fields.context[name].values
            codes.append(values.index(RECOMMENDATION) + 1
                         if name == "is_organic" and RECOMMENDATION in values else 0)
        types = fields.event_types
        if "listen" in types:
            event_type = types.index("listen") + 1
        else:
            counts = sum(np.bincount(np.asarray(s.events["event_type"]),
                                     minlength=len(types) + 1) for s in data.shards)
            event_type = int(np.argmax(counts[1:])) + 1
        return cls(context=np.asarray(codes, dtype=np.int64), event_type=event_type)


def history_sample(events: dict[str, np.ndarray], positions: np.ndarray,
                   context_names: list[str], feedback_names: list[str]) -> dict[str, np.ndarray]:
    """A loader sample (see argusrec.loader.collate) of the events at ``positions`` of
    per-event arrays (a shard's, or a user's from ``PreparedData.user_events``)."""
    def take(name: str, dtype) -> np.ndarray:
        return np.asarray(events[name][positions], dtype=dtype)

    n = len(positions)
    return {
        "user": np.int64(0),
        "item": take("item", np.int64),
        "timestamp": take("timestamp", np.int64),
        "event_type": take("event_type", np.int64),
        "context": (np.stack([take(f"ctx_{c}", np.int64) for c in context_names], -1)
                    if context_names else np.zeros((n, 0), dtype=np.int64)),
        "feedback": (np.stack([take(f"fb_{f}", np.float32) for f in feedback_names], -1)
                     if feedback_names else np.zeros((n, 0), dtype=np.float32)),
        "positive": np.zeros(n, dtype=np.bool_),
        "target": np.zeros(n, dtype=np.bool_),
    }


@torch.no_grad()
def encode_histories(model, samples: list[dict[str, np.ndarray]], gaps: np.ndarray,
                     serving: ServingContext, *, max_tokens: int = 65_536) -> np.ndarray:
    """(N, U) float32 user vectors of N histories (loader samples, at most ``max_len`` events
    each) for a recommendation shown ``gaps`` (N,) seconds after each history's last event.

    Histories are sorted by length and batched up to ``max_tokens`` padded events, so padding
    costs little; right padding under a causal mask leaves the last real state unchanged.
    """
    device = next(model.parameters()).device
    lengths = np.asarray([len(s["item"]) for s in samples])
    if len(samples) and lengths.min() < 1:
        raise ValueError("every history needs at least one event")
    out = np.zeros((len(samples), model.cfg.user_dim), dtype=np.float32)
    order = np.argsort(lengths, kind="stable")
    lo = 0
    while lo < len(order):
        # the longest history of a batch is its last one (sorted), so the padded size is known
        hi = lo + 1
        while hi < len(order) and (hi - lo + 1) * lengths[order[hi]] <= max_tokens:
            hi += 1
        chosen = order[lo:hi]
        # pad_to=2: the time-gap embedding drops a window of a single event (it builds the
        # first gap from an empty slice); one padding event after it changes no real state
        batch = collate([samples[i] for i in chosen], pad_to=2).to(device)
        states = model.event_states(batch)  # (B, L, D)
        n = torch.as_tensor(lengths[chosen], device=device)
        last = states[torch.arange(len(chosen), device=device), n - 1]  # (B, D)
        B = len(chosen)
        ctx = torch.as_tensor(serving.context, device=device).expand(B, -1)  # (B, C)
        etype = torch.full((B,), serving.event_type, dtype=torch.int64, device=device)
        gap = torch.as_tensor(np.maximum(gaps[chosen], 0), dtype=torch.int64, device=device)
        out[chosen] = model.user_vectors_at(last, ctx, etype, gap).float().cpu().numpy()
        lo = hi
    return out


@torch.no_grad()
def user_vector_reference(model, data: PreparedData, user: int, as_of: int,
                          lag: int) -> np.ndarray | None:
    """The stored vector of one user (global index), the plain way: every event of the user
    from the slow accessor, filtered, the last ``max_len`` encoded alone. None without history."""
    events = data.user_events(user)
    keep = np.flatnonzero((events["split"] != GAP) & (events["timestamp"] <= as_of - lag))
    if len(keep) == 0:
        return None
    keep = keep[-model.cfg.max_len:]
    sample = history_sample(events, keep, sorted(data.context_fields), list(data.feedback_fields))
    n = len(keep)
    states = model.event_states(collate([sample], pad_to=2))[:, :n]  # (1, L, D); see above
    serving = ServingContext.of(data)
    gap = max(0, as_of - int(events["timestamp"][keep[-1]]))
    user = model.user_vectors_at(states[:, -1], torch.as_tensor(serving.context)[None],
                                 torch.tensor([serving.event_type]), torch.tensor([gap]))
    return user[0].float().numpy()


@torch.no_grad()
def item_vectors(model, *, chunk: int = 65_536) -> np.ndarray:
    """(V, U) float32 item-tower vectors of item indices 1..V (row r = index r + 1)."""
    V = model.spec.num_items
    device = next(model.parameters()).device
    out = np.zeros((V, model.cfg.user_dim), dtype=np.float32)
    for lo in range(0, V, chunk):
        ids = torch.arange(lo + 1, min(V, lo + chunk) + 1, device=device)
        out[lo:lo + len(ids)] = model.item_vectors(ids).float().cpu().numpy()
    return out


# -- export -----------------------------------------------------------------------------------
@dataclass
class ExportSummary:
    out: str
    label: str
    as_of: int
    lag: int
    items: int
    users: int
    users_without_history: int
    seconds: float
    bytes: int
    stage_seconds: dict
    new_items: int = 0
    new_users: int = 0
    item_embedding: str = "exact"  # hashed or exact: how items new since training got vectors
    pruned: list[str] = field(default_factory=list)


def _last_timestamp(data: PreparedData) -> int:
    top = data.info.split.time_max
    if top is not None:
        return int(top)
    return max(int(np.max(s.events["timestamp"])) for s in data.shards if len(s.events["timestamp"]))


def _user_batches(model, data: PreparedData, shards: list[int], cutoff: int, as_of: int,
                  serving: ServingContext, stats: dict, *, batch_users: int, progress: bool
                  ) -> Iterator[UserBatch]:
    """Encode every user of ``shards`` with events by the cut-off, shard by shard, in batches."""
    context_names, feedback_names = sorted(data.context_fields), list(data.feedback_fields)
    opened = data.shards
    bar = tqdm(total=sum(len(opened[s]) for s in shards), desc="users", unit="user",
               disable=not progress)
    for s in shards:
        shard = opened[s]
        ts = np.asarray(shard.events["timestamp"])
        keep = np.flatnonzero((np.asarray(shard.events["split"]) != GAP) & (ts <= cutoff))
        lo = np.searchsorted(keep, shard.offsets[:-1])  # user j's kept events: keep[lo[j]:hi[j]]
        hi = np.searchsorted(keep, shard.offsets[1:])
        items = shard.events["item"]
        with_history = np.flatnonzero(hi > lo)
        stats["users_without_history"] += len(shard) - len(with_history)
        bar.update(len(shard) - len(with_history))
        for b in range(0, len(with_history), batch_users):
            chosen = with_history[b:b + batch_users]
            samples, seen, gaps = [], [], []
            for j in chosen:
                mine = keep[lo[j]:hi[j]]
                samples.append(history_sample(shard.events, mine[-model.cfg.max_len:],
                                              context_names, feedback_names))
                seen.append(np.unique(np.asarray(items[mine])) - 1)
                gaps.append(as_of - int(ts[mine[-1]]))
            vectors = encode_histories(model, samples, np.asarray(gaps), serving)
            bar.update(len(chosen))
            yield UserBatch(shard=s, index=np.asarray(shard.users[chosen], dtype=np.int64),
                            vectors=vectors, seen=seen)
    bar.close()


def popularity(data: PreparedData, cutoff: int, *, window: int = 7 * DAY,
               top: int = 1000) -> np.ndarray:
    """(P, 2) rows and counts of the most frequent items in the ``window`` seconds before the
    cut-off (events of any kind except the gap), most popular first; the whole history by the
    cut-off when the window is empty."""
    counts = np.zeros(data.num_items + 1, dtype=np.int64)
    recent = np.zeros_like(counts)
    for shard in data.shards:
        ts = np.asarray(shard.events["timestamp"])
        ok = (np.asarray(shard.events["split"]) != GAP) & (ts <= cutoff)
        items = np.asarray(shard.events["item"])
        counts += np.bincount(items[ok], minlength=len(counts))
        recent += np.bincount(items[ok & (ts > cutoff - window)], minlength=len(counts))
    use = recent if recent.sum() else counts
    use[0] = 0
    order = np.argsort(-use, kind="stable")[:top]
    order = order[use[order] > 0]
    return np.stack([order - 1, use[order]], axis=1).astype(np.int64)


# Bounds of export's arguments; `argus export` mirrors them in its option ranges (a test).
MAX_AS_OF = 2**62  # seconds; as_of - lag and the gaps stay far inside int64
HNSW_M = (2, 512)  # faiss aborts the process below 2; memory grows with M past any use
MIN_EF_CONSTRUCTION = 8  # narrower builds leave a graph that misses true neighbours


def check_export_arguments(*, as_of: int | None, lag: int | None, hnsw_m: int,
                           ef_construction: int, ef_search: int, popular: int,
                           popularity_window: int, batch_users: int, backend: str) -> None:
    """Raise DataError for an argument of :func:`export` out of range, before any work."""
    if as_of is not None and not 0 <= as_of <= MAX_AS_OF:
        raise DataError(f"as_of must be a time in seconds between 0 and 2**62, got {as_of}",
                        fix="pass --as-of in seconds since 1970, or leave it out (the data's "
                        "last timestamp + 1)")
    if lag is not None and lag < 0:
        raise DataError(f"lag must be >= 0 seconds, got {lag}", fix="pass --lag 0 or more")
    if not HNSW_M[0] <= hnsw_m <= HNSW_M[1]:
        raise DataError(f"hnsw_m must be between {HNSW_M[0]} and {HNSW_M[1]}, got {hnsw_m} "
                        "(faiss needs M >= 2, and the graph's memory grows with M)",
                        fix="pass --hnsw-m 32 (the default) or another value in range")
    if ef_construction < MIN_EF_CONSTRUCTION:
        raise DataError(f"ef_construction must be at least {MIN_EF_CONSTRUCTION}, got "
                        f"{ef_construction}: a narrower build loses recall for good",
                        fix="pass --ef-construction 200 (the default) or more")
    if ef_search < 1:
        raise DataError(f"ef_search must be at least 1, got {ef_search}",
                        fix="pass --ef-search 512 (the default); it is raised to k when k is "
                        "larger")
    if popular < 1:
        raise DataError(f"popular must be at least 1, got {popular}: unknown users would get "
                        "an empty list", fix="pass --popular 1000 (the default) or another "
                        "count of 1 or more")
    if popularity_window < 0:
        raise DataError(f"popularity_window must be >= 0 seconds, got {popularity_window}",
                        fix="pass a window in seconds (default: 7 days)")
    if batch_users < 1:
        raise DataError(f"batch_users must be at least 1, got {batch_users}",
                        fix="pass 1 or more")
    if backend not in ("lmdb", "redis"):
        raise DataError(f"unknown user store backend {backend!r}", fix="use lmdb or redis")


def _date_label(as_of: int) -> str:
    """The UTC date of ``as_of``, the default snapshot label."""
    try:
        return datetime.fromtimestamp(as_of, timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        raise DataError(f"as_of {as_of} has no calendar date to name the snapshot by",
                        fix="pass --label, or an --as-of before the year 10000") from None


@dataclass(frozen=True)
class _ExportInputs:
    """What an export works from: the opened checkpoint and model, the data, and the times."""

    ckpt: Checkpoint
    model: torch.nn.Module  # an ArgusModel (simplified variant) with the data's vocabulary
    data: PreparedData
    vocab: Vocabulary  # the data's items and users
    new: dict  # counts of items ("items") and users ("users") the model never saw
    as_of: int  # seconds; the time the snapshot serves from
    lag: int  # seconds; user states include events up to as_of - lag
    label: str  # the snapshot's directory name

    @property
    def cutoff(self) -> int:
        """The data cut-off ``as_of - lag``."""
        return self.as_of - self.lag


def _open_inputs(run: str | Path, which: str, data: str | Path | PreparedData | None,
                 as_of: int | None, lag: int | None, label: str | None,
                 device: torch.device) -> _ExportInputs:
    """Open the checkpoint and data, load the model on the data's vocabulary onto ``device``,
    resolve the times."""
    ckpt = Checkpoint.open(run, which)
    if isinstance(data, (str, Path)):
        data = PreparedData(data)
    data = data or ckpt.training_data()
    vocab = Vocabulary.of_data(data, users=True)
    model = ckpt.load_model(replace(vocab, users=None))
    new = vocab.new_since(ckpt.vocabulary())
    if lag is None:
        lag = int((ckpt.finetune or {}).get("lag", DAY))  # FinetuneConfig holds it >= 0
    if as_of is None:
        as_of = _last_timestamp(data) + 1
    label = label or _date_label(as_of)
    if model.cfg.variant != "simplified":
        raise DataError("export needs a simplified-ARGUS model (one token per event)",
                        path=ckpt.path, fix="export a model trained with model.variant: "
                        "simplified")
    return _ExportInputs(ckpt=ckpt, model=model.to(device), data=data, vocab=vocab, new=new,
                         as_of=as_of, lag=lag, label=label)


def _encode_items(inputs: _ExportInputs, *, popular: int, popularity_window: int,
                  stages: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(V, U) item vectors and the (P, 2) popularity fallback, each timed into ``stages``."""
    t = time.perf_counter()
    vectors = item_vectors(inputs.model)
    stages["item_vectors"] = time.perf_counter() - t
    t = time.perf_counter()
    top = popularity(inputs.data, inputs.cutoff, window=popularity_window, top=popular)
    stages["popularity"] = time.perf_counter() - t
    return vectors, top


def _manifest(inputs: _ExportInputs, serving: ServingContext, popularity_window: int,
              world: World, parquet: bool) -> dict:
    """The snapshot manifest's model, data and serving parts, with the counts to be filled in."""
    checkpoint, config, model = inputs.ckpt.path, inputs.ckpt.config, inputs.model
    config_text = (checkpoint / "config.json").read_bytes()
    return {
        "model": {"checkpoint": str(checkpoint), "step": config.get("step"),
                  "argusrec_version": config.get("argusrec_version"),
                  "config_sha256": hashlib.sha256(config_text).hexdigest(),
                  "max_len": model.cfg.max_len,
                  "temperature": float(model.temperature.detach())},
        "data": {"path": str(inputs.data.path.resolve()), "as_of": int(inputs.as_of),
                 "lag": int(inputs.lag), "cutoff": int(inputs.cutoff),
                 "last_timestamp": _last_timestamp(inputs.data)},
        "serving_context": {"context": serving.context.tolist(),
                            "event_type": serving.event_type},
        "popularity_window": popularity_window,
        # how the users were encoded: GPU vectors differ from CPU ones in the last bits
        "export": {"ranks": world.size, "device": next(model.parameters()).device.type,
                   "parquet": PARQUET_DIR if parquet else None},
        "counts": {"users_without_history": 0, "new_items": inputs.new["items"],
                   "new_users": inputs.new.get("users", 0)},
    }


def _lmdb_map_size(inputs: _ExportInputs) -> int:
    """Bytes LMDB may grow to, sized from the data so a big log never runs out."""
    events = inputs.data.info.counts.events
    return max(1 << 26, 2 * (inputs.data.num_users * (inputs.model.cfg.user_dim * 4 + 256)
                             + 4 * events))


@dataclass(frozen=True)
class _Publishing:
    """How rank 0 writes the snapshot once the users are encoded: export's arguments of the
    same names."""

    backend: str
    redis_url: str | None
    hnsw_m: int
    ef_construction: int
    ef_search: int
    popular: int
    popularity_window: int
    overwrite: bool
    keep: int | None
    parquet: bool
    progress: bool


def _check_label_free(out_root: Path, label: str, overwrite: bool) -> None:
    """write_snapshot's refusal of an existing label, before the users are encoded, not after."""
    if (out_root / label).exists() and not overwrite:
        raise DataError("a snapshot with this label exists", path=out_root / label,
                        fix="pass another --label, or --overwrite to replace it")


def _encode_users(inputs: _ExportInputs, serving: ServingContext, staging: Path, world: World,
                  *, batch_users: int, parquet: bool, progress: bool,
                  stages: dict[str, float]) -> int:
    """Encode this rank's shards into its part files and wait for every rank; returns the users
    without history by the cut-off, over all ranks."""
    t = time.perf_counter()
    data = inputs.data
    mine = assign_shards([s.events for s in data.info.shards], world.size)[world.rank]
    stats = {"users_without_history": 0}
    users = data.users().sort("index")["user"]
    with PartWriter(staging, world.rank, users, inputs.model.cfg.user_dim, inputs.as_of,
                    parquet=parquet) as part:
        for batch in _user_batches(inputs.model, data, mine, inputs.cutoff, inputs.as_of,
                                   serving, stats, batch_users=batch_users,
                                   progress=progress and world.main):
            part.write(batch)
    without = int(all_reduce(stats["users_without_history"], world))
    barrier(world)  # every part is complete before rank 0 reads them
    stages["users"] = time.perf_counter() - t
    return without


def _publish(inputs: _ExportInputs, out_root: Path, staging: Path, serving: ServingContext,
             how: _Publishing, world: World, without_history: int, stages: dict[str, float],
             started: float) -> ExportSummary:
    """Rank 0: item vectors, popularity and the HNSW index, every rank's users read back into
    the store (and their Parquet parts moved in), the snapshot published, old ones pruned."""
    vectors, top = _encode_items(inputs, popular=how.popular,
                                 popularity_window=how.popularity_window, stages=stages)
    manifest = _manifest(inputs, serving, how.popularity_window, world, how.parquet)
    manifest["counts"]["users_without_history"] = without_history
    model = inputs.model
    shipped = replace(inputs.vocab, users=None, content=inputs.vocab.content
                      if model.cfg.use_content else None)  # what the runtime path rebuilds from
    t = time.perf_counter()
    final = write_snapshot(out_root, inputs.label, item_ids=None, vocabulary=shipped,
                           vectors=vectors, users=read_parts(staging), popular=top,
                           manifest=manifest, backend=how.backend, redis_url=how.redis_url,
                           lmdb_map_size=_lmdb_map_size(inputs), hnsw_m=how.hnsw_m,
                           ef_construction=how.ef_construction, ef_search=how.ef_search,
                           overwrite=how.overwrite, keep=None, progress=how.progress,
                           extra={PARQUET_DIR: staging / PARQUET_DIR} if how.parquet else None)
    stages["write"] = time.perf_counter() - t
    pruned = prune_snapshots(out_root, how.keep)  # here rather than in write_snapshot: reported
    return _summary(inputs, final, len(vectors), pruned, stages, started)


def _summary(inputs: _ExportInputs, final: Path, items: int, pruned: list[str],
             stages: dict[str, float], started: float) -> ExportSummary:
    """The report: counts and sizes read back from the written manifest, and stage timings."""
    written = json.loads((final / "manifest.json").read_text())
    stages["hnsw"] = written["index"]["build_seconds"]
    size = sum(v["bytes"] for v in written["files"].values())
    new = inputs.new
    return ExportSummary(out=str(final), label=inputs.label, as_of=int(inputs.as_of),
                         lag=int(inputs.lag), items=items, users=written["counts"]["users"],
                         users_without_history=written["counts"]["users_without_history"],
                         seconds=time.perf_counter() - started, bytes=size,
                         stage_seconds={k: round(v, 2) for k, v in stages.items()},
                         new_items=new["items"], new_users=new.get("users", 0),
                         item_embedding=inputs.model.items.kind, pruned=pruned)


def export(run: str | Path, out_root: str | Path, *, as_of: int | None = None,
           lag: int | None = None, data: str | Path | PreparedData | None = None,
           which: str = "latest", label: str | None = None, backend: str = "lmdb",
           redis_url: str | None = None, hnsw_m: int = 32, ef_construction: int = 200,
           ef_search: int = 512, popular: int = 1000, popularity_window: int = 7 * DAY,
           batch_users: int = 256, overwrite: bool = False, keep: int | None = 3,
           device: str = "auto", parquet: bool = False, progress: bool = True
           ) -> ExportSummary:
    """Export a model's item and user vectors into ``out_root/<label>/`` and point
    ``out_root/latest`` at it.

    Run under torchrun (``WORLD_SIZE`` > 1) every rank encodes its share of the users and rank
    0 writes and publishes the snapshot (argusrec.export_parallel); every rank returns the same
    summary. The snapshot holds what a single process writes.

    Args:
        run: a run directory of `argus pretrain` / `argus finetune`, or a checkpoint.
        out_root: the snapshots directory (created).
        as_of: the time (seconds) the snapshot serves from; user states include events up to
            ``as_of - lag``. Default: the data's last timestamp + 1.
        lag: seconds; default the fine-tuning lag saved in the checkpoint, else one day.
        data: the prepared dataset (default: the one the model was trained on). A newer one
            is fine: items and users the model never saw get vectors (argusrec.vocab), and
            the summary counts them.
        label: the snapshot's directory name; default the UTC date of ``as_of``.
        backend: where user vectors go: lmdb (inside the snapshot) or redis (``redis_url``).
        hnsw_m, ef_construction, ef_search: HNSW graph degree (2 to 512), build width (8 or
            more) and default search width (1 or more).
        popular: how many items the popularity fallback keeps (1 or more);
            popularity_window: seconds.
        batch_users: users encoded per batch (before length grouping).
        keep: snapshots left in ``out_root`` afterwards, the new one included (None: all);
            the one ``latest`` names is never removed.
        device: where the model encodes: auto (a GPU when there is one), cpu, cuda, cuda:N;
            under torchrun on GPUs each rank takes cuda:LOCAL_RANK. Vectors are float32 either
            way.
        parquet: also write the user vectors as Parquet in ``<label>/user_vectors/`` (one part
            per rank; columns user, vector, as_of; read with
            argusrec.export_parallel.read_user_vectors).
    """
    check_export_arguments(as_of=as_of, lag=lag, hnsw_m=hnsw_m, ef_construction=ef_construction,
                           ef_search=ef_search, popular=popular,
                           popularity_window=popularity_window, batch_users=batch_users,
                           backend=backend)
    check_keep(keep)  # before the work, not after it
    target = resolve_device(device)  # a GPU this machine lacks is refused here, by name
    world = init_world(target.type)
    started = time.perf_counter()
    stages: dict[str, float] = {}
    out_root = Path(out_root)
    inputs = _open_inputs(run, which, data, as_of, lag, label, rank_device(world, target))
    _check_label_free(out_root, inputs.label, overwrite)
    how = _Publishing(backend=backend, redis_url=redis_url, hnsw_m=hnsw_m,
                      ef_construction=ef_construction, ef_search=ef_search, popular=popular,
                      popularity_window=popularity_window, overwrite=overwrite, keep=keep,
                      parquet=parquet, progress=progress)
    serving = ServingContext.of(inputs.data)
    staging = open_staging(out_root, world)
    try:
        without = _encode_users(inputs, serving, staging, world, batch_users=batch_users,
                                parquet=parquet, progress=progress, stages=stages)
        return on_main(world, lambda: _publish(inputs, out_root, staging, serving, how, world,
                                               without, stages, started))
    finally:
        if world.main:  # the parts were read into the store (or the export failed)
            shutil.rmtree(staging, ignore_errors=True)
