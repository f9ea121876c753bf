"""Cached runs and resource measurements."""

import dataclasses
import functools
import hashlib
import math
import os
import re
import shutil
import signal
import statistics
from pathlib import Path

import pytest
import torch

from analysis_lib.core.errors import AnalysisError, ConfigError, TrainingError
from analysis_lib.core.files import file_sha256
from analysis_lib.data.manifest import load_manifest
from analysis_lib.evaluation import resources as profile
from analysis_lib.evaluation.inference import evaluate
from analysis_lib.evaluation.metrics import Evaluation
from analysis_lib.evaluation.resources import ModelSpec, measure, measure_cases, measure_table2
from analysis_lib.study import pool
from analysis_lib.study.chapter_params import Table2Column
from analysis_lib.study.experiments import Experiment, code_version, profile_runs
from analysis_lib.study.pool import train_all
from analysis_lib.training.batching import first_events
from analysis_lib.training.config import RunSpec, TrainConfig


def _specs(mappings):
    """Run mappings as a profile's YAML gives them, parsed as the profile loader does."""
    return {name: RunSpec.parse(name, spec) for name, spec in mappings.items()}


def test_run_is_cached_and_keyed_by_config(tiny_sample, tmp_path):
    cfg = TrainConfig(data=str(tiny_sample), depth=3, filters=4, batch_size=2, iterations=2)
    run = Experiment(cfg, root=tmp_path)
    checkpoint = run.run(progress=False)
    stamp = checkpoint.stat().st_mtime_ns
    assert Experiment(cfg, root=tmp_path).run(progress=False).stat().st_mtime_ns == stamp
    other = Experiment(dataclasses.replace(cfg, filters=8), root=tmp_path)
    assert other.key != run.key
    first = run.evaluation(tiny_sample)
    assert run.evaluation(tiny_sample) == first
    assert len(list(run.folder.glob("eval_*.json"))) == 1


def test_key_says_whether_this_machine_trains_the_run_in_bf16(tiny_sample, tmp_path, monkeypatch):
    """A dense network: whether the CPU multiplies bf16 natively decides it."""
    cfg = TrainConfig(data=str(tiny_sample), depth=3, filters=4, backend="dense")
    keys = {}
    for native in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        keys[native] = Experiment(cfg, root=tmp_path).key
    assert keys[False] != keys[True]
    assert keys[False] == Experiment(dataclasses.replace(cfg, amp=False), root=tmp_path).key


def test_key_takes_the_recorded_data_hash_instead_of_hashing_the_file(tiny_sample, tmp_path):
    cfg = TrainConfig(data=str(tiny_sample), depth=3, filters=4)
    hashed = Experiment(cfg, root=tmp_path)
    recorded = Experiment(cfg, root=tmp_path, data_sha256=file_sha256(tiny_sample))
    assert recorded.key == hashed.key
    assert Experiment(cfg, root=tmp_path, data_sha256="0" * 64).key != hashed.key
    runs = profile_runs(_specs({"a": {"data": "tiny", "depth": 3}}), lambda name: tiny_sample,
                        tmp_path, data_sha256=lambda name: "0" * 64)
    assert runs["a"].data_sha256 == "0" * 64


def test_reading_a_result_never_trains(tiny_sample, tmp_path):
    cfg = TrainConfig(data=str(tiny_sample), depth=3, filters=4, batch_size=2, iterations=2)
    run = Experiment(cfg, root=tmp_path)
    for read in (lambda: run.evaluation(tiny_sample), run.probes, run.log):
        with pytest.raises(TrainingError, match="not trained yet"):
            read()
    assert not run.folder.exists()
    named = profile_runs(_specs({"tiny run": {"data": "tiny", "depth": 3}}),
                         lambda name: tiny_sample, tmp_path)["tiny run"]
    with pytest.raises(TrainingError, match="run 'tiny run' .* not trained yet"):
        named.log()


def test_the_artifacts_folder_can_be_moved(tiny_sample, tmp_path, monkeypatch):
    monkeypatch.setenv("ANALYSIS_LIB_ARTIFACTS", str(tmp_path / "elsewhere"))
    run = profile_runs(_specs({"a": {"data": "tiny", "depth": 3}}),
                       lambda name: tiny_sample)["a"]
    assert run.folder.parent == tmp_path / "elsewhere"


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_measure_reports_time_and_memory_on_cpu(tiny_sample, mode):
    batch = first_events(str(tiny_sample), 2)
    result = measure(ModelSpec(3, 3, 4, "sparse"), batch, mode, "cpu", repeats=3)
    assert result.n_voxels == len(batch.coords)
    assert result.wall_s_median > 0 and len(result.wall_s_all) == 3
    # no warm-up on the CPU: the first repeat carries the one-time costs and is left out
    assert result.wall_s_median == statistics.median(result.wall_s_all[1:])
    assert result.memory_bytes > result.memory_delta_bytes >= 0
    once = measure(ModelSpec(3, 3, 4, "sparse"), batch, mode, "cpu", repeats=1)
    assert once.wall_s_all == (once.wall_s_median,)


def test_measured_memory_leaves_out_the_engines_compiled_code(tiny_sample):
    """A small sparse inference needs a few MB; loading the kernel-map merge (numba) takes
    about 80 MB, which the measurement must not count as the network's."""
    batch = first_events(str(tiny_sample), 3)
    assert len(batch.coords) > 100  # enough sites to search for neighbours
    result = measure(ModelSpec(3, 3, 4, "sparse"), batch, "inference", "cpu", repeats=1)
    assert result.memory_delta_bytes < 40 * 2**20


def test_scan_gives_a_row_per_case_with_its_labels(tiny_sample):
    batch = first_events(str(tiny_sample), 1)
    cases = ((({"filters": f, "mode": mode}), ModelSpec(3, 3, f, "sparse"), batch, mode)
             for f in (4, 8) for mode in ("inference", "train"))
    rows = measure_cases(cases, repeats=1)
    assert rows[["filters", "mode"]].values.tolist() == [
        [4, "inference"], [4, "train"], [8, "inference"], [8, "train"]]
    assert (rows["wall time (s)"] > 0).all() and (rows["memory (GB)"] >= 0).all()
    assert not rows["out of memory"].any()


def test_table2_measures_each_column_and_takes_accuracy_by_name(tiny_sample):
    columns = [Table2Column("dense", "tiny", 2, train=False),
               Table2Column("sparse", "tiny", 2, trained="net")]
    accuracy = {"net": Evaluation(1, 0.91234, 0.05, 0.05, (0.91234,), (None,) * 5, (None,) * 5,
                                  (0,) * 5, ((0,) * 5,) * 5)}
    table = measure_table2(columns, ModelSpec(3, 3, 4, "sparse"), lambda name: tiny_sample,
                           accuracy, repeats=1)
    dense, sparse = "dense · 32 px · batch 2", "sparse · 32 px · batch 2"
    assert list(table.frame.columns) == [dense, sparse]
    assert table.settings == {dense: ("dense", 32, 2), sparse: ("sparse", 32, 2)}
    assert table.frame.loc["nonzero accuracy mean", sparse] == 0.912
    assert math.isnan(table.frame.loc["nonzero accuracy mean", dense])
    assert math.isnan(table.frame.loc["wall time train (s)", dense])
    assert (table.frame.loc["wall time test (s)"] > 0).all()
    voxels = len(first_events(str(tiny_sample), 2).coords)
    assert table.frame.loc["voxels in batch", sparse] == voxels
    assert table.out_of_memory == ()


def test_table2_column_may_set_its_own_repeats(tiny_sample, monkeypatch):
    seen = []

    def fake(spec, batch, mode, device, repeats):
        seen.append((spec.backend, mode, repeats))
        return profile.Measurement.exhausted(mode, device, len(batch.coords))
    monkeypatch.setattr(profile, "measure", fake)
    columns = [Table2Column("dense", "tiny", 2, repeats=1), Table2Column("sparse", "tiny", 2)]
    table = measure_table2(columns, ModelSpec(3, 3, 4, "sparse"), lambda name: tiny_sample, {},
                           repeats=3)
    assert seen == [("dense", "inference", 1), ("dense", "train", 1),
                    ("sparse", "inference", 3), ("sparse", "train", 3)]
    assert len(table.out_of_memory) == 2


class _OutOfMemorySpec(ModelSpec):
    """A network whose construction runs out of memory (in the measuring child)."""

    def build(self):
        raise MemoryError


class _CudaOutOfMemorySpec(ModelSpec):
    """A network whose construction raises the error a GPU out of memory raises."""

    def build(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class _KilledSpec(ModelSpec):
    """A network whose measuring child is killed, as the kernel's out-of-memory killer does."""

    def build(self):
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("spec", [_OutOfMemorySpec, _CudaOutOfMemorySpec, _KilledSpec])
def test_running_out_of_memory_is_a_marked_row_not_a_crash(tiny_sample, spec):
    batch = first_events(str(tiny_sample), 1)
    result = measure(spec(3, 3, 4, "sparse"), batch, "train", "cpu", repeats=1)
    assert result.out_of_memory and math.isnan(result.wall_s_median)
    assert result.n_voxels == len(batch.coords)


def test_measure_rejects_unknown_mode(tiny_sample):
    with pytest.raises(ConfigError, match="mode='backprop'"):
        measure(ModelSpec(3, 3, 4, "sparse"), first_events(str(tiny_sample), 1), "backprop")


def test_profile_runs_share_and_fine_tune(tiny_sample, tmp_path):
    common = {"data": "tiny", "depth": 3, "filters": 4, "batch_size": 2, "iterations": 2}
    specs = {"tuned": {**common, "relabel": False, "init": "base", "learning_rate": 1e-4},
             "base": common, "same": dict(common)}
    runs = profile_runs(_specs(specs), lambda name: tiny_sample, root=tmp_path)
    assert runs["base"].key == runs["same"].key
    assert runs["tuned"].parent is runs["base"]
    assert runs["tuned"].train_config.init == str(runs["base"].checkpoint)
    runs["tuned"].run(progress=False)
    assert runs["base"].checkpoint.exists() and runs["tuned"].checkpoint.exists()


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ({"a": {"data": "x", "init": "b"}}, "not among the profile's runs"),
        ({"a": {"data": "x", "init": "b"}, "b": {"data": "x", "init": "a"}}, "fine-tune each"),
        ({"a": {"data": "x", "colour": 3}}, "run 'a': unknown setting 'colour'"),
        ({"a": {"data": "x", "iteratons": 3}}, "did you mean 'iterations'"),
        ({"a": {"depth": 5}}, "run 'a' names no data set"),
        ({"a": {"data": "x", "iterations": 2.5}}, "run 'a': iterations=2.5 must be a whole"),
        ({"a": {"data": "x", "batch_size": -4}}, "run 'a': batch_size=-4 must be >= 1"),
    ],
)
def test_profile_runs_reject_bad_specs(specs, message, tiny_sample):
    with pytest.raises(ConfigError, match=message):
        profile_runs(_specs(specs), lambda name: tiny_sample)


@pytest.mark.slow
def test_train_all_trains_parents_first_side_by_side(tiny_sample, tmp_path):
    common = {"data": "tiny", "depth": 3, "filters": 4, "batch_size": 2, "iterations": 2}
    specs = {"base": common, "tuned": {**common, "init": "base", "relabel": True},
             "other": {**common, "filters": 8}, "same": dict(common)}
    runs = profile_runs(_specs(specs), lambda name: tiny_sample, root=tmp_path)
    lines: list[str] = []
    train_all(runs, workers=2, report=lines.append)
    assert all(run.checkpoint.exists() for run in runs.values())
    events = [tuple(line.removeprefix("[train] ").split(":")[:1]) + (line.split()[2],)
              for line in lines]
    # "same" is "base" (one key): three runs, each started and done once
    assert sorted(events) == sorted((name, what) for name in ("base", "tuned", "other")
                                    for what in ("started", "done"))
    assert events.index(("tuned", "started")) > events.index(("base", "done"))
    assert events[:2] == [("base", "started"), ("other", "started")]  # longest chain first
    stamps = {name: run.checkpoint.stat().st_mtime_ns for name, run in runs.items()}
    lines.clear()
    train_all(runs, workers=2, report=lines.append)  # all cached: nothing to do
    assert lines == [] and stamps == {n: r.checkpoint.stat().st_mtime_ns for n, r in runs.items()}


@pytest.mark.slow
def test_train_all_evaluates_after_training_and_caches(tiny_sample, tmp_path):
    common = {"data": "tiny", "depth": 3, "filters": 4, "batch_size": 2, "iterations": 2}
    runs = profile_runs(_specs({"base": common, "tuned": {**common, "init": "base"}}),
                        lambda name: tiny_sample, root=tmp_path)
    scorings = {"base": [(tiny_sample, False), (tiny_sample, True), (tiny_sample, False)]}
    lines: list[str] = []
    train_all(runs, workers=2, report=lines.append, scorings=scorings)
    assert "[evaluate] base: started (2 held-out set(s))" in lines  # the repeat dropped
    assert lines.index("[evaluate] base: started (2 held-out set(s))") > next(
        i for i, line in enumerate(lines) if line.startswith("[train] base: done"))
    for relabeled in (False, True):  # the chapters' call reads the cache the worker wrote
        cache = runs["base"].evaluation_cache(tiny_sample, relabeled)
        assert cache.exists()
        direct = evaluate(runs["base"].checkpoint, tiny_sample, relabeled=relabeled)
        assert runs["base"].evaluation(tiny_sample, relabeled) == direct
    lines.clear()
    train_all(runs, workers=2, report=lines.append, scorings=scorings)
    assert lines == []
    with pytest.raises(ConfigError, match=r"runs not being trained here: \['other'\]"):
        train_all(runs, workers=2, scorings={"other": [(tiny_sample, False)]})


def test_train_all_makes_each_data_file_before_the_runs_that_read_it(tiny_sample, tmp_path):
    """The file the longest chain reads comes first, its run starts as soon as it is made,
    a file no run reads is made too, and a file that cannot be made is named."""
    common = {"depth": 3, "filters": 4, "batch_size": 2, "iterations": 2}
    specs = {"long": {**common, "data": "first", "iterations": 6},
             "tuned": {**common, "data": "second", "init": "long"},
             "short": {**common, "data": "second"}}
    files = {name: tmp_path / "data" / f"{name}.h5" for name in ("first", "second", "read_later")}
    runs = profile_runs(_specs(specs), files.__getitem__, root=tmp_path / "runs",
                        data_sha256=lambda name: file_sha256(tiny_sample))
    files["first"].parent.mkdir()
    data = {path: functools.partial(shutil.copyfile, tiny_sample, path) for path in files.values()}
    lines: list[str] = []
    train_all(runs, workers=2, report=lines.append, data=data)
    assert all(path.read_bytes() == tiny_sample.read_bytes() for path in files.values())
    started = [line.split(":")[0] for line in lines if line.split()[2] == "started"]
    assert started[:2] == ["[data] first.h5", "[data] second.h5"]  # the long chain's first
    assert started.index("[data] read_later.h5") > started.index("[train] short")
    done = {line.split(":")[0]: i for i, line in enumerate(lines) if ": done in" in line}
    assert lines.index(next(x for x in lines if x.startswith("[train] long: started"))) \
        > done["[data] first.h5"]
    missing = tmp_path / "nowhere" / "x.h5"
    with pytest.raises(AnalysisError, match=r"making x\.h5 failed: .*FileNotFoundError.*"
                       r"\(traceback in .*x\.h5\.failure\.log\)"):
        train_all({}, workers=2, report=lambda line: None,
                  data={missing: functools.partial(shutil.copyfile, tmp_path / "none", missing)})


def test_train_all_names_the_failing_run(tmp_path, capfd):
    """One line: the run, its error's last line and the file that holds the traceback, which
    the worker does not print."""
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"not an HDF5 file")
    broken = Experiment(TrainConfig(data=str(corrupt), iterations=2), root=tmp_path)
    with pytest.raises(AnalysisError, match=r"training broken failed: .*DataError: .*corrupt\.h5"
                       r".* \(traceback in .*failure\.log\)") as err:
        train_all({"broken": broken}, workers=2, report=lambda line: None)
    assert "\n" not in str(err.value)
    assert "Traceback" in (broken.folder / "failure.log").read_text()
    assert "Traceback" not in capfd.readouterr().err
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        train_all({}, workers=0)


def test_damaged_final_checkpoint_is_named_set_aside_and_retrained(tiny_sample, tmp_path):
    """A final checkpoint cut to half its size is not the bytes recorded when it was written:
    it is set aside with a warning naming the run, never read, and the run trains again; the
    evaluation cached for the old file is not used (it is keyed on the checkpoint's hash)."""
    cfg = TrainConfig(data=str(tiny_sample), depth=3, filters=4, batch_size=2, iterations=2,
                      checkpoint_every=2)
    run = Experiment(cfg, root=tmp_path, name="tiny")
    checkpoint = run.run(progress=False)
    good = checkpoint.read_bytes()
    weights = torch.load(checkpoint, weights_only=True)["model"]
    run.evaluation_cache(tiny_sample)
    run.evaluation(tiny_sample)
    with open(checkpoint, "r+b") as f:
        f.truncate(len(good) // 2)
    with pytest.warns(RuntimeWarning, match=r"run 'tiny' \(\w+\): its final checkpoint is "
                      r"damaged .* set aside as checkpoint_2\.pt\.damaged, the run trains"):
        assert not run.is_trained()
    with pytest.raises(TrainingError, match="not trained yet"):
        run.evaluation(tiny_sample)
    assert run.run(progress=False) == checkpoint and run.is_trained()
    retrained = torch.load(checkpoint, weights_only=True)["model"]
    assert all(torch.equal(weights[k], retrained[k]) for k in weights)  # deterministic
    assert (run.folder / "checkpoint_2.pt.damaged").stat().st_size == len(good) // 2


def test_evaluation_cache_follows_the_checkpoint(tiny_sample, tmp_path):
    """Another network in the final checkpoint's place (a file copied over it, its recorded
    hash with it) is evaluated anew."""
    cfg = TrainConfig(data=str(tiny_sample), depth=3, filters=4, batch_size=2, iterations=2)
    run = Experiment(cfg, root=tmp_path)
    other = Experiment(dataclasses.replace(cfg, seed=1), root=tmp_path)
    run.run(progress=False)
    other.run(progress=False)
    before = run.evaluation_cache(tiny_sample)
    for suffix in ("", ".sha256"):
        Path(f"{run.checkpoint}{suffix}").write_bytes(Path(f"{other.checkpoint}{suffix}")
                                                      .read_bytes())
    assert run.is_trained() and run.evaluation_cache(tiny_sample) != before


def _keys_after_appending(package: Path, relative: str) -> tuple[str, str]:
    """The training and evaluation code versions of ``package`` after appending a comment to
    one of its files."""
    from analysis_lib.study.experiments import EVALUATION_CODE, TRAINING_CODE

    path = package / relative
    path.write_text(path.read_text() + ("\n// x\n" if path.suffix == ".c" else "\n# x\n"))
    return (code_version.__wrapped__(TRAINING_CODE, package),
            code_version.__wrapped__(EVALUATION_CODE, package))


@pytest.mark.parametrize("cosmetic", [
    "report/plots.py",  # the class colours
    "evaluation/tables.py", "evaluation/evidence.py", "report/findings.py",
    "report/findings_report.py", "chapters/relabeling.py", "chapters/michel.py",
    "book/pages.py", "core/paper.py", "cli.py",
])
def test_a_cosmetic_change_keeps_every_network_and_evaluation(tmp_path, cosmetic):
    from analysis_lib.study.experiments import PACKAGE

    package = Path(shutil.copytree(PACKAGE, tmp_path / "analysis_lib",
                                   ignore=shutil.ignore_patterns("__pycache__")))
    before = _keys_after_appending(package, "__init__.py")  # outside both keys
    assert _keys_after_appending(package, cosmetic) == before


@pytest.mark.parametrize("source, retrains", [
    ("sparse/native.c", True), ("sparse/kernels.py", True), ("training/loop.py", True),
    ("core/labels.py", True), ("data/relabel.py", True), ("models/uresnet.py", True),
    ("evaluation/metrics.py", False), ("evaluation/inference.py", False),
])
def test_a_change_to_what_computes_retrains_or_reevaluates(tmp_path, source, retrains):
    from analysis_lib.study.experiments import PACKAGE

    package = Path(shutil.copytree(PACKAGE, tmp_path / "analysis_lib",
                                   ignore=shutil.ignore_patterns("__pycache__")))
    training, evaluation = _keys_after_appending(package, "__init__.py")
    after = _keys_after_appending(package, source)
    assert (after[0] != training) is retrains
    assert after[1] != evaluation  # every such change re-evaluates


def test_the_dry_run_says_which_runs_are_cached(tmp_path, monkeypatch):
    from analysis_lib.study.plan import plan_runs
    from analysis_lib.study.profiles import load_profile
    from analysis_lib.training import checkpoints

    monkeypatch.setenv("ANALYSIS_LIB_ARTIFACTS", str(tmp_path / "artifacts"))
    profile = load_profile("ci")
    manifest = shutil.copy(profile.manifest_path, tmp_path / "data_manifest.yaml")
    plan = plan_runs(profile, Path(manifest))
    assert {row["cached"] for row in plan} == {"no"}
    runs = profile_runs(profile.runs, lambda name: tmp_path / f"{name}.h5",
                        data_sha256=load_manifest(manifest).sha256_of)
    checkpoint = runs["arch_d4_f8"].checkpoint
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    checkpoints.digest_path(checkpoint).write_text(hashlib.sha256(b"weights").hexdigest())
    cached = {row["run"]: row["cached"] for row in plan_runs(profile, Path(manifest))}
    assert cached.pop("arch_d4_f8") == "yes" and set(cached.values()) == {"no"}


def test_lineage_names_every_training_of_a_fine_tuned_run(tiny_sample, tmp_path):
    cfg = TrainConfig(data=str(tiny_sample), depth=2, filters=4, iterations=3)
    main = Experiment(cfg, root=tmp_path, name="main")
    tuned = Experiment(dataclasses.replace(cfg, iterations=2), root=tmp_path, parent=main,
                       name="tuned")
    longer = Experiment(dataclasses.replace(cfg, iterations=5), root=tmp_path, parent=tuned)
    assert main.lineage == "3 iterations (main)"
    assert tuned.lineage == "2 iterations (tuned) after 3 (main)"
    assert longer.lineage == "5 iterations after 2 (tuned) after 3 (main)"


@pytest.mark.slow
def test_train_all_reports_each_training_while_it_runs(tiny_sample, tmp_path, monkeypatch):
    """A progress line per running training at each interval: its iteration of the total,
    rate and time left, so that a long training cannot be taken for a hang."""
    monkeypatch.setattr(pool, "PROGRESS_EVERY_S", 0.5)
    cfg = TrainConfig(data=str(tiny_sample), depth=3, filters=4, batch_size=2, iterations=60)
    lines = []
    train_all({"slow": Experiment(cfg, root=tmp_path)}, workers=1, report=lines.append)
    progress = [line for line in lines if " of 60 iterations" in line]
    assert progress, lines
    assert all(re.fullmatch(r"\[train\] slow: \d+ of 60 iterations, [\d.]+ it/s, about \d+ min "
                            r"left", line) for line in progress)


@pytest.mark.slow
def test_train_all_gives_a_terminal_one_status_of_every_running_job(tiny_sample, tmp_path):
    """With ``progress`` (a terminal's in-place status), each update is one line that names
    every running job, and ``report`` keeps only the lines that stay."""
    cfg = TrainConfig(data=str(tiny_sample), depth=3, filters=4, batch_size=2, iterations=60)
    runs = {name: Experiment(dataclasses.replace(cfg, seed=seed), root=tmp_path)
            for seed, name in enumerate(("a", "b"))}
    lines, statuses = [], []
    train_all(runs, workers=2, report=lines.append, progress=statuses.append,
              progress_every=0.5)
    assert statuses and not [line for line in lines if "iterations," in line]
    part = (r"\[train\] [ab]: (\d+ of 60 iterations, [\d.]+ it/s, about \d+ min left|"
            r"running for \d+ s)")
    assert all(re.fullmatch(f"{part}( · {part})*", status) for status in statuses), statuses
    assert any(" · " in status for status in statuses), statuses


def test_computing_a_key_compiles_nothing_and_picks_no_device(tiny_sample, monkeypatch):
    from analysis_lib.sparse import native

    native._build.cache_clear()
    monkeypatch.setattr(native, "_build", lambda isa: pytest.fail("a key compiled the kernels"))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("a key set a device"))
    run = Experiment(TrainConfig(data=str(tiny_sample), depth=2, filters=4, iterations=3))
    assert len(run.key) == 12
