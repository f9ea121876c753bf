"""U-ResNet resource table: sparse inference and training-step cost at the study's sizes, and
the dense/sparse ratios of inference memory and wall time on the same batch.

Memory on a CPU is the peak resident memory of a fresh process running only that work, minus its
memory just before the network runs; on CUDA it is the peak allocated memory.

    python benchmarks/uresnet.py [--device cpu|cuda] [--repeats 3] [--dense-size 192]
"""

import argparse
import tempfile
from pathlib import Path

from analysis_lib.evaluation.resources import MODES, ModelSpec, measure_cases
from analysis_lib.sim import simulate
from analysis_lib.training.batching import first_events

SPARSE_CASES = ((192, 4), (192, 64), (512, 4), (768, 4))


def _sample(folder: Path, size: int, n_events: int) -> str:
    path = folder / f"bench_{size}px_{n_events}.h5"
    if not path.exists():
        simulate(path, n_events, size, seed=1000 + size, progress=False)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dense-size", type=int, default=192,
                        help="image size of the dense/sparse comparison (0 to skip)")
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--filters", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sparse = ModelSpec(3, args.depth, args.filters, "sparse")
        print(f"sparse U-ResNet [3D, {args.depth}-{args.filters}] on {args.device}, "
              f"median of {args.repeats}")
        cases = (({"size": size, "batch": n, "voxels": len(batch.coords), "mode": mode}, sparse,
                  batch, mode)
                 for size, n in SPARSE_CASES
                 for batch in [first_events(_sample(folder, size, n), n)] for mode in MODES)
        table = measure_cases(cases, args.device, args.repeats)
        print(table.pivot(index=["size", "batch", "voxels"], columns="mode",
                          values=["wall time (s)", "memory (GB)"]).round(3).to_string())
        if args.dense_size:
            size = args.dense_size
            batch = first_events(_sample(folder, size, 4), 4)
            print(f"\ninference, [3D, {size} px, {args.depth}-{args.filters}], batch 4 "
                  f"({len(batch.coords)} nonzero voxels)")
            cases = [({"backend": backend}, ModelSpec(3, args.depth, args.filters, backend), batch,
                      "inference") for backend in ("dense", "sparse")]
            pair = measure_cases(cases, args.device, args.repeats).set_index("backend")
            print(pair.round(3).to_string())
            ratio = pair.loc["dense"] / pair.loc["sparse"]
            print(f"dense/sparse: memory {ratio['memory (GB)']:.0f}x, "
                  f"wall time {ratio['wall time (s)']:.0f}x")

if __name__ == "__main__":
    main()
