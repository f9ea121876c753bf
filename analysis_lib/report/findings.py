"""The study's claims, each with a criterion fixed here, judged on the chapters' recorded results.

A claim is *reproduced* when every part of it that this profile can test passes its criterion,
*not reproduced* when a tested part fails, and *not testable* when no part can be tested (the
reason is given). A difference counts only where it exceeds its standard error: over events for
accuracies (paired when both networks saw the same events), binomial for misclassified
fractions, over iterations for training curves.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis_lib.core import paper
from analysis_lib.core.labels import CLASS_NAMES, VoxelClass
from analysis_lib.evaluation.metrics import FAR_PX, NEAR_PX, Evaluation
from analysis_lib.evaluation.michel import MichelSummary
from analysis_lib.report.evidence import (
    Estimate,
    accuracy,
    classwise,
    improves,
    linear_r2,
    paired_difference,
    spread_shrinks,
)

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable"

Results = dict[str, dict]


@dataclass(frozen=True)
class Part:
    """One tested (or untestable) part of a claim: ``passed`` is None when not testable."""

    passed: bool | None
    ours: str


@dataclass(frozen=True)
class Claim:
    """A claim of the study, where it is made, what the study measured, and its criterion."""

    number: int
    source: str
    statement: str
    study: str
    criterion: str
    judge: Callable[[Results], list[Part]]


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict and what our numbers were."""

    claim: Claim
    status: str
    ours: str



def _missing(chapter: str) -> list[Part]:
    return [Part(None, f"the {chapter} chapter recorded no results")]


# --- the claims' judges, one per claim -----------------------------------------------------------

def _sparse_vs_dense_accuracy(r: Results) -> list[Part]:
    equal = r.get("sparse_vs_dense", {}).get("equal_setting")
    if not equal:
        return _missing("sparse vs dense")
    sparse, dense = Evaluation.from_record(equal["sparse"]), Evaluation.from_record(equal["dense"])
    diff = paired_difference(sparse, dense) or (accuracy(sparse) - accuracy(dense))
    return [Part(diff.value >= -diff.se,
                 f"{equal['setting']}: sparse {accuracy(sparse)}, dense {accuracy(dense)}; "
                 f"difference {diff}")]


def _inference_ratios(r: Results) -> list[Part]:
    ratios = sorted(r.get("sparse_vs_dense", {}).get("ratios", []), key=lambda x: x["size"])
    if len(ratios) < 2:
        return [Part(None, "the dense network was measured at fewer than two image sizes")]
    small, large = ratios[0], ratios[-1]
    far = large["memory"] >= 10 and large["time"] >= 3
    growing = large["memory"] > small["memory"] and large["time"] > small["time"]
    text = ", ".join(f"{x['size']} px: {x['memory']:.0f}× memory, {x['time']:.1f}× time"
                     for x in ratios)
    return [Part(far and growing, f"3D, {r['sparse_vs_dense']['device']}: {text}")]


def _batch_scaling(r: Results) -> list[Part]:
    scan = r.get("sparse_vs_dense", {}).get("batch_scan")
    if not scan:
        return _missing("sparse vs dense")
    frame = pd.DataFrame(scan)
    slopes, parts = {}, []
    for backend, group in frame.groupby("backend"):
        for quantity in ("memory", "time"):
            slopes[backend, quantity] = linear_r2(group["batch"], group[quantity])
    for quantity, unit in (("memory", "GB"), ("time", "s")):
        s_slope, s_r2 = slopes["sparse", quantity]
        d_slope, _ = slopes.get(("dense", quantity), (math.nan, math.nan))
        parts.append(Part(s_r2 >= 0.9 and s_slope < d_slope,
                          f"{quantity}: sparse {s_slope:.3g} {unit}/event (R² {s_r2:.2f}), "
                          f"dense {d_slope:.3g} {unit}/event"))
    return parts


def _batch_and_size(r: Results) -> list[Part]:
    settings = r.get("sparse_vs_dense", {}).get("accuracy_by_setting")
    if not settings:
        return _missing("sparse vs dense")
    parts = []
    for axis in ("batch", "size"):
        other = "size" if axis == "batch" else "batch"
        pairs = [(a, b) for a in settings for b in settings
                 if a[other] == b[other] and a[axis] > b[axis]
                 and a.get("iterations") == b.get("iterations")]
        if not pairs:
            parts.append(Part(None, f"no two networks differ in {axis} alone"))
            continue
        for big_setting, small_setting in pairs:
            big = Evaluation.from_record(big_setting["summary"])
            small = Evaluation.from_record(small_setting["summary"])
            better, diff = improves(big, small)
            parts.append(Part(better and spread_shrinks(big, small),
                              f"{axis} {small_setting[axis]} → {big_setting[axis]}: accuracy "
                              f"{accuracy(small)} → {accuracy(big)}, std "
                              f"{small.nonzero_accuracy_std:.3f} → "
                              f"{big.nonzero_accuracy_std:.3f}"))
    return parts


def _time_to_accuracy(r: Results) -> list[Part]:
    curves = r.get("sparse_vs_dense", {}).get("curves")
    if not curves:
        return _missing("sparse vs dense")
    sparse, dense = curves["sparse"], curves["dense"]
    if not sparse["accuracy"] or not dense["accuracy"]:
        return [Part(None, "the training curves are shorter than their smoothing window")]
    target = dense["accuracy"][-1]
    reached = np.flatnonzero(np.asarray(sparse["accuracy"]) >= target)
    t_sparse = sparse["wall_s"][reached[0]] if len(reached) else math.inf
    t_dense = dense["wall_s"][-1]
    return [Part(bool(t_sparse < t_dense),
                 f"dense reaches {target:.3f} (training batches, smoothed) in {t_dense:.0f} s; "
                 f"sparse reaches it in {t_sparse:.0f} s and ends at "
                 f"{sparse['accuracy'][-1]:.3f} after {sparse['wall_s'][-1]:.0f} s")]


def _shower_spread(r: Results) -> list[Part]:
    spread = r.get("learning_dynamics", {}).get("shower_spread")
    if not spread:
        return _missing("learning dynamics")

    def early(values: list) -> Estimate:
        v = np.asarray([x for x in values[: len(values) // 2] if x is not None], float)
        return Estimate(float(v.mean()), float(v.std() / math.sqrt(len(v))))
    sparse, dense = early(spread["sparse"]), early(spread["dense"])
    return [Part(dense.exceeds(sparse),
                 f"mean over the first half of training: sparse {sparse}, dense {dense}")]


def _filters(r: Results) -> list[Part]:
    arch = r.get("architecture")
    if not arch:
        return _missing("architecture")
    scan = {(s["depth"], s["filters"]): Evaluation.from_record(s["summary"]) for s in arch["scan"]}
    depths = sorted({d for d, _ in scan})
    rises, texts = 0, []
    for depth in depths:
        better, diff = improves(scan[depth, 32], scan[depth, 8])
        rises += better
        texts.append(f"depth {depth}: {diff}")
    parts = [Part(rises >= 2, f"32 − 8 filters: {'; '.join(texts)}")]
    frame = pd.DataFrame(arch["resources"])
    train = frame[frame["mode"] == "train"].sort_values("filters")
    slope, r2 = linear_r2(train["filters"], train["memory"])
    parts.append(Part(slope > 0 and r2 >= 0.95,
                      f"training memory {slope * 1024:.1f} MB per filter, linear fit R² {r2:.3f}"))
    time = train.set_index("filters")["time"]
    growth = time[32] / time[8] - 1
    if arch["device"].startswith("cuda"):
        parts.append(Part(growth <= 2.5 * paper.WALL_TIME_GROWTH_8_TO_32,
                          f"wall time {growth:+.0%} from 8 to 32 filters"))
    else:
        parts.append(Part(None, f"wall time {growth:+.0%} from 8 to 32 filters on a CPU, where "
                                f"cost follows the FLOPs; the study's ~10 % is a GPU whose small "
                                f"layers are latency-bound"))
    return parts


def _image_sizes(r: Results) -> list[Part]:
    table = r.get("image_sizes", {}).get("table4")
    if not table:
        return _missing("image sizes")
    parts = []
    for train in sorted({c["train"] for c in table}):
        cols = sorted((c for c in table if c["train"] == train), key=lambda c: c["test"])
        largest, smallest = (Evaluation.from_record(c["summary"]) for c in (cols[-1], cols[0]))
        better, diff = improves(largest, smallest)
        parts.append(Part(better, f"train {train} px: test {cols[0]['test']} → "
                                  f"{cols[-1]['test']} px, accuracy {diff} higher"))
    weakest = {VoxelClass.MICHEL, VoxelClass.DELTA}
    bad = []
    for c in table:
        summary = Evaluation.from_record(c["summary"])
        acc = [classwise(summary, k).value for k in range(len(CLASS_NAMES))]
        lowest = set(np.argsort(np.nan_to_num(acc, nan=-1))[:2].tolist())
        if lowest != weakest:
            bad.append(f"train {c['train']}/test {c['test']}")
    parts.append(Part(not bad, "Michel and delta the two weakest classes in "
                               + ("every column" if not bad else f"all but {', '.join(bad)}")))
    return parts


def _boundary(r: Results) -> list[Part]:
    boundary = r.get("mistakes", {}).get("boundary")
    if not boundary:
        return _missing("mistakes")

    def rise(cls: str) -> Estimate:
        b = boundary[cls]
        near = b["near_wrong"] / max(b["near_total"], 1)
        far = b["far_wrong"] / max(b["far_total"], 1)
        se = math.sqrt(near * (1 - near) / max(b["near_total"], 1)
                       + far * (1 - far) / max(b["far_total"], 1))
        return Estimate(near - far, se)
    rises = {cls: rise(cls) for cls in boundary}
    big = [CLASS_NAMES[c] for c in (VoxelClass.HIP, VoxelClass.MIP, VoxelClass.SHOWER)]
    small = [CLASS_NAMES[c] for c in (VoxelClass.DELTA, VoxelClass.MICHEL)]
    clear = {cls: rises[cls].value > rises[cls].se for cls in big}
    both_small_clear = all(rises[cls].value > 2 * rises[cls].se for cls in small)
    text = "; ".join(f"{cls} {rises[cls]}" for cls in big + small)
    return [Part(all(clear.values()), f"near − far misclassified fraction: {text}"),
            Part(not both_small_clear, "Michel and delta: "
                 + ("both rise clearly" if both_small_clear else "not both a clear rise"))]


def _relabeling(r: Results) -> list[Part]:
    table = r.get("relabeling", {}).get("table5")
    if not table:
        return _missing("relabeling")
    table = {column: Evaluation.from_record(record) for column, record in table.items()}
    michel, delta = VoxelClass.MICHEL, VoxelClass.DELTA
    base = classwise(table["train regular / test regular"], michel)
    parts = []
    for column in ("train regular / test relabeled", "train relabeled / test relabeled"):
        new = classwise(table[column], michel)
        ratio = new.value / base.value if base.value > 0 else math.inf
        parts.append(Part(bool(ratio >= 1.4 and new.exceeds(base)),
                          f"Michel {base.value:.1%} → {new.value:.1%} ({column})"))
    best = table["train relabeled + weights / test relabeled"]
    others = [table["train regular / test relabeled"], table["train relabeled / test relabeled"]]
    for cls in (michel, delta):
        mine = classwise(best, cls)
        ok = all(not classwise(o, cls).exceeds(mine) for o in others)
        parts.append(Part(ok, f"{CLASS_NAMES[cls]}: relabeled + weights {mine.value:.1%}, others "
                              + ", ".join(f"{classwise(o, cls).value:.1%}" for o in others)))
    return parts


def _michel_table(r: Results) -> list[Part]:
    record = r.get("michel", {}).get("network")
    if not record:
        return _missing("Michel")
    michel = MichelSummary.from_record(record)
    if michel.true_michels < 50:
        return [Part(None, f"only {michel.true_michels} true Michel electrons in the sample")]
    values = {"ID efficiency": michel.id_efficiency, "ID purity": michel.id_purity,
              "cluster efficiency": michel.cluster_efficiency,
              "cluster purity": michel.cluster_purity}
    close = all(abs(v - paper.TABLE6[k][0]) <= 0.05 for k, v in values.items())
    return [Part(close, ", ".join(f"{k} {v:.1%}" for k, v in values.items()))]


def _michel_spectrum(r: Results) -> list[Part]:
    spectrum = r.get("michel", {}).get("spectrum")
    if not spectrum:
        return _missing("Michel")
    cut = spectrum["cut"]
    cand, true = np.asarray(spectrum["candidates"]), np.asarray(spectrum["true"])
    if len(cand) < 20 or len(true) < 20:
        return [Part(None, f"{len(cand)} candidates and {len(true)} true Michel electrons: too "
                           f"few for a spectrum")]
    small_c, small_t = int((cand < cut).sum()), int((true < cut).sum())
    p = float(stats.ks_2samp(cand[cand >= cut], true[true >= cut]).pvalue)
    return [Part(small_c > small_t, f"below {cut} voxels: {small_c} candidates, {small_t} true"),
            Part(p >= 0.05, f"at or above {cut} voxels: KS p = {p:.2f}")]


CLAIMS = (
    Claim(1, "Table II", "At equal batch and image size, sparse accuracy ≥ dense.",
          "92 % dense vs 94 % sparse [3D, 192 px, batch 4]",
          "sparse − dense ≥ −SE (paired over the same held-out events)", _sparse_vs_dense_accuracy),
    Claim(2, "Table II, abstract", "Sparse inference memory and time far below dense, the gap "
          "growing with image size.", "3D: 364× memory, 33× time; 2D: 93×, 3.1×",
          "at the largest size ≥ 10× memory and ≥ 3× time; both ratios larger there than at the "
          "smallest size", _inference_ratios),
    Claim(3, "Figures 3–4", "Sparse memory and time grow linearly and slowly with batch size.",
          "linear, far below dense", "linear fit R² ≥ 0.9 for sparse memory and time, each slope "
          "below dense's", _batch_scaling),
    Claim(4, "Table II", "Larger batch and larger images raise sparse accuracy and shrink its "
          "spread.", "192 px: 94 % (batch 4) → 98 % (batch 64); 99 % at 512 px",
          "each larger setting: accuracy higher and per-event std lower, each by more than its "
          "SE, at the same iterations", _batch_and_size),
    Claim(5, "Figure 5", "Sparse reaches higher accuracy than dense in less wall time.",
          "sparse converges in a fraction of dense's time",
          "sparse reaches dense's final (smoothed) training accuracy in less wall time than dense "
          "took", _time_to_accuracy),
    Claim(6, "Figures 6–9", "Sparse becomes confident more uniformly across pixels early in "
          "training.", "lower spread of the shower score for sparse",
          "mean spread over the first half of training lower for sparse by more than its SE",
          _shower_spread),
    Claim(7, "Table III, Figures 10–11", "More filters raise accuracy; memory grows about "
          "linearly with filters, wall time only about 10 % from 8 to 32.",
          "98.7–99.2 %, rising with filters", "32 − 8 filters > SE at ≥ 2 of 3 depths; training "
          "memory linear in filters (R² ≥ 0.95); wall time +≤ 25 % (GPU only)", _filters),
    Claim(8, "Table IV", "Testing on larger images than training improves accuracy; Michel and "
          "delta are the weakest classes at every size.", "98.0 → 98.9 % (train 192 px)",
          "each network: accuracy on the larger test images higher by > SE; Michel and delta "
          "the two lowest classwise accuracies in every column", _image_sizes),
    Claim(9, "Figure 12", "Misclassification rises near the image boundary (HIP, MIP, shower), "
          "not clearly for Michel and delta.", "rise below ~5 px",
          f"misclassified fraction closer than {NEAR_PX} px to the boundary minus at "
          f"{FAR_PX} px or more > SE for HIP, MIP and shower; not > 2 SE for both Michel and "
          "delta", _boundary),
    Claim(10, "Table V", "Relabeling raises Michel accuracy by more than 40 %; relabeling + "
          "class weights gives the best Michel and delta accuracy.",
          "Michel 56.6 → 94.4 / 94.7 / 95.7 %",
          "Michel accuracy ×≥ 1.4 (the study's 40 % is relative: 56.6 → 94.4 is +67 %, +38 "
          "points) and > SE, for the regular and the relabeled network on relabeled events; "
          "relabeled + weights not below another by more than SE, Michel and delta",
          _relabeling),
    Claim(11, "Table VI", "Michel ID efficiency ≈ 94 %, purity ≈ 97 %, cluster efficiency and "
          "purity ≈ 95 %.", "93.9 / 96.7 / 95.4 / 95.5 %",
          "each within 5 points of the study's (no cut), on ≥ 50 true Michel electrons",
          _michel_table),
    Claim(12, "Figure 15", "The reconstructed Michel spectrum follows the true one except an "
          "excess of small candidates.", "excess below ~10 px",
          "more candidates than true electrons below 10 voxels; above, sizes agree (KS p ≥ 0.05)",
          _michel_spectrum),
)


def _status(parts: list[Part]) -> str:
    tested = [p.passed for p in parts if p.passed is not None]
    if not tested:
        return NOT_TESTABLE
    return REPRODUCED if all(tested) else NOT_REPRODUCED


def judge(results: Results) -> list[Verdict]:
    """Every claim's verdict on ``results`` (chapter name -> recorded results)."""
    verdicts = []
    for claim in CLAIMS:
        try:
            parts = claim.judge(results)
        except (KeyError, IndexError, ValueError, TypeError) as err:
            parts = [Part(None, f"results incomplete ({type(err).__name__}: {err})")]
        ours = "; ".join(p.ours + ("" if p.passed is not False else " ✗") for p in parts)
        verdicts.append(Verdict(claim, _status(parts), ours))
    return verdicts
