"""The ci profile's main network trained in fp32 and in bf16 from the same seed, side by side:
held-out accuracy of each and their paired difference over the same events.

Both runs take the ci profile's recipe for ``main`` (``book/params/ci.yaml``) and its training
set; one trains with the fp32 C kernels, the other under bf16 autocast, whose submanifold
products go to the C kernels' bf16 build on a CPU with AVX-512 BF16 (elsewhere to oneDNN). The
training loop keeps the sparse network in fp32 by default; the bf16 child turns autocast on
for it. Each run has one thread, as in the book's two training workers. Both networks are then
scored, in fp32, on the ci test set and on fresh events simulated from a seed no file of the
project uses; the paired difference (bf16 - fp32) and its standard error are taken over the
per-event accuracies of the same events.

One pair cannot tell bf16's cost from the spread of trainings: ``--train-seeds`` trains a pair
per training seed (one pair at a time, side by side) and ends with the mean of the per-seed
differences and its standard error over seeds, the spread of trajectories included.

    python benchmarks/bf16_parity.py [--iterations 2640] [--fresh-events 150] [--seed 31]
                                     [--train-seeds 0 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from analysis_lib.data import load_manifest  # noqa: E402
from analysis_lib.study.profiles import load_profile  # noqa: E402

CHILD = """
import json, sys, time
import torch
torch.set_num_threads(1)
from analysis_lib.training import loop as loop
from analysis_lib.training.config import TrainConfig
spec = json.loads(sys.argv[1])
if spec["bf16"]:  # the sparse network under bf16 autocast (the default keeps it in fp32)
    loop.bf16_autocast = lambda requested, device, backend="sparse": requested
cfg = TrainConfig(data=spec["data"], **spec["recipe"])
loop.train(cfg, spec["out"], progress=False)
log = loop.read_log(spec["out"])
print("RESULT " + json.dumps({"step_s": log["wall_time_s"][-1] / len(log["wall_time_s"])}))
"""


def _train(spec: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, name: str) -> dict:
    out, err = proc.communicate()
    if proc.returncode:
        last = (err.strip().splitlines() or ["no message"])[-1]
        sys.exit(f"bf16_parity: the {name} run failed: {last}")
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean of ``values`` and its standard error."""
    mean = sum(values) / len(values)
    var = sum((x - mean) ** 2 for x in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of ``b - a`` over paired events and its standard error."""
    return mean_and_error([y - x for x, y in zip(a, b, strict=True)])


def train_pair(data: Path, recipe: dict, out: str) -> dict[str, float]:
    """Train the recipe in fp32 and in bf16 side by side into ``out``; each one's step time."""
    procs = {name: _train({"data": str(data), "recipe": recipe, "bf16": name == "bf16",
                           "out": f"{out}/{name}"}) for name in ("fp32", "bf16")}
    return {name: _result(proc, name)["step_s"] for name, proc in procs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, help="default: the profile's")
    parser.add_argument("--fresh-events", type=int, default=150)
    parser.add_argument("--seed", type=int, default=31,
                        help="of the fresh events (no file of data_manifest.yaml uses it)")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=None,
                        help="a pair per training seed (default: the recipe's seed)")
    args = parser.parse_args()
    from analysis_lib.evaluation.inference import evaluate
    from analysis_lib.sim import simulate

    run = load_profile("ci").runs["main"]
    recipe = dict(run.settings)
    if args.iterations:
        recipe.update(iterations=args.iterations, checkpoint_every=args.iterations)
    manifest = load_manifest(ROOT / "data_manifest.yaml")
    data = manifest.path_of(run.data)
    test = manifest.path_of(run.data.replace("_train", "_test"))
    seeds = args.train_seeds or [recipe.get("seed", 0)]
    last = f"checkpoint_{recipe['iterations']}.pt"
    print(f"[3D, 128 px, 5-16], the ci profile's main recipe, {recipe['iterations']} "
          f"iterations, one thread each")
    print(f"{'seed':>4} {'events':>28} {'fp32':>16} {'bf16':>16} {'bf16 - fp32':>18} "
          f"{'step fp32 / bf16 (s)':>22}")
    with tempfile.TemporaryDirectory() as tmp:
        fresh = simulate(Path(tmp) / "fresh.h5", args.fresh_events, 128, args.seed,
                         progress=False)
        samples = {f"ci test set ({test.name})": test, f"fresh (seed {args.seed})": fresh}
        differences: dict[str, list[float]] = {label: [] for label in samples}
        for seed in seeds:
            steps = train_pair(data, {**recipe, "seed": seed}, f"{tmp}/{seed}")
            for label, path in samples.items():
                a, b = (evaluate(f"{tmp}/{seed}/{name}/{last}", path) for name in ("fp32", "bf16"))
                diff, sem = paired(list(a.nonzero_accuracy_per_event),
                                   list(b.nonzero_accuracy_per_event))
                differences[label].append(diff)
                print(f"{seed:>4} {label:>28} {a.nonzero_accuracy:>9.2%} ± "
                      f"{a.nonzero_accuracy_sem:.2%} {b.nonzero_accuracy:>9.2%} ± "
                      f"{b.nonzero_accuracy_sem:.2%} {diff:>+11.2%} ± {sem:.2%} "
                      f"{steps['fp32']:>11.3f} / {steps['bf16']:.3f}", flush=True)
    if len(seeds) > 1:
        for label, values in differences.items():
            mean, sem = mean_and_error(values)
            print(f"over {len(seeds)} seeds, {label}: bf16 - fp32 {mean:+.2%} ± {sem:.2%}")


if __name__ == "__main__":
    main()
