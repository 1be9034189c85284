"""Pure forward/backward kernels for conv and pooling, NCHW.

Each op comes twice: a `*_naive` form written with loops that read like the formulas of the notes,
and the fast vectorised form the network uses (strided window views and matrix products; the only
Python loops run over kernel offsets, never over pixels). Tests hold the two equal.

The fast conv works internally with the batch innermost, (C, H, W, N), so that the rows it copies
and adds are long runs instead of a few pixels; it takes and returns NCHW like everything else.
Its temporaries can come from reusable scratch memory (scratch.py); what it returns is always new.

Names: x (N, C, H, W) input, w (F, C, HH, WW) weights, b (F,) bias, z (N, F, Ho, Wo) output,
delta = dL/dz, and dx, dw, db the gradients. `stride` and `padding` are pairs (h, w).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .scratch import Take, fresh


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of window positions along one axis: floor((size + 2*padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x: np.ndarray, padding) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


# --- convolution (cross-correlation) -------------------------------------------------------------

def conv_forward_naive(x, w, b, stride=(1, 1), padding=(0, 0)):
    """z[n,f,i,j] = b[f] + sum_{c,r,s} x_pad[n, c, i*sh + r, j*sw + s] * w[f, c, r, s]."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    sh, sw = stride
    x_pad = _pad(x, padding)
    Ho = conv_output_size(H, HH, sh, padding[0])
    Wo = conv_output_size(W, WW, sw, padding[1])
    z = np.zeros((N, F, Ho, Wo), dtype=np.result_type(x, w))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    patch = x_pad[n, :, i * sh: i * sh + HH, j * sw: j * sw + WW]
                    z[n, f, i, j] = np.sum(patch * w[f]) + b[f]
    return z


def conv_backward_naive(delta, x, w, stride=(1, 1), padding=(0, 0)):
    """The notes' backward, literally.

    dw = correlate(x_pad, delta) summed over the batch; db = sum(delta);
    dx = full convolution of delta (dilated by the stride) with the 180°-rotated w, cropped by the
    padding.
    """
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = delta.shape
    sh, sw = stride
    ph, pw = padding
    x_pad = _pad(x, padding)

    dw = np.zeros_like(w)
    for f in range(F):
        for c in range(C):
            for r in range(HH):
                for s in range(WW):
                    patch = x_pad[:, c, r: r + sh * (Ho - 1) + 1: sh, s: s + sw * (Wo - 1) + 1: sw]
                    dw[f, c, r, s] = np.sum(patch * delta[:, f])
    db = delta.sum(axis=(0, 2, 3))

    dilated = np.zeros((N, F, sh * (Ho - 1) + 1, sw * (Wo - 1) + 1), dtype=delta.dtype)
    dilated[:, :, ::sh, ::sw] = delta
    full = np.pad(dilated, ((0, 0), (0, 0), (HH - 1, HH - 1), (WW - 1, WW - 1)))
    rotated = w[:, :, ::-1, ::-1]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    dx_pad = np.zeros((N, C, Hp, Wp), dtype=delta.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(Hp):
                for j in range(Wp):
                    dx_pad[n, c, i, j] = np.sum(full[n, :, i: i + HH, j: j + WW] * rotated[:, c])
    dx = dx_pad[:, :, ph: ph + H, pw: pw + W]
    return dx, dw, db


def _padded_chwn(x: np.ndarray, padding, take: Take) -> np.ndarray:
    """x (N, C, H, W) zero-padded and laid out (C, H + 2*ph, W + 2*pw, N).

    With the batch innermost, every window row is one contiguous run of Wo*N values, so im2col and
    its transpose work on long runs instead of rows a few pixels wide.
    """
    N, C, H, W = x.shape
    ph, pw = padding
    x_pad = take("x_pad", (C, H + 2 * ph, W + 2 * pw, N), x.dtype)
    _zero_border(x_pad, ph, pw)
    x_pad[:, ph: ph + H, pw: pw + W, :] = x.transpose(1, 2, 3, 0)
    return x_pad


def _zero_border(a: np.ndarray, ph: int, pw: int) -> None:
    """Zero the ph rows and pw columns around axes 1 and 2 of a (C, Hp, Wp, N) buffer."""
    if ph:
        a[:, :ph] = 0
        a[:, -ph:] = 0
    if pw:
        a[:, :, :pw] = 0
        a[:, :, -pw:] = 0


def _im2col(x_pad: np.ndarray, window, stride, out_size, take: Take, name: str = "cols") -> np.ndarray:
    """(C*HH*WW, Ho*Wo*N) matrix whose column (i, j, n) is the window under output (n, i, j).

    x_pad is (C, Hp, Wp, N); one copy from a strided view; rows in (c, r, s) order, matching
    w.reshape(F, -1).
    """
    C, _, _, N = x_pad.shape
    (HH, WW), (sh, sw), (Ho, Wo) = window, stride, out_size
    s_c, s_h, s_w, s_n = x_pad.strides
    view = as_strided(x_pad, shape=(C, HH, WW, Ho, Wo, N),
                      strides=(s_c, s_h, s_w, s_h * sh, s_w * sw, s_n), writeable=False)
    cols = take(name, (C * HH * WW, Ho * Wo * N), x_pad.dtype)
    np.copyto(cols.reshape(view.shape), view)
    return cols


def conv_forward(x, w, b, stride=(1, 1), padding=(0, 0), return_cols=False, scratch: Take = fresh):
    """Fast conv: im2col of the padded input, then one matrix product.

    # (f, c hh ww) @ (c hh ww, ho wo n) -> (f, ho, wo, n) -> nfhw
    With return_cols the im2col matrix is returned too, for conv_backward to reuse. `scratch`
    supplies the temporaries (see scratch.py); the returned z is always a new array.
    """
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = conv_output_size(H, HH, stride[0], padding[0])
    Wo = conv_output_size(W, WW, stride[1], padding[1])
    cols = _im2col(_padded_chwn(x, padding, scratch), (HH, WW), stride, (Ho, Wo), scratch)
    z_mat = scratch("z_mat", (F, Ho * Wo * N), np.result_type(x, w))
    np.matmul(w.reshape(F, -1), cols, out=z_mat)
    z_mat += b[:, None]
    z = np.empty((N, F, Ho, Wo), dtype=z_mat.dtype)
    np.copyto(z, z_mat.reshape(F, Ho, Wo, N).transpose(3, 0, 1, 2))
    return (z, cols) if return_cols else z


def conv_backward(delta, x, w, stride=(1, 1), padding=(0, 0), cols=None, need_dx=True, scratch: Take = fresh):
    """Fast conv backward: dw = delta @ im2col(x).T, db = sum(delta), and dx either as the full
    convolution of the dilated delta with the rotated kernel (small maps) or by col2im (large
    ones); the two are the same sum, and both equal the naive form."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = delta.shape
    sh, sw = stride
    ph, pw = padding
    if cols is None:
        cols = _im2col(_padded_chwn(x, padding, scratch), (HH, WW), stride, (Ho, Wo), scratch)
    delta_mat = scratch("delta_mat", (F, Ho * Wo * N), delta.dtype)  # (f, ho wo n)
    np.copyto(delta_mat.reshape(F, Ho, Wo, N), delta.transpose(1, 2, 3, 0))
    dw = (delta_mat @ cols.T).reshape(w.shape)
    db = delta_mat.sum(axis=1)
    if not need_dx:
        return None, dw, db

    if ph < HH and pw < WW and F * HH * WW * N * H * W <= FULL_CONVOLUTION_MAX_ELEMENTS:
        return _dx_by_full_convolution(delta, x.shape, w, stride, padding, scratch), dw, db
    return _dx_by_col2im(delta_mat, x.shape, w, (Ho, Wo), stride, padding, scratch), dw, db


# Below this many elements in its im2col matrix, dx is one full convolution (one copy, one matrix
# product: least Python overhead); above it, the col2im scatter (a matrix C/F times smaller, and
# HH*WW strided adds) moves less memory.
FULL_CONVOLUTION_MAX_ELEMENTS = 2**19


def _dx_by_full_convolution(delta, x_shape, w, stride, padding, scratch: Take):
    """dx = full convolution of the stride-dilated delta with the 180°-rotated kernel, the notes'
    formula: delta is placed every stride rows/columns into a zero map padded by HH-1-ph and
    WW-1-pw, and correlated with w[:, :, ::-1, ::-1] summed over filters."""
    N, C, H, W = x_shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = delta.shape
    (sh, sw), (ph, pw) = stride, padding
    top, left = HH - 1 - ph, WW - 1 - pw
    spread = scratch("spread", (F, H + HH - 1, W + WW - 1, N), delta.dtype)
    spread.fill(0)
    spread[:, top: top + sh * (Ho - 1) + 1: sh, left: left + sw * (Wo - 1) + 1: sw] = delta.transpose(1, 2, 3, 0)
    cols = _im2col(spread, (HH, WW), (1, 1), (H, W), scratch, name="spread_cols")  # (f hh ww, h w n)
    rotated = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(C, F * HH * WW)
    dx_mat = rotated @ cols  # (c, h w n)
    dx = np.empty((N, C, H, W), dtype=delta.dtype)
    np.copyto(dx, dx_mat.reshape(C, H, W, N).transpose(3, 0, 1, 2))
    return dx


def _dx_by_col2im(delta_mat, x_shape, w, out_size, stride, padding, scratch: Take):
    """dx by scattering the column gradients w.T @ delta back onto the padded input, one strided
    add per kernel offset: the transpose of im2col, the same sum as the full convolution."""
    N, C, H, W = x_shape
    F, _, HH, WW = w.shape
    (Ho, Wo), (sh, sw), (ph, pw) = out_size, stride, padding
    dcols = scratch("dcols", (C * HH * WW, Ho * Wo * N), delta_mat.dtype)
    np.matmul(w.reshape(F, -1).T, delta_mat, out=dcols)
    dcols = dcols.reshape(C, HH, WW, Ho, Wo, N)
    dx_pad = scratch("dx_pad", (C, H + 2 * ph, W + 2 * pw, N), delta_mat.dtype)
    dx_pad.fill(0)
    for r in range(HH):
        for s in range(WW):
            dx_pad[:, r: r + sh * (Ho - 1) + 1: sh, s: s + sw * (Wo - 1) + 1: sw] += dcols[:, r, s]
    dx = np.empty((N, C, H, W), dtype=delta_mat.dtype)
    np.copyto(dx, dx_pad[:, ph: ph + H, pw: pw + W].transpose(3, 0, 1, 2))
    return dx


# --- max pooling ---------------------------------------------------------------------------------

def maxpool_forward_naive(x, size, stride):
    """out = max over each window; argmax = flat index row*W + col of the first maximum."""
    N, C, H, W = x.shape
    kh, kw = size
    sh, sw = stride
    Ho, Wo = conv_output_size(H, kh, sh, 0), conv_output_size(W, kw, sw, 0)
    out = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    argmax = np.zeros((N, C, Ho, Wo), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    best_row, best_col = i * sh, j * sw
                    for r in range(kh):
                        for s in range(kw):
                            if x[n, c, i * sh + r, j * sw + s] > x[n, c, best_row, best_col]:
                                best_row, best_col = i * sh + r, j * sw + s
                    out[n, c, i, j] = x[n, c, best_row, best_col]
                    argmax[n, c, i, j] = best_row * W + best_col
    return out, argmax


def maxpool_backward_naive(dout, argmax, x_shape):
    """Each output's delta goes to its winning input only (summed where windows overlap)."""
    N, C, H, W = x_shape
    dx = np.zeros((N, C, H * W), dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            for i, j in np.ndindex(*dout.shape[2:]):
                dx[n, c, argmax[n, c, i, j]] += dout[n, c, i, j]
    return dx.reshape(x_shape)


def _offset_views(x, size, stride, out_size):
    """For each window offset (r, s), in row-major order: the strided view of x (N, C, H, W) that
    holds, at [n, c, i, j], the input x[n, c, i*sh + r, j*sw + s] of output (i, j)'s window."""
    (kh, kw), (sh, sw), (Ho, Wo) = size, stride, out_size
    for r in range(kh):
        for s in range(kw):
            yield r, s, x[:, :, r: r + sh * (Ho - 1) + 1: sh, s: s + sw * (Wo - 1) + 1: sw]


def _pool_output_size(x_shape, size, stride):
    return (conv_output_size(x_shape[2], size[0], stride[0], 0),
            conv_output_size(x_shape[3], size[1], stride[1], 0))


def maxpool_forward(x, size, stride, scratch: Take = fresh):
    """Fast max-pool: a running maximum over the kh*kw window offsets, each a whole-map operation.

    A later offset replaces the winner only when strictly greater, so ties go to the first input in
    row-major window order, the rule of the notes. argmax is row * W + col in the input plane.
    """
    N, C, H, W = x.shape
    (kh, kw), (sh, sw) = size, stride
    Ho, Wo = _pool_output_size(x.shape, size, stride)
    views = _offset_views(x, size, stride, (Ho, Wo))
    _, _, first = next(views)
    out = first.copy()
    # Offsets come in increasing number, so "replace the winner where strictly greater" is a running
    # maximum of number * (candidate > out): branch-free, and far faster than a masked copy.
    number_type = np.int16 if kh * kw < 2**15 else np.int32  # the spec caps windows at 64x64
    winner = scratch("winner", out.shape, number_type)  # offset number of the current winner
    winner.fill(0)
    better = scratch("better", out.shape, bool)
    claim = scratch("claim", out.shape, number_type)
    for number, (_, _, candidate) in enumerate(views, start=1):
        np.greater(candidate, out, out=better)
        np.multiply(better, number_type(number), out=claim)
        np.maximum(winner, claim, out=winner)
        np.maximum(out, candidate, out=out)
    offset_in_plane = (np.arange(kh)[:, None] * W + np.arange(kw)).reshape(-1)  # offset number -> r*W + s
    argmax = offset_in_plane[winner]
    argmax += (np.arange(Ho) * (sh * W))[:, None] + np.arange(Wo) * sw  # the window's corner
    return out, argmax


def maxpool_backward(dout, argmax, x_shape, scratch: Take = fresh):
    """Each output's delta goes to its winning input only: one unbuffered scatter-add over flat
    (n, c, row * W + col) indices, so inputs that win several overlapping windows add them up."""
    N, C, H, W = x_shape
    index = scratch("index", argmax.shape, np.int64)
    np.add(argmax, (np.arange(N * C, dtype=np.int64) * (H * W)).reshape(N, C, 1, 1), out=index)
    dx = np.zeros(N * C * H * W, dtype=dout.dtype)
    np.add.at(dx, index.reshape(-1), dout.reshape(-1))
    return dx.reshape(x_shape)


# --- average pooling -----------------------------------------------------------------------------

def avgpool_forward_naive(x, size, stride):
    N, C, H, W = x.shape
    kh, kw = size
    sh, sw = stride
    Ho, Wo = conv_output_size(H, kh, sh, 0), conv_output_size(W, kw, sw, 0)
    out = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, i * sh: i * sh + kh, j * sw: j * sw + kw].mean(axis=(2, 3))
    return out


def avgpool_backward_naive(dout, x_shape, size, stride):
    """Each output's delta is spread as delta / (kh * kw) over its window."""
    kh, kw = size
    sh, sw = stride
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            dx[:, :, i * sh: i * sh + kh, j * sw: j * sw + kw] += dout[:, :, i: i + 1, j: j + 1] / (kh * kw)
    return dx


def avgpool_forward(x, size, stride):
    """Fast avg-pool: the kh*kw offset views summed, then divided by the window area."""
    out_size = _pool_output_size(x.shape, size, stride)
    views = _offset_views(x, size, stride, out_size)
    out = next(views)[2].copy()
    for _, _, view in views:
        out += view
    out /= size[0] * size[1]
    return out


def avgpool_backward(dout, x_shape, size, stride):
    """Each output's delta spread as delta / (kh * kw) over its window, offset by offset."""
    share = dout / (size[0] * size[1])
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for _, _, view in _offset_views(dx, size, stride, dout.shape[2:]):
        view += share
    return dx
