"""Sparse ops on :class:`SparseTensor`, each a custom autograd Function where it scatters.

The convolutions take their kernel map from the tensor's :class:`CoordinateCache`, so
the map is built once per resolution and reused in forward and backward.  Each
Function is autocast-aware: under autocast it computes in the autocast dtype and hands
back gradients in the dtypes of its inputs. Their products live in
:mod:`analysis_lib.sparse.kernels`; conversion to and from dense tensors in
:mod:`analysis_lib.sparse.dense`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.autograd.function import Function, FunctionCtx, once_differentiable

from analysis_lib.core.errors import EngineError
from analysis_lib.sparse import native
from analysis_lib.sparse.downsample import DownsampleMap
from analysis_lib.sparse.kernels import (
    compute_dtype,
    gather_slots,
    mm,
    no_autocast,
    sorted_rows,
    submanifold_backward,
    submanifold_forward,
    tn_mm,
    unsorted_rows,
)
from analysis_lib.sparse.kmap import NeighbourMap
from analysis_lib.sparse.tensor import SparseTensor

__all__ = [
    "apply_feats",
    "cat",
    "linear",
    "norm_relu",
    "strided_conv",
    "submanifold_conv",
    "transposed_conv",
]


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _save_inputs(
    ctx: FunctionCtx, feats: Tensor, weight: Tensor, kmap: object, order: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Cast features and weight to the compute dtype (features contiguous, in ``order`` when
    given), and keep them, the kernel map and the input dtypes for the backward pass."""
    dtype = compute_dtype(feats, weight)
    f, w = sorted_rows(feats.to(dtype), order), weight.to(dtype)
    ctx.save_for_backward(f, w)
    ctx.kmap = kmap
    ctx.dtypes = (feats.dtype, weight.dtype)
    return f, w


class _SubmanifoldConvFn(Function):
    """Submanifold convolution on a :class:`NeighbourMap`."""

    @staticmethod
    def forward(ctx: FunctionCtx, feats: Tensor, weight: Tensor, kmap: NeighbourMap) -> Tensor:
        f, w = _save_inputs(ctx, feats, weight, kmap, kmap.order)
        return unsorted_rows(submanifold_forward(f, w, kmap), kmap.inverse)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        f, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        kmap: NeighbourMap = ctx.kmap
        with no_autocast(f):
            g = sorted_rows(grad_out.to(f.dtype), kmap.order)
            gx, gw = submanifold_backward(f, w, g, kmap, need_x, need_w)
            if gx is not None:
                gx = unsorted_rows(gx, kmap.inverse)
        return _cast(gx, ctx.dtypes[0]), _cast(gw, ctx.dtypes[1]), None


class _StridedConvFn(Function):
    """Kernel-2 stride-2 convolution on a :class:`DownsampleMap` (fine -> coarse).

    The fine features are placed in the ``parent * V + parity`` rows of a zero buffer,
    which viewed as (N_coarse, V*C_in) makes the convolution one matmul.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, feats: Tensor, weight: Tensor, kmap: DownsampleMap) -> Tensor:
        f, w = _save_inputs(ctx, feats, weight, kmap)
        v, c_in, c_out = w.shape
        slots = gather_slots(f, kmap.child)
        return mm(slots.view(kmap.num_coarse, v * c_in), w.reshape(v * c_in, c_out))

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        f, w = ctx.saved_tensors
        kmap: DownsampleMap = ctx.kmap
        v, c_in, c_out = w.shape
        gx = gw = None
        with no_autocast(f):
            g = grad_out.to(f.dtype).contiguous()
            w_flat = w.reshape(v * c_in, c_out)
            if ctx.needs_input_grad[0]:
                gx = mm(g, w_flat.t()).view(-1, c_in).index_select(0, kmap.slot)
            if ctx.needs_input_grad[1]:
                slots = gather_slots(f, kmap.child)
                gw = tn_mm(slots.view(kmap.num_coarse, v * c_in), g).view(v, c_in, c_out)
        return _cast(gx, ctx.dtypes[0]), _cast(gw, ctx.dtypes[1]), None


class _TransposedConvFn(Function):
    """Kernel-2 stride-2 transposed convolution on a :class:`DownsampleMap` (coarse -> fine).

    One matmul gives every coarse site's V outputs; each fine site picks its row.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, feats: Tensor, weight: Tensor, kmap: DownsampleMap) -> Tensor:
        f, w = _save_inputs(ctx, feats, weight, kmap)
        v, c_in, c_out = w.shape
        w_flat = w.permute(1, 0, 2).reshape(c_in, v * c_out)
        return mm(f, w_flat).view(-1, c_out).index_select(0, kmap.slot)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        f, w = ctx.saved_tensors
        kmap: DownsampleMap = ctx.kmap
        v, c_in, c_out = w.shape
        gx = gw = None
        with no_autocast(f):
            g = grad_out.to(f.dtype).contiguous()
            slots = gather_slots(g, kmap.child).view(-1, v * c_out)
            if ctx.needs_input_grad[0]:
                gx = mm(slots, w.permute(1, 0, 2).reshape(c_in, v * c_out).t())
            if ctx.needs_input_grad[1]:
                gw = tn_mm(f, slots).view(c_in, v, c_out).permute(1, 0, 2).contiguous()
        return _cast(gx, ctx.dtypes[0]), _cast(gw, ctx.dtypes[1]), None


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
    dtype = compute_dtype(x.feats, weight)
    feats = _add_bias(mm(x.feats.to(dtype), weight.to(dtype)), bias)
    return x.with_feats(feats)


class _NormReLUFn(Function):
    @staticmethod
    def forward(ctx: FunctionCtx, feats: Tensor, gamma: Tensor, beta: Tensor, eps: float
                ) -> tuple[Tensor, Tensor, Tensor]:
        y, mean, var, invstd = native.norm_relu(feats, gamma, beta, eps)
        ctx.save_for_backward(feats, y, mean, invstd, gamma)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, gy: Tensor, _gmean: Tensor, _gvar: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor, None]:
        return (*native.norm_relu_grad(*ctx.saved_tensors[:2], gy, *ctx.saved_tensors[2:]),
                None)


def norm_relu(feats: Tensor, gamma: Tensor, beta: Tensor, eps: float
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Training BatchNorm over the rows of ``feats`` (N, C), then ReLU, in one C kernel each
    way (:func:`native.norm_relu`): ``(y, batch mean, biased batch variance)``. For fp32 CPU
    tensors where :func:`native.usable`."""
    return _NormReLUFn.apply(feats, gamma, beta, eps)


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
