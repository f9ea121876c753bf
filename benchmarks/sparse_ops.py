"""Timings of the sparse engine's kernel maps and convolutions on LArTPC-like data.

Prints one table row per (op, voxel count, channels, device): the median wall time and
the useful GFLOP/s, counting ``2 * pairs * C_in * C_out`` per forward (twice that for a
backward, which computes both the input and the weight gradient).

On the CPU in fp32 the submanifold convolution runs in the C kernels of
``analysis_lib.sparse.native``; its rows marked ``im2col`` time the same op on the engine's
other path (``ANALYSIS_LIB_NATIVE=0``) in the same run, and on a CPU with AVX-512 BF16 its rows
marked ``bf16`` the C kernels' bf16 products (under ``torch.autocast``, fp32 sums).

Run ``python benchmarks/sparse_ops.py`` (``--quick`` for a small run, ``--device cuda``
or ``--device all`` for GPU columns).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import numpy as np
import torch
from torch import Tensor

from analysis_lib.sim import PhysicsConfig, simulate_event
from analysis_lib.sparse import (
    SparseTensor,
    build_downsample_map,
    build_neighbour_map,
    make_site_set,
    native,
    strided_conv,
    submanifold_conv,
    transposed_conv,
)

DataSource = Callable[[int, int], Tensor]


def thin_track_coords(n_voxels: int, seed: int, grid: int = 512) -> Tensor:
    """Rasterised random 3D polyline tracks in a ``grid**3`` volume, one batch entry.

    Each track is a random walk of unit steps whose direction changes a little per
    step, swept with a cube of edge 2, 3 or 4 voxels; tracks are added until at least
    ``n_voxels`` distinct voxels are active.

    Returns
    -------
    coords : (N, 4) int64
        Batch index 0, then x, y, z; N >= n_voxels, in raster (lexicographic) order
        like a dense-to-sparse readout.  Sites in any other order cost one extra
        gather per convolution and direction (the engine sorts internally).
    """
    gen = torch.Generator().manual_seed(seed)
    keys = torch.empty(0, dtype=torch.int64)
    while keys.numel() < n_voxels:
        length = int(torch.randint(100, 400, (1,), generator=gen))
        width = int(torch.randint(2, 5, (1,), generator=gen))
        start = torch.rand(3, generator=gen) * (grid - 1)
        kinks = torch.randn(length, 3, generator=gen) * 0.15
        direction = torch.randn(3, generator=gen) + kinks.cumsum(dim=0)
        direction = direction / direction.norm(dim=1, keepdim=True)
        centre = start + direction.cumsum(dim=0)
        edge = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
        cube = torch.stack(torch.meshgrid(edge, edge, edge, indexing="ij"), dim=-1)
        voxels = (centre[:, None, :] + cube.reshape(1, -1, 3)).floor().long().reshape(-1, 3)
        voxels = voxels[((voxels >= 0) & (voxels < grid)).all(dim=1)]
        new = (voxels[:, 0] * grid + voxels[:, 1]) * grid + voxels[:, 2]
        keys = torch.unique(torch.cat([keys, new]))
    xyz = torch.stack([keys // (grid * grid), keys // grid % grid, keys % grid], dim=1)
    return torch.cat([torch.zeros_like(xyz[:, :1]), xyz], dim=1)


def simulated_event_coords(n_voxels: int, seed: int, size: int = 512) -> Tensor:
    """Simulated LArTPC events (``size``³, 3 mm voxels), one batch entry each, until at least
    ``n_voxels`` voxels are active; raster order within each event.

    Returns
    -------
    coords : (N, 4) int64
    """
    blocks, total, index = [], 0, 0
    while total < n_voxels:
        event = simulate_event(np.random.default_rng([seed, index]), size, PhysicsConfig())
        xyz = torch.from_numpy(event.voxels.coords)
        blocks.append(torch.cat([torch.full((len(xyz), 1), len(blocks)), xyz], dim=1))
        total += len(xyz)
        index += 1
    return torch.cat(blocks)


SOURCES: dict[str, DataSource] = {"sim": simulated_event_coords, "tracks": thin_track_coords}


def median_ms(fn: Callable[[], object], device: torch.device, budget_s: float) -> float:
    """Median wall time of ``fn`` in ms over repeats fitting in about ``budget_s``."""

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    first = once()
    repeats = max(3, min(25, int(budget_s / max(first, 1e-6))))
    return 1e3 * statistics.median(once() for _ in range(repeats))


def bf16_autocast() -> AbstractContextManager:
    """CPU bf16 autocast, which the C kernels' bf16 products take."""
    return torch.autocast("cpu", dtype=torch.bfloat16)


@contextmanager
def im2col_only() -> Iterator[None]:
    """The engine's im2col path while inside (the C kernels switched off)."""
    before = os.environ.get("ANALYSIS_LIB_NATIVE")
    os.environ["ANALYSIS_LIB_NATIVE"] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["ANALYSIS_LIB_NATIVE"]
        else:
            os.environ["ANALYSIS_LIB_NATIVE"] = before


def bench_case(
    coords: Tensor, channels: int, device: torch.device, budget_s: float
) -> list[tuple[str, int, float, float]]:
    """Rows (op, pairs, ms, GFLOP/s) for one event and channel count."""
    coords = coords.to(device)
    gen = torch.Generator(device=device).manual_seed(1)
    feats = torch.randn(coords.shape[0], channels, device=device, generator=gen)
    x = SparseTensor(coords, feats.requires_grad_())
    sites = make_site_set(coords, check_unique=False)
    rows = []

    def flops_row(name: str, pairs: int, ms: float, factor: int) -> None:
        rows.append((name, pairs, ms, factor * 2 * pairs * channels**2 / ms / 1e6))

    kmap = x.cache.neighbour_map(1, 3)
    rows.append(
        (
            "kmap subm 3^3",
            kmap.num_pairs,
            median_ms(lambda: build_neighbour_map(sites, 3), device, budget_s),
            0.0,
        )
    )
    down = x.cache.downsample_map(1)
    rows.append(
        (
            "kmap down",
            down.num_pairs,
            median_ms(lambda: build_downsample_map(sites), device, budget_s),
            0.0,
        )
    )

    w_sub = torch.randn(27, channels, channels, device=device, requires_grad=True)
    w_two = torch.randn(8, channels, channels, device=device, requires_grad=True)
    cases = [
        ("subm conv 3^3", lambda: submanifold_conv(x, w_sub), w_sub, kmap.num_pairs),
        ("strided conv", lambda: strided_conv(x, w_two), w_two, down.num_pairs),
    ]
    if native.usable(x.feats, w_sub):
        cases.insert(1, ("subm conv 3^3 im2col", lambda: submanifold_conv(x, w_sub), w_sub,
                         kmap.num_pairs))
    if device.type == "cpu" and native.bf16_available():
        cases.insert(1, ("subm conv 3^3 bf16", lambda: submanifold_conv(x, w_sub), w_sub,
                         kmap.num_pairs))
    coarse = strided_conv(x, w_two).feats.detach().requires_grad_()
    x_coarse = SparseTensor.derived(coarse, 2, x.cache)
    cases.append(
        ("transposed conv", lambda: transposed_conv(x_coarse, w_two), w_two, down.num_pairs)
    )
    for name, op, weight, pairs in cases:
        path = {"im2col": im2col_only, "bf16": bf16_autocast}.get(name.split()[-1], nullcontext)
        with torch.no_grad(), path():
            flops_row(f"{name} fwd", pairs, median_ms(op, device, budget_s), 1)
        with path():
            out = op().feats
        grad = torch.randn_like(out)
        inputs = [x_coarse.feats if name.startswith("transposed") else x.feats, weight]

        def backward(out: Tensor = out, grad: Tensor = grad, inputs: list = inputs,
                     path=path) -> None:
            with path():
                torch.autograd.grad(out, inputs, grad, retain_graph=True)

        flops_row(f"{name} bwd", pairs, median_ms(backward, device, budget_s), 2)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes, 16 channels")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per timing")
    parser.add_argument("--source", choices=sorted(SOURCES), default="sim",
                        help="simulated 512 px events (default) or synthetic polyline tracks")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("CUDA is not available")
    sizes = [7_000, 70_000] if args.quick else [7_000, 70_000, 700_000]
    channel_counts = [16] if args.quick else [16, 64]
    source = SOURCES[args.source]
    budget = 0.3 if args.quick else args.budget

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, data: {args.source}")
    header = f"{'op':<26}{'voxels':>9}{'C':>4}{'pairs':>11}{'device':>7}{'ms':>11}{'GFLOP/s':>9}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        coords = source(n, n)
        for channels in channel_counts:
            for dev in devices:
                for name, pairs, ms, gflops in bench_case(
                    coords, channels, torch.device(dev), budget
                ):
                    rate = f"{gflops:9.1f}" if gflops else f"{'-':>9}"
                    print(
                        f"{name:<26}{coords.shape[0]:>9}{channels:>4}{pairs:>11}{dev:>7}"
                        f"{ms:>11.2f}{rate}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
