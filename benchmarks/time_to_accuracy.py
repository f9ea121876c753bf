"""Held-out accuracy after a few minutes of CPU training: the engine and recipe of a pinned
commit beside today's engine with the ci profile's recipe for its main network, one table.

Each configuration trains [3D, 128 px, depth 5, 16 filters] on the ci training set for the
longest budget, with a checkpoint about every half minute; the checkpoint last saved within
each budget (training-step wall time, evaluation excluded) is scored on the held-out set. The
baseline runs in a child process on a copy of today's package whose engine and network are the
pinned commit's (:data:`ENGINE`), with that commit's recipe (batch 4, Adam at 2e-3); today's
recipe is read from ``book/params/ci.yaml`` (run ``main``), so the benchmark follows the
profile. ``--configs "new, cosine"`` adds today's recipe with a warm-up + cosine AdamW
schedule. A schedule is sized for the longest budget, so earlier snapshots are taken before the
rate has decayed: they understate what a run sized for that budget reaches.

    python benchmarks/time_to_accuracy.py [--budgets 2 5 10 20] [--baseline-commit 648ca26]
"""

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from analysis_lib.study.profiles import load_profile  # noqa: E402

#: Training settings besides data, iterations and checkpoints: the pinned commit's recipe and
#: the ci profile's main network's, also with a warm-up + cosine AdamW schedule.
_MAIN = {k: v for k, v in load_profile("ci").runs["main"].settings.items()
         if k not in ("iterations", "checkpoint_every")}
RECIPES = {
    "baseline": {"depth": 5, "filters": 16, "batch_size": 4, "learning_rate": 0.002,
                 "decay_from": 0.75, "amp": False},
    "new": _MAIN,
    "new, cosine": {**_MAIN, "decay_from": 1.0, "schedule": "cosine", "warmup": 0.05,
                    "optimizer": "adamw", "weight_decay": 1e-4},
}
CHILD = """
import json, sys, time
from analysis_lib.evaluation.inference import evaluate
from analysis_lib.training.loop import read_log, train
from analysis_lib.training.config import TrainConfig
spec = json.loads(sys.argv[1])
cfg = TrainConfig(data=spec["data"], iterations=30, checkpoint_every=30, **spec["recipe"])
train(cfg, spec["out"] + "/calibrate", progress=False)
step = read_log(spec["out"] + "/calibrate")["wall_time_s"][-1] / 30
total = int(max(spec["budgets"]) * 60 / step)
every = max(1, int(30 / step))
cfg = TrainConfig(data=spec["data"], iterations=total, checkpoint_every=every,
                  **spec["recipe"])
train(cfg, spec["out"] + "/run", progress=False)
wall = read_log(spec["out"] + "/run")["wall_time_s"]
rows = []
for budget in spec["budgets"]:
    saved = [i for i in range(every, total + 1, every) if wall[i - 1] <= budget * 60]
    if not saved:
        rows.append({"budget_min": budget, "iteration": 0})
        continue
    it = saved[-1]
    r = evaluate(f"{spec['out']}/run/checkpoint_{it}.pt", spec["test"])
    rows.append({"budget_min": budget, "iteration": it, "accuracy": r.nonzero_accuracy,
                 "sem": r.nonzero_accuracy_sem, "classwise": r.classwise_accuracy})
print("RESULT " + json.dumps({"step_s": step, "rows": rows}))
"""


#: The pinned commit whose engine and recipe the table compares against.
BASELINE_COMMIT = "648ca26"
#: The parts of the package taken from the pinned commit: the engine, and the network built on
#: its layers' interface (which has changed since, e.g. BatchNorm with a fused ReLU).
ENGINE = ("analysis_lib/sparse", "analysis_lib/models")


#: Modules the pinned engine imports that have moved since, by their old and new names.
MOVED = {"analysis_lib.errors": "analysis_lib.core.errors",
         "analysis_lib.labels": "analysis_lib.core.labels"}


def hybrid_package(folder: Path, commit: str) -> Path:
    """Today's package with :data:`ENGINE` replaced by the pinned ``commit``'s, its imports of
    :data:`MOVED` modules pointed at their new places."""
    shutil.copytree(ROOT / "analysis_lib", folder / "analysis_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for part in ENGINE:
        shutil.rmtree(folder / part)
    archive = subprocess.run(["git", "archive", commit, *ENGINE], cwd=ROOT,
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    for part in ENGINE:
        for path in (folder / part).rglob("*.py"):
            text = path.read_text()
            for old, new in MOVED.items():
                text = re.sub(rf"\b{re.escape(old)}\b", new, text)
            path.write_text(text)
    return folder


def run(package_root: Path, spec: dict) -> dict:
    """Train and score one configuration in a child process importing ``package_root``."""
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)],
                         capture_output=True, text=True, cwd=package_root, env=env)
    if out.returncode:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        sys.exit(f"time_to_accuracy: the run in {package_root} failed: {last}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[2, 5, 10, 20],
                        metavar="MINUTES")
    parser.add_argument("--configs", nargs="+", default=["baseline", "new"], choices=list(RECIPES))
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT)
    parser.add_argument("--data", default=str(ROOT / "data" / "sim3d_128px_seed5_n2000.h5"))
    parser.add_argument("--test", default=str(ROOT / "data" / "sim3d_128px_seed6_n100.h5"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline = hybrid_package(tmp / "baseline", args.baseline_commit)
        roots = {name: baseline if name == "baseline" else ROOT for name in args.configs}
        table = {}
        for name, root in roots.items():
            spec = {"data": args.data, "test": args.test, "budgets": args.budgets,
                    "recipe": RECIPES[name], "out": str(tmp / f"out_{name.replace(' ', '')}")}
            table[name] = run(root, spec)
            print(f"{name}: {table[name]['step_s']:.3f} s per step", flush=True)
    print(f"\n[3D, 128 px, 5-16]; held-out nonzero accuracy (± standard error over events); "
          f"engine and recipe of {args.baseline_commit} ('baseline', batch 4) and today's "
          f"(ci profile's main network, batch {_MAIN['batch_size']})")
    print(f"{'minutes':>8} {'config':>12} {'iteration':>10} {'accuracy':>16} "
          f"{'HIP':>6} {'MIP':>6} {'shower':>6} {'delta':>6} {'Michel':>6}")
    for i, budget in enumerate(args.budgets):
        for name in roots:
            row = table[name]["rows"][i]
            if not row["iteration"]:
                print(f"{budget:>8g} {name:>12} {'no checkpoint yet':>10}")
                continue
            classes = " ".join(f"{c:>6.1%}" if c is not None else f"{'—':>6}"
                               for c in row["classwise"])
            print(f"{budget:>8g} {name:>12} {row['iteration']:>10} "
                  f"{row['accuracy']:>9.2%} ± {row['sem']:.2%} {classes}")


if __name__ == "__main__":
    main()
