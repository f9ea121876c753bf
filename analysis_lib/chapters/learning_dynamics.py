"""Figures 6–9: how evenly the dense and the sparse network grow confident during training,
and the study's claim 6 judged on it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from analysis_lib.evaluation.evidence import Estimate, Part
from analysis_lib.study import results
from analysis_lib.study.profiles import Chapter

NAME = "learning_dynamics"


@dataclass(frozen=True)
class LearningDynamics:
    """Figure 6's quantity per backend and training iteration: the standard deviation of the
    shower softmax score over the voxels of the batch predicted as shower (NaN where none
    was)."""

    iterations: Mapping[str, tuple[int, ...]]
    shower_spread: Mapping[str, tuple[float, ...]]

    def early_spread(self, backend: str) -> Estimate:
        """Mean spread over the first half of training, with its standard error."""
        values = np.asarray(self.shower_spread[backend], float)
        early = values[: len(values) // 2]
        early = early[np.isfinite(early)]
        return Estimate(float(early.mean()), float(early.std() / math.sqrt(len(early))))


def from_logs(logs: Mapping[str, Mapping[str, np.ndarray]]) -> LearningDynamics:
    """The chapter's results from each backend's training log."""
    return LearningDynamics(
        iterations={b: tuple(map(int, log["iteration"])) for b, log in logs.items()},
        shower_spread={b: tuple(map(float, log["shower_softmax_std"])) for b, log in logs.items()})


def compute(ch: Chapter) -> LearningDynamics:
    """Read the curve networks' logs (training them if the profile has not), and record."""
    result = from_logs({backend: run.log() for backend, run in ch.trained(ch.curve_runs).items()})
    results.record(NAME, result)
    return result


def shower_spread(r: LearningDynamics) -> list[Part]:
    """Claim 6: the sparse network's spread lower early in training."""
    if not {"sparse", "dense"} <= set(r.shower_spread):
        return [Part(None, "no dense network beside the sparse one")]
    sparse, dense = r.early_spread("sparse"), r.early_spread("dense")
    return [Part(dense.exceeds(sparse),
                 f"mean over the first half of training: sparse {sparse}, dense {dense}")]
