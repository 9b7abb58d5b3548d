"""`argus serve`: the recommendation service over a directory of snapshots (argusrec.snapshot).

DESIGN.md, "Deployment": candidates are the ANN top-k by the stored user vector, the ranking
score is the dot product, and a runtime path encodes a fresh history on request with the same
encoder the export used. The service holds one *deployment* (a snapshot, plus the model for the
runtime path) behind a single reference. A newer snapshot is loaded completely in the background
and then swapped in with one assignment; a request reads the reference once, so it finishes on
the snapshot it started on and no request fails during a swap.

Endpoints:

    GET  /v1/users/{user_id}/recommendations?k=100&exclude_seen=true   stored vector -> ANN
    POST /v1/score                 {"user_id", "item_ids"} -> dot products
    POST /v1/recommendations       {"history": [...], "k"} -> encode now -> ANN
    POST /v1/admin/reload          switch to the snapshot ``latest`` names, now
    GET  /healthz, GET /metrics    liveness; Prometheus text

An unknown user gets the most popular items, marked ``"fallback": "popularity"``.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from argusrec.errors import DataError
from argusrec.runtime import HistoryEncoder
from argusrec.vocab import id_text
from argusrec.snapshot import Snapshot, latest_label

log = logging.getLogger("argusrec.serve")
MAX_K = 1000
ItemId = int | str


# -- request and response models --------------------------------------------------------------
class ScoredItem(BaseModel):
    item_id: ItemId
    score: float


class Recommendations(BaseModel):
    user_id: str | None
    snapshot: str
    fallback: str | None = Field(None, description="popularity when the user has no vector")
    items: list[ScoredItem]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(..., min_length=1)
    item_ids: list[ItemId] = Field(..., min_length=1, max_length=10_000)


class Scores(BaseModel):
    user_id: str
    snapshot: str
    scores: list[ScoredItem]


class HistoryEvent(BaseModel):
    """One event of a raw history, in the log's own vocabulary."""

    model_config = ConfigDict(extra="forbid")

    item_id: ItemId
    timestamp: int = Field(..., ge=0, description="seconds")
    event_type: str | None = Field(None, description="e.g. listen; default: the serving type")
    context: dict[str, str] = Field(default_factory=dict,
                                    description="context field -> value, e.g. is_organic")
    feedback: dict[str, float] = Field(default_factory=dict,
                                       description="feedback signal -> value, e.g. like: 1")


class HistoryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = None
    history: list[HistoryEvent] = Field(..., min_length=1, max_length=100_000)
    k: int = Field(100, ge=1, le=MAX_K)
    exclude_seen: bool = Field(True, description="leave out the history's items")
    as_of: int | None = Field(None, ge=0, description="when the recommendation is shown "
                              "(seconds; default: now)")


# -- deployment and metrics -------------------------------------------------------------------
@dataclass(frozen=True)
class Deployment:
    """What one request works with: swapped as a whole."""

    snapshot: Snapshot
    encoder: HistoryEncoder | None
    loaded_at: float


class Metrics:
    """Request counts, a latency histogram per route, and snapshot state, as Prometheus text."""

    BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list] = {}  # route -> [bucket counts..., sum, count]
        self.fallbacks = 0
        self.swaps = 0
        self.reload_errors = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self.lock:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            h = self.latency.setdefault(route, [0] * len(self.BUCKETS) + [0.0, 0])
            for i, bound in enumerate(self.BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def render(self, deployment: Deployment) -> str:
        lines = ["# HELP argus_requests_total HTTP requests by route and status.",
                 "# TYPE argus_requests_total counter"]
        with self.lock:
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(f'argus_requests_total{{method="{method}",route="{route}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP argus_request_seconds Request latency.",
                      "# TYPE argus_request_seconds histogram"]
            for route, h in sorted(self.latency.items()):
                for bound, n in zip(self.BUCKETS, h):
                    lines.append(f'argus_request_seconds_bucket{{route="{route}",le="{bound}"}} '
                                 f'{n}')
                lines.append(f'argus_request_seconds_bucket{{route="{route}",le="+Inf"}} '
                             f'{h[-1]}')
                lines.append(f'argus_request_seconds_sum{{route="{route}"}} {h[-2]:.6f}')
                lines.append(f'argus_request_seconds_count{{route="{route}"}} {h[-1]}')
            counters = [("argus_fallbacks_total", "Unknown users served the popularity "
                         "fallback.", self.fallbacks),
                        ("argus_snapshot_swaps_total", "Snapshots swapped in after start-up.",
                         self.swaps),
                        ("argus_snapshot_reload_errors_total", "Snapshots that failed to "
                         "load (the old one stays).", self.reload_errors)]
        for name, doc, value in counters:
            lines += [f"# HELP {name} {doc}", f"# TYPE {name} counter", f"{name} {value}"]
        snap = deployment.snapshot
        lines += ["# HELP argus_snapshot_info The snapshot being served.",
                  "# TYPE argus_snapshot_info gauge",
                  f'argus_snapshot_info{{label="{snap.label}",items="{snap.num_items}",'
                  f'users="{snap.manifest["counts"]["users"]}"}} 1',
                  "# HELP argus_snapshot_loaded_timestamp_seconds When it was swapped in.",
                  "# TYPE argus_snapshot_loaded_timestamp_seconds gauge",
                  f"argus_snapshot_loaded_timestamp_seconds {deployment.loaded_at:.3f}"]
        return "\n".join(lines) + "\n"


class _Timing:
    """ASGI middleware: counts and times every HTTP request by its route template."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            self.metrics.observe(scope["method"], getattr(route, "path", "unmatched"),
                                 status[0], time.perf_counter() - started)


class Service:
    """The deployment reference, how to load the next one, and the background poller."""

    def __init__(self, root: Path, *, model_run: str | Path | None, runtime: bool,
                 check: bool, redis_url: str | None, ef_search: int | None) -> None:
        self.root, self.model_run, self.runtime = root, model_run, runtime
        self.check, self.redis_url, self.ef_search = check, redis_url, ef_search
        self.metrics = Metrics()
        self.reload_lock = threading.Lock()
        self.failed: str | None = None  # a label that failed to load; polling skips it
        self.current = self._load(latest_label(root), None)

    def _load(self, label: str, previous: Deployment | None) -> Deployment:
        snapshot = Snapshot.open(self.root / label, check=self.check, redis_url=self.redis_url,
                                 ef_search=self.ef_search)
        encoder = None
        if self.runtime:
            checkpoint = self.model_run or (snapshot.manifest.get("model") or {}).get("checkpoint")
            old = previous.encoder if previous is not None else None
            if old is not None and checkpoint is not None and old.serves(checkpoint, snapshot):
                encoder = old  # same model, same vocabulary: nothing to rebuild
            elif checkpoint is not None and self.model_run is None and \
                    not Path(checkpoint).exists():
                log.warning("no runtime path: the checkpoint %s named in snapshot %s is not "
                            "there any more (moved?); pass --model RUN", checkpoint, label)
            elif checkpoint is not None:
                # built for this snapshot's vocabulary: items new since training get vectors
                encoder = HistoryEncoder.for_snapshot(checkpoint, snapshot)
        return Deployment(snapshot=snapshot, encoder=encoder, loaded_at=time.time())

    def reload(self, *, retry: bool = True) -> bool:
        """Swap to the snapshot ``latest`` names if it is new; True when it swapped. Without
        ``retry`` a label that already failed to load is not tried again."""
        with self.reload_lock:
            label = latest_label(self.root)
            if label == self.current.snapshot.label or (label == self.failed and not retry):
                return False
            try:
                fresh = self._load(label, self.current)
            except Exception:
                self.failed = label
                self.metrics.count("reload_errors")
                raise
            # One assignment: requests in flight keep the deployment they read; the old
            # snapshot is freed when the last of them lets go of it.
            self.current = fresh
            self.metrics.count("swaps")
            log.info("serving snapshot %s", label)
            return True

    def poll(self, interval: float, stop: threading.Event) -> None:
        while not stop.wait(interval):
            try:
                self.reload(retry=False)
            except Exception:  # keep serving the old snapshot; the metric shows the failure
                log.exception("could not load the new snapshot")


# -- the app ----------------------------------------------------------------------------------
def _items(snap: Snapshot, rows: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    return [{"item_id": id_text(i) if isinstance(i, bytes) else i, "score": float(s)}
            for i, s in zip(snap.ids_of(rows), scores)]


def create_app(snapshots_root: str | Path, *, model_run: str | Path | None = None,
               runtime: bool = True, reload_interval: float | None = 10.0,
               check: bool = True, redis_url: str | None = None,
               ef_search: int | None = None) -> FastAPI:
    """The FastAPI app over ``snapshots_root`` (the directory `argus export` writes).

    Args:
        model_run: the model for POST /v1/recommendations; default the checkpoint named in the
            snapshot's manifest (loaded once per distinct checkpoint, never per request).
        runtime: False serves the stored vectors only (no model is loaded).
        reload_interval: seconds between checks of ``latest``; None only reloads on
            POST /v1/admin/reload.
        check: verify every file's sha256 before serving a snapshot.
        redis_url: the Redis server of a redis-backed snapshot (default: the manifest's).
        ef_search: HNSW search width (default: the snapshot's).
    """
    service = Service(Path(snapshots_root), model_run=model_run, runtime=runtime, check=check,
                      redis_url=redis_url, ef_search=ef_search)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = threading.Event()
        poller = None
        if reload_interval:
            poller = threading.Thread(target=service.poll, args=(reload_interval, stop),
                                      name="snapshot-poller", daemon=True)
            poller.start()
        yield
        stop.set()
        if poller is not None:
            poller.join(timeout=5)

    app = FastAPI(title="argusrec", version="1", lifespan=lifespan)
    app.state.service = service
    app.add_middleware(_Timing, metrics=service.metrics)

    @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendations)
    async def user_recommendations(
            user_id: str,
            k: int = Query(100, ge=1, le=MAX_K, description="how many items"),
            exclude_seen: bool = Query(True, description="leave out items the user has seen")):
        """Top-k items by the user's stored vector (HNSW), or the popular items for an
        unknown user."""
        dep = service.current
        snap = dep.snapshot
        vector = snap.user_vector(user_id)
        if vector is None:
            service.metrics.count("fallbacks")
            rows, counts = snap.most_popular(k)
            return {"user_id": user_id, "snapshot": snap.label, "fallback": "popularity",
                    "items": _items(snap, rows, counts)}
        rows, scores = snap.recommend(vector, k, exclude=snap.seen(user_id) if exclude_seen
                                      else None)
        return {"user_id": user_id, "snapshot": snap.label, "fallback": None,
                "items": _items(snap, rows, scores)}

    @app.post("/v1/score", response_model=Scores)
    async def score(request: ScoreRequest):
        """Dot-product scores of the given items for a user's stored vector."""
        snap = service.current.snapshot
        vector = snap.user_vector(request.user_id)
        if vector is None:
            raise HTTPException(404, f"unknown user {request.user_id!r}: snapshot "
                                     f"{snap.label} has no vector for it")
        rows, missing = snap.rows_of(request.item_ids)
        if missing:
            shown = missing[:20]
            raise HTTPException(404, f"unknown item ids {shown}"
                                     f"{' and more' if len(missing) > 20 else ''}: not in "
                                     f"snapshot {snap.label}")
        return {"user_id": request.user_id, "snapshot": snap.label,
                "scores": _items(snap, rows, snap.scores(vector, rows))}

    @app.post("/v1/recommendations", response_model=Recommendations)
    def history_recommendations(request: HistoryRequest):
        """Encode a raw recent history with the model now, then top-k by HNSW."""
        dep = service.current
        if dep.encoder is None:
            raise HTTPException(503, "the runtime path has no model: this snapshot names no "
                                     "checkpoint, or the service was started without one")
        times = [e.timestamp for e in request.history]
        if any(b < a for a, b in zip(times, times[1:])):
            raise HTTPException(422, "history timestamps must not decrease (oldest first)")
        snap = dep.snapshot
        rows, missing = snap.rows_of([e.item_id for e in request.history])
        if missing:
            raise HTTPException(422, f"unknown item ids in the history {missing[:20]}: not in "
                                     f"snapshot {snap.label}")
        try:
            sample = dep.encoder.sample([e.model_dump() for e in request.history], rows)
        except DataError as e:
            raise HTTPException(422, e.message()) from None
        as_of = request.as_of if request.as_of is not None else max(int(time.time()), times[-1])
        vector = dep.encoder.encode([sample], [as_of])[0]
        top, scores = snap.recommend(vector, request.k,
                                     exclude=np.unique(rows) if request.exclude_seen else None)
        return {"user_id": request.user_id, "snapshot": snap.label, "fallback": None,
                "items": _items(snap, top, scores)}

    @app.post("/v1/admin/reload")
    def reload():
        """Switch to the snapshot ``latest`` names now (it is loaded before the switch)."""
        try:
            changed = service.reload()
        except DataError as e:
            raise HTTPException(409, f"the new snapshot cannot be served: {e.message()}")
        return {"snapshot": service.current.snapshot.label, "changed": changed}

    @app.get("/healthz")
    async def healthz():
        snap = service.current.snapshot
        return {"status": "ok", "snapshot": snap.label, "items": snap.num_items,
                "runtime": service.current.encoder is not None}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(service.metrics.render(service.current),
                                 media_type="text/plain; version=0.0.4")

    return app


def serve(snapshots_root: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          model_run: str | Path | None = None, runtime: bool = True,
          reload_interval: float | None = 10.0, check: bool = True,
          redis_url: str | None = None, ef_search: int | None = None,
          log_level: str = "warning") -> None:
    """Run the service with uvicorn (one process; blocks until stopped)."""
    import torch
    import uvicorn

    # one request per thread: intra-op threads would only fight the other requests for cores
    torch.set_num_threads(1)
    app = create_app(snapshots_root, model_run=model_run, runtime=runtime,
                     reload_interval=reload_interval, check=check, redis_url=redis_url,
                     ef_search=ef_search)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
