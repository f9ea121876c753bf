"""U-ResNet for semantic segmentation: one topology, a dense and a sparse backend.

The topology follows the study's sparse network (SparseConvNet's ``UNet`` builder): an input
3×3 convolution, then ``depth`` levels; each level has ``reps`` pre-activation residual blocks
(BN-ReLU-conv3-BN-ReLU-conv3, identity or 1×1 shortcut), a BN-ReLU + kernel-2 stride-2
convolution down to the next level, a BN-ReLU + kernel-2 stride-2 transposed convolution back,
concatenation with the level's encoder output, and ``reps`` more residual blocks; a final BN-ReLU
and a 1×1 linear layer give the class scores. ``depth`` counts levels, so an image is
downsampled ``depth - 1`` times and its size must be divisible by ``2**(depth - 1)``.

The dense backend runs the same layers with ``torch.nn`` convolutions on the full grid (the
event's energy scattered into one channel); both return scores at the event's nonzero voxels
only, in the input order, so losses and metrics see exactly the same voxels.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from analysis_lib import sparse
from analysis_lib.core.errors import ConfigError
from analysis_lib.core.labels import NUM_CLASSES
from analysis_lib.sparse import nn as snn

BACKENDS = ("sparse", "dense")
GROWTHS = ("linear", "power")
DEFAULT_GROWTH = {"sparse": "linear", "dense": "power"}  # the study's choices


@dataclass(frozen=True)
class _Ops:
    """Layer factories of one backend."""

    conv3: Callable[[int, int], nn.Module]
    down: Callable[[int, int], nn.Module]
    up: Callable[[int, int], nn.Module]
    norm: Callable[[int], nn.Module]
    act: Callable[[], nn.Module]
    linear: Callable[[int, int, bool], nn.Module]
    cat: Callable[[list[Any]], Any]
    add: Callable[[Any, Any], Any]


def _dense_ops(dim: int) -> _Ops:
    conv = nn.Conv3d if dim == 3 else nn.Conv2d
    conv_t = nn.ConvTranspose3d if dim == 3 else nn.ConvTranspose2d
    norm = nn.BatchNorm3d if dim == 3 else nn.BatchNorm2d
    return _Ops(
        conv3=lambda i, o: conv(i, o, 3, padding=1, bias=False),
        down=lambda i, o: conv(i, o, 2, stride=2, bias=False),
        up=lambda i, o: conv_t(i, o, 2, stride=2, bias=False),
        norm=norm,
        act=lambda: nn.ReLU(inplace=False),
        linear=lambda i, o, bias: conv(i, o, 1, bias=bias),
        cat=lambda xs: torch.cat(xs, dim=1),
        add=lambda a, b: a + b,
    )


def _sparse_ops(dim: int) -> _Ops:
    return _Ops(
        conv3=lambda i, o: snn.SubmanifoldConv(i, o, 3, dim=dim),
        down=lambda i, o: snn.Conv(i, o, dim=dim),
        up=lambda i, o: snn.ConvTranspose(i, o, dim=dim),
        # the ReLU after each BatchNorm runs inside it (fused in C); the placeholder keeps the
        # layer numbering, so both backends' parameters have the same names
        norm=lambda c: snn.BatchNorm(c, relu=True),
        act=nn.Identity,
        linear=lambda i, o, bias: snn.Linear(i, o, bias=bias),
        cat=sparse.cat,
        add=lambda a, b: a.with_feats(a.feats + b.feats),
    )


class ResidualBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv3-BN-ReLU-conv3 plus a shortcut."""

    def __init__(self, ops: _Ops, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.ops = ops
        self.body = nn.Sequential(ops.norm(in_channels), ops.act(), ops.conv3(in_channels,
                                  out_channels), ops.norm(out_channels), ops.act(),
                                  ops.conv3(out_channels, out_channels))
        self.shortcut = (nn.Identity() if in_channels == out_channels
                         else ops.linear(in_channels, out_channels, False))

    def forward(self, x: Any) -> Any:
        return self.ops.add(self.body(x), self.shortcut(x))


def _blocks(ops: _Ops, in_channels: int, out_channels: int, reps: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(ops, in_channels if r == 0 else out_channels,
                                         out_channels) for r in range(reps)])


class _Level(nn.Module):
    """One resolution of the U: encoder blocks, then (except at the bottom) the coarser levels
    and the decoder blocks on the concatenated skip."""

    def __init__(self, ops: _Ops, planes: list[int], reps: int) -> None:
        super().__init__()
        self.ops = ops
        here = planes[0]
        self.encode = _blocks(ops, here, here, reps)
        self.inner = None
        if len(planes) > 1:
            below = planes[1]
            self.down = nn.Sequential(ops.norm(here), ops.act(), ops.down(here, below))
            self.inner = _Level(ops, planes[1:], reps)
            self.up = nn.Sequential(ops.norm(below), ops.act(), ops.up(below, here))
            self.decode = _blocks(ops, 2 * here, here, reps)

    def forward(self, x: Any) -> Any:
        skip = self.encode(x)
        if self.inner is None:
            return skip
        coarse = self.inner(self.down(skip))
        return self.decode(self.ops.cat([skip, self.up(coarse)]))


def level_planes(depth: int, filters: int, growth: str) -> list[int]:
    """Channels of each level: m, 2m, 3m, … (linear) or m, 2m, 4m, … (power)."""
    if growth == "linear":
        return [filters * (k + 1) for k in range(depth)]
    return [filters * 2**k for k in range(depth)]


def _channels_last(dim: int) -> torch.memory_format:
    """The channels-last layout of a ``dim``-dimensional image batch."""
    return torch.channels_last if dim == 2 else torch.channels_last_3d


class UResNet(nn.Module):
    """Dense or sparse U-ResNet returning class scores at the nonzero voxels.

    Parameters
    ----------
    dim : 2 or 3
    depth : number of levels (``depth - 1`` downsamplings)
    filters : channels of the first level
    reps : residual blocks per level and path
    backend : ``"sparse"`` or ``"dense"``
    growth : ``"linear"`` or ``"power"`` channel growth per level; default: the study's choice
        for the backend (sparse linear, dense power)
    num_classes : output classes
    in_channels : input features per voxel (1: energy)
    """

    def __init__(self, dim: int, depth: int, filters: int, reps: int = 2,
                 backend: str = "sparse", growth: str | None = None,
                 num_classes: int = NUM_CLASSES, in_channels: int = 1) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise ConfigError(f"dim={dim!r} must be 2 or 3")
        if backend not in BACKENDS:
            raise ConfigError(f"backend={backend!r}; choose one of {BACKENDS}")
        growth = growth or DEFAULT_GROWTH[backend]
        if growth not in GROWTHS:
            raise ConfigError(f"growth={growth!r}; choose one of {GROWTHS}")
        for name, value in (("depth", depth), ("filters", filters), ("reps", reps),
                            ("num_classes", num_classes), ("in_channels", in_channels)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive int")
        self.dim, self.depth, self.filters, self.reps = dim, depth, filters, reps
        self.backend, self.growth, self.num_classes = backend, growth, num_classes
        ops = _sparse_ops(dim) if backend == "sparse" else _dense_ops(dim)
        planes = level_planes(depth, filters, growth)
        self.input_conv = ops.conv3(in_channels, filters)
        self.unet = _Level(ops, planes, reps)
        self.head = nn.Sequential(ops.norm(filters), ops.act(),
                                  ops.linear(filters, num_classes, True))
        self.grid_layout = torch.contiguous_format
        if backend == "dense":
            self.use_channels_last()

    def use_channels_last(self, on: bool = True) -> "UResNet":
        """Lay the dense backend's grids and weights out channels-last (as built: oneDNN's
        fast path on a CPU: at [3D, 64 px, 5-16], batch 4, on two AVX2 cores, inference 1.45x
        and a training step 1.6x faster, ``benchmarks/dense_layout.py``) or, with ``on=False``,
        channels-first; the scores agree to float rounding."""
        self.grid_layout = _channels_last(self.dim) if on else torch.contiguous_format
        return self.to(memory_format=self.grid_layout)

    def check_image_size(self, size: int) -> None:
        """Raise ConfigError unless ``size`` is divisible by ``2**(depth - 1)``."""
        factor = 2 ** (self.depth - 1)
        if size % factor:
            raise ConfigError(f"image size {size} is not divisible by 2**(depth-1) = {factor} "
                              f"(depth {self.depth}); choose a size that is, or a smaller depth")

    def forward(self, coords: Tensor, feats: Tensor, spatial_size: int) -> Tensor:
        """Class scores (N, num_classes) at the voxels ``coords`` (N, 1+D), batch index first,
        with input features ``feats`` (N, in_channels), in an image of ``spatial_size`` voxels
        per side."""
        self.check_image_size(spatial_size)
        if self.backend == "sparse":
            x = sparse.SparseTensor(coords, feats)
            return self.head(self.unet(self.input_conv(x))).feats
        batch_size = int(coords[:, 0].max()) + 1 if len(coords) else 1
        grid = feats.new_zeros((batch_size, feats.shape[1]) + (spatial_size,) * self.dim)
        index = tuple(coords.long().T)
        grid = grid.permute(0, *range(2, 2 + self.dim), 1).index_put(index, feats)
        grid = grid.permute(0, self.dim + 1, *range(1, self.dim + 1))
        grid = grid.contiguous(memory_format=self.grid_layout)
        out = self.head(self.unet(self.input_conv(grid)))
        return out.permute(0, *range(2, 2 + self.dim), 1)[index]
