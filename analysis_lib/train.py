"""Training and evaluation of the U-ResNet.

Adam on the study's loss (softmax cross-entropy averaged per event over its nonzero voxels, then
over the events of the batch), optional per-event class weights, checkpoints that resume exactly,
a JSON-lines log, bf16 autocast (CPU and CUDA) and data-parallel training with ``torchrun``.
"""

import dataclasses
import json
import math
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn import functional
from tqdm import tqdm

from analysis_lib.batching import (
    Batch,
    BatchSchedule,
    EventDataset,
    collate,
    grid_symmetries,
    loader,
)
from analysis_lib.data import open_dataset
from analysis_lib.data.relabel import relabel
from analysis_lib.errors import ConfigError
from analysis_lib.labels import VoxelClass
from analysis_lib.metrics import SampleMetrics
from analysis_lib.models import UResNet

CHECKPOINT_PREFIX = "checkpoint_"
SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("adam", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (its hash names the run's folder).

    ``schedule="step"`` is the study's constant rate, dropped tenfold after the fraction
    ``decay_from`` of the iterations (which settles a short training's final weights);
    ``schedule="cosine"`` warms up linearly over the fraction ``warmup`` of the iterations and
    then follows a half cosine down to zero.
    ``optimizer`` is the study's ``"adam"`` or ``"adamw"`` (decoupled ``weight_decay``).
    Events that hold a delta-ray or Michel voxel are drawn ``rare_oversampling`` times as
    often as the others. With ``augment`` every drawn event is turned by a random symmetry
    of the voxel grid (axis permutations and mirrorings: 48 in 3D, 8 in 2D), exact
    symmetries of an isotropic sample, so a run that passes over its events many times sees
    them in new orientations. ``init`` is a checkpoint whose weights the network starts from
    (fine-tuning). At each of ``probe_iterations`` the softmax scores of training event
    ``probe_event`` are saved to ``probe_<iteration>.npz``, to watch how the network learns
    one image.
    """

    data: str
    dim: int = 3
    projection: int = 0
    backend: str = "sparse"
    depth: int = 5
    filters: int = 16
    reps: int = 2
    growth: str | None = None
    batch_size: int = 4
    iterations: int = 1000
    learning_rate: float = 1e-3
    decay_from: float = 1.0
    schedule: str = "step"
    warmup: float = 0.0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    class_weights: bool = False
    rare_oversampling: float = 1.0
    augment: bool = False
    relabel: bool = False
    checkpoint_every: int = 500
    seed: int = 0
    amp: bool = True
    init: str | None = None
    probe_event: int | None = None
    probe_iterations: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("batch_size", "iterations", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate={self.learning_rate} must be > 0")
        for name in ("decay_from", "warmup"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must be a fraction in [0, 1]")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r}; choose one of {SCHEDULES}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer={self.optimizer!r}; choose one of {OPTIMIZERS}")
        if not 1.0 <= self.rare_oversampling < 1e3:
            raise ConfigError(f"rare_oversampling={self.rare_oversampling} must be in [1, 1000)")
        if not 0.0 <= self.weight_decay < 1.0:
            raise ConfigError(f"weight_decay={self.weight_decay} must be in [0, 1)")
        if self.probe_iterations and self.probe_event is None:
            raise ConfigError("probe_iterations needs a probe_event")
        object.__setattr__(self, "probe_iterations", tuple(self.probe_iterations))

    def learning_rate_at(self, iteration: int) -> float:
        """The rate of (1-based) ``iteration`` under the schedule."""
        if self.schedule == "step":
            decayed = iteration > self.decay_from * self.iterations
            return self.learning_rate * (0.1 if decayed else 1.0)
        ramp = self.warmup * self.iterations
        if iteration <= ramp:
            return self.learning_rate * iteration / ramp
        progress = (iteration - ramp) / max(self.iterations - ramp, 1)
        return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    def make_optimizer(self, parameters) -> torch.optim.Optimizer:
        """The configured optimizer over ``parameters``, in its fused form (one kernel for all
        parameters: the U-ResNet's many small tensors make the per-tensor form cost about 8 % of
        a CPU step)."""
        kind = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        return kind(parameters, lr=self.learning_rate, weight_decay=self.weight_decay,
                    fused=True)

    def model(self) -> UResNet:
        """A freshly initialised network of this configuration."""
        return UResNet(self.dim, self.depth, self.filters, self.reps, self.backend, self.growth)


def event_loss(logits: Tensor, labels: Tensor, batch_index: Tensor, n_events: int,
               class_weights: bool = False) -> Tensor:
    """Cross-entropy averaged per event over its voxels, then over the events that have voxels.

    With ``class_weights``, voxel i of class c in event e weighs N_e / (n_present_e · N_e,c),
    so every class present in an event contributes equally to its loss.
    """
    per_voxel = functional.cross_entropy(logits.float(), labels, reduction="none")
    counts = torch.bincount(batch_index, minlength=n_events).clamp(min=1).float()
    if class_weights:
        num_classes = logits.shape[1]
        pair = batch_index * num_classes + labels
        per_class = torch.bincount(pair, minlength=n_events * num_classes).float()
        present = (per_class.view(n_events, num_classes) > 0).sum(1).clamp(min=1).float()
        weight = counts[batch_index] / (present[batch_index] * per_class[pair])
        per_voxel = per_voxel * weight
    per_event = torch.zeros(n_events, device=logits.device).index_add_(0, batch_index, per_voxel)
    nonempty = torch.bincount(batch_index, minlength=n_events) > 0
    if not nonempty.any():
        return logits.sum() * 0.0  # a batch of empty events: nothing to learn, no NaN
    return (per_event / counts)[nonempty].mean()


def _device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated (CUDA) or peak resident set size of this process (CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _checkpoints(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob(f"{CHECKPOINT_PREFIX}*.pt"),
                  key=lambda p: int(p.stem.removeprefix(CHECKPOINT_PREFIX)))


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint of the highest iteration in ``out_dir``, if any."""
    found = _checkpoints(Path(out_dir))
    return found[-1] if found else None


def _save(path: Path, model, optimizer, iteration: int, wall: float, cfg: TrainConfig) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "iteration": iteration, "wall_time_s": wall, "config": dataclasses.asdict(cfg),
             "torch_rng": torch.get_rng_state()}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _transform(cfg: TrainConfig):
    return relabel if cfg.relabel else None


def _distributed() -> tuple[int, int]:
    """(rank, world size), initialising the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train(cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False,
          progress: bool = True, workers: int = 0) -> Path:
    """Train, writing ``metrics.jsonl`` and checkpoints into ``out_dir``; returns the last
    checkpoint. ``resume`` continues from the latest checkpoint there, reproducing the
    uninterrupted run exactly on CPU (same batches, same optimizer state)."""
    out_dir = Path(out_dir)
    rank, world = _distributed()
    device = _device()
    dataset = EventDataset(cfg.data, cfg.dim, cfg.projection, _transform(cfg))
    torch.manual_seed(cfg.seed)
    model = cfg.model()
    model.check_image_size(dataset.spatial_size)
    if cfg.init is not None:
        model.load_state_dict(torch.load(cfg.init, map_location="cpu")["model"])
    model.to(device)
    optimizer = cfg.make_optimizer(model.parameters())
    start, wall = 0, 0.0
    log_path = out_dir / "metrics.jsonl"
    if resume and (ckpt := latest_checkpoint(out_dir)) is not None:
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, wall = state["iteration"], state["wall_time_s"]
        if rank == 0:
            _truncate_log(log_path, start)
    elif rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
        (out_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    weights = None
    if cfg.rare_oversampling != 1.0:
        weights = np.where(dataset.holds_rare_class(), cfg.rare_oversampling, 1.0)
    symmetries = grid_symmetries(cfg.dim) if cfg.augment else 1
    schedule = BatchSchedule(len(dataset), cfg.batch_size, cfg.seed, start, cfg.iterations, rank,
                             world, weights, symmetries)
    use_amp = cfg.amp  # bf16 autocast, on the CPU too: a 128 px step 1.2x faster than fp32
    probe = None
    if cfg.probe_event is not None:
        probe = collate([dataset[cfg.probe_event]], dataset.spatial_size).to(device)
    bar = tqdm(total=cfg.iterations, initial=start, desc="train", disable=not progress or rank)
    with log_path.open("a") if rank == 0 else open(os.devnull, "w") as log:
        for iteration, batch in enumerate(loader(dataset, schedule, workers), start=start + 1):
            t0 = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = cfg.learning_rate_at(iteration)
            batch = batch.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(batch.coords, batch.feats, batch.spatial_size)
            loss = event_loss(logits, batch.labels, batch.coords[:, 0], batch.n_events,
                              cfg.class_weights)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at iteration {iteration}; "
                                         f"resume from the last checkpoint with a lower rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall += time.perf_counter() - t0
            predicted = logits.detach().argmax(1)
            accuracy = (predicted == batch.labels).float().mean().item()
            log.write(json.dumps({"iteration": iteration, "loss": loss.item(),
                                  "nonzero_accuracy": accuracy, "wall_time_s": wall,
                                  "peak_memory_bytes": peak_memory_bytes(device),
                                  "shower_softmax_std": shower_softmax_std(logits, predicted)})
                      + "\n")
            if rank == 0 and probe is not None and iteration in cfg.probe_iterations:
                _save_probe(out_dir / f"probe_{iteration}.npz", model, probe)
            log.flush()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.3f}")
            if rank == 0 and (iteration % cfg.checkpoint_every == 0
                              or iteration == cfg.iterations):
                _save(out_dir / f"{CHECKPOINT_PREFIX}{iteration}.pt", model, optimizer,
                      iteration, wall, cfg)
    bar.close()
    return out_dir / f"{CHECKPOINT_PREFIX}{cfg.iterations}.pt"


def shower_softmax_std(logits: Tensor, predicted: Tensor) -> float:
    """Standard deviation of the shower score over the voxels predicted as shower (NaN when
    none is): how unevenly the network is confident about what it calls shower."""
    shower = predicted == VoxelClass.SHOWER
    if shower.sum() < 2:
        return float("nan")
    return torch.softmax(logits.detach().float()[shower], 1)[:, VoxelClass.SHOWER].std().item()


def _save_probe(path: Path, model: UResNet, probe: Batch) -> None:
    """Softmax scores of the probe event, the network's buffers (BatchNorm running
    statistics) left as they were so that probing does not change the training."""
    buffers = [b.clone() for b in model.buffers()]
    with torch.no_grad():
        probs = torch.softmax(model(probe.coords, probe.feats, probe.spatial_size).float(), 1)
    for saved, b in zip(buffers, model.buffers(), strict=True):
        b.copy_(saved)
    np.savez_compressed(path, coords=probe.coords[:, 1:].cpu().numpy(),
                        energy=probe.feats[:, 0].cpu().numpy(),
                        label=probe.labels.cpu().numpy(), probs=probs.cpu().numpy())


def _truncate_log(path: Path, iteration: int) -> None:
    """Keep the log lines up to ``iteration`` (a run killed after a checkpoint wrote more)."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if json.loads(line)["iteration"] <= iteration]
    path.write_text("".join(line + "\n" for line in kept))


def load_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[UResNet, TrainConfig]:
    """The network of a checkpoint, in eval mode, and its training configuration."""
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    cfg = TrainConfig(**state["config"])
    model = cfg.model()
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def predict(model: UResNet, data: str | os.PathLike, batch_size: int = 4, relabeled: bool = False,
            device: str | torch.device = "cpu") -> Iterator[dict]:
    """Per event of ``data``: ``{"event": Event, "probs": (N, 5), "pred": (N,)}`` (numpy), the
    event's labels relabeled when ``relabeled``."""
    with open_dataset(data, dim=model.dim) as events:
        size = int(events.meta.size_px[0])
        for first in range(0, len(events), batch_size):
            chunk = [events[i] for i in range(first, min(first + batch_size, len(events)))]
            if relabeled:
                for event in chunk:
                    event.label = relabel(event.label, event.prim_ion)
            batch: Batch = collate(chunk, size).to(device)
            with torch.no_grad():
                probs = torch.softmax(model(batch.coords, batch.feats, size).float(), 1)
            index = batch.coords[:, 0].cpu().numpy()
            probs = probs.cpu().numpy()
            for i, event in enumerate(chunk):
                mine = index == i
                yield {"event": event, "probs": probs[mine], "pred": probs[mine].argmax(1)}


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, batch_size: int = 4,
             relabeled: bool = False, device: str | torch.device = "cpu") -> dict:
    """The study's metrics of a trained network on a sample (see :class:`SampleMetrics`)."""
    model, _ = load_model(checkpoint, device)
    metrics = SampleMetrics()
    for event in predict(model, data, batch_size, relabeled, device):
        metrics.update(event["pred"], event["event"].label)
    return metrics.summary()


def read_log(out_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of a run's ``metrics.jsonl`` as arrays."""
    rows = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text()
            .splitlines()]
    return {key: np.array([r[key] for r in rows]) for key in (rows[0] if rows else {})}
