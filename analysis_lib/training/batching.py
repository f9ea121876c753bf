"""Events → torch batches: a map-style dataset over a larcv3 file, a deterministic batch
sampler that a resumed or distributed run can reproduce, and the collate function."""

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from analysis_lib.core.errors import ConfigError
from analysis_lib.core.labels import VoxelClass
from analysis_lib.data import Event, open_dataset

#: Bytes of decoded events an :class:`EventDataset` keeps in memory (the ci profile's largest
#: training set takes 166 MiB; a larger set is read from the file past this).
EVENT_CACHE_BYTES = 512 * 2**20

#: (label, prim_ion) → label: a relabeling applied to every event before batching.
LabelTransform = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


@dataclass
class Batch:
    """Voxels of several events, batch index first in ``coords``.

    Attributes
    ----------
    coords : (N, 1+D) int64
    feats : (N, 1) float32, the deposited energy (MeV)
    labels : (N,) int64, or None when an event has no labels (inference on real data)
    spatial_size : voxels per side of the images
    n_events : number of events (batch entries)
    """

    coords: Tensor
    feats: Tensor
    labels: Tensor | None
    spatial_size: int
    n_events: int

    def to(self, device: torch.device | str) -> "Batch":
        """The batch on ``device``."""
        labels = None if self.labels is None else self.labels.to(device)
        return Batch(self.coords.to(device), self.feats.to(device), labels, self.spatial_size,
                     self.n_events)


def grid_symmetries(dim: int) -> int:
    """Number of symmetries of a square (D = 2: 8) or cubic (D = 3: 48) voxel grid."""
    return math.factorial(dim) * 2**dim


def apply_symmetry(coords: np.ndarray, code: int, size: int) -> np.ndarray:
    """Voxel indices ``coords`` (N, D) under symmetry ``code`` of a grid of ``size`` voxels a
    side: the axes permuted by permutation ``code >> D`` (in ``itertools.permutations``
    order), then axis ``d`` mirrored where bit ``d`` of ``code`` is set. Code 0 is the
    identity; every code maps the grid onto itself and keeps the distances between voxels.
    """
    dim = coords.shape[1]
    if not 0 <= code < grid_symmetries(dim):
        raise ConfigError(f"symmetry code {code} is not in [0, {grid_symmetries(dim)})")
    permutation = list(itertools.permutations(range(dim)))[code >> dim]
    out = coords[:, permutation].copy()
    for axis in range(dim):
        if code >> axis & 1:
            out[:, axis] = size - 1 - out[:, axis]
    return out


class EventDataset(torch.utils.data.Dataset):
    """Labelled events of one larcv3 file, optionally relabeled; each worker process reopens
    the file lazily (the underlying dataset pickles without its handle).

    An item is an event index, or ``(index, code)``: the event turned by grid symmetry
    ``code`` (:func:`apply_symmetry`), as an augmenting :class:`BatchSchedule` draws them.
    """

    def __init__(self, path: str, dim: int = 3, projection: int = 0,
                 transform: LabelTransform | None = None) -> None:
        self.path, self.transform = path, transform
        self._events = open_dataset(path, dim=dim, projection=projection, truth=False)
        self.spatial_size = int(self._events.meta.size_px[0])
        self._cache: dict[int, Event] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, item: int | tuple[int, int]) -> Event:
        index, code = item if isinstance(item, tuple) else (item, 0)
        event = self._labelled(index)
        if code:
            return dataclasses.replace(
                event, coords=apply_symmetry(event.coords, code, self.spatial_size))
        return dataclasses.replace(event)

    def _labelled(self, index: int) -> Event:
        """Event ``index`` with its (transformed) labels, kept in memory up to
        :data:`EVENT_CACHE_BYTES`: a training draws each event many times, and reading one back
        from the file, even from HDF5's chunk cache, took a millisecond (3-4 % of a batch-16
        step of the ci profile's main network). Every draw shares a kept event's arrays, so
        they are read-only."""
        event = self._cache.get(index)
        if event is not None:
            return event
        event = self._events[index]
        if event.label is None:
            raise ConfigError(f"{self.path}: event {index} has no labels; training needs them")
        if self.transform is not None:
            event.label = self.transform(event.label, event.prim_ion)
        arrays = [a for a in (event.coords, event.energy, event.label, event.prim_ion,
                              event.particle_index) if a is not None]
        size = sum(a.nbytes for a in arrays)
        if self._cached_bytes + size <= EVENT_CACHE_BYTES:
            for a in arrays:  # every draw shares them: a write in place must fail, not spread
                a.flags.writeable = False
            self._cache[index] = event
            self._cached_bytes += size
        return event

    def holds_rare_class(self) -> np.ndarray:
        """Per event, whether it holds a delta-ray or Michel voxel (after the transform)."""
        rare = (VoxelClass.DELTA, VoxelClass.MICHEL)
        return np.array([np.isin(self[i].label, rare).any() for i in range(len(self))])


def collate(events: Sequence[Event], spatial_size: int) -> Batch:
    """Stack events into one :class:`Batch` (event ``i`` gets batch index ``i``)."""
    coords = [np.column_stack([np.full(len(e.coords), i), e.coords]) for i, e in
              enumerate(events)]
    return Batch(
        coords=torch.from_numpy(np.concatenate(coords).astype(np.int64)),
        feats=torch.from_numpy(np.concatenate([e.energy for e in events])[:, None]
                               .astype(np.float32)),
        labels=None if any(e.label is None for e in events) else torch.from_numpy(
            np.concatenate([e.label for e in events]).astype(np.int64)),
        spatial_size=spatial_size,
        n_events=len(events),
    )


def first_events(path: str, n_events: int, dim: int = 3, projection: int = 0) -> Batch:
    """A batch of the first ``n_events`` events of a file (cycling when it has fewer), for
    resource measurements."""
    with open_dataset(path, dim=dim, projection=projection) as events:
        if len(events) == 0:
            raise ConfigError(f"{path} has no events")
        chosen = [events[i % len(events)] for i in range(n_events)]
        return collate(chosen, int(events.meta.size_px[0]))


class BatchSchedule(torch.utils.data.Sampler):
    """Event indices of each iteration, a pure function of (seed, iteration, rank).

    Iteration ``i`` of epoch ``e = i // batches_per_epoch`` takes the next ``batch_size *
    world_size`` events of the permutation drawn from ``(seed, e)``; rank ``r`` gets its
    ``batch_size`` slice. A run resumed at iteration ``start`` therefore sees exactly the
    batches an uninterrupted run would, and the ranks of a distributed run together see the
    batch a single process would.

    With ``weights`` (one per event), each epoch draws its ``n_events`` events with
    replacement in proportion to them instead of permuting them, still from ``(seed, e)``.
    With ``symmetries`` above 1, each draw is ``(index, code)`` with a grid-symmetry code in
    ``[0, symmetries)`` drawn per place of the epoch's order (so also a pure function of
    ``(seed, e)``).
    """

    def __init__(self, n_events: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1, weights: np.ndarray | None = None,
                 symmetries: int = 1) -> None:
        global_batch = batch_size * world_size
        if n_events < global_batch:
            raise ConfigError(f"the data set has {n_events} events, fewer than one global "
                              f"batch ({batch_size} x {world_size} processes)")
        self.n_events, self.batch_size, self.seed = n_events, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self.per_epoch = n_events // global_batch
        self.symmetries = symmetries
        self.p = None
        if weights is not None:
            weights = np.asarray(weights, dtype=float)
            if weights.shape != (n_events,) or not (weights >= 0).all() or weights.sum() <= 0:
                raise ConfigError(f"weights must be {n_events} non-negative numbers, not all 0")
            self.p = weights / weights.sum()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def indices(self, iteration: int) -> list[int] | list[tuple[int, int]]:
        """This rank's event indices at ``iteration`` (with symmetry codes, if drawn)."""
        epoch, step = divmod(iteration, self.per_epoch)
        rng = np.random.default_rng([self.seed, epoch])
        order = (rng.permutation(self.n_events) if self.p is None
                 else rng.choice(self.n_events, self.n_events, p=self.p))
        first = (step * self.world_size + self.rank) * self.batch_size
        chosen = order[first:first + self.batch_size].tolist()
        if self.symmetries == 1:
            return chosen
        codes = np.random.default_rng([self.seed, epoch, 1]).integers(self.symmetries,
                                                                      size=self.n_events)
        return list(zip(chosen, codes[first:first + self.batch_size].tolist(), strict=True))

    def __iter__(self) -> Iterator[list[int] | list[tuple[int, int]]]:
        for iteration in range(self.start, self.stop):
            yield self.indices(iteration)


def loader(dataset: EventDataset, schedule: BatchSchedule, workers: int = 0
           ) -> torch.utils.data.DataLoader:
    """A DataLoader that yields :class:`Batch` objects in the schedule's order."""
    size = dataset.spatial_size
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=schedule, num_workers=workers,
        collate_fn=partial(collate, spatial_size=size), persistent_workers=False,
    )
