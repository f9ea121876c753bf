"""The checks a lent GPU is for, in one command that fits its short lease (a few minutes).

1. ``cuda tests``: the tests marked ``cuda`` (not run, and reported as skipped, without
   CUDA).
2. ``equivalence``: each sparse op (submanifold, strided and transposed convolution) on the
   device against the CPU engine in float64, which the test suite proves equal to dense
   convolution; on real events (simulated 512 px events overlaid into one image of at least
   50k voxels), forward and both gradients, in fp32 and under bf16 autocast.
3. ``resources``: Table II's cells, dense against sparse [3D, 192 px, 5-16, batch 4]
   inference and training memory and time, the ratios beside the study's, and sparse at
   192 px batch 64, 512 and 768 px batch 4.
4. ``autocast``: a training under bf16 autocast on the device beside an fp32 one on the CPU,
   same seed, same batches; their loss curves and steps per second.
5. ``torchrun``: one process through torchrun, so through the device's process-group backend
   (nccl on a GPU, gloo on a CPU) and DistributedDataParallel.

Each step's outcome and numbers go to ``OUT/device_check.json``, and one summary table is
printed; a failing step is recorded and the next one runs. ``--device cpu --quick`` runs every
step small, to know the script works before device time is spent on it.

    benchmarks/device_check.sh OUT [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from analysis_lib.core import paper  # noqa: E402
from analysis_lib.data import open_dataset  # noqa: E402
from analysis_lib.evaluation.resources import ModelSpec, measure_cases  # noqa: E402
from analysis_lib.sim import simulate  # noqa: E402
from analysis_lib.sparse import (  # noqa: E402
    SparseTensor,
    strided_conv,
    submanifold_conv,
    transposed_conv,
)
from analysis_lib.training.batching import first_events  # noqa: E402
from analysis_lib.training.config import TrainConfig  # noqa: E402
from analysis_lib.training.loop import bf16_autocast, default_device, read_log, train  # noqa: E402

#: Largest difference from the float64 CPU engine, relative to the quantity's largest value.
TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2}
#: Autocast loss curve against fp32: largest difference of their 20-iteration running means.
LOSS_TOLERANCE = 0.1


@dataclass(frozen=True)
class Sizes:
    """How large each step runs: the device check's, or ``--quick``'s on a CPU."""

    event_px: int
    min_voxels: int
    resource_cases: tuple[tuple[int, int], ...]
    dense_px: int
    train_px: int
    train_iterations: int


FULL = Sizes(512, 50_000, ((192, 4), (192, 64), (512, 4), (768, 4)), 192, 192, 200)
QUICK = Sizes(64, 2_000, ((64, 4),), 64, 32, 20)


def _sample(folder: Path, size: int, n_events: int, seed: int) -> Path:
    path = folder / f"events_{size}px_{n_events}.h5"
    if not path.exists():
        simulate(path, n_events, size, seed=seed, progress=False)
    return path


def _marked_line(out: subprocess.CompletedProcess, marker: str) -> str:
    """The child's stdout line after ``marker``; a child that failed or printed none raises
    with the last line of its stderr."""
    lines = [x for x in out.stdout.splitlines() if x.startswith(marker)]
    if out.returncode or not lines:
        last = (out.stderr.strip().splitlines() or [f"no {marker.strip()} line printed"])[-1]
        raise RuntimeError(last)
    return lines[0].removeprefix(marker)


def cuda_tests(device: str, sizes: Sizes, folder: Path) -> dict:
    if not device.startswith("cuda"):
        return {"passed": None, "summary": "not run: no CUDA device"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                          "-m", "cuda", "tests"], cwd=ROOT, capture_output=True, text=True)
    last = (out.stdout.strip().splitlines() or ["no output"])[-1]
    ran = "passed" in last and "skipped" not in last
    return {"passed": out.returncode == 0 and ran, "summary": last}


def _real_event(sizes: Sizes, folder: Path, channels: int) -> SparseTensor:
    """Events of one file overlaid into one image until it holds ``sizes.min_voxels``, with
    random float64 features, on the CPU."""
    path = _sample(folder, sizes.event_px, 12, seed=7)
    sites: set[tuple[int, ...]] = set()
    with open_dataset(path) as events:
        for event in events:
            sites.update(map(tuple, event.coords.tolist()))
            if len(sites) >= sizes.min_voxels:
                break
    if len(sites) < sizes.min_voxels:
        raise RuntimeError(f"{path} holds {len(sites)} distinct voxels, under {sizes.min_voxels}")
    coords = torch.tensor(sorted(sites), dtype=torch.int64)
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int64), coords], 1)
    feats = torch.randn(len(coords), channels, generator=torch.Generator().manual_seed(0))
    return SparseTensor(coords, feats.double())


def _op_outputs(op: str, x: SparseTensor, weight: torch.Tensor, amp: bool) -> list:
    """Forward features and the gradients of input features and weight of one op."""
    feats = x.feats.clone().requires_grad_()
    weight = weight.clone().requires_grad_()
    xs = x.with_feats(feats)
    with torch.autocast(x.feats.device.type, dtype=torch.bfloat16, enabled=amp):
        if op == "submanifold":
            out = submanifold_conv(xs, weight)
        elif op == "strided":
            out = strided_conv(xs, weight)
        else:
            out = transposed_conv(strided_conv(xs, torch.eye(weight.shape[1], dtype=weight.dtype,
                                                             device=weight.device)
                                               .expand(8, -1, -1)), weight)
    grads = torch.autograd.grad(out.feats.float().square().sum(), [feats, weight])
    return [t.detach().double().cpu() for t in (out.feats, *grads)]


def equivalence(device: str, sizes: Sizes, folder: Path) -> dict:
    channels = 16
    reference = _real_event(sizes, folder, channels)
    gen = torch.Generator().manual_seed(1)
    report, passed = {"voxels": len(reference.coords)}, True
    for op, volume in (("submanifold", 27), ("strided", 8), ("transposed", 8)):
        weight = torch.randn(volume, channels, channels, generator=gen, dtype=torch.float64)
        expected = _op_outputs(op, reference, weight, amp=False)
        x = SparseTensor(reference.coords.to(device), reference.feats.float().to(device))
        for precision, amp in (("fp32", False), ("bf16", True)):
            got = _op_outputs(op, x, weight.float().to(device), amp)
            error = max(float((g - e).abs().max() / e.abs().max().clamp(min=1e-30))
                        for g, e in zip(got, expected, strict=True))
            report[f"{op} {precision}"] = error
            passed &= error <= TOLERANCE[precision]
    return {"passed": passed, "summary": ", ".join(
        f"{k} {v:.1e}" for k, v in report.items() if k != "voxels")
        + f" (largest error / largest value; {report['voxels']} voxels)", "numbers": report}


def resources(device: str, sizes: Sizes, folder: Path) -> dict:
    sparse = ModelSpec(3, 5, 16, "sparse")
    batch = first_events(str(_sample(folder, sizes.dense_px, 4, seed=8)), 4)
    pair = measure_cases([({"backend": b, "mode": m}, ModelSpec(3, 5, 16, b), batch, m)
                          for b in ("dense", "sparse") for m in ("inference", "train")],
                         device, repeats=3)
    cells = measure_cases([({"size": s, "batch": n, "mode": m}, sparse,
                            first_events(str(_sample(folder, s, n, seed=9)), n), m)
                           for s, n in sizes.resource_cases for m in ("inference", "train")],
                          device, repeats=3)
    infer = pair[pair["mode"] == "inference"].set_index("backend")
    memory = float(infer.loc["dense", "memory (GB)"] / infer.loc["sparse", "memory (GB)"])
    wall = float(infer.loc["dense", "wall time (s)"] / infer.loc["sparse", "wall time (s)"])
    study_memory, study_time = paper.RATIOS_3D
    return {"passed": not (pair["out of memory"].any() or cells["out of memory"].any()),
            "summary": f"dense/sparse inference at {sizes.dense_px} px batch 4: memory "
                       f"{memory:.0f}x (study {study_memory}x), time {wall:.1f}x (study "
                       f"{study_time}x)",
            "numbers": {"dense vs sparse": pair.to_dict("records"),
                        "sparse": cells.to_dict("records")}}


def _loss_run(data: str, iterations: int, out: str, amp: bool) -> tuple[list[float], float]:
    """Losses and steps per second of a training on this process's default device."""
    cfg = TrainConfig(data=data, batch_size=4, iterations=iterations, seed=3,
                      checkpoint_every=iterations, amp=amp)
    train(cfg, out, progress=False, overwrite=True)
    log = read_log(out)
    return log["loss"].tolist(), float(len(log["loss"]) / log["wall_time_s"][-1])


_FP32_CHILD = """
import json, runpy, sys
loss_run = runpy.run_path(sys.argv[1])["_loss_run"]
print("RESULT", json.dumps(loss_run(sys.argv[2], int(sys.argv[3]), sys.argv[4], amp=False)))
"""


def autocast(device: str, sizes: Sizes, folder: Path) -> dict:
    data = str(_sample(folder, sizes.train_px, 100, seed=10))
    iterations = sizes.train_iterations
    low, low_rate = _loss_run(data, iterations, str(folder / "autocast"), amp=True)
    trainer = default_device()  # where the trainer runs: the GPU where there is one
    bf16 = bf16_autocast(True, trainer)
    reference = subprocess.run([sys.executable, "-c", _FP32_CHILD, __file__, data,
                                str(iterations), str(folder / "fp32")], cwd=ROOT,
                               capture_output=True, text=True,
                               env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    high, high_rate = json.loads(_marked_line(reference, "RESULT "))
    window = min(20, iterations)
    smooth = [np.convolve(v, np.ones(window) / window, "valid") for v in (low, high)]
    gap = float(np.abs(smooth[0] - smooth[1]).max())
    precision = "bf16 autocast" if bf16 else "fp32: this device has no native bf16"
    return {"passed": gap <= LOSS_TOLERANCE,
            "summary": f"{iterations} iterations at {sizes.train_px} px: running-mean loss gap "
                       f"{gap:.3f} (tolerance {LOSS_TOLERANCE}); {low_rate:.1f} steps/s on "
                       f"{trainer.type} ({precision}) against {high_rate:.1f} on the CPU (fp32)",
            "numbers": {"loss_autocast": low, "loss_fp32": high, "gap": gap, "bf16": bf16,
                        "steps_per_s": {"autocast": low_rate, "fp32": high_rate}}}


_TORCHRUN_CHILD = """
import sys, torch.distributed as dist
from analysis_lib.training.loop import train
from analysis_lib.training.config import TrainConfig
train(TrainConfig(data=sys.argv[1], depth=3, filters=4, batch_size=2, iterations=3,
                  checkpoint_every=3), sys.argv[2], progress=False, overwrite=True)
print("BACKEND", dist.get_backend() if dist.is_initialized() else None,
      dist.get_world_size() if dist.is_initialized() else 1)
"""


def torchrun(device: str, sizes: Sizes, folder: Path) -> dict:
    child = folder / "torchrun_child.py"
    child.write_text(_TORCHRUN_CHILD)
    data = str(_sample(folder, 32, 8, seed=11))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "1", str(child), data, str(folder / "ddp")],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    backend, world = _marked_line(out, "BACKEND ").split()
    expected = "nccl" if device.startswith("cuda") else "gloo"
    return {"passed": backend == expected,
            "summary": f"backend {backend} (expected {expected}), world size {world}"}


STEPS = {"cuda tests": cuda_tests, "equivalence": equivalence, "resources": resources,
         "autocast": autocast, "torchrun": torchrun}


def _verdict(result: dict) -> str:
    return {True: "pass", False: "FAIL", None: "skip"}[result["passed"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for device_check.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="every step small (a CPU check)")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("device_check: --device cuda, but torch sees no CUDA device")
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = QUICK if args.quick else FULL
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    results = {"device": where, "torch": torch.__version__, "quick": args.quick, "steps": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.steps:
            start = time.perf_counter()
            try:
                result = STEPS[name](args.device, sizes, Path(tmp))
            except Exception as exc:  # noqa: BLE001  (record it; the next step still runs)
                traceback.print_exc()
                result = {"passed": False, "summary": f"{type(exc).__name__}: {exc}"}
            result["seconds"] = round(time.perf_counter() - start, 1)
            results["steps"][name] = result
            print(f"[device_check] {name}: {_verdict(result)} ({result['seconds']} s)",
                  flush=True)
            (args.out / "device_check.json").write_text(json.dumps(results, indent=1))
    print(f"\ndevice check on {where} (torch {torch.__version__}{', quick' if args.quick else ''})")
    for name, result in results["steps"].items():
        print(f"{name:>12}  {_verdict(result):4}  {result['seconds']:>6.1f} s  "
              f"{result['summary']}")
    failed = [n for n, r in results["steps"].items() if r["passed"] is False]
    if failed:
        sys.exit(f"device_check: failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
