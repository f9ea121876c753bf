"""The sparse engine equals dense convolution read at the sites, forward and backward."""

from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

import pytest
import torch
import torch.nn.functional as tnf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis_lib.core.errors import EngineError
from analysis_lib.sparse import (
    SparseTensor,
    from_dense,
    kernel_offsets,
    kernels,
    native,
    strided_conv,
    submanifold_conv,
    to_dense,
    transposed_conv,
)
from analysis_lib.sparse import kmap as kmap_module
from analysis_lib.sparse import nn as snn

# "subm3" and "subm5" gather their im2col matrix in one block on these small cases;
# "_blocked" forces blocks of a few rows (and a shorter last one), as large tensors take.
OPS = ["subm3", "subm3_blocked", "subm5", "subm5_blocked", "strided", "transposed"]
SMALL_BLOCK_BYTES = 2000
QUANTITIES = ["forward", "grad_input", "grad_weight"]
TOL = {"rtol": 1e-5, "atol": 1e-9}
HYPOTHESIS = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass
class Case:
    """A site set on a dense grid of shape (batch, *shape) and channel counts."""

    coords: torch.Tensor
    batch: int
    shape: tuple[int, ...]
    c_in: int
    c_out: int
    seed: int


@st.composite
def cases(draw: st.DrawFn, dim: int) -> Case:
    """Random site sets: several batch entries, maybe an empty one, sites on the border."""
    batch = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 7 if dim == 3 else 12)) for _ in range(dim))
    density = draw(st.sampled_from([0.05, 0.3, 0.9]))
    empty = draw(st.integers(-1, batch - 1))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, *shape, generator=gen) < density
    if empty >= 0:
        mask[empty] = False
    coords = mask.nonzero()
    coords = coords[torch.randperm(coords.shape[0], generator=gen)]
    c_in = draw(st.integers(1, 32))
    c_out = draw(st.integers(1, 32))
    return Case(coords, batch, shape, c_in, c_out, seed)


def fixed_cases(dim: int) -> dict[str, Case]:
    """Hand-made site sets: one voxel, image corners, an empty middle entry, nothing, and
    a line with one site beside it (dense and pair-wise offsets in one map)."""
    shape = (5,) * dim
    line = [[0] + [2] * (dim - 1) + [z] for z in range(5)] + [[0, 3] + [2] * (dim - 2) + [0]]
    corner = torch.tensor([[0] * (dim + 1), [0] + [4] * dim, [0] + [0] * (dim - 1) + [4]])
    return {
        "single": Case(torch.tensor([[0] + [2] * dim]), 1, shape, 3, 2, 1),
        "corners": Case(corner, 1, shape, 2, 5, 2),
        "empty_entry": Case(
            torch.tensor([[0] + [1] * dim, [0] + [2] * dim, [2] + [4] * dim, [2] + [3] * dim]),
            3,
            shape,
            4,
            3,
            3,
        ),
        "nothing": Case(torch.zeros((0, dim + 1), dtype=torch.int64), 2, shape, 2, 2, 4),
        "line": Case(torch.tensor(line), 1, shape, 3, 4, 5),
    }


def dense_of(feats: torch.Tensor, coords: torch.Tensor, batch: int, shape: tuple) -> torch.Tensor:
    """Differentiable scatter of (N, C) features to (B, C, *shape)."""
    dense = feats.new_zeros(batch, *shape, feats.shape[1])
    dense = dense.index_put(tuple(coords.t()), feats)
    return dense.movedim(-1, 1)


def read_at(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Rows of a (B, C, *S) tensor at (N, 1+D) sites, (N, C)."""
    return dense.movedim(1, -1)[tuple(coords.t())]


def as_torch_weight(weight: torch.Tensor, edge: int, dim: int, transposed: bool) -> torch.Tensor:
    """(edge**D, C_in, C_out) -> conv weight (C_out, C_in, k..) or transposed (C_in, C_out, k..)."""
    w = weight.reshape(*([edge] * dim), weight.shape[1], weight.shape[2])
    spatial = list(range(dim))
    if transposed:
        return w.permute(dim, dim + 1, *spatial)
    return w.permute(dim + 1, dim, *spatial)


def run_both(
    op: str, case: Case, block_bytes: int = SMALL_BLOCK_BYTES,
    sparse_dtype: torch.dtype = torch.float64,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(sparse, dense) forward, input gradient and weight gradient of one op; ``_blocked``
    ops gather im2col blocks of at most ``block_bytes``. The dense op runs in float64, the
    sparse one in ``sparse_dtype`` on the same values."""
    limit = block_bytes if op.endswith("_blocked") else kernels._BLOCK_BYTES
    with mock.patch.object(kernels, "_BLOCK_BYTES", limit):
        return _run_both(op, case, sparse_dtype)


def _run_both(op: str, case: Case, sparse_dtype: torch.dtype = torch.float64
              ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    dim = case.coords.shape[1] - 1
    gen = torch.Generator().manual_seed(case.seed)
    n = case.coords.shape[0]
    fine = SparseTensor(case.coords, torch.zeros(n, case.c_in, dtype=torch.float64))
    if op.startswith("subm"):
        edge = int(op[4:5])
        x, shape, out_coords = fine, case.shape, case.coords
        volume = edge**dim
    else:
        edge, volume = 2, 2**dim
        shape = tuple(s + s % 2 for s in case.shape)
    if op == "transposed":
        w0 = torch.zeros(volume, case.c_in, 1, dtype=torch.float64)
        coarse = strided_conv(fine, w0)
        feats = torch.randn(len(coarse), case.c_in, dtype=torch.float64, generator=gen)
        x = SparseTensor.derived(feats, 2, coarse.cache)
        shape = tuple(s // 2 for s in shape)
        out_coords = case.coords
    else:
        feats = torch.randn(n, case.c_in, dtype=torch.float64, generator=gen)
        x = fine.with_feats(feats)
    weight = torch.randn(volume, case.c_in, case.c_out, dtype=torch.float64, generator=gen)

    feats_s = x.feats.to(sparse_dtype).clone().requires_grad_()
    weight_s = weight.to(sparse_dtype).clone().requires_grad_()
    xs = x.with_feats(feats_s)
    if op.startswith("subm"):
        out_s = submanifold_conv(xs, weight_s)
    elif op == "strided":
        out_s = strided_conv(xs, weight_s)
        out_coords = out_s.coords
    else:
        out_s = transposed_conv(xs, weight_s)

    feats_d = x.feats.clone().requires_grad_()
    weight_d = weight.clone().requires_grad_()
    dense_in = dense_of(feats_d, x.coords, case.batch, shape)
    tw = as_torch_weight(weight_d, edge, dim, op == "transposed").contiguous()
    if op.startswith("subm"):
        conv = tnf.conv2d if dim == 2 else tnf.conv3d
        dense_out = conv(dense_in, tw, padding=edge // 2)
    elif op == "strided":
        conv = tnf.conv2d if dim == 2 else tnf.conv3d
        dense_out = conv(dense_in, tw, stride=2)
    else:
        conv_t = tnf.conv_transpose2d if dim == 2 else tnf.conv_transpose3d
        dense_out = conv_t(dense_in, tw, stride=2)
    out_d = read_at(dense_out, out_coords)

    grad = torch.randn(out_d.shape, dtype=torch.float64, generator=gen)
    gs = torch.autograd.grad(out_s.feats, [feats_s, weight_s], grad.to(sparse_dtype),
                             allow_unused=True)
    gd = torch.autograd.grad(out_d, [feats_d, weight_d], grad, allow_unused=True)
    gs = [
        torch.zeros_like(t) if g is None else g
        for g, t in zip(gs, [feats_s, weight_s], strict=True)
    ]
    gd = [
        torch.zeros_like(t) if g is None else g
        for g, t in zip(gd, [feats_d, weight_d], strict=True)
    ]
    assert torch.equal(out_s.coords, out_coords)
    return {
        "forward": (out_s.feats, out_d),
        "grad_input": (gs[0], gd[0]),
        "grad_weight": (gs[1], gd[1]),
    }


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("op", OPS)
@given(case=cases(dim=2))
@HYPOTHESIS
def test_equals_dense_2d(op: str, quantity: str, case: Case) -> None:
    sparse, dense = run_both(op, case)[quantity]
    torch.testing.assert_close(sparse, dense, **TOL)


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("op", OPS)
@given(case=cases(dim=3))
@HYPOTHESIS
def test_equals_dense_3d(op: str, quantity: str, case: Case) -> None:
    sparse, dense = run_both(op, case)[quantity]
    torch.testing.assert_close(sparse, dense, **TOL)


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", ["single", "corners", "empty_entry", "nothing", "line"])
@pytest.mark.parametrize("dim", [2, 3])
def test_equals_dense_fixed(dim: int, name: str, op: str, quantity: str) -> None:
    sparse, dense = run_both(op, fixed_cases(dim)[name])[quantity]
    torch.testing.assert_close(sparse, dense, **TOL)


def large_case() -> Case:
    """Over 2048 fine and coarse sites, neither a multiple of the row blocks of
    :func:`kernels.tn_mm`'s batched matmul."""
    gen = torch.Generator().manual_seed(7)
    coords = (torch.rand(2, 26, 26, 26, generator=gen) < 0.7).nonzero()
    coords = coords[torch.randperm(coords.shape[0], generator=gen)]
    return Case(coords, 2, (26, 26, 26), 3, 5, 8)


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("op", ["subm3", "subm3_blocked", "strided", "transposed"])
def test_equals_dense_large(op: str, quantity: str) -> None:
    """Large tensors, with the im2col matrix in one block and in two of over 2048 rows."""
    case = large_case()
    coarse = SparseTensor(case.coords, torch.zeros(len(case.coords), 1)).cache.downsample_map(1)
    for n in (len(case.coords), coarse.num_coarse):
        assert n >= 2048 and n % kernels._TN_BLOCKS
    half = -(-len(case.coords) * 27 * case.c_in * 8 // 2)
    sparse, dense = run_both(op, case, block_bytes=half)[quantity]
    torch.testing.assert_close(sparse, dense, **TOL)


@pytest.mark.parametrize("blocks", [1, 3])
def test_weight_only_gradient_large(blocks: int) -> None:
    """An input that needs no gradient (the first layer) takes its own weight-gradient path,
    in one im2col block and in several."""
    case = large_case()
    limit = -(-len(case.coords) * 27 * 8 // blocks)
    gen = torch.Generator().manual_seed(1)
    x = SparseTensor(case.coords, torch.randn(len(case.coords), 1, dtype=torch.float64,
                                              generator=gen))
    weight = torch.randn(27, 1, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    grad = torch.randn(len(case.coords), 4, dtype=torch.float64, generator=gen)
    with mock.patch.object(kernels, "_BLOCK_BYTES", limit):
        (sparse,) = torch.autograd.grad(submanifold_conv(x, weight).feats, weight, grad)
    dense_in = dense_of(x.feats, x.coords, case.batch, case.shape)
    dense_out = tnf.conv3d(dense_in, as_torch_weight(weight, 3, 3, False), padding=1)
    (dense,) = torch.autograd.grad(read_at(dense_out, x.coords), weight, grad)
    torch.testing.assert_close(sparse, dense, **TOL)


def test_kernel_offsets_order() -> None:
    offsets = kernel_offsets(3, 3)
    expected = torch.tensor([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
    assert torch.equal(offsets, expected)


@pytest.mark.parametrize(("kernel_size", "dim"), [(1, 2), (3, 2), (5, 3)])
def test_kernel_offsets_mirror(kernel_size: int, dim: int) -> None:
    offsets = kernel_offsets(kernel_size, dim)
    assert torch.equal(offsets.flip(0), -offsets)


@given(case=cases(dim=3))
@HYPOTHESIS
def test_neighbour_pairs_match_brute_force(case: Case) -> None:
    x = SparseTensor(case.coords, torch.zeros(len(case.coords), 1))
    kmap = x.cache.neighbour_map(1, 3)
    index = {tuple(c): i for i, c in enumerate(case.coords.tolist())}
    found = []
    expected = []
    for k, offset in enumerate(kernel_offsets(3, 3).tolist()):
        in_idx, out_idx = kmap.pairs(k)
        found.append(sorted(zip(in_idx.tolist(), out_idx.tolist(), strict=True)))
        pairs = []
        for j, c in enumerate(case.coords.tolist()):
            i = index.get((c[0], c[1] + offset[0], c[2] + offset[1], c[3] + offset[2]))
            if i is not None:
                pairs.append((i, j))
        expected.append(sorted(pairs))
    assert found == expected


@pytest.mark.parametrize(("dim", "kernel_size", "density"),
                         [(2, 3, 0.3), (3, 3, 0.05), (3, 3, 0.7), (3, 5, 0.3)])
def test_neighbour_search_paths_agree(dim: int, kernel_size: int, density: float) -> None:
    """The CPU's merge and the searchsorted search that other devices take (run here on the
    CPU) give the same map, on thousands of unsorted sites in three batch entries."""
    gen = torch.Generator().manual_seed(dim * 10 + kernel_size)
    coords = (torch.rand(3, *([80 if dim == 2 else 30] * dim), generator=gen) < density)
    coords = coords.nonzero()
    coords = coords[torch.randperm(coords.shape[0], generator=gen)]
    merged = SparseTensor(coords, torch.zeros(len(coords), 1)).cache.neighbour_map(1, kernel_size)
    with mock.patch.object(kmap_module, "_neighbours_by_merge", kmap_module._neighbours_by_search):
        searched = SparseTensor(coords, torch.zeros(len(coords), 1)).cache.neighbour_map(
            1, kernel_size)
    assert len(coords) > 2048
    assert torch.equal(searched.columns, merged.columns)
    assert searched.counts == merged.counts


@given(case=cases(dim=2))
@HYPOTHESIS
def test_downsample_pairs_follow_parity(case: Case) -> None:
    x = SparseTensor(case.coords, torch.zeros(len(case.coords), 1))
    kmap = x.cache.downsample_map(1)
    coarse = x.cache.sites(2).coords
    found = set()
    for k in range(4):
        fine_idx, coarse_idx = kmap.pairs(k)
        found |= set(zip(fine_idx.tolist(), coarse_idx.tolist(), [k] * len(fine_idx), strict=True))
    expected = set()
    for i, (b, p, q) in enumerate(case.coords.tolist()):
        j = coarse.tolist().index([b, p // 2, q // 2])
        expected.add((i, j, (p % 2) * 2 + q % 2))
    assert found == expected


def test_coarse_sites_sorted_unique() -> None:
    coords = torch.tensor([[1, 3, 3], [0, 5, 1], [0, 4, 0], [1, 2, 2], [0, 0, 1]])
    x = strided_conv(SparseTensor(coords, torch.ones(5, 1)), torch.ones(4, 1, 1))
    assert x.coords.tolist() == [[0, 0, 0], [0, 2, 0], [1, 1, 1]]


def test_to_dense_from_dense_round_trip() -> None:
    gen = torch.Generator().manual_seed(0)
    dense = torch.randn(2, 3, 4, 5, 6, generator=gen) * (torch.rand(2, 1, 4, 5, 6) < 0.3)
    x = from_dense(dense)
    torch.testing.assert_close(to_dense(x, (4, 5, 6), 2), dense)


def test_to_dense_from_dense_gradients() -> None:
    coords = torch.tensor([[0, 1, 1], [1, 0, 2], [0, 2, 0]])
    feats = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    dense = to_dense(SparseTensor(coords, feats), (3, 3), 2)
    back = from_dense(dense, coords)
    grad = torch.randn(3, 2, dtype=torch.float64)
    (g,) = torch.autograd.grad(back.feats, feats, grad)
    torch.testing.assert_close(g, grad)


@pytest.mark.parametrize("op", ["subm3", "subm3_blocked", "strided", "transposed"])
def test_bf16_autocast_close_to_fp32(op: str) -> None:
    """Under CPU bf16 autocast the ops compute in bf16 and return fp32 gradients whose
    relative (Frobenius) error against fp32 stays below 2e-2; the output is bf16, or fp32
    where the C kernels sum the bf16 products (submanifold, AVX-512 BF16)."""
    gen = torch.Generator().manual_seed(3)
    coords = (torch.rand(2, 12, 12, 12, generator=gen) < 0.3).nonzero()
    case = Case(coords, 2, (12, 12, 12), 16, 16, 9)
    with mock.patch.object(kernels, "_BLOCK_BYTES", 1 << 14 if op.endswith("_blocked") else
                           kernels._BLOCK_BYTES):
        exact = _run_both(op, case)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = _run_bf16(op, case)
    for quantity, value in low.items():
        ref = exact[quantity][0].float()
        fp32_sums = quantity != "forward" or (op.startswith("subm") and native.bf16_available())
        assert value.dtype == (torch.float32 if fp32_sums else torch.bfloat16)
        assert (value.float() - ref).norm() < 2e-2 * ref.norm(), quantity


def _run_bf16(op: str, case: Case) -> dict[str, torch.Tensor]:
    """The sparse side of :func:`_run_both` in fp32 parameters and inputs under autocast."""
    dim = case.coords.shape[1] - 1
    gen = torch.Generator().manual_seed(case.seed)
    n = case.coords.shape[0]
    fine = SparseTensor(case.coords, torch.zeros(n, case.c_in))
    volume = 3**dim if op.startswith("subm") else 2**dim
    x = fine
    if op == "transposed":
        coarse = strided_conv(fine, torch.zeros(volume, case.c_in, 1))
        feats = torch.randn(len(coarse), case.c_in, dtype=torch.float64, generator=gen)
        x = SparseTensor.derived(feats.float(), 2, coarse.cache)
    else:
        feats = torch.randn(n, case.c_in, dtype=torch.float64, generator=gen)
        x = fine.with_feats(feats.float())
    weight = torch.randn(volume, case.c_in, case.c_out, dtype=torch.float64, generator=gen)
    feats_s = x.feats.clone().requires_grad_()
    weight_s = weight.float().requires_grad_()
    xs = x.with_feats(feats_s)
    fn = {"strided": strided_conv, "transposed": transposed_conv}.get(op, submanifold_conv)
    out = fn(xs, weight_s).feats
    grad = torch.randn(out.shape, dtype=torch.float64, generator=gen).float()
    gx, gw = torch.autograd.grad(out, [feats_s, weight_s], grad.to(out.dtype))
    return {"forward": out, "grad_input": gx, "grad_weight": gw}


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("op", ["subm3", "subm3_blocked", "strided", "transposed"])
@pytest.mark.parametrize("size", ["small", "large"])
def test_padded_row_counts_equal_dense(op: str, quantity: str, size: str) -> None:
    """The path that rounds every product's row count up (bf16 on the CPU) with zero rows,
    forced here in float64: still exactly the dense convolution."""
    case = large_case() if size == "large" else fixed_cases(3)["corners"]
    with mock.patch.object(kernels, "_fixed_shapes", lambda t: True):
        sparse, dense = run_both(op, case, block_bytes=1 << 16)[quantity]
    torch.testing.assert_close(sparse, dense, **TOL)


def test_bucketed_row_counts_repeat() -> None:
    """Four row counts per octave, none below the minimum; the im2col blocks of any voxel
    count then take one of a few shapes."""
    assert [kernels._bucket(n) for n in (1, 256, 257, 1000, 1025, 1300, 5000)] == [
        256, 256, 320, 1024, 1280, 1536, 5120]
    shapes = {rows for n in range(3000, 40000, 7) for _, _, rows in
              kernels._row_blocks(n, 432 * 2, fixed=True)}
    assert len(shapes) <= 4 * 6 + 1  # 256 .. 16384 rows, then full blocks


# The C kernels (fp32, x86-64 with AVX2 or AVX-512) against dense float64 convolution: their
# tiles of two vectors, one vector and the masked tail of the rest, one thread and two.
NATIVE = pytest.mark.skipif(native._library() is None,
                            reason="no x86-64 CPU with AVX2 or no C compiler: im2col only")
FP32_TOL = {"rtol": 1e-4, "atol": 1e-4}


def _native_against_dense(case: Case, edge: int, threads: int = 1) -> None:
    """Forward, input and weight gradient of a submanifold convolution in fp32 through the
    C kernels against dense float64, relative to each quantity's largest value."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with mock.patch.object(native, "_product", wraps=native._product) as spy:
            results = run_both(f"subm{edge}", case, sparse_dtype=torch.float32)
    finally:
        torch.set_num_threads(before)
    assert spy.call_count == 2  # forward and input gradient
    for sparse, dense in results.values():
        sparse, dense = sparse.detach().double(), dense.detach()
        scale = (float(dense.abs().max()) if dense.numel() else 0.0) or 1.0
        torch.testing.assert_close(sparse / scale, dense / scale, **FP32_TOL)


@NATIVE
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("channels", [(1, 16), (3, 5), (16, 16), (23, 40)])
def test_native_equals_dense_large(channels: tuple[int, int], threads: int) -> None:
    """Over 2048 sites, every tile width, tails of input and output channels."""
    case = large_case()
    case = Case(case.coords, case.batch, case.shape, *channels, case.seed)
    _native_against_dense(case, 3, threads)


@NATIVE
@pytest.mark.parametrize("edge", [3, 5])
@pytest.mark.parametrize("dim", [2, 3])
@given(data=st.data())
@HYPOTHESIS
def test_native_equals_dense_random(dim: int, edge: int, data: st.DataObject) -> None:
    """Random site sets (empty entries, borders) and channel counts from 1 to 32."""
    _native_against_dense(data.draw(cases(dim=dim)), edge)


@NATIVE
@pytest.mark.parametrize("name", ["single", "corners", "empty_entry", "nothing", "line"])
def test_native_equals_dense_fixed(name: str) -> None:
    _native_against_dense(fixed_cases(3)[name], 3)


@NATIVE
def test_native_pair_lists_are_the_maps_pairs() -> None:
    """The pairs by offset are the kernel map's, sorted by output site (the C forward finds a
    block's pairs by bisection)."""
    case = large_case()
    x = SparseTensor(case.coords, torch.zeros(len(case.coords), 1))
    kmap = x.cache.neighbour_map(1, 3)
    lists = kmap.pair_lists
    for k in range(27):
        lo, hi = lists.ptr[k], lists.ptr[k + 1]
        out, inp = lists.out[lo:hi].long(), lists.inp[lo:hi].long()
        assert bool((out[1:] > out[:-1]).all())
        assert torch.equal(kmap.columns[out, k], inp)
        assert hi - lo == kmap.counts[k]


@NATIVE
def test_native_switched_off_takes_im2col(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANALYSIS_LIB_NATIVE=0`` keeps the im2col path; both give the same convolution."""
    case = large_case()
    gen = torch.Generator().manual_seed(3)
    x = SparseTensor(case.coords, torch.randn(len(case.coords), 8, generator=gen))
    weight = torch.randn(27, 8, 16, generator=gen)
    with mock.patch.object(native, "_product", wraps=native._product) as spy:
        fused = submanifold_conv(x, weight).feats
        monkeypatch.setenv("ANALYSIS_LIB_NATIVE", "0")
        im2col = submanifold_conv(x, weight).feats
    assert spy.call_count == 1
    torch.testing.assert_close(fused, im2col, rtol=1e-5, atol=1e-4)


@NATIVE
def test_native_same_bits_on_any_thread_count() -> None:
    """Each output row and each offset's weight gradient is summed by one thread in a fixed
    order, so a training gives the same numbers on one thread and on two."""
    case = large_case()
    gen = torch.Generator().manual_seed(5)
    x = SparseTensor(case.coords, torch.randn(len(case.coords), 16, generator=gen))
    weight = torch.randn(27, 16, 24, generator=gen, requires_grad=True)
    grad = torch.randn(len(case.coords), 24, generator=gen)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            feats = x.feats.clone().requires_grad_()
            out = submanifold_conv(x.with_feats(feats), weight).feats
            results.append([out, *torch.autograd.grad(out, [feats, weight], grad)])
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)


def _native_conv_and_grads(x: SparseTensor, weight: torch.Tensor, grad: torch.Tensor,
                           bf16: bool = False) -> list[torch.Tensor]:
    """Output, input and weight gradient of a submanifold convolution through the C kernels
    (fp32 tensors; with ``bf16`` under CPU bf16 autocast)."""
    feats, weight = x.feats.clone().requires_grad_(), weight.clone().requires_grad_()
    with mock.patch.object(native, "_product", wraps=native._product) as spy:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = submanifold_conv(x.with_feats(feats), weight).feats
        result = [out, *torch.autograd.grad(out, [feats, weight], grad)]
    assert spy.call_count == 2  # forward and input gradient
    return result


@pytest.mark.skipif(not str(native.instruction_set()).startswith("AVX512"),
                    reason="no AVX-512 CPU")
@pytest.mark.parametrize("channels", [(16, 16), (16, 48), (23, 40), (32, 5)])
def test_native_fp32_bits_same_in_every_build(channels: tuple[int, int],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The 16-lane builds (with bf16 products, and the fp32 one ``ANALYSIS_LIB_NATIVE=fp32``
    asks for) sum every fp32 element in the 8-lane build's order: a training gives the same
    numbers on any of them (tiles of two vectors, one, and tails of input and output)."""
    case = large_case()
    c_in, c_out = channels
    gen = torch.Generator().manual_seed(7)
    x = SparseTensor(case.coords, torch.randn(len(case.coords), c_in, generator=gen))
    weight = torch.randn(27, c_in, c_out, generator=gen)
    grad = torch.randn(len(case.coords), c_out, generator=gen)
    results = []
    for build in ("1", "fp32", "avx2"):
        monkeypatch.setenv("ANALYSIS_LIB_NATIVE", build)
        results.append(_native_conv_and_grads(x, weight, grad))
    for widest, other in [(results[0], r) for r in results[1:]]:
        for a, b in zip(widest, other, strict=True):
            assert torch.equal(a, b)


def test_native_setting_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYSIS_LIB_NATIVE", "bf32")
    with pytest.raises(EngineError, match="ANALYSIS_LIB_NATIVE='bf32' is none of 1, fp32"):
        native.instruction_set()


# bf16 keeps 8 significant bits: rounding an operand moves it by at most u = 2**-8 of itself,
# so a product of two rounded operands lies within (1 + u)**2 - 1 = 2u + u**2 of the exact one,
# and fp32 sums of L such products add at most L * 2**-24 of the sum of their magnitudes. Each
# element of the output and of both gradients therefore lies within
# (2u + u**2 + L * 2**-24) * sum |a| |b| of the float64 result on the unrounded operands, L the
# element's reduction length: K * C_in (forward), K * C_out (input gradient), the offset's
# pair count (weight gradient, at most N).
BF16 = pytest.mark.skipif(not native.bf16_available(),
                          reason="no CPU with AVX-512 BF16, or no C compiler")
BF16_U = 2.0**-8


def _dense_subm3(feats: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, case: Case
                 ) -> list[torch.Tensor]:
    """Output and both gradients of the float64 dense 3^3 convolution read at the sites."""
    feats, weight = feats.double().requires_grad_(), weight.double().requires_grad_()
    dim = case.coords.shape[1] - 1
    dense = dense_of(feats, case.coords, case.batch, case.shape)
    conv = tnf.conv2d if dim == 2 else tnf.conv3d
    out = read_at(conv(dense, as_torch_weight(weight, 3, dim, False).contiguous(), padding=1),
                  case.coords)
    return [out, *torch.autograd.grad(out, [feats, weight], grad.double())]


@BF16
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("channels", [(1, 16), (3, 5), (16, 16), (23, 40), (48, 80)])
def test_native_bf16_within_its_rounding_of_dense(channels: tuple[int, int], threads: int
                                                  ) -> None:
    """Over 2048 sites, every forward tile (two vectors, one, a masked tail), an odd and a
    single input channel (padded to a word), weight-gradient tiles and their rests."""
    case = large_case()
    c_in, c_out = channels
    case = Case(case.coords, case.batch, case.shape, c_in, c_out, case.seed)
    gen = torch.Generator().manual_seed(11)
    n = len(case.coords)
    x = SparseTensor(case.coords, torch.randn(n, c_in, generator=gen))
    weight = torch.randn(27, c_in, c_out, generator=gen)
    grad = torch.randn(n, c_out, generator=gen)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        low = _native_conv_and_grads(x, weight, grad, bf16=True)
    finally:
        torch.set_num_threads(before)
    exact = _dense_subm3(x.feats, weight, grad, case)
    magnitude = _dense_subm3(x.feats.abs(), weight.abs(), grad.abs(), case)
    lengths = (27 * c_in, 27 * c_out, n)
    for value, ref, size, length in zip(low, exact, magnitude, lengths, strict=True):
        assert value.dtype == torch.float32  # fp32 sums, not rounded to bf16
        error = (value.double() - ref.detach()).abs() / size.detach()
        assert error.max() <= 2 * BF16_U + BF16_U**2 + length * 2.0**-24
        assert error.max() > 2.0**-16  # the operands were rounded (fp32: below 2**-22)


@BF16
def test_native_bf16_same_bits_on_any_thread_count() -> None:
    """As the fp32 kernels: one thread sums each output row and each offset's weight
    gradient, in a fixed order, so runs repeat bit for bit on one thread and on two."""
    case = large_case()
    gen = torch.Generator().manual_seed(5)
    x = SparseTensor(case.coords, torch.randn(len(case.coords), 16, generator=gen))
    weight = torch.randn(27, 16, 24, generator=gen)
    grad = torch.randn(len(case.coords), 24, generator=gen)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 2):
            torch.set_num_threads(threads)
            results.append(_native_conv_and_grads(x, weight, grad, bf16=True))
    finally:
        torch.set_num_threads(before)
    for run in results[1:]:
        for a, b in zip(results[0], run, strict=True):
            assert torch.equal(a, b)


@BF16
def test_native_fp32_override_keeps_bf16_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANALYSIS_LIB_NATIVE=fp32`` loads the fp32 build: autocast's bf16 products go to
    im2col, fp32 ones to the C kernels, as on a CPU without AVX-512 BF16."""
    monkeypatch.setenv("ANALYSIS_LIB_NATIVE", "fp32")
    assert native.instruction_set() == "AVX512" and not native.bf16_available()
    low = torch.zeros(4, 2, dtype=torch.bfloat16)
    assert not native.takes_product(low, low) and native.takes_product(low.float())


def test_native_falls_back_to_im2col_without_a_compiler(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path) -> None:
    """No compiler (and nothing compiled yet): one warning, and the im2col path serves."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    monkeypatch.setattr(native.tempfile, "gettempdir", lambda: str(tmp_path))
    native._build.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no C compiler"):
            assert native._library() is None
        case = fixed_cases(3)["line"]
        sparse, dense = run_both("subm3", case)["forward"]
        torch.testing.assert_close(sparse, dense, **TOL)
        assert not native.usable(torch.zeros(2, 2))
    finally:
        native._build.cache_clear()


def _norm_relu_pair(c: int, momentum: float | None = 0.1
                    ) -> tuple[snn.BatchNorm, torch.nn.BatchNorm1d]:
    """A fused sparse BatchNorm + ReLU and a float64 torch BatchNorm1d with the same
    affine parameters (away from 1 and 0, so that the parameter gradients are tested)."""
    gen = torch.Generator().manual_seed(c)
    fused = snn.BatchNorm(c, relu=True, momentum=momentum)
    with torch.no_grad():
        fused.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        fused.bias.copy_(torch.rand(c, generator=gen) - 0.5)
    reference = torch.nn.BatchNorm1d(c, momentum=momentum).double()
    reference.load_state_dict(fused.state_dict())
    return fused, reference


def _rows(n: int) -> torch.Tensor:
    """Coordinates of n distinct sites (BatchNorm only reads the features)."""
    coords = torch.zeros(n, 4, dtype=torch.long)
    coords[:, 1] = torch.arange(n)
    return coords


@NATIVE
@pytest.mark.parametrize("n, c", [(7, 3), (2047, 5), (2049, 16), (9000, 48)])
def test_native_norm_relu_equals_torch_float64(n: int, c: int) -> None:
    """The fused training BatchNorm + ReLU against torch's in float64: output, input and
    parameter gradients, running statistics over two steps (one block of rows, a block and
    a remainder, several blocks)."""
    fused, reference = _norm_relu_pair(c)
    gen = torch.Generator().manual_seed(n)
    for _ in range(2):
        feats = (torch.randn(n, c, generator=gen) * 3 + 1).requires_grad_()
        grad = torch.randn(n, c, generator=gen)
        wide = feats.detach().double().requires_grad_()
        with mock.patch.object(native, "norm_relu", wraps=native.norm_relu) as spy:
            out = fused(SparseTensor(_rows(n), feats)).feats
        assert spy.call_count == 1
        expected = torch.relu(reference(wide))
        out.backward(grad)
        expected.backward(grad.double())
        pairs = [(out, expected), (feats.grad, wide.grad),
                 (fused.weight.grad, reference.weight.grad),
                 (fused.bias.grad, reference.bias.grad),
                 (fused.running_mean, reference.running_mean),
                 (fused.running_var, reference.running_var)]
        for ours, theirs in pairs:
            scale = float(theirs.detach().abs().max()) or 1.0
            torch.testing.assert_close(ours.double() / scale, theirs / scale, **FP32_TOL)
        fused.zero_grad()
        reference.zero_grad()
    assert int(fused.num_batches_tracked) == 2


@NATIVE
def test_native_norm_relu_cumulative_average() -> None:
    """``momentum=None`` averages the batch statistics, as torch does."""
    fused, reference = _norm_relu_pair(4, momentum=None)
    gen = torch.Generator().manual_seed(1)
    for n in (50, 3000, 700):
        feats = torch.randn(n, 4, generator=gen) * 2 - 1
        fused(SparseTensor(_rows(n), feats))
        reference(feats.double())
    torch.testing.assert_close(fused.running_var.double(), reference.running_var, rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(fused.running_mean.double(), reference.running_mean,
                               rtol=1e-5, atol=1e-6)


@NATIVE
def test_native_norm_relu_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's BatchNorm and ReLU serve evaluation, a single row, ``relu=False`` and
    ``ANALYSIS_LIB_NATIVE=0``; the fused kernel serves training only, with the same result."""
    fused, _ = _norm_relu_pair(6)
    feats = torch.randn(5000, 6, generator=torch.Generator().manual_seed(2))
    x = SparseTensor(_rows(5000), feats)
    with mock.patch.object(native, "norm_relu", wraps=native.norm_relu) as spy:
        ours = fused(x).feats
        monkeypatch.setenv("ANALYSIS_LIB_NATIVE", "0")
        torch_path = fused(x).feats
        monkeypatch.delenv("ANALYSIS_LIB_NATIVE")
        plain = snn.BatchNorm(6, relu=False).train()(x).feats
        fused.eval()
        evaluated = fused(x).feats
        with pytest.raises(ValueError, match="more than 1 value"):
            fused.train()(SparseTensor(_rows(1), feats[:1]))
    assert spy.call_count == 1
    torch.testing.assert_close(ours, torch_path, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, torch.nn.BatchNorm1d(6)(feats))
    expected = torch.relu((feats - fused.running_mean) / torch.sqrt(fused.running_var + fused.eps)
                          * fused.weight + fused.bias)
    torch.testing.assert_close(evaluated, expected.detach())


@NATIVE
def test_native_norm_relu_same_bits_on_any_thread_count() -> None:
    """The per-channel sums are taken in fixed blocks of rows added in order: one thread and
    two give the same bits (the 4.5M values are enough for the kernel to take two)."""
    fused, _ = _norm_relu_pair(32)
    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(140_000, 32, generator=gen)
    grad = torch.randn(140_000, 32, generator=gen)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            leaf = feats.clone().requires_grad_()
            out = fused(SparseTensor(_rows(len(feats)), leaf)).feats
            results.append([out, *torch.autograd.grad(out, [leaf, fused.weight], grad)])
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)
