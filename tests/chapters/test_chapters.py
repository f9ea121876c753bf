"""Every chapter's computation on tiny data, recorded, read back and judged: a field that the
result class and its judge (or its record) name differently fails here, in ``make test``,
instead of turning a claim into "not testable"."""

import dataclasses

import pytest

from analysis_lib.chapters import (
    architecture,
    image_sizes,
    learning_dynamics,
    michel,
    mistakes,
    relabeling,
    sparse_vs_dense,
)
from analysis_lib.evaluation.inference import load_model, predict
from analysis_lib.evaluation.michel import relabeled_truth
from analysis_lib.evaluation.resources import ModelSpec, case_rows, measure_cases, measure_table2
from analysis_lib.report import findings
from analysis_lib.study import results
from analysis_lib.study.chapter_params import TABLE5_COLUMNS, Table2Column
from analysis_lib.study.experiments import Experiment
from analysis_lib.training.batching import first_events
from analysis_lib.training.config import TrainConfig

SIZE = 32  # the tiny sample's images


@pytest.fixture(scope="module")
def tiny_results(tiny_sample, tmp_path_factory):
    """Each judged chapter's results, computed by its module from one tiny network (30
    iterations on the 12 events of the tiny sample) and its measurements, as recorded."""
    run = Experiment(TrainConfig(data=str(tiny_sample), depth=3, filters=4, batch_size=2,
                                 iterations=30), root=tmp_path_factory.mktemp("runs"))
    model, config = load_model(run.run(progress=False))
    plain = run.evaluation(tiny_sample).on("tiny")
    relabeled = run.evaluation(tiny_sample, relabeled=True).on("tiny")
    log = run.log()
    table2 = measure_table2([Table2Column("sparse", "tiny", 2, train=False, trained="net"),
                             Table2Column("dense", "tiny", 2, train=False)],
                            ModelSpec(3, 3, 4, "sparse"), lambda _: tiny_sample, {"net": plain},
                            repeats=1)
    batch = first_events(str(tiny_sample), 1)
    scan = measure_cases([({"backend": b, "batch": n}, ModelSpec(3, 3, 4, b),
                           first_events(str(tiny_sample), n), "inference")
                          for b, n in (("sparse", 1), ("sparse", 2), ("dense", 1))], repeats=1)
    costs = measure_cases([({"filters": f, "mode": "train"}, ModelSpec(3, 3, f, "sparse"), batch,
                            "train") for f in (8, 32)], repeats=1)
    curve = sparse_vs_dense.curve(log, config.batch_size, config.iterations)
    computed = {
        sparse_vs_dense.NAME: sparse_vs_dense.SparseVsDense(
            "cpu", table2.frame.to_dict(), table2.out_of_memory, sparse_vs_dense.ratios(table2),
            SIZE, case_rows(scan, sparse_vs_dense.BatchCost), {"sparse": curve, "dense": curve},
            "[3D, 32 px], batch 2", {"sparse": plain, "dense": plain},
            (sparse_vs_dense.Setting(SIZE, 2, 30, plain),
             sparse_vs_dense.Setting(SIZE, 4, 30, plain))),
        learning_dynamics.NAME: learning_dynamics.from_logs({"sparse": log, "dense": log}),
        architecture.NAME: architecture.Architecture(
            "cpu", tuple(architecture.Cell(d, f, plain) for d in (3, 4) for f in (8, 32)), SIZE,
            len(batch.coords), case_rows(costs, architecture.Cost)),
        image_sizes.NAME: image_sizes.ImageSizes(tuple(
            image_sizes.Cell(train, test, plain) for train in (16, 32) for test in (32, 64))),
        mistakes.NAME: mistakes.from_predictions(list(predict(model, tiny_sample)), SIZE, "tiny"),
        relabeling.NAME: relabeling.Relabeling({column: relabeled if on_relabeled else plain
                                                for column, (_, on_relabeled)
                                                in TABLE5_COLUMNS.items()}),
        michel.NAME: michel.summarize(michel.reconstruct(
            list(relabeled_truth(tiny_sample)),
            [(p.event, p.pred) for p in predict(model, tiny_sample, relabeled=True)])),
    }
    folder = tmp_path_factory.mktemp("results")
    for name, result in computed.items():
        results.record(name, result, folder)
    return computed, results.load_all(folder)


@pytest.mark.slow
def test_every_claim_is_judged_on_the_chapters_own_results(tiny_results):
    _, recorded = tiny_results
    assert set(recorded) == set(findings.RESULT_TYPES)
    verdicts = findings.judge(recorded)
    assert [v.claim.number for v in verdicts] == [c.number for c in findings.CLAIMS]
    for verdict in verdicts:
        assert "recorded no results" not in verdict.ours, verdict.claim.number
        assert verdict.ours


@pytest.mark.slow
def test_each_record_reads_back_as_the_result_it_was(tiny_results):
    computed, recorded = tiny_results
    for name, result in computed.items():
        back = results.read(type(result), name, recorded[name])
        assert dataclasses.fields(back) == dataclasses.fields(result)
        assert repr(back) == repr(result), name  # NaN compares unequal; its text does not


@pytest.mark.slow
def test_tables_come_from_the_results(tiny_results):
    computed, _ = tiny_results
    assert list(computed[relabeling.NAME].frames()[0].columns) == list(TABLE5_COLUMNS)
    assert computed[michel.NAME].table6().shape == (8, 6)
    assert computed[mistakes.NAME].fraction().shape == (5, len(computed[mistakes.NAME].edges) - 1)
    assert len(computed[mistakes.NAME].worst) == mistakes.MIN_GALLERY
    assert computed[architecture.NAME].grid().shape == (2, 2)
    assert set(computed[sparse_vs_dense.NAME].table2_frame().columns) == {
        "sparse · 32 px · batch 2", "dense · 32 px · batch 2"}
