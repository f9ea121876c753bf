"""Training of the U-ResNet (its inference is in :mod:`analysis_lib.evaluation.inference`).

Adam on the study's loss (softmax cross-entropy averaged per event over its nonzero voxels, then
over the events of the batch), optional per-event class weights, checkpoints that resume exactly,
a JSON-lines log, bf16 autocast (CPU and CUDA) and data-parallel training with ``torchrun``.
"""

import contextlib
import dataclasses
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn import functional
from tqdm import tqdm

from analysis_lib.core.errors import ConfigError, TrainingError
from analysis_lib.core.files import (
    file_sha256,
    folder_lock,
    storage_error,
    write_text,
)
from analysis_lib.data.relabel import relabel
from analysis_lib.models import UResNet
from analysis_lib.training import checkpoints
from analysis_lib.training.batching import (
    Batch,
    BatchSchedule,
    EventDataset,
    collate,
    grid_symmetries,
    loader,
)
from analysis_lib.training.config import TrainConfig
from analysis_lib.training.monitor import shower_score_spread


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


def bf16_autocast(requested: bool, device: torch.device, backend: str = "sparse") -> bool:
    """Whether a training asking for bf16 autocast gets it on ``device``: always on a GPU; on a
    CPU only where it multiplies bf16 natively (AVX-512 BF16 or AMX), and for the sparse
    backend only where the engine's fp32 C kernels are not available. Elsewhere oneDNN emulates
    bf16 matmuls far below fp32 speed (an AVX2 EPYC: 2.3 GFLOP/s against 45 in fp32 at the
    network's shapes, a training step 10x slower). The sparse network trains in fp32 where the
    C kernels serve it even on a CPU with AVX-512 BF16, whose bf16 kernels ``torch.autocast``
    reaches: ``benchmarks/train_step.py --dtype bf16`` measures what a whole step gains."""
    if not requested or device.type != "cpu":
        return requested
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return False
    # imported here: benchmarks/time_to_accuracy.py runs this module, in fp32, over a pinned
    # engine that has no C kernels
    from analysis_lib.sparse import native

    return backend != "sparse" or not native.planned()


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
    """(rank, world size), initialising the process group when torchrun started this process,
    also as its only process (how one GPU checks the nccl path), or several processes."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if (world > 1 or "TORCHELASTIC_RUN_ID" in os.environ) and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


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
    net = torch.nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    weights = None
    if cfg.rare_oversampling != 1.0:
        weights = np.where(dataset.holds_rare_class(), cfg.rare_oversampling, 1.0)
    symmetries = grid_symmetries(cfg.dim) if cfg.augment else 1
    schedule = BatchSchedule(len(dataset), cfg.batch_size, cfg.seed, start, cfg.iterations, rank,
                             world, weights, symmetries)
    use_amp = bf16_autocast(cfg.amp, device, cfg.backend)
    probe = None
    if cfg.probe_event is not None:
        probe = collate([dataset[cfg.probe_event]], dataset.spatial_size).to(device)
    bar = tqdm(total=cfg.iterations, initial=start, desc="train", disable=not progress or rank)
    with bar, open(log_path if rank == 0 else os.devnull, "ab", buffering=0) as log:
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
            checkpoints.append_row(log.fileno(), {
                "iteration": iteration, "loss": loss.item(), "nonzero_accuracy": accuracy,
                "wall_time_s": wall, "peak_memory_bytes": peak_memory_bytes(device),
                "shower_softmax_std": _shower_spread(logits, predicted)}, log_path)
            if rank == 0 and probe is not None and iteration in cfg.probe_iterations:
                _save_probe(out_dir / f"probe_{iteration}.npz", model, probe)
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.3f}")
            if rank == 0 and (iteration % cfg.checkpoint_every == 0
                              or iteration == cfg.iterations):
                checkpoints.save(out_dir / f"{checkpoints.PREFIX}{iteration}.pt",
                                 _state(model, optimizer, iteration, wall, cfg, data_sha256))
    return out_dir / f"{checkpoints.PREFIX}{cfg.iterations}.pt"


def _shower_spread(logits: Tensor, predicted: Tensor) -> float:
    """:func:`~analysis_lib.training.monitor.shower_score_spread` of a training batch."""
    probs = torch.softmax(logits.detach().float(), 1).cpu().numpy()
    return shower_score_spread(probs, predicted.cpu().numpy())


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
