"""Run folders: resume proves it is the same run, divergence saves nothing bad, faults fall back."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from analysis_lib.cli import INTERRUPTED, main
from analysis_lib.core.errors import ConfigError, StorageError, TrainingError
from analysis_lib.core.files import file_sha256
from analysis_lib.data import open_dataset
from analysis_lib.training import loop as train_module
from analysis_lib.training.checkpoints import (
    checkpoints,
    digest_path,
    intact,
    latest_checkpoint,
    load,
)
from analysis_lib.training.config import TrainConfig
from analysis_lib.training.loop import read_log, train


@pytest.fixture
def common(tiny_sample):
    return dict(data=str(tiny_sample), depth=3, filters=4, batch_size=2, seed=1)


@pytest.fixture
def three_done(common, tmp_path):
    """A run folder holding checkpoint_3 of a 6-iteration run."""
    train(TrainConfig(iterations=3, checkpoint_every=3, **common), tmp_path / "run",
          progress=False)
    return tmp_path / "run"


@pytest.mark.parametrize(("change", "named"), [
    ({"learning_rate": 2e-3}, "learning_rate"),
    ({"batch_size": 3}, "batch_size"),
    ({"decay_from": 0.5}, "decay_from"),
])
def test_resume_with_another_configuration_is_refused_naming_the_field(
        common, three_done, change, named):
    cfg = TrainConfig(iterations=6, checkpoint_every=3, **{**common, **change})
    with pytest.raises(TrainingError, match=f"trained with other {named}"):
        train(cfg, three_done, resume=True, progress=False)


def test_resume_on_another_data_file_is_refused(common, three_done, tmp_path):
    from analysis_lib.sim import simulate

    other = simulate(tmp_path / "other.h5", 12, 32, seed=12, workers=1, progress=False)
    cfg = TrainConfig(iterations=6, checkpoint_every=3, **{**common, "data": str(other)})
    with pytest.raises(TrainingError, match="other data"):
        train(cfg, three_done, resume=True, progress=False)


def test_resume_may_extend_a_constant_rate_but_not_a_decay_already_applied(common, tmp_path):
    decayed = dict(common, decay_from=0.5)
    train(TrainConfig(iterations=4, checkpoint_every=4, **decayed), tmp_path / "d",
          progress=False)
    with pytest.raises(TrainingError, match="iterations .they change the learning rate"):
        train(TrainConfig(iterations=8, **decayed), tmp_path / "d", resume=True, progress=False)


def test_resume_to_fewer_iterations_than_done_is_refused(common, three_done):
    with pytest.raises(TrainingError, match="at iteration 3, beyond iterations=2"):
        train(TrainConfig(iterations=2, **common), three_done, resume=True, progress=False)


def test_a_new_run_into_an_old_folder_is_refused_unless_overwrite(common, three_done):
    cfg = TrainConfig(iterations=2, checkpoint_every=2, **common)
    with pytest.raises(TrainingError, match="pass --resume to continue it or --overwrite"):
        train(cfg, three_done, progress=False)
    train(cfg, three_done, progress=False, overwrite=True)
    assert [p.name for p in checkpoints(three_done)] == ["checkpoint_2.pt"]
    assert read_log(three_done)["iteration"].tolist() == [1, 2]


def test_a_second_training_into_a_folder_in_use_is_refused(common, three_done, tmp_path):
    """Another process holds the run folder (as a running training does): a training into it,
    resumed or new, fails in one line naming the holder, and the folder's checkpoint stays."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from analysis_lib.core.files import folder_lock\n"
         f"with folder_lock({str(three_done)!r}):\n print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = file_sha256(three_done / "checkpoint_3.pt")
        for kwargs in ({"resume": True}, {"overwrite": True}):
            with pytest.raises(StorageError, match=f"in use by process {holder.pid}"):
                train(TrainConfig(iterations=6, checkpoint_every=3, **common), three_done,
                      progress=False, **kwargs)
        assert file_sha256(three_done / "checkpoint_3.pt") == before
    finally:
        holder.communicate("")
    train(TrainConfig(iterations=6, checkpoint_every=3, **common), three_done, resume=True,
          progress=False)  # the holder exited, so its lock went with it
    assert latest_checkpoint(three_done).name == "checkpoint_6.pt"


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(common, tmp_path):
    straight = TrainConfig(iterations=6, checkpoint_every=3, **common)
    train(straight, tmp_path / "straight", progress=False)
    shutil.copytree(tmp_path / "straight", tmp_path / "cut")
    newest = tmp_path / "cut" / "checkpoint_6.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    (tmp_path / "cut" / "checkpoint_best.pt").write_bytes(b"not a numbered checkpoint")
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as log:
        log.write('{"iteration": 7, "lo')  # a run killed while writing its log
    with pytest.warns(UserWarning, match="checkpoint_6.pt: damaged .* set aside as "
                      "checkpoint_6.pt.damaged"):
        train(straight, tmp_path / "cut", resume=True, progress=False)
    a, b = read_log(tmp_path / "straight"), read_log(tmp_path / "cut")
    np.testing.assert_array_equal(a["loss"], b["loss"])


def _poisoned_loss(monkeypatch, at_call: int, gradient_only: bool) -> None:
    """Make the loss (or only its gradient) non-finite from the ``at_call``-th step on."""
    calls = {"n": 0}
    real = train_module.event_loss

    def loss(logits, *args, **kwargs):
        calls["n"] += 1
        value = real(logits, *args, **kwargs)
        if calls["n"] < at_call:
            return value
        if gradient_only:  # sqrt'(0) is infinite: a finite loss with a NaN gradient
            return value + 0.0 * torch.sqrt(logits.abs().sum() * 0.0)
        return value * float("nan")

    monkeypatch.setattr(train_module, "event_loss", loss)


@pytest.mark.parametrize(("gradient_only", "what"), [(False, "loss"), (True, "gradient")])
def test_divergence_stops_before_the_step_and_names_the_last_good_checkpoint(
        common, tmp_path, monkeypatch, gradient_only, what):
    _poisoned_loss(monkeypatch, at_call=4, gradient_only=gradient_only)
    cfg = TrainConfig(iterations=6, checkpoint_every=2, **common)
    with pytest.raises(TrainingError, match=f"diverged at iteration 4: the {what} is not "
                                            f"finite.*checkpoint_2.pt"):
        train(cfg, tmp_path / "run", progress=False)
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint_2.pt"
    weights = load(tmp_path / "run" / "checkpoint_2.pt")["model"]
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


@pytest.mark.parametrize(("field", "value", "message"), [
    ("iterations", 2.5, "must be a whole number"),
    ("learning_rate", float("inf"), "must be a finite number"),
    ("learning_rate", 1e3, r"must be in \(0, 1\]"),
    ("seed", -1, "must be >= 0"),
    ("depth", 0, "must be >= 1"),
    ("batch_size", -4, "must be >= 1"),
])
def test_absurd_settings_are_refused_at_configuration(field, value, message):
    with pytest.raises(ConfigError, match=f"^{field}=.* {message}"):
        TrainConfig(data="x.h5", **{field: value})


def test_cli_train_reports_a_bad_rate_in_one_line(tiny_sample, tmp_path, capsys):
    code = main(["train", "--data", str(tiny_sample), "--out", str(tmp_path / "r"),
                 "--lr", "1e3", "--iterations", "1"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: learning_rate=1000.0 must be in (0, 1]")


@pytest.fixture
def unlabeled(tiny_sample, tmp_path):
    """The tiny sample without its label, primary-ionization and particle products."""
    import h5py

    path = tmp_path / "unlabeled.h5"
    shutil.copy(tiny_sample, path)
    with h5py.File(path, "a") as f:
        for product in ("sparse3d_fivetypes", "sparse3d_primion", "sparse3d_index",
                        "particle_mcst", "cluster3d_mcst"):
            del f[f"Data/{product}_group"]
    return path


def test_inference_runs_on_a_file_without_labels(common, tmp_path, unlabeled, capsys):
    checkpoint = train(TrainConfig(iterations=1, **common), tmp_path / "run", progress=False)
    out = tmp_path / "pred.npz"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(unlabeled),
                 "--predictions", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "12 events without labels: no metrics" in printed
    with open_dataset(unlabeled) as events:
        voxels = [len(e.coords) for e in events]
    with np.load(out) as saved:
        assert saved["probs"].shape == (sum(voxels), 5)
        assert np.bincount(saved["event"], minlength=12).tolist() == voxels
    assert main(["michel", "--checkpoint", str(checkpoint), "--data", str(unlabeled),
                 "--json"]) == 0
    assert '"true_michels": 0' in capsys.readouterr().out


def test_evaluate_refuses_a_batch_size_below_one(common, tmp_path, capsys):
    checkpoint = train(TrainConfig(iterations=1, **common), tmp_path / "run", progress=False)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", common["data"],
                 "--batch-size", "0"]) == 2
    assert "batch_size=0 must be >= 1" in capsys.readouterr().err


def test_a_2d_network_is_evaluated_on_the_projection_it_was_trained_on(tmp_path):
    from analysis_lib.evaluation.inference import evaluate
    from analysis_lib.sim import simulate

    data = simulate(tmp_path / "2d.h5", 6, 32, seed=3, dim=2, workers=1, progress=False)
    cfg = TrainConfig(data=str(data), dim=2, projection=1, depth=3, filters=4, batch_size=2,
                      iterations=1)
    checkpoint = train(cfg, tmp_path / "run", progress=False)
    trained_on = evaluate(checkpoint, data)
    assert trained_on == evaluate(checkpoint, data, projection=1)
    assert trained_on != evaluate(checkpoint, data, projection=0)


def test_a_full_disk_while_checkpointing_is_one_storage_error(common, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(StorageError, match="cannot write .*checkpoint_1.pt: .*free some space"):
        train(TrainConfig(iterations=1, **common), tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock", "config.json",
                                                                    "metrics.jsonl"]


def test_out_of_memory_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    from analysis_lib.evaluation import inference

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(inference, "evaluate", oom)
    args = ["evaluate", "--checkpoint", "c.pt", "--data", "d.h5"]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("error: out of memory (OutOfMemoryError: CUDA")
    with pytest.raises(torch.OutOfMemoryError):
        main(["--debug", *args])


def test_negative_loader_workers_are_refused(common, tmp_path):
    with pytest.raises(ConfigError, match="workers=-1 must be >= 0"):
        train(TrainConfig(iterations=1, **common), tmp_path / "run", progress=False, workers=-1)


def test_a_checkpoint_is_intact_only_with_the_bytes_it_was_written_with(common, tmp_path):
    """The sha256 recorded beside it finds a changed byte that still loads; a checkpoint
    without one (written before they were recorded) is intact if it reads back."""
    train(TrainConfig(iterations=2, checkpoint_every=2, **common), tmp_path / "run",
          progress=False)
    path = tmp_path / "run" / "checkpoint_2.pt"
    assert intact(path) and digest_path(path).read_text().strip() == file_sha256(path)
    digest_path(path).unlink()
    assert intact(path) and digest_path(path).is_file()  # read back, then recorded
    data = bytearray(path.read_bytes())
    data[-30] ^= 1  # inside the zip's directory: torch may still read it
    path.write_bytes(bytes(data))
    assert not intact(path) and not intact(tmp_path / "run" / "checkpoint_9.pt")


def _full_disk_on(name: str, after_calls: int, monkeypatch):
    """``os.write`` on a file called ``name`` writes half its data, then fails as a full disk
    does, from the ``after_calls``-th write on."""
    real, calls = os.write, {"n": 0}

    def write(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(name):
            return real(fd, data)
        calls["n"] += 1
        if calls["n"] < after_calls:
            return real(fd, data)
        real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)


def test_a_full_disk_while_logging_is_one_line_and_leaves_whole_rows(tiny_sample, tmp_path,
                                                                     monkeypatch, capsys):
    _full_disk_on("metrics.jsonl", 3, monkeypatch)
    args = ["train", "--data", str(tiny_sample), "--out", str(tmp_path / "run"), "--depth", "3",
            "--filters", "4", "--batch-size", "2", "--iterations", "5"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: cannot write ") and err.endswith(
        "metrics.jsonl: No space left on device; free some space or write elsewhere")
    monkeypatch.undo()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 2 and all(line.endswith("}\n") for line in lines)
    assert read_log(tmp_path / "run")["iteration"].tolist() == [1, 2]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs process groups")
def test_ctrl_c_during_training_is_one_line_and_the_rerun_resumes(tiny_sample, tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it: exit 130, the one
    line and no traceback; ``--resume`` then finishes the run from its last checkpoint."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "analysis_lib", "train", "--data", str(tiny_sample), "--out",
            str(out), "--depth", "3", "--filters", "4", "--batch-size", "2", "--iterations",
            "400", "--checkpoint-every", "5"]
    # a shell that started the tests in the background may have left SIGINT ignored
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / "checkpoint_5.pt.sha256").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == INTERRUPTED
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read_log(out)["iteration"].tolist() == list(range(1, 401))
