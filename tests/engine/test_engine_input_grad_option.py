"""trace(..., need_input_grad=False): the training loop's trace, without dL/dx of the first layer.

Everything it keeps is checked against PyTorch autograd (float64), and it must equal the default
trace's numbers exactly (the same kernels, only the first layer's input gradient left out), for
every kind of first layer and each conv form (wide rows, batch innermost, circular, convolution).
"""

import numpy as np
import pytest

from engine import Network

from engine_testkit import LENET5_LAYERS, close, make_spec, random_input, random_targets, torch_trace

CONV = {"type": "conv", "filters": 3, "kernel": 3, "stride": 1, "padding": 1, "activation": "relu"}
TAIL = [{"type": "flatten"}, {"type": "dense", "units": 4, "activation": "softmax"}]

FIRST_LAYERS = {
    "lenet5": ((1, 28, 28), LENET5_LAYERS),
    "conv wide rows": ((2, 8, 8), [CONV, *TAIL]),
    "conv batch innermost (stride 2)": ((2, 9, 9), [dict(CONV, stride=2), *TAIL]),
    "conv circular": ((2, 6, 5), [dict(CONV, padding_mode="circular"), *TAIL]),
    "conv true convolution": ((2, 6, 6), [dict(CONV, operation="convolution"), *TAIL]),
    "maxpool": ((2, 6, 6), [{"type": "maxpool", "size": 2, "stride": 2}, *TAIL]),
    "avgpool": ((2, 6, 6), [{"type": "avgpool", "size": 2, "stride": 2}, *TAIL]),
    "flatten": ((2, 4, 4), TAIL),
    "flatten then dense": ((1, 2, 3), [{"type": "flatten"}, {"type": "dense", "units": 6, "activation": "tanh"},
                                       {"type": "dense", "units": 3, "activation": "softmax"}]),
}


@pytest.mark.parametrize("case", sorted(FIRST_LAYERS))
def test_trace_without_input_grad_matches_pytorch_and_the_full_trace(case):
    input_shape, layers = FIRST_LAYERS[case]
    spec = make_spec(input_shape, layers)
    net = Network.from_spec(spec)
    rng = np.random.default_rng(3)
    x, y = random_input(spec, 4, rng), random_targets(spec, 4, rng)

    lean = net.trace(x, y, need_input_grad=False)
    full = net.trace(x, y)
    reference = torch_trace(spec, net.params, x, y)

    assert lean.input_grad is None
    assert full.input_grad is not None
    close(full.input_grad, reference.input_grad, what="input_grad of the default trace")
    close(lean.loss, reference.loss, what="loss")
    assert lean.loss == full.loss
    np.testing.assert_array_equal(lean.sample_losses, full.sample_losses)
    for i, (ours, default, theirs) in enumerate(zip(lean.layers, full.layers, reference.layers)):
        where = f"layer {i} ({theirs.type})"
        close(ours.z, theirs.z.detach().numpy(), what=f"{where} z")
        close(ours.a, theirs.a.detach().numpy(), what=f"{where} a")
        close(ours.delta, theirs.z.grad.numpy(), what=f"{where} delta")
        np.testing.assert_array_equal(ours.delta, default.delta, err_msg=where)
        assert set(ours.grads) == set(default.grads), where
        for key, grad in ours.grads.items():
            close(grad, theirs.params[key].grad.numpy(), what=f"{where} d{key}")
            np.testing.assert_array_equal(grad, default.grads[key], err_msg=f"{where} d{key}")


def test_trace_without_input_grad_in_float32_equals_the_full_trace():
    spec = make_spec((1, 28, 28), LENET5_LAYERS, dtype="float32")
    net = Network.from_spec(spec)
    rng = np.random.default_rng(5)
    x, y = random_input(spec, 64, rng, dtype=np.float32), random_targets(spec, 64, rng)
    lean, full = net.trace(x, y, need_input_grad=False), net.trace(x, y)
    assert lean.input_grad is None and full.input_grad.shape == x.shape
    for ours, default in zip(lean.layers, full.layers):
        for key, grad in ours.grads.items():
            np.testing.assert_array_equal(grad, default.grads[key])
