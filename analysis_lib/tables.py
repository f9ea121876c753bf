"""Tables the chapters show, built from evaluations (:class:`analysis_lib.metrics.Evaluation`)."""

from collections.abc import Mapping

import pandas as pd

from analysis_lib.metrics import Evaluation
from analysis_lib.paper import CLASSWISE_ROWS


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
