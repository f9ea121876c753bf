"""Training-step time of the sparse U-ResNet [3D, depth 5, 16 filters, batch 4]: a baseline
commit of the engine against the working tree, side by side.

Every timed step takes a batch neither engine has seen, as training does (events 4k..4k+3 of
the ci profile's sets; `python -m analysis_lib data make --profile ci` makes them): a
benchmark that repeats one batch hides the per-shape costs of a real run (oneDNN compiles a
kernel for each new matrix shape in bf16). Both engines step through the same batches.

The baseline is unpacked with ``git archive`` into a temporary folder; each engine runs in its
own child process whose ``sys.path`` starts with its checkout, and the parent asks the two
children for one round of steps in turn (A, B, A, B, ...), so that load from other processes
hits both alike.  Each builds the optimizer its own ``train.py`` builds (fused Adam today). The
baseline trains in fp32 (its ``train.py`` enables autocast only on CUDA);
the working tree in ``--dtype``.  GFLOP/s count the convolutions only: ``2 * pairs * C_in *
C_out`` per forward (pairs from the kernel maps' counts; a strided or transposed convolution
has one pair per fine site, a linear layer one per site), three times that per step.

Both children run ``--threads`` torch threads: 2 (this machine's cores) by default; 1 is how
each of the ci build's two training workers runs.

    python benchmarks/train_step.py [--sizes 128 192 512] [--rounds 5] [--dtype fp32] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 1000
N_EVENTS = 4
STEPS_PER_ROUND = 3
WARMUP_STEPS = 10
CI_SETS = {128: "sim3d_128_ci_train", 192: "sim3d_192_ci", 512: "sim3d_512_ci"}


def _module(name: str, before: str):
    """A module of the imported ``analysis_lib`` by today's name, or by the name it had before
    the package took its floors (a baseline commit's checkout). Decided by the files of that
    package, not by trying: an editable install would find today's module for a baseline."""
    package = Path(importlib.import_module("analysis_lib").__file__).parent
    today = package.joinpath(*name.split(".")[1:]).with_suffix(".py")
    return importlib.import_module(name if today.is_file() else before)


def _batches(path: str, n_batches: int):
    """The first ``n_batches`` batches of consecutive events of a file."""
    from analysis_lib.data import open_dataset

    collate = _module("analysis_lib.training.batching", "analysis_lib.batching").collate

    with open_dataset(path, truth=False) as events:
        if N_EVENTS * n_batches > len(events):
            raise SystemExit(f"{path} has {len(events)} events, fewer than the "
                             f"{N_EVENTS * n_batches} that {n_batches} distinct batches take: "
                             f"ask for fewer --rounds")
        size = int(events.meta.size_px[0])
        return [collate([events[N_EVENTS * k + i] for i in range(N_EVENTS)], size)
                for k in range(n_batches)]


def _child(root: str, dtype: str, threads: int, n_batches: int, samples: list[str]) -> None:
    """Serve steps on stdin/stdout: read "sample batch", answer that step's time."""
    sys.path.insert(0, root)
    import torch

    torch.set_num_threads(threads)

    from analysis_lib.models import UResNet

    train = _module("analysis_lib.training.loop", "analysis_lib.train")

    engine = Path(sys.modules["analysis_lib"].__file__)
    assert engine.is_relative_to(Path(root).resolve()), f"imported the engine from {engine}"
    batches = [_batches(path, n_batches) for path in samples]
    torch.manual_seed(SEED)
    model = UResNet(3, 5, 16)
    # each engine with the optimizer its own training loop builds
    config = train.TrainConfig(data="unused")
    optimizer = (config.make_optimizer(model.parameters()) if hasattr(config, "make_optimizer")
                 else torch.optim.Adam(model.parameters(), lr=1e-3))

    def step(i: int, k: int) -> float:
        batch = batches[i][k]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            logits = model(batch.coords, batch.feats, batch.spatial_size)
        loss = train.event_loss(logits, batch.labels, batch.coords[:, 0], batch.n_events, False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    for i in range(len(batches)):  # warm-up (kernels for the usual shapes) on untimed batches
        for k in range(WARMUP_STEPS):
            step(i, n_batches - 1 - k)
    print("ready", flush=True)
    for line in sys.stdin:
        i, k = map(int, line.split())
        print(json.dumps(step(i, k)), flush=True)


def _conv_flops(path: str, n_batches: int) -> tuple[list[int], list[float]]:
    """Voxels and FLOPs of the convolutions in one training step, per batch."""
    import torch

    from analysis_lib.models import UResNet
    from analysis_lib.sparse import nn as snn

    model = UResNet(3, 5, 16)
    flops = [0]

    def count(module: torch.nn.Module, inputs: tuple, output: object) -> None:
        x = inputs[0]
        c_in, c_out = module.in_channels, module.out_channels
        if isinstance(module, snn.SubmanifoldConv):
            pairs = x.cache.neighbour_map(x.stride, module.kernel_size).num_pairs
        else:
            pairs = len(output) if isinstance(module, snn.ConvTranspose) else len(x)
        flops[0] += 3 * 2 * pairs * c_in * c_out

    for module in model.modules():
        if isinstance(module, (snn.SubmanifoldConv, snn.Conv, snn.ConvTranspose, snn.Linear)):
            module.register_forward_hook(count)
    voxels, per_batch = [], []
    for batch in _batches(path, n_batches):
        flops[0] = 0
        with torch.no_grad():
            model(batch.coords, batch.feats, batch.spatial_size)
        voxels.append(len(batch.coords))
        per_batch.append(float(flops[0]))
    return voxels, per_batch


def _sample(size: int) -> str:
    """The ci profile's set of one image size."""
    from analysis_lib.data import load_manifest

    name = CI_SETS[size]
    path = load_manifest(REPO / "data_manifest.yaml").path_of(name)
    if not path.exists():
        raise SystemExit(f"{path} ({name}) is missing: run "
                         f"`python -m analysis_lib data make --profile ci` first")
    return str(path)


def _unpack(commit: str, folder: Path) -> Path:
    """The ``analysis_lib`` package of ``commit``, extracted under ``folder``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "analysis_lib"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


class _Engine:
    """A child process timing training steps with the engine under ``root``."""

    def __init__(self, root: Path, dtype: str, threads: int, n_batches: int,
                 samples: list[str]) -> None:
        cmd = [sys.executable, __file__, "--child", str(root), "--dtype", dtype,
               "--threads", str(threads),
               "--batches", str(n_batches), *samples]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=root)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the engine under {root} did not start")

    def step(self, i: int, k: int) -> float:
        self.proc.stdin.write(f"{i} {k}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-commit", default="648ca26")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(CI_SETS),
                        choices=list(CI_SETS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto",
                        help="precision of the working tree's engine (auto: the one train.py "
                             "trains the sparse network in on this CPU)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads of each engine's process (default: the cores)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.dtype, args.threads, args.batches, args.paths)
        return
    sys.path.insert(0, str(REPO))
    if args.dtype == "auto":
        import torch

        from analysis_lib.training.loop import bf16_autocast

        args.dtype = "bf16" if bf16_autocast(True, torch.device("cpu")) else "fp32"
    n_batches = args.rounds * STEPS_PER_ROUND + WARMUP_STEPS
    samples = [_sample(size) for size in args.sizes]
    stats = [_conv_flops(path, n_batches) for path in samples]
    with tempfile.TemporaryDirectory() as tmp:
        base = _unpack(args.baseline_commit, Path(tmp))
        engines = {"base": _Engine(base, "fp32", args.threads, n_batches, samples),
                   "new": _Engine(REPO, args.dtype, args.threads, n_batches, samples)}
        times = {(name, i): [] for name in engines for i in range(len(samples))}
        for r in range(args.rounds):
            for i in range(len(samples)):
                for name, engine in engines.items():
                    times[name, i] += [engine.step(i, r * STEPS_PER_ROUND + s)
                                       for s in range(STEPS_PER_ROUND)]
        for engine in engines.values():
            engine.close()
    timed = args.rounds * STEPS_PER_ROUND
    print(f"training step, ms: mean / median over the same {timed} distinct batches "
          f"(interleaved, {STEPS_PER_ROUND} steps a turn); base: {args.baseline_commit} fp32, "
          f"new: working tree {args.dtype}; {args.threads} thread(s) each")
    print(f"{'size':>5} {'voxels':>7} {'GFLOP':>6} {'base mean':>10} {'base med':>9} "
          f"{'new mean':>9} {'new med':>8} {'speedup':>8} {'base GF/s':>10} {'new GF/s':>9}")
    for i, size in enumerate(args.sizes):
        voxels, flops = (sum(x[:timed]) / timed for x in stats[i])
        base, new = times["base", i], times["new", i]
        b_mean, n_mean = statistics.mean(base), statistics.mean(new)
        print(f"{size:>5} {voxels:>7.0f} {flops / 1e9:>6.2f} {1e3 * b_mean:>10.1f} "
              f"{1e3 * statistics.median(base):>9.1f} {1e3 * n_mean:>9.1f} "
              f"{1e3 * statistics.median(new):>8.1f} {b_mean / n_mean:>7.2f}x "
              f"{flops / b_mean / 1e9:>10.1f} {flops / n_mean / 1e9:>9.1f}")


if __name__ == "__main__":
    main()
