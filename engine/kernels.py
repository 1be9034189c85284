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

import functools

import numpy as np

from .scratch import Take, fresh, kernel_threads, over_threads


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of window positions along one axis: floor((size + 2*padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _strided(base: np.ndarray, shape, strides, offset: int = 0, writeable: bool = False) -> np.ndarray:
    """A view of the C-contiguous array `base` with these byte strides, starting `offset` bytes in:
    as_strided, but checked (np.ndarray refuses a view reaching past base's memory) and twenty times
    cheaper to make, which counts at batch 1."""
    view = np.ndarray(shape, base.dtype, base, offset, strides)
    if not writeable:
        view.flags.writeable = False
    return view


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


def _im2col(x_pad: np.ndarray, window, stride, out_size, take: Take, name: str = "cols",
            ones_row: bool = False) -> np.ndarray:
    """(C*HH*WW, Ho*Wo*N) matrix whose column (i, j, n) is the window under output (n, i, j).

    x_pad is (C, Hp, Wp, N); one copy from a strided view; rows in (c, r, s) order, matching
    w.reshape(F, -1). With ones_row, one more row of ones below them (a product with it adds the
    other operand's last row: the bias forward, db backward).
    """
    C, _, _, N = x_pad.shape
    (HH, WW), (sh, sw), (Ho, Wo) = window, stride, out_size
    s_c, s_h, s_w, s_n = x_pad.strides
    view = _strided(x_pad, (C, HH, WW, Ho, Wo, N), (s_c, s_h, s_w, s_h * sh, s_w * sw, s_n))
    K = C * HH * WW
    cols = take(name, (K + ones_row, Ho * Wo * N), x_pad.dtype)
    np.copyto(cols[:K].reshape(view.shape), view)
    if ones_row:
        cols[K] = 1
    return cols


def conv_forward(x, w, b, stride=(1, 1), padding=(0, 0), return_cols=False, scratch: Take = fresh,
                 z_out=None):
    """Fast conv: im2col of the padded input, then matrix products.

    Two layouts, the same sum (see `uses_wide_rows`): stride-1 convolutions whose rows waste little
    work the "wide rows" way, in NCHW and in cache-sized chunks of the batch; the others with the
    batch innermost. With return_cols what conv_backward can reuse is returned too: the batch-
    innermost im2col matrix (when the batch is one chunk), or the wide form's padded input planes
    (its backward rebuilds its im2col chunks from them in cache); scratch when `scratch` is, so valid
    until this layer's next forward on this thread.
    `scratch` supplies the temporaries (see scratch.py); z is a new array, or written into z_out
    when given (a block of a bigger batch's array, Network.trace). (Applying the activation chunk by
    chunk here, while each chunk of z is in cache, measured no faster with warm caches and 10 %
    slower for conv1 at batch 256 with cold ones than one pass after.)
    """
    if uses_wide_rows(x.shape, w.shape, stride, padding):
        z, cols = _conv_forward_wide(x, w, b, padding, scratch, z_out)
    else:
        z, cols = _conv_forward_batch_innermost(x, w, b, stride, padding, scratch, z_out)
    return (z, cols) if return_cols else z


def _conv_output(shape, dtype, z_out):
    return np.empty(shape, dtype=dtype) if z_out is None else z_out


def conv_backward(delta, x, w, stride=(1, 1), padding=(0, 0), cols=None, need_dx=True, scratch: Take = fresh,
                  dx_out=None):
    """Fast conv backward: dw = delta @ im2col(x).T, db = sum(delta), and dx by the transpose of
    im2col (or, for small batch-innermost maps, as the full convolution of the dilated delta with the
    rotated kernel); every form is the same sum as the naive one. `cols` is what conv_forward
    returned with return_cols for this x (None: made again here). dx is a new array, or written into
    dx_out."""
    dx = None
    if need_dx:
        dx = np.empty(x.shape, dtype=np.result_type(delta, x, w)) if dx_out is None else dx_out
    if uses_wide_rows(x.shape, w.shape, stride, padding):
        return _conv_backward_wide(delta, x, w, padding, dx, scratch, planes=cols)
    return _conv_backward_batch_innermost(delta, x, w, stride, padding, cols, dx, scratch)


# --- convolution, "wide rows" (stride 1, NCHW) -----------------------------------------------------
#
# With stride 1, window offset (r, s) of output (i, j) reads the padded input plane, flattened with
# row length Wp, at (i + r) * Wp + (j + s) = (r * Wp + s) + (i * Wp + j). So if the outputs are also
# numbered on rows Wp long, q = i * Wp + j, the im2col row of offset (c, r, s) is one contiguous slice
# of the flat plane, [r*Wp + s, r*Wp + s + L) with L = (Ho - 1) * Wp + Wo: a copy of long runs, no
# transposes, and NCHW in and out. The Wp - Wo columns q with j >= Wo are wasted work (computed,
# then dropped; in backward their delta is zero). dx is the same trick backwards: the column
# gradients of offset k are written into a zero-margined row shifted so that one strided view of
# them, summed over (r, s), is dx on the padded plane -- col2im as a single reduction, without one
# add per kernel offset.

# Wide rows are used when they waste at most this fraction of extra columns (LeNet-5's conv1: 14 %;
# its conv2, 10x10 outputs on 14-wide rows: 36 %, faster batch-innermost).
WIDE_ROWS_MAX_WASTE = 0.25
# A chunk of the batch whose im2col rows are about this big stays in the core's L2 cache together
# with its products; the whole-batch matrix would stream through memory three times.
WIDE_CHUNK_BYTES = 2**19


def uses_wide_rows(x_shape, w_shape, stride, padding) -> bool:
    """Whether the fast conv takes the wide-rows form for these shapes (else batch innermost)."""
    if tuple(stride) != (1, 1):
        return False
    _, _, H, W = x_shape
    _, _, HH, WW = w_shape
    Wp = W + 2 * padding[1]
    Ho, Wo = H + 2 * padding[0] - HH + 1, Wp - WW + 1
    return (Ho - 1) * Wp + Wo <= (1 + WIDE_ROWS_MAX_WASTE) * Ho * Wo


def _wide_geometry(x_shape, w_shape, padding):
    N, C, H, W = x_shape
    F, _, HH, WW = w_shape
    ph, pw = padding
    Hp, Wp = H + 2 * ph, W + 2 * pw
    Ho, Wo = Hp - HH + 1, Wp - WW + 1
    return N, C, H, W, F, HH, WW, ph, pw, Hp, Wp, Ho, Wo, (Ho - 1) * Wp + Wo


def _padded_planes(x, padding, dtype, take: Take) -> np.ndarray:
    """x zero-padded, as (N, C, Hp * Wp): each padded plane flat."""
    N, C, H, W = x.shape
    ph, pw = padding
    Hp, Wp = H + 2 * ph, W + 2 * pw
    planes = take("x_planes", (N, C, Hp * Wp), dtype)
    grid = planes.reshape(N, C, Hp, Wp)
    grid[:, :, :ph] = 0
    grid[:, :, ph + H:] = 0
    grid[:, :, ph: ph + H, :pw] = 0
    grid[:, :, ph: ph + H, pw + W:] = 0
    grid[:, :, ph: ph + H, pw: pw + W] = x
    return planes


def _wide_chunks(N: int, row_bytes: int):
    """(n0, n1) ranges of the batch whose im2col rows take about WIDE_CHUNK_BYTES."""
    return _batch_chunks(N, max(1, WIDE_CHUNK_BYTES // max(1, row_bytes)), row_bytes)


# A pass deals a batch over its threads only when each thread gets at least this many bytes of work
# (a kernel's temporaries per sample, times its samples): handing a part to another thread and
# waiting for it costs tens of microseconds, more than a smaller part takes.
THREAD_PART_MIN_BYTES = 2**18


def _batch_chunks(N: int, step: int, bytes_per_sample: int):
    """(n0, n1) ranges of at most `step` samples, and at least kernel_threads() of them when the
    batch is big enough to be worth dealing over the threads (THREAD_PART_MIN_BYTES)."""
    threads = kernel_threads()
    if threads > 1 and N * bytes_per_sample >= threads * THREAD_PART_MIN_BYTES:
        step = min(step, -(-N // threads))
    return [(n0, min(N, n0 + step)) for n0 in range(0, N, step)]


# Element-wise passes over a batch go in chunks of about this many bytes per operand, small enough
# that a chunk's temporaries (a comparison's mask) stay in the core's L2 cache.
ELEMENTWISE_CHUNK_BYTES = 2**18


def over_batch(function, N: int, sample_bytes: int) -> None:
    """function(n0, n1) over cache-sized ranges of a batch of N samples of sample_bytes each, dealt
    over the pass's threads when the batch is big enough (for element-wise work that writes
    disjoint parts of its results)."""
    def job(chunks):
        for n0, n1 in chunks:
            function(n0, n1)

    _over_threads(job, _batch_chunks(N, max(1, ELEMENTWISE_CHUNK_BYTES // max(1, sample_bytes)), sample_bytes))


def _over_threads(job, chunks) -> list:
    return over_threads(job, chunks, kernel_threads())


def _wide_windows(planes, window, row_length, length) -> np.ndarray:
    """The (C, HH, WW, N, L) view of the whole batch's im2col rows: [c, r, s, n] is
    planes[n, c, r*Wp + s: r*Wp + s + L]. A chunk's im2col matrix is a copy of its samples' slice."""
    _, C, _ = planes.shape
    HH, WW = window
    s_n, s_c, s_q = planes.strides
    return _strided(planes, (C, HH, WW, planes.shape[0], length), (s_c, row_length * s_q, s_q, s_n, s_q))


def _wide_outputs(wide: np.ndarray, N, F, Ho, Wo, row_length, length) -> np.ndarray:
    """The (N, F, Ho, Wo) view of the valid columns of a (F, N * L) wide-row matrix."""
    e = wide.strides[1]
    return _strided(wide, (N, F, Ho, Wo), (length * e, wide.strides[0], row_length * e, e), writeable=True)


# The wide-rows chunks below take their buffers and views once per pass and slice them per chunk: a
# chunk is a few samples (LeNet-5's conv1: 5), and making a view costs about what slicing one does
# ten times over.

def _conv_forward_wide(x, w, b, padding, take: Take, z_out=None):
    """(z, the padded input planes)."""
    N, C, H, W, F, HH, WW, ph, pw, Hp, Wp, Ho, Wo, L = _wide_geometry(x.shape, w.shape, padding)
    dtype = np.result_type(x, w)
    K = C * HH * WW
    planes = _padded_planes(x, padding, dtype, take)
    w_mat, bias = w.reshape(F, K), b.reshape(F, 1)
    z = _conv_output((N, F, Ho, Wo), dtype, z_out)
    chunks = _wide_chunks(N, K * L * dtype.itemsize)
    step = max(n1 - n0 for n0, n1 in chunks)

    def job(part):
        windows = _wide_windows(planes, (HH, WW), Wp, L)
        cols = take("wide_cols", (K, step * L), dtype)
        z_wide = take("z_wide", (F, step * L), dtype)
        outputs = _wide_outputs(z_wide, step, F, Ho, Wo, Wp, L)
        for n0, n1 in part:
            n = n1 - n0
            chunk_cols = cols[:, : n * L]  # rows (c hh ww), columns (n q)
            np.copyto(chunk_cols.reshape(C, HH, WW, n, L), windows[:, :, :, n0:n1])
            chunk_z = z_wide[:, : n * L]
            np.matmul(w_mat, chunk_cols, out=chunk_z)  # (f, c hh ww) @ (c hh ww, n q)
            # the bias added over the wide rows (long runs) and the valid columns then copied out,
            # while still in cache: adding straight into z ran one short loop per output row
            np.add(chunk_z, bias, out=chunk_z)
            np.copyto(z[n0:n1], outputs[:n])

    _over_threads(job, chunks)
    return z, planes


def _conv_backward_wide(delta, x, w, padding, dx, take: Take, planes=None):
    """(dx, dw, db); `planes`: the forward's padded input planes for this x, if still at hand."""
    N, C, H, W, F, HH, WW, ph, pw, Hp, Wp, Ho, Wo, L = _wide_geometry(x.shape, w.shape, padding)
    dtype = np.result_type(delta, x, w)
    K, S = C * HH * WW, Hp * Wp
    if planes is None or planes.dtype != dtype:
        planes = _padded_planes(x, padding, dtype, take)
    w_mat = w.reshape(F, K)
    need_dx = dx is not None
    # dcols row k = (c, r, s) goes at [margin, margin + L) of a row `span` long, zero elsewhere;
    # entry p of the padded plane then reads it at margin + p - (r*Wp + s), always inside the row.
    margin = (HH - 1) * Wp + WW - 1
    span = margin + S
    chunks = _wide_chunks(N, K * L * dtype.itemsize)
    step = max(n1 - n0 for n0, n1 in chunks)

    def job(part):
        # rows (c, hh, ww) of dw.T, and db as one more row: the im2col matrix's row of ones times
        # delta.T sums delta over its columns inside the product, saving a pass over delta
        dw_t_db = np.zeros((K + 1, F), dtype=dtype)
        windows = _wide_windows(planes, (HH, WW), Wp, L)
        cols = take("wide_cols", (K + 1, step * L), dtype)
        cols[K] = 1
        # delta on wide rows, (f, n q): the chunks write only the valid columns, so the wasted ones,
        # zeroed here, stay zero and add nothing
        delta_wide = take("delta_wide", (F, step * L), dtype)
        if Wp > Wo and Ho > 1:
            e = delta_wide.strides[1]
            _strided(delta_wide, (F, step, Ho - 1, Wp - Wo), (delta_wide.strides[0], L * e, Wp * e, e),
                     offset=Wo * e, writeable=True)[...] = 0
        delta_outputs = _wide_outputs(delta_wide, step, F, Ho, Wo, Wp, L)
        if need_dx:
            # Only [margin, margin + L) of each row is ever written, so under a name fixed by that
            # layout (scratch keys by dtype too) the zero margins of a new buffer stay zero: no need
            # to clear them again.
            shifted = take(f"dcols_shifted {K} {span} {margin} {L}", (step, K, span), dtype, zeroed=True)
            shifted_middle = shifted[:, :, margin: margin + L]
            e = shifted.strides[2]
            reads = _strided(shifted, (step, C, HH, WW, S),
                             (shifted.strides[0], HH * WW * span * e, (WW * span - Wp) * e, (span - 1) * e, e),
                             offset=margin * e)
            dx_planes = take("dx_planes", (step, C, S), dtype)
            dx_inside = dx_planes.reshape(step, C, Hp, Wp)[:, :, ph: ph + H, pw: pw + W]
        for n0, n1 in part:
            n = n1 - n0
            np.copyto(delta_outputs[:n], delta[n0:n1])
            chunk_delta, chunk_cols = delta_wide[:, : n * L], cols[:, : n * L]
            np.copyto(chunk_cols[:K].reshape(C, HH, WW, n, L), windows[:, :, :, n0:n1])
            dw_t_db += chunk_cols @ chunk_delta.T  # (c hh ww + 1, n q) @ (n q, f); the faster operand order for OpenBLAS
            if need_dx:
                # (c hh ww, f) @ (n, f, q) -> (n, c hh ww, q), written into the middle of each row
                np.matmul(w_mat.T, chunk_delta.reshape(F, n, L).transpose(1, 0, 2), out=shifted_middle[:n])
                np.sum(reads[:n], axis=(2, 3), out=dx_planes[:n])
                dx[n0:n1] = dx_inside[:n]
        return dw_t_db

    parts = _over_threads(job, chunks)
    dw_t_db = parts[0]
    for more in parts[1:]:
        dw_t_db += more
    return dx, np.ascontiguousarray(dw_t_db[:K].T).reshape(w.shape), dw_t_db[K].copy()


# --- convolution, batch innermost (any stride) -----------------------------------------------------

# The batch goes through in chunks whose im2col matrix takes at most about this many bytes: LeNet-5's
# conv2 in float32 runs batch 64 in one chunk (3.8 MB) and batch 256 in four, which measured 15 %
# faster than one (the column gradients of 256 samples, 15 MB, go through memory twice in col2im).
# Smaller chunks make col2im's runs short and lose the forward's im2col matrix (a backward over
# several chunks rebuilds each chunk's): chunks of 32 were 3-8 % faster with warm caches but as
# slow with cold ones (a trace after other work, as in the benchmark), where conv2's backward at
# batch 64 took 1.89 ms instead of 1.53.
BATCH_INNERMOST_CHUNK_BYTES = 2**22


def batch_innermost_chunk(N: int, columns_per_sample: int, itemsize: int) -> int:
    """How many samples each chunk of the batch-innermost form holds (the last may hold fewer)."""
    count = -(-N * columns_per_sample * itemsize // BATCH_INNERMOST_CHUNK_BYTES)  # ceil
    return -(-N // max(1, count))


def _batch_innermost_chunks(N, columns_per_sample, itemsize):
    return _batch_chunks(N, batch_innermost_chunk(N, columns_per_sample, itemsize), columns_per_sample * itemsize)


def _conv_forward_batch_innermost(x, w, b, stride, padding, scratch: Take, z_out=None):
    """im2col with the batch innermost, then one matrix product, per chunk of the batch: (z, cols).

    # (ho wo n, c hh ww 1) @ (c hh ww 1, f) -> (ho, wo, n, f) -> nfhw
    (cols.T @ w.T rather than w @ cols: the same products, in the operand order OpenBLAS runs
    faster for these shapes.) The bias is the weights' last row, against the im2col matrix's row of
    ones: the product adds it, where a pass of its own over the (ho wo n, f) rows ran one loop
    F long per row. cols is the im2col matrix, for the backward, when the batch is one chunk; with
    several, None (the backward rebuilds each chunk's in cache).
    """
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = conv_output_size(H, HH, stride[0], padding[0])
    Wo = conv_output_size(W, WW, stride[1], padding[1])
    dtype = np.result_type(x, w)
    K = C * HH * WW
    w_t_b = np.empty((K + 1, F), dtype=dtype)
    w_t_b[:K], w_t_b[K] = w.reshape(F, K).T, b
    z = _conv_output((N, F, Ho, Wo), dtype, z_out)
    chunks = _batch_innermost_chunks(N, K * Ho * Wo, dtype.itemsize)

    def job(part):
        for n0, n1 in part:
            n = n1 - n0
            cols = _im2col(_padded_chwn(x[n0:n1], padding, scratch), (HH, WW), stride, (Ho, Wo), scratch,
                           ones_row=True)
            z_rows = scratch("z_rows", (Ho * Wo * n, F), dtype)
            np.matmul(cols.T, w_t_b, out=z_rows)
            # (ho wo, n, f) -> (n, ho wo, f) -> (n, f, ho wo) in two copies with longer runs than
            # the one straight transpose, whose every run was Wo values far apart
            by_sample = scratch("z_by_sample", (n, Ho * Wo, F), dtype)
            np.copyto(by_sample, z_rows.reshape(Ho * Wo, n, F).transpose(1, 0, 2))
            np.copyto(z[n0:n1].reshape(n, F, Ho * Wo), by_sample.transpose(0, 2, 1))
        return cols

    cols = _over_threads(job, chunks)[0]
    return z, (cols if len(chunks) == 1 else None)


def _conv_backward_batch_innermost(delta, x, w, stride, padding, cols, dx, scratch: Take):
    """dw = delta @ im2col(x).T, db = sum(delta), and dx either as the full convolution of the
    dilated delta with the rotated kernel (small maps) or by col2im (large ones), per chunk of the
    batch as in the forward; `cols` (one chunk only) is the forward's im2col matrix."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = delta.shape
    ph, pw = padding
    dtype = np.result_type(delta, x, w)
    K = C * HH * WW
    chunks = _batch_innermost_chunks(N, K * Ho * Wo, dtype.itemsize)
    need_dx = dx is not None

    def job(part):
        # rows (c, hh, ww) of dw.T, and db as one more row: the im2col matrix's row of ones times
        # delta sums delta inside the product, saving a pass over delta
        dw_t_db = np.zeros((K + 1, F), dtype=dtype)
        for n0, n1 in part:
            n = n1 - n0
            chunk_cols = cols if len(chunks) == 1 else None
            if chunk_cols is None:
                chunk_cols = _im2col(_padded_chwn(x[n0:n1], padding, scratch), (HH, WW), stride, (Ho, Wo), scratch,
                                     ones_row=True)
            delta_mat = scratch("delta_mat", (F, Ho * Wo * n), dtype)  # (f, ho wo n)
            np.copyto(delta_mat.reshape(F, Ho, Wo, n), delta[n0:n1].transpose(1, 2, 3, 0))
            # dw.T += cols @ delta_mat.T, from delta as rows (ho wo n, f): in small products OpenBLAS
            # runs that operand order fastest (the copy costs a tenth of what it saves)
            delta_rows = scratch("delta_rows", (Ho * Wo * n, F), dtype)
            np.copyto(delta_rows, delta_mat.T)
            add_small_products(chunk_cols, delta_rows, dw_t_db, scratch)
            if not need_dx:
                continue
            if ph < HH and pw < WW and F * HH * WW * n * H * W <= FULL_CONVOLUTION_MAX_ELEMENTS:
                _dx_by_full_convolution(delta[n0:n1], w, stride, padding, scratch, out=dx[n0:n1])
            else:
                _dx_by_col2im(delta_mat, w, (Ho, Wo), stride, padding, scratch, out=dx[n0:n1])
        return dw_t_db

    parts = _over_threads(job, chunks)
    dw_t_db = parts[0]
    for more in parts[1:]:
        dw_t_db += more
    return dx, np.ascontiguousarray(dw_t_db[:K].T).reshape(w.shape), dw_t_db[K].copy()


# Below this many elements in its im2col matrix, dx is one full convolution (one copy, one matrix
# product: least Python overhead); above it, the col2im scatter (a matrix C/F times smaller, and
# HH*WW adds) moves less memory. LeNet-5's conv2 (78,400 elements a sample): the full convolution
# faster for 1 and 2 samples (74 and 110 us against 112 and 138), col2im from 3 (167 against 218;
# at 6 samples 226 against 345).
FULL_CONVOLUTION_MAX_ELEMENTS = 3 * 2**16


def _dx_by_full_convolution(delta, w, stride, padding, scratch: Take, out):
    """dx (written into out, (N, C, H, W)) = full convolution of the stride-dilated delta with the
    180°-rotated kernel, the notes' formula: delta is placed every stride rows/columns into a zero
    map padded by HH-1-ph and WW-1-pw, and correlated with w[:, :, ::-1, ::-1] summed over filters."""
    N, C, H, W = out.shape
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
    np.copyto(out, dx_mat.reshape(C, H, W, N).transpose(3, 0, 1, 2))


def _dx_by_col2im(delta_mat, w, out_size, stride, padding, scratch: Take, out):
    """dx (written into out, (N, C, H, W)) by scattering the column gradients w.T @ delta back onto
    the padded input, one strided add per kernel offset: the transpose of im2col, the same sum as
    the full convolution."""
    N, C, H, W = out.shape
    F, _, HH, WW = w.shape
    (Ho, Wo), (sh, sw), (ph, pw) = out_size, stride, padding
    if (sh, sw) == (1, 1):
        return _dx_by_wide_col2im(delta_mat, w, out_size, padding, scratch, out)
    dx_pad = scratch("dx_pad", (C, H + 2 * ph, W + 2 * pw, N), delta_mat.dtype)
    dx_pad.fill(0)
    # One kernel row at a time: that row's column gradients (HH times fewer than all of them: 0.8 MB
    # for LeNet-5's conv2 at batch 64) stay in cache between their product and their adds, where all
    # of them at once went out to memory and back.
    dcols = scratch("dcols", (C * WW, Ho * Wo * N), delta_mat.dtype)
    for r in range(HH):
        w_row = np.ascontiguousarray(w[:, :, r, :].reshape(F, C * WW).T)  # (c ww, f)
        matmul_in_small_products(w_row, delta_mat, dcols)
        row = dcols.reshape(C, WW, Ho, Wo, N)
        for s in range(WW):
            dx_pad[:, r: r + sh * (Ho - 1) + 1: sh, s: s + sw * (Wo - 1) + 1: sw] += row[:, s]
    np.copyto(out, dx_pad[:, ph: ph + H, pw: pw + W].transpose(3, 0, 1, 2))


def _dx_by_wide_col2im(delta_mat, w, out_size, padding, scratch: Take, out):
    """_dx_by_col2im for stride 1, the same sums in the same order (the same numbers), with each
    add one contiguous run per channel instead of one short run per output row.

    NumPy runs an add into a strided view at about 170 ns a row on top of the arithmetic: the
    HH*WW adds of Ho*C rows of Wo*N values cost several times their arithmetic. Here delta is laid
    on rows as wide as the padded input (Wp, zero beyond Wo), so the column gradients come out with
    the padded plane's own row pitch, and offset (r, s)'s lands on the flat padded plane as one run
    starting at (r*Wp + s)*N; the zero columns fall on the next row's first columns (or, for the
    last channel, on a margin of (WW - 1)*N values past the planes) and add nothing. The products
    grow by Wp/Wo (LeNet-5's conv2 at batch 64: 0.94 -> 0.79 ms in all)."""
    N, C, H, W = out.shape
    F, _, HH, WW = w.shape
    (Ho, Wo), (ph, pw) = out_size, padding
    Hp, Wp = H + 2 * ph, W + 2 * pw
    dtype = delta_mat.dtype
    delta_wide = scratch("delta_wide_rows", (F, Ho, Wp, N), dtype)
    delta_wide[:, :, Wo:] = 0
    np.copyto(delta_wide[:, :, :Wo], delta_mat.reshape(F, Ho, Wo, N))
    plane, length = Hp * Wp * N, Ho * Wp * N
    dx_flat = scratch("dx_pad_flat", (C * plane + (WW - 1) * N,), dtype)
    dx_flat.fill(0)
    e = dx_flat.strides[0]
    # one kernel row at a time, as in _dx_by_col2im: its column gradients stay in cache
    dcols = scratch("dcols_wide", (C * WW, length), dtype)
    by_offset = dcols.reshape(C, WW, length)
    w_rows = np.ascontiguousarray(w.transpose(2, 1, 3, 0)).reshape(HH, C * WW, F)  # (hh, c ww, f)
    delta_rows = delta_wide.reshape(F, length)
    for r in range(HH):
        matmul_in_small_products(w_rows[r], delta_rows, dcols)
        for s in range(WW):
            runs = _strided(dx_flat, (C, length), (plane * e, e), offset=(r * Wp + s) * N * e, writeable=True)
            np.add(runs, by_offset[:, s], out=runs)
    np.copyto(out, dx_flat[: C * plane].reshape(C, Hp, Wp, N)[:, ph: ph + H, pw: pw + W].transpose(3, 0, 1, 2))


# OpenBLAS multiplies a small product (M * K * N up to a million, its "small matrix" path) without
# packing its operands first, which for a conv layer's skinny products runs much faster than its
# general path: LeNet-5's conv2 at batch 64 in cache, column gradients (30, 16) @ (16, 6400) in one
# product 119 us, as sixteen of 400 columns 49 us; dW (150, 6400) @ (6400, 16) 370 us, as sixteen
# sums of 400 terms added up 244 us. The products below are split so that each part stays under this.
SMALL_PRODUCT_VALUES = 10**6


def matmul_in_small_products(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[...] = a @ b for a (M, K), b (K, N) and out (M, N) (b and out with contiguous rows), as
    one stacked product of column groups small enough for OpenBLAS's small-matrix path: the same
    sums, each column of out from the same row of a and column of b."""
    M, K = a.shape
    N = b.shape[1]
    group = max(1, SMALL_PRODUCT_VALUES // max(1, M * K))
    count = N // group
    if N <= group:
        return np.matmul(a, b, out=out)
    whole = count * group
    # (count, K, group) @ ... : views of b's and out's columns, BLAS-ready (rows contiguous)
    np.matmul(a, b[:, :whole].reshape(K, count, group).transpose(1, 0, 2),
              out=out[:, :whole].reshape(M, count, group).transpose(1, 0, 2))
    if whole < N:
        np.matmul(a, b[:, whole:], out=out[:, whole:])
    return out


def add_small_products(a: np.ndarray, b: np.ndarray, out: np.ndarray, take: Take = fresh) -> np.ndarray:
    """out += a @ b for a (M, K) with contiguous rows, b (K, N) C-contiguous and out (M, N): the sum
    over K cut into groups small enough for OpenBLAS's small-matrix path, their products made as
    one stacked product and then added up (the same terms, summed in another order)."""
    M, K = a.shape
    N = b.shape[1]
    group = max(1, SMALL_PRODUCT_VALUES // max(1, M * N))
    count = K // group
    if K <= group:
        out += a @ b
        return out
    whole = count * group
    partial = take("partial_products", (count, M, N), out.dtype)
    np.matmul(a[:, :whole].reshape(M, count, group).transpose(1, 0, 2), b[:whole].reshape(count, group, N),
              out=partial)
    out += partial.sum(axis=0)
    if whole < K:
        out += a[:, whole:] @ b[whole:]
    return out


# --- dense ---------------------------------------------------------------------------------------

def dense_weight_grad(delta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dL/dW = delta.T @ x, (units, inputs), summed over the batch.

    For a batch of one this is an outer product, a matrix product with an inner dimension of 1,
    which OpenBLAS runs about five times slower than einsum's plain products (the same numbers:
    each entry is one multiplication)."""
    if delta.shape[0] == 1:
        return np.einsum("nu,nk->uk", delta, x)
    return delta.T @ x


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


# The fast max-pool's winners (row * W + col within one input plane, which the spec keeps far below
# 2**31): half the memory of int64, and a batch-256 LeNet-5 trace writes and reads 1.6 MB less.
WINNER_DTYPE = np.int32

# Max-pooling makes several passes over its input: a batch whose input is larger than this is done
# in chunks of about this size, each of which stays in the core's L2 cache through all of them.
POOL_CHUNK_BYTES = 2**21


def maxpool_forward(x, size, stride, scratch: Take = fresh, out=None, argmax_out=None):
    """Fast max-pool: the maximum over the kh*kw window offsets, each a whole-map operation, then
    the winner as the first offset, in row-major window order, whose input equals that maximum (the
    notes' rule for ties). argmax (WINNER_DTYPE) is row * W + col in the input plane. Both are new
    arrays, or written into out and argmax_out when given.
    """
    N, C, H, W = x.shape
    Ho, Wo = _pool_output_size(x.shape, size, stride)
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype) if out is None else out
    argmax = np.empty((N, C, Ho, Wo), dtype=WINNER_DTYPE) if argmax_out is None else argmax_out
    sample_bytes = C * H * W * x.itemsize

    def job(chunks):
        for n0, n1 in chunks:
            _maxpool_chunk(x[n0:n1], size, stride, out[n0:n1], argmax[n0:n1], scratch)

    _over_threads(job, _batch_chunks(N, max(1, POOL_CHUNK_BYTES // sample_bytes), sample_bytes))
    return out, argmax


def _maxpool_chunk(x, size, stride, out, argmax, scratch: Take) -> None:
    N, C, H, W = x.shape
    (kh, kw), (sh, sw) = size, stride
    Ho, Wo = out.shape[2:]
    views = [view for _, _, view in _offset_views(x, size, stride, (Ho, Wo))]
    if windows_are_disjoint(size, stride) and len(views) > 1:
        # Each offset's view walks rows only Wo long, a stride apart, which NumPy runs as one short
        # loop per row: copied out once each (together no bigger than x), the maximum and the
        # comparisons below run over long contiguous arrays instead (LeNet-5 at batch 64: maxpool1
        # 0.36 -> 0.33 ms, maxpool2 0.18 -> 0.14 ms)
        offsets = scratch("window_offsets", (len(views),) + out.shape, x.dtype)
        for number, view in enumerate(views):
            np.copyto(offsets[number], view)
        views = list(offsets)
    if len(views) == 1:
        np.copyto(out, views[0])
    else:
        np.maximum(views[0], views[1], out=out)
        for view in views[2:]:
            np.maximum(out, view, out=out)
    # The winner's number is sum_k prod_{j <= k} missed_j (missed_j: offset j is not the maximum),
    # evaluated from the last offset back as winner = missed_k * (1 + winner): a few byte-wide
    # passes instead of a masked copy per offset.
    number_type = np.uint8 if len(views) <= 2**8 else np.uint16  # the spec caps windows at 64x64
    winner = scratch("winner", out.shape, number_type)
    winner.fill(0)
    missed = scratch("missed", out.shape, bool)
    for number in range(len(views) - 2, -1, -1):
        np.not_equal(views[number], out, out=missed)
        winner += 1
        np.multiply(winner, missed, out=winner)
    offset_in_plane, corner = _window_indices(tuple(size), tuple(stride), W, Ho, Wo)
    np.take(offset_in_plane, winner, out=argmax, mode="clip")  # every number is valid; "raise" would buffer
    argmax += corner


@functools.lru_cache(maxsize=256)
def _window_indices(size, stride, W, Ho, Wo):
    """(offset number -> r*W + s, each window's top-left r*W + s), read-only, made once per shape:
    at batch 1 building them costs as much as using them."""
    (kh, kw), (sh, sw) = size, stride
    offset_in_plane = (np.arange(kh)[:, None] * W + np.arange(kw)).reshape(-1).astype(WINNER_DTYPE)
    corner = ((np.arange(Ho) * (sh * W))[:, None] + np.arange(Wo) * sw).astype(WINNER_DTYPE)
    offset_in_plane.flags.writeable = corner.flags.writeable = False
    return offset_in_plane, corner


def windows_are_disjoint(size, stride) -> bool:
    """Whether pooling windows of this size and stride never overlap (each input in one at most)."""
    return stride[0] >= size[0] and stride[1] >= size[1]


def maxpool_backward(dout, argmax, x_shape, scratch: Take = fresh, *, size=None, stride=None, dx_out=None):
    """Each output's delta goes to its winning input only.

    With `size` and `stride` given and windows that do not overlap (stride >= size on both axes),
    every input wins at most one window, so the deltas are simply stored at their winners' flat
    (n, c, row * W + col) indices; otherwise (overlapping, or the window unknown) one unbuffered
    scatter-add, so that inputs winning several windows add them up. dx is a new array, or written
    into dx_out.
    """
    N, C, H, W = x_shape
    # a new dx is zeroed whole (calloc: measured faster than zeroing it chunk by chunk); a given one,
    # a block of a bigger batch's, chunk by chunk
    dx = np.zeros(x_shape, dtype=dout.dtype) if dx_out is None else dx_out
    disjoint = size is not None and stride is not None and windows_are_disjoint(size, stride)
    if not disjoint:
        if dx_out is not None:
            dx.fill(0)
        index = scratch("index", argmax.shape, np.int64)
        np.add(argmax, _plane_starts(N, C, H * W), out=index)
        np.add.at(dx.reshape(-1), index.reshape(-1), dout.reshape(-1))
        return dx

    def job(chunks):  # each sample's planes are its own: chunks of the batch never meet
        for n0, n1 in chunks:
            index = scratch("index", argmax[n0:n1].shape, np.int64)
            np.add(argmax[n0:n1], _plane_starts(n1 - n0, C, H * W), out=index)
            if dx_out is not None:
                dx[n0:n1] = 0
            dx[n0:n1].reshape(-1)[index.reshape(-1)] = dout[n0:n1].reshape(-1)

    sample_bytes = C * H * W * dout.itemsize
    _over_threads(job, _batch_chunks(N, max(1, POOL_CHUNK_BYTES // sample_bytes), sample_bytes))
    return dx


@functools.lru_cache(maxsize=64)
def _plane_starts(N, C, plane_size):
    """(N, C, 1, 1) flat index of each plane's first element, read-only, made once per shape."""
    starts = (np.arange(N * C, dtype=np.int64) * plane_size).reshape(N, C, 1, 1)
    starts.flags.writeable = False
    return starts


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
