"""Neighbour search: site keys, kernel offsets and the kernel maps of each op.

Every function here is pure: it takes coordinates (or a :class:`SiteSet`) and returns a
small frozen dataclass of index tensors.  Sites are encoded as int64 keys and sorted once.
On the CPU the neighbours of each offset come from one linear merge of the sorted keys with
the same keys shifted by the offset (compiled with numba); on other devices from
``torch.searchsorted``.  Both give the same map.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from numba import njit
from torch import Tensor

from analysis_lib.core.errors import ConfigError, EngineError
from analysis_lib.sparse import native

__all__ = [
    "NeighbourMap",
    "SiteSet",
    "build_neighbour_map",
    "kernel_offsets",
    "make_site_set",
    "site_keys",
]

_KEY_LIMIT = 2**62


def kernel_offsets(kernel_size: int, dim: int) -> Tensor:
    """Offsets of an odd cubic kernel in SparseConvNet order.

    Parameters
    ----------
    kernel_size : int
        Odd edge length ``k`` of the kernel.
    dim : int
        Number of spatial dimensions ``D`` (2 or 3).

    Returns
    -------
    offsets : (k**D, D) int64
        Row-major enumeration of ``(-(k//2) .. k//2)**D``, last axis fastest; row ``i``
        belongs to weight slice ``weight[i]``.  Row ``k**D - 1 - i`` is ``-offsets[i]``.
    """
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
    if dim not in (2, 3):
        raise ConfigError(f"dim must be 2 or 3, got {dim!r}")
    r = kernel_size // 2
    axis = torch.arange(-r, r + 1, dtype=torch.int64)
    grids = torch.meshgrid([axis] * dim, indexing="ij")
    return torch.stack(grids, dim=-1).reshape(-1, dim)


@dataclass(frozen=True)
class SiteSet:
    """The active sites of one resolution, with what the neighbour search needs.

    Attributes
    ----------
    coords : (N, 1+D) int64
        Batch index first, then the spatial coordinates at this resolution.
    order : (N,) int64 or None
        Permutation that sorts ``coords`` lexicographically; None when already sorted.
    extent : tuple of int
        Exclusive upper bound of each column of ``coords`` (batch size first).
    """

    coords: Tensor
    order: Tensor | None
    extent: tuple[int, ...]

    @property
    def num_sites(self) -> int:
        """Number of active sites N."""
        return self.coords.shape[0]

    @property
    def dim(self) -> int:
        """Number of spatial dimensions D."""
        return self.coords.shape[1] - 1

    def sorted_coords(self) -> Tensor:
        """Coordinates in lexicographic order, (N, 1+D) int64."""
        return self.coords if self.order is None else self.coords[self.order]


def site_keys(coords: Tensor, extent: tuple[int, ...], pad: int = 0) -> Tensor:
    """Encode sites as int64 keys that sort like the coordinates.

    Parameters
    ----------
    coords : (N, 1+D) int64
        Non-negative coordinates, batch index first.
    extent : tuple of int
        Exclusive upper bound of each column.
    pad : int
        Margin added on both sides of every spatial axis, so that ``key + delta`` of an
        offset up to ``pad`` never wraps into another row.

    Returns
    -------
    keys : (N,) int64
    """
    sizes = _key_sizes(extent, pad)
    keys = coords[:, 0].clone()
    for d in range(1, coords.shape[1]):
        keys.mul_(sizes[d]).add_(coords[:, d] + pad)
    return keys


def _key_sizes(extent: tuple[int, ...], pad: int) -> list[int]:
    """Per-column radix of the key encoding; refuses encodings that overflow int64."""
    sizes = [extent[0]] + [e + 2 * pad for e in extent[1:]]
    total = 1
    for s in sizes:
        total *= max(s, 1)
    if total >= _KEY_LIMIT:
        raise EngineError(f"coordinate extent {extent} too large for int64 site keys")
    return sizes


def _key_strides(extent: tuple[int, ...], pad: int) -> list[int]:
    """Key increment of a unit step along each spatial axis."""
    sizes = _key_sizes(extent, pad)
    strides = []
    step = 1
    for s in reversed(sizes[1:]):
        strides.append(step)
        step *= s
    return strides[::-1]


def make_site_set(coords: Tensor, *, check_unique: bool, is_sorted: bool = False) -> SiteSet:
    """Sort the sites once and (optionally) reject duplicates.

    Parameters
    ----------
    coords : (N, 1+D) int64
        Non-negative coordinates, batch index first.
    check_unique : bool
        Raise :class:`EngineError` if a site occurs twice (user data only).
    is_sorted : bool
        The caller guarantees lexicographic order (engine output); skips the sort.
    """
    n = coords.shape[0]
    if n == 0:
        return SiteSet(coords, None, (0,) + (0,) * (coords.shape[1] - 1))
    extent = tuple(int(v) + 1 for v in coords.amax(dim=0).tolist())
    if is_sorted:
        return SiteSet(coords, None, extent)
    keys = site_keys(coords, extent)
    sorted_keys, order = torch.sort(keys, stable=True)
    if check_unique and n > 1:
        dup = (sorted_keys[1:] == sorted_keys[:-1]).nonzero()
        if dup.numel() > 0:
            row = int(order[int(dup[0, 0]) + 1])
            raise EngineError(
                f"coords has duplicate site {coords[row].tolist()} (row {row}); "
                "every site must occur once"
            )
    if bool((order[1:] > order[:-1]).all()):
        order = None
    return SiteSet(coords, order, extent)


@dataclass(frozen=True)
class NeighbourMap:
    """Kernel map of a submanifold convolution (output sites = input sites).

    Attributes
    ----------
    kernel_size, dim : int
        Odd kernel edge and spatial dimension; ``K = kernel_size**dim`` offsets.
    order : (N,) int64 or None
        Permutation to lexicographic order of the sites; ``columns`` indexes sites in that
        order, which keeps the gathers local.  None when the sites are already sorted.
    inverse : (N,) int64 or None
        Inverse permutation of ``order``: row ``i`` of the sites is sorted row
        ``inverse[i]``.
    columns : (N, K) int64
        ``columns[j, k]`` is the (sorted) input site at ``out j + offsets[k]``, or ``N``
        where that site is inactive (index of a zero row appended to the features): row
        ``j`` read flat gathers row ``j`` of an im2col matrix.
    counts : tuple of K ints
        Number of (in, out) pairs of each offset.
    """

    kernel_size: int
    dim: int
    order: Tensor | None
    inverse: Tensor | None
    columns: Tensor
    counts: tuple[int, ...]

    @property
    def num_sites(self) -> int:
        """Number of sites N (input = output)."""
        return self.columns.shape[0]

    @property
    def num_pairs(self) -> int:
        """Total number of (in, out) pairs over all offsets."""
        return sum(self.counts)

    @cached_property
    def pair_lists(self) -> native.PairLists:
        """The present pairs by offset, in sorted row order, for the C kernels (built on first
        use and kept: every convolution of a level shares the map, forward and backward)."""
        return native.pair_lists(self.columns)

    def pairs(self, k: int) -> tuple[Tensor, Tensor]:
        """(in_idx, out_idx) of offset ``k`` in the sites' own row order.

        Both (P_k,) int64, ``coords[in_idx] = coords[out_idx] + offsets[k]``.
        """
        out_idx = (self.columns[:, k] != self.num_sites).nonzero().squeeze(1)
        in_idx = self.columns[out_idx, k]
        if self.order is None:
            return in_idx, out_idx
        return self.order[in_idx], self.order[out_idx]


@njit(cache=True)
def _merge_neighbours(keys, deltas, columns, counts):
    """Fill the first-half offsets of ``columns`` (N, K) and their mirrors: ``keys`` sorted,
    ``deltas`` the (negative) key shifts of offsets 0..K/2-1; ``counts[k]`` gets the pairs
    of offset k.  The shifted keys are sorted too, so one pointer walks each offset."""
    n = keys.shape[0]
    last = columns.shape[1] - 1
    for k in range(deltas.shape[0]):
        i = 0
        found = 0
        for j in range(n):
            target = keys[j] + deltas[k]
            while i < n and keys[i] < target:
                i += 1
            if i < n and keys[i] == target:
                columns[j, k] = i
                columns[i, last - k] = j
                found += 1
        counts[k] = found


def load_compiled() -> None:
    """Load (or compile) the engine's compiled code now: the CPU merge of
    :func:`build_neighbour_map` (its machine code and numba's compiler take about 80 MB on
    first use) and the C kernels of :mod:`~analysis_lib.sparse.native`. A process that measures
    a network's memory loads them before its baseline, as it has loaded torch's libraries."""
    native.usable(torch.zeros(1))
    _merge_neighbours(np.zeros(2, dtype=np.int64), np.zeros(1, dtype=np.int64),
                      np.zeros((2, 3), dtype=np.int64), np.zeros(1, dtype=np.int64))


def _neighbours_by_merge(keys: Tensor, offsets: Tensor, strides: Tensor, kernel_size: int,
                         columns: Tensor) -> np.ndarray:
    """Fill ``columns`` (CPU) with :func:`_merge_neighbours`; returns the first half's counts."""
    centre = columns.shape[1] // 2
    deltas = (offsets[:centre] * strides).sum(dim=1)
    counts = np.zeros(centre, dtype=np.int64)
    _merge_neighbours(keys.numpy(), deltas.numpy(), columns.numpy(), counts)
    return counts


def _neighbours_by_search(keys: Tensor, offsets: Tensor, strides: Tensor, kernel_size: int,
                          columns: Tensor) -> np.ndarray:
    """:func:`_neighbours_by_merge` with ``torch.searchsorted`` (any device).

    The offsets come in runs of kernel_size along the last axis, whose keys are consecutive
    integers: one binary search finds the first of a run, and the search position of each
    next key moves by one where the previous one was found.
    """
    n, n_off = columns.shape
    centre = n_off // 2
    device = keys.device
    groups = -(-centre // kernel_size)
    deltas = (offsets[: groups * kernel_size : kernel_size] * strides).sum(dim=1)
    first = keys.unsqueeze(0) + deltas.to(device).unsqueeze(1)
    pos = torch.searchsorted(keys, first)
    found_run, pos_run = [], []
    for step in range(kernel_size):
        at = pos.clamp(max=n - 1)
        hit = keys[at] == first + step
        found_run.append(hit)
        pos_run.append(at)
        pos = pos + hit
    found = torch.stack(found_run, dim=1).view(-1, n)[:centre]
    pos = torch.stack(pos_run, dim=1).view(-1, n)[:centre]
    columns[:, :centre] = torch.where(found, pos, n).t()
    k_idx, j_idx = found.nonzero(as_tuple=True)
    columns[pos[k_idx, j_idx], n_off - 1 - k_idx] = j_idx
    return found.sum(dim=1).cpu().numpy()


def build_neighbour_map(sites: SiteSet, kernel_size: int) -> NeighbourMap:
    """Find the neighbours of every site within an odd cubic kernel.

    Only the first half of the offsets is searched: the pairs of offset ``-o`` are the
    swapped pairs of ``+o``.

    Parameters
    ----------
    sites : SiteSet
        The sites, which are both the input and the output of the convolution.
    kernel_size : int
        Odd kernel edge.
    """
    offsets = kernel_offsets(kernel_size, sites.dim)
    n_off = offsets.shape[0]
    centre = n_off // 2
    n = sites.num_sites
    device = sites.coords.device
    columns = torch.full((n, n_off), n, dtype=torch.int64, device=device)
    columns[:, centre] = torch.arange(n, device=device)
    counts = [0] * n_off
    counts[centre] = n
    if n > 1 and n_off > 1:
        pad = kernel_size // 2
        keys = site_keys(sites.sorted_coords(), sites.extent, pad)
        strides = torch.tensor(_key_strides(sites.extent, pad), dtype=torch.int64)
        search = _neighbours_by_merge if device.type == "cpu" else _neighbours_by_search
        half = search(keys, offsets, strides, kernel_size, columns)
        for k, c in enumerate(half.tolist()):
            counts[k] = counts[n_off - 1 - k] = int(c)
    inverse = None
    if sites.order is not None:
        inverse = torch.empty_like(sites.order)
        inverse[sites.order] = torch.arange(n, device=device)
    return NeighbourMap(kernel_size, sites.dim, sites.order, inverse, columns, tuple(counts))
