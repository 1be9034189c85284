"""Working-memory caps count what the engine really allocates (the im2col matrices and their
gradients included), and any failure releases the engine's scratch memory and leaves the
session as it was."""

import tracemalloc

import numpy as np
import pytest
from fastapi.testclient import TestClient
from threadpoolctl import threadpool_limits

from app.deps import locked_session
from app.limits import SpecCost
from app.main import create_app
from app.settings import Settings
from engine import Network
from engine.memory import forward_bytes, trace_bytes
from engine.scratch import SCRATCH, worker_pool


def conv(filters, kernel, padding=0, stride=1, activation="relu"):
    return {"type": "conv", "filters": filters, "kernel": kernel, "padding": padding,
            "stride": stride, "activation": activation}


HEAD = [{"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]
SPECS = {
    "lenet5-like": {"input_shape": [1, 28, 28], "loss": "cross_entropy", "layers": [
        conv(6, 5, 2), {"type": "maxpool", "size": 2}, conv(16, 5), {"type": "maxpool", "size": 2},
        {"type": "flatten"}, {"type": "dense", "units": 84, "activation": "tanh"},
        {"type": "dense", "units": 10, "activation": "softmax"}]},
    "big kernels, float64": {"input_shape": [2, 40, 40], "dtype": "float64",
                             "loss": "cross_entropy",
                             "layers": [conv(8, 9, 4), conv(8, 9, 4), conv(8, 7, 3), *HEAD]},
    "strided, pooled": {"input_shape": [2, 32, 32], "loss": "cross_entropy", "layers": [
        conv(8, 4, 0, 2, "tanh"), conv(8, 3, 1, 1, "leaky_relu"),
        {"type": "maxpool", "size": 3, "stride": 3}, *HEAD]},
    "circular, true convolution": {"input_shape": [2, 16, 16], "loss": "cross_entropy", "layers": [
        {**conv(6, 3, 2), "padding_mode": "circular", "operation": "convolution"},
        {**conv(4, 5, 6), "operation": "convolution"}, *HEAD]},
    # per sample an 0.9 MB im2col matrix: batch 16 runs the batch-innermost conv in four chunks
    "strided in chunks, float64": {"input_shape": [3, 64, 64], "dtype": "float64", "loss": "cross_entropy",
                                   "layers": [conv(8, 6, 2, 2), conv(4, 4, 1, 2), *HEAD]},
    "avgpool, mse": {"input_shape": [1, 12, 12], "loss": "mse", "layers": [
        conv(4, 3, 1), {"type": "avgpool", "size": 2}, {"type": "flatten"},
        {"type": "dense", "units": 3, "activation": "sigmoid"}]},
}
# The audit's memory bomb: accepted by the old caps (they counted activations only), 5.7 GB.
AUDIT_BOMB = {"input_shape": [1, 128, 128], "dtype": "float64", "loss": "cross_entropy",
              "layers": [conv(2, 25, 12) for _ in range(6)] + HEAD}


def _peak_bytes(run) -> int:
    SCRATCH.clear()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        SCRATCH.clear()


@pytest.mark.parametrize("name", SPECS)
def test_the_estimate_covers_a_trace_dealt_over_two_threads(name):
    """With two kernel threads the pool's thread keeps scratch of its own beside the caller's."""
    spec = SPECS[name]
    network = Network.from_spec(spec)
    rng = np.random.default_rng(1)
    x = rng.random((64, *network.input_shape)).astype(network.dtype)
    y = (rng.integers(0, 10, 64) if network.loss == "cross_entropy" else rng.random((64, network.output_size)))
    worker_pool().submit(SCRATCH.clear).result()  # the pool thread's scratch must be allocated anew too
    with threadpool_limits(limits=2, user_api="blas"):
        traced = _peak_bytes(lambda: network.trace(x, y))
    # never less than the truth (how much more depends on whether the kernels split this batch)
    assert traced <= trace_bytes(spec, 64, threads=2)


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("batch", [1, 16])
def test_the_estimate_covers_what_a_trace_and_a_forward_pass_allocate(name, batch):
    spec = SPECS[name]
    network = Network.from_spec(spec)
    rng = np.random.default_rng(0)
    x = rng.random((batch, *network.input_shape)).astype(network.dtype)
    y = (rng.integers(0, 10, batch) if network.loss == "cross_entropy"
         else rng.random((batch, network.output_size)))
    traced = _peak_bytes(lambda: network.trace(x, y))
    forward = _peak_bytes(lambda: network.batch_loss(x, y))
    # never less than the truth, and not so much more that sensible requests are refused
    assert traced <= trace_bytes(spec, batch) <= 1.6 * traced + 65536
    assert forward <= forward_bytes(spec, batch) <= 2.5 * forward + 65536


def test_the_audits_memory_bomb_is_refused_in_plain_words(tmp_path):
    # what the old caps counted (five arrays per activation) was a small fraction of the cap
    assert SpecCost.of(AUDIT_BOMB).activations * 5 * 8 < Settings().max_request_bytes / 10
    assert trace_bytes(AUDIT_BOMB, 1) > 1e9
    with TestClient(create_app(Settings(session_store="memory", data_dir=tmp_path))) as client:
        response = client.post("/api/sessions", json={"spec": AUDIT_BOMB})
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["cap"] == "max_request_bytes"
        assert "GB of memory; the server allows 268 MB" in body["detail"]
        assert "CNNVIZ" not in body["detail"]


def test_a_batch_whose_im2col_matrices_do_not_fit_is_refused_before_it_runs(tmp_path):
    spec = SPECS["big kernels, float64"]
    limit = trace_bytes(spec, 8)
    # the conv temporaries, not the activations the old caps counted, decide
    assert limit > 3 * SpecCost.of(spec).activations * 5 * 8 * 8
    settings = Settings(session_store="memory", data_dir=tmp_path, max_request_bytes=limit)
    with TestClient(create_app(settings)) as client:
        session_id = client.post("/api/sessions", json={"spec": spec}).json()["id"]
        refused = client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 8})
        assert refused.status_code == 422 and refused.json()["cap"] == "max_request_bytes"
        assert "working memory" in refused.json()["detail"]
        assert client.post(f"/api/sessions/{session_id}/step",
                           json={"batch_size": 7}).status_code == 200


def test_a_failure_mid_update_restores_the_session_and_releases_scratch(tmp_path):
    app = create_app(Settings(session_store="memory", data_dir=tmp_path))
    with TestClient(app) as client:
        session_id = client.post("/api/sessions", json={"preset": "lenet5"}).json()["id"]
        assert client.post(f"/api/sessions/{session_id}/step",
                           json={"batch_size": 4, "optimizer": "adam"}).status_code == 200
        store = app.state.store
        session = store.get(session_id)
        weights, state = session.network.state_dict(), session.optimizer.state_dict()
        history = list(session.history.loss)
        x = np.zeros((64, 1, 28, 28), np.float32)
        with pytest.raises(MemoryError):
            with locked_session(store, session_id, save=True) as locked:
                trace = locked.network.trace(x, np.zeros(64, np.int64))
                locked.optimizer.step(locked.network.params, trace)
                locked.step += 1
                locked.history.append(locked.step, 1.0, 0.5, 100)
                assert SCRATCH.nbytes() > 0
                raise MemoryError
        assert SCRATCH.nbytes() == 0
        assert session.step == 1 and session.history.loss == history
        for key, value in session.network.state_dict().items():
            np.testing.assert_array_equal(value, weights[key])
        for key, value in session.optimizer.state_dict().items():
            np.testing.assert_array_equal(value, state[key])


def test_running_out_of_memory_answers_503_and_the_next_request_works(tmp_path, monkeypatch):
    app = create_app(Settings(session_store="memory", data_dir=tmp_path))
    with TestClient(app) as client:
        session_id = client.post("/api/sessions", json={"preset": "lenet5"}).json()["id"]
        real_backward = type(app.state.store.get(session_id).network.layers[0]).backward

        def exhausted(self, *args, **kwargs):
            raise MemoryError

        monkeypatch.setattr(type(app.state.store.get(session_id).network.layers[0]), "backward",
                            exhausted)
        response = client.post(f"/api/sessions/{session_id}/step", json={"batch_size": 8})
        assert response.status_code == 503
        assert "memory" in response.json()["detail"] and "Retry-After" in response.headers
        assert client.get(f"/api/sessions/{session_id}").json()["step"] == 0
        monkeypatch.setattr(type(app.state.store.get(session_id).network.layers[0]), "backward",
                            real_backward)
        assert client.post(f"/api/sessions/{session_id}/step",
                           json={"batch_size": 8}).status_code == 200
