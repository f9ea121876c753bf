"""The benchmark scripts still run as the package changes: the time-to-accuracy baseline (today's
training loop on a pinned commit's engine and network) and the GPU device check's steps."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis_lib.training.config import TrainConfig
from analysis_lib.training.loop import read_log, train

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_time_to_accuracy_baseline_package_trains(tiny_sample, tmp_path):
    bench = runpy.run_path(str(ROOT / "benchmarks" / "time_to_accuracy.py"))
    commit = bench["BASELINE_COMMIT"]
    if subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT,
                      capture_output=True).returncode:
        pytest.skip(f"commit {commit} is not in this clone's history")
    root = bench["hybrid_package"](tmp_path / "baseline", commit)
    assert bench["RECIPES"]["baseline"]["amp"] is False  # the pinned engine trains in fp32
    child = ("import sys; from analysis_lib.training.loop import train; "
             "from analysis_lib.training.config import TrainConfig; "
             "train(TrainConfig(data=sys.argv[1], depth=3, filters=4, batch_size=2, "
             "iterations=2, checkpoint_every=2, amp=False), sys.argv[2], progress=False)")
    out = subprocess.run([sys.executable, "-c", child, str(tiny_sample), str(tmp_path / "run")],
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoint_2.pt").exists()


def test_spconv_weight_layout_puts_each_offset_where_spconv_reads_it():
    """spconv's (C_out, 3, 3, 3, C_in) weight at kernel position (a, b, c) is this engine's
    offset 9a + 3b + c (the layout checked against spconv's output on a hand-made case)."""
    convert = runpy.run_path(str(ROOT / "benchmarks" / "spconv_compare.py"))["spconv_weight"]
    w = torch.randn(27, 2, 3)
    out = convert(w)
    assert out.shape == (3, 3, 3, 3, 2)
    for a, b, c, i, o in [(0, 0, 0, 0, 0), (1, 2, 0, 1, 2), (2, 1, 2, 0, 1)]:
        assert out[o, a, b, c, i] == w[9 * a + 3 * b + c, i, o]


@pytest.mark.slow
def test_device_check_runs_small_on_the_cpu(tmp_path):
    """The GPU check's steps run end to end where there is no GPU (``--quick``), so a lent
    device's minutes are not spent finding out that they do not; CUDA's tests are skipped."""
    out = subprocess.run([str(ROOT / "benchmarks" / "device_check.sh"), str(tmp_path),
                          "--device", "cpu", "--quick", "--steps", "cuda tests", "equivalence",
                          "autocast"], capture_output=True, text=True,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    steps = json.loads((tmp_path / "device_check.json").read_text())["steps"]
    assert [steps[s]["passed"] for s in ("cuda tests", "equivalence", "autocast")] == \
        [None, True, True]
    assert steps["equivalence"]["numbers"]["submanifold fp32"] < 1e-5


@pytest.mark.slow
def test_torchrun_with_one_process_trains_through_a_process_group_like_a_plain_run(tmp_path):
    """One process under torchrun takes the process-group path (how one GPU checks nccl: the
    device check's torchrun step); its losses are a plain run's."""
    check = runpy.run_path(str(ROOT / "benchmarks" / "device_check.py"))
    result = check["torchrun"]("cpu", check["QUICK"], tmp_path)
    assert result["passed"], result["summary"]
    assert "backend gloo" in result["summary"]
    data = next(tmp_path.glob("events_32px_*.h5"))
    train(TrainConfig(data=str(data), depth=3, filters=4, batch_size=2, iterations=3,
                      checkpoint_every=3), tmp_path / "plain", progress=False)
    np.testing.assert_array_equal(read_log(tmp_path / "ddp")["loss"],
                                  read_log(tmp_path / "plain")["loss"])


@pytest.mark.slow
def test_bf16_parity_child_trains_in_the_asked_precision_and_pairs_by_hand(tiny_sample, tmp_path):
    """The parity benchmark's child trains the sparse network under bf16 autocast when asked
    (the training default keeps fp32 there), and its paired difference is the mean and
    standard error of per-event differences (hand-computed case)."""
    parity = runpy.run_path(str(ROOT / "benchmarks" / "bf16_parity.py"))
    mean, sem = parity["paired"]([0.5, 0.6, 0.9], [0.6, 0.6, 1.0])
    assert mean == pytest.approx(0.2 / 3)
    assert sem == pytest.approx(np.std([0.1, 0.0, 0.1], ddof=1) / np.sqrt(3))
    losses = {}
    for bf16 in (False, True):
        spec = {"data": str(tiny_sample), "bf16": bf16, "out": str(tmp_path / str(bf16)),
                "recipe": {"depth": 3, "filters": 4, "batch_size": 2, "iterations": 3}}
        done = subprocess.run([sys.executable, "-c", parity["CHILD"], json.dumps(spec)],
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.split("RESULT ")[1])["step_s"] > 0
        losses[bf16] = read_log(tmp_path / str(bf16))["loss"]
    assert not np.array_equal(losses[False], losses[True])  # bf16 products round differently


@pytest.mark.slow
def test_train_step_reaches_a_baseline_of_the_flat_layout(tmp_path):
    """A baseline commit from before the package took its floors names its modules the old
    way; the benchmark's child finds them either way."""
    commit = "6aeb81a"
    if subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT,
                      capture_output=True).returncode:
        pytest.skip(f"commit {commit} is not in this clone's history")
    bench = ROOT / "benchmarks" / "train_step.py"
    root = runpy.run_path(str(bench))["_unpack"](commit, tmp_path / "baseline")
    code = (f"import runpy; find = runpy.run_path({str(bench)!r})['_module']; "
            "print(find('analysis_lib.training.loop', 'analysis_lib.train').__file__); "
            "print(find('analysis_lib.training.batching', 'analysis_lib.batching').__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(root / "analysis_lib" / "train.py"),
                                  str(root / "analysis_lib" / "batching.py")]
