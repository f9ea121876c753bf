"""The study's claims, each with a criterion fixed here, judged on the chapters' recorded results.

A claim is *reproduced* when every part of it that this profile can test passes its criterion,
*not reproduced* when a tested part fails, and *not testable* when no part can be tested (the
reason is given). A difference counts only where it exceeds its standard error: over events for
accuracies (paired when both networks saw the same events), binomial for misclassified
fractions, over iterations for training curves. Each claim's judge lives in the module of the
chapter that measures it (:mod:`analysis_lib.chapters`) and reads only that chapter's result
class, built back from its record field by field: a record that does not match its class is an
error, not an untestable claim.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from analysis_lib.chapters import (
    architecture,
    image_sizes,
    learning_dynamics,
    michel,
    mistakes,
    relabeling,
    sparse_vs_dense,
)
from analysis_lib.evaluation.evidence import Part
from analysis_lib.evaluation.metrics import FAR_PX, NEAR_PX
from analysis_lib.study import results

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable"

#: Each judged chapter's result class, by chapter name.
RESULT_TYPES: dict[str, type] = {
    sparse_vs_dense.NAME: sparse_vs_dense.SparseVsDense,
    learning_dynamics.NAME: learning_dynamics.LearningDynamics,
    architecture.NAME: architecture.Architecture,
    image_sizes.NAME: image_sizes.ImageSizes,
    mistakes.NAME: mistakes.Mistakes,
    relabeling.NAME: relabeling.Relabeling,
    michel.NAME: michel.Michel,
}


@dataclass(frozen=True)
class Claim:
    """A claim of the study, where it is made, what the study measured, its criterion, and the
    chapter whose results its judge reads."""

    number: int
    source: str
    statement: str
    study: str
    criterion: str
    chapter: str
    judge: Callable[[object], list[Part]]


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict and what our numbers were."""

    claim: Claim
    status: str
    ours: str


CLAIMS = (
    Claim(1, "Table II", "At equal batch and image size, sparse accuracy ≥ dense.",
          "92 % dense vs 94 % sparse [3D, 192 px, batch 4]",
          "sparse − dense ≥ −SE (paired over the same held-out events)",
          sparse_vs_dense.NAME, sparse_vs_dense.equal_setting_accuracy),
    Claim(2, "Table II, abstract", "Sparse inference memory and time far below dense, the gap "
          "growing with image size.", "3D: 364× memory, 33× time; 2D: 93×, 3.1×",
          "at the largest size ≥ 10× memory and ≥ 3× time; both ratios larger there than at the "
          "smallest size", sparse_vs_dense.NAME, sparse_vs_dense.inference_ratios),
    Claim(3, "Figures 3–4", "Sparse memory and time grow linearly and slowly with batch size.",
          "linear, far below dense", "linear fit R² ≥ 0.9 for sparse memory and time, each slope "
          "below dense's", sparse_vs_dense.NAME, sparse_vs_dense.batch_scaling),
    Claim(4, "Table II", "Larger batch and larger images raise sparse accuracy and shrink its "
          "spread.", "192 px: 94 % (batch 4) → 98 % (batch 64); 99 % at 512 px",
          "each larger setting: accuracy higher and per-event std lower, each by more than its "
          "SE, at the same iterations", sparse_vs_dense.NAME, sparse_vs_dense.batch_and_size),
    Claim(5, "Figure 5", "Sparse reaches higher accuracy than dense in less wall time.",
          "sparse converges in a fraction of dense's time",
          "sparse reaches dense's final (smoothed) training accuracy in less wall time than dense "
          "took", sparse_vs_dense.NAME, sparse_vs_dense.time_to_accuracy),
    Claim(6, "Figures 6–9", "Sparse becomes confident more uniformly across pixels early in "
          "training.", "lower spread of the shower score for sparse",
          "mean spread over the first half of training lower for sparse by more than its SE",
          learning_dynamics.NAME, learning_dynamics.shower_spread),
    Claim(7, "Table III, Figures 10–11", "More filters raise accuracy; memory grows about "
          "linearly with filters, wall time only about 10 % from 8 to 32.",
          "98.7–99.2 %, rising with filters", "32 − 8 filters > SE at ≥ 2 of 3 depths; training "
          "memory linear in filters (R² ≥ 0.95); wall time +≤ 25 % (GPU only)",
          architecture.NAME, architecture.filters),
    Claim(8, "Table IV", "Testing on larger images than training improves accuracy; Michel and "
          "delta are the weakest classes at every size.", "98.0 → 98.9 % (train 192 px)",
          "each network: accuracy on the larger test images higher by > SE; Michel and delta "
          "the two lowest classwise accuracies in every column",
          image_sizes.NAME, image_sizes.larger_images),
    Claim(9, "Figure 12", "Misclassification rises near the image boundary (HIP, MIP, shower), "
          "not clearly for Michel and delta.", "rise below ~5 px",
          f"misclassified fraction closer than {NEAR_PX} px to the boundary minus at "
          f"{FAR_PX} px or more > SE for HIP, MIP and shower; not > 2 SE for both Michel and "
          "delta", mistakes.NAME, mistakes.near_boundary),
    Claim(10, "Table V", "Relabeling raises Michel accuracy by more than 40 %; relabeling + "
          "class weights gives the best Michel and delta accuracy.",
          "Michel 56.6 → 94.4 / 94.7 / 95.7 %",
          "Michel accuracy ×≥ 1.4 (the study's 40 % is relative: 56.6 → 94.4 is +67 %, +38 "
          "points) and > SE, for the regular and the relabeled network on relabeled events; "
          "relabeled + weights not below another by more than SE, Michel and delta",
          relabeling.NAME, relabeling.relabeling_helps),
    Claim(11, "Table VI", "Michel ID efficiency ≈ 94 %, purity ≈ 97 %, cluster efficiency and "
          "purity ≈ 95 %.", "93.9 / 96.7 / 95.4 / 95.5 %",
          "each within 5 points of the study's (no cut), on ≥ 50 true Michel electrons",
          michel.NAME, michel.table6),
    Claim(12, "Figure 15", "The reconstructed Michel spectrum follows the true one except an "
          "excess of small candidates.", "excess below ~10 px",
          "more candidates than true electrons below 10 voxels; above, sizes agree (KS p ≥ 0.05)",
          michel.NAME, michel.spectrum),
)


def _status(parts: list[Part]) -> str:
    tested = [p.passed for p in parts if p.passed is not None]
    if not tested:
        return NOT_TESTABLE
    return REPRODUCED if all(tested) else NOT_REPRODUCED


def typed(recorded: Mapping[str, Mapping]) -> dict[str, object]:
    """The judged chapters' results among ``recorded`` (chapter name -> record, as
    :func:`~analysis_lib.study.results.load_all` reads them), each built into its class."""
    return {name: results.read(cls, name, recorded[name])
            for name, cls in RESULT_TYPES.items() if name in recorded}


def judge(recorded: Mapping[str, Mapping]) -> list[Verdict]:
    """Every claim's verdict on the chapters' ``recorded`` results."""
    chapters = typed(recorded)
    verdicts = []
    for claim in CLAIMS:
        result = chapters.get(claim.chapter)
        parts = (claim.judge(result) if result is not None else
                 [Part(None, f"the {claim.chapter} chapter recorded no results")])
        ours = "; ".join(p.ours + ("" if p.passed is not False else " ✗") for p in parts)
        verdicts.append(Verdict(claim, _status(parts), ours))
    return verdicts
