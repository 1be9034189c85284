"""Resource caps: a request that would exceed one is refused with a 4xx naming the cap, and the
session it targeted is left as it was."""

import io
import time

import pytest
from fastapi.testclient import TestClient

from app.limits import SpecCost
from engine.memory import trace_bytes
from app.main import create_app
from app.presets import PRESETS
from app.settings import Settings


def small_spec(**changes):
    spec = {
        "input_shape": [1, 12, 12],
        "layers": [
            {"type": "conv", "filters": 4, "kernel": 3, "padding": 1, "activation": "relu"},
            {"type": "maxpool", "size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ],
        "loss": "cross_entropy",
    }
    spec.update(changes)
    return spec


@pytest.fixture
def make_client(tmp_path):
    clients = []

    def build(**caps):
        client = TestClient(create_app(Settings(data_dir=tmp_path / str(len(clients)), **caps)))
        clients.append(client.__enter__())
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def refused_for(response, cap):
    """A 422 naming the cap in its fields, and in its words only what a user can act on."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["cap"] == cap and body["limit"] > 0
    assert "CNNVIZ" not in body["detail"] and "allows" in body["detail"]
    return body["detail"]


def test_spec_cost_of_lenet5_matches_hand_count():
    cost = SpecCost.of(PRESETS["lenet5"].spec_with_seed(0))
    assert cost.parameters == 61_706
    assert cost.layers == 8 and cost.filters == 16 and cost.units == 120 and cost.input_side == 28
    # conv1 28*28*6*25 + conv2 10*10*16*150 + dense 400*120 + 120*84 + 84*10, plus the pools
    assert cost.forward_macs == 117_600 + 240_000 + 48_000 + 10_080 + 840 + (1176 + 400) * 4
    assert cost.activations == 784 + 4704 + 1176 + 1600 + 400 + 400 + 120 + 84 + 10


@pytest.mark.parametrize("cap, limit, spec", [
    ("max_spec_layers", 3, small_spec()),
    ("max_spec_input_side", 10, small_spec()),
    ("max_spec_filters", 3, small_spec()),
    ("max_spec_units", 9, small_spec()),
    ("max_spec_parameters", 1000, small_spec()),
    ("max_spec_activations", 1000, small_spec()),
    ("max_session_bytes", 10_000, small_spec()),
])
def test_spec_over_a_size_cap_is_refused_naming_it(make_client, cap, limit, spec):
    client = make_client(**{cap: limit})
    detail = refused_for(client.post("/api/sessions", json={"spec": spec}), cap)
    assert (f"{limit:,}" if cap != "max_session_bytes" else "10 kB") in detail
    assert client.post("/api/sessions", json={"spec": spec}).status_code == 422
    assert make_client().post("/api/sessions", json={"spec": spec}).status_code == 201


def test_default_caps_refuse_a_network_far_bigger_than_a_classroom_needs(make_client):
    client = make_client()
    wide = small_spec(input_shape=[1, 28, 28], layers=[
        {"type": "flatten"}, {"type": "dense", "units": 1000, "activation": "relu"},
        {"type": "dense", "units": 1000, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"}])
    refused_for(client.post("/api/sessions", json={"spec": wide}), "max_spec_parameters")
    assert client.post("/api/sessions", json={"preset": "lenet5"}).status_code == 201


def test_import_of_a_session_over_a_cap_is_refused(make_client):
    roomy = make_client()
    session_id = roomy.post("/api/sessions", json={"spec": small_spec()}).json()["id"]
    exported = roomy.get(f"/api/sessions/{session_id}/export").content
    strict = make_client(max_spec_parameters=100)
    response = strict.post("/api/sessions/import",
                           files={"file": ("s.npz", io.BytesIO(exported), "application/octet-stream")})
    refused_for(response, "max_spec_parameters")
    assert roomy.post("/api/sessions/import", files={"file": ("s.npz", exported)}).status_code == 201


def step_count(client, session_id):
    return client.get(f"/api/sessions/{session_id}").json()["step"]


def test_training_work_over_the_compute_cap_is_refused_and_changes_nothing(make_client):
    per_sample = SpecCost.of(small_spec()).forward_macs
    # room for 10 steps of 8 samples, not 11
    client = make_client(max_request_macs=3 * per_sample * 80)
    session_id = client.post("/api/sessions", json={"spec": small_spec()}).json()["id"]
    body = {"batch_size": 8, "learning_rate": 0.05}
    assert client.post(f"/api/sessions/{session_id}/train", json={**body, "steps": 10}).status_code == 200
    refused_for(client.post(f"/api/sessions/{session_id}/train", json={**body, "steps": 11}),
                "max_request_macs")
    assert step_count(client, session_id) == 10


def test_step_and_evaluate_are_counted_against_the_compute_cap(make_client):
    per_sample = SpecCost.of(small_spec()).forward_macs
    client = make_client(max_request_macs=per_sample * 100)
    session_id = client.post("/api/sessions", json={"spec": small_spec()}).json()["id"]
    # a step of 32: 33 traced samples and 32 forward again = 131 forward passes
    refused_for(client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 32}),
                "max_request_macs")
    assert client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 16}).status_code == 200
    refused_for(client.post(f"/api/sessions/{session_id}/evaluate", json={"limit": 50}),
                "max_request_macs")
    assert step_count(client, session_id) == 1


def test_batch_over_the_working_memory_cap_is_refused(make_client):
    # a step of N holds the traces of N and of its first sample: N + 1 in memory
    client = make_client(max_request_bytes=trace_bytes(small_spec(), 20))
    session_id = client.post("/api/sessions", json={"spec": small_spec()}).json()["id"]
    refused_for(client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 21}),
                "max_request_bytes")
    assert client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 19}).status_code == 200


def test_request_bounds_are_in_the_schema(make_client):
    client = make_client()
    session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
    for body in ({"batch_size": 257}, {"batch_size": 0}, {"steps": 501}, {"learning_rate": 11.0}):
        path = "train" if "steps" in body else "step"
        response = client.post(f"/api/sessions/{session_id}/{path}", json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["loc"][-1] in body


def test_session_count_cap_answers_429_naming_it(make_client):
    client = make_client(max_sessions=2)
    for _ in range(2):
        assert client.post("/api/sessions", json={"preset": "tiny"}).status_code == 201
    response = client.post("/api/sessions", json={"preset": "tiny"})
    assert response.status_code == 429
    assert response.json()["cap"] == "max_sessions" and "maximum of 2" in response.json()["detail"]


def test_total_session_memory_cap_with_the_memory_store_answers_429(make_client):
    lenet_bytes = SpecCost.of(PRESETS["lenet5"].spec_with_seed(0)).session_bytes
    client = make_client(session_store="memory", max_store_bytes=int(lenet_bytes * 1.5))
    assert client.post("/api/sessions", json={"preset": "lenet5"}).status_code == 201
    response = client.post("/api/sessions", json={"preset": "lenet5"})
    assert response.status_code == 429 and response.json()["cap"] == "max_store_bytes"


def test_upload_over_the_body_cap_is_refused_with_413(make_client):
    client = make_client(max_body_bytes=10_000)
    response = client.post("/api/images", files={"file": ("big.png", b"\x89PNG" + bytes(20_000))})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_upload_over_the_pixel_cap_is_refused_with_413(make_client):
    from PIL import Image

    client = make_client(max_image_pixels=100 * 100)
    buffer = io.BytesIO()
    Image.new("L", (101, 100), 255).save(buffer, "PNG")
    response = client.post("/api/images", files={"file": ("wide.png", buffer.getvalue())})
    assert response.status_code == 413 and "101×100" in response.json()["detail"]


@pytest.mark.slow
def test_requests_beyond_the_computation_slots_wait_then_get_429(real_server, tmp_path):
    import threading

    import httpx

    server = real_server(tmp_path, max_concurrent_computations=1, computation_wait_seconds=0.5)
    with httpx.Client(base_url=server.url, timeout=120) as client:
        busy = client.post("/api/sessions", json={"preset": "lenet5"}).json()["id"]
        other = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
        long_answer = {}

        def train():
            long_answer["response"] = client.post(
                f"/api/sessions/{busy}/train", json={"steps": 200, "batch_size": 64})

        worker = threading.Thread(target=train)
        worker.start()
        time.sleep(0.5)  # the training (a few seconds of work) holds the only slot by now
        refused = client.post(f"/api/sessions/{other}/trace",
                              json={"input": {"dataset": "mnist", "index": 0}})
        worker.join(120)
        assert long_answer["response"].status_code == 200
        assert refused.status_code == 429, refused.text
        assert "busy" in refused.json()["detail"] and "CNNVIZ" not in refused.json()["detail"]
        # the slot is free again once the training is done
        assert client.post(f"/api/sessions/{other}/trace",
                           json={"input": {"dataset": "mnist", "index": 0}}).status_code == 200


def thread_count(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


@pytest.mark.slow
def test_worker_threads_stay_bounded_under_a_burst(real_server, tmp_path):
    """The engine keeps scratch memory per thread, so a bounded thread count bounds memory."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    server = real_server(tmp_path, worker_threads=3)
    idle = thread_count(server.process.pid)
    with httpx.Client(base_url=server.url, timeout=120,
                      limits=httpx.Limits(max_connections=40)) as client:
        session_ids = [client.post("/api/sessions", json={"preset": "lenet5"}).json()["id"]
                       for _ in range(6)]

        def work(n):
            session_id = session_ids[n % len(session_ids)]
            return client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 8}).status_code

        with ThreadPoolExecutor(30) as pool:
            statuses = list(pool.map(work, range(60)))
    assert statuses == [200] * 60
    # the event loop's thread and uvicorn's own, plus at most 3 workers
    assert thread_count(server.process.pid) <= idle + 3
