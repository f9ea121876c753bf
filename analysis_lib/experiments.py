"""Named training runs cached by content: a run's folder is named by the hash of its
configuration, the sha256 of its data file and the source of the code that trains it, so the
notebooks reuse a trained model and any change of config, data or code trains a new one."""

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from analysis_lib import checkpoints
from analysis_lib.errors import AnalysisError, ConfigError, TrainingError, one_line_warnings
from analysis_lib.files import file_sha256, write_text
from analysis_lib.inference import evaluate
from analysis_lib.metrics import Evaluation
from analysis_lib.processes import preloaded_context
from analysis_lib.study import ROOT
from analysis_lib.train import bf16_autocast, default_device, read_log, train
from analysis_lib.train_config import RunSpec, TrainConfig

#: The modules whose source decides what a training run computes: the network, the engine,
#: the loop and its checkpoints, batching, the data readers and relabeling, the class ids.
_CODE = ("models", "sparse", "train.py", "train_config.py", "checkpoints.py", "batching.py", "data",
         "labels.py", "metrics.py")


def artifacts_folder() -> Path:
    """Where trained runs are cached: ``$ANALYSIS_LIB_ARTIFACTS`` if set, else ``artifacts/``
    of the source checkout the package runs from, else of the working folder (an installed
    package must not write into site-packages)."""
    if os.environ.get("ANALYSIS_LIB_ARTIFACTS"):
        return Path(os.environ["ANALYSIS_LIB_ARTIFACTS"])
    checkout = ROOT if (ROOT / "pyproject.toml").is_file() else Path.cwd()
    return checkout / "artifacts"


def _sources(folder: Path) -> list[Path]:
    """The Python and C sources under ``folder``, in a fixed order."""
    return sorted(f for f in folder.rglob("*") if f.suffix in (".py", ".c"))


@functools.cache
def code_version(entries: tuple[str, ...] = _CODE) -> str:
    """sha256 (16 hex digits) of the source files that training depends on (or of
    ``entries``, paths relative to the package; ``(".",)`` is the whole package); read once
    per process, as the source does not change under a session."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for entry in entries:
        path = package / entry
        for file in _sources(path) if path.is_dir() else [path]:
            digest.update(file.relative_to(package).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Experiment:
    """A training run and where its artifacts live; a fine-tuning run names its ``parent``,
    whose final checkpoint is its ``train_config.init`` and which it trains first. ``name`` is
    the profile's name for it (for messages; not part of the key). ``data_sha256`` is the data
    file's sha256 as the manifest records it (checked by ``data make``/``data verify``), so
    that a key does not re-hash gigabytes in every process; None hashes the file."""

    config: TrainConfig
    root: Path = dataclasses.field(default_factory=artifacts_folder)
    parent: "Experiment | None" = None
    name: str | None = None
    data_sha256: str | None = None

    @cached_property
    def key(self) -> str:
        """The run's hash: config (paths replaced by their files' sha256, ``amp`` by whether
        this machine trains it in bf16), code version; computed once per object (the files
        are not expected to change under a session)."""
        init = (self.parent.key if self.parent is not None
                else None if self.config.init is None else file_sha256(self.config.init))
        data = self.data_sha256 or file_sha256(self.config.data)
        fields = {**dataclasses.asdict(self.config), "data": data, "init": init,
                  "amp": bf16_autocast(self.config.amp, default_device(), self.config.backend)}
        blob = json.dumps({"config": fields, "code": code_version()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def lineage(self) -> str:
        """Its training, this run first: "1000 iterations (michel_tuned) after 1000
        (relabeled) after 3600 (main)"."""
        steps = []
        run: Experiment | None = self
        while run is not None:
            steps.append(f"{run.config.iterations}" + (f" ({run.name})" if run.name else ""))
            run = run.parent
        return " after ".join([steps[0].replace(" ", " iterations ", 1)
                               if " " in steps[0] else f"{steps[0]} iterations", *steps[1:]])

    @property
    def train_config(self) -> TrainConfig:
        """The configuration that trains: a fine-tuning run's ``init`` is its parent's final
        checkpoint (resolved only here, since naming it hashes the parent's data)."""
        if self.parent is None:
            return self.config
        return dataclasses.replace(self.config, init=str(self.parent.checkpoint))

    @property
    def folder(self) -> Path:
        """``artifacts/<key>``."""
        return self.root / self.key

    @property
    def checkpoint(self) -> Path:
        """The final checkpoint (exists once the run is complete)."""
        return self.folder / f"checkpoint_{self.config.iterations}.pt"

    def is_trained(self) -> bool:
        """Whether the final checkpoint is there and intact (:func:`checkpoints.intact`); a
        damaged one is set aside, named in a warning, so that the run trains again."""
        if not self.checkpoint.exists():
            return False
        if checkpoints.intact(self.checkpoint):
            return True
        aside = checkpoints.set_aside(self.checkpoint)
        called = f"{self.name!r} " if self.name else ""
        warnings.warn(f"run {called}({self.key}): its final checkpoint is damaged (not the "
                      f"bytes it was written with); set aside as {aside.name}, the run trains "
                      f"again", RuntimeWarning, stacklevel=2)
        return False

    def run(self, progress: bool = True) -> Path:
        """Train unless the final checkpoint is there and intact; an interrupted run resumes."""
        if self.parent is not None:
            self.parent.run(progress)
        if not self.is_trained():
            resume = checkpoints.latest_checkpoint(self.folder) is not None
            train(self.train_config, self.folder, resume=resume, progress=progress)
        return self.checkpoint

    def trained_checkpoint(self) -> Path:
        """The final checkpoint; reading a result never trains, so a run not yet trained (or
        whose checkpoint is damaged) is an error that says how to train it."""
        if not self.is_trained():
            called = f"{self.name!r} " if self.name else ""
            raise TrainingError(
                f"run {called}({self.key}: {Path(self.config.data).name}, "
                f"{self.config.iterations} iterations) is not trained yet: train it first "
                f"(Experiment.run, Chapter.trained, or `python -m analysis_lib reproduce`)")
        return self.checkpoint

    def log(self) -> dict:
        """The finished run's per-iteration log (see :func:`analysis_lib.train.read_log`)."""
        self.trained_checkpoint()
        return read_log(self.folder)

    def probes(self) -> dict[int, dict[str, np.ndarray]]:
        """The probe event's snapshots by iteration: coords, energy, label, probs."""
        self.trained_checkpoint()
        found = {}
        for path in self.folder.glob("probe_*.npz"):
            with np.load(path) as snapshot:
                found[int(path.stem.removeprefix("probe_"))] = dict(snapshot)
        return dict(sorted(found.items()))

    def evaluation_cache(self, data: str | os.PathLike, relabeled: bool = False) -> Path:
        """Where :meth:`evaluation` of the trained run keeps its result: named by the final
        checkpoint's sha256 (so it never outlives the network it describes), the data file's,
        the labels and the whole package's source."""
        tag = (f"{file_sha256(self.trained_checkpoint())[:8]}_{file_sha256(data)[:12]}"
               f"{'_relabeled' if relabeled else ''}_{code_version(('.',))[:8]}")
        return self.folder / f"eval_{tag}.json"

    def evaluation(self, data: str | os.PathLike, relabeled: bool = False) -> Evaluation:
        """Metrics of the trained model on ``data`` (a :class:`TrainingError` if it is not
        trained), cached beside the checkpoint and keyed by the data and the whole package's
        source (a changed metric or reader re-evaluates)."""
        cache = self.evaluation_cache(data, relabeled)
        if cache.exists():
            return Evaluation.from_record(json.loads(cache.read_text()))
        result = evaluate(self.trained_checkpoint(), data, relabeled=relabeled)
        write_text(cache, json.dumps(dataclasses.asdict(result)))
        return result


def profile_runs(specs: Mapping[str, RunSpec], data_path: Callable[[str], Path],
                 root: Path | None = None,
                 data_sha256: Callable[[str], str | None] | None = None
                 ) -> dict[str, Experiment]:
    """The named runs of a profile (``shared.runs``): ``data_path`` gives each data set's file
    and ``data_sha256``, if given, its recorded sha256 (the manifest's); a run's ``init`` names
    the run it fine-tunes. Chapters that name the same run share its training."""
    runs: dict[str, Experiment] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Experiment:
        if name in runs:
            return runs[name]
        if name not in specs:
            raise ConfigError(f"run {name!r} is not among the profile's runs {sorted(specs)}")
        if name in chain:
            raise ConfigError(f"runs {' -> '.join(chain + (name,))} fine-tune each other")
        spec = specs[name]
        parent = resolve(spec.init, chain + (name,)) if spec.init else None
        try:
            config = TrainConfig(data=str(data_path(spec.data)), **spec.settings)
        except ConfigError as err:
            raise ConfigError(f"run {name!r}: {err}") from None
        recorded = data_sha256(spec.data) if data_sha256 else None
        runs[name] = Experiment(config, root or artifacts_folder(), parent, name, recorded)
        return runs[name]

    for name in specs:
        resolve(name, ())
    return runs


#: One held-out evaluation: a data file and whether its labels are relabeled.
EvaluationCase = tuple[str | os.PathLike, bool]


#: The file of a run folder where a worker that failed on the run leaves its traceback.
FAILURE_LOG = "failure.log"


def _in_worker(job: "_Job", threads: int) -> None:
    """A worker process's body: train the job's run or evaluate it on its cases (results
    cached), with ``threads`` torch threads. Ctrl-C is the parent's (it stops the workers); a
    failure leaves its traceback in the run folder's :data:`FAILURE_LOG` and exits with 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_line_warnings()
    import torch

    torch.set_num_threads(threads)
    (job.run.folder / FAILURE_LOG).unlink(missing_ok=True)  # an earlier attempt's
    try:
        if not job.cases:
            job.run.run(progress=False)
        for data, relabeled in job.cases:
            job.run.evaluation(data, relabeled)
    except BaseException:
        job.run.folder.mkdir(parents=True, exist_ok=True)
        (job.run.folder / FAILURE_LOG).write_text(traceback.format_exc())
        raise SystemExit(1) from None


def _failure(job: "_Job", name: str, exitcode: int) -> AnalysisError:
    """The one line that names a failed job: its error's last line and where its traceback
    is, or the signal or code it exited with."""
    what = "evaluating" if job.cases else "training"
    log = job.run.folder / FAILURE_LOG
    if exitcode == 1 and log.is_file():
        last = (log.read_text().strip().splitlines() or ["no message"])[-1]
        return AnalysisError(f"{what} {name} failed: {last} (traceback in {log})")
    how = f"signal {-exitcode}" if exitcode < 0 else f"exit code {exitcode}"
    return AnalysisError(f"{what} {name} ({job.run.folder}) stopped with {how}")


def _chain_cost(experiment: Experiment, children: Mapping[str, list[Experiment]]) -> float:
    """Work of a run and of the longest chain of runs fine-tuned from it, in events × filters
    (a proxy that orders runs, not a time)."""
    own = experiment.config.iterations * experiment.config.batch_size * experiment.config.filters
    below = [_chain_cost(c, children) for c in children.get(experiment.key, [])]
    return own + max(below, default=0.0)


@dataclass(frozen=True)
class _Job:
    """One worker's job: train ``run``, or (``cases`` given) evaluate it on them."""

    run: Experiment
    cases: tuple[EvaluationCase, ...] = ()

    @property
    def kind(self) -> str:
        """``evaluate`` or ``train``: the tag of the job's report lines."""
        return "evaluate" if self.cases else "train"

    def process(self, context, threads: int, name: str) -> multiprocessing.process.BaseProcess:
        return context.Process(target=_in_worker, args=(self, threads),
                               name=f"{self.kind} {name}")


#: Seconds between the progress lines of the runs in training (a silence of a minute or more
#: cannot be told from a hang).
PROGRESS_EVERY_S = 45.0


def _progress(job: _Job, name: str, elapsed: float) -> str:
    """A running job's progress line: a training's iteration, rate and time left, read from
    the last row of its log; an evaluation's time so far."""
    row = None if job.cases else checkpoints.last_row(job.run.folder)
    if row is None:
        return f"[{job.kind}] {name}: running for {elapsed:.0f} s"
    done, total = row["iteration"], job.run.config.iterations
    rate = done / max(row["wall_time_s"], 1e-9)
    return (f"[train] {name}: {done} of {total} iterations, {rate:.2f} it/s, about "
            f"{(total - done) / max(rate, 1e-9) / 60:.0f} min left")


def train_all(experiments: Mapping[str, Experiment], workers: int,
              report: Callable[[str], None] = print,
              scorings: Mapping[str, list[EvaluationCase]] | None = None) -> None:
    """Train every incomplete run of ``experiments`` (name -> run), ``workers`` at a time,
    then evaluate the runs ``scorings`` names on its cases (cached as
    :meth:`Experiment.evaluation` caches them, so the chapters read them).

    Each worker is a fresh process (forked from a server that has imported torch) with an
    equal share of the CPU cores as torch threads: on
    2 cores two one-thread trainings side by side do 1.5-1.7x the steps per second of one
    two-thread training (much of the engine's per-layer work is serial;
    ``benchmarks/train_workers.py``). A fine-tuning run
    starts once its parent is done; among ready runs, the longest chain goes first, and a
    run's evaluations wait for its training and for every ready training (they fill the cores
    a dependent chain leaves idle). While jobs run, each reports a progress line every
    :data:`PROGRESS_EVERY_S`. A job that fails stops the others and is named; completed runs
    and evaluations stay cached and an interrupted training resumes from its last checkpoint
    next time.
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    names = {experiment.key: name for name, experiment in reversed(experiments.items())}
    pending: dict[str, Experiment] = {}
    for name, experiment in experiments.items():
        run: Experiment | None = experiment
        while run is not None:
            names.setdefault(run.key, f"{name}'s parent")
            if not run.is_trained():
                pending[run.key] = run
            run = run.parent
    unknown = sorted(set(scorings or {}) - set(experiments))
    if unknown:
        raise ConfigError(f"evaluations asked of runs not being trained here: {unknown}")
    todo: dict[str, tuple[Experiment, dict[EvaluationCase, None]]] = {}
    for name, cases in (scorings or {}).items():
        run = experiments[name]
        missing = todo.setdefault(run.key, (run, {}))[1]
        missing.update(dict.fromkeys(case for case in ((str(d), r) for d, r in cases)
                                     if run.key in pending
                                     or not run.evaluation_cache(*case).exists()))
    evaluations = {key: _Job(run, tuple(cases)) for key, (run, cases) in todo.items() if cases}
    children: dict[str, list[Experiment]] = {}
    for run in pending.values():
        if run.parent is not None:
            children.setdefault(run.parent.key, []).append(run)
    cost = {key: _chain_cost(run, children) for key, run in pending.items()}
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    context = preloaded_context(__name__)
    running: dict[int, tuple[multiprocessing.process.BaseProcess, _Job, float]] = {}
    total, started = len(pending), 0
    reported = time.perf_counter()
    try:
        while pending or evaluations or running:
            waiting = set(pending) | {job.run.key for _, job, _ in running.values()
                                      if not job.cases}
            ready = [run for run in pending.values()
                     if run.parent is None or run.parent.key not in waiting]
            ready.sort(key=lambda run: cost[run.key], reverse=True)
            jobs = [_Job(run) for run in ready]
            jobs += [job for key, job in evaluations.items() if key not in waiting]
            for job in jobs[: workers - len(running)]:
                name = names[job.run.key]
                if job.cases:
                    del evaluations[job.run.key]
                    report(f"[evaluate] {name}: started ({len(job.cases)} held-out set(s))")
                else:
                    del pending[job.run.key]
                    started += 1
                    report(f"[train] {name}: started ({started} of {total}; {workers} at a "
                           f"time, {threads} thread(s) each)")
                process = job.process(context, threads, name)
                process.start()
                running[process.sentinel] = (process, job, time.perf_counter())
            now = time.perf_counter()
            finished = multiprocessing.connection.wait(
                list(running), max(0.0, reported + PROGRESS_EVERY_S - now))
            if (now := time.perf_counter()) >= reported + PROGRESS_EVERY_S:
                reported = now
                for _, job, start in running.values():
                    report(_progress(job, names[job.run.key], now - start))
            for sentinel in finished:
                process, job, start = running.pop(sentinel)
                process.join()
                if process.exitcode != 0:
                    raise _failure(job, names[job.run.key], process.exitcode)
                report(f"[{job.kind}] {names[job.run.key]}: done in "
                       f"{time.perf_counter() - start:.0f} s")
    finally:
        for process, _, _ in running.values():
            process.terminate()
            process.join()
