"""Pure forward/backward kernels for conv and pooling, NCHW.

Each op comes twice: a `*_naive` form written with loops that read like the formulas of the notes,
and the fast vectorised form the network uses (strided window views and matrix products; the only
Python loops run over kernel offsets, never over pixels). Tests hold the two equal.

Names: x (N, C, H, W) input, w (F, C, HH, WW) weights, b (F,) bias, z (N, F, Ho, Wo) output,
delta = dL/dz, and dx, dw, db the gradients. `stride` and `padding` are pairs (h, w).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of window positions along one axis: floor((size + 2*padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x: np.ndarray, padding) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _windows(x: np.ndarray, window, stride) -> np.ndarray:
    """View (N, C, Ho, Wo, HH, WW) of every window of x (N, C, H, W); no copy."""
    view = sliding_window_view(x, tuple(window), axis=(2, 3))
    return view[:, :, :: stride[0], :: stride[1]]


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


def conv_forward(x, w, b, stride=(1, 1), padding=(0, 0), return_cols=False):
    """Fast conv: im2col of the padded input, then one matrix product.

    # nchw -> (n ho wo, c hh ww) @ (c hh ww, f) -> nfhw
    With return_cols the im2col matrix is returned too, for conv_backward to reuse.
    """
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    windows = _windows(_pad(x, padding), (HH, WW), stride)  # (N, C, Ho, Wo, HH, WW)
    Ho, Wo = windows.shape[2], windows.shape[3]
    cols = np.ascontiguousarray(windows.transpose(0, 2, 3, 1, 4, 5)).reshape(N * Ho * Wo, C * HH * WW)
    z = cols @ w.reshape(F, -1).T
    z += b
    z = np.ascontiguousarray(z.reshape(N, Ho, Wo, F).transpose(0, 3, 1, 2))
    return (z, cols) if return_cols else z


def conv_backward(delta, x, w, stride=(1, 1), padding=(0, 0), cols=None, need_dx=True):
    """Fast conv backward: dw from the im2col matrix, dx by scattering the column gradients back.

    Mathematically the same as the naive form (the scatter over kernel offsets IS the full
    convolution with the rotated kernel, written as a transpose of im2col).
    """
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = delta.shape
    sh, sw = stride
    ph, pw = padding
    if cols is None:
        _, cols = conv_forward(x, w, np.zeros(F, dtype=w.dtype), stride, padding, return_cols=True)
    delta_mat = delta.transpose(0, 2, 3, 1).reshape(N * Ho * Wo, F)  # (n ho wo, f)
    dw = (delta_mat.T @ cols).reshape(w.shape)
    db = delta.sum(axis=(0, 2, 3))
    if not need_dx:
        return None, dw, db

    dcols = (delta_mat @ w.reshape(F, -1)).reshape(N, Ho, Wo, C, HH, WW)
    dx_pad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=delta.dtype)
    for r in range(HH):
        for s in range(WW):
            dx_pad[:, :, r: r + sh * (Ho - 1) + 1: sh, s: s + sw * (Wo - 1) + 1: sw] += \
                dcols[:, :, :, :, r, s].transpose(0, 3, 1, 2)
    dx = dx_pad[:, :, ph: ph + H, pw: pw + W]
    return np.ascontiguousarray(dx), dw, db


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


def maxpool_forward(x, size, stride):
    """Fast max-pool over a strided window view; np.argmax keeps the first maximum in row-major
    window order, which is the tie rule of the notes."""
    N, C, H, W = x.shape
    kh, kw = size
    sh, sw = stride
    windows = _windows(x, size, stride)
    Ho, Wo = windows.shape[2], windows.shape[3]
    flat = windows.reshape(N, C, Ho, Wo, kh * kw)
    local = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, local[..., None], axis=-1)[..., 0]
    rows = np.arange(Ho)[:, None] * sh + local // kw
    cols = np.arange(Wo)[None, :] * sw + local % kw
    return np.ascontiguousarray(out), rows * W + cols


def maxpool_backward(dout, argmax, x_shape):
    """Scatter-add of dout onto the winners: one bincount over flat (n, c, position) indices."""
    N, C, H, W = x_shape
    plane = H * W
    offsets = (np.arange(N * C, dtype=np.int64) * plane).reshape(N, C, 1, 1)
    dx = np.bincount((argmax + offsets).ravel(), weights=dout.ravel(), minlength=N * C * plane)
    return dx.astype(dout.dtype, copy=False).reshape(x_shape)


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
    return np.ascontiguousarray(_windows(x, size, stride).mean(axis=(4, 5), dtype=x.dtype))


def avgpool_backward(dout, x_shape, size, stride):
    kh, kw = size
    sh, sw = stride
    Ho, Wo = dout.shape[2], dout.shape[3]
    share = dout / (kh * kw)
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for r in range(kh):
        for s in range(kw):
            dx[:, :, r: r + sh * (Ho - 1) + 1: sh, s: s + sw * (Wo - 1) + 1: sw] += share
    return dx
