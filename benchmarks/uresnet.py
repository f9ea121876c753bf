"""U-ResNet resource table: sparse inference and training-step cost at the study's sizes, and
the dense/sparse ratios of inference memory and wall time on the same batch.

Memory on a CPU is the peak resident memory of a fresh process running only that work, minus its
memory just before the network runs; on CUDA it is the peak allocated memory.

    python benchmarks/uresnet.py [--device cpu|cuda] [--repeats 3] [--dense-size 192]
"""

import argparse
import tempfile
from pathlib import Path

from analysis_lib.batching import first_events
from analysis_lib.profile import ModelSpec, measure
from analysis_lib.sim import simulate

SPARSE_CASES = ((192, 4), (192, 64), (512, 4), (768, 4))
GB = 1024**3


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
        print(f"{'size':>5} {'batch':>5} {'voxels':>8} {'infer s':>9} {'infer GB':>9} "
              f"{'train s':>9} {'train GB':>9}")
        for size, batch_size in SPARSE_CASES:
            batch = first_events(_sample(folder, size, batch_size), batch_size)
            test = measure(sparse, batch, "inference", args.device, args.repeats)
            step = measure(sparse, batch, "train", args.device, args.repeats)
            print(f"{size:>5} {batch_size:>5} {len(batch.coords):>8} {test.wall_s_median:>9.3f} "
                  f"{test.memory_delta_bytes / GB:>9.3f} {step.wall_s_median:>9.3f} "
                  f"{step.memory_delta_bytes / GB:>9.3f}")
        if args.dense_size:
            size = args.dense_size
            batch = first_events(_sample(folder, size, 4), 4)
            dense = ModelSpec(3, args.depth, args.filters, "dense")
            print(f"\ninference, [3D, {size} px, {args.depth}-{args.filters}], batch 4 "
                  f"({len(batch.coords)} nonzero voxels)")
            print(f"{'backend':>8} {'wall s':>9} {'memory GB':>10} {'process peak GB':>16}")
            results = {}
            for name, spec in (("dense", dense), ("sparse", sparse)):
                results[name] = measure(spec, batch, "inference", args.device, args.repeats)
                m = results[name]
                print(f"{name:>8} {m.wall_s_median:>9.3f} {m.memory_delta_bytes / GB:>10.3f} "
                      f"{m.memory_bytes / GB:>16.3f}")
            d, s = results["dense"], results["sparse"]
            print(f"dense/sparse: memory {d.memory_delta_bytes / s.memory_delta_bytes:.0f}x, "
                  f"wall time {d.wall_s_median / s.wall_s_median:.0f}x")


if __name__ == "__main__":
    main()
