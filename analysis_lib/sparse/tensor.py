"""Sparse tensors and the coordinate cache shared by all tensors of one input batch."""

from __future__ import annotations

import torch
from torch import Tensor

from analysis_lib.core.errors import EngineError
from analysis_lib.sparse.downsample import DownsampleMap, build_downsample_map
from analysis_lib.sparse.kmap import (
    NeighbourMap,
    SiteSet,
    build_neighbour_map,
    make_site_set,
)

__all__ = ["CoordinateCache", "SparseTensor", "check_coords"]


class CoordinateCache:
    """Site sets and kernel maps of one input batch, built once and shared.

    Every tensor derived from the same input through the network holds the same cache,
    so a kernel map is built the first time a layer needs it at a resolution and reused
    by every later layer there.

    Parameters
    ----------
    sites : SiteSet
        Sites of the input tensor.
    stride : int
        Tensor stride of the input relative to the input grid.

    Attributes
    ----------
    builds : int
        Number of kernel maps built so far (neighbour and downsample maps).
    """

    def __init__(self, sites: SiteSet, stride: int = 1) -> None:
        self.dim = sites.dim
        self.builds = 0
        self._sites: dict[int, SiteSet] = {stride: sites}
        self._neighbour: dict[tuple[int, int], NeighbourMap] = {}
        self._down: dict[int, DownsampleMap] = {}

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides whose site sets are known, ascending."""
        return tuple(sorted(self._sites))

    def sites(self, stride: int) -> SiteSet:
        """Site set at ``stride``; raises :class:`EngineError` if none was made."""
        try:
            return self._sites[stride]
        except KeyError:
            raise EngineError(
                f"no site set at stride {stride} in this cache (known: {self.strides})"
            ) from None

    def neighbour_map(self, stride: int, kernel_size: int) -> NeighbourMap:
        """Submanifold kernel map at ``stride``, built on first use."""
        key = (stride, kernel_size)
        kmap = self._neighbour.get(key)
        if kmap is None:
            kmap = build_neighbour_map(self.sites(stride), kernel_size)
            self._neighbour[key] = kmap
            self.builds += 1
        return kmap

    def downsample_map(self, stride: int) -> DownsampleMap:
        """Map from the sites at ``stride`` to those at ``2 * stride``, built on first use.

        Building it also records the coarse site set at ``2 * stride``.
        """
        kmap = self._down.get(stride)
        if kmap is None:
            kmap, coarse = build_downsample_map(self.sites(stride))
            self._down[stride] = kmap
            self._sites.setdefault(2 * stride, coarse)
            self.builds += 1
        return kmap

    def __repr__(self) -> str:
        return f"CoordinateCache(dim={self.dim}, strides={self.strides}, builds={self.builds})"


class SparseTensor:
    """Features on a sparse set of sites of a 2D or 3D grid.

    Parameters
    ----------
    coords : (N, 1+D) int32 or int64
        Batch index first, then the D spatial coordinates at this tensor's resolution;
        non-negative, each site once, D = 2 or 3.
    feats : (N, C) floating
        One feature row per site, on the same device as ``coords``.
    stride : int
        Tensor stride relative to the input grid (a power of two).

    Notes
    -----
    The constructor validates user data and starts a new :class:`CoordinateCache`.
    Tensors produced by the engine share their input's cache and skip validation.
    """

    __slots__ = ("cache", "coords", "feats", "stride")

    def __init__(self, coords: Tensor, feats: Tensor, stride: int = 1) -> None:
        coords = check_coords(coords)
        _check_feats(feats, coords)
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
            raise EngineError(f"stride must be a positive int, got {stride!r}")
        self.coords = coords
        self.feats = feats
        self.stride = stride
        self.cache = CoordinateCache(make_site_set(coords, check_unique=True), stride)

    @classmethod
    def derived(cls, feats: Tensor, stride: int, cache: CoordinateCache) -> SparseTensor:
        """Engine fast path: a tensor on the cached site set at ``stride``, unvalidated.

        Parameters
        ----------
        feats : (N, C)
            Features in the row order of ``cache.sites(stride).coords``.
        stride : int
        cache : CoordinateCache
        """
        out = cls.__new__(cls)
        out.coords = cache.sites(stride).coords
        out.feats = feats
        out.stride = stride
        out.cache = cache
        return out

    def with_feats(self, feats: Tensor) -> SparseTensor:
        """Same sites, new features (N, C'); checks the row count only."""
        if feats.dim() != 2 or feats.shape[0] != self.coords.shape[0]:
            raise EngineError(
                f"feats must have shape ({self.coords.shape[0]}, C), got {tuple(feats.shape)}"
            )
        return SparseTensor.derived(feats, self.stride, self.cache)

    @property
    def dim(self) -> int:
        """Number of spatial dimensions D."""
        return self.coords.shape[1] - 1

    @property
    def num_channels(self) -> int:
        """Number of feature channels C."""
        return self.feats.shape[1]

    @property
    def sites(self) -> SiteSet:
        """The cached site set of this tensor."""
        return self.cache.sites(self.stride)

    @property
    def batch_size(self) -> int:
        """Number of batch entries (highest batch index + 1; 0 when empty)."""
        return self.sites.extent[0]

    def __len__(self) -> int:
        return self.coords.shape[0]

    def __repr__(self) -> str:
        return (
            f"SparseTensor(sites={len(self)}, channels={self.num_channels}, dim={self.dim}, "
            f"stride={self.stride}, dtype={self.feats.dtype}, device={self.feats.device})"
        )


def check_coords(coords: Tensor) -> Tensor:
    """Validate user coordinates (dtype, shape, sign) and return them as int64."""
    if not isinstance(coords, Tensor):
        raise EngineError(f"coords must be a torch.Tensor, got {type(coords).__name__}")
    if coords.dtype not in (torch.int32, torch.int64):
        raise EngineError(f"coords must be int32 or int64, got dtype {coords.dtype}")
    if coords.dim() != 2 or coords.shape[1] not in (3, 4):
        raise EngineError(
            f"coords must have shape (N, 1+D) with D = 2 or 3, got {tuple(coords.shape)}"
        )
    coords = coords.to(torch.int64)
    if coords.shape[0] > 0:
        bad = (coords < 0).any(dim=1).nonzero()
        if bad.numel() > 0:
            row = int(bad[0, 0])
            raise EngineError(
                f"coords must be non-negative, got {coords[row].tolist()} at row {row}"
            )
    return coords


def _check_feats(feats: Tensor, coords: Tensor) -> None:
    """Validate user features against the coordinates."""
    if not isinstance(feats, Tensor):
        raise EngineError(f"feats must be a torch.Tensor, got {type(feats).__name__}")
    if not feats.is_floating_point():
        raise EngineError(f"feats must be floating point, got dtype {feats.dtype}")
    if feats.dim() != 2:
        raise EngineError(f"feats must have shape (N, C), got {tuple(feats.shape)}")
    if feats.shape[0] != coords.shape[0]:
        raise EngineError(f"feats has {feats.shape[0]} rows but coords has {coords.shape[0]} sites")
    if feats.device != coords.device:
        raise EngineError(f"feats is on {feats.device} but coords is on {coords.device}")
