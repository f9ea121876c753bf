"""Sparse tensors to and from dense (B, C, *S) tensors: the bridge the dense-equivalence
tests and the dense U-ResNet's comparisons cross, differentiable both ways."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import Function, FunctionCtx, once_differentiable

from analysis_lib.core.errors import EngineError
from analysis_lib.sparse.kernels import to_slots
from analysis_lib.sparse.kmap import site_keys
from analysis_lib.sparse.tensor import SparseTensor, check_coords


class _ScatterRowsFn(Function):
    """Place N rows at distinct row indices of a zero (rows, C) tensor."""

    @staticmethod
    def forward(ctx: FunctionCtx, feats: Tensor, index: Tensor, rows: int) -> Tensor:
        ctx.save_for_backward(index)
        return to_slots(feats, index, rows)

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
        return to_slots(grad_out.contiguous(), index, ctx.rows), None



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
