"""Input checks of forward/trace, numerical stability, dtypes and seeded initialisation."""

import numpy as np
import pytest

from engine import Network, SpecError
from engine_testkit import LENET5_LAYERS, make_spec

# no "dtype" key: test_float32_is_the_default_dtype relies on its absence
LENET5 = {"input_shape": [1, 28, 28], "layers": LENET5_LAYERS, "loss": "cross_entropy", "seed": 0}

SMALL = make_spec([2, 6, 6], [{"type": "conv", "filters": 3, "kernel": 3, "activation": "relu"},
                              {"type": "maxpool", "size": 2}, {"type": "flatten"},
                              {"type": "dense", "units": 4, "activation": "softmax"}], dtype="float32")


@pytest.fixture
def net():
    return Network.from_spec(SMALL)


def good_x(n=2):
    return np.random.default_rng(0).normal(size=(n, 2, 6, 6)).astype(np.float32)


# --- wrong inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 6, 6), (1, 2, 6, 7), (1, 1, 6, 6), (1, 2, 6, 6, 1), (0, 2, 6, 6), (6, 6)])
@pytest.mark.parametrize("method", ["forward", "trace"])
def test_wrong_input_shape_raises_value_error_naming_the_expected_shape(net, shape, method):
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError) as info:
        if method == "forward":
            net.forward(x)
        else:
            net.trace(x, np.zeros(shape[0] if len(shape) == 4 else 1, dtype=np.int64))
    assert not isinstance(info.value, SpecError)
    assert "(N, 2, 6, 6)" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", ["forward", "trace"])
def test_non_finite_input_raises_value_error(net, bad, method):
    x = good_x()
    x[1, 0, 3, 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        if method == "forward":
            net.forward(x)
        else:
            net.trace(x, np.array([0, 1]))


def test_a_batch_whose_conv_windows_would_exhaust_memory_is_refused_before_any_work():
    spec = make_spec([1, 512, 512], [{"type": "conv", "filters": 1, "kernel": 5, "activation": "relu"},
                                     {"type": "flatten"}, {"type": "dense", "units": 2, "activation": "softmax"}],
                     dtype="float32")
    net = Network.from_spec(spec)
    x = np.zeros((100, 1, 512, 512), np.float32)  # 100 samples * 25 * 508 * 508 window values, twice
    with pytest.raises(ValueError, match="GiB"):
        net.forward(x)
    assert net.forward(x[:1]).shape == (1, 2)


@pytest.mark.parametrize("x", [[[["a"]]], "digits", None, {"x": 1}])
def test_non_numeric_input_raises_value_error(net, x):
    with pytest.raises(ValueError):
        net.forward(x)


@pytest.mark.parametrize("y, words", [
    (np.array([0, 1, 2]), "shape"),
    (np.array([[0], [1]]), "shape"),
    (np.array([0, 4]), "0..3"),
    (np.array([-1, 0]), "0..3"),
    (np.array([0.0, 1.0]), "integers"),
])
def test_trace_rejects_labels_of_wrong_shape_type_or_range(net, y, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        net.trace(good_x(), y)


def test_trace_rejects_targets_of_wrong_shape_for_mse_and_bce():
    layers = [{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "sigmoid"}]
    for loss in ("mse", "binary_cross_entropy"):
        net = Network.from_spec(make_spec([1, 2, 2], layers, loss=loss))
        x = np.ones((2, 1, 2, 2))
        with pytest.raises(ValueError, match=r"\(2, 3\)"):
            net.trace(x, np.ones((2, 4)))
        with pytest.raises(ValueError, match="NaN or infinite"):
            net.trace(x, np.array([[0.5, np.nan, 0.5], [0.5, 0.5, 0.5]]))
    net = Network.from_spec(make_spec([1, 2, 2], layers, loss="binary_cross_entropy"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        net.trace(np.ones((1, 1, 2, 2)), np.array([[0.5, 1.5, 0.0]]))


def test_a_failed_trace_changes_nothing(net):
    before = [{k: v.copy() for k, v in p.items()} for p in net.params]
    with pytest.raises(ValueError):
        net.trace(good_x(), np.array([0, 9]))
    for p, q in zip(net.params, before):
        for key in p:
            np.testing.assert_array_equal(p[key], q[key])


# --- stability ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_is_stable_for_huge_logits(dtype):
    spec = make_spec([1, 1, 3], [{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "softmax"}],
                     dtype=dtype)
    net = Network.from_spec(spec)
    net.params[1]["W"][...] = np.eye(3)
    net.params[1]["b"][...] = 0
    x = np.array([[[[1e4, 0.0, -1e4]]], [[[-3e4, 3e4, 0.0]]]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        trace = net.trace(x, np.array([1, 1]))
        forward = net.forward(x)
    # the wrong class of sample 0 is 1e4 behind the winner: L = (1e4 + 0) / 2
    assert trace.loss == pytest.approx(1e4 / 2, rel=1e-6)
    assert np.isfinite(forward).all() and np.isfinite(trace.input_grad).all()
    np.testing.assert_allclose(forward.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(trace.layers[1].delta, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_binary_cross_entropy_is_stable_for_huge_logits(dtype):
    spec = make_spec([1, 1, 2], [{"type": "flatten"}, {"type": "dense", "units": 2, "activation": "sigmoid"}],
                     loss="binary_cross_entropy", dtype=dtype)
    net = Network.from_spec(spec)
    net.params[1]["W"][...] = np.eye(2)
    net.params[1]["b"][...] = 0
    x = np.array([[[[1000.0, -1000.0]]]])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        trace = net.trace(x, np.array([[0.0, 0.0]]))
    # sigmoid(1000) with target 0 costs softplus(1000) = 1000; sigmoid(-1000) with target 0 costs ~0
    assert trace.loss == pytest.approx(1000.0, rel=1e-6)
    np.testing.assert_allclose(trace.layers[1].a, [[1.0, 0.0]])
    np.testing.assert_allclose(trace.layers[1].delta, [[1.0, 0.0]], atol=1e-6)
    assert np.isfinite(trace.input_grad).all()


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_saturating_activations_stay_finite_without_warnings_for_huge_inputs(activation):
    spec = make_spec([1, 1, 4], [{"type": "flatten"}, {"type": "dense", "units": 4, "activation": activation},
                                 {"type": "dense", "units": 2, "activation": "softmax"}], dtype="float32")
    net = Network.from_spec(spec)
    net.params[1]["W"][...] = np.eye(4)
    x = np.array([[[[1e30, -1e30, 3e38, -3e38]]]], dtype=np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        trace = net.trace(x, np.array([0]))
    low = 0.0 if activation == "sigmoid" else -1.0
    np.testing.assert_array_equal(trace.layers[1].a, [[1.0, low, 1.0, low]])
    assert np.isfinite(trace.loss) and np.isfinite(trace.input_grad).all()


# --- dtypes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_trace_array_has_the_network_dtype(dtype):
    spec = dict(LENET5, dtype=dtype)
    net = Network.from_spec(spec)
    x = np.random.default_rng(0).uniform(size=(3, 1, 28, 28))  # float64 in, whatever the network
    trace = net.trace(x, np.array([1, 2, 3]))
    want = np.dtype(dtype)
    assert net.dtype == want
    assert all(p.dtype == want for layer in net.params for p in layer.values())
    assert trace.input_grad.dtype == want
    assert net.forward(x).dtype == want
    assert isinstance(trace.loss, float)
    for record in trace.layers:
        arrays = [record.input, record.z, record.a, record.delta, *record.grads.values()]
        assert [a.dtype for a in arrays] == [want] * len(arrays), record.name


def test_float32_is_the_default_dtype():
    net = Network.from_spec({k: v for k, v in LENET5.items()})
    assert net.dtype == np.float32
    assert net.params[0]["W"].dtype == np.float32


def test_float32_and_float64_networks_with_one_seed_agree_to_float32_precision():
    net32 = Network.from_spec(dict(LENET5, dtype="float32"))
    net64 = Network.from_spec(dict(LENET5, dtype="float64"))
    x = np.random.default_rng(1).uniform(size=(4, 1, 28, 28))
    y = np.array([0, 3, 5, 9])
    t32, t64 = net32.trace(x, y), net64.trace(x, y)
    assert t32.loss == pytest.approx(t64.loss, rel=1e-5)
    np.testing.assert_allclose(t32.layers[0].grads["W"], t64.layers[0].grads["W"], rtol=1e-3, atol=1e-6)


# --- seeded initialisation ------------------------------------------------------------------------

def test_same_seed_gives_identical_weights_and_other_seeds_differ():
    a, b = Network.from_spec(LENET5), Network.from_spec(LENET5)
    c = Network.from_spec(dict(LENET5, seed=1))
    for pa, pb, pc in zip(a.params, b.params, c.params):
        for key in pa:
            np.testing.assert_array_equal(pa[key], pb[key])
    assert not np.array_equal(a.params[0]["W"], c.params[0]["W"])


def test_biases_start_at_zero_and_pool_and_flatten_have_no_params():
    net = Network.from_spec(LENET5)
    for spec_layer, params in zip(LENET5["layers"], net.params):
        if spec_layer["type"] in ("conv", "dense"):
            assert set(params) == {"W", "b"}
            assert not params["b"].any()
        else:
            assert params == {}


def test_param_shapes_follow_the_conventions():
    net = Network.from_spec(LENET5)
    shapes = [{k: v.shape for k, v in p.items()} for p in net.params]
    assert shapes[0] == {"W": (6, 1, 5, 5), "b": (6,)}
    assert shapes[2] == {"W": (16, 6, 5, 5), "b": (16,)}
    assert shapes[5] == {"W": (120, 400), "b": (120,)}
    assert shapes[7] == {"W": (10, 84), "b": (10,)}


@pytest.mark.parametrize("activation, scheme", [
    ("relu", "he"), ("leaky_relu", "he"), ("tanh", "xavier"), ("sigmoid", "xavier"), ("identity", "xavier"),
])
@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_initial_weight_scale_is_he_for_relu_like_and_xavier_otherwise(kind, activation, scheme):
    if kind == "conv":
        layers = [{"type": "conv", "filters": 64, "kernel": 3, "activation": activation}, {"type": "flatten"}]
        fan_in, fan_out = 32 * 9, 64 * 9
    else:
        layers = [{"type": "flatten"}, {"type": "dense", "units": 256, "activation": activation}]
        fan_in, fan_out = 32 * 9, 256
    net = Network.from_spec(make_spec([32, 3, 3], layers, loss="mse", seed=7))
    w = net.params[0 if kind == "conv" else 1]["W"]
    expected = np.sqrt(2.0 / fan_in) if scheme == "he" else np.sqrt(2.0 / (fan_in + fan_out))
    assert abs(w.mean()) < 0.1 * expected
    assert w.std() == pytest.approx(expected, rel=0.1)


def test_forward_equals_the_traced_output_and_is_deterministic():
    net = Network.from_spec(LENET5)
    x = np.random.default_rng(2).uniform(size=(3, 1, 28, 28)).astype(np.float32)
    out = net.forward(x)
    np.testing.assert_array_equal(out, net.forward(x))
    np.testing.assert_allclose(out, net.trace(x, np.array([0, 1, 2])).output, rtol=1e-6)
    assert out.shape == (3, 10)


def test_a_trace_keeps_its_own_copy_of_the_input_and_targets():
    spec = make_spec([1, 3, 3], [{"type": "flatten"}, {"type": "dense", "units": 2, "activation": "sigmoid"}],
                     loss="mse", dtype="float64")
    net = Network.from_spec(spec)
    x = np.ones((1, 1, 3, 3))
    y = np.zeros((1, 2))
    trace = net.trace(x, y)
    x[...] = 7.0
    y[...] = 7.0
    assert (trace.layers[0].input == 1.0).all() and (trace.x == 1.0).all() and (trace.y == 0.0).all()


@pytest.mark.parametrize("loss, activation", [("cross_entropy", "softmax"),
                                              ("binary_cross_entropy", "sigmoid"), ("mse", "tanh")])
def test_forward_only_batch_loss_equals_the_trace_loss_and_checks_its_inputs(loss, activation):
    net = Network.from_spec({"input_shape": [2, 5, 5], "loss": loss, "dtype": "float64", "layers": [
        {"type": "conv", "filters": 3, "kernel": 3, "activation": "relu"}, {"type": "flatten"},
        {"type": "dense", "units": 4, "activation": activation}]})
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 2, 5, 5))
    y = rng.integers(0, 4, size=5) if loss == "cross_entropy" else rng.random((5, 4))
    assert net.batch_loss(x, y) == pytest.approx(net.trace(x, y).loss, rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        net.batch_loss(x[:, :1], y)
