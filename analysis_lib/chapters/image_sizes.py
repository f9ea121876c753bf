"""Table IV: classwise accuracy of networks trained on one image size and tested on others,
and the study's claim 8 judged on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis_lib.core.labels import CLASS_NAMES, VoxelClass
from analysis_lib.evaluation.evidence import Part, classwise, improves
from analysis_lib.evaluation.metrics import Evaluation
from analysis_lib.evaluation.tables import classwise_columns
from analysis_lib.study import results
from analysis_lib.study.profiles import Chapter

NAME = "image_sizes"


@dataclass(frozen=True)
class Cell:
    """The network trained on ``train`` px images, scored on held-out ``test`` px images."""

    train: int
    test: int
    summary: Evaluation


@dataclass(frozen=True)
class ImageSizes:
    """Table IV: every training size crossed with every test size."""

    table4: tuple[Cell, ...]

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Classwise accuracy per (test, train) column and its standard errors."""
        return classwise_columns({(f"test {c.test} px", f"train {c.train} px"): c.summary
                                  for c in self.table4})


def compute(ch: Chapter) -> ImageSizes:
    """Score each network on each test size, and record."""
    trained = ch.trained(ch.train_runs)
    result = ImageSizes(tuple(
        Cell(int(train), int(test), trained[train].evaluation(ch.data.path_of(test_set))
             .on(test_set))
        for test, test_set in ch.test_sets.items() for train in ch.train_runs))
    results.record(NAME, result)
    return result


def larger_images(r: ImageSizes) -> list[Part]:
    """Claim 8: larger test images raise accuracy; Michel and delta the weakest classes."""
    parts = []
    for train in sorted({c.train for c in r.table4}):
        cols = sorted((c for c in r.table4 if c.train == train), key=lambda c: c.test)
        better, diff = improves(cols[-1].summary, cols[0].summary)
        parts.append(Part(better, f"train {train} px: test {cols[0].test} → {cols[-1].test} px, "
                                  f"accuracy {diff} higher"))
    weakest = {VoxelClass.MICHEL, VoxelClass.DELTA}
    bad = []
    for c in r.table4:
        acc = [classwise(c.summary, k).value for k in range(len(CLASS_NAMES))]
        if set(np.argsort(np.nan_to_num(acc, nan=-1))[:2].tolist()) != weakest:
            bad.append(f"train {c.train}/test {c.test}")
    parts.append(Part(not bad, "Michel and delta the two weakest classes in "
                               + ("every column" if not bad else f"all but {', '.join(bad)}")))
    return parts
