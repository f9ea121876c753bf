"""The dry run of a profile: every training run it would make, validated as for training,
with its estimated GPU-hours on the study's V100 (a cost model fitted to the study's Table II)
and whether it is already trained here. No data is read and nothing is trained."""

import math
from pathlib import Path

from analysis_lib.data.manifest import load_manifest
from analysis_lib.study.experiments import Experiment, profile_runs
from analysis_lib.study.profiles import Profile, load_profile
from analysis_lib.training import checkpoints

#: Seconds per training step on the study's V100 (its Table II, [3D, 5-16]) as
#: (fixed, per event of the batch), fitted through its batch-4 and batch-64 points where it
#: has both; its 512 and 768 px columns are batch 64 (see :data:`analysis_lib.core.paper.TABLE2`).
#: The base of the dry run's GPU-hour estimates.
STUDY_STEP_S = {
    ("sparse", 3, 192): (0.144, 0.0165),
    ("sparse", 3, 512): (0.0, 5.0 / 64),
    ("sparse", 3, 768): (0.0, 8.8 / 64),
    ("dense", 3, 192): (0.0, 25.0 / 4),
}


def step_seconds(backend: str, dim: int, size: int, batch: int) -> tuple[float, str]:
    """Estimated GPU seconds of one training step, and how it was estimated."""
    if (backend, dim, size) in STUDY_STEP_S:
        fixed, per_event = STUDY_STEP_S[(backend, dim, size)]
        return fixed + per_event * batch, "study's Table II"
    if backend == "dense":  # dense cost follows the number of grid cells
        fixed, per_event = STUDY_STEP_S[("dense", 3, 192)]
        return per_event * batch * size**dim / 192**3, "dense 3D 192 px, scaled by grid cells"
    # sparse cost follows the voxel count: a 2D projection has about as many as a 3D 192 px
    # image, other 3D sizes interpolate linearly in the image edge
    fixed, per_event = STUDY_STEP_S[("sparse", 3, 192)]
    if dim == 3:
        per_event *= size / 192
    return fixed + per_event * batch, "sparse 3D 192 px, scaled"


def plan_runs(profile: Profile, manifest_path: Path) -> list[dict]:
    """Every training run of a profile with its size and estimated GPU-hours; the runs are
    validated as for training (settings, ranges, data-set and run names), no data is read."""
    manifest = load_manifest(manifest_path)
    specs = profile.runs
    experiments = profile_runs(specs, manifest.path_of, data_sha256=manifest.sha256_of)
    plan = []
    for name, experiment in experiments.items():
        cfg, entry = experiment.config, manifest.entry(specs[name].data)
        size = getattr(entry, "size", None)
        step, basis = (step_seconds(cfg.backend, cfg.dim, size, cfg.batch_size) if size
                       else (math.nan, "?"))
        plan.append({"run": name, "data": specs[name].data, "dim": cfg.dim, "size": size,
                     "backend": cfg.backend, "depth": cfg.depth, "filters": cfg.filters,
                     "batch": cfg.batch_size, "iterations": cfg.iterations,
                     "init": specs[name].init or "",
                     "GPU-hours": step * cfg.iterations / 3600, "estimate from": basis,
                     "cached": "yes" if _trained(experiment) else "no"})
    return plan


def _trained(experiment: Experiment) -> bool:
    """Whether the run is trained (its final checkpoint there, with its recorded bytes),
    without setting a damaged one aside as training would; a run whose data is not in the
    manifest's record cannot be keyed without reading it, so it counts as not trained."""
    try:
        return checkpoints.intact(experiment.checkpoint)
    except OSError:
        return False


def print_plan(profile_name: str) -> list[dict]:
    """Print the runs a profile would train and their estimated GPU-hours."""
    profile = load_profile(profile_name)
    plan = plan_runs(profile, profile.manifest_path)
    columns = list(plan[0]) if plan else []
    widths = {c: max(len(c), *(len(_cell(row[c])) for row in plan)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in plan:
        print("  ".join(_cell(row[c]).ljust(widths[c]) for c in columns))
    total = sum(row["GPU-hours"] for row in plan)
    print(f"{len(plan)} runs, about {total:.0f} GPU-hours on a V100 (the study's GPU); "
          f"estimates scale the study's measured step times, a newer GPU takes less")
    return plan


def _cell(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)
