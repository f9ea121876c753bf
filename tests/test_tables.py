"""Chapter tables from hand-made summaries."""

import pandas as pd

from analysis_lib.metrics import Evaluation
from analysis_lib.tables import (
    classwise_columns,
    dense_over_sparse,
    depth_filter_grid,
    with_errors,
)


def _summary(overall, michel):
    return Evaluation(n_events=10, nonzero_accuracy=overall, nonzero_accuracy_std=0.01,
                      nonzero_accuracy_sem=0.004, nonzero_accuracy_per_event=(overall,) * 10,
                      classwise_accuracy=(0.9, 0.8, 0.7, None, michel),
                      classwise_accuracy_sem=(0.01, 0.02, 0.03, None, 0.05),
                      classwise_events=(10, 10, 10, 0, 3), confusion_matrix=((0,) * 5,) * 5)


def test_classwise_columns_and_errors():
    values, errors = classwise_columns({"a": _summary(0.85, 0.5), "b": _summary(0.9, 0.6)})
    assert values.loc["Michel e-", "b"] == 0.6 and values.loc["overall", "a"] == 0.85
    assert pd.isna(values.loc["Delta ray", "a"]) and errors.loc["overall", "b"] == 0.004
    text = with_errors(values, errors)
    assert text.loc["Michel e-", "a"] == "50.0% ± 5.0%"
    assert text.loc["Delta ray", "a"] == "—"
    assert with_errors(values, errors, percent=False).loc["overall", "b"] == "0.900 ± 0.004"


def test_depth_filter_grid_puts_deepest_first():
    grid = depth_filter_grid({(4, 8): 0.1, (4, 16): 0.2, (5, 8): 0.3, (5, 16): 0.4})
    assert list(grid.index) == ["depth 5", "depth 4"]
    assert list(grid.columns) == ["8 filters", "16 filters"]
    assert grid.loc["depth 4", "16 filters"] == 0.2


def test_dense_over_sparse_pairs_columns_of_equal_size_and_batch():
    table2 = pd.DataFrame({"d64": [8.0, 2.0], "s64": [0.5, 1.0], "d128": [64.0, 30.0],
                           "s128": [1.0, 2.0], "s512": [4.0, 9.0]},
                          index=["memory test (GB)", "wall time test (s)"])
    meta = {"d64": ("dense", 64, 4), "s64": ("sparse", 64, 4), "d128": ("dense", 128, 4),
            "s128": ("sparse", 128, 4), "s512": ("sparse", 512, 4)}
    ratios = dense_over_sparse(table2, meta)
    assert ratios["size"].tolist() == [64, 128]
    assert ratios["memory"].tolist() == [16.0, 64.0]
    assert ratios["time"].tolist() == [2.0, 15.0]
