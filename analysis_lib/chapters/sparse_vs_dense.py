"""Table II and Figures 3–5: the dense and the sparse U-ResNet side by side (accuracy, memory,
wall time), and the study's claims 1–5 judged on them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis_lib.evaluation import metrics
from analysis_lib.evaluation.evidence import (
    Part,
    accuracy,
    improves,
    linear_r2,
    paired_difference,
    spread_shrinks,
)
from analysis_lib.evaluation.metrics import Evaluation
from analysis_lib.evaluation.resources import (
    ModelSpec,
    Table2,
    case_rows,
    cases_frame,
    measure_cases,
    measure_table2,
)
from analysis_lib.evaluation.tables import classwise_columns, dense_over_sparse
from analysis_lib.study import results
from analysis_lib.study.profiles import Chapter
from analysis_lib.training.batching import first_events

NAME = "sparse_vs_dense"
#: Figure 5's smoothing window (iterations).
CURVE_WINDOW = 25


@dataclass(frozen=True)
class DenseOverSparse:
    """Dense over sparse inference memory and wall time at one image size and batch."""

    size: int
    batch: int
    memory: float
    time: float


@dataclass(frozen=True)
class BatchCost:
    """Inference memory (GB) and median wall time (s) of one backend at one batch size."""

    backend: str
    batch: int
    memory: float
    time: float
    out_of_memory: bool


@dataclass(frozen=True)
class Curve:
    """Figure 5's curve of one network: training accuracy smoothed over :data:`CURVE_WINDOW`
    iterations against the cumulative wall time of the training steps."""

    wall_s: tuple[float, ...]
    accuracy: tuple[float, ...]
    batch: int
    iterations: int


@dataclass(frozen=True)
class Setting:
    """A network of the batch- and size-comparison rows, scored on its own image size."""

    size: int
    batch: int
    iterations: int
    summary: Evaluation


@dataclass(frozen=True)
class SparseVsDense:
    """The chapter's results: Table II (``table2``: column -> quantity -> value), the dense
    over sparse ratios, Figures 3–4's batch scan (2D, ``scan_size`` px), Figure 5's curves, the
    equal-setting comparison and the batch- and size-comparison rows."""

    device: str
    table2: Mapping[str, Mapping[str, float]]
    out_of_memory: tuple[str, ...]
    ratios: tuple[DenseOverSparse, ...]
    scan_size: int
    batch_scan: tuple[BatchCost, ...]
    curves: Mapping[str, Curve]
    equal_setting: str
    equal: Mapping[str, Evaluation]
    settings: tuple[Setting, ...]

    def table2_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.table2)

    def ratios_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.ratios, columns=["size", "batch", "memory", "time"])

    def batch_frame(self) -> pd.DataFrame:
        return cases_frame(self.batch_scan)

    def equal_frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Classwise accuracy of the equal-setting pair and its standard errors."""
        return classwise_columns(self.equal)

    def settings_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"image size": s.size, "batch": s.batch, "iterations": s.iterations,
                              "nonzero accuracy": f"{s.summary.nonzero_accuracy:.3f} ± "
                                                  f"{s.summary.nonzero_accuracy_sem:.3f}",
                              "std over events": round(s.summary.nonzero_accuracy_std, 3)}
                             for s in self.settings])


def ratios(table2: Table2) -> tuple[DenseOverSparse, ...]:
    """Dense over sparse for every dense column of Table II with a sparse twin."""
    frame = dense_over_sparse(table2.frame, table2.settings)
    return tuple(DenseOverSparse(int(r.size), int(r.batch), float(r.memory), float(r.time))
                 for r in frame.itertuples())


def curve(log: Mapping[str, np.ndarray], batch: int, iterations: int) -> Curve:
    """Figure 5's curve from a training log."""
    return Curve(tuple(map(float, log["wall_time_s"][CURVE_WINDOW - 1:])),
                 tuple(map(float, metrics.running_mean(log["nonzero_accuracy"], CURVE_WINDOW))),
                 batch, iterations)


def compute(ch: Chapter) -> SparseVsDense:
    """Measure and score everything the chapter shows (minutes: Table II and the 2D scan time
    fresh processes), and record it."""
    data = ch.data
    trained = ch.trained({"sparse": ch.sparse_run,
                          **({"dense": ch.dense_run} if ch.dense_run else {})})
    net = trained["sparse"].config
    evaluations = {name: run.evaluation(data.path_of(ch.test_set)) for name, run in trained.items()}
    table2 = measure_table2(ch.table2_columns, ModelSpec(3, net.depth, net.filters, "sparse"),
                            data.path_of, evaluations, ch.device, ch.repeats)
    path_2d = str(data.path_of(ch.sample_2d))
    scan = measure_cases((({"backend": backend, "batch": n}, ModelSpec(2, 5, 16, backend),
                           first_events(path_2d, n, dim=2), "inference")
                          for backend, sizes in ch.batch_sizes_2d.items() for n in sizes),
                         ch.device, ch.repeats)
    curve_nets = ch.trained(ch.curve_runs)
    curve_test = data.path_of(ch.curve_test_set)
    cfg = curve_nets["sparse"].config
    curve_size = int(data.entry(ch.data_set_of(ch.curve_runs["sparse"])).size)
    setting_nets = ch.trained({i: entry.run for i, entry in enumerate(ch.setting_runs)})
    result = SparseVsDense(
        device=ch.device, table2=table2.frame.to_dict(), out_of_memory=table2.out_of_memory,
        ratios=ratios(table2), scan_size=first_events(path_2d, 1, dim=2).spatial_size,
        batch_scan=case_rows(scan, BatchCost),
        curves={backend: curve(run.log(), run.config.batch_size, run.config.iterations)
                for backend, run in curve_nets.items()},
        equal_setting=f"[{cfg.dim}D, {curve_size} px], batch {cfg.batch_size}",
        equal={backend: run.evaluation(curve_test).on(ch.curve_test_set)
               for backend, run in curve_nets.items()},
        settings=tuple(Setting(int(data.entry(entry.test_set).size), run.config.batch_size,
                               run.config.iterations,
                               run.evaluation(data.path_of(entry.test_set)).on(entry.test_set))
                       for entry, run in zip(ch.setting_runs, setting_nets.values(), strict=True)))
    results.record(NAME, result)
    return result


# --- the claims' judges ------------------------------------------------------------------------

def equal_setting_accuracy(r: SparseVsDense) -> list[Part]:
    """Claim 1: at equal batch and image size, sparse accuracy ≥ dense."""
    if not {"sparse", "dense"} <= set(r.equal):
        return [Part(None, "no dense network beside the sparse one at equal setting")]
    sparse, dense = r.equal["sparse"], r.equal["dense"]
    diff = paired_difference(sparse, dense) or (accuracy(sparse) - accuracy(dense))
    return [Part(diff.value >= -diff.se,
                 f"{r.equal_setting}: sparse {accuracy(sparse)}, dense {accuracy(dense)}; "
                 f"difference {diff}")]


def inference_ratios(r: SparseVsDense) -> list[Part]:
    """Claim 2: dense over sparse far above 1 at the largest size, growing with size."""
    ordered = sorted(r.ratios, key=lambda x: x.size)
    if len(ordered) < 2:
        return [Part(None, "the dense network was measured at fewer than two image sizes")]
    small, large = ordered[0], ordered[-1]
    far = large.memory >= 10 and large.time >= 3
    growing = large.memory > small.memory and large.time > small.time
    text = ", ".join(f"{x.size} px: {x.memory:.0f}× memory, {x.time:.1f}× time" for x in ordered)
    return [Part(far and growing, f"3D, {r.device}: {text}")]


def batch_scaling(r: SparseVsDense) -> list[Part]:
    """Claim 3: sparse memory and time linear in the batch, below dense's slopes."""
    frame = pd.DataFrame(r.batch_scan, columns=["backend", "batch", "memory", "time"])
    slopes, parts = {}, []
    for backend, group in frame.groupby("backend"):
        if group["batch"].nunique() >= 2:
            for quantity in ("memory", "time"):
                slopes[backend, quantity] = linear_r2(group["batch"], group[quantity])
    if ("sparse", "memory") not in slopes:
        return [Part(None, "the sparse network was measured at fewer than two batch sizes")]
    for quantity, unit in (("memory", "GB"), ("time", "s")):
        s_slope, s_r2 = slopes["sparse", quantity]
        d_slope, _ = slopes.get(("dense", quantity), (math.nan, math.nan))
        parts.append(Part(s_r2 >= 0.9 and s_slope < d_slope,
                          f"{quantity}: sparse {s_slope:.3g} {unit}/event (R² {s_r2:.2f}), "
                          f"dense {d_slope:.3g} {unit}/event"))
    return parts


def batch_and_size(r: SparseVsDense) -> list[Part]:
    """Claim 4: a larger batch or larger images raise accuracy and shrink its spread."""
    parts = []
    for axis in ("batch", "size"):
        other = "size" if axis == "batch" else "batch"
        pairs = [(a, b) for a in r.settings for b in r.settings
                 if getattr(a, other) == getattr(b, other)
                 and getattr(a, axis) > getattr(b, axis) and a.iterations == b.iterations]
        if not pairs:
            parts.append(Part(None, f"no two networks differ in {axis} alone"))
            continue
        for big, small in pairs:
            better, _ = improves(big.summary, small.summary)
            parts.append(Part(better and spread_shrinks(big.summary, small.summary),
                              f"{axis} {getattr(small, axis)} → {getattr(big, axis)}: accuracy "
                              f"{accuracy(small.summary)} → {accuracy(big.summary)}, std "
                              f"{small.summary.nonzero_accuracy_std:.3f} → "
                              f"{big.summary.nonzero_accuracy_std:.3f}"))
    return parts


def time_to_accuracy(r: SparseVsDense) -> list[Part]:
    """Claim 5: sparse reaches dense's final training accuracy in less wall time."""
    if not {"sparse", "dense"} <= set(r.curves):
        return [Part(None, "no dense training curve beside the sparse one")]
    sparse, dense = r.curves["sparse"], r.curves["dense"]
    if not sparse.accuracy or not dense.accuracy:
        return [Part(None, "the training curves are shorter than their smoothing window")]
    target = dense.accuracy[-1]
    reached = np.flatnonzero(np.asarray(sparse.accuracy) >= target)
    t_sparse = sparse.wall_s[reached[0]] if len(reached) else math.inf
    t_dense = dense.wall_s[-1]
    return [Part(bool(t_sparse < t_dense),
                 f"dense reaches {target:.3f} (training batches, smoothed) in {t_dense:.0f} s; "
                 f"sparse reaches it in {t_sparse:.0f} s and ends at "
                 f"{sparse.accuracy[-1]:.3f} after {sparse.wall_s[-1]:.0f} s")]
