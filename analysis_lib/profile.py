"""Memory and wall time of a U-ResNet's inference and of one training step.

CUDA: ``torch.cuda.max_memory_allocated`` after a reset, synchronized timing, warm-up excluded.
CPU: a fresh child process runs only that work; its peak resident set size during the work
(Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``) is reported both absolute
and minus the child's resident size just before the model runs (after imports, with the model and
the batch in memory). Wall time is the median of the repeats.
"""

import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from queue import Empty

import numpy as np
import torch

from analysis_lib.batching import Batch
from analysis_lib.errors import AnalysisError, ConfigError
from analysis_lib.models import UResNet

MODES = ("inference", "train")


class ResourceError(AnalysisError, RuntimeError):
    """A measurement could not complete (the measuring process died, e.g. out of memory)."""


@dataclass(frozen=True)
class ModelSpec:
    """What to build: the U-ResNet's arguments."""

    dim: int
    depth: int
    filters: int
    backend: str
    reps: int = 2
    growth: str | None = None

    def build(self) -> UResNet:
        """The network, freshly initialised."""
        return UResNet(self.dim, self.depth, self.filters, self.reps, self.backend, self.growth)


@dataclass(frozen=True)
class Measurement:
    """Result of :func:`measure` (bytes and seconds)."""

    mode: str
    device: str
    n_voxels: int
    wall_s_median: float
    wall_s_all: tuple[float, ...]
    memory_bytes: int
    memory_delta_bytes: int


def _run(model: UResNet, batch: Batch, mode: str, optimizer) -> None:
    if mode == "inference":
        with torch.no_grad():
            model(batch.coords, batch.feats, batch.spatial_size)
        return
    logits = model(batch.coords, batch.feats, batch.spatial_size)
    loss = torch.nn.functional.cross_entropy(logits, batch.labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _status_bytes(field: str) -> int:
    """A memory line of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise ConfigError(f"/proc/self/status has no {field}: CPU memory needs Linux")


def _reset_peak_rss() -> int:
    """Reset the peak resident size to the current one; return the current size (bytes)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status_bytes("VmRSS")


def _measure_here(spec: ModelSpec, batch: Batch, mode: str, device: str, repeats: int,
                  warmup: int) -> Measurement:
    model = spec.build().to(device)
    model.train(mode == "train")
    batch = batch.to(device)
    optimizer = torch.optim.Adam(model.parameters()) if mode == "train" else None
    cuda = device.startswith("cuda")
    for _ in range(warmup):
        _run(model, batch, mode, optimizer)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _reset_peak_rss()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _run(model, batch, mode, optimizer)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else _status_bytes("VmHWM")
    return Measurement(mode, device, len(batch.coords), float(np.median(times)), tuple(times),
                       int(peak), int(peak - baseline))


def _child(queue, spec, batch, mode, device, repeats, warmup) -> None:
    torch.set_num_threads(torch.get_num_threads())
    queue.put(asdict(_measure_here(spec, batch, mode, device, repeats, 0)))


def measure(spec: ModelSpec, batch: Batch, mode: str = "inference", device: str = "cpu",
            repeats: int = 3, warmup: int = 1) -> Measurement:
    """Memory and median wall time of ``mode`` on ``batch``.

    On CPU the work runs in a fresh child process (spawned, so the parent's memory does not
    count) without warm-up, since a warm-up would set the peak before the baseline; the first
    of the repeats then includes one-time costs, which the median discards.
    """
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r}; choose one of {MODES}")
    if device.startswith("cuda"):
        return _measure_here(spec, batch, mode, device, repeats, warmup)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue, spec, batch, mode, device, repeats, warmup))
    child.start()
    while True:
        try:
            result = queue.get(timeout=1.0)
            break
        except Empty:
            if not child.is_alive():
                raise ResourceError(
                    f"the measuring process ended with exit code {child.exitcode} before "
                    f"reporting ({spec.backend}, {mode}, {len(batch.coords)} voxels); a "
                    f"negative code is a signal, -9 usually means it ran out of memory"
                ) from None
    child.join()
    result["wall_s_all"] = tuple(result["wall_s_all"])
    return Measurement(**result)
