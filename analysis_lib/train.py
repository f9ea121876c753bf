"""Training of the U-ResNet (its inference is in :mod:`analysis_lib.inference`).

Adam on the study's loss (softmax cross-entropy averaged per event over its nonzero voxels, then
over the events of the batch), optional per-event class weights, checkpoints that resume exactly,
a JSON-lines log, bf16 autocast (CPU and CUDA) and data-parallel training with ``torchrun``.
"""

import contextlib
import dataclasses
import json
import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn import functional
from tqdm import tqdm

from analysis_lib import checkpoints
from analysis_lib.batching import (
    Batch,
    BatchSchedule,
    EventDataset,
    collate,
    grid_symmetries,
    loader,
)
from analysis_lib.data.relabel import relabel
from analysis_lib.errors import ConfigError, TrainingError
from analysis_lib.files import (
    file_sha256,
    folder_lock,
    storage_error,
    write_text,
)
from analysis_lib.labels import VoxelClass
from analysis_lib.models import UResNet

SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("adam", "adamw")


_INT_FIELDS = ("dim", "projection", "depth", "filters", "reps", "batch_size", "iterations",
               "checkpoint_every", "seed")
_FLOAT_FIELDS = ("learning_rate", "decay_from", "warmup", "weight_decay", "rare_oversampling")


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
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name}={value!r} must be a whole number")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ConfigError(f"{name}={value!r} must be a finite number")
        for name in ("batch_size", "iterations", "checkpoint_every", "depth", "filters", "reps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be >= 0")
        if self.dim not in (2, 3) or self.projection not in (0, 1, 2):
            raise ConfigError(f"dim={self.dim}, projection={self.projection}: dim is 2 or 3, "
                              f"projection 0, 1 or 2")
        if not 0 < self.learning_rate <= 1:
            raise ConfigError(f"learning_rate={self.learning_rate} must be in (0, 1] (the "
                              f"study's Adam used 1e-3)")
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


def default_device() -> torch.device:
    """Where training (and, by default, evaluation) runs: this process's GPU if there is one."""
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


def _state(model, optimizer, iteration: int, wall: float, cfg: TrainConfig,
           data_sha256: str) -> dict:
    """A checkpoint's content; refused when a weight or statistic is not finite, so that the
    last checkpoint written is always one to go back to."""
    weights = model.state_dict()
    bad = [name for name, t in weights.items() if t.is_floating_point() and
           not torch.isfinite(t).all()]
    if bad:
        raise TrainingError(f"training diverged before iteration {iteration}: {bad[0]} is not "
                            f"finite; nothing was saved")
    return {"model": weights, "optimizer": optimizer.state_dict(), "iteration": iteration,
            "wall_time_s": wall, "config": dataclasses.asdict(cfg),
            "data_sha256": data_sha256, "torch_rng": torch.get_rng_state()}


def _diverged(what: str, iteration: int, out_dir: Path) -> TrainingError:
    """The one-line error of a non-finite loss or gradient, naming the last good checkpoint."""
    last = checkpoints.latest_checkpoint(out_dir)
    where = (f"the last good checkpoint is {last}: start a new run from its weights with "
             f"--init and a lower --lr" if last else "no checkpoint was written yet: train "
             "again with a lower --lr")
    return TrainingError(f"training diverged at iteration {iteration}: the {what} is not "
                         f"finite, so no step was taken; {where}")


def _start_folder(out_dir: Path, cfg: TrainConfig, overwrite: bool) -> None:
    """Prepare a run folder for a new run: one holding another run's checkpoints is refused
    unless ``overwrite``, which removes them, its probes and its log."""
    old = checkpoints.checkpoints(out_dir)
    if old and not overwrite:
        raise TrainingError(f"{out_dir} holds the checkpoints of a run (up to {old[-1].name}); "
                            f"pass --resume to continue it or --overwrite to start over")
    try:
        for path in [*old, *out_dir.glob("probe_*.npz")]:
            path.unlink()
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(err, out_dir) from None
    write_text(out_dir / checkpoints.LOG_NAME, "")
    write_text(out_dir / "config.json", json.dumps(dataclasses.asdict(cfg), indent=1))


def _transform(cfg: TrainConfig):
    return relabel if cfg.relabel else None


def _distributed() -> tuple[int, int]:
    """(rank, world size), initialising the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train(cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False,
          progress: bool = True, workers: int = 0, overwrite: bool = False) -> Path:
    """Train, writing ``metrics.jsonl`` and checkpoints into ``out_dir``; returns the last
    checkpoint. ``resume`` continues from the newest readable checkpoint there, reproducing
    the uninterrupted run exactly on CPU (same batches, same optimizer state), and refuses a
    checkpoint of another configuration or data. A non-finite loss or gradient stops the run
    before its step is applied (:class:`TrainingError`); no checkpoint holds non-finite
    weights. The run folder is locked while training runs: a second training into it is
    refused."""
    out_dir = Path(out_dir)
    if workers < 0:
        raise ConfigError(f"workers={workers} must be >= 0 (0: load batches in this process)")
    rank, world = _distributed()
    with folder_lock(out_dir) if rank == 0 else contextlib.nullcontext():
        return _train(cfg, out_dir, resume, progress, workers, overwrite, rank, world)


def _train(cfg: TrainConfig, out_dir: Path, resume: bool, progress: bool, workers: int,
           overwrite: bool, rank: int, world: int) -> Path:
    device = default_device()
    dataset = EventDataset(cfg.data, cfg.dim, cfg.projection, _transform(cfg))
    torch.manual_seed(cfg.seed)
    model = cfg.model()
    model.check_image_size(dataset.spatial_size)
    if cfg.init is not None:
        model.load_state_dict(checkpoints.load(cfg.init)["model"])
    model.to(device)
    optimizer = cfg.make_optimizer(model.parameters())
    data_sha256 = file_sha256(cfg.data)
    start, wall = 0, 0.0
    log_path = out_dir / checkpoints.LOG_NAME
    if resume and (found := checkpoints.load_latest(out_dir, device)) is not None:
        _, state = found
        checkpoints.check_same_run(TrainConfig(**state["config"]), state.get("data_sha256"),
                                   cfg, data_sha256, state["iteration"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, wall = state["iteration"], state["wall_time_s"]
        if rank == 0:
            checkpoints.truncate_log(out_dir, start)
    elif rank == 0:
        _start_folder(out_dir, cfg, overwrite)
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
                raise _diverged("loss", iteration, out_dir)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
                raise _diverged("gradient", iteration, out_dir)
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
                checkpoints.save(out_dir / f"{checkpoints.PREFIX}{iteration}.pt",
                                 _state(model, optimizer, iteration, wall, cfg, data_sha256))
    bar.close()
    return out_dir / f"{checkpoints.PREFIX}{cfg.iterations}.pt"


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


def read_log(out_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of a run's ``metrics.jsonl`` as arrays."""
    rows = checkpoints.log_rows(out_dir)
    return {key: np.array([r[key] for r in rows]) for key in (rows[0] if rows else {})}
