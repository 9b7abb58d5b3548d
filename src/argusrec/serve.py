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

Every number the API takes is bounded here (ids within int64, times 0..2^63-1, finite
feedback, k, the history's length), so bad input is a 422 that names the field, never a 500;
argusrec.serve_edges holds the rest of the edges: short echoes, the body limit (413), the
bounded runtime pool (503 + Retry-After), and the optional bearer token of /v1/admin/* and
/metrics.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time,
# and the history model and the token check are built per app, inside create_app.
import gc
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError,
                      create_model)

from argusrec.errors import DataError
from argusrec.runtime import HistoryEncoder
from argusrec.serve_edges import (BodyLimit, RuntimePool, check_exposure, clip, serve_token,
                                  shown, shown_list, token_check, validation_error)
from argusrec.vocab import id_text
from argusrec.snapshot import Snapshot, latest_label

log = logging.getLogger("argusrec.serve")
MAX_K = 1000
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
MAX_USER_ID_BYTES = 511  # LMDB's key limit: a longer id cannot be a stored user
FEEDBACK_BOUND = 1e9  # |feedback value|: far past any real signal, far below where the float32
# activations overflow to inf (1e308 gave NaN scores and an empty answer)
MAX_BODY_BYTES = 4 * 2**20
MAX_HISTORY = 10_000
ItemId = int | str


# -- request and response models --------------------------------------------------------------
def _user_key(value: str) -> str:
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise ValueError("a user id must be valid UTF-8 text (no lone surrogates)") from None
    if size > MAX_USER_ID_BYTES:
        raise ValueError(f"a user id has at most {MAX_USER_ID_BYTES} bytes of UTF-8 (the user "
                         f"store's key limit), not {size:,}")
    return value


UserId = Annotated[str, Field(min_length=1), AfterValidator(_user_key)]
ItemIdIn = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)] | str
Seconds = Annotated[int, Field(ge=0, le=INT64_MAX)]
Name = Annotated[str, Field(max_length=200)]
Feedback = Annotated[float, Field(allow_inf_nan=False, ge=-FEEDBACK_BOUND, le=FEEDBACK_BOUND)]


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

    user_id: UserId
    item_ids: list[ItemIdIn] = Field(..., min_length=1, max_length=10_000)


class Scores(BaseModel):
    user_id: str
    snapshot: str
    scores: list[ScoredItem]


class HistoryEvent(BaseModel):
    """One event of a raw history, in the log's own vocabulary."""

    model_config = ConfigDict(extra="forbid")

    item_id: ItemIdIn
    timestamp: Seconds = Field(..., description="seconds")
    event_type: Name | None = Field(None, description="e.g. listen; default: the serving type")
    context: dict[Name, Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=dict, description="context field -> value, e.g. is_organic")
    feedback: dict[Name, Feedback] = Field(
        default_factory=dict, description="feedback signal -> finite value within ±1e9, "
        "e.g. like: 1")


class HistoryRequest(BaseModel):
    """The body of POST /v1/recommendations; :func:`_history_model` sets the history cap."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId | None = None
    history: list[HistoryEvent] = Field(..., min_length=1, max_length=MAX_HISTORY)
    k: int = Field(100, ge=1, le=MAX_K)
    exclude_seen: bool = Field(True, description="leave out the history's items")
    as_of: Seconds | None = Field(None, description="when the recommendation is shown "
                                  "(seconds; default: now)")


def _history_model(max_history: int) -> type[HistoryRequest]:
    """HistoryRequest with at most ``max_history`` events (the OpenAPI schema shows it)."""
    if max_history == MAX_HISTORY:
        return HistoryRequest
    return create_model("HistoryRequest", __base__=HistoryRequest,
                        history=(list[HistoryEvent], Field(..., min_length=1,
                                                           max_length=max_history)))


class Issue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class Problem(BaseModel):
    """An error: a message, or (422 from validation) what failed, where."""

    detail: str | list[Issue]


_WHY = {400: "the body is not readable (e.g. not UTF-8)",
        401: "no bearer token, or the wrong one",
        404: "an unknown user or unknown item ids (listed)",
        409: "the new snapshot cannot be served; the old one stays",
        413: "the request body is over the service's limit",
        422: "invalid input (the message says what and where)",
        503: "the runtime path has no model, or is busy (see Retry-After)"}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem, "description": _WHY[code]} for code in codes}


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
        self.runtime_busy = 0

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
                         "load (the old one stays).", self.reload_errors),
                        ("argus_runtime_busy_total", "Runtime-path requests refused (503) "
                         "with every worker busy and the queue full.", self.runtime_busy)]
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


def _past_int64(x: ItemId) -> bool:
    """A text id that reads as an integer no int64 holds (Snapshot.rows_of would overflow)."""
    try:
        value = int(x) if isinstance(x, str) else None
    except ValueError:
        return False
    return value is not None and not INT64_MIN <= value <= INT64_MAX


def _rows_of(snap: Snapshot, item_ids: list) -> tuple[np.ndarray, list]:
    """Snapshot.rows_of, where a text id past int64 is simply unknown to integer ids."""
    if snap.item_ids.dtype.kind in "iu" and any(_past_int64(x) for x in item_ids):
        rows, missing = snap.rows_of([x for x in item_ids if not _past_int64(x)])
        return rows, [x for x in item_ids if _past_int64(x)] + missing
    return snap.rows_of(item_ids)


def _parse(model: type[HistoryRequest], raw: bytes) -> HistoryRequest:
    """The JSON body as ``model``; a RequestValidationError (422) like FastAPI's own."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise RequestValidationError([{**issue, "loc": ("body", *issue["loc"])}
                                      for issue in e.errors(include_url=False)]) from None


def _recommend_history(dep: Deployment, model: type[HistoryRequest], raw: bytes
                       ) -> dict[str, Any]:
    """The runtime path's work, in a RuntimePool thread: parse, check, encode, then HNSW."""
    request = _parse(model, raw)
    times = [e.timestamp for e in request.history]
    if any(b < a for a, b in zip(times, times[1:])):
        raise HTTPException(422, "history timestamps must not decrease (oldest first)")
    snap = dep.snapshot
    rows, missing = _rows_of(snap, [e.item_id for e in request.history])
    if missing:
        raise HTTPException(422, f"unknown item ids in the history {shown_list(missing)}: not "
                                 f"in snapshot {snap.label}")
    try:
        sample = dep.encoder.sample([e.model_dump() for e in request.history], rows)
    except DataError as e:  # unknown names, each listed: cut the list short
        short = DataError(clip(e.problem, 1000), column=e.column, fix=e.fix)
        raise HTTPException(422, short.message()) from None
    as_of = request.as_of if request.as_of is not None else max(int(time.time()), times[-1])
    vector = dep.encoder.encode([sample], [as_of])[0]
    if not np.isfinite(vector).all():
        raise HTTPException(422, "this history encodes to a non-finite vector: check its "
                                 "feedback values")
    top, scores = snap.recommend(vector, request.k,
                                 exclude=np.unique(rows) if request.exclude_seen else None)
    return {"user_id": request.user_id, "snapshot": snap.label, "fallback": None,
            "items": _items(snap, top, scores)}


def _query_routes(app: FastAPI, service: Service) -> None:
    """The ANN path: fast, on the event loop."""

    @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendations,
             responses=_errors(422))
    async def user_recommendations(
            user_id: UserId,
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

    @app.post("/v1/score", response_model=Scores, responses=_errors(400, 404, 413, 422))
    async def score(request: ScoreRequest):
        """Dot-product scores of the given items for a user's stored vector."""
        snap = service.current.snapshot
        vector = snap.user_vector(request.user_id)
        if vector is None:
            raise HTTPException(404, f"unknown user {shown(request.user_id)}: snapshot "
                                     f"{snap.label} has no vector for it")
        rows, missing = _rows_of(snap, request.item_ids)
        if missing:
            raise HTTPException(404, f"unknown item ids {shown_list(missing)}: not in snapshot "
                                     f"{snap.label}")
        return {"user_id": request.user_id, "snapshot": snap.label,
                "scores": _items(snap, rows, snap.scores(vector, rows))}


def _runtime_route(app: FastAPI, service: Service, pool: RuntimePool,
                   body: type[HistoryRequest]) -> None:
    """The runtime path. Its body (up to max_body_bytes of JSON, max_history events) is read
    on the event loop but parsed, like everything after, in the bounded pool: parsed by
    FastAPI, a 4 MiB body would stall every other request on the loop."""

    @app.post("/v1/recommendations", response_model=Recommendations,
              responses=_errors(413, 422, 503))
    async def history_recommendations(request: Request):
        """Encode a raw recent history with the model now, then top-k by HNSW."""
        dep = service.current  # read once: the request finishes on this snapshot
        if dep.encoder is None:
            raise HTTPException(503, "the runtime path has no model: this snapshot names no "
                                     "checkpoint, or the service was started without one")
        return await pool.run(_recommend_history, dep, body, await request.body())

    _document_body(app, "/v1/recommendations", body)


def _document_body(app: FastAPI, path: str, model: type[BaseModel]) -> None:
    """Show ``model`` as the JSON body of POST ``path`` in the OpenAPI schema (the route
    parses its body itself, so FastAPI cannot see it)."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()  # cached in app.openapi_schema: completed in place
            own = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(own.pop("$defs", {}))
            components[model.__name__] = own
            schema["paths"][path]["post"]["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/"
                                                         f"{model.__name__}"}}}}
        return app.openapi_schema

    app.openapi = openapi


def _admin_routes(app: FastAPI, service: Service, guard: list) -> None:
    """Reload, health and metrics; ``guard`` is the token check, where there is a token."""
    guarded = _errors(401) if guard else {}

    @app.post("/v1/admin/reload", dependencies=guard, responses={**guarded, **_errors(409)})
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

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=guard,
             responses=guarded)
    async def metrics():
        return PlainTextResponse(service.metrics.render(service.current),
                                 media_type="text/plain; version=0.0.4")


def create_app(snapshots_root: str | Path, *, model_run: str | Path | None = None,
               runtime: bool = True, reload_interval: float | None = 10.0,
               check: bool = True, redis_url: str | None = None,
               ef_search: int | None = None, token: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, max_history: int = MAX_HISTORY,
               runtime_workers: int = 1, runtime_queue: int = 8) -> FastAPI:
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
        token: a bearer token that POST /v1/admin/* and GET /metrics then require (401
            without it); None leaves them open (fine on loopback only).
        max_body_bytes: a larger request body gets 413.
        max_history: most events in a POST /v1/recommendations history (422 beyond).
        runtime_workers: threads encoding histories at once (each with torch's threads).
        runtime_queue: histories that may wait for a worker; more get 503 + Retry-After.
    """
    if token is not None and not token.strip():
        raise DataError("the bearer token is empty", fix="give a non-empty token, or none")
    for name, value in [("max_body_bytes", max_body_bytes), ("max_history", max_history),
                        ("runtime_workers", runtime_workers)]:
        if value < 1:
            raise DataError(f"{name} must be at least 1, not {value}")
    if runtime_queue < 0:
        raise DataError(f"runtime_queue must be at least 0, not {runtime_queue}")
    service = Service(Path(snapshots_root), model_run=model_run, runtime=runtime, check=check,
                      redis_url=redis_url, ef_search=ef_search)
    pool = RuntimePool(runtime_workers, runtime_queue,
                       on_busy=lambda: service.metrics.count("runtime_busy"))

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
        pool.close()
        if poller is not None:
            poller.join(timeout=5)

    app = FastAPI(title="argusrec", version="1", lifespan=lifespan,
                  exception_handlers={RequestValidationError: validation_error})
    app.state.service, app.state.runtime_pool = service, pool
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(_Timing, metrics=service.metrics)  # outermost: 413s are counted too
    _query_routes(app, service)
    _runtime_route(app, service, pool, _history_model(max_history))
    _admin_routes(app, service, [Depends(token_check(token))] if token else [])
    return app


# -- running it -------------------------------------------------------------------------------
def serve(snapshots_root: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          model_run: str | Path | None = None, runtime: bool = True,
          reload_interval: float | None = 10.0, check: bool = True,
          redis_url: str | None = None, ef_search: int | None = None,
          log_level: str = "warning", token: str | None = None,
          token_file: str | Path | None = None, max_body_bytes: int = MAX_BODY_BYTES,
          max_history: int = MAX_HISTORY, runtime_workers: int = 1,
          runtime_queue: int = 8) -> None:
    """Run the service with uvicorn (one process; blocks until stopped). ``token``, else
    :func:`serve_token` of ``token_file``, guards the admin endpoints and /metrics; without one
    only a loopback ``host`` is allowed. The rest are :func:`create_app`'s arguments."""
    import torch
    import uvicorn

    token = token if token is not None else serve_token(token_file)
    check_exposure(host, token)
    # one thread per encoding: intra-op threads would only fight the other requests for cores
    torch.set_num_threads(1)
    app = create_app(snapshots_root, model_run=model_run, runtime=runtime,
                     reload_interval=reload_interval, check=check, redis_url=redis_url,
                     ef_search=ef_search, token=token, max_body_bytes=max_body_bytes,
                     max_history=max_history, runtime_workers=runtime_workers,
                     runtime_queue=runtime_queue)
    # Start-up built a large heap (torch, the model, the snapshot). A runtime-path request
    # allocates tens of thousands of objects, so full collections come often, and each one
    # scanned that whole heap with the GIL held, stalling the event loop: frozen, start-up's
    # objects are never scanned again (benchmarks/serve_starvation.py: the GET p99 under
    # heavy histories went from 218 to 70 ms).
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
