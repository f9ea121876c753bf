"""Dense U-ResNet on a CPU: channels-last (the backend's layout) against channels-first, side
by side on the same batch and weights.

oneDNN's CPU convolutions work channels-last; a channels-first grid is reordered at every layer.
Each row times inference and a training step (Adam) of [dim, size px, depth-filters] at one
batch, alternating the layouts round by round (first-last, first-last, ...) so that load from
other processes hits both alike; the table gives the median of the rounds after the first.

    python benchmarks/dense_layout.py [--rounds 4] [--threads 2]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from analysis_lib.evaluation.resources import run_step
from analysis_lib.models import UResNet
from analysis_lib.sim import simulate
from analysis_lib.training.batching import first_events

CASES = ((3, 64, 4), (2, 128, 4), (2, 512, 4))  # (dim, image size, batch)


def compare(dim: int, batch, rounds: int) -> dict[str, float]:
    """Median seconds of inference and of a training step per layout."""
    torch.manual_seed(0)
    nets = {"first": UResNet(dim, 5, 16, backend="dense").use_channels_last(False),
            "last": UResNet(dim, 5, 16, backend="dense")}
    nets["last"].load_state_dict(nets["first"].state_dict())
    times: dict[str, list[float]] = {}
    for mode in ("inference", "train"):
        optimizers = {k: torch.optim.Adam(m.parameters()) if mode == "train" else None
                      for k, m in nets.items()}
        for _ in range(rounds):
            for layout, model in nets.items():
                model.train(mode == "train")
                start = time.perf_counter()
                run_step(model, batch, mode, optimizers[layout])
                times.setdefault(f"{mode} {layout}", []).append(time.perf_counter() - start)
    return {k: statistics.median(v[1:] or v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"dense U-ResNet 5-16, {args.threads} thread(s), median of rounds 2..{args.rounds} (s)")
    print("| case | inference first | inference last | ratio | train first | train last "
          "| ratio |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for dim, size, n in CASES:
            path = Path(tmp) / f"bench_{dim}d_{size}px.h5"
            simulate(path, n, size, seed=2000 + size, dim=dim, progress=False)
            t = compare(dim, first_events(str(path), n, dim=dim), args.rounds)
            print(f"| [{dim}D, {size} px], batch {n} | {t['inference first']:.3f} | "
                  f"{t['inference last']:.3f} | {t['inference first'] / t['inference last']:.2f}x "
                  f"| {t['train first']:.3f} | {t['train last']:.3f} | "
                  f"{t['train first'] / t['train last']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
