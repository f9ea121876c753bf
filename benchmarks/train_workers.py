"""Training throughput on the CPU: one training with every core as torch threads, against
several trainings side by side with an equal share each (how ``shared.training.workers``
trains a profile's runs).

Each training is a child process that steps the sparse U-ResNet [3D, depth 5, 16 filters,
batch 4] through distinct batches of the ci profile's sets (after warm-up batches) and prints
its seconds per step; the side-by-side children start together. Steps per second add up over
the children.

    python benchmarks/train_workers.py [--sizes 64 128] [--workers 2] [--steps 45]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CI_SETS = {64: "sim3d_64_ci_train", 128: "sim3d_128_ci_train", 192: "sim3d_192_ci"}
WARMUP = 15


def _child(size: int, threads: int, steps: int) -> None:
    """Train ``steps`` steps after :data:`WARMUP` and print the seconds per step."""
    import torch

    from analysis_lib.data import load_manifest, open_dataset
    from analysis_lib.models import UResNet
    from analysis_lib.training.batching import collate
    from analysis_lib.training.config import TrainConfig
    from analysis_lib.training.loop import event_loss

    torch.set_num_threads(threads)
    path = load_manifest(REPO / "data_manifest.yaml").path_of(CI_SETS[size])
    with open_dataset(path, truth=False) as events:
        batches = [collate([events[4 * k + i] for i in range(4)], size)
                   for k in range(WARMUP + steps)]
    torch.manual_seed(0)
    model = UResNet(3, 5, 16)
    optimizer = TrainConfig(data="unused").make_optimizer(model.parameters())

    def step(batch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(batch.coords, batch.feats, batch.spatial_size)
        loss = event_loss(logits, batch.labels, batch.coords[:, 0], batch.n_events, False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for batch in batches[:WARMUP]:
        step(batch)
    start = time.perf_counter()
    for batch in batches[WARMUP:]:
        step(batch)
    print((time.perf_counter() - start) / steps)


def _run(size: int, threads: int, copies: int, steps: int) -> list[float]:
    """Seconds per step of ``copies`` children started together."""
    command = [sys.executable, __file__, "--child", str(size), str(threads), str(steps)]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
                for _ in range(copies)]
    outputs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        raise SystemExit(f"a benchmark child failed at {size} px")
    return [float(out.strip().splitlines()[-1]) for out in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], choices=sorted(CI_SETS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=45)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // args.workers)
    print(f"{cores} cores; one training with {cores} threads, then {args.workers} side by side "
          f"with {threads} each; {args.steps} distinct batches of 4 after {WARMUP} warm-up")
    print(f"{'size':>5}  {'alone ms/step':>13}  {'side by side ms/step':>21}  "
          f"{'steps/s alone':>13}  {'steps/s together':>16}  {'gain':>5}")
    for size in args.sizes:
        (alone,) = _run(size, cores, 1, args.steps)
        together = _run(size, threads, args.workers, args.steps)
        rate = sum(1 / s for s in together)
        each = " / ".join(f"{1000 * s:.1f}" for s in together)
        print(f"{size:>5}  {1000 * alone:>13.1f}  {each:>21}  {1 / alone:>13.2f}  {rate:>16.2f}  "
              f"{rate * alone:>4.2f}x")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        sys.path.insert(0, str(REPO))
        _child(*(int(a) for a in sys.argv[2:]))
    else:
        main()
