"""Sparse ops on :class:`SparseTensor`, each a custom autograd Function where it scatters.

The convolutions take their kernel map from the tensor's :class:`CoordinateCache`, so
the map is built once per resolution and reused in forward and backward.  Each
Function is autocast-aware: under autocast it computes in the autocast dtype and hands
back gradients in the dtypes of its inputs.
"""

from __future__ import annotations

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
_BLOCK_BYTES = 8 << 20
# Below this many elements (N * K * C) a submanifold convolution gathers one (N, K*C) im2col
# matrix and makes one matmul: on small tensors (the coarse levels of a U-Net) the
# per-offset loop costs more in op overhead than the K-fold copy of the features.
_IM2COL_ELEMENTS = 1 << 22


def _compute_dtype(feats: Tensor, weight: Tensor) -> torch.dtype:
    """Dtype of the matmuls: the autocast dtype when autocast is on for the device."""
    device_type = feats.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(feats.dtype, weight.dtype)


def _no_autocast(t: Tensor) -> AbstractContextManager:
    """Disable autocast inside a Function body; operands are already cast."""
    return torch.autocast(device_type=t.device.type, enabled=False)


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
    product; row blocks keep it in torch's batched kernel.
    """
    n = a.shape[0]
    blocks = _TN_BLOCKS if n >= _TN_BLOCKS * 256 else 1
    m = n - n % blocks
    rows = m // blocks
    out = torch.bmm(
        a[:m].view(blocks, rows, a.shape[1]).transpose(1, 2), b[:m].view(blocks, rows, b.shape[1])
    ).sum(dim=0)
    if m < n:
        out.addmm_(a[m:].t(), b[m:])
    return out


def _im2col(x: Tensor, columns: Tensor, n_off: int) -> Tensor:
    """(N, K*C) matrix whose row j holds the K neighbours of site j (zeros where absent)."""
    return _pad_row(x).index_select(0, columns).view(-1, n_off * x.shape[1])


def _row_blocks(n: int, channels: int) -> list[tuple[int, int]]:
    """Row ranges whose gather buffer stays cache-sized (about _BLOCK_BYTES)."""
    step = max(1, _BLOCK_BYTES // (4 * max(channels, 1)))
    return [(start, min(n, start + step)) for start in range(0, n, step)]


def _submanifold_forward(f: Tensor, w: Tensor, kmap: NeighbourMap) -> Tensor:
    """out[j] = sum_k f[table[k, j]] @ w[k]; centre offset is a plain matmul.

    Dense offsets run over blocks of output rows so that, with sorted sites, the gathered
    rows and the output block stay in cache.
    """
    n_off, c_in, c_out = w.shape
    if f.numel() * n_off <= _IM2COL_ELEMENTS:
        return _im2col(f, kmap.columns, n_off) @ w.reshape(n_off * c_in, c_out)
    centre = n_off // 2
    out = f @ w[centre]
    dense = [k for k, c in enumerate(kmap.counts) if c and k != centre and not kmap.sparse_pairs[k]]
    if dense:
        padded = _pad_row(f)
        blocks = _row_blocks(f.shape[0], f.shape[1])
        buf = f.new_empty(blocks[0][1] - blocks[0][0], f.shape[1])
        for start, stop in blocks:
            b, o = buf[: stop - start], out[start:stop]
            for k in dense:
                torch.index_select(padded, 0, kmap.table[k, start:stop], out=b)
                o.addmm_(b, w[k])
    for k, pairs in enumerate(kmap.sparse_pairs):
        if pairs is not None and kmap.counts[k]:
            in_idx, out_idx = pairs
            out.index_add_(0, out_idx, f[in_idx] @ w[k])
    return out


def _submanifold_backward(
    f: Tensor, w: Tensor, g: Tensor, kmap: NeighbourMap, need_x: bool, need_w: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of :func:`_submanifold_forward`.

    The pairs of offset k are the swapped pairs of its mirror K-1-k, so gathering the
    output gradient through the mirror column gives, at every input site, the gradient
    of the output it feeds through offset k: one gather serves both gradients.
    """
    n_off, c_in, c_out = w.shape
    if max(f.numel(), g.numel()) * n_off <= _IM2COL_ELEMENTS:
        gx = gw = None
        if need_x:
            w_t = w.transpose(1, 2).reshape(n_off * c_out, c_in)
            gx = _im2col(g, kmap.mirror_columns, n_off) @ w_t
        if need_w:
            gw = _tn_mm(_im2col(f, kmap.columns, n_off), g).view(n_off, c_in, c_out)
        return gx, gw
    centre = n_off // 2
    gx = g @ w[centre].t() if need_x else None
    gw = torch.zeros_like(w) if need_w else None
    if gw is not None:
        gw[centre] = _tn_mm(f, g)
    dense = [k for k, c in enumerate(kmap.counts) if c and k != centre and not kmap.sparse_pairs[k]]
    if dense:
        padded = _pad_row(g)
        blocks = _row_blocks(f.shape[0], g.shape[1])
        buf = g.new_empty(blocks[0][1] - blocks[0][0], g.shape[1])
        for start, stop in blocks:
            b = buf[: stop - start]
            for k in dense:
                torch.index_select(padded, 0, kmap.table[n_off - 1 - k, start:stop], out=b)
                if gx is not None:
                    gx[start:stop].addmm_(b, w[k].t())
                if gw is not None:
                    gw[k] += _tn_mm(f[start:stop], b)
    for k, pairs in enumerate(kmap.sparse_pairs):
        if pairs is not None and kmap.counts[k]:
            in_idx, out_idx = pairs
            g_k = g[out_idx]
            if gx is not None:
                gx.index_add_(0, in_idx, g_k @ w[k].t())
            if gw is not None:
                gw[k] = _tn_mm(f[in_idx], g_k)
    return gx, gw


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
            return slots.view(kmap.num_coarse, v * c_in) @ w.reshape(v * c_in, c_out)

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
                gx = (g @ w_flat.t()).view(-1, c_in).index_select(0, kmap.slot)
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
            return (f @ w_flat).view(-1, c_out).index_select(0, kmap.slot)

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
                gx = slots @ w.permute(1, 0, 2).reshape(c_in, v * c_out).t()
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
    feats = x.feats @ weight if bias is None else torch.addmm(bias, x.feats, weight)
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
