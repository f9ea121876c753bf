"""Command line: ``python -m analysis_lib simulate|data|validate-sim|train|evaluate|michel|
reproduce|findings|check-book``."""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from analysis_lib.core.errors import AnalysisError, ConfigError, one_line_warnings
from analysis_lib.core.labels import CLASS_NAMES


def _physics_overrides(pairs: list[str]) -> dict:
    """``name=value`` strings → overrides, the value parsed as YAML (numbers, lists, booleans)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set expects name=value, got {pair!r}")
        parsed = yaml.safe_load(value)
        out[name] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def _cmd_simulate(args: argparse.Namespace) -> None:
    from analysis_lib.sim import simulate

    path = simulate(args.out, args.events, args.size, args.seed, dim=args.dim,
                    workers=args.workers, overwrite=args.overwrite,
                    **_physics_overrides(args.set))
    print(path)


def _cmd_data(args: argparse.Namespace) -> None:
    from analysis_lib.data.manifest import load_manifest, record_hashes, verify
    from analysis_lib.study.reproduce import make_data

    if args.action == "record":
        for name, digest in record_hashes(args.manifest, args.names or None).items():
            print(f"recorded {name}: {digest}")
        return
    if args.action == "make":
        make_data(args.profile, Path(args.manifest))
        if args.record:
            for name, digest in record_hashes(args.manifest).items():
                print(f"recorded {name}: {digest}")
    manifest = load_manifest(args.manifest)
    names = args.names or [s.name for s in manifest.sets_for(args.profile)]
    statuses = verify(manifest, names)
    for name, status in statuses:
        print(f"{name:<24} {status}")
    missing = [name for name, status in statuses if status == "missing"]
    if missing:
        raise AnalysisError(f"{len(missing)} of {len(statuses)} data sets are missing; "
                            f"`python -m analysis_lib data make --profile {args.profile}` "
                            f"builds the simulated ones")


def _cmd_validate(args: argparse.Namespace) -> None:
    from analysis_lib.sim.validation import validate

    checks = validate(n_events=args.events, size=args.size, seed=args.seed, scale=args.scale)
    for c in checks:
        print(f"{c.number:>2} {'pass' if c.passed else 'FAIL'}  {c.statistic}\n"
              f"       target: {c.target}\n       value:  {c.value}")
    print(f"{sum(c.passed for c in checks)} of {len(checks)} rows pass")


def _cmd_reproduce(args: argparse.Namespace) -> None:
    if args.dry_run:
        from analysis_lib.study.plan import print_plan

        print_plan(args.profile)
    else:
        from analysis_lib.study.reproduce import reproduce

        reproduce(args.profile, only=args.only, skip_build=args.no_build, wait=args.wait)


def _cmd_findings(args: argparse.Namespace) -> None:
    from analysis_lib.report import findings, findings_report
    from analysis_lib.study import build_times, results
    from analysis_lib.study.build_times import BuildTimes

    recorded = results.load_all(args.results)
    if not recorded:
        raise AnalysisError(f"no chapter results in {args.results or results.folder()}; run "
                            f"`make book` (or `python -m analysis_lib reproduce`) first")
    table = findings_report.markdown(findings.judge(recorded))
    if args.update_readme is None:
        print(table)
        return
    findings_report.write_between_markers(args.update_readme, table)
    print(f"updated the findings section of {args.update_readme}")
    times = BuildTimes.load(recorded)
    if times is not None:
        findings_report.write_between_markers(args.update_readme, build_times.markdown(times),
                                              "build")
        print(f"updated the build section of {args.update_readme}")


def _cmd_check_book(args: argparse.Namespace) -> None:
    from analysis_lib.book.browser import check_book

    checks = check_book(args.html, screenshots=args.screenshots)
    width = max(len(c.page) for c in checks)
    print(f"{'page':<{width}}  figures  drawn  result")
    for c in checks:
        print(f"{c.page:<{width}}  {c.images:>7}  {c.expected_images:>5}  "
              f"{'ok' if c.passed else 'FAIL'}")
        for problem in c.problems:
            print(f"{'':<{width}}  {problem}")
    failed = [c.page for c in checks if not c.passed]
    if failed:
        raise AnalysisError(f"{len(failed)} of {len(checks)} pages failed in the browser: "
                            f"{', '.join(failed)}")
    print(f"{len(checks)} pages passed in Chromium; screenshots in {args.screenshots}")


def _cmd_train(args: argparse.Namespace) -> None:
    from analysis_lib.training.config import TrainConfig
    from analysis_lib.training.loop import train

    cfg = TrainConfig(data=args.data, dim=args.dim, projection=args.projection,
                      backend=args.backend, depth=args.depth, filters=args.filters,
                      growth=args.growth, batch_size=args.batch_size,
                      iterations=args.iterations, learning_rate=args.lr,
                      class_weights=args.weights, relabel=args.relabel,
                      checkpoint_every=args.checkpoint_every, seed=args.seed,
                      init=args.init, decay_from=args.decay_from, schedule=args.schedule,
                      warmup=args.warmup, optimizer=args.optimizer,
                      weight_decay=args.weight_decay, rare_oversampling=args.rare_oversampling,
                      augment=args.augment)
    print(train(cfg, args.out, resume=args.resume, workers=args.workers,
                overwrite=args.overwrite))


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from analysis_lib.evaluation.inference import evaluate

    result = evaluate(args.checkpoint, args.data, args.batch_size, relabeled=args.relabeled,
                      projection=args.projection, predictions=args.predictions)
    if args.json:
        print(json.dumps(dataclasses.asdict(result)))
        return
    if args.predictions:
        print(f"predictions of {result.n_events + result.n_unlabeled} events: "
              f"{args.predictions}")
    if result.n_unlabeled:
        print(f"{result.n_unlabeled} events without labels: no metrics for them")
    if not result.n_events:
        return
    print(f"{result.n_events} events: nonzero accuracy {result.nonzero_accuracy:.4f} "
          f"± {result.nonzero_accuracy_std:.4f}")
    for name, value in zip(CLASS_NAMES, result.classwise_accuracy, strict=True):
        print(f"  {name:<10} {'absent' if value is None else f'{value:.4f}'}")


def _cmd_michel(args: argparse.Namespace) -> None:
    from analysis_lib.evaluation import michel

    if args.checkpoint is None:
        candidates, truths = michel.reconstruct(michel.relabeled_truth(args.data))
    else:
        from analysis_lib.evaluation.inference import load_model, predict

        model, cfg = load_model(args.checkpoint)
        candidates, truths = michel.reconstruct(
            (p.event, p.pred) for p in predict(model, args.data, relabeled=True,
                                                      projection=cfg.projection))
    result = {"no cut": michel.summarize(candidates, truths),
              f">= {michel.ANALYSIS_CUT} voxels": michel.summarize(candidates, truths,
                                                                  michel.ANALYSIS_CUT)}
    if args.json:
        print(json.dumps({cut: dataclasses.asdict(s) for cut, s in result.items()}))
        return
    for cut, summary in result.items():
        print(f"{cut}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in zip(michel.TABLE6_ROWS, summary.column(),
                                                     strict=True)))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m analysis_lib", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="simulate events into a larcv3 HDF5 file")
    p.add_argument("--out", required=True, help="output .h5 file")
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--size", type=int, required=True, help="cube side in 3 mm voxels")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--dim", type=int, default=3, choices=(2, 3))
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="physics override, e.g. --set smear_sigma_mm=3.0 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("data", help="build, verify or record the data sets of "
                                    "data_manifest.yaml")
    p.add_argument("action", choices=("make", "verify", "record"),
                   help="record: accept the present files' sha256 into the manifest")
    p.add_argument("names", nargs="*", help="data sets (default: the profile's)")
    p.add_argument("--profile", default="ci", choices=("ci", "paper"))
    p.add_argument("--manifest", default="data_manifest.yaml")
    p.add_argument("--record", action="store_true",
                   help="after make, write the files' sha256 into the manifest")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("validate-sim", help="measure the simulator against physics-spec §7")
    p.add_argument("--events", type=int, default=200)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--scale", type=float, default=1.0, help="single-particle statistics factor")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("train", help="train a U-ResNet (torchrun for several processes)")
    p.add_argument("--data", required=True, help="larcv3 HDF5 file of training events")
    p.add_argument("--out", required=True, help="folder for metrics.jsonl and checkpoints")
    p.add_argument("--dim", type=int, default=3, choices=(2, 3))
    p.add_argument("--projection", type=int, default=0, choices=(0, 1, 2))
    p.add_argument("--backend", default="sparse", choices=("sparse", "dense"))
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--growth", choices=("linear", "power"), default=None)
    p.add_argument("--batch-size", type=int, default=4, help="events per process")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--decay-from", type=float, default=1.0, metavar="FRACTION",
                   help="step schedule: lower the rate tenfold after this fraction")
    p.add_argument("--schedule", choices=("step", "cosine"), default="step",
                   help="step (the study's constant rate) or warm-up + cosine decay")
    p.add_argument("--warmup", type=float, default=0.0, metavar="FRACTION",
                   help="cosine schedule: linear warm-up over this fraction")
    p.add_argument("--optimizer", choices=("adam", "adamw"), default="adam")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--weights", action="store_true", help="per-event class weights")
    p.add_argument("--rare-oversampling", type=float, default=1.0, metavar="FACTOR",
                   help="draw events holding a delta-ray or Michel voxel this many times as often")
    p.add_argument("--augment", action="store_true",
                   help="turn each drawn event by a random symmetry of the voxel grid")
    p.add_argument("--relabel", action="store_true", help="train on relabeled Michel/delta")
    p.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint (refused if the settings differ)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a folder that holds another run's checkpoints")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="the study's metrics of a checkpoint on a sample")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--relabeled", action="store_true", help="score against relabeled truth")
    p.add_argument("--projection", type=int, choices=(0, 1, 2), default=None,
                   help="2D: the projection to read (default: the one trained on)")
    p.add_argument("--predictions", metavar="FILE.npz",
                   help="also save every voxel's predicted class and scores (labels or not)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("michel", help="Michel reconstruction metrics (the study's Table VI)")
    p.add_argument("--checkpoint", help="network whose prediction to use (default: true labels)")
    p.add_argument("--data", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_michel)

    p = sub.add_parser("reproduce", help="make data, execute the notebooks, build the book")
    p.add_argument("--profile", default="ci", choices=("ci", "paper"))
    p.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="execute only these notebooks")
    p.add_argument("--no-build", action="store_true", help="skip the jupyter-book build")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs the profile trains, with estimated GPU-hours")
    p.add_argument("--wait", action="store_true",
                   help="if another build of this checkout is running, wait for it to finish")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("findings", help="the study's claims judged on the chapters' results")
    p.add_argument("--results", type=Path, default=None,
                   help="folder of the chapters' results (default: the executed book's)")
    p.add_argument("--update-readme", type=Path, default=None, metavar="README",
                   help="write the table between the README's findings markers, and the last "
                   "full build's times between its build markers")
    p.set_defaults(func=_cmd_findings)

    p = sub.add_parser("check-book", help="open every page of the built book in headless "
                       "Chromium and fail on what a reader would see broken")
    p.add_argument("--html", type=Path, default=Path("_build/html"))
    p.add_argument("--screenshots", type=Path, default=Path("_build/screenshots"))
    p.set_defaults(func=_cmd_check_book)
    return parser


#: What an interrupted command prints (exit status 130, as a shell reports SIGINT).
INTERRUPTED = "interrupted; rerun to continue: finished networks are kept"


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; library errors and running out of memory print as one line and exit
    with status 2 (``--debug`` shows the traceback instead), an interrupt (Ctrl-C) as one line
    with status 130."""
    args = build_parser().parse_args(argv)
    if not args.debug:
        one_line_warnings()
    try:
        args.func(args)
    except (AnalysisError, MemoryError, RuntimeError) as err:
        if args.debug or not _is_user_error(err):
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\n{INTERRUPTED}", file=sys.stderr)
        return 130
    return 0


def _is_user_error(err: BaseException) -> bool:
    """The library's own errors, and out-of-memory on the CPU or a GPU (torch raises a
    RuntimeError subclass): what a user fixes, not a bug to report."""
    return isinstance(err, AnalysisError | MemoryError) or type(err).__name__ == "OutOfMemoryError"


def _one_line(err: BaseException) -> str:
    if isinstance(err, AnalysisError):
        return str(err)
    return (f"out of memory ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            f"); use a smaller --batch-size or image, or fewer --workers")
