"""The products inside the sparse convolutions, tuned for the CPU and valid on CUDA.

A submanifold convolution gathers its im2col matrix in row blocks into one reused workspace
and multiplies it by the flattened weight; the weight gradient of the strided convolutions is
one batched matmul over offsets. Reduced-precision products on the CPU get padded row counts,
so that oneDNN compiles a few kernels instead of one per event batch.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor

from analysis_lib.sparse import native
from analysis_lib.sparse.kmap import NeighbourMap

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


def compute_dtype(feats: Tensor, weight: Tensor) -> torch.dtype:
    """Dtype of the matmuls: the autocast dtype when autocast is on for the device."""
    device_type = feats.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(feats.dtype, weight.dtype)


def no_autocast(t: Tensor) -> AbstractContextManager:
    """Autocast off inside a backward pass, whose operands are already cast (a caller may run
    it under autocast); nothing is made where autocast is off already."""
    device_type = t.device.type
    if not torch.is_autocast_enabled(device_type):
        return nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


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


def mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for tall ``a`` (N, A), computed on :func:`_padded_rows` rows."""
    n = a.shape[0]
    return (_pad_to(a, _padded_rows(n, a)) @ b)[:n]


def _pad_row(x: Tensor) -> Tensor:
    """Append one zero row, (N, C) -> (N+1, C), the target of absent neighbours."""
    return torch.cat([x, x.new_zeros(1, x.shape[1])])


def to_slots(x: Tensor, slot: Tensor, rows: int) -> Tensor:
    """Scatter the rows of ``x`` (N, C) to the distinct rows ``slot`` of a zero (rows, C)."""
    out = x.new_zeros(rows, x.shape[1])
    out.index_copy_(0, slot, x)
    return out


def gather_slots(x: Tensor, child: Tensor) -> Tensor:
    """Rows ``x[child]`` with zeros where ``child`` is ``N`` (a gather beats a scatter)."""
    return _pad_row(x).index_select(0, child)


def sorted_rows(x: Tensor, order: Tensor | None) -> Tensor:
    """Rows of ``x`` (N, C) in lexicographic site order, contiguous."""
    return x.contiguous() if order is None else x.index_select(0, order)


def unsorted_rows(x: Tensor, inverse: Tensor | None) -> Tensor:
    """Inverse of :func:`sorted_rows`, given the inverse permutation."""
    return x if inverse is None else x.index_select(0, inverse)


def tn_mm(a: Tensor, b: Tensor) -> Tensor:
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


def submanifold_forward(f: Tensor, w: Tensor, kmap: NeighbourMap) -> Tensor:
    """out[j] = sum_k f[columns[j, k]] @ w[k], as im2col matmuls.

    One GEMM over all K offsets, zeros included, beats a gather-matmul-scatter per offset of
    torch ops on the CPU: the sites of a U-Net level have about half their neighbours, and the
    op overhead of K small products costs more than the doubled arithmetic. Where the C kernels
    of :mod:`~analysis_lib.sparse.native` take the product (fp32, or bf16 on a CPU with
    AVX-512 BF16) they multiply the present pairs only, and return fp32.
    """
    if native.takes_product(f, w):
        return native.conv(f, kmap.pair_lists, w)
    n_off, c_in, c_out = w.shape
    w_flat = w.reshape(n_off * c_in, c_out)
    out = f.new_empty(_computed_rows(f, n_off), c_out)
    for start, _, block in _im2col_blocks(f, kmap.columns, n_off):
        torch.mm(block, w_flat, out=out[start:start + block.shape[0]])
    return out[: f.shape[0]]


def submanifold_backward(
    f: Tensor, w: Tensor, g: Tensor, kmap: NeighbourMap, need_x: bool, need_w: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of :func:`submanifold_forward` from one im2col matrix of ``g``.

    The pairs of offset k are the swapped pairs of its mirror K-1-k, so column block K-1-k
    of the im2col matrix ``G`` of ``g`` holds, in row i, the gradient of the output that site
    i feeds through offset k: ``grad_x = G @ flip(w)^T`` and ``grad_w = flip(f^T @ G)``.
    Without ``grad_x`` (the input layer, one channel) the narrower im2col matrix of ``f``
    gives ``grad_w``.
    """
    if native.takes_product(f, w, g):
        lists = kmap.pair_lists
        gx = native.conv_input_grad(g, lists, w) if need_x else None
        return gx, native.conv_weight_grad(f, lists, g) if need_w else None
    n_off, c_in, c_out = w.shape
    n = f.shape[0]
    if not need_x:
        gw = None
        g = _pad_to(g, _computed_rows(f, n_off))
        for start, _, block in _im2col_blocks(f, kmap.columns, n_off):
            part = tn_mm(block, g[start:start + block.shape[0]])
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
        if gw is not None:  # narrow f^T: one plain GEMM is as fast as tn_mm's blocks
            gw.addmm_(f[start:stop].t(), block)
    if gw is not None:
        gw = gw.view(c_in, n_off, c_out).flip(1).transpose(0, 1).contiguous()
    return gx[:n], gw
