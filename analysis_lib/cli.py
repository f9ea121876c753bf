"""Command line: ``python -m analysis_lib simulate|data|validate-sim|reproduce``."""

import argparse
import sys
from pathlib import Path

import yaml

from analysis_lib.errors import AnalysisError


def _physics_overrides(pairs: list[str]) -> dict:
    """``name=value`` strings → overrides, the value parsed as YAML (numbers, lists, booleans)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects name=value, got {pair!r}")
        parsed = yaml.safe_load(value)
        out[name] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def _cmd_simulate(args: argparse.Namespace) -> None:
    from analysis_lib.sim import simulate

    path = simulate(args.out, args.events, args.size, args.seed, dim=args.dim,
                    workers=args.workers, **_physics_overrides(args.set))
    print(path)


def _cmd_data(args: argparse.Namespace) -> None:
    from analysis_lib.data.manifest import load_manifest, record_hashes, verify
    from analysis_lib.reproduce import make_data

    if args.action == "make":
        make_data(args.profile, Path(args.manifest))
        if args.record:
            for name, digest in record_hashes(args.manifest).items():
                print(f"recorded {name}: {digest}")
    manifest = load_manifest(args.manifest)
    names = [s.name for s in manifest.sets_for(args.profile)]
    for name, status in verify(manifest, names):
        print(f"{name:<24} {status}")


def _cmd_validate(args: argparse.Namespace) -> None:
    from analysis_lib.sim.validation import validate

    checks = validate(n_events=args.events, size=args.size, seed=args.seed, scale=args.scale)
    for c in checks:
        print(f"{c.number:>2} {'pass' if c.passed else 'FAIL'}  {c.statistic}\n"
              f"       target: {c.target}\n       value:  {c.value}")
    print(f"{sum(c.passed for c in checks)} of {len(checks)} rows pass")


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from analysis_lib.reproduce import reproduce

    reproduce(args.profile, only=args.only, skip_build=args.no_build)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m analysis_lib", description=__doc__)
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
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("data", help="build or verify the data sets of data_manifest.yaml")
    p.add_argument("action", choices=("make", "verify"))
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

    p = sub.add_parser("reproduce", help="make data, execute the notebooks, build the book")
    p.add_argument("--profile", default="ci", choices=("ci", "paper"))
    p.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="execute only these notebooks")
    p.add_argument("--no-build", action="store_true", help="skip the jupyter-book build")
    p.set_defaults(func=_cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; library errors print as one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
