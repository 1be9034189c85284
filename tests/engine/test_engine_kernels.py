"""The kernels: the notes' worked examples with explicit numbers, naive forms equal to fast forms,
and both equal to PyTorch."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine import Network, kernels
from engine.scratch import Scratch

# --- worked example 1: a 3x3 input X and a 2x2 filter F, stride 1, no padding -------------------

X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
FILTER = np.array([[1.0, 2.0], [3.0, 4.0]])
DL_DO = np.array([[1.0, 0.0], [2.0, -1.0]])
# Worked by hand from the notes' formulas:
# O = correlate(X, F):                O[0,0] = 1*1 + 2*2 + 4*3 + 5*4 = 37, ...
O_BY_HAND = np.array([[37.0, 47.0], [67.0, 77.0]])
# dL/dF = correlate(X, dL/dO):        dF[0,0] = 1*1 + 2*0 + 4*2 + 5*(-1) = 4, ...
DL_DF_BY_HAND = np.array([[4.0, 6.0], [10.0, 12.0]])
# dL/dX = full convolution of rot180(F) with dL/dO:  dX[1,1] = 1*4 + 0*3 + 2*2 + (-1)*1 = 7, ...
DL_DX_BY_HAND = np.array([[1.0, 2.0, 0.0], [5.0, 7.0, -2.0], [6.0, 5.0, -4.0]])

CONV_FORMS = [(kernels.conv_forward_naive, kernels.conv_backward_naive),
              (kernels.conv_forward, kernels.conv_backward)]


def as_nchw(plane):
    return plane[None, None, :, :]


def correlate_valid(x, k):
    """Plain 2-D valid cross-correlation, written independently of the engine."""
    out = np.zeros((x.shape[0] - k.shape[0] + 1, x.shape[1] - k.shape[1] + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(x[i: i + k.shape[0], j: j + k.shape[1]] * k)
    return out


def test_hand_worked_numbers_satisfy_the_notes_formulas():
    np.testing.assert_array_equal(correlate_valid(X, FILTER), O_BY_HAND)
    np.testing.assert_array_equal(correlate_valid(X, DL_DO), DL_DF_BY_HAND)
    full = np.pad(DL_DO, 1)
    np.testing.assert_array_equal(correlate_valid(full, FILTER[::-1, ::-1]), DL_DX_BY_HAND)


@pytest.mark.parametrize("forward, backward", CONV_FORMS, ids=["naive", "fast"])
def test_conv_worked_example_3x3_input_2x2_filter(forward, backward):
    w = as_nchw(FILTER)
    b = np.zeros(1)
    z = forward(as_nchw(X), w, b, (1, 1), (0, 0))
    np.testing.assert_array_equal(z, as_nchw(O_BY_HAND))
    dx, dw, db = backward(as_nchw(DL_DO), as_nchw(X), w, (1, 1), (0, 0))
    np.testing.assert_array_equal(dw, as_nchw(DL_DF_BY_HAND))
    np.testing.assert_array_equal(dx, as_nchw(DL_DX_BY_HAND))
    np.testing.assert_array_equal(db, [DL_DO.sum()])


def test_conv_worked_example_through_the_network_trace():
    spec = {"input_shape": [1, 3, 3], "dtype": "float64", "loss": "mse",
            "layers": [{"type": "conv", "filters": 1, "kernel": 2, "activation": "identity"},
                       {"type": "flatten"}]}
    net = Network.from_spec(spec)
    net.params[0]["W"][...] = as_nchw(FILTER)
    net.params[0]["b"][...] = 0.0
    # mse with identity output and N = 1: delta = a - y, so y = O - dL/dO makes the delta dL/dO.
    y = (O_BY_HAND - DL_DO).reshape(1, 4)
    trace = net.trace(as_nchw(X), y)
    conv = trace.layers[0]
    np.testing.assert_array_equal(conv.z, as_nchw(O_BY_HAND))
    np.testing.assert_array_equal(conv.delta, as_nchw(DL_DO))
    np.testing.assert_array_equal(conv.grads["W"], as_nchw(DL_DF_BY_HAND))
    np.testing.assert_array_equal(conv.grads["b"], [DL_DO.sum()])
    np.testing.assert_array_equal(trace.input_grad, as_nchw(DL_DX_BY_HAND))
    assert trace.loss == pytest.approx(0.5 * np.sum(DL_DO ** 2))


# --- worked example 2: the 4x4 max-pool, size 2, stride 2 ---------------------------------------

POOL_INPUT = np.array([[1.0, 2.0, 3.0, 4.0], [8.0, 7.0, 5.0, 6.0], [9.0, 11.0, 12.0, 10.0], [10.0, 7.0, 13.0, 9.0]])
POOL_OUTPUT = np.array([[8.0, 6.0], [11.0, 13.0]])
# winners at (1,0), (1,3), (2,1), (3,2): flat index row * 4 + col
POOL_ARGMAX = np.array([[4, 7], [9, 14]])
MAXPOOL_FORMS = [(kernels.maxpool_forward_naive, kernels.maxpool_backward_naive),
                 (kernels.maxpool_forward, kernels.maxpool_backward)]
AVGPOOL_FORMS = [(kernels.avgpool_forward_naive, kernels.avgpool_backward_naive),
                 (kernels.avgpool_forward, kernels.avgpool_backward)]


@pytest.mark.parametrize("forward, backward", MAXPOOL_FORMS, ids=["naive", "fast"])
def test_maxpool_worked_example_values_winners_and_routing(forward, backward):
    out, argmax = forward(as_nchw(POOL_INPUT), (2, 2), (2, 2))
    np.testing.assert_array_equal(out, as_nchw(POOL_OUTPUT))
    np.testing.assert_array_equal(argmax, as_nchw(POOL_ARGMAX))
    dout = as_nchw(np.array([[1.0, 2.0], [3.0, 4.0]]))
    dx = backward(dout, argmax, (1, 1, 4, 4))
    expected = np.zeros((4, 4))
    expected[1, 0], expected[1, 3], expected[2, 1], expected[3, 2] = 1.0, 2.0, 3.0, 4.0
    np.testing.assert_array_equal(dx, as_nchw(expected))


def test_maxpool_worked_example_through_the_network_trace():
    spec = {"input_shape": [1, 4, 4], "dtype": "float64", "loss": "mse",
            "layers": [{"type": "maxpool", "size": 2, "stride": 2}, {"type": "flatten"}]}
    trace = Network.from_spec(spec).trace(as_nchw(POOL_INPUT), (POOL_OUTPUT - [[1.0, 2.0], [3.0, 4.0]]).reshape(1, 4))
    pool = trace.layers[0]
    np.testing.assert_array_equal(pool.z, as_nchw(POOL_OUTPUT))
    np.testing.assert_array_equal(pool.argmax, as_nchw(POOL_ARGMAX))
    winners = np.zeros((4, 4))
    winners.flat[POOL_ARGMAX.ravel()] = [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(trace.input_grad, as_nchw(winners))
    assert trace.layers[1].argmax is None


@pytest.mark.parametrize("forward, backward", MAXPOOL_FORMS, ids=["naive", "fast"])
def test_maxpool_ties_go_to_the_first_input_in_row_major_window_order(forward, backward):
    plane = np.array([[5.0, 5.0, 1.0, 7.0], [5.0, 5.0, 7.0, 2.0], [0.0, 3.0, 4.0, 4.0], [3.0, 3.0, 4.0, 4.0]])
    out, argmax = forward(as_nchw(plane), (2, 2), (2, 2))
    np.testing.assert_array_equal(out, as_nchw(np.array([[5.0, 7.0], [3.0, 4.0]])))
    np.testing.assert_array_equal(argmax, as_nchw(np.array([[0, 3], [9, 10]])))
    dx = backward(as_nchw(np.ones((2, 2))), argmax, (1, 1, 4, 4))
    assert dx.sum() == 4.0
    assert dx[0, 0, 0, 0] == 1.0 and dx[0, 0, 0, 3] == 1.0 and dx[0, 0, 2, 1] == 1.0 and dx[0, 0, 2, 2] == 1.0


@pytest.mark.parametrize("forward, backward", MAXPOOL_FORMS, ids=["naive", "fast"])
def test_maxpool_overlapping_windows_accumulate_deltas_on_a_shared_winner(forward, backward):
    plane = np.array([[0.0, 1.0, 0.0], [2.0, 9.0, 3.0], [0.0, 4.0, 0.0]])
    out, argmax = forward(as_nchw(plane), (2, 2), (1, 1))
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), 9.0))
    np.testing.assert_array_equal(argmax, np.full((1, 1, 2, 2), 4))
    dx = backward(as_nchw(np.array([[1.0, 2.0], [3.0, 4.0]])), argmax, (1, 1, 3, 3))
    expected = np.zeros((3, 3))
    expected[1, 1] = 10.0
    np.testing.assert_array_equal(dx, as_nchw(expected))
    if backward is kernels.maxpool_backward:  # told the window, it must still add, not store
        dx = backward(as_nchw(np.array([[1.0, 2.0], [3.0, 4.0]])), argmax, (1, 1, 3, 3), size=(2, 2), stride=(1, 1))
        np.testing.assert_array_equal(dx, as_nchw(expected))


@pytest.mark.parametrize("forward, backward", AVGPOOL_FORMS, ids=["naive", "fast"])
def test_avgpool_worked_example_spreads_delta_over_the_window(forward, backward):
    out = forward(as_nchw(POOL_INPUT), (2, 2), (2, 2))
    np.testing.assert_array_equal(out, as_nchw(np.array([[4.5, 4.5], [9.25, 11.0]])))
    dout = as_nchw(np.array([[4.0, 8.0], [12.0, 16.0]]))
    dx = backward(dout, (1, 1, 4, 4), (2, 2), (2, 2))
    expected = np.array([[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], [3.0, 3.0, 4.0, 4.0], [3.0, 3.0, 4.0, 4.0]])
    np.testing.assert_array_equal(dx, as_nchw(expected))


@pytest.mark.parametrize("forward, backward", AVGPOOL_FORMS, ids=["naive", "fast"])
def test_avgpool_overlapping_and_rectangular_windows_share_delta_by_window_area(forward, backward):
    dout = np.ones((1, 1, 2, 2))
    dx = backward(dout, (1, 1, 3, 4), (2, 3), (1, 1))
    # each window covers 6 inputs; an input gets 1/6 from every window that covers it
    coverage = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [1, 2, 2, 1]])
    np.testing.assert_allclose(dx, as_nchw(coverage / 6.0), rtol=1e-15)


# --- naive equals fast equals PyTorch over many shapes -------------------------------------------

CONV_SHAPES = [
    # (N, C, H, W, F, HH, WW, stride, padding)
    (1, 1, 5, 5, 1, 3, 3, (1, 1), (0, 0)),
    (2, 3, 7, 7, 4, 3, 3, (2, 2), (1, 1)),
    (3, 2, 6, 8, 3, 2, 3, (1, 1), (0, 1)),
    (2, 2, 9, 7, 2, 3, 2, (3, 1), (0, 0)),
    (1, 4, 4, 4, 2, 4, 4, (1, 1), (0, 0)),
    (2, 3, 5, 5, 2, 5, 5, (1, 1), (2, 2)),
    (2, 1, 7, 5, 3, 1, 1, (2, 2), (0, 0)),
    (2, 2, 8, 9, 5, 3, 3, (1, 3), (1, 0)),
    (1, 2, 6, 6, 2, 4, 2, (2, 2), (1, 0)),
]


def torch_conv(x, w, b, delta, stride, padding):
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    z = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    z.backward(torch.tensor(delta))
    return z.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def assert_fast_conv_equals_naive_and_torch(rng, shape) -> list:
    """The fast conv's forward and backward (with dx and without) on random x, w, b and delta of
    `shape` equal the naive form and PyTorch, twice: the second time on the scratch the first left.
    Returns what the forward handed back for the backward (its im2col matrix, or None) each time."""
    n, c, h, w_, f, hh, ww, stride, padding = shape
    x = rng.normal(size=(n, c, h, w_))
    w = rng.normal(size=(f, c, hh, ww))
    b = rng.normal(size=f)
    z_naive = kernels.conv_forward_naive(x, w, b, stride, padding)
    delta = rng.normal(size=z_naive.shape)
    z_torch, dx_torch, dw_torch, db_torch = torch_conv(x, w, b, delta, stride, padding)
    take = Scratch().taker(0)
    handed_back = []
    for _ in range(2):
        z, cols = kernels.conv_forward(x, w, b, stride, padding, return_cols=True, scratch=take)
        handed_back.append(cols if cols is None else cols.shape)
        np.testing.assert_allclose(z, z_naive, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(z, z_torch, rtol=1e-10, atol=1e-12)
        dx, dw, db = kernels.conv_backward(delta, x, w, stride, padding, cols=cols, scratch=take)
        np.testing.assert_allclose(dx, dx_torch, rtol=1e-10, atol=1e-11)
        np.testing.assert_allclose(dw, dw_torch, rtol=1e-10, atol=1e-11)
        np.testing.assert_allclose(db, db_torch, rtol=1e-10, atol=1e-11)
        no_dx, dw_only, db_only = kernels.conv_backward(delta, x, w, stride, padding, need_dx=False, scratch=take)
        assert no_dx is None
        np.testing.assert_allclose(dw_only, dw_torch, rtol=1e-10, atol=1e-11)
        np.testing.assert_allclose(db_only, db_torch, rtol=1e-10, atol=1e-11)
    return handed_back


@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_conv_naive_fast_and_torch_agree(shape):
    n, c, h, w_, f, hh, ww, stride, padding = shape
    rng = np.random.default_rng(sum(shape[:7]))
    x = rng.normal(size=(n, c, h, w_))
    w = rng.normal(size=(f, c, hh, ww))
    b = rng.normal(size=f)
    z_naive = kernels.conv_forward_naive(x, w, b, stride, padding)
    z_fast = kernels.conv_forward(x, w, b, stride, padding)
    delta = rng.normal(size=z_naive.shape)
    z_torch, dx_torch, dw_torch, db_torch = torch_conv(x, w, b, delta, stride, padding)
    np.testing.assert_allclose(z_naive, z_torch, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(z_fast, z_naive, rtol=1e-10, atol=1e-12)
    for got in (kernels.conv_backward_naive(delta, x, w, stride, padding),
                kernels.conv_backward(delta, x, w, stride, padding)):
        dx, dw, db = got
        np.testing.assert_allclose(dx, dx_torch, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dw, dw_torch, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(db, db_torch, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dx_method", ["full_convolution", "col2im"])
@pytest.mark.parametrize("shape", CONV_SHAPES + [(9, 3, 12, 10, 4, 3, 3, (1, 1), (1, 1)),
                                   (16, 1, 28, 28, 6, 5, 5, (1, 1), (2, 2))])
def test_conv_backward_dx_methods_both_equal_the_naive_form(shape, dx_method, monkeypatch):
    """The fast backward picks dx by size; force each method over every shape."""
    limit = 2**62 if dx_method == "full_convolution" else 0
    monkeypatch.setattr(kernels, "FULL_CONVOLUTION_MAX_ELEMENTS", limit)
    n, c, h, w_, f, hh, ww, stride, padding = shape
    rng = np.random.default_rng(n * h)
    x = rng.normal(size=(n, c, h, w_))
    w = rng.normal(size=(f, c, hh, ww))
    delta = rng.normal(size=kernels.conv_forward(x, w, np.zeros(f), stride, padding).shape)
    z_naive = kernels.conv_forward_naive(x[:2], w, np.zeros(f), stride, padding)
    np.testing.assert_allclose(kernels.conv_forward(x[:2], w, np.zeros(f), stride, padding), z_naive, rtol=1e-10,
                               atol=1e-12)
    for got, want in zip(kernels.conv_backward(delta, x, w, stride, padding),
                         kernels.conv_backward_naive(delta, x, w, stride, padding)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("values, columns", [(12, 7), (12, 8), (60, 9), (1, 5), (10**9, 9)])
def test_small_products_equal_one_matrix_product(values, columns, monkeypatch):
    """a @ b as a stack of column groups of b (the last group short, or none; groups of one
    column; one group only): every column the same numbers as the one product, in float64 and
    float32, into a view of a bigger out array."""
    monkeypatch.setattr(kernels, "SMALL_PRODUCT_VALUES", values)
    rng = np.random.default_rng(columns)
    for dtype, rtol in ((np.float64, 1e-13), (np.float32, 1e-5)):
        a = rng.normal(size=(3, 4)).astype(dtype)
        b = rng.normal(size=(4, columns)).astype(dtype)
        buffer = np.full((3, columns + 2), np.nan, dtype=dtype)
        out = buffer[:, 1:-1]
        assert kernels.matmul_in_small_products(a, b, out) is out
        np.testing.assert_allclose(out, a @ b, rtol=rtol, atol=rtol)
        assert np.isnan(buffer[:, 0]).all() and np.isnan(buffer[:, -1]).all()


@pytest.mark.parametrize("values, terms", [(12, 7), (12, 8), (60, 9), (1, 5), (10**9, 9)])
def test_small_products_added_up_equal_one_matrix_product(values, terms, monkeypatch):
    """out += a @ b with the sum over K cut into groups (the last one short, or none; groups of
    one term; one group only), in float64 and float32, a a view with rows apart."""
    monkeypatch.setattr(kernels, "SMALL_PRODUCT_VALUES", values)
    rng = np.random.default_rng(terms)
    for dtype, rtol in ((np.float64, 1e-13), (np.float32, 1e-5)):
        a = rng.normal(size=(3, terms + 4)).astype(dtype)[:, 2:-2]
        b = rng.normal(size=(terms, 2)).astype(dtype)
        start = rng.normal(size=(3, 2)).astype(dtype)
        out = start.copy()
        assert kernels.add_small_products(a, b, out) is out
        np.testing.assert_allclose(out, start + a @ b, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("values", [1, 100, 5000])
def test_conv_backward_in_small_products_equals_the_naive_form(values, monkeypatch):
    """col2im's column gradients and dW as small products (groups of one column or term, of a
    few with the last short, of many): dx, dw and db the naive form's, for LeNet-5's conv2 and a
    strided padded conv."""
    monkeypatch.setattr(kernels, "SMALL_PRODUCT_VALUES", values)
    monkeypatch.setattr(kernels, "FULL_CONVOLUTION_MAX_ELEMENTS", 0)
    monkeypatch.setattr(kernels, "WIDE_ROWS_MAX_WASTE", -1.0)
    for n, c, h, w_, f, hh, ww, stride, padding in [(3, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0)),
                                                    (4, 2, 9, 7, 3, 3, 2, (2, 1), (1, 1))]:
        rng = np.random.default_rng(values + h)
        x, w = rng.normal(size=(n, c, h, w_)), rng.normal(size=(f, c, hh, ww))
        delta = rng.normal(size=kernels.conv_forward(x, w, np.zeros(f), stride, padding).shape)
        for got, want in zip(kernels.conv_backward(delta, x, w, stride, padding),
                             kernels.conv_backward_naive(delta, x, w, stride, padding), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)


# padding as large as the kernel or larger (PyTorch accepts it), LeNet-5's two convs, a 1x1 kernel
LAYOUT_SHAPES = CONV_SHAPES + [
    (2, 2, 5, 6, 3, 3, 2, (1, 1), (3, 4)),
    (3, 1, 4, 4, 2, 2, 2, (2, 2), (3, 2)),
    (1, 2, 3, 3, 2, 3, 3, (1, 1), (5, 5)),
    (5, 1, 28, 28, 6, 5, 5, (1, 1), (2, 2)),
    (5, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0)),
    (3, 3, 6, 5, 2, 1, 1, (1, 1), (0, 0)),
]


@pytest.mark.parametrize("layout", ["wide_rows", "batch_innermost"])
@pytest.mark.parametrize("shape", LAYOUT_SHAPES)
def test_conv_layouts_both_equal_the_naive_form_and_torch_for_any_padding(shape, layout, monkeypatch):
    """Force each fast layout (wide rows only exist for stride 1) over every shape, with chunks of
    the batch small enough that there are several and the last one is short."""
    n, c, h, w_, f, hh, ww, stride, padding = shape
    monkeypatch.setattr(kernels, "WIDE_ROWS_MAX_WASTE", 1e9 if layout == "wide_rows" else -1.0)
    monkeypatch.setattr(kernels, "WIDE_CHUNK_BYTES", 1)
    assert kernels.uses_wide_rows((n, c, h, w_), (f, c, hh, ww), stride, padding) == (
        layout == "wide_rows" and stride == (1, 1))
    assert_fast_conv_equals_naive_and_torch(np.random.default_rng(n * h + w_), shape)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dx_method", ["full_convolution", "col2im"])
@pytest.mark.parametrize("chunk", [1, 2, 3])
@pytest.mark.parametrize("shape", [(5, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0)),
                                   (7, 2, 9, 9, 3, 3, 3, (2, 2), (1, 1)),
                                   (4, 3, 8, 6, 2, 2, 3, (1, 2), (2, 3))])
def test_batch_innermost_chunks_equal_the_naive_form_and_torch(shape, chunk, dx_method, threads, monkeypatch):
    """The batch-innermost conv in chunks of 1, 2 or 3 samples (the last one short), each dx method,
    the chunks on one thread or dealt over two; the forward's im2col matrix is handed back only
    when the batch is one chunk."""
    n, h = shape[0], shape[2]
    monkeypatch.setattr(kernels, "WIDE_ROWS_MAX_WASTE", -1.0)
    monkeypatch.setattr(kernels, "batch_innermost_chunk", lambda N, columns, itemsize: chunk)
    monkeypatch.setattr(kernels, "FULL_CONVOLUTION_MAX_ELEMENTS", 2**62 if dx_method == "full_convolution" else 0)
    monkeypatch.setattr(kernels, "kernel_threads", lambda: threads)
    handed_back = assert_fast_conv_equals_naive_and_torch(np.random.default_rng(n * chunk + h), shape)
    assert handed_back == [None, None]  # several chunks: the backward rebuilds each chunk's im2col


def test_batch_innermost_chunks_follow_the_byte_budget():
    """LeNet-5's conv2 in float32 (60,000 bytes of im2col per sample): batch 64 in one chunk, whose
    im2col matrix the backward reuses; batch 256 in four of 64; float64 halves the chunk."""
    columns = 6 * 5 * 5 * 10 * 10
    assert kernels.batch_innermost_chunk(1, columns, 4) == 1
    assert kernels.batch_innermost_chunk(64, columns, 4) == 64
    assert kernels.batch_innermost_chunk(256, columns, 4) == 64
    assert kernels.batch_innermost_chunk(256, columns, 8) == 32
    assert kernels.batch_innermost_chunk(100, columns, 4) == 50  # chunks of even size, not 69 + 31
    x = np.ones((64, 6, 14, 14), dtype=np.float32)
    w = np.ones((16, 6, 5, 5), dtype=np.float32)
    _, cols = kernels.conv_forward(x, w, np.zeros(16, np.float32), return_cols=True)
    assert cols.shape == (151, 6400)  # the im2col rows and the row of ones (bias and db in the products)


def test_wide_rows_are_chosen_for_lenet5_conv1_and_not_for_conv2_or_strides():
    assert kernels.uses_wide_rows((64, 1, 28, 28), (6, 1, 5, 5), (1, 1), (2, 2))
    assert not kernels.uses_wide_rows((64, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0))
    assert not kernels.uses_wide_rows((64, 1, 28, 28), (6, 1, 5, 5), (2, 2), (2, 2))


def test_conv_backward_reusing_forward_cols_and_scratch_gives_fresh_results():
    """Scratch buffers are reused between calls; results handed out must not change afterwards."""
    take = Scratch().taker(0)
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(2, 4, 2, 9, 9))
    w = rng.normal(size=(3, 2, 3, 3))
    b = rng.normal(size=3)
    z1, cols1 = kernels.conv_forward(x1, w, b, (1, 1), (1, 1), return_cols=True, scratch=take)
    expected_z1 = kernels.conv_forward_naive(x1, w, b, (1, 1), (1, 1))
    back1 = kernels.conv_backward(z1, x1, w, (1, 1), (1, 1), cols=cols1, scratch=take)
    expected_back1 = kernels.conv_backward_naive(z1, x1, w, (1, 1), (1, 1))
    kernels.conv_forward(x2, w, b, (1, 1), (1, 1), scratch=take)
    kernels.conv_backward(z1, x2, w, (1, 1), (1, 1), scratch=take)
    np.testing.assert_allclose(z1, expected_z1, rtol=1e-10)
    for got, want in zip(back1, expected_back1):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-11)


def test_wide_conv_backward_reuses_the_forwards_padded_planes(monkeypatch):
    """The wide form hands its padded input planes back with return_cols; a backward given them
    pads nothing again, one given none pads x itself, and both equal the naive form."""
    rng = np.random.default_rng(5)
    x, w, b = rng.normal(size=(7, 2, 9, 8)), rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    assert kernels.uses_wide_rows(x.shape, w.shape, (1, 1), (1, 2))
    padded = []
    original = kernels._padded_planes
    monkeypatch.setattr(kernels, "_padded_planes", lambda *args: padded.append(1) or original(*args))
    take = Scratch().taker(0)
    z, planes = kernels.conv_forward(x, w, b, (1, 1), (1, 2), return_cols=True, scratch=take)
    assert planes.shape == (7, 2, 11 * 12) and len(padded) == 1
    delta = rng.normal(size=z.shape)
    want = kernels.conv_backward_naive(delta, x, w, (1, 1), (1, 2))
    for cols, pads in ((planes, 0), (None, 1)):
        got = kernels.conv_backward(delta, x, w, (1, 1), (1, 2), cols=cols, scratch=take)
        assert len(padded) == 1 + pads
        for g, wanted in zip(got, want, strict=True):
            np.testing.assert_allclose(g, wanted, rtol=1e-10, atol=1e-11)
        padded.clear()
        padded.append(1)


POOL_SHAPES = [
    # (N, C, H, W, size, stride)
    (1, 1, 4, 4, (2, 2), (2, 2)),
    (2, 3, 5, 5, (3, 3), (1, 1)),
    (2, 2, 6, 6, (2, 2), (1, 1)),
    (1, 2, 7, 7, (3, 3), (2, 2)),
    (2, 1, 6, 8, (2, 4), (2, 4)),
    (3, 2, 6, 6, (3, 2), (1, 2)),
    (1, 3, 8, 8, (2, 2), (3, 3)),
    (2, 2, 5, 5, (1, 1), (1, 1)),
    (2, 6, 28, 28, (2, 2), (2, 2)),
    (1, 2, 20, 21, (17, 17), (3, 2)),  # 289 window offsets: more than a byte can number
]


@pytest.mark.parametrize("shape", POOL_SHAPES)
def test_maxpool_naive_fast_and_torch_agree(shape):
    n, c, h, w, size, stride = shape
    rng = np.random.default_rng(h * w)
    x = rng.normal(size=(n, c, h, w))
    out_naive, argmax_naive = kernels.maxpool_forward_naive(x, size, stride)
    out_fast, argmax_fast = kernels.maxpool_forward(x, size, stride)
    xt = torch.tensor(x, requires_grad=True)
    out_torch, argmax_torch = F.max_pool2d(xt, size, stride, return_indices=True)
    dout = rng.normal(size=out_naive.shape)
    out_torch.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out_naive, out_torch.detach().numpy())
    np.testing.assert_array_equal(out_fast, out_naive)
    np.testing.assert_array_equal(argmax_naive, argmax_torch.numpy())
    np.testing.assert_array_equal(argmax_fast, argmax_naive)
    dx_naive = kernels.maxpool_backward_naive(dout, argmax_naive, x.shape)
    dx_fast = kernels.maxpool_backward(dout, argmax_fast, x.shape)
    # told the window: a plain store of every delta at its winner where windows do not overlap
    dx_windowed = kernels.maxpool_backward(dout, argmax_fast, x.shape, size=size, stride=stride)
    np.testing.assert_allclose(dx_naive, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx_fast, dx_naive, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx_windowed, dx_naive, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", POOL_SHAPES)
def test_avgpool_naive_fast_and_torch_agree(shape):
    n, c, h, w, size, stride = shape
    rng = np.random.default_rng(h + w)
    x = rng.normal(size=(n, c, h, w))
    xt = torch.tensor(x, requires_grad=True)
    out_torch = F.avg_pool2d(xt, size, stride)
    dout = rng.normal(size=out_torch.shape)
    out_torch.backward(torch.tensor(dout))
    out_naive = kernels.avgpool_forward_naive(x, size, stride)
    out_fast = kernels.avgpool_forward(x, size, stride)
    np.testing.assert_allclose(out_naive, out_torch.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out_fast, out_naive, rtol=1e-12, atol=1e-14)
    dx_naive = kernels.avgpool_backward_naive(dout, x.shape, size, stride)
    dx_fast = kernels.avgpool_backward(dout, x.shape, size, stride)
    np.testing.assert_allclose(dx_naive, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx_fast, dx_naive, rtol=1e-12, atol=1e-14)


def test_maxpool_with_many_ties_fast_equals_naive():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(2, 3, 9, 9)).astype(np.float64)
    for size, stride in [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((3, 2), (2, 1))]:
        out_naive, argmax_naive = kernels.maxpool_forward_naive(x, size, stride)
        out_fast, argmax_fast = kernels.maxpool_forward(x, size, stride)
        np.testing.assert_array_equal(out_fast, out_naive)
        np.testing.assert_array_equal(argmax_fast, argmax_naive)
        dout = rng.normal(size=out_naive.shape)
        np.testing.assert_array_equal(kernels.maxpool_backward(dout, argmax_fast, x.shape),
                                      kernels.maxpool_backward_naive(dout, argmax_naive, x.shape))


@pytest.mark.parametrize("name", ["conv", "maxpool", "avgpool"])
def test_fast_kernels_keep_float32_as_float32(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    if name == "conv":
        w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
        b = np.zeros(4, np.float32)
        z = kernels.conv_forward(x, w, b, (1, 1), (1, 1))
        dx, dw, db = kernels.conv_backward(np.ones_like(z), x, w, (1, 1), (1, 1))
        outputs = [z, dx, dw, db]
    elif name == "maxpool":
        out, argmax = kernels.maxpool_forward(x, (2, 2), (2, 2))
        outputs = [out, kernels.maxpool_backward(np.ones_like(out), argmax, x.shape)]
    else:
        out = kernels.avgpool_forward(x, (2, 2), (2, 2))
        outputs = [out, kernels.avgpool_backward(np.ones_like(out), x.shape, (2, 2), (2, 2))]
    assert [o.dtype for o in outputs] == [np.float32] * len(outputs)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_dense_weight_grad_is_delta_transposed_times_input_for_any_batch(n):
    rng = np.random.default_rng(n)
    for dtype in (np.float32, np.float64):
        delta, x = rng.normal(size=(n, 7)).astype(dtype), rng.normal(size=(n, 11)).astype(dtype)
        got = kernels.dense_weight_grad(delta, x)
        assert got.dtype == dtype and got.shape == (7, 11)
        np.testing.assert_allclose(got, delta.astype(np.float64).T @ x.astype(np.float64), rtol=1e-5)


def test_conv_output_size_formula():
    assert kernels.conv_output_size(28, 5, 1, 2) == 28
    assert kernels.conv_output_size(14, 5, 1, 0) == 10
    assert kernels.conv_output_size(7, 3, 2, 1) == 4
    assert kernels.conv_output_size(9, 3, 3, 0) == 3


# --- scratch memory -------------------------------------------------------------------------------

def test_scratch_reuses_a_buffer_per_slot_and_name_and_trims_when_too_big():
    scratch = Scratch()
    first = scratch.take(0, "cols", (4, 5), np.float32)
    again = scratch.take(0, "cols", (2, 3), np.float32)
    other_slot = scratch.take(1, "cols", (4, 5), np.float32)
    assert np.shares_memory(first, again) and not np.shares_memory(first, other_slot)
    assert again.shape == (2, 3) and again.dtype == np.float32
    assert scratch.nbytes() == 2 * 4 * 5 * 4
    scratch.trim(max_bytes=1000)
    assert scratch.nbytes() == 160
    scratch.trim(max_bytes=100)
    assert scratch.nbytes() == 0


def test_scratch_zeroes_a_buffer_only_when_it_allocates_it():
    scratch = Scratch()
    first = scratch.take(0, "margins", (3, 4), np.float64, zeroed=True)
    assert not first.any()
    first[...] = 7.0
    assert (scratch.take(0, "margins", (2, 4), np.float64, zeroed=True) == 7.0).all()  # reused as left
    assert not scratch.take(0, "margins", (5, 4), np.float64, zeroed=True).any()  # grown: new, zeroed


def test_one_scratch_slot_shared_by_many_conv_geometries_in_turn(monkeypatch):
    """Buffers named after their layout, kept zero where never written, must not leak between the
    shapes a slot sees (a slot is a layer's position; different networks put different convs there)."""
    monkeypatch.setattr(kernels, "WIDE_ROWS_MAX_WASTE", 1e9)
    monkeypatch.setattr(kernels, "WIDE_CHUNK_BYTES", 3000)
    take = Scratch().taker(0)
    rng = np.random.default_rng(11)
    shapes = [(5, 2, 7, 9, 3, 3, 3, (1, 1), (1, 2)), (3, 1, 12, 12, 2, 5, 5, (1, 1), (2, 2)),
              (7, 2, 7, 9, 3, 3, 3, (1, 1), (1, 2)), (2, 3, 6, 6, 4, 2, 4, (1, 1), (4, 3))]
    for index, (n, c, h, w_, f, hh, ww, stride, padding) in enumerate(shapes * 3):
        dtype = np.float32 if index % 3 == 1 else np.float64  # one geometry in both dtypes in turn
        x, w, b = (rng.normal(size=shape).astype(dtype) for shape in ((n, c, h, w_), (f, c, hh, ww), (f,)))
        tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-11}
        z = kernels.conv_forward(x, w, b, stride, padding, scratch=take)
        np.testing.assert_allclose(z, kernels.conv_forward_naive(x, w, b, stride, padding), **tolerance)
        delta = rng.normal(size=z.shape).astype(dtype)
        for got, want in zip(kernels.conv_backward(delta, x, w, stride, padding, scratch=take),
                             kernels.conv_backward_naive(delta, x, w, stride, padding)):
            np.testing.assert_allclose(got, want, **tolerance)


def test_traces_on_two_threads_at_once_equal_the_same_traces_one_after_the_other():
    """Scratch is per thread: concurrent traces of one network must not see each other's temporaries."""
    spec = {"input_shape": [1, 16, 16], "dtype": "float64", "layers": [
        {"type": "conv", "filters": 4, "kernel": 5, "padding": 2, "activation": "relu"},
        {"type": "maxpool", "size": 2}, {"type": "conv", "filters": 6, "kernel": 3, "activation": "tanh"},
        {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]}
    net = Network.from_spec(spec)
    rng = np.random.default_rng(0)
    # sizes on both sides of FULL_CONVOLUTION_MAX_ELEMENTS, so both dx methods run concurrently
    batches = [(rng.uniform(size=(n, 1, 16, 16)), rng.integers(0, 10, size=n)) for n in (1, 30, 7, 20) * 2]
    sequential = [net.trace(x, y) for x, y in batches]
    with ThreadPoolExecutor(max_workers=3) as pool:
        concurrent = list(pool.map(lambda batch: net.trace(*batch), batches))
    for one, other in zip(sequential, concurrent):
        assert one.loss == other.loss
        np.testing.assert_array_equal(one.input_grad, other.input_grad)
        for a, b in zip(one.layers, other.layers):
            np.testing.assert_array_equal(a.z, b.z)
            np.testing.assert_array_equal(a.delta, b.delta)
