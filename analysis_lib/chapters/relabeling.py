"""Table V: classwise accuracy with regular and relabeled labels, with and without class
weights, and the study's claim 10 judged on it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from analysis_lib.core.labels import CLASS_NAMES, VoxelClass
from analysis_lib.evaluation.evidence import Part, classwise
from analysis_lib.evaluation.metrics import Evaluation
from analysis_lib.evaluation.tables import classwise_columns
from analysis_lib.study import results
from analysis_lib.study.chapter_params import TABLE5_COLUMNS
from analysis_lib.study.profiles import Chapter

NAME = "relabeling"
REGULAR, REGULAR_ON_RELABELED, RELABELED, WEIGHTED = TABLE5_COLUMNS


@dataclass(frozen=True)
class Relabeling:
    """Table V: one evaluation per column of :data:`TABLE5_COLUMNS`, on the same events."""

    table5: Mapping[str, Evaluation]

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Classwise accuracy per column and its standard errors."""
        return classwise_columns(self.table5)


def compute(ch: Chapter) -> Relabeling:
    """Score the three networks on regular and relabeled labels of the test set, and record."""
    trained = ch.trained(ch.table5_runs)
    test_path = ch.data.path_of(ch.test_set)
    result = Relabeling({column: trained[flavour].evaluation(test_path, relabeled=relabeled)
                         for column, (flavour, relabeled) in TABLE5_COLUMNS.items()})
    results.record(NAME, result)
    return result


def relabeling_helps(r: Relabeling) -> list[Part]:
    """Claim 10: relabeling raises Michel accuracy by > 40 %; with class weights, the best
    Michel and delta accuracy."""
    if set(r.table5) != set(TABLE5_COLUMNS):
        return [Part(None, f"Table V lacks {sorted(set(TABLE5_COLUMNS) - set(r.table5))}")]
    michel, delta = VoxelClass.MICHEL, VoxelClass.DELTA
    base = classwise(r.table5[REGULAR], michel)
    parts = []
    for column in (REGULAR_ON_RELABELED, RELABELED):
        new = classwise(r.table5[column], michel)
        ratio = new.value / base.value if base.value > 0 else math.inf
        parts.append(Part(bool(ratio >= 1.4 and new.exceeds(base)),
                          f"Michel {base.value:.1%} → {new.value:.1%} ({column})"))
    best = r.table5[WEIGHTED]
    others = [r.table5[REGULAR_ON_RELABELED], r.table5[RELABELED]]
    for cls in (michel, delta):
        mine = classwise(best, cls)
        ok = all(not classwise(o, cls).exceeds(mine) for o in others)
        parts.append(Part(ok, f"{CLASS_NAMES[cls]}: relabeled + weights {mine.value:.1%}, others "
                              + ", ".join(f"{classwise(o, cls).value:.1%}" for o in others)))
    return parts
