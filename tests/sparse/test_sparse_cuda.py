"""CUDA runs of the sparse engine equal the CPU runs; autocast computes in half precision."""

from __future__ import annotations

import pytest
import torch

from analysis_lib.sparse import SparseTensor, strided_conv, submanifold_conv, transposed_conv

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def event(device: str, channels: int = 8) -> SparseTensor:
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 12, 12, 12, generator=gen) < 0.2
    coords = mask.nonzero()
    coords = coords[torch.randperm(coords.shape[0], generator=gen)]
    feats = torch.randn(coords.shape[0], channels, generator=gen)
    return SparseTensor(coords.to(device), feats.to(device).requires_grad_())


def run(device: str, op: str) -> list[torch.Tensor]:
    x = event(device)
    gen = torch.Generator().manual_seed(1)
    if op == "subm":
        w = torch.randn(27, 8, 6, generator=gen).to(device).requires_grad_()
        out = submanifold_conv(x, w)
    elif op == "strided":
        w = torch.randn(8, 8, 6, generator=gen).to(device).requires_grad_()
        out = strided_conv(x, w)
    else:
        w = torch.randn(8, 8, 6, generator=gen).to(device).requires_grad_()
        out = transposed_conv(strided_conv(x, torch.eye(8, device=device).expand(8, 8, 8)), w)
    grads = torch.autograd.grad(out.feats.square().sum(), [x.feats, w])
    return [out.coords.cpu(), out.feats.detach().cpu(), *(g.cpu() for g in grads)]


@pytest.mark.parametrize("op", ["subm", "strided", "transposed"])
def test_cuda_equals_cpu(op: str) -> None:
    cpu, cuda = run("cpu", op), run("cuda", op)
    for a, b in zip(cpu, cuda, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype: torch.dtype) -> None:
    x = event("cuda")
    w = torch.randn(27, 8, 6, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=dtype):
        out = submanifold_conv(x, w)
    out.feats.float().sum().backward()
    assert (out.feats.dtype, x.feats.grad.dtype, w.grad.dtype) == (
        dtype,
        torch.float32,
        torch.float32,
    )
