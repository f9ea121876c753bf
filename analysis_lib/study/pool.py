"""Training a profile's runs side by side: each run in a worker process with its share of the
cores, fine-tuning runs after their parent, the longest chain first, the data files they read
made in the same workers just before they are needed, progress lines while they run, and one
line naming a worker that fails."""

import multiprocessing
import multiprocessing.connection
import signal
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from analysis_lib.core.errors import AnalysisError, ConfigError, one_line_warnings
from analysis_lib.core.processes import preloaded_context
from analysis_lib.study.build_times import usable_cores
from analysis_lib.study.experiments import EvaluationCase, Experiment
from analysis_lib.training import checkpoints

#: The file of a run folder where a worker that failed on the run leaves its traceback.
FAILURE_LOG = "failure.log"


def _in_worker(job: "_Job", threads: int) -> None:
    """A worker process's body: make the job's data file, or train the job's run, or evaluate
    it on its cases (results cached), with ``threads`` torch threads. Ctrl-C is the parent's
    (it stops the workers); a failure leaves its traceback in the job's
    :attr:`~_Job.failure_log` and exits with 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_line_warnings()
    import torch

    torch.set_num_threads(threads)
    job.failure_log.unlink(missing_ok=True)  # an earlier attempt's
    try:
        if job.make is not None:
            job.make()
        elif not job.cases:
            job.run.run(progress=False)
        for data, relabeled in job.cases:
            job.run.evaluation(data, relabeled)
    except BaseException:
        job.failure_log.parent.mkdir(parents=True, exist_ok=True)
        job.failure_log.write_text(traceback.format_exc())
        raise SystemExit(1) from None


def _failure(job: "_Job", name: str, exitcode: int) -> AnalysisError:
    """The one line that names a failed job: its error's last line and where its traceback
    is, or the signal or code it exited with."""
    what = {"data": "making", "evaluate": "evaluating", "train": "training"}[job.kind]
    log = job.failure_log
    if exitcode == 1 and log.is_file():
        last = (log.read_text().strip().splitlines() or ["no message"])[-1]
        return AnalysisError(f"{what} {name} failed: {last} (traceback in {log})")
    how = f"signal {-exitcode}" if exitcode < 0 else f"exit code {exitcode}"
    return AnalysisError(f"{what} {name} ({log.parent}) stopped with {how}")


def _chain_cost(experiment: Experiment, children: Mapping[str, list[Experiment]]) -> float:
    """Work of a run and of the longest chain of runs fine-tuned from it, in events × filters
    (a proxy that orders runs, not a time)."""
    own = experiment.config.iterations * experiment.config.batch_size * experiment.config.filters
    below = [_chain_cost(c, children) for c in children.get(experiment.key, [])]
    return own + max(below, default=0.0)


@dataclass(frozen=True)
class _Job:
    """One worker's job: train ``run``, or (``cases`` given) evaluate it on them, or (``make``
    given) make the data file ``output`` by calling it."""

    run: Experiment | None = None
    cases: tuple[EvaluationCase, ...] = ()
    make: Callable[[], object] | None = None
    output: Path | None = None

    @property
    def kind(self) -> str:
        """``data``, ``evaluate`` or ``train``: the tag of the job's report lines."""
        return "data" if self.make is not None else "evaluate" if self.cases else "train"

    @property
    def failure_log(self) -> Path:
        """Where the worker leaves the traceback of a failure: the run folder's
        :data:`FAILURE_LOG`, or beside the data file."""
        if self.output is not None:
            return self.output.with_name(f"{self.output.name}.{FAILURE_LOG}")
        return self.run.folder / FAILURE_LOG

    def process(self, context, threads: int, name: str) -> multiprocessing.process.BaseProcess:
        return context.Process(target=_in_worker, args=(self, threads),
                               name=f"{self.kind} {name}")


#: Seconds between the progress lines of the runs in training (a silence of a minute or more
#: cannot be told from a hang).
PROGRESS_EVERY_S = 45.0


def _progress(job: _Job, name: str, elapsed: float) -> str:
    """A running job's progress line: a training's iteration, rate and time left, read from
    the last row of its log; an evaluation's time so far."""
    row = None if job.kind != "train" else checkpoints.last_row(job.run.folder)
    if row is None:
        return f"[{job.kind}] {name}: running for {elapsed:.0f} s"
    done, total = row["iteration"], job.run.config.iterations
    rate = done / max(row["wall_time_s"], 1e-9)
    return (f"[train] {name}: {done} of {total} iterations, {rate:.2f} it/s, about "
            f"{(total - done) / max(rate, 1e-9) / 60:.0f} min left")


def train_all(experiments: Mapping[str, Experiment], workers: int,
              report: Callable[[str], None] = print,
              scorings: Mapping[str, list[EvaluationCase]] | None = None,
              progress: Callable[[str], None] | None = None,
              progress_every: float | None = None,
              data: Mapping[Path, Callable[[], object]] | None = None) -> None:
    """Train every incomplete run of ``experiments`` (name -> run), ``workers`` at a time,
    then evaluate the runs ``scorings`` names on its cases (cached as
    :meth:`Experiment.evaluation` caches them, so the chapters read them). ``data`` names
    files still to be made, each with the picklable callable that makes it: each is made in
    a worker too, ranked by the longest chain of runs that reads it (the main network's
    training set first, a set only a chapter reads when the cores have nothing else to do),
    and a run or evaluation that reads one waits for it; every one is made by the return.

    Each worker is a fresh process (forked from a server that has imported torch) with an
    equal share of the CPU cores as torch threads: on
    2 cores two one-thread trainings side by side do 1.5-1.7x the steps per second of one
    two-thread training (much of the engine's per-layer work is serial;
    ``benchmarks/train_workers.py``). A fine-tuning run
    starts once its parent is done; among ready runs, the longest chain goes first, and a
    run's evaluations wait for its training and for every ready training (they fill the cores
    a dependent chain leaves idle). While jobs run, each reports a progress line every
    ``progress_every`` seconds (default :data:`PROGRESS_EVERY_S`), through ``progress`` if
    given (all running jobs in one line, for a terminal's in-place status), else ``report``.
    A job that fails stops the others and is named; completed runs and evaluations stay
    cached and an interrupted training resumes from its last checkpoint next time.
    """
    every = progress_every or PROGRESS_EVERY_S
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
    making = {Path(path): _Job(make=make, output=Path(path)) for path, make in (data or {}).items()}
    unknown = sorted(set(scorings or {}) - set(experiments))
    if unknown:
        raise ConfigError(f"evaluations asked of runs not being trained here: {unknown}")
    todo: dict[str, tuple[Experiment, dict[EvaluationCase, None]]] = {}
    for name, cases in (scorings or {}).items():
        run = experiments[name]
        missing = todo.setdefault(run.key, (run, {}))[1]
        missing.update(dict.fromkeys(case for case in ((str(d), r) for d, r in cases)
                                     if run.key in pending or Path(case[0]) in making
                                     or not run.evaluation_cache(*case).exists()))
    evaluations = {key: _Job(run, tuple(cases)) for key, (run, cases) in todo.items() if cases}
    children: dict[str, list[Experiment]] = {}
    for run in pending.values():
        if run.parent is not None:
            children.setdefault(run.parent.key, []).append(run)
    cost = {key: _chain_cost(run, children) for key, run in pending.items()}
    for path in making:  # a file ranks with the longest chain that reads it
        cost[str(path)] = max((cost[k] for k, run in pending.items()
                               if Path(run.config.data) == path), default=0.0)
    names.update({str(path): path.name for path in making})
    threads = max(1, usable_cores() // workers)
    context = preloaded_context(__name__)
    running: dict[int, tuple[multiprocessing.process.BaseProcess, _Job, float]] = {}
    total, started = len(pending), 0
    reported = time.perf_counter()

    def key(job: _Job) -> str:
        return str(job.output) if job.output is not None else job.run.key

    try:
        while pending or evaluations or making or running:
            waiting = set(pending) | {job.run.key for _, job, _ in running.values()
                                      if job.kind == "train"}
            unmade = set(making) | {job.output for _, job, _ in running.values()
                                    if job.output is not None}
            ready = [_Job(run) for run in pending.values()
                     if (run.parent is None or run.parent.key not in waiting)
                     and Path(run.config.data) not in unmade]
            jobs = sorted(ready + list(making.values()), key=lambda job: cost[key(job)],
                          reverse=True)
            jobs += [job for k, job in evaluations.items() if k not in waiting
                     and not unmade & {Path(d) for d, _ in job.cases}]
            for job in jobs[: workers - len(running)]:
                name = names[key(job)]
                if job.output is not None:
                    del making[job.output]
                    report(f"[data] {name}: started")
                elif job.cases:
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
                list(running), max(0.0, reported + every - now))
            if (now := time.perf_counter()) >= reported + every:
                reported = now
                lines = [_progress(job, names[key(job)], now - start)
                         for _, job, start in running.values()]
                if progress is not None and lines:
                    progress(" · ".join(lines))
                else:
                    for line in lines:
                        report(line)
            for sentinel in finished:
                process, job, start = running.pop(sentinel)
                process.join()
                if process.exitcode != 0:
                    raise _failure(job, names[key(job)], process.exitcode)
                report(f"[{job.kind}] {names[key(job)]}: done in "
                       f"{time.perf_counter() - start:.0f} s")
    finally:
        for process, _, _ in running.values():
            process.terminate()
            process.join()
