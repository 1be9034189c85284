"""The in-memory store (caps, idle expiry, thread safety) and the digit-to-input conversions."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.datasets import TargetRule, fit_to_input, training_pool
from app.presets import PRESETS
from app.sessions import Session
from app.store import InMemorySessionStore, SessionNotFound, StoreFull
from engine import train_split


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _tiny() -> Session:
    return Session.create(PRESETS["tiny"].spec_with_seed(0), preset="tiny", positive_class=0)


def _store(**overrides) -> tuple[InMemorySessionStore, FakeClock]:
    clock = FakeClock()
    options = {"max_sessions": 10, "max_bytes": 10**8, "idle_seconds": 60.0, **overrides}
    return InMemorySessionStore(clock=clock, **options), clock


def test_store_add_get_delete_and_iterate():
    store, _ = _store()
    sessions = [_tiny() for _ in range(3)]
    for session in sessions:
        store.add(session)
    assert store.get(sessions[1].id) is sessions[1]
    assert sorted(store.ids()) == sorted(s.id for s in sessions) and len(store) == 3
    assert {s.id for s in store} == {s.id for s in sessions}
    store.delete(sessions[0].id)
    with pytest.raises(SessionNotFound):
        store.get(sessions[0].id)
    with pytest.raises(SessionNotFound):
        store.delete(sessions[0].id)


def test_idle_sessions_expire_and_use_keeps_them_alive():
    store, clock = _store()
    idle, busy = _tiny(), _tiny()
    store.add(idle)
    store.add(busy)
    clock.now += 50
    store.get(busy.id)
    clock.now += 20
    assert store.ids() == [busy.id]
    with pytest.raises(SessionNotFound):
        store.get(idle.id)


def test_a_session_in_the_middle_of_a_request_does_not_expire():
    store, clock = _store()
    session = _tiny()
    store.add(session)
    with session.lock:
        clock.now += 3600
        assert store.expire_idle() == []
    assert store.expire_idle() == [session.id]


def test_saving_a_deleted_session_does_not_bring_it_back():
    store, _ = _store()
    session = _tiny()
    store.add(session)
    store.delete(session.id)
    store.save(session)
    assert store.ids() == []


def test_count_and_memory_caps_name_themselves():
    store, _ = _store(max_sessions=1)
    store.add(_tiny())
    with pytest.raises(StoreFull) as full:
        store.add(_tiny())
    assert full.value.cap == "max_sessions" and full.value.limit == 1

    lenet = Session.create(PRESETS["lenet5"].spec_with_seed(0))
    store, _ = _store(max_bytes=lenet.memory_bytes() - 1)
    with pytest.raises(StoreFull) as full:
        store.add(lenet)
    assert full.value.cap == "max_store_bytes"


def test_concurrent_adds_never_exceed_the_cap():
    store, _ = _store(max_sessions=5)
    sessions = [_tiny() for _ in range(20)]
    refused = []

    def add(session):
        try:
            store.add(session)
        except StoreFull:
            refused.append(session.id)

    threads = [threading.Thread(target=add, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store) == 5 and len(refused) == 15


def test_history_keeps_only_the_newest_entries():
    session = _tiny()
    for step in range(1, 16):
        session.history.append(step, float(step), 0.5, max_history=10)
    assert session.history.steps == list(range(6, 16)) and len(session.history.loss) == 10


def test_area_resize_to_28_is_the_identity_and_averages_otherwise():
    images = train_split()[0][:3]
    np.testing.assert_array_equal(fit_to_input(images, (1, 28, 28)), images)
    small = fit_to_input(images, (1, 7, 7))
    # 28 / 7 = 4: each output pixel is the mean of a 4x4 block
    np.testing.assert_allclose(small, images.reshape(3, 1, 7, 4, 7, 4).mean(axis=(3, 5)),
                               rtol=1e-6, atol=1e-7)
    for shape in [(1, 6, 6), (1, 5, 9), (3, 28, 28), (2, 40, 40)]:
        fitted = fit_to_input(images, shape)
        assert fitted.shape == (3, *shape) and fitted.dtype == np.float32
        np.testing.assert_allclose(fitted.mean(axis=(1, 2, 3)), images.mean(axis=(1, 2, 3)),
                                   rtol=1e-5)


def test_target_rules_for_each_loss():
    digits = np.array([0, 3, 7])
    binary = TargetRule("binary_cross_entropy", 1, positive_class=3)
    np.testing.assert_array_equal(binary.targets(digits), [[0.0], [1.0], [0.0]])
    assert binary.check_label(9) is None
    np.testing.assert_array_equal(binary.correct(np.array([[0.2], [0.7], [0.9]]), digits),
                                  [True, True, False])

    softmax = TargetRule("cross_entropy", 10, None)
    np.testing.assert_array_equal(softmax.targets(digits), digits)

    one_hot = TargetRule("mse", 10, None)
    assert one_hot.targets(digits).shape == (3, 10) and one_hot.targets(digits)[1, 3] == 1.0

    small = TargetRule("cross_entropy", 4, None)
    assert small.check_label(7) is not None and small.check_label(3) is None
    assert small.check_label(10) is not None
    labels = train_split()[1]
    assert (labels[training_pool(small)] < 4).all()
