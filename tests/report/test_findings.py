"""The findings' criteria on hand-built results: each claim passes, fails and is untestable
where its numbers say so."""

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest

from analysis_lib.core.errors import DataError
from analysis_lib.evaluation import evidence
from analysis_lib.evaluation.metrics import Evaluation
from analysis_lib.report import findings, findings_report
from analysis_lib.report.findings import NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED
from analysis_lib.study import results


def _summary(acc, std=0.05, n=100, classwise=(0.9, 0.9, 0.9, 0.5, 0.4), test_set="t",
             shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    per_event = np.clip(acc + std * rng.standard_normal(n), 0, 1)
    per_event += acc - per_event.mean() + shift
    return dataclasses.asdict(Evaluation(
        n_events=n, nonzero_accuracy=float(per_event.mean()),
        nonzero_accuracy_std=float(per_event.std()),
        nonzero_accuracy_sem=float(per_event.std() / np.sqrt(n)),
        nonzero_accuracy_per_event=tuple(per_event.tolist()),
        classwise_accuracy=tuple(classwise), classwise_accuracy_sem=(0.01,) * 5,
        classwise_events=(n,) * 5, confusion_matrix=((0,) * 5,) * 5, test_set=test_set))


def _good() -> dict:
    """Results for which every claim holds."""
    shared = np.random.default_rng(1).normal(0, 0.05, 100)

    def paired(acc, test_set="t"):
        s = _summary(acc, test_set=test_set)
        s["nonzero_accuracy_per_event"] = (acc + shared).tolist()
        return s
    curve = np.linspace(0.5, 0.9, 50)
    michel = {"sample_size": 56, "candidates": 59, "true_michels": 60, "id_purity": 0.95,
              "id_efficiency": 0.93, "cluster_efficiency": 0.94, "cluster_purity": 0.96,
              "both_above_95": 0.8}
    return {
        "sparse_vs_dense": {
            "device": "cpu", "table2": {}, "out_of_memory": [], "scan_size": 128,
            "equal_setting": "2D", "equal": {"sparse": paired(0.92), "dense": paired(0.90)},
            "ratios": [{"size": 64, "batch": 4, "memory": 8.0, "time": 2.0},
                       {"size": 128, "batch": 4, "memory": 40.0, "time": 6.0}],
            "batch_scan": [{"backend": "sparse", "batch": b, "memory": 0.01 * b, "time": 0.1 * b,
                            "out_of_memory": False} for b in (1, 8, 32)]
            + [{"backend": "dense", "batch": b, "memory": 0.5 * b, "time": 1.0 * b,
                "out_of_memory": False} for b in (1, 4, 8)],
            "curves": {"sparse": {"wall_s": np.linspace(1, 50, 50).tolist(),
                                  "accuracy": curve.tolist(), "batch": 4, "iterations": 50},
                       "dense": {"wall_s": np.linspace(10, 500, 50).tolist(),
                                 "accuracy": (curve - 0.1).tolist(), "batch": 4,
                                 "iterations": 50}},
            "settings": [
                {"size": 64, "batch": 4, "iterations": 500,
                 "summary": _summary(0.85, 0.10, test_set="a")},
                {"size": 64, "batch": 16, "iterations": 500,
                 "summary": _summary(0.90, 0.06, test_set="a")},
                {"size": 128, "batch": 4, "iterations": 500,
                 "summary": _summary(0.92, 0.05, test_set="b")}],
        },
        "learning_dynamics": {"iterations": {"sparse": list(range(6)), "dense": list(range(6))},
                              "shower_spread": {"sparse": [0.1, 0.12, 0.11, 0.1, 0.2, 0.2],
                                                "dense": [0.3, 0.31, 0.29, 0.3, 0.1, 0.1]}},
        "architecture": {
            "device": "cpu", "resource_size": 512, "resource_voxels": 1000,
            "scan": [{"depth": d, "filters": f, "summary": paired(0.80 + 0.002 * f)}
                     for d in (4, 5, 6) for f in (8, 16, 32)],
            "resources": [{"filters": f, "mode": m, "memory": 0.1 * f, "time": 0.01 * f,
                           "out_of_memory": False}
                          for f in (8, 16, 32) for m in ("inference", "train")]},
        "image_sizes": {"table4": [
            {"train": t, "test": s, "summary": _summary(0.80 + s / 1000, test_set=str(s))}
            for t in (64, 128) for s in (128, 192)]},
        "mistakes": {
            "test_set": "t", "size": 64, "near": 5.0, "far": 15.0, "edges": [0, 4, 8],
            "total": [[1, 1]] * 5, "wrong": [[0, 0]] * 5, "worst": [],
            "boundary": {
                name: {"near_total": 1000, "near_wrong": w, "far_total": 10000, "far_wrong": 100}
                for name, w in zip(("HIP", "MIP", "EM shower", "Delta ray", "Michel e-"),
                                   (100, 100, 100, 10, 12), strict=True)}},
        "relabeling": {"table5": {
            "train regular / test regular": _summary(0.9, classwise=(.9, .9, .9, .5, .3)),
            "train regular / test relabeled": _summary(0.9, classwise=(.9, .9, .9, .6, .6)),
            "train relabeled / test relabeled": _summary(0.9, classwise=(.9, .9, .9, .6, .6)),
            "train relabeled + weights / test relabeled": _summary(
                0.9, classwise=(.9, .9, .9, .7, .7))}},
        "michel": {
            "network": michel, "network_cut": michel, "true_labels": michel,
            "true_labels_cut": michel, "events": 100, "predicted_michel_voxels": 2000,
            "true_michel_voxels": 2100,
            "spectrum": {"cut": 10, "candidates": [3] * 10 + list(range(10, 60)),
                         "true": [4] * 2 + list(range(10, 60))}},
    }


def _status(res: dict) -> dict[int, str]:
    return {v.claim.number: v.status for v in findings.judge(res)}


def test_every_claim_reproduced_on_good_results():
    assert _status(_good()) == {n: REPRODUCED for n in range(1, 13)}


def test_no_results_make_every_claim_untestable():
    assert set(_status({}).values()) == {NOT_TESTABLE}


@pytest.mark.parametrize(("claim", "path", "value"), [
    (1, ("sparse_vs_dense", "equal", "dense"), "better"),
    (2, ("sparse_vs_dense", "ratios", 1, "time"), 1.5),
    (4, ("sparse_vs_dense", "settings", 1, "summary"), "worse"),
    (5, ("sparse_vs_dense", "curves", "dense", "accuracy", -1), 0.99),
    (6, ("learning_dynamics", "shower_spread", "dense"), [0.1] * 6),
    (8, ("image_sizes", "table4", 0, "summary", "classwise_accuracy"), [.2, .9, .9, .5, .4]),
    (9, ("mistakes", "boundary", "MIP", "near_wrong"), 10),
    (10, ("relabeling", "table5", "train relabeled / test relabeled", "classwise_accuracy"),
     [.9, .9, .9, .6, .35]),
    (11, ("michel", "network", "id_purity"), 0.5),
    (12, ("michel", "spectrum", "candidates"), [3] + list(range(10, 60))),
])
def test_claim_fails_when_its_numbers_say_so(claim, path, value):
    res = _good()
    node = res
    for key in path[:-1]:
        node = node[key]
    if value == "better":  # the dense network 5 points above the sparse one
        value = _summary(0.97)
    elif value == "worse":  # batch 16 below batch 4
        value = _summary(0.80, 0.12, test_set="a")
    node[path[-1]] = value
    assert _status(res)[claim] == NOT_REPRODUCED


def test_settings_are_compared_only_at_equal_iterations():
    res = _good()
    settings = res["sparse_vs_dense"]["settings"]
    # a longer-trained network at 64 px, batch 16, and its 128 px twin: the size pair
    settings += [{"size": 64, "batch": 16, "iterations": 1000,
                  "summary": _summary(0.95, 0.04, test_set="a")},
                 {"size": 128, "batch": 16, "iterations": 1000,
                  "summary": _summary(0.97, 0.02, test_set="b")}]
    ours = {v.claim.number: v.ours for v in findings.judge(res)}[4]
    assert ours.count("batch 4 → 16") == 1  # not batch 4 (500) against batch 16 (1000)
    assert ours.count("size 64 → 128") == 2  # at 500 and at 1000 iterations, none across
    assert _status(res)[4] == REPRODUCED
    settings[-1]["summary"] = _summary(0.90, 0.08, test_set="b")  # below its 64 px twin
    assert _status(res)[4] == NOT_REPRODUCED


def test_filter_claim_needs_two_depths_and_wall_time_is_gpu_only():
    res = _good()
    for entry in res["architecture"]["scan"]:
        if entry["depth"] != 4:
            entry["summary"] = _summary(0.8, seed=entry["filters"])
    assert _status(res)[7] == NOT_REPRODUCED
    ours = {v.claim.number: v.ours for v in findings.judge(_good())}[7]
    assert "on a CPU" in ours  # the wall-time part is not tested on a CPU
    gpu = _good()
    gpu["architecture"]["device"] = "cuda"  # time 0.08 -> 0.32 s: +300 %, not ~10 %
    assert _status(gpu)[7] == NOT_REPRODUCED


def test_small_michel_sample_is_untestable():
    res = _good()
    res["michel"]["network"] = {**res["michel"]["network"], "true_michels": 20}
    assert _status(res)[11] == NOT_TESTABLE


def test_paired_difference_uses_per_event_values_only_on_the_same_events():
    a, b = (Evaluation.from_record(_summary(acc, test_set="x")) for acc in (0.9, 0.8))
    assert evidence.paired_difference(a, b).value == pytest.approx(0.1)
    assert evidence.paired_difference(a, b.on("y")) is None


def test_markdown_table_counts_verdicts():
    text = findings_report.markdown(findings.judge(_good()))
    assert text.count("**reproduced**") == 12
    assert text.splitlines()[-1] == "reproduced: 12, not reproduced: 0, not testable: 0"


@dataclasses.dataclass(frozen=True)
class _Result:
    value: float
    array: tuple[int, ...]
    missing: float
    keyed: Mapping[str, int]


def test_results_round_trip_with_numpy_and_nan(tmp_path):
    results.record("chapter", _Result(np.float32(0.5), np.arange(3), float("nan"), {4: 1}),
                   tmp_path)
    back = results.read(_Result, "chapter", results.load_all(tmp_path)["chapter"])
    assert (back.value, back.array, back.keyed) == (0.5, (0, 1, 2), {"4": 1})
    assert math.isnan(back.missing)


def test_a_record_that_does_not_match_its_class_names_the_field(tmp_path):
    good = _good()
    good["relabeling"]["table5s"] = good["relabeling"].pop("table5")
    with pytest.raises(DataError, match="relabeling results: unknown key 'table5s'"):
        findings.judge(good)
    with pytest.raises(TypeError, match="records a dataclass"):
        results.record("chapter", {"value": 1}, tmp_path)


def test_readme_section_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    start, end = findings_report.markers("findings")
    readme.write_text(f"# x\n{start}\nold\n{end}\nrest\n")
    findings_report.write_between_markers(readme, "new table")
    assert readme.read_text() == f"# x\n{start}\nnew table\n{end}\nrest\n"
    readme.write_text("no markers")
    with pytest.raises(DataError):
        findings_report.write_between_markers(readme, "t")


def test_styled_table_colours_each_verdict():
    table = pd.DataFrame({"ours": ["a", "b", "c"],
                          "verdict": [REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE]})
    html = findings_report.styled(table).to_html()
    for colour in findings_report.VERDICT_COLOURS.values():
        assert html.count(f"background-color: {colour}") == 1
