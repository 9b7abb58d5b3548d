"""`argus serve`: the endpoints, the popularity fallback, 4xx errors, the runtime path against
the stored vectors, and a snapshot swap under concurrent load with no failed request."""

import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from argusrec.sequences import GAP
from argusrec.serve import create_app
from argusrec.export import export
from argusrec.snapshot import Snapshot, write_snapshot
from argusrec.checkpoint import load_model
from argusrec.train import TrainConfig, pretrain


@pytest.fixture(scope="module")
def deployed(sim_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    pretrain(sim_data, work / "run", TrainConfig(preset="debug", max_steps=2), progress=False)
    summary = export(work / "run", work / "snapshots", progress=False)
    return work, summary


@pytest.fixture(scope="module")
def client(deployed):
    work, _ = deployed
    with TestClient(create_app(work / "snapshots", reload_interval=None)) as c:
        yield c


def _known_user(work):
    snap = Snapshot.latest(work / "snapshots")
    return snap, max(snap.users.keys(), key=lambda u: len(snap.seen(u)))


def test_user_recommendations(deployed, client):
    work, summary = deployed
    snap, user = _known_user(work)
    r = client.get(f"/v1/users/{user}/recommendations", params={"k": 50})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is None and body["snapshot"] == summary.label
    assert len(body["items"]) == 50
    scores = [x["score"] for x in body["items"]]
    assert scores == sorted(scores, reverse=True)
    seen = set(snap.ids_of(snap.seen(user)))
    assert seen and not seen & {x["item_id"] for x in body["items"]}
    exact, exact_scores = snap.recommend_exact(snap.user_vector(user), 50,
                                               exclude=snap.seen(user))
    got = {x["item_id"] for x in body["items"]}
    assert len(got & set(snap.ids_of(exact))) >= 0.95 * 50
    kept = client.get(f"/v1/users/{user}/recommendations",
                      params={"k": 50, "exclude_seen": "false"}).json()
    assert {x["item_id"] for x in kept["items"]} & seen or len(seen) < 10


def test_unknown_user_gets_popularity(deployed, client):
    work, _ = deployed
    snap = Snapshot.latest(work / "snapshots")
    body = client.get("/v1/users/somebody-new/recommendations", params={"k": 5}).json()
    assert body["fallback"] == "popularity"
    assert [x["item_id"] for x in body["items"]] == snap.ids_of(snap.popular[:5, 0])


def test_score_is_the_dot_product(deployed, client):
    work, _ = deployed
    snap, user = _known_user(work)
    ids = snap.ids_of(np.array([3, 0, 7]))
    r = client.post("/v1/score", json={"user_id": user, "item_ids": ids})
    assert r.status_code == 200, r.text
    got = [x["score"] for x in r.json()["scores"]]
    expected = snap.vectors[[3, 0, 7]] @ snap.user_vector(user)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert [x["item_id"] for x in r.json()["scores"]] == ids


@pytest.mark.parametrize("call, status, words", [
    (("get", "/v1/users/1/recommendations", {"params": {"k": 0}}), 422, "k"),
    (("get", "/v1/users/1/recommendations", {"params": {"k": 5000}}), 422, "1000"),
    (("get", "/v1/users/1/recommendations", {"params": {"k": "many"}}), 422, "integer"),
    (("post", "/v1/score", {"json": {"user_id": "1", "item_ids": []}}), 422, "item_ids"),
    (("post", "/v1/score", {"json": {"user_id": "nobody", "item_ids": [1]}}), 404,
     "unknown user"),
    (("post", "/v1/recommendations", {"json": {"history": []}}), 422, "history"),
])
def test_invalid_input_is_a_clear_4xx(client, call, status, words):
    method, url, kwargs = call
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == status
    assert words in r.text


def test_unknown_items_are_named(deployed, client):
    work, _ = deployed
    snap, user = _known_user(work)
    r = client.post("/v1/score", json={"user_id": user,
                                       "item_ids": [snap.ids_of(np.array([1]))[0], 987654321]})
    assert r.status_code == 404 and "987654321" in r.json()["detail"]
    history = [{"item_id": 987654321, "timestamp": 5}]
    r = client.post("/v1/recommendations", json={"history": history})
    assert r.status_code == 422 and "987654321" in r.json()["detail"]


def _history_of(data, index, cutoff, max_len):
    """The user's history as the API takes it: original ids and names, oldest first."""
    ev = data.user_events(index)
    keep = np.flatnonzero((ev["split"] != GAP) & (ev["timestamp"] <= cutoff))[-max_len:]
    items = data.items().sort("index")["item"].to_list()
    types = data.meta["fields"]["event_types"]
    organic = data.meta["fields"]["context"]["is_organic"]["values"]
    history = []
    for p in keep:
        code = int(ev["ctx_is_organic"][p])
        history.append({
            "item_id": items[int(ev["item"][p]) - 1], "timestamp": int(ev["timestamp"][p]),
            "event_type": types[int(ev["event_type"][p]) - 1],
            "context": {"is_organic": organic[code - 1]} if code else {},
            "feedback": {f: float(ev[f"fb_{f}"][p]) for f in data.feedback_fields
                         if not np.isnan(ev[f"fb_{f}"][p])}})
    return history


def test_runtime_path_equals_the_stored_vector(deployed, client):
    work, summary = deployed
    snap, user = _known_user(work)
    model, _, data = load_model(work / "run")
    users = data.users()
    index = int(users.filter(users["user"].cast(str) == user)["index"][0])
    cutoff = snap.manifest["data"]["cutoff"]
    history = _history_of(data, index, cutoff, model.cfg.max_len)
    stored = client.get(f"/v1/users/{user}/recommendations",
                        params={"k": 30, "exclude_seen": "false"}).json()
    r = client.post("/v1/recommendations", json={
        "user_id": user, "history": history, "k": 30, "exclude_seen": False,
        "as_of": snap.manifest["data"]["as_of"]})
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert [x["item_id"] for x in fresh["items"]] == [x["item_id"] for x in stored["items"]]
    np.testing.assert_allclose([x["score"] for x in fresh["items"]],
                               [x["score"] for x in stored["items"]], rtol=1e-4, atol=1e-4)
    # excluding the history's items drops them from the answer
    r = client.post("/v1/recommendations", json={"history": history, "k": 30})
    assert not {x["item_id"] for x in r.json()["items"]} & {e["item_id"] for e in history}


def test_runtime_rejects_bad_histories(deployed, client):
    snap, _ = _known_user(deployed[0])
    item = snap.ids_of(np.array([0]))[0]
    r = client.post("/v1/recommendations", json={"history": [
        {"item_id": item, "timestamp": 10}, {"item_id": item, "timestamp": 5}]})
    assert r.status_code == 422 and "decrease" in r.json()["detail"]
    r = client.post("/v1/recommendations", json={"history": [
        {"item_id": item, "timestamp": 10, "event_type": "teleport"}]})
    assert r.status_code == 422 and "teleport" in r.json()["detail"]
    r = client.post("/v1/recommendations", json={"history": [
        {"item_id": item, "timestamp": 10, "feedback": {"stars": 5}}]})
    assert r.status_code == 422 and "stars" in r.json()["detail"]
    r = client.post("/v1/recommendations", json={"history": [
        {"item_id": item, "timestamp": 10, "context": {"page": "home"}}]})
    assert r.status_code == 422 and "page" in r.json()["detail"]
    r = client.post("/v1/recommendations", json={"history": [{"item_id": item,
                                                              "timestamp": 10}]})
    assert r.status_code == 200 and len(r.json()["items"]) == 100


def test_health_and_metrics(deployed, client):
    _, summary = deployed
    assert client.get("/healthz").json()["snapshot"] == summary.label
    client.get("/v1/users/nobody/recommendations")
    text = client.get("/metrics").text
    assert f'argus_snapshot_info{{label="{summary.label}"' in text
    assert 'route="/v1/users/{user_id}/recommendations",status="200"' in text
    assert "argus_request_seconds_bucket" in text and "argus_fallbacks_total" in text


def test_no_model_means_503_on_the_runtime_path(tmp_path):
    write_snapshot(tmp_path, "s", item_ids=np.arange(4), vectors=np.eye(4, dtype=np.float32),
                   users=[(["u"], np.ones((1, 4), np.float32), [np.zeros(0, np.int32)])],
                   popular=np.array([[2, 9]]), manifest={"model": None})
    with TestClient(create_app(tmp_path, reload_interval=None)) as c:
        assert c.get("/v1/users/u/recommendations", params={"k": 2}).status_code == 200
        r = c.post("/v1/recommendations", json={"history": [{"item_id": 1, "timestamp": 1}]})
        assert r.status_code == 503 and "no model" in r.json()["detail"]


def test_swap_under_load_drops_nothing(deployed, tmp_path):
    """Clients hammer a real uvicorn server while a new snapshot is exported and picked up by
    the poller: every request succeeds, and answers move from the old label to the new."""
    work, summary = deployed
    root = tmp_path / "snapshots"
    first = export(work / "run", root, label="day1", progress=False)
    app = create_app(root, reload_interval=0.05)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    snap = Snapshot.latest(root)
    users = snap.users.keys() + ["new-user"]
    stop, failures, labels = threading.Event(), [], []

    def client_loop(n):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            i = n
            while not stop.is_set():
                try:
                    r = http.get(f"/v1/users/{users[i % len(users)]}/recommendations",
                                 params={"k": 20})
                    if r.status_code != 200:
                        failures.append(r.status_code)
                    else:
                        labels.append(r.json()["snapshot"])
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                i += 1

    clients = [threading.Thread(target=client_loop, args=(n,)) for n in range(4)]
    try:
        for c in clients:
            c.start()
        time.sleep(0.3)
        export(work / "run", root, label="day2", as_of=first.as_of + 3600, progress=False)
        deadline = time.time() + 20
        while (not labels or labels[-1] != "day2") and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for c in clients:
            c.join()
        server.should_exit = True
        thread.join(timeout=10)
    assert failures == []
    assert labels[0] == "day1" and labels[-1] == "day2"
    assert app.state.service.metrics.swaps == 1


def test_a_damaged_snapshot_is_refused_and_the_old_one_serves(deployed, tmp_path):
    work, summary = deployed
    root = tmp_path / "snapshots"
    export(work / "run", root, label="good", progress=False)
    with TestClient(create_app(root, reload_interval=None)) as c:
        export(work / "run", root, label="bad", progress=False)
        (root / "bad" / "popular.npy").write_bytes(b"garbage")
        r = c.post("/v1/admin/reload")
        assert r.status_code == 409 and "damaged" in r.json()["detail"]
        assert c.get("/healthz").json()["snapshot"] == "good"
        assert "argus_snapshot_reload_errors_total 1" in c.get("/metrics").text
        export(work / "run", root, label="better", progress=False)
        assert c.post("/v1/admin/reload").json() == {"snapshot": "better", "changed": True}
