"""Table III and Figures 10–11: accuracy, memory and wall time against the U-ResNet's depth
and filters, and the study's claim 7 judged on them."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis_lib.core import paper
from analysis_lib.evaluation.evidence import Part, improves, linear_r2
from analysis_lib.evaluation.metrics import Evaluation
from analysis_lib.evaluation.resources import ModelSpec, case_rows, cases_frame, measure_cases
from analysis_lib.evaluation.tables import depth_filter_grid
from analysis_lib.study import results
from analysis_lib.study.profiles import Chapter
from analysis_lib.training.batching import first_events

NAME = "architecture"
#: Figures 10–11's network: depth, and the filters of its first layer.
RESOURCE_DEPTH = 6
RESOURCE_FILTERS = (8, 16, 32)


@dataclass(frozen=True)
class Cell:
    """One network of Table III scored on the chapter's held-out events."""

    depth: int
    filters: int
    summary: Evaluation


@dataclass(frozen=True)
class Cost:
    """Memory (GB) and median wall time (s) of one pass (``mode``) at ``filters``."""

    filters: int
    mode: str
    memory: float
    time: float
    out_of_memory: bool


@dataclass(frozen=True)
class Architecture:
    """Table III (``scan``) and Figures 10–11 (``resources``: depth :data:`RESOURCE_DEPTH` on a
    batch of ``resource_voxels`` voxels of ``resource_size`` px)."""

    device: str
    scan: tuple[Cell, ...]
    resource_size: int
    resource_voxels: int
    resources: tuple[Cost, ...]

    def grid(self, field: str = "nonzero_accuracy") -> pd.DataFrame:
        """Table III's layout of one field of the evaluations (rows depth, columns filters)."""
        return depth_filter_grid({(c.depth, c.filters): getattr(c.summary, field)
                                  for c in self.scan})

    def resources_frame(self) -> pd.DataFrame:
        return cases_frame(self.resources)


def compute(ch: Chapter) -> Architecture:
    """Score the scan's networks, measure Figures 10–11 (fresh processes, minutes), record."""
    test_path = ch.data.path_of(ch.test_set)
    names = {(depth, filters): name for depth, by_filters in ch.scan_runs.items()
             for filters, name in by_filters.items()}
    scan = tuple(Cell(depth, filters, run.evaluation(test_path).on(ch.test_set))
                 for (depth, filters), run in ch.trained(names).items())
    batch = first_events(str(ch.data.path_of(ch.resource_set)), ch.resource_batch)
    cases = [({"filters": filters, "mode": mode}, ModelSpec(3, RESOURCE_DEPTH, filters, "sparse"),
              batch, mode) for filters in RESOURCE_FILTERS for mode in ("inference", "train")]
    result = Architecture(ch.device, scan, batch.spatial_size, int(batch.coords.shape[0]),
                          case_rows(measure_cases(cases, ch.device, ch.repeats), Cost))
    results.record(NAME, result)
    return result


def filters(r: Architecture) -> list[Part]:
    """Claim 7: more filters raise accuracy; memory linear in filters; wall time +~10 %."""
    scan = {(c.depth, c.filters): c.summary for c in r.scan}
    rises, texts = 0, []
    for depth in sorted({d for d, _ in scan}):
        if (depth, 32) not in scan or (depth, 8) not in scan:
            continue
        better, diff = improves(scan[depth, 32], scan[depth, 8])
        rises += better
        texts.append(f"depth {depth}: {diff}")
    parts = [Part(rises >= 2, f"32 − 8 filters: {'; '.join(texts)}") if len(texts) >= 2 else
             Part(None, "fewer than two depths with networks of 8 and 32 filters")]
    train = pd.DataFrame([c for c in r.resources if c.mode == "train"]).sort_values("filters")
    slope, r2 = linear_r2(train["filters"], train["memory"])
    parts.append(Part(slope > 0 and r2 >= 0.95,
                      f"training memory {slope * 1024:.1f} MB per filter, linear fit R² {r2:.3f}"))
    time = train.set_index("filters")["time"]
    growth = time[32] / time[8] - 1
    if r.device.startswith("cuda"):
        parts.append(Part(growth <= 2.5 * paper.WALL_TIME_GROWTH_8_TO_32,
                          f"wall time {growth:+.0%} from 8 to 32 filters"))
    else:
        parts.append(Part(None, f"wall time {growth:+.0%} from 8 to 32 filters on a CPU, where "
                                f"cost follows the FLOPs; the study's ~10 % is a GPU whose small "
                                f"layers are latency-bound"))
    return parts
