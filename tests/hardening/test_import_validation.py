"""Imports cannot break a session: every crafted file below (built here, never shipped) is refused
with a 422 naming the problem and leaves the store as it was, or gives a session on which every
endpoint answers; the history cap applies to imports; a hypothesis fuzz of the archive finds no
server error."""

import io
import json
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st
from numpy.lib import format as npy_format

from app.main import create_app
from app.settings import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Settings(session_store="memory", data_dir=tmp_path_factory.mktemp("import"),
                              max_history=50, max_sessions=10_000))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def exported(client):
    """An adam-trained tiny session with history and an evaluation, as exported."""
    session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
    assert client.post(f"/api/sessions/{session_id}/train",
                       json={"steps": 3, "batch_size": 4, "optimizer": "adam"}).status_code == 200
    assert client.post(f"/api/sessions/{session_id}/evaluate", json={"limit": 5}).status_code == 200
    data = client.get(f"/api/sessions/{session_id}/export").content
    client.delete(f"/api/sessions/{session_id}")
    return data


def members_of(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as archive:
        return {name: archive[name] for name in archive.files}


def meta_of(data: bytes) -> dict:
    return json.loads(members_of(data)["meta.json"].tobytes())


def pack(members: dict, meta=None, meta_text: str | None = None) -> bytes:
    members = dict(members)
    if meta_text is None and meta is not None:
        meta_text = json.dumps(meta)
    if meta_text is not None:
        members["meta.json"] = np.frombuffer(meta_text.encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    return buffer.getvalue()


def with_meta(data: bytes, **changes) -> bytes:
    meta = meta_of(data)
    meta.update(changes)
    return pack(members_of(data), meta)


def with_optimizer_entry(data: bytes, key: str, value) -> bytes:
    meta = meta_of(data)
    pairs = meta["optimizer_state"]["__dict__"]
    for pair in pairs:
        if pair[0] == key:
            pair[1] = value
            break
    else:
        pairs.append([key, value])
    return pack(members_of(data), meta)


def raw_member(data: bytes, name: str, payload: bytes) -> bytes:
    """The archive with member ``name`` replaced by (or extended with) raw bytes."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            if info.filename != name:
                target.writestr(info.filename, source.read(info))
        target.writestr(name, payload)
    return buffer.getvalue()


def npy_header(shape, descr="<f4") -> bytes:
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return b"\x93NUMPY\x01\x00"[:0] + buffer.getvalue()


def upload(client, data: bytes):
    return client.post("/api/sessions/import",
                       files={"file": ("s.npz", data, "application/octet-stream")})


def assert_every_endpoint_works(client, session_id: str) -> None:
    base = f"/api/sessions/{session_id}"
    checks = [client.get(base), client.get(f"{base}/history"), client.get(f"{base}/export"),
              client.post(f"{base}/trace", json={"input": {"dataset": "mnist", "index": 0}}),
              client.post(f"{base}/step", json={"batch_size": 2}),
              client.post(f"{base}/step", json={"batch_size": 2, "optimizer": "adam"}),
              client.post(f"{base}/train", json={"steps": 2, "batch_size": 2}),
              client.post(f"{base}/evaluate", json={"limit": 3}),
              client.get(f"{base}/history?since=2")]
    assert [response.status_code for response in checks] == [200] * len(checks)
    assert upload(client, client.get(f"{base}/export").content).status_code == 201


def refused(client, data: bytes, *words: str) -> str:
    before = len(client.app.state.store)
    response = upload(client, data)
    assert response.status_code == 422, response.text[:500]
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, detail
    assert len(client.app.state.store) == before
    return detail


def test_a_traced_session_exports_imports_and_reloads(client, tmp_path):
    """The last traced input travels in its own members; they are the format's, not foreign."""
    session_id = client.post("/api/sessions", json={"preset": "tiny"}).json()["id"]
    assert client.post(f"/api/sessions/{session_id}/trace",
                       json={"input": {"dataset": "mnist", "index": 3}}).status_code == 200
    data = client.get(f"/api/sessions/{session_id}/export").content
    assert "last_input/x" in members_of(data)
    response = upload(client, data)
    assert response.status_code == 201, response.text[:300]
    assert_every_endpoint_works(client, response.json()["id"])
    settings = Settings(session_store="sqlite", data_dir=tmp_path)
    with TestClient(create_app(settings)) as first:
        stored = first.post("/api/sessions/import", files={"file": ("s.npz", data)}).json()["id"]
        first.post(f"/api/sessions/{stored}/trace", json={"input": {"dataset": "mnist",
                                                                    "index": 4}})
    with TestClient(create_app(settings)) as restarted:
        assert restarted.get(f"/api/sessions/{stored}").status_code == 200


def test_an_exported_session_imports_and_works(client, exported):
    response = upload(client, exported)
    assert response.status_code == 201
    assert_every_endpoint_works(client, response.json()["id"])


CRAFTED_META = {
    "a step past any integer type": ({"step": 10**30}, "'step'"),
    "a negative cursor": ({"cursor": -1}, "'cursor'"),
    "a cursor that would overflow int64": ({"cursor": 2**63 - 1}, "'cursor'"),
    "a seed over 32 bits": ({"seed": 2**40}, "'seed'"),
    "a boolean step": ({"step": True}, "'step'"),
    "a fractional step": ({"step": 1.5}, "'step'"),
    "a positive class of 12": ({"positive_class": 12}, "'positive_class'"),
    "a text created_at": ({"created_at": "yesterday"}, "'created_at'"),
    "a preset a megabyte long": ({"preset": "x" * 10**6}, "'preset'"),
    "a numeric preset": ({"preset": 5}, "'preset'"),
    "a spec that is a list": ({"spec": [1, 2]}, "'spec'"),
    "a spec over the caps": ({"spec": {"input_shape": [1, 28, 28], "loss": "mse", "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 2000}, {"type": "dense", "units": 10}]}},
        "allows"),
    "a spec that is no network": ({"spec": {"layers": "none"}}, "spec"),
    "evaluations that are not a list": ({"evaluations": {"step": 1}}, "'evaluations'"),
    "an evaluation missing keys": ({"evaluations": [{"step": 1}]}, "evaluation"),
    "an evaluation with a text accuracy": ({"evaluations": [
        {"step": 1, "split": "test", "samples": 5, "accuracy": "high", "loss": 0.1}]},
        "'accuracy'"),
    "an evaluation of another split": ({"evaluations": [
        {"step": 1, "split": "train", "samples": 5, "accuracy": 0.5, "loss": 0.1}]}, "test"),
    "an id that is a number": ({"id": 7}, "'id'"),
    "another format version": ({"version": 99}, "version"),
    "an optimizer state that is a list": ({"optimizer_state": [1, 2]}, "optimizer"),
}


@pytest.mark.parametrize("case", CRAFTED_META)
def test_crafted_meta_fields_are_refused(client, exported, case):
    changes, word = CRAFTED_META[case]
    refused(client, with_meta(exported, **changes), word)


CRAFTED_OPTIMIZER = {
    "a text learning rate": ("learning_rate", "0.5", "'learning_rate'"),
    "an infinite learning rate": ("learning_rate", 1e400, "not a number"),
    "a negative learning rate": ("learning_rate", -0.1, "'learning_rate'"),
    "a text step count": ("steps", "3", "'steps'"),
    "beta1 of 1": ("beta1", 1.0, "'beta1'"),
    "an eps of 0": ("eps", 0.0, "'eps'"),
    "an unknown optimizer": ("name", "lbfgs", "lbfgs"),
    "an optimizer name that is a number": ("name", 5, "optimizer"),
    "a slot for a missing weight": ("slot.9.W.m", {"__array__": "opt/0", "scalar": False},
                                    "belongs to no weight"),
    "a slot another optimizer keeps": ("slot.0.W.velocity", {"__array__": "opt/0",
                                                             "scalar": False}, "unknown entry"),
    "a slot that is a number": ("slot.0.W.m", 3, "refer to one of its arrays"),
    "a slot naming a weight array": ("slot.0.W.m", {"__array__": "net/0.W", "scalar": False},
                                     "refer to one of its arrays"),
    "a slot naming a missing array": ("slot.0.W.m", {"__array__": "opt/999", "scalar": False},
                                      "optimizer state"),
}


@pytest.mark.parametrize("case", CRAFTED_OPTIMIZER)
def test_crafted_optimizer_state_is_refused(client, exported, case):
    key, value, word = CRAFTED_OPTIMIZER[case]
    refused(client, with_optimizer_entry(exported, key, value), word)


def test_optimizer_arrays_of_the_wrong_shape_or_non_finite_are_refused(client, exported):
    members = members_of(exported)
    slot_member = next(name for name in members if name.startswith("opt/"))
    wrong_shape = dict(members, **{slot_member: np.zeros(3, members[slot_member].dtype)})
    refused(client, pack(wrong_shape), "shape")
    infinite = dict(members, **{slot_member: np.full_like(members[slot_member], np.inf)})
    refused(client, pack(infinite), "NaN or infinite")


@pytest.mark.parametrize("text, word", [
    ('{"format": "cnnviz-session", "version": 1, "created_at": Infinity}', "not a number"),
    ('{"format": "cnnviz-session", "version": 1, "step": NaN}', "not a number"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
    ('{"format": "cnnviz-session", "version": 1, "spec": ' + '{"a": ' * 500 + "1"
     + "}" * 501, "nested"),
    ('{"format": "cnnviz-session", "version": 1, "evaluations": [[[[[[[[[[[]]]]]]]]]]]}',
     "nested"),
    ('{"format": "cnnviz-session"', "not valid JSON"),
    ("\udcff", "not valid"),
])
def test_hostile_meta_json_is_refused(client, exported, text, word):
    members = members_of(exported)
    meta_bytes = text.encode("utf-8", "surrogateescape")
    members["meta.json"] = np.frombuffer(meta_bytes, dtype=np.uint8)
    refused(client, pack(members), word)


@pytest.mark.parametrize("name, payload, word", [
    ("net/0.W.npy", npy_header((10**12,)) + b"\0" * 64, "declares"),
    ("net/0.W.npy", npy_header((2**62, 2**62)) + b"\0" * 64, "declares"),
    ("net/0.W.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': bogus}\n", "malformed"),
    ("net/0.W.npy", b"\x93NUMPY\x07\x00" + b"\0" * 20, "malformed"),
    ("net/0.W.npy", b"not an array at all", "malformed"),
    ("net/0.W.npy", npy_header((2,), "|O") + b"\0" * 16, "numbers only"),
    ("net/0.W.npy", npy_header((2,), "<U4") + b"\0" * 32, "numbers only"),
    ("extra.npy", npy_header((1,)) + b"\0" * 4, "does not have"),
    ("notes.txt", b"hello", "not one array"),
])
def test_malformed_and_foreign_members_are_refused(client, exported, name, payload, word):
    refused(client, raw_member(exported, name, payload), word)


@pytest.mark.parametrize("column, value, word", [
    ("history/loss", np.array([np.nan, 1.0, 1.0]), "NaN"),
    ("history/accuracy", np.array([np.inf, 1.0, 1.0]), "NaN"),
    ("history/steps", np.array([1, 2, 2**62], dtype=np.int64), "history/steps"),
    ("history/steps", np.array(["a", "b", "c"]), "history/steps"),
])
def test_malformed_history_is_refused(client, exported, column, value, word):
    members = members_of(exported)
    members[column] = value
    refused(client, pack(members), word)


def test_the_history_cap_applies_to_imports(client, exported):
    """The audit's amplifier: a small compressed file declaring millions of history entries."""
    members = members_of(exported)
    entries = 2_000_000
    members["history/steps"] = np.full(entries, 7, dtype=np.int64)
    members["history/loss"] = np.ones(entries)
    members["history/accuracy"] = np.zeros(entries)
    meta = meta_of(exported)
    meta["step"] = entries
    meta["evaluations"] = [{"step": i, "split": "test", "samples": 5, "accuracy": 0.5,
                            "loss": 0.7} for i in range(1, 201)]
    meta_bytes = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{**members, "meta.json": meta_bytes})
    assert len(buffer.getvalue()) < 200_000
    response = upload(client, buffer.getvalue())
    assert response.status_code == 201, response.text[:500]
    session_id = response.json()["id"]
    history = client.get(f"/api/sessions/{session_id}/history").json()
    assert len(history["steps"]) == 50
    assert len(history["evaluations"]) == 50 and history["evaluations"][-1]["step"] == 200
    assert len(client.get(f"/api/sessions/{session_id}/export").content) < 100_000
    assert_every_endpoint_works(client, session_id)


def test_a_one_output_network_needs_its_positive_class(client):
    spec = {"input_shape": [1, 6, 6], "loss": "binary_cross_entropy", "layers": [
        {"type": "flatten"}, {"type": "dense", "units": 1, "activation": "sigmoid"}]}
    session_id = client.post("/api/sessions", json={"spec": spec}).json()["id"]
    data = client.get(f"/api/sessions/{session_id}/export").content
    refused(client, with_meta(data, positive_class=None), "positive_class")
    ten = client.post("/api/sessions", json={"preset": "lenet5"}).json()["id"]
    refused(client, with_meta(client.get(f"/api/sessions/{ten}/export").content,
                              positive_class=3), "positive_class")


# --- fuzz --------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                      children, max_size=4),
    max_leaves=12)
META_KEYS = ["id", "spec", "seed", "preset", "positive_class", "optimizer_state", "step",
             "cursor", "created_at", "last_used", "evaluations", "format", "version"]
ARRAYS = st.sampled_from([np.zeros(0), np.zeros((2, 3), np.float32), np.ones(3, np.int64),
                          np.array([np.nan]), np.zeros((1, 1, 1, 1), np.float64),
                          np.array(["x"]), np.zeros(4, bool)])


@st.composite
def mutated_archives(draw, exported):
    members = members_of(exported)
    meta = meta_of(exported)
    for _ in range(draw(st.integers(0, 3))):
        meta[draw(st.sampled_from(META_KEYS))] = draw(JSON_VALUES)
    if draw(st.booleans()) and isinstance(meta.get("optimizer_state"), dict) \
            and "__dict__" in meta["optimizer_state"]:
        pairs = meta["optimizer_state"]["__dict__"]
        index = draw(st.integers(0, len(pairs) - 1))
        pairs[index][1] = draw(JSON_VALUES)
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(sorted(members) + ["extra", "opt/77"]))
        if name != "meta.json":
            members[name] = draw(ARRAYS)
    data = pack(members, meta)
    if draw(st.booleans()):  # flip some bytes anywhere in the archive
        raw = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        data = bytes(raw)
    return data


FUZZ_COUNTS = {"accepted": 0, "refused": 0}


@pytest.mark.slow
def test_fuzzed_archives_never_give_a_server_error(client, exported):
    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=mutated_archives(exported))
    def one(data):
        response = upload(client, data)
        assert response.status_code in (201, 422), (response.status_code, response.text[:300])
        if response.status_code == 201:
            FUZZ_COUNTS["accepted"] += 1
            assert_every_endpoint_works(client, response.json()["id"])
            client.delete(f"/api/sessions/{response.json()['id']}")
        else:
            FUZZ_COUNTS["refused"] += 1

    one()
    print(f"\nimport fuzz: {FUZZ_COUNTS}")
    assert FUZZ_COUNTS["refused"] > 0 and FUZZ_COUNTS["accepted"] > 0
