"""One submanifold convolution of the U-ResNet's first level, this engine beside spconv 2.3.8's
CPU build: the same voxels, features and weights, forward and both gradients, one table.

The voxels are four consecutive events of the ci profile's sets (128, 192 and 512 px; ``python
-m analysis_lib data make --profile ci`` makes them), the layer 16 -> 16 channels with a 3^3
kernel, as every convolution of the network's first level. Each engine builds its neighbour
pairs once per batch, in its first call, as a network does in its first layer, and reuses them
(this engine: the coordinate cache of :class:`SparseTensor`; spconv: ``indice_key``); the table
gives that first call (pairs and a forward without gradients) and one step with the pairs built
(forward, input and weight gradient) separately, each the median of ``--repeats``
alternated rounds, and GFLOP/s of the step (``3 * 2 * pairs * 16 * 16``).

spconv's CPU build is not a reference to check against: beside a dense convolution (which this
engine equals), on one thread it was wrong on every site of one case (6,441 sites of two
events in a 20^3 grid) and right on others; on torch's two threads it was also wrong on a
fifth of the sites of a 2,705-site case that one thread got right. So both engines run on
``--threads`` (1 by default), and ``diff``, the largest difference of the two engines' outputs
relative to the largest output, says whether they agreed on the batch timed. Its backward
needs :func:`allow_cpu_backward` on a CPU-only torch.

    pip install spconv==2.3.8   # not among the project's dependencies
    python benchmarks/spconv_compare.py [--sizes 128 192 512] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from analysis_lib.data import load_manifest  # noqa: E402
from analysis_lib.sparse import SparseTensor, submanifold_conv  # noqa: E402
from analysis_lib.training.batching import EventDataset, collate  # noqa: E402

CI_SETS = {128: "sim3d_128_ci_test", 192: "sim3d_192_ci", 512: "sim3d_512_ci"}
CHANNELS = 16
N_EVENTS = 4


def spconv_weight(weight: torch.Tensor) -> torch.Tensor:
    """This engine's (27, C_in, C_out) weight in spconv's (C_out, 3, 3, 3, C_in) layout: both
    order the offsets row-major over the coordinate axes and read ``in[p + offset]``."""
    _, c_in, c_out = weight.shape
    return weight.reshape(3, 3, 3, c_in, c_out).permute(4, 0, 1, 2, 3).contiguous()


def allow_cpu_backward() -> None:
    """spconv 2.3.8's backward asks torch for the current CUDA stream, which a CPU-only torch
    refuses; its CPU kernels take none, so they get stream 0."""
    from spconv.pytorch import ops

    if not torch.cuda.is_available():
        ops.get_current_stream = lambda: 0


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Ours:
    """This engine's layer on one batch."""

    name = "ours"

    def __init__(self, coords: torch.Tensor, feats: torch.Tensor, weight: torch.Tensor) -> None:
        self.coords, self.feats, self.weight = coords, feats, weight.clone().requires_grad_()

    def build(self) -> None:
        self.x = SparseTensor(self.coords, self.feats.clone().requires_grad_())
        with torch.no_grad():  # the first call on a batch builds its pairs
            submanifold_conv(self.x, self.weight)
        self.kmap = self.x.cache.neighbour_map(1, 3)

    def step(self) -> None:
        self.x.feats.grad = self.weight.grad = None
        out = submanifold_conv(self.x, self.weight).feats
        out.backward(torch.ones_like(out))
        self.out = out.detach()

    def pairs(self) -> int:
        return int(self.kmap.num_pairs)


class Spconv:
    """spconv's ``SubMConv3d`` with the same weights on the same batch."""

    name = "spconv"

    def __init__(self, coords: torch.Tensor, feats: torch.Tensor, weight: torch.Tensor,
                 size: int) -> None:
        import spconv.pytorch as spc

        allow_cpu_backward()
        self.spc, self.coords, self.feats, self.size = spc, coords.int().contiguous(), feats, size
        self.conv = spc.SubMConv3d(CHANNELS, CHANNELS, 3, bias=False, indice_key="level0")
        with torch.no_grad():
            self.conv.weight.copy_(spconv_weight(weight))

    def _tensor(self, feats: torch.Tensor, indice_dict=None):
        x = self.spc.SparseConvTensor(feats, self.coords, [self.size] * 3, N_EVENTS)
        if indice_dict is not None:
            x.indice_dict = indice_dict
        return x

    def build(self) -> None:
        with torch.no_grad():  # the first call of a key builds its pairs
            self.indices = self.conv(self._tensor(self.feats)).indice_dict

    def step(self) -> None:
        self.conv.weight.grad = None
        feats = self.feats.clone().requires_grad_()
        out = self.conv(self._tensor(feats, self.indices)).features
        out.backward(torch.ones_like(out))
        self.out = out.detach()


def _batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    path = load_manifest(REPO / "data_manifest.yaml").path_of(CI_SETS[size])
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python -m analysis_lib data make --profile ci`")
    data = EventDataset(str(path))
    batch = collate([data[i] for i in range(N_EVENTS)], data.spatial_size)
    gen = torch.Generator().manual_seed(size)
    return batch.coords, torch.randn(len(batch.coords), CHANNELS, generator=gen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(CI_SETS),
                        choices=list(CI_SETS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        import spconv
    except ImportError:
        raise SystemExit("spconv is not installed: pip install spconv==2.3.8") from None
    torch.set_num_threads(args.threads)
    print(f"one submanifold convolution {CHANNELS} -> {CHANNELS}, 3^3, batch of {N_EVENTS} "
          f"events; spconv {spconv.__version__}; {args.threads} thread(s); ms, median of "
          f"{args.repeats} alternated rounds")
    print(f"{'size':>5} {'voxels':>7} {'pairs':>8} {'1st ours':>9} {'1st spconv':>11} "
          f"{'step ours':>10} {'step spconv':>12} {'spconv/ours':>12} {'GF/s ours':>10} "
          f"{'GF/s spconv':>12} {'diff':>8}")
    for size in args.sizes:
        coords, feats = _batch(size)
        weight = torch.randn(27, CHANNELS, CHANNELS, generator=torch.Generator().manual_seed(1))
        weight /= (27 * CHANNELS) ** 0.5
        engines = [Ours(coords, feats, weight), Spconv(coords, feats, weight, size)]
        firsts = {e.name: [] for e in engines}
        steps = {e.name: [] for e in engines}
        for engine in engines:  # warm-up
            engine.build()
            engine.step()
        for _ in range(args.repeats):
            for engine in engines:
                firsts[engine.name].append(_timed(engine.build))
                steps[engine.name].append(_timed(engine.step))
        ours, theirs = engines
        diff = float((ours.out - theirs.out).abs().max() / ours.out.abs().max())
        flop = 3 * 2 * ours.pairs() * CHANNELS * CHANNELS
        m = {k: 1e3 * statistics.median(v) for k, v in firsts.items()}
        s = {k: 1e3 * statistics.median(v) for k, v in steps.items()}
        print(f"{size:>5} {len(coords):>7} {ours.pairs():>8} {m['ours']:>9.2f} "
              f"{m['spconv']:>11.2f} {s['ours']:>10.2f} {s['spconv']:>12.2f} "
              f"{s['spconv'] / s['ours']:>11.2f}x {flop / s['ours'] / 1e6:>10.1f} "
              f"{flop / s['spconv'] / 1e6:>12.1f} {diff:>8.1e}")


if __name__ == "__main__":
    main()
