"""Sparse ops on :class:`SparseTensor`, each a custom autograd Function where it scatters.

The convolutions take their kernel map from the tensor's :class:`CoordinateCache`, so
the map is built once per resolution and reused in forward and backward.  Each
Function is autocast-aware: under autocast it computes in the autocast dtype and hands
back gradients in the dtypes of its inputs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor
from torch.autograd.function import Function, FunctionCtx, once_differentiable

from analysis_lib.errors import EngineError
from analysis_lib.sparse.kmap import DownsampleMap, NeighbourMap, site_keys
from analysis_lib.sparse.tensor import SparseTensor, check_coords

__all__ = [
    "apply_feats",
    "cat",
    "from_dense",
    "linear",
    "strided_conv",
    "submanifold_conv",
    "to_dense",
    "transposed_conv",
]


_TN_BLOCKS = 8
# The im2col matrix of a submanifold convolution is gathered into one reused workspace in row
# blocks of at most this many bytes: it bounds the workspace (the matrix of a large level is
# gigabytes), and on the CPU smaller blocks were no faster.
_BLOCK_BYTES = 16 << 20
# Reduced-precision matmuls on the CPU go to oneDNN, which compiles a kernel for every new
# shape (0.5-2 ms, several times the product itself). Every event batch has a new voxel
# count, so there the row count of every product is rounded up to a few fixed sizes, the
# padding rows zero: four sizes per octave, at least _MIN_ROWS.
_MIN_ROWS = 256


def _compute_dtype(feats: Tensor, weight: Tensor) -> torch.dtype:
    """Dtype of the matmuls: the autocast dtype when autocast is on for the device."""
    device_type = feats.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(feats.dtype, weight.dtype)


def _no_autocast(t: Tensor) -> AbstractContextManager:
    """Disable autocast inside a Function body; operands are already cast."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def _fixed_shapes(t: Tensor) -> bool:
    """Whether products on ``t`` (already in the compute dtype) need bucketed row counts."""
    return t.device.type == "cpu" and t.dtype in (torch.bfloat16, torch.float16)


def _bucket(n: int) -> int:
    """``n`` rounded up to one of four sizes per octave (at least :data:`_MIN_ROWS`)."""
    if n <= _MIN_ROWS:
        return _MIN_ROWS
    step = 1 << ((n - 1).bit_length() - 3)
    return -(-n // step) * step


def _padded_rows(n: int, t: Tensor) -> int:
    """Rows to compute for ``n`` rows of ``t``: :func:`_bucket` where shapes must repeat."""
    return _bucket(n) if _fixed_shapes(t) else n


def _pad_to(x: Tensor, rows: int) -> Tensor:
    """``x`` (N, C) with zero rows appended up to ``rows``."""
    if rows == x.shape[0]:
        return x.contiguous()
    return torch.cat([x, x.new_zeros(rows - x.shape[0], x.shape[1])])


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for tall ``a`` (N, A), computed on :func:`_padded_rows` rows."""
    n = a.shape[0]
    return (_pad_to(a, _padded_rows(n, a)) @ b)[:n]


def _pad_row(x: Tensor) -> Tensor:
    """Append one zero row, (N, C) -> (N+1, C), the target of absent neighbours."""
    return torch.cat([x, x.new_zeros(1, x.shape[1])])


def _to_slots(x: Tensor, slot: Tensor, rows: int) -> Tensor:
    """Scatter the rows of ``x`` (N, C) to the distinct rows ``slot`` of a zero (rows, C)."""
    out = x.new_zeros(rows, x.shape[1])
    out.index_copy_(0, slot, x)
    return out


def _gather_slots(x: Tensor, child: Tensor) -> Tensor:
    """Rows ``x[child]`` with zeros where ``child`` is ``N`` (a gather beats a scatter)."""
    return _pad_row(x).index_select(0, child)


def _sorted_rows(x: Tensor, order: Tensor | None) -> Tensor:
    """Rows of ``x`` (N, C) in lexicographic site order, contiguous."""
    return x.contiguous() if order is None else x.index_select(0, order)


def _unsorted_rows(x: Tensor, inverse: Tensor | None) -> Tensor:
    """Inverse of :func:`_sorted_rows`, given the inverse permutation."""
    return x if inverse is None else x.index_select(0, inverse)


def _tn_mm(a: Tensor, b: Tensor) -> Tensor:
    """``a.T @ b`` for tall ``a`` (N, A) and ``b`` (N, B), as a batched matmul over row blocks.

    A single GEMM with a long reduction axis is threaded by the BLAS library itself on
    CPU, and switching between its thread team and torch's costs far more than the
    product; row blocks keep it in torch's batched kernel.  Short ones are one plain GEMM.
    Where shapes must repeat, both are zero-padded to :func:`_padded_rows` rows.
    """
    rows = _padded_rows(a.shape[0], a)
    a, b = _pad_to(a, rows), _pad_to(b, rows)
    if rows < _TN_BLOCKS * 256:
        return a.t() @ b
    m = rows - rows % _TN_BLOCKS
    step = m // _TN_BLOCKS
    out = torch.bmm(
        a[:m].view(_TN_BLOCKS, step, a.shape[1]).transpose(1, 2),
        b[:m].view(_TN_BLOCKS, step, b.shape[1]),
    ).sum(dim=0)
    if m < rows:
        out.addmm_(a[m:].t(), b[m:])
    return out


def _row_blocks(n: int, row_bytes: int, fixed: bool) -> list[tuple[int, int, int]]:
    """``(start, stop, rows)`` covering ``range(n)``: blocks of a power-of-two row count of at
    most :data:`_BLOCK_BYTES`, the last one shorter; ``rows >= stop - start`` is the count to
    compute, the last block's :func:`_bucket` when ``fixed``."""
    size = 1 << max(0, (_BLOCK_BYTES // max(row_bytes, 1)).bit_length() - 1)
    size = max(size, _MIN_ROWS) if fixed else size
    blocks = []
    for start in range(0, max(n, 1), size):
        stop = min(n, start + size)
        rows = min(_bucket(stop - start), size) if fixed else stop - start
        blocks.append((start, stop, rows))
    return blocks


_WORKSPACE = threading.local()


def _workspace(x: Tensor, numel: int) -> Tensor:
    """A flat buffer of at least ``numel`` elements of ``x``'s dtype, reused by every im2col
    block on the CPU: a buffer that stays in cache gathers about a quarter faster than fresh
    memory.  Each thread has its own; on other devices the allocator already caches."""
    if x.device.type != "cpu":
        return x.new_empty(numel)
    buffers = _WORKSPACE.__dict__.setdefault("buffers", {})
    buf = buffers.get(x.dtype)
    if buf is None or buf.numel() < numel:
        buf = buffers[x.dtype] = x.new_empty(numel)
    return buf


def _im2col_blocks(x: Tensor, columns: Tensor, n_off: int):
    """Yield ``(start, stop, block)``: rows start:stop of the (N, K*C) im2col matrix of
    ``x`` (N, C) through ``columns`` (N, K), zeros where the index is N, followed by zero rows
    up to the block's computed row count (see :func:`_row_blocks`).

    Blocks share one workspace: use each before taking the next.
    """
    padded = _pad_row(x)
    width = n_off * x.shape[1]
    blocks = _row_blocks(x.shape[0], width * x.element_size(), _fixed_shapes(x))
    buf = _workspace(x, max(rows for _, _, rows in blocks) * width)
    for start, stop, rows in blocks:
        block = buf[: rows * width].view(rows, width)
        torch.index_select(padded, 0, columns[start:stop].view(-1),
                           out=block[: stop - start].view(-1, x.shape[1]))
        block[stop - start:].zero_()
        yield start, stop, block


def _computed_rows(x: Tensor, n_off: int) -> int:
    """Rows of the outputs that :func:`_im2col_blocks` of ``x`` writes (``N`` or more)."""
    blocks = _row_blocks(x.shape[0], n_off * x.shape[1] * x.element_size(), _fixed_shapes(x))
    return blocks[-1][0] + blocks[-1][2]


def _submanifold_forward(f: Tensor, w: Tensor, kmap: NeighbourMap) -> Tensor:
    """out[j] = sum_k f[columns[j, k]] @ w[k], as im2col matmuls.

    One GEMM over all K offsets, zeros included, beats a gather-matmul-scatter per offset on
    the CPU: the sites of a U-Net level have about half their neighbours, and the op
    overhead of K small products costs more than the doubled arithmetic.
    """
    n_off, c_in, c_out = w.shape
    w_flat = w.reshape(n_off * c_in, c_out)
    out = f.new_empty(_computed_rows(f, n_off), c_out)
    for start, _, block in _im2col_blocks(f, kmap.columns, n_off):
        torch.mm(block, w_flat, out=out[start:start + block.shape[0]])
    return out[: f.shape[0]]


def _submanifold_backward(
    f: Tensor, w: Tensor, g: Tensor, kmap: NeighbourMap, need_x: bool, need_w: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of :func:`_submanifold_forward` from one im2col matrix of ``g``.

    The pairs of offset k are the swapped pairs of its mirror K-1-k, so column block K-1-k
    of the im2col matrix ``G`` of ``g`` holds, in row i, the gradient of the output that site
    i feeds through offset k: ``grad_x = G @ flip(w)^T`` and ``grad_w = flip(f^T @ G)``.
    Without ``grad_x`` (the input layer, one channel) the narrower im2col matrix of ``f``
    gives ``grad_w``.
    """
    n_off, c_in, c_out = w.shape
    n = f.shape[0]
    if not need_x:
        gw = None
        g = _pad_to(g, _computed_rows(f, n_off))
        for start, _, block in _im2col_blocks(f, kmap.columns, n_off):
            part = _tn_mm(block, g[start:start + block.shape[0]])
            gw = part if gw is None else gw.add_(part)
        return None, gw.view(n_off, c_in, c_out)
    rows = _computed_rows(g, n_off)
    gx = f.new_empty(rows, c_in)
    w_t = w.flip(0).transpose(1, 2).reshape(n_off * c_out, c_in)
    gw = f.new_zeros(c_in, n_off * c_out) if need_w else None
    f = _pad_to(f, rows) if need_w else f
    for start, _, block in _im2col_blocks(g, kmap.columns, n_off):
        stop = start + block.shape[0]
        torch.mm(block, w_t, out=gx[start:stop])
        if gw is not None:  # narrow f^T: one plain GEMM is as fast as _tn_mm's blocks
            gw.addmm_(f[start:stop].t(), block)
    if gw is not None:
        gw = gw.view(c_in, n_off, c_out).flip(1).transpose(0, 1).contiguous()
    return gx[:n], gw


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _save_inputs(
    ctx: FunctionCtx, feats: Tensor, weight: Tensor, kmap: object, order: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Cast features and weight to the compute dtype (features contiguous, in ``order`` when
    given), and keep them, the kernel map and the input dtypes for the backward pass."""
    dtype = _compute_dtype(feats, weight)
    f, w = _sorted_rows(feats.to(dtype), order), weight.to(dtype)
    ctx.save_for_backward(f, w)
    ctx.kmap = kmap
    ctx.dtypes = (feats.dtype, weight.dtype)
    return f, w


class _SubmanifoldConvFn(Function):
    """Submanifold convolution on a :class:`NeighbourMap`."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx: FunctionCtx, feats: Tensor, weight: Tensor, kmap: NeighbourMap) -> Tensor:
        f, w = _save_inputs(ctx, feats, weight, kmap, kmap.order)
        with _no_autocast(f):
            return _unsorted_rows(_submanifold_forward(f, w, kmap), kmap.inverse)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        f, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        kmap: NeighbourMap = ctx.kmap
        with _no_autocast(f):
            g = _sorted_rows(grad_out.to(f.dtype), kmap.order)
            gx, gw = _submanifold_backward(f, w, g, kmap, need_x, need_w)
            if gx is not None:
                gx = _unsorted_rows(gx, kmap.inverse)
        return _cast(gx, ctx.dtypes[0]), _cast(gw, ctx.dtypes[1]), None


class _StridedConvFn(Function):
    """Kernel-2 stride-2 convolution on a :class:`DownsampleMap` (fine -> coarse).

    The fine features are placed in the ``parent * V + parity`` rows of a zero buffer,
    which viewed as (N_coarse, V*C_in) makes the convolution one matmul.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx: FunctionCtx, feats: Tensor, weight: Tensor, kmap: DownsampleMap) -> Tensor:
        f, w = _save_inputs(ctx, feats, weight, kmap)
        v, c_in, c_out = w.shape
        with _no_autocast(f):
            slots = _gather_slots(f, kmap.child)
            return _mm(slots.view(kmap.num_coarse, v * c_in), w.reshape(v * c_in, c_out))

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        f, w = ctx.saved_tensors
        kmap: DownsampleMap = ctx.kmap
        v, c_in, c_out = w.shape
        gx = gw = None
        with _no_autocast(f):
            g = grad_out.to(f.dtype).contiguous()
            w_flat = w.reshape(v * c_in, c_out)
            if ctx.needs_input_grad[0]:
                gx = _mm(g, w_flat.t()).view(-1, c_in).index_select(0, kmap.slot)
            if ctx.needs_input_grad[1]:
                slots = _gather_slots(f, kmap.child)
                gw = _tn_mm(slots.view(kmap.num_coarse, v * c_in), g).view(v, c_in, c_out)
        return _cast(gx, ctx.dtypes[0]), _cast(gw, ctx.dtypes[1]), None


class _TransposedConvFn(Function):
    """Kernel-2 stride-2 transposed convolution on a :class:`DownsampleMap` (coarse -> fine).

    One matmul gives every coarse site's V outputs; each fine site picks its row.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx: FunctionCtx, feats: Tensor, weight: Tensor, kmap: DownsampleMap) -> Tensor:
        f, w = _save_inputs(ctx, feats, weight, kmap)
        v, c_in, c_out = w.shape
        with _no_autocast(f):
            w_flat = w.permute(1, 0, 2).reshape(c_in, v * c_out)
            return _mm(f, w_flat).view(-1, c_out).index_select(0, kmap.slot)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        f, w = ctx.saved_tensors
        kmap: DownsampleMap = ctx.kmap
        v, c_in, c_out = w.shape
        gx = gw = None
        with _no_autocast(f):
            g = grad_out.to(f.dtype).contiguous()
            slots = _gather_slots(g, kmap.child).view(-1, v * c_out)
            if ctx.needs_input_grad[0]:
                gx = _mm(slots, w.permute(1, 0, 2).reshape(c_in, v * c_out).t())
            if ctx.needs_input_grad[1]:
                gw = _tn_mm(f, slots).view(c_in, v, c_out).permute(1, 0, 2).contiguous()
        return _cast(gx, ctx.dtypes[0]), _cast(gw, ctx.dtypes[1]), None


class _ScatterRowsFn(Function):
    """Place N rows at distinct row indices of a zero (rows, C) tensor."""

    @staticmethod
    def forward(ctx: FunctionCtx, feats: Tensor, index: Tensor, rows: int) -> Tensor:
        ctx.save_for_backward(index)
        return _to_slots(feats, index, rows)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (index,) = ctx.saved_tensors
        return grad_out.index_select(0, index), None, None


class _GatherRowsFn(Function):
    """Read N distinct rows of a (rows, C) tensor."""

    @staticmethod
    def forward(ctx: FunctionCtx, table: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.rows = table.shape[0]
        return table.index_select(0, index)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (index,) = ctx.saved_tensors
        return _to_slots(grad_out.contiguous(), index, ctx.rows), None


def _kernel_size(weight: Tensor, dim: int) -> int:
    """Edge of the cubic kernel whose K**D offsets index ``weight``'s first axis."""
    volume = weight.shape[0]
    k = round(volume ** (1 / dim))
    if k**dim != volume or k % 2 == 0:
        raise EngineError(
            f"weight has {volume} offsets, not k**{dim} for an odd kernel size k "
            f"(weight shape {tuple(weight.shape)})"
        )
    return k


def _check_weight(x: SparseTensor, weight: Tensor, volume: int | None) -> None:
    """Weight must be (V, C_in, C_out) with C_in = channels of ``x``."""
    if weight.dim() != 3 or (volume is not None and weight.shape[0] != volume):
        expected = "V" if volume is None else str(volume)
        raise EngineError(
            f"weight must have shape ({expected}, C_in, C_out), got {tuple(weight.shape)}"
        )
    if weight.shape[1] != x.num_channels:
        raise EngineError(
            f"weight expects C_in={weight.shape[1]} (shape {tuple(weight.shape)}) but the "
            f"input has {x.num_channels} channels"
        )


def _add_bias(feats: Tensor, bias: Tensor | None) -> Tensor:
    return feats if bias is None else feats + bias


def submanifold_conv(x: SparseTensor, weight: Tensor, bias: Tensor | None = None) -> SparseTensor:
    """Submanifold convolution: output sites = input sites.

    Parameters
    ----------
    x : SparseTensor
        Input, (N, C_in) features.
    weight : (k**D, C_in, C_out)
        One slice per offset of :func:`kernel_offsets`; ``out[p] = sum_o in[p+o] @ W[o]``
        over active ``p+o``, i.e. ``conv{D}d`` with padding ``k//2`` read at the sites.
    bias : (C_out,) or None

    Returns
    -------
    SparseTensor
        (N, C_out) features on the sites of ``x``.
    """
    _check_weight(x, weight, None)
    kmap = x.cache.neighbour_map(x.stride, _kernel_size(weight, x.dim))
    feats = _SubmanifoldConvFn.apply(x.feats, weight, kmap)
    return SparseTensor.derived(_add_bias(feats, bias), x.stride, x.cache)


def strided_conv(x: SparseTensor, weight: Tensor, bias: Tensor | None = None) -> SparseTensor:
    """Convolution with kernel 2 and stride 2 onto the sites ``unique(floor(p/2))``.

    Parameters
    ----------
    x : SparseTensor
        Input at stride s, (N, C_in) features.
    weight : (2**D, C_in, C_out)
        Slice ``sum_d bit_d * 2**(D-1-d)`` acts on fine sites with parity bits ``bit``
        (first axis slowest), as ``conv{D}d(stride=2)``.
    bias : (C_out,) or None

    Returns
    -------
    SparseTensor
        Stride 2s, coarse sites in lexicographic order.
    """
    _check_weight(x, weight, 2**x.dim)
    kmap = x.cache.downsample_map(x.stride)
    feats = _StridedConvFn.apply(x.feats, weight, kmap)
    return SparseTensor.derived(_add_bias(feats, bias), 2 * x.stride, x.cache)


def transposed_conv(x: SparseTensor, weight: Tensor, bias: Tensor | None = None) -> SparseTensor:
    """Transposed convolution with kernel 2 and stride 2 back onto the cached finer sites.

    ``out[p] = in[floor(p/2)] @ W[parity(p)]``: ``conv_transpose{D}d(stride=2)`` read at
    the sites of stride ``x.stride // 2`` recorded in ``x``'s cache.

    Parameters
    ----------
    x : SparseTensor
        Input at stride 2s (s >= 1), produced from stride s within the same cache.
    weight : (2**D, C_in, C_out)
    bias : (C_out,) or None
    """
    _check_weight(x, weight, 2**x.dim)
    if x.stride < 2 or x.stride % 2:
        raise EngineError(f"transposed_conv needs an even input stride, got {x.stride}")
    fine = x.stride // 2
    kmap = x.cache.downsample_map(fine)
    feats = _TransposedConvFn.apply(x.feats, weight, kmap)
    return SparseTensor.derived(_add_bias(feats, bias), fine, x.cache)


def linear(x: SparseTensor, weight: Tensor, bias: Tensor | None = None) -> SparseTensor:
    """1x1 convolution: ``feats @ weight + bias``.

    Parameters
    ----------
    x : SparseTensor
    weight : (C_in, C_out)
    bias : (C_out,) or None
    """
    if weight.dim() != 2 or weight.shape[0] != x.num_channels:
        raise EngineError(
            f"weight must have shape ({x.num_channels}, C_out) for an input with "
            f"{x.num_channels} channels, got {tuple(weight.shape)}"
        )
    dtype = _compute_dtype(x.feats, weight)
    feats = _add_bias(_mm(x.feats.to(dtype), weight.to(dtype)), bias)
    return x.with_feats(feats)


def apply_feats(x: SparseTensor, fn: Callable[[Tensor], Tensor]) -> SparseTensor:
    """Apply a row-wise torch callable (BatchNorm, activation, dropout) to ``x.feats``.

    Empty tensors pass through unchanged: batch statistics of nothing are undefined.
    """
    if x.feats.shape[0] == 0:
        return x
    return x.with_feats(fn(x.feats))


def cat(tensors: Sequence[SparseTensor]) -> SparseTensor:
    """Concatenate the features of tensors on one site set along channels."""
    if len(tensors) == 0:
        raise EngineError("cat needs at least one tensor, got none")
    first = tensors[0]
    for i, t in enumerate(tensors[1:], start=1):
        same = t.cache is first.cache and t.stride == first.stride
        if not same and not (
            t.coords.shape == first.coords.shape and torch.equal(t.coords, first.coords)
        ):
            raise EngineError(
                f"cat: tensors[{i}] has {len(t)} sites at stride {t.stride}, a different "
                f"site set from tensors[0] ({len(first)} sites at stride {first.stride})"
            )
    return first.with_feats(torch.cat([t.feats for t in tensors], dim=1))


def _dense_shape(x: SparseTensor, spatial_shape: Sequence[int] | None, batch_size: int | None):
    extent = x.sites.extent
    shape = tuple(extent[1:]) if spatial_shape is None else tuple(int(s) for s in spatial_shape)
    batch = extent[0] if batch_size is None else int(batch_size)
    if len(shape) != x.dim:
        raise EngineError(f"spatial_shape must have {x.dim} entries, got {shape}")
    if batch < extent[0] or any(s < e for s, e in zip(shape, extent[1:], strict=True)):
        raise EngineError(
            f"batch_size={batch}, spatial_shape={shape} cannot hold sites with extent "
            f"{extent} (batch first)"
        )
    return batch, shape


def to_dense(
    x: SparseTensor,
    spatial_shape: Sequence[int] | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Scatter to a dense (B, C, *spatial_shape) tensor with zeros at inactive sites.

    Parameters
    ----------
    x : SparseTensor
    spatial_shape : D ints or None
        Defaults to the smallest shape that holds every site.
    batch_size : int or None
        Defaults to the highest batch index + 1.
    """
    batch, shape = _dense_shape(x, spatial_shape, batch_size)
    extent = (batch, *shape)
    rows = 1
    for s in extent:
        rows *= s
    index = site_keys(x.coords, extent)
    flat = _ScatterRowsFn.apply(x.feats, index, rows)
    return flat.view(*extent, x.num_channels).movedim(-1, 1)


def from_dense(dense: Tensor, coords: Tensor | None = None) -> SparseTensor:
    """Read a dense (B, C, *S) tensor at given or at all non-zero sites.

    Parameters
    ----------
    dense : (B, C, *S) floating, D = len(S) in (2, 3)
    coords : (N, 1+D) int or None
        Sites to read; default every site where any channel is non-zero (sorted).
    """
    if dense.dim() not in (4, 5) or not dense.is_floating_point():
        raise EngineError(
            f"dense must be a floating (B, C, *S) tensor with 2 or 3 spatial axes, got "
            f"shape {tuple(dense.shape)} dtype {dense.dtype}"
        )
    extent = (dense.shape[0], *dense.shape[2:])
    if coords is None:
        coords = (dense != 0).any(dim=1).nonzero()
    coords_checked = check_coords(coords)
    if coords_checked.shape[1] != len(extent):
        raise EngineError(
            f"coords has {coords_checked.shape[1] - 1} spatial axes but dense has {len(extent) - 1}"
        )
    bound = torch.tensor(extent, device=coords_checked.device)
    if coords_checked.shape[0] and bool((coords_checked >= bound).any()):
        raise EngineError(f"coords lie outside dense of extent {extent} (batch first)")
    table = dense.movedim(1, -1).reshape(-1, dense.shape[1])
    feats = _GatherRowsFn.apply(table, site_keys(coords_checked, extent))
    return SparseTensor(coords_checked, feats)
