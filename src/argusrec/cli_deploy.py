"""The deployment verbs of the `argus` command line: `argus export` and `argus serve`.

Thin typer wrappers (STYLE.md principle 4) over :func:`argusrec.snapshot.export` and
:func:`argusrec.serve.serve`; :func:`register` adds them to the main app.
"""

from __future__ import annotations

import os

from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

# export's choices and bounds; argusrec.export holds the authoritative checks (a test ties
# them), not imported here so that `argus --help` need not load torch
_Which = Enum("Which", {v: v for v in ("latest", "best")}, type=str)
_Backend = Enum("Backend", {v: v for v in ("lmdb", "redis")}, type=str)
_LogLevel = Enum("LogLevel", {v: v for v in ("critical", "error", "warning", "info", "debug",
                                             "trace")}, type=str)
_MAX_AS_OF = 2**62


def export(
    run: Annotated[Path, typer.Argument(help="A run directory of `argus pretrain` or `argus "
                                        "finetune`, or one of its checkpoints.")],
    out: Annotated[Path, typer.Argument(help="Snapshots directory: the snapshot goes to "
                                        "OUT/<label>/ and OUT/latest is switched to it.")],
    data: Annotated[Optional[Path], typer.Option(
        help="Prepared dataset (default: the one the model was trained on).")] = None,
    as_of: Annotated[Optional[int], typer.Option(
        "--as-of", min=0, max=_MAX_AS_OF, help="The time (seconds) the snapshot serves from; "
        "user states include events up to AS_OF - LAG (default: the data's last timestamp + "
        "1).")] = None,
    lag: Annotated[Optional[int], typer.Option(
        min=0, help="Seconds between the newest event in a user state and AS_OF (default: the "
        "model's fine-tuning lag, else 86400).")] = None,
    label: Annotated[Optional[str], typer.Option(
        help="Snapshot directory name (default: the UTC date of AS_OF, YYYY-MM-DD).")] = None,
    which: Annotated[_Which, typer.Option(help="For a run directory: its latest checkpoint "
                                          "or the best one by validation.")] = _Which.latest,
    backend: Annotated[_Backend, typer.Option(
        help="Where user vectors go: lmdb (inside the snapshot) or redis.")] = _Backend.lmdb,
    redis_url: Annotated[Optional[str], typer.Option(
        help="The Redis server for --backend redis, e.g. redis://localhost:6379/0.")] = None,
    hnsw_m: Annotated[int, typer.Option(
        min=2, max=512, help="HNSW graph degree M (faiss needs 2 or more; memory grows with "
        "it).")] = 32,
    ef_construction: Annotated[int, typer.Option(
        min=8, help="HNSW build width; lower builds a graph that loses recall for good.")]
    = 200,
    ef_search: Annotated[int, typer.Option(
        min=1, help="HNSW search width the service uses (raised to k when k is larger).")]
    = 512,
    popular: Annotated[int, typer.Option(
        min=1, help="Items kept for the popularity fallback of unknown users.")] = 1000,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a snapshot with the same label (the old one is deleted, "
        "with its Redis keys, once the new one is in).")] = False,
    keep: Annotated[int, typer.Option(
        min=0, help="Snapshots to keep in OUT, the new one included; older ones (and their "
        "Redis keys) are removed, never the one latest names. 0 keeps all.")] = 3,
    device: Annotated[str, typer.Option(
        help="Where users are encoded: auto (a GPU when there is one), cpu, cuda or cuda:N. "
        "Under torchrun each rank takes cuda:LOCAL_RANK.")] = "auto",
    parquet: Annotated[bool, typer.Option(
        "--parquet", help="Also write the user vectors as Parquet (user, vector, as_of) in "
        "the snapshot's user_vectors/, for downstream jobs such as the final ranker's "
        "features.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Export item vectors, an HNSW index, user vectors and popularity into a dated snapshot.

    The snapshot is written to a temporary directory, checksummed into manifest.json, renamed,
    and then OUT/latest is switched to it atomically, so a running `argus serve` never sees a
    half-written one.

    On many GPUs or hosts: `torchrun --nproc-per-node 8 -m argusrec.cli export RUN OUT
    --device cuda` encodes the user shards on every rank; rank 0 writes the store and the
    index once (docs/scale.md).
    """
    from argusrec.export import export as run_export

    summary = run_export(run, out, as_of=as_of, lag=lag, data=data, which=which.value,
                         label=label, backend=backend.value, redis_url=redis_url, hnsw_m=hnsw_m,
                         ef_construction=ef_construction, ef_search=ef_search, popular=popular,
                         overwrite=overwrite, keep=keep or None, progress=not quiet,
                         device=device, parquet=parquet)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary.stage_seconds.items())
    typer.echo(f"exported {summary.items:,} items and {summary.users:,} users "
               f"({summary.users_without_history:,} without history before the cut-off) "
               f"as of {summary.as_of} with lag {summary.lag}s in {summary.seconds:.1f}s "
               f"({stages}); {summary.bytes / 2**20:,.1f} MiB -> {summary.out}")
    if summary.new_items or summary.new_users:
        typer.echo(f"new since the model was trained: {summary.new_items:,} items (vectors "
                   f"from the {'hashed' if summary.item_embedding == 'hashed' else 'exact'} "
                   f"item embedding's rule, see docs/deployment.md), {summary.new_users:,} "
                   "users")
    if summary.pruned:
        typer.echo(f"pruned {len(summary.pruned)} older snapshot(s): "
                   + ", ".join(summary.pruned))


def serve(
    snapshots: Annotated[Path, typer.Argument(help="The snapshots directory `argus export` "
                                              "writes (its `latest` is served).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535,
                                      help="Port to listen on (0: any free one).")] = 8000,
    model: Annotated[Optional[Path], typer.Option(
        help="Model for POST /v1/recommendations (default: the checkpoint named in the "
        "snapshot's manifest).")] = None,
    no_runtime: Annotated[bool, typer.Option(
        "--no-runtime", help="Serve stored vectors only; load no model.")] = False,
    reload_interval: Annotated[float, typer.Option(
        min=0.0, help="Seconds between checks for a new snapshot; 0 = only on POST "
        "/v1/admin/reload.")] = 10.0,
    no_check: Annotated[bool, typer.Option(
        "--no-check", help="Skip the sha256 check of a snapshot's files before serving it.")]
    = False,
    redis_url: Annotated[Optional[str], typer.Option(
        help="Redis server of a redis-backed snapshot (default: the manifest's).")] = None,
    ef_search: Annotated[Optional[int], typer.Option(
        min=1, help="HNSW search width: more is slower and finds more of the exact top-k "
        "(default: the snapshot's).")] = None,
    log_level: Annotated[_LogLevel, typer.Option(help="uvicorn log level.")] = "warning",
    token_file: Annotated[Optional[Path], typer.Option(
        help="A file holding a bearer token that POST /v1/admin/* and GET /metrics then "
        "require (default: $ARGUS_SERVE_TOKEN; none leaves them open, allowed on loopback "
        "only).")] = None,
    max_body_bytes: Annotated[int, typer.Option(
        min=1, help="Largest request body; a larger one gets 413.")] = 4 * 2**20,
    max_history: Annotated[int, typer.Option(
        min=1, help="Most events in a POST /v1/recommendations history (422 beyond; the "
        "model reads only its last max_len).")] = 10_000,
    runtime_workers: Annotated[int, typer.Option(
        min=1, help="Threads encoding runtime-path histories at once, apart from the ANN "
        "path.")] = 1,
    runtime_queue: Annotated[int, typer.Option(
        min=0, help="Histories that may wait for a runtime worker; more get 503 with "
        "Retry-After.")] = 8,
) -> None:
    """Serve recommendations over HTTP from the latest snapshot (FastAPI + uvicorn).

    GET /v1/users/{id}/recommendations, POST /v1/score, POST /v1/recommendations (a raw
    history, encoded by the model on the request), GET /healthz, GET /metrics. A new snapshot
    is loaded in the background and swapped in without dropping requests. Listening beyond
    loopback (e.g. --host 0.0.0.0) needs a token.
    """
    from argusrec.serve import serve as run_serve
    from argusrec.serve_edges import check_exposure, serve_token
    from argusrec.snapshot import latest_label

    token = serve_token(token_file)
    check_exposure(host, token)  # before saying "serving": the refusal is the only output
    typer.echo(f"serving snapshot {latest_label(snapshots)} on http://{host}:{port} "
               f"({'token required on /v1/admin/* and /metrics; ' if token else ''}"
               "Ctrl-C stops)")
    run_serve(snapshots, host=host, port=port, model_run=model, runtime=not no_runtime,
              reload_interval=reload_interval or None, check=not no_check,
              redis_url=redis_url, ef_search=ef_search,
              log_level=getattr(log_level, "value", log_level), token=token,
              max_body_bytes=max_body_bytes, max_history=max_history,
              runtime_workers=runtime_workers, runtime_queue=runtime_queue)


def register(app: typer.Typer, friendly: Callable) -> None:
    """Add `export` and `serve` to ``app``; ``friendly`` turns DataError into a clean exit."""
    app.command(name="export")(friendly(export))
    app.command(name="serve")(friendly(serve))
