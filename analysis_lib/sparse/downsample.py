"""The kernel map of the stride-2 convolution and of its transpose: each fine site's parent
on the coarser grid, built once per level from a :class:`~analysis_lib.sparse.kmap.SiteSet`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from analysis_lib.sparse.kmap import SiteSet, site_keys

__all__ = ["DownsampleMap", "build_downsample_map"]


@dataclass(frozen=True)
class DownsampleMap:
    """Kernel map of the kernel-2 stride-2 convolution and of its transpose.

    Every fine site ``p`` has exactly one pair: its parent ``floor(p/2)`` and the offset
    given by its parity bits, ``sum_d (p_d mod 2) * 2**(D-1-d)``.

    Attributes
    ----------
    dim : int
        Spatial dimension D; ``V = 2**D`` offsets.
    slot : (N_fine,) int64
        ``parent * V + parity`` of every fine site.
    child : (N_coarse * V,) int64
        Inverse of ``slot``: the fine site in each slot, ``N_fine`` where it is inactive.
    num_coarse : int
        Number of coarse sites.
    """

    dim: int
    slot: Tensor
    child: Tensor
    num_coarse: int

    @property
    def volume(self) -> int:
        """Number of kernel offsets V = 2**D."""
        return 2**self.dim

    @property
    def num_pairs(self) -> int:
        """Number of (fine, coarse) pairs = number of fine sites."""
        return self.slot.shape[0]

    def pairs(self, k: int) -> tuple[Tensor, Tensor]:
        """(fine_idx, coarse_idx) of offset ``k``, each (P_k,) int64."""
        fine_idx = (self.slot % self.volume == k).nonzero().squeeze(1)
        return fine_idx, self.slot[fine_idx] // self.volume


def build_downsample_map(sites: SiteSet) -> tuple[DownsampleMap, SiteSet]:
    """Coarse sites ``unique(floor(p/2))`` (sorted) and the fine-to-coarse map.

    Parameters
    ----------
    sites : SiteSet
        Fine sites.

    Returns
    -------
    kmap : DownsampleMap
    coarse : SiteSet
        Coarse sites in lexicographic order.
    """
    dim = sites.dim
    coords = sites.coords
    parent = coords.clone()
    parent[:, 1:] = coords[:, 1:] >> 1
    bits = coords[:, 1:] & 1
    weights = torch.tensor([2 ** (dim - 1 - d) for d in range(dim)], device=coords.device)
    parity = (bits * weights).sum(dim=1)
    extent = (sites.extent[0],) + tuple((e + 1) // 2 for e in sites.extent[1:])
    keys = site_keys(parent, extent)
    unique_keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    coarse = torch.empty((unique_keys.shape[0], dim + 1), dtype=torch.int64, device=coords.device)
    rest = unique_keys
    for d in range(dim, 0, -1):
        coarse[:, d] = rest % extent[d]
        rest = rest // extent[d]
    coarse[:, 0] = rest
    slot = inverse * (2**dim) + parity
    n_fine = coords.shape[0]
    child = torch.full((coarse.shape[0] * 2**dim,), n_fine, dtype=torch.int64, device=coords.device)
    child[slot] = torch.arange(n_fine, device=coords.device)
    coarse_sites = SiteSet(coarse, None, extent if coarse.shape[0] else (0,) * (dim + 1))
    return DownsampleMap(dim, slot, child, coarse.shape[0]), coarse_sites
