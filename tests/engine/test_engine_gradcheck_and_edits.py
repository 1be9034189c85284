"""net.gradcheck and net.trace(edits=...): against PyTorch float64 autograd, with the network's
weights bit-identical afterwards, kinks named where the central difference meets a corner, and
every bad edit or target refused with a message naming it."""

import copy

import numpy as np
import pytest

from engine import Network
from engine_testkit import close, make_spec, random_input, random_targets, torch_trace

SMALL_LENET = [
    {"type": "conv", "filters": 3, "kernel": 3, "padding": 1, "activation": "relu"},
    {"type": "maxpool", "size": 2},
    {"type": "conv", "filters": 4, "kernel": 2, "padding": 2, "padding_mode": "circular",
     "operation": "convolution", "activation": "tanh"},
    {"type": "avgpool", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 5, "activation": "leaky_relu"},
    {"type": "dense", "units": 3, "activation": "softmax"},
]


def small_net(dtype="float64", loss="cross_entropy", seed=0):
    layers = copy.deepcopy(SMALL_LENET)
    if loss != "cross_entropy":
        layers[-1]["activation"] = "sigmoid" if loss == "binary_cross_entropy" else "identity"
    spec = make_spec((2, 6, 6), layers, loss=loss, dtype=dtype, seed=seed)
    net = Network.from_spec(spec)
    rng = np.random.default_rng(seed + 11)
    for params in net.params:  # non-zero biases: no unit sits exactly on a relu kink by accident
        if "b" in params:
            params["b"][...] = rng.normal(0.0, 0.3, size=params["b"].shape)
    return spec, net


def snapshot(net):
    return [{key: (value, value.tobytes()) for key, value in params.items()} for params in net.params]


def assert_unchanged(net, before):
    for params, saved in zip(net.params, before):
        assert set(params) == set(saved)
        for key, (array, data) in saved.items():
            assert params[key] is array, "the live array was replaced"
            assert params[key].tobytes() == data, "a weight changed"


TARGETS = [
    {"layer": 0, "param": "W", "index": [1, 0, 2, 1]},
    {"layer": 0, "param": "b", "index": [2]},
    {"layer": 2, "param": "W", "index": [3, 2, 0, 1]},
    {"layer": 2, "param": "b", "index": [0]},
    {"layer": 5, "param": "W", "index": [4, 7]},
    {"layer": 6, "param": "b", "index": [1]},
    {"input": [1, 3, 4]},
    {"input": [0, 0, 0]},
]


@pytest.mark.parametrize("number", range(len(TARGETS)))
def test_gradcheck_matches_pytorch_and_leaves_the_network_bit_identical(number):
    of = TARGETS[number]
    spec, net = small_net()
    rng = np.random.default_rng(4)
    x, y = random_input(spec, 3, rng), random_targets(spec, 3, rng)
    before = snapshot(net)
    result = net.gradcheck(x, y, of)
    assert_unchanged(net, before)
    assert {"analytic", "numeric", "abs_error", "rel_error", "epsilon", "loss_plus", "loss_minus"} <= set(result)

    reference = torch_trace(spec, net.params, x, y)
    if "input" in of:
        expected = reference.input_grad[(0, *of["input"])]
    else:
        expected = reference.layers[of["layer"]].params[of["param"]].grad.numpy()[tuple(of["index"])]
    close(result["analytic"], expected, 1e-7, "analytic")
    assert result["epsilon"] == 1e-5
    np.testing.assert_allclose(result["numeric"], expected, rtol=1e-5, atol=1e-9)
    assert result["abs_error"] == pytest.approx(abs(result["analytic"] - result["numeric"]), abs=1e-15)
    assert result["rel_error"] < 1e-4
    assert result["kink"] is None and result["kinks"] == []

    # loss_plus and loss_minus are PyTorch's loss with that one value moved by ±ε
    for sign, key in ((1, "loss_plus"), (-1, "loss_minus")):
        params = [{k: v.copy() for k, v in p.items()} for p in net.params]
        moved_x = x.copy()
        if "input" in of:
            moved_x[(0, *of["input"])] += sign * 1e-5
        else:
            params[of["layer"]][of["param"]][tuple(of["index"])] += sign * 1e-5
        close(result[key], torch_trace(spec, params, moved_x, y).loss, 1e-12, key)


def test_gradcheck_of_a_float32_network_computes_the_difference_in_float64():
    spec, net = small_net(dtype="float32", loss="mse")
    rng = np.random.default_rng(1)
    x, y = random_input(spec, 2, rng).astype(np.float32), random_targets(spec, 2, rng)
    before = snapshot(net)
    result = net.gradcheck(x, y, {"layer": 2, "param": "W", "index": [0, 1, 1, 0]}, epsilon=1e-4)
    assert_unchanged(net, before)
    assert result["dtype"] == "float32"
    # in float32 a difference of losses over 2e-4 would keep ~3 digits; in float64 it keeps ~10
    reference = torch_trace(spec, net.params, x.astype(np.float64), y)
    expected = reference.layers[2].params["W"].grad.numpy()[0, 1, 1, 0]
    np.testing.assert_allclose(result["numeric"], expected, rtol=1e-6)
    np.testing.assert_allclose(result["analytic"], expected, rtol=1e-4, atol=1e-7)


def test_trace_with_edits_equals_pytorch_with_those_weights_and_changes_nothing():
    spec, net = small_net()
    rng = np.random.default_rng(2)
    x, y = random_input(spec, 2, rng), random_targets(spec, 2, rng)
    edits = [{"layer": 0, "param": "W", "index": [0, 1, 2, 2], "value": 1.75},
             {"layer": 2, "param": "b", "index": [3], "value": -0.5},
             {"layer": 6, "param": "W", "index": (2, 4), "value": 3},
             {"layer": 0, "param": "W", "index": [0, 1, 2, 2], "value": -2.25}]  # the last edit wins
    before = snapshot(net)
    plain = net.trace(x, y)
    edited = net.trace(x, y, edits=edits)
    assert_unchanged(net, before)

    params = [{k: v.copy() for k, v in p.items()} for p in net.params]
    params[0]["W"][0, 1, 2, 2] = -2.25
    params[2]["b"][3] = -0.5
    params[6]["W"][2, 4] = 3.0
    reference = torch_trace(spec, params, x, y)
    close(edited.loss, reference.loss, 1e-7, "loss")
    close(edited.input_grad, reference.input_grad, 1e-7, "input_grad")
    for i, (ours, theirs) in enumerate(zip(edited.layers, reference.layers)):
        close(ours.z, theirs.z.detach().numpy(), 1e-7, f"layer {i} z")
        close(ours.a, theirs.a.detach().numpy(), 1e-7, f"layer {i} a")
        close(ours.delta, theirs.z.grad.numpy(), 1e-7, f"layer {i} delta")
        for key, tensor in theirs.params.items():
            close(ours.grads[key], tensor.grad.numpy(), 1e-7, f"layer {i} d{key}")
            np.testing.assert_array_equal(ours.params[key], params[i][key])  # the trace shows the edited weights
    assert edited.loss != plain.loss
    # a trace without edits afterwards is exactly the one before
    again = net.trace(x, y)
    assert again.loss == plain.loss
    np.testing.assert_array_equal(again.input_grad, plain.input_grad)


def test_edit_values_are_rounded_to_the_networks_dtype():
    spec, net = small_net(dtype="float32")
    rng = np.random.default_rng(0)
    x, y = random_input(spec, 1, rng).astype(np.float32), random_targets(spec, 1, rng)
    trace = net.trace(x, y, edits=[{"layer": 5, "param": "W", "index": [0, 0], "value": 0.1}])
    value = trace.layers[5].params["W"][0, 0]
    assert value.dtype == np.float32 and value == np.float32(0.1)


def test_gradcheck_with_edits_checks_the_edited_network():
    spec, net = small_net()
    rng = np.random.default_rng(6)
    x, y = random_input(spec, 2, rng), random_targets(spec, 2, rng)
    edits = [{"layer": 5, "param": "W", "index": [1, 3], "value": 2.5}]
    before = snapshot(net)
    result = net.gradcheck(x, y, {"layer": 5, "param": "W", "index": [1, 3]}, edits=edits)
    assert_unchanged(net, before)
    params = [{k: v.copy() for k, v in p.items()} for p in net.params]
    params[5]["W"][1, 3] = 2.5
    expected = torch_trace(spec, params, x, y).layers[5].params["W"].grad.numpy()[1, 3]
    close(result["analytic"], expected, 1e-7, "analytic")
    assert result["value"] == 2.5


def test_relu_unit_exactly_at_its_kink_is_named():
    """A dense relu unit with zero weights and bias sits at z = 0: the analytic gradient of its
    bias takes relu'(0) = 0, the central difference sees half the slope, and the answer says why."""
    spec = make_spec((1, 2, 2), [{"type": "flatten"}, {"type": "dense", "units": 3, "activation": "relu"},
                                 {"type": "dense", "units": 2, "activation": "identity"}], loss="mse")
    net = Network.from_spec(spec)
    net.params[1]["W"][1] = 0.0
    net.params[1]["b"][...] = [0.4, 0.0, -0.3]
    x = np.array([[[[0.5, -1.0], [2.0, 0.25]]]])
    y = np.array([[1.0, -1.0]])
    result = net.gradcheck(x, y, {"layer": 1, "param": "b", "index": [1]})
    assert result["analytic"] == 0.0
    reference = torch_trace(spec, net.params, x, y)
    assert reference.layers[1].params["b"].grad.numpy()[1] == 0.0  # PyTorch takes the same side
    grad_a = reference.layers[1].a.grad.numpy()[0, 1]
    # the average of the slopes 0 and grad_a (up to the O(ε) curvature of the loss on one side)
    assert result["numeric"] == pytest.approx(grad_a / 2, rel=1e-4)
    kink = result["kink"]
    assert kink["layer"] == 1 and kink["name"] == "dense1" and kink["kind"] == "relu"
    assert kink["count"] == 1 and tuple(kink["index"]) == (0, 1)
    assert kink["z_plus"] > 0 >= kink["z_minus"]
    assert "dense1" in kink["explanation"] and "relu" in kink["explanation"]
    assert result["kinks"] == [kink]


def test_max_pool_tie_within_epsilon_is_named():
    spec = make_spec((1, 2, 2), [{"type": "maxpool", "size": 2}, {"type": "flatten"},
                                 {"type": "dense", "units": 1, "activation": "identity"}], loss="mse")
    net = Network.from_spec(spec)
    net.params[2]["W"][...] = 2.0
    x = np.array([[[[0.7, 0.1], [0.7, -0.2]]]])  # (0, 0) and (1, 0) tie; the first wins
    result = net.gradcheck(x, np.array([[0.0]]), {"input": [0, 1, 0]})
    assert result["analytic"] == 0.0  # the delta goes to the winner (0, 0) only
    d_max = (2.0 * 0.7 - 0.0) * 2.0  # L = (w * max - y)^2 / 2: dL/dmax = (w * max - y) * w
    assert result["numeric"] == pytest.approx(d_max / 2, rel=1e-4)  # half: the two routes averaged
    kink = result["kink"]
    assert kink["kind"] == "maxpool" and kink["name"] == "maxpool1" and kink["layer"] == 0
    assert (kink["winner_plus"], kink["winner_minus"]) == (2, 0)  # flat row * W + col
    assert "tie" in kink["explanation"]
    # the other tied cell is the winner: its analytic gradient carries the whole of dL/dmax
    assert net.gradcheck(x, np.array([[0.0]]), {"input": [0, 0, 0]})["analytic"] == pytest.approx(d_max)


def test_gradcheck_epsilon_changes_only_the_numeric_side():
    spec, net = small_net(loss="mse")
    rng = np.random.default_rng(8)
    x, y = random_input(spec, 1, rng), random_targets(spec, 1, rng)
    of = {"layer": 0, "param": "W", "index": [2, 1, 0, 0]}
    small, large = net.gradcheck(x, y, of, epsilon=1e-6), net.gradcheck(x, y, of, epsilon=1e-3)
    assert small["analytic"] == large["analytic"]
    assert small["epsilon"] == 1e-6 and large["epsilon"] == 1e-3
    assert small["loss_plus"] != large["loss_plus"]


BAD_EDITS = {
    "layer out of range": ([{"layer": 7, "param": "W", "index": [0, 0], "value": 1.0}], ["edits[0]", "layer"]),
    "negative layer": ([{"layer": -1, "param": "W", "index": [0, 0], "value": 1.0}], ["edits[0]", "layer"]),
    "layer without parameters": ([{"layer": 1, "param": "W", "index": [0], "value": 1.0}],
                                 ["edits[0]", "layer 1", "maxpool1", "no weights"]),
    "unknown param": ([{"layer": 0, "param": "gamma", "index": [0], "value": 1.0}], ["edits[0]", "param", "gamma"]),
    "index out of range": ([{"layer": 0, "param": "W", "index": [3, 0, 0, 0], "value": 1.0}],
                           ["edits[0]", "out of range", "(3, 2, 3, 3)"]),
    "negative index": ([{"layer": 0, "param": "b", "index": [-1], "value": 1.0}], ["edits[0]", "out of range"]),
    "index of the wrong length": ([{"layer": 0, "param": "W", "index": [0, 0], "value": 1.0}],
                                  ["edits[0]", "4 integer"]),
    "index of floats": ([{"layer": 0, "param": "b", "index": [0.0], "value": 1.0}], ["edits[0]", "index"]),
    "NaN value": ([{"layer": 0, "param": "b", "index": [0], "value": float("nan")}], ["edits[0]", "finite"]),
    "infinite value": ([{"layer": 0, "param": "b", "index": [0], "value": float("inf")}], ["edits[0]", "finite"]),
    "text value": ([{"layer": 0, "param": "b", "index": [0], "value": "1"}], ["edits[0]", "finite"]),
    "missing key": ([{"layer": 0, "param": "b", "index": [0]}], ["edits[0]", "value"]),
    "second edit bad": ([{"layer": 0, "param": "b", "index": [0], "value": 1.0},
                         {"layer": 6, "param": "b", "index": [3], "value": 1.0}], ["edits[1]", "out of range"]),
    "not a list": ({"layer": 0}, ["edits", "list"]),
}


@pytest.mark.parametrize("case", sorted(BAD_EDITS))
def test_bad_edits_are_refused_naming_the_edit_and_changing_nothing(case):
    edits, words = BAD_EDITS[case]
    spec, net = small_net()
    rng = np.random.default_rng(0)
    x, y = random_input(spec, 1, rng), random_targets(spec, 1, rng)
    before = snapshot(net)
    for call in (lambda: net.trace(x, y, edits=edits),
                 lambda: net.gradcheck(x, y, {"input": [0, 0, 0]}, edits=edits)):
        with pytest.raises(ValueError) as error:
            call()
        for word in words:
            assert word in str(error.value), (word, str(error.value))
    assert_unchanged(net, before)


BAD_TARGETS = {
    "layer without parameters": ({"layer": 3, "param": "W", "index": [0]}, ["of", "layer 3", "avgpool1"]),
    "layer out of range": ({"layer": 9, "param": "b", "index": [0]}, ["of", "layer"]),
    "index out of range": ({"layer": 5, "param": "W", "index": [5, 0]}, ["of", "out of range", "(5, 36)"]),
    "input index out of range": ({"input": [0, 6, 0]}, ["of", "out of range", "(2, 6, 6)"]),
    "input index too short": ({"input": [0, 1]}, ["of", "3 integer"]),
    "unknown shape of target": ({"weight": 1}, ["of", "input"]),
    "not an object": ([0, 0, 0], ["of"]),
}


@pytest.mark.parametrize("case", sorted(BAD_TARGETS))
def test_bad_gradcheck_targets_are_refused_naming_the_problem(case):
    of, words = BAD_TARGETS[case]
    spec, net = small_net()
    rng = np.random.default_rng(0)
    x, y = random_input(spec, 1, rng), random_targets(spec, 1, rng)
    with pytest.raises(ValueError) as error:
        net.gradcheck(x, y, of)
    for word in words:
        assert word in str(error.value), (word, str(error.value))


@pytest.mark.parametrize("epsilon", [0, -1e-5, float("nan"), float("inf"), "1e-5", True])
def test_bad_epsilon_is_refused(epsilon):
    spec, net = small_net()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="epsilon"):
        net.gradcheck(random_input(spec, 1, rng), random_targets(spec, 1, rng), {"input": [0, 0, 0]}, epsilon)


def test_gradcheck_input_perturbs_sample_zero_only():
    spec, net = small_net(loss="mse")
    rng = np.random.default_rng(3)
    x, y = random_input(spec, 2, rng), random_targets(spec, 2, rng)
    x_before = x.copy()
    result = net.gradcheck(x, y, {"input": [1, 2, 2]})
    np.testing.assert_array_equal(x, x_before)  # the caller's input is not written either
    expected = torch_trace(spec, net.params, x, y).input_grad[0, 1, 2, 2]
    close(result["analytic"], expected, 1e-7)
    assert result["of"] == {"input": (1, 2, 2)}
    assert all(type(result[key]) is float for key in ("analytic", "numeric", "loss_plus", "loss_minus"))


def test_an_edit_value_beyond_the_dtype_range_is_refused():
    spec, net = small_net(dtype="float32")
    rng = np.random.default_rng(0)
    x, y = random_input(spec, 1, rng).astype(np.float32), random_targets(spec, 1, rng)
    with pytest.raises(ValueError, match=r"edits\[0\].*float32"):
        net.trace(x, y, edits=[{"layer": 0, "param": "b", "index": [0], "value": 1e39}])
    net.trace(x, y, edits=[{"layer": 0, "param": "b", "index": [0], "value": 3e38}])  # still a float32


def test_a_float32_trace_is_the_same_before_and_after_a_gradcheck():
    """gradcheck runs the same layers in float64: the scratch memory they share with the network's
    float32 passes must not leak one dtype's bytes into the other's buffers."""
    spec, net = small_net(dtype="float32", loss="mse")
    rng = np.random.default_rng(9)
    x, y = random_input(spec, 2, rng).astype(np.float32), random_targets(spec, 2, rng)
    first = net.trace(x, y)
    net.gradcheck(x, y, {"layer": 0, "param": "W", "index": [0, 0, 1, 1]})
    again = net.trace(x, y)
    assert again.loss == first.loss
    np.testing.assert_array_equal(again.input_grad, first.input_grad)
    for ours, before in zip(again.layers, first.layers):
        for key in ours.grads:
            np.testing.assert_array_equal(ours.grads[key], before.grads[key])
