"""Tables the chapters show, built from evaluations
(:class:`analysis_lib.evaluation.metrics.Evaluation`)."""

from collections.abc import Mapping

import numpy as np
import pandas as pd

from analysis_lib.core.labels import CLASS_NAMES, NUM_CLASSES
from analysis_lib.core.paper import CLASSWISE_ROWS
from analysis_lib.evaluation.metrics import Evaluation


def classwise_columns(summaries: Mapping[object, Evaluation]
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Classwise and overall accuracy per column, and their standard errors (two frames with
    the rows of :data:`CLASSWISE_ROWS`)."""
    rows = list(CLASSWISE_ROWS)
    frames = {k: s.to_frame().set_axis(rows) for k, s in summaries.items()}
    values = pd.DataFrame({k: f["accuracy"] for k, f in frames.items()}, index=rows)
    errors = pd.DataFrame({k: f["standard error"] for k, f in frames.items()}, index=rows)
    return values.astype(float), errors.astype(float)


def with_errors(values: pd.DataFrame, errors: pd.DataFrame, percent: bool = True) -> pd.DataFrame:
    """Cells ``value ± error`` as text (percent by default), ``—`` where a value is missing."""
    def cell(v: float, e: float) -> str:
        if pd.isna(v):
            return "—"
        text = f"{v:.1%}" if percent else f"{v:.3f}"
        if pd.isna(e):
            return text
        return f"{text} ± {e:.1%}" if percent else f"{text} ± {e:.3f}"
    return pd.DataFrame([[cell(v, e) for v, e in zip(values.loc[i], errors.loc[i], strict=True)]
                         for i in values.index], index=values.index, columns=values.columns)


def depth_filter_grid(values: Mapping[tuple[int, int], float]) -> pd.DataFrame:
    """Table III's layout: rows "depth d" (deepest first), columns "f filters"."""
    frame = pd.Series(values).unstack().sort_index(ascending=False)
    frame.index = [f"depth {d}" for d in frame.index]
    frame.columns = [f"{f} filters" for f in frame.columns]
    return frame


def dense_over_sparse(table2: pd.DataFrame, columns: Mapping[str, tuple[str, int, int]]
                      ) -> pd.DataFrame:
    """Dense/sparse inference memory and wall time for every dense column of Table II that has
    a sparse twin (same image size and batch); ``columns`` maps a column name to
    (backend, size, batch). Rows by image size, ascending."""
    twins = {(size, batch): name for name, (backend, size, batch) in columns.items()
             if backend == "sparse"}
    rows = []
    for name, (backend, size, batch) in columns.items():
        sparse = twins.get((size, batch))
        if backend != "dense" or sparse is None:
            continue
        rows.append({"size": size, "batch": batch,
                     "memory": table2.loc["memory test (GB)", name]
                     / table2.loc["memory test (GB)", sparse],
                     "time": table2.loc["wall time test (s)", name]
                     / table2.loc["wall time test (s)", sparse]})
    return pd.DataFrame(rows, columns=["size", "batch", "memory", "time"]).sort_values("size")


def mistake_concentration(events: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                          worst: float = 0.1, rows: int = 4) -> pd.DataFrame:
    """How each of the ``rows`` commonest confusions (true -> predicted class) spreads over the
    events ``(label, pred, energy)``: its voxels, its share of all mistakes, the share held by
    the ``worst`` fraction of events that hold most of it, and the mean deposit of its voxels
    beside that of the true class's voxels classified right. A confusion held by few events, at
    the deposits of the right voxels, is whole particles given the wrong identity (a matter of
    context), not voxels whose deposits look like the other class."""
    n_top = max(1, int(np.ceil(worst * len(events))))
    counts = np.zeros((len(events), NUM_CLASSES, NUM_CLASSES), np.int64)
    sums = np.zeros((NUM_CLASSES, NUM_CLASSES))
    for i, (label, pred, energy) in enumerate(events):
        np.add.at(counts[i], (label, pred), 1)
        np.add.at(sums, (label, pred), energy)
    total = counts.sum(0)
    wrong = total.sum() - np.trace(total)
    order = sorted(((t, p) for t in range(NUM_CLASSES) for p in range(NUM_CLASSES)
                    if t != p and total[t, p]), key=lambda tp: -total[tp])
    columns = ["mistake", "voxels", "share of all mistakes", f"share in the worst {n_top} events",
               "mean deposit, mistaken (MeV)", "mean deposit, right (MeV)"]
    table = []
    for t, p in order[:rows]:
        per_event = np.sort(counts[:, t, p])[::-1]
        table.append([f"{CLASS_NAMES[t]} → {CLASS_NAMES[p]}", int(total[t, p]),
                      total[t, p] / wrong, per_event[:n_top].sum() / total[t, p],
                      sums[t, p] / total[t, p],
                      sums[t, t] / total[t, t] if total[t, t] else np.nan])
    return pd.DataFrame(table, columns=columns).set_index("mistake")
