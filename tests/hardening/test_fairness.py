"""One client cannot hold every computation slot: requests queue behind their session's turn
before they ask for a slot, so a burst on one session holds one slot, and another session's
request is served before the burst's tail."""

import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_a_burst_on_one_session_does_not_starve_another(real_server, tmp_path):
    server = real_server(tmp_path, max_concurrent_computations=2, computation_wait_seconds=120)
    finished = []
    lock = threading.Lock()
    with httpx.Client(base_url=server.url, timeout=300,
                      limits=httpx.Limits(max_connections=20)) as client:
        greedy = client.post("/api/sessions", json={"preset": "lenet5"}).json()["id"]
        polite = client.post("/api/sessions", json={"preset": "lenet5"}).json()["id"]

        def send(name, session_id, path, body):
            response = client.post(f"/api/sessions/{session_id}/{path}", json=body)
            with lock:
                finished.append((name, response.status_code))

        burst = [threading.Thread(target=send, args=(f"greedy{i}", greedy, "train",
                                                     {"steps": 100, "batch_size": 64}))
                 for i in range(8)]
        for thread in burst:
            thread.start()
        time.sleep(1.0)  # the burst is queued on its session by now
        polite_request = threading.Thread(
            target=send, args=("polite", polite, "trace",
                               {"input": {"dataset": "mnist", "index": 0}}))
        polite_request.start()
        for thread in [*burst, polite_request]:
            thread.join(300)
        steps = client.get(f"/api/sessions/{greedy}").json()["step"]
    assert all(status == 200 for _, status in finished), finished
    assert steps == 8 * 100
    order = [name for name, _ in finished]
    # served with the burst's second request at the latest, not after all eight
    assert order.index("polite") <= 2, order
