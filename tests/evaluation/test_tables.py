"""Chapter tables from hand-made summaries."""

import numpy as np
import pandas as pd
import pytest

from analysis_lib.evaluation.metrics import Evaluation
from analysis_lib.evaluation.tables import (
    classwise_columns,
    dense_over_sparse,
    depth_filter_grid,
    mistake_concentration,
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


def test_mistake_concentration_by_hand():
    # ten events; MIP (1) called HIP (0): 5 voxels in event 0, 1 in event 1; shower (2) called
    # MIP: 1 voxel in each of events 2, 3 and 4
    events = []
    for i in range(10):
        label = np.array([1, 1, 1, 1, 1, 1, 2, 0])
        pred = label.copy()
        energy = np.full(8, 1.0)
        if i == 0:
            pred[:5] = 0
            energy[:5] = 3.0
        if i == 1:
            pred[0] = 0
            energy[0] = 9.0
        if i in (2, 3, 4):
            pred[6] = 1
        events.append((label, pred, energy))
    table = mistake_concentration(events, worst=0.1, rows=4)
    assert list(table.index) == ["MIP → HIP", "EM shower → MIP"]
    mip = table.loc["MIP → HIP"]
    assert mip["voxels"] == 6
    assert mip["share of all mistakes"] == pytest.approx(6 / 9)
    assert mip["share in the worst 1 events"] == pytest.approx(5 / 6)
    assert mip["mean deposit, mistaken (MeV)"] == pytest.approx((5 * 3.0 + 9.0) / 6)
    assert mip["mean deposit, right (MeV)"] == pytest.approx(1.0)
    assert table.loc["EM shower → MIP", "share in the worst 1 events"] == pytest.approx(1 / 3)
    assert len(mistake_concentration(events, rows=1)) == 1
    perfect = [(label, label, energy) for label, _, energy in events]
    assert mistake_concentration(perfect).empty
