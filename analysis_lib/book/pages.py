"""What the book's first page and its Methods page show, computed from the recorded results and
the profile: the findings in a sentence, the headline figures' numbers, the recipe as a table.
The pages call these and draw; no number on them is typed by hand."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis_lib.core import paper
from analysis_lib.data.manifest import SimulatedSet, load_manifest
from analysis_lib.report.findings import Verdict
from analysis_lib.report.findings_report import counts
from analysis_lib.study.profiles import Profile
from analysis_lib.training.config import TrainConfig

#: The chapter whose results hold a headline, by headline.
RATIOS_CHAPTER, MICHEL_CHAPTER = "sparse_vs_dense", "michel"


def findings_sentence(verdicts: list[Verdict], profile: str) -> str:
    """One Markdown sentence: how many of the study's claims this profile's book reproduces."""
    parts = ", ".join(f"**{n} {status}**" for status, n in counts(verdicts).items() if n)
    return (f"Of the study's {len(verdicts)} claims that this book tests, the `{profile}` "
            f"profile's build finds: {parts}.")


@dataclass(frozen=True)
class Ratios:
    """Dense over sparse inference memory and wall time by image size, ours and the study's."""

    device: str
    sizes: tuple[int, ...]
    memory: tuple[float, ...]
    time: tuple[float, ...]
    study_size: int = 192
    study_memory: float = paper.RATIOS_3D[0]
    study_time: float = paper.RATIOS_3D[1]


def headline_ratios(results: dict[str, dict]) -> Ratios | None:
    """The sparse-vs-dense chapter's ratios (3D, batch 4), or None if it has not run."""
    recorded = results.get(RATIOS_CHAPTER)
    if not recorded or not recorded.get("ratios"):
        return None
    rows = sorted(recorded["ratios"], key=lambda r: r["size"])
    return Ratios(recorded["device"], tuple(r["size"] for r in rows),
                  tuple(r["memory"] for r in rows), tuple(r["time"] for r in rows))


@dataclass(frozen=True)
class Spectrum:
    """Voxel counts of the reconstructed Michel candidates and of the true Michel electrons,
    and the cut (voxels) below which the study saw an excess of small candidates."""

    cut: int
    candidates: np.ndarray
    true: np.ndarray


def michel_spectrum(results: dict[str, dict]) -> Spectrum | None:
    """The Michel chapter's spectrum, or None if it has not run."""
    recorded = results.get(MICHEL_CHAPTER, {}).get("spectrum")
    if not recorded:
        return None
    return Spectrum(int(recorded["cut"]), np.asarray(recorded["candidates"], dtype=float),
                    np.asarray(recorded["true"], dtype=float))


def _schedule(config: TrainConfig) -> str:
    rate = f"{config.learning_rate:g}"
    if config.schedule == "cosine":
        return f"{rate}, warm-up + cosine"
    if config.decay_from < 1:
        return f"{rate}, ÷10 after {config.decay_from:.0%}"
    return f"{rate}, constant"


def recipe_frame(profile: Profile) -> pd.DataFrame:
    """The profile's networks as a table: what each trains on, its architecture, batch,
    iterations, learning rate and schedule, and what it departs from the study's recipe in."""
    manifest = load_manifest(profile.manifest_path)
    rows = []
    for name, spec in profile.runs.items():
        config = TrainConfig(data=spec.data, **spec.settings)
        entry = manifest.entry(spec.data)
        data = (f"{entry.n_events:,} × {entry.size} px" if isinstance(entry, SimulatedSet)
                else spec.data)
        extras = [label for label, on in (
            ("grid symmetries", config.augment),
            (f"rare events ×{config.rare_oversampling:g}", config.rare_oversampling != 1),
            ("relabeled", config.relabel), ("class weights", config.class_weights)) if on]
        rows.append({"network": name, "fine-tunes": spec.init or "—",
                     "data": f"{config.dim}D {data}", "backend": config.backend,
                     "depth, filters": f"{config.depth}, {config.filters}",
                     "batch": config.batch_size, "iterations": config.iterations,
                     "learning rate": _schedule(config), "also": ", ".join(extras) or "—"})
    return pd.DataFrame(rows).set_index("network")
