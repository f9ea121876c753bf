"""Sparse modules: parameters, a U-Net-like stack, kernel-map reuse, empty tensors."""

from __future__ import annotations

import pytest
import torch

from analysis_lib.sparse import SparseTensor, cat, from_dense, native, submanifold_conv, to_dense
from analysis_lib.sparse import nn as snn


def track_coords(dim: int = 3, seed: int = 0, batch: int = 2) -> torch.Tensor:
    """A few short random walks per batch entry, unique sites, shuffled."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        pos = torch.full((dim,), 8)
        for _ in range(60):
            pos = (pos + torch.randint(-1, 2, (dim,), generator=gen)).clamp(0, 15)
            rows.append([b, *pos.tolist()])
    coords = torch.tensor(rows).unique(dim=0)
    return coords[torch.randperm(coords.shape[0], generator=gen)]


class TinyUNet(torch.nn.Module):
    """Three resolutions, two submanifold convs per level, skip connections by concat."""

    def __init__(self, dim: int = 3, c: int = 4) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> torch.nn.Sequential:
            return torch.nn.Sequential(
                snn.SubmanifoldConv(c_in, c_out, dim=dim),
                snn.BatchNorm(c_out),
                snn.ReLU(),
                snn.SubmanifoldConv(c_out, c_out, dim=dim),
                snn.LeakyReLU(0.1),
            )

        self.enc1, self.enc2, self.enc3 = block(1, c), block(c, 2 * c), block(2 * c, 2 * c)
        self.down1 = snn.Conv(c, c, dim=dim)
        self.down2 = snn.Conv(2 * c, 2 * c, dim=dim)
        self.up2 = snn.ConvTranspose(2 * c, 2 * c, dim=dim)
        self.up1 = snn.ConvTranspose(2 * c, c, dim=dim)
        self.dec2, self.dec1 = block(4 * c, 2 * c), block(2 * c, c)
        self.cat = snn.Concat()
        self.head = snn.Linear(c, 3)

    def forward(self, x: SparseTensor) -> SparseTensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.down1(e1))
        e3 = self.enc3(self.down2(e2))
        d2 = self.dec2(self.cat(e2, self.up2(e3)))
        d1 = self.dec1(self.cat(e1, self.up1(d2)))
        return self.head(d1)


@pytest.mark.parametrize("dim", [2, 3])
def test_unet_builds_each_kernel_map_once(dim: int) -> None:
    coords = track_coords(dim)
    net = TinyUNet(dim)
    x = SparseTensor(coords, torch.ones(len(coords), 1))
    for _ in range(2):
        out = net(x)
        out.feats.square().sum().backward()
    # neighbour maps at strides 1, 2, 4 and downsample maps 1->2, 2->4
    assert x.cache.builds == 5


def test_unet_output_on_input_sites() -> None:
    coords = track_coords()
    out = TinyUNet()(SparseTensor(coords, torch.ones(len(coords), 1)))
    assert torch.equal(out.coords, coords) and out.feats.shape == (len(coords), 3)


def test_new_input_gets_new_cache() -> None:
    coords = track_coords()
    net = TinyUNet()
    x1 = SparseTensor(coords, torch.ones(len(coords), 1))
    x2 = SparseTensor(coords, torch.ones(len(coords), 1))
    net(x1)
    net(x2)
    assert (x1.cache.builds, x2.cache.builds, x1.cache is x2.cache) == (5, 5, False)


def test_derived_tensors_share_cache() -> None:
    coords = track_coords()
    x = SparseTensor(coords, torch.ones(len(coords), 1))
    y = snn.Conv(1, 2)(snn.SubmanifoldConv(1, 1)(x))
    assert y.cache is x.cache and y.stride == 2


def empty_input(dim: int = 3, channels: int = 4) -> SparseTensor:
    return SparseTensor(
        torch.zeros((0, dim + 1), dtype=torch.int64),
        torch.zeros((0, channels), requires_grad=True),
    )


EMPTY_OPS = {
    "subm": lambda x: snn.SubmanifoldConv(4, 5)(x),
    "strided": lambda x: snn.Conv(4, 5)(x),
    "transposed": lambda x: snn.ConvTranspose(4, 5)(snn.Conv(4, 4)(x)),
    "batchnorm": lambda x: snn.BatchNorm(4)(x),
    "relu": lambda x: snn.ReLU()(x),
    "leaky_relu": lambda x: snn.LeakyReLU()(x),
    "dropout": lambda x: snn.Dropout(0.5)(x),
    "linear": lambda x: snn.Linear(4, 5)(x),
    "concat": lambda x: cat([x, x]),
    "dense_round_trip": lambda x: from_dense(to_dense(x, (2, 2, 2), 1)),
}


@pytest.mark.parametrize("name", sorted(EMPTY_OPS))
def test_empty_tensor_through_op(name: str) -> None:
    x = empty_input()
    out = EMPTY_OPS[name](x)
    out.feats.sum().backward()
    assert out.feats.shape[0] == 0 and x.feats.grad.shape == (0, 4)


def test_module_weight_shapes() -> None:
    shapes = [
        snn.SubmanifoldConv(3, 5).weight.shape,
        snn.SubmanifoldConv(3, 5, kernel_size=5, dim=2).weight.shape,
        snn.Conv(3, 5).weight.shape,
        snn.ConvTranspose(3, 5, dim=2).weight.shape,
        snn.Linear(3, 5).weight.shape,
    ]
    assert shapes == [(27, 3, 5), (25, 3, 5), (8, 3, 5), (4, 3, 5), (3, 5)]


def test_module_extra_repr() -> None:
    text = repr(snn.Conv(3, 5, dim=2, bias=True))
    assert text == "Conv(3, 5, kernel_size=2, dim=2, bias=True, stride=2)"


def test_reset_parameters_reproducible() -> None:
    conv = snn.SubmanifoldConv(3, 5, bias=True)
    torch.manual_seed(7)
    conv.reset_parameters()
    first = conv.weight.detach().clone()
    torch.manual_seed(7)
    conv.reset_parameters()
    assert torch.equal(conv.weight, first) and not conv.bias.any()


def test_bias_added() -> None:
    coords = track_coords()
    x = SparseTensor(coords, torch.randn(len(coords), 2))
    conv = snn.SubmanifoldConv(2, 3, bias=True)
    with torch.no_grad():
        conv.bias.fill_(1.5)
        plain = submanifold_conv(x, conv.weight)
        torch.testing.assert_close(conv(x).feats, plain.feats + 1.5)


def test_batchnorm_matches_torch() -> None:
    coords = track_coords()
    feats = torch.randn(len(coords), 3)
    out = snn.BatchNorm(3)(SparseTensor(coords, feats))
    torch.testing.assert_close(out.feats, torch.nn.BatchNorm1d(3)(feats))


def test_cpu_autocast_computes_in_bfloat16() -> None:
    """bf16 products; the output in bf16, or in fp32 where the C kernels sum them (AVX-512
    BF16); gradients in the parameters' and inputs' fp32."""
    coords = track_coords()
    x = SparseTensor(coords, torch.randn(len(coords), 4, requires_grad=True))
    conv = snn.SubmanifoldConv(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    out.feats.float().sum().backward()
    sums = torch.float32 if native.bf16_available() else torch.bfloat16
    dtypes = (out.feats.dtype, x.feats.grad.dtype, conv.weight.grad.dtype)
    assert dtypes == (sums, torch.float32, torch.float32)
