"""`argus serve` at its edges: integers past int64, non-finite feedback, the body and history
limits, short error echoes, the bearer token and the loopback rule, the runtime pool's
admission limit, the ANN path's latency while maximum-size histories encode, and a
schemathesis run over the OpenAPI schema."""

import asyncio
import gc
import json
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import HTTPException
from fastapi.testclient import TestClient

from argusrec import cli_deploy
from argusrec.errors import DataError
from argusrec.export import export
from argusrec.serve import MAX_HISTORY, create_app, serve
from argusrec.serve_edges import RuntimePool, TOKEN_ENV, is_loopback, serve_token
from argusrec.snapshot import Snapshot, write_snapshot
from argusrec.train import TrainConfig, pretrain

BIG = 2**63  # one past int64
EXAMPLES = 15  # schemathesis examples per operation and mode (positive, negative)


@pytest.fixture(scope="module")
def root(sim_data, tmp_path_factory):
    """A snapshot of the tiny simulator with its debug model (the runtime path works)."""
    work = tmp_path_factory.mktemp("serve-edges")
    pretrain(sim_data, work / "run", TrainConfig(preset="debug", max_steps=2), progress=False)
    export(work / "run", work / "snapshots", progress=False)
    return work / "snapshots"


@pytest.fixture(scope="module")
def client(root):
    with TestClient(create_app(root, reload_interval=None)) as c:
        yield c


@pytest.fixture(scope="module")
def known(root):
    """(a user with a stored vector, two item ids of the snapshot)."""
    snap = Snapshot.latest(root)
    return snap.users.keys(1)[0], snap.ids_of(np.array([0, 1]))


def _tiny(path):
    write_snapshot(path, "s", item_ids=np.arange(4), vectors=np.eye(4, dtype=np.float32),
                   users=[(["u"], np.ones((1, 4), np.float32), [np.zeros(0, np.int32)])],
                   popular=np.array([[2, 9]]), manifest={"model": None})
    return path


# -- integers, floats and echoes --------------------------------------------------------------
@pytest.mark.parametrize("body", [
    {"history": [{"item_id": BIG, "timestamp": 1}]},
    {"history": [{"item_id": -BIG - 1, "timestamp": 1}]},
    {"history": [{"item_id": 1, "timestamp": BIG}]},
    {"history": [{"item_id": 1, "timestamp": -1}]},
    {"history": [{"item_id": 1, "timestamp": 1}], "as_of": BIG},
    {"history": [{"item_id": 1, "timestamp": 1}], "k": 10**30},
])
def test_integers_past_int64_are_a_clear_422(client, body):
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 422, r.text
    assert any(w in r.text for w in ("9223372036854775807", "greater than or equal", "1000"))


def test_overflow_in_score_and_query(client, known):
    user, items = known
    r = client.post("/v1/score", json={"user_id": user, "item_ids": [items[0], BIG * 10]})
    assert r.status_code == 422 and "9223372036854775807" in r.text
    # a text id past int64 is simply unknown (the snapshot's ids are integers)
    r = client.post("/v1/score", json={"user_id": user, "item_ids": [items[0], "9" * 30]})
    assert r.status_code == 404 and "9" * 30 in r.json()["detail"]
    r = client.get(f"/v1/users/{user}/recommendations", params={"k": str(BIG * 1000)})
    assert r.status_code == 422
    # the connection still serves (a 500 used to reset it)
    assert client.get(f"/v1/users/{user}/recommendations", params={"k": 3}).status_code == 200


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "1e308", "1e10"])
def test_feedback_must_be_finite_and_bounded(client, known, value):
    item = known[1][0]
    body = ('{"history": [{"item_id": %d, "timestamp": 5, "feedback": {"like": %s}}]}'
            % (item, value))
    r = client.post("/v1/recommendations", content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "feedback" in r.text and ("finite" in r.text or "1000000000" in r.text)


def test_error_messages_do_not_echo_huge_input(client, known):
    user, items = known
    huge = ["x" * 100_000 + str(i) for i in range(30)]  # 3 MB, under the limit
    r = client.post("/v1/score", json={"user_id": user, "item_ids": huge})
    assert r.status_code == 404 and len(r.text) < 6_000 and "and 10 more" in r.text
    r = client.post("/v1/recommendations", json={"history": [
        {"item_id": x, "timestamp": 1} for x in huge]})
    assert r.status_code == 422 and len(r.text) < 6_000
    r = client.post("/v1/score", json={"user_id": "u" * 100_000, "item_ids": [1]})
    assert r.status_code == 422 and len(r.text) < 2_000 and "511 bytes" in r.text
    r = client.post("/v1/recommendations", json={"history": "A" * 1_000_000})
    assert r.status_code == 422 and len(r.text) < 2_000
    many = [{"item_id": "bad", "timestamp": -1}] * 500
    r = client.post("/v1/recommendations", json={"history": many})
    assert r.status_code == 422 and len(r.json()["detail"]) == 21 and "more" in r.text
    r = client.post("/v1/recommendations", json={"history": [
        {"item_id": items[0], "timestamp": 1, "event_type": f"t{i}" + "y" * 190}
        for i in range(2000)]})
    assert r.status_code == 422 and len(r.text) < 3_000 and "unknown event types" in r.text


def test_runtime_path_at_the_extremes_of_every_bound(root, client):
    """Histories of known items with times anywhere in 0..2^63-1 (as_of before, at or after
    them) and feedback anywhere within the bound: always 200 with finite scores."""
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings, strategies as st

    snap = Snapshot.latest(root)
    voc = snap.vocabulary
    items = snap.ids_of(np.arange(snap.num_items))
    times = st.integers(0, 2**63 - 1) | st.sampled_from([0, 1, 2**62, 2**63 - 1])
    context = st.fixed_dictionaries({}, optional={
        name: st.sampled_from(values + ["never-seen"]) for name, values in voc.context.items()})
    feedback = st.fixed_dictionaries({}, optional={
        name: st.floats(-1e9, 1e9, allow_nan=False) for name in voc.feedback})
    event = st.fixed_dictionaries(
        {"item_id": st.sampled_from(items), "timestamp": times},
        optional={"event_type": st.sampled_from(voc.event_types), "context": context,
                  "feedback": feedback})
    body = st.fixed_dictionaries({"history": st.lists(event, min_size=1, max_size=8),
                                  "k": st.integers(1, 1000)},
                                 optional={"as_of": times, "exclude_seen": st.booleans()})

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=body)
    def run(body):
        body["history"].sort(key=lambda e: e["timestamp"])
        r = client.post("/v1/recommendations", json=body)
        assert r.status_code == 200, r.text
        scores = [x["score"] for x in r.json()["items"]]
        assert 0 < len(scores) <= body["k"] and np.isfinite(scores).all()

    run()


@pytest.mark.parametrize("url, body", [
    ("/v1/score", '{"user_id": "\\ud800", "item_ids": [1]}'),
    ("/v1/score", '{"user_id": "0", "item_ids": ["\\ud800"]}'),
    ("/v1/recommendations", '{"history": [{"item_id": "\\udfff", "timestamp": 1}]}'),
    ("/v1/recommendations", '{"user_id": "\\ud800", "history": [{"item_id": 8, "timestamp": 1}]}'),
    ("/v1/recommendations",
     '{"history": [{"item_id": 8, "timestamp": 1, "context": {"\\ud800": "x"}}]}'),
])
def test_lone_surrogates_are_a_4xx_not_a_500(client, url, body):
    """JSON may spell a lone surrogate (\\ud800); UTF-8 cannot, so echoing it would fail."""
    r = client.post(url, content=body, headers={"content-type": "application/json"})
    assert r.status_code in (404, 422), r.text
    assert "ud800" in r.text or "udfff" in r.text


# -- limits -----------------------------------------------------------------------------------
def test_body_limit_by_length_and_by_stream(tmp_path):
    with TestClient(create_app(_tiny(tmp_path), reload_interval=None,
                               max_body_bytes=1_000)) as c:
        body = json.dumps({"user_id": "u", "item_ids": list(range(400))}).encode()
        r = c.post("/v1/score", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "1,000 bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: counted as it streams
            for i in range(0, len(body), 100):
                yield body[i:i + 100]

        r = c.post("/v1/score", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "max-body-bytes" in r.json()["detail"]
        r = c.post("/v1/score", json={"user_id": "u", "item_ids": [0, 3]})
        assert r.status_code == 200
        assert 'status="413"' in c.get("/metrics").text


def test_history_limit(root, known):
    item = known[1][0]
    with TestClient(create_app(root, reload_interval=None, max_history=5)) as c:
        r = c.post("/v1/recommendations", json={"history": [
            {"item_id": item, "timestamp": t} for t in range(6)]})
        assert r.status_code == 422 and "at most 5" in r.text
        r = c.post("/v1/recommendations", json={"history": [
            {"item_id": item, "timestamp": t} for t in range(5)]})
        assert r.status_code == 200
        schema = c.get("/openapi.json").json()["components"]["schemas"]["HistoryRequest"]
        assert schema["properties"]["history"]["maxItems"] == 5


def test_limits_are_checked(tmp_path):
    with pytest.raises(DataError, match="max_history"):
        create_app(_tiny(tmp_path), max_history=0)


# -- the token --------------------------------------------------------------------------------
def test_token_guards_admin_and_metrics(tmp_path):
    with TestClient(create_app(_tiny(tmp_path), reload_interval=None, token="s3cret")) as c:
        for method, url in [("post", "/v1/admin/reload"), ("get", "/metrics")]:
            r = getattr(c, method)(url)
            assert r.status_code == 401 and "Bearer" in r.json()["detail"]
            assert r.headers["www-authenticate"] == "Bearer"
            r = getattr(c, method)(url, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401
            r = getattr(c, method)(url, headers={"Authorization": "Bearer s3cret"})
            assert r.status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/users/u/recommendations", params={"k": 2}).status_code == 200


def test_no_token_only_on_loopback(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    for host in ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"]:
        assert is_loopback(host), host
    for host in ["0.0.0.0", "::", "10.0.0.5", "example.com"]:
        assert not is_loopback(host), host
    with pytest.raises(DataError, match="--token-file"):
        serve(_tiny(tmp_path), host="0.0.0.0")
    with pytest.raises(DataError, match="ARGUS_SERVE_TOKEN"):
        cli_deploy.serve(tmp_path, host="0.0.0.0")


def test_serve_options_reach_the_library(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    import argusrec.serve

    calls = []
    monkeypatch.setattr(argusrec.serve, "serve", lambda *a, **kw: calls.append(kw))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    app = typer.Typer()
    cli_deploy.register(app, lambda f: f)
    (tmp_path / "latest").write_text("2026-01-02\n")
    (tmp_path / "token").write_text("s3cret\n")
    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--host", "0.0.0.0",
                                      "--token-file", str(tmp_path / "token"),
                                      "--max-body-bytes", "1000", "--max-history", "50",
                                      "--runtime-workers", "2", "--runtime-queue", "3"])
    assert result.exit_code == 0, result.output
    assert "token required" in result.output
    assert {k: calls[0][k] for k in ["token", "max_body_bytes", "max_history",
                                     "runtime_workers", "runtime_queue"]} == {
        "token": "s3cret", "max_body_bytes": 1000, "max_history": 50, "runtime_workers": 2,
        "runtime_queue": 3}
    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--host", "0.0.0.0"])
    assert result.exit_code != 0 and len(calls) == 1  # refused before serving


def test_token_from_file_or_env(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert serve_token(None) is None
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert serve_token(None) == "from-env"
    (tmp_path / "token").write_text("from-file\n")
    assert serve_token(tmp_path / "token") == "from-file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        serve_token(tmp_path / "empty")
    with pytest.raises(DataError, match="cannot read"):
        serve_token(tmp_path / "absent")


# -- the runtime pool -------------------------------------------------------------------------
def test_runtime_pool_admits_workers_plus_queue():
    busy = []

    async def scenario():
        pool = RuntimePool(1, 1, on_busy=lambda: busy.append(1))
        gate = threading.Event()
        first = asyncio.ensure_future(pool.run(gate.wait, 5))
        second = asyncio.ensure_future(pool.run(gate.wait, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(HTTPException) as refused:
            await pool.run(time.sleep, 0)
        gate.set()
        assert await first and await second
        assert await pool.run(lambda: 7) == 7  # room again once the jobs ended
        pool.close()
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert busy == [1]


def test_busy_runtime_path_is_503_with_retry_after(root, known):
    app = create_app(root, reload_interval=None, runtime_workers=1, runtime_queue=0)
    pool = app.state.runtime_pool
    with TestClient(app) as c:
        pool.admitted = pool.workers + pool.queue  # as if a history were encoding
        r = c.post("/v1/recommendations", json={"history": [{"item_id": known[1][0],
                                                             "timestamp": 1}]})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "argus_runtime_busy_total 1" in c.get("/metrics").text
        pool.admitted = 0
        assert c.post("/v1/recommendations", json={"history": [
            {"item_id": known[1][0], "timestamp": 1}]}).status_code == 200


# -- the ANN path under heavy histories -------------------------------------------------------
def _p99(latencies):
    return float(np.percentile(latencies, 99))


def test_heavy_histories_do_not_starve_the_ann_path(root, known):
    """GET recommendations keep their latency while eight clients post maximum-size
    histories to a real uvicorn server: p99 within 10x the unloaded one (or under 1 s), and no
    request fails."""
    app = create_app(root, reload_interval=None, runtime_workers=1, runtime_queue=8)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    snap = Snapshot.latest(root)
    users = snap.users.keys(50)
    items = snap.ids_of(np.arange(snap.num_items))
    body = json.dumps({"history": [{"item_id": items[i % len(items)], "timestamp": 1_000 + i}
                                   for i in range(MAX_HISTORY)], "k": 100})
    failures, heavy_done = [], []

    def gets(n, out):
        with httpx.Client(base_url=url, timeout=30) as http:
            for i in range(n):
                started = time.perf_counter()
                r = http.get(f"/v1/users/{users[i % len(users)]}/recommendations",
                             params={"k": 20})
                out.append(time.perf_counter() - started)
                if r.status_code != 200:
                    failures.append(r.status_code)

    def heavy(stop):
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                r = http.post("/v1/recommendations", content=body,
                              headers={"content-type": "application/json"})
                if r.status_code != 200:
                    failures.append(("heavy", r.status_code))
                heavy_done.append(1)

    gc.freeze()  # as serve() does once the app is built: start-up's objects are never scanned
    try:
        gets(50, [])  # warm-up
        quiet = []
        gets(200, quiet)
        stop = threading.Event()
        heavies = [threading.Thread(target=heavy, args=(stop,)) for _ in range(8)]
        for h in heavies:
            h.start()
        time.sleep(0.5)
        loaded = []
        gets(200, loaded)
        stop.set()
        for h in heavies:
            h.join()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        gc.unfreeze()
    print(f"quiet p99 {_p99(quiet)*1000:.1f} ms, loaded p99 {_p99(loaded)*1000:.1f} ms, "
          f"median {np.median(loaded)*1000:.1f}, heavy {len(heavy_done)}, "
          f"t_loaded {sum(loaded):.1f}s")
    assert failures == []
    assert heavy_done
    assert _p99(loaded) < max(10 * _p99(quiet), 1.0), (_p99(quiet), _p99(loaded))


# -- schemathesis -----------------------------------------------------------------------------
def test_schemathesis_finds_no_server_error_and_no_schema_violation(root):
    """Every operation of the OpenAPI schema, 30 generated requests each (positive and
    negative data, a fixed seed), in-process over ASGI: no 5xx, every response as documented."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, seed, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance,
                                                   response_schema_conformance,
                                                   status_code_conformance)

    app = create_app(root, reload_interval=None, token="s3cret")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    statuses: dict[tuple[str, int], int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        takes_input = len(operation.path_parameters) + len(operation.query) + len(operation.body)
        for mode in schemathesis.GenerationMode:
            if mode is schemathesis.GenerationMode.NEGATIVE and not takes_input:
                continue  # nothing to make invalid (the token header is always sent)

            @seed(20260101)
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                r = case.call_and_validate(headers={"Authorization": "Bearer s3cret"},
                                           checks=checks)
                key = (f"{operation.method.upper()} {operation.path}", r.status_code)
                statuses[key] = statuses.get(key, 0) + 1

            run()
    print(f"schemathesis: {sum(statuses.values())} requests;",
          ", ".join(f"{op} {code}: {n}" for (op, code), n in sorted(statuses.items())))
    assert sum(statuses.values()) >= 60 and not any(code >= 500 for _, code in statuses)
