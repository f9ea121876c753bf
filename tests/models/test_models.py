"""U-ResNet: one topology, two backends."""

import pytest
import torch

from analysis_lib.core.errors import ConfigError
from analysis_lib.models import UResNet, level_planes


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("growth", ["linear", "power"])
def test_dense_and_sparse_have_identical_parameter_counts(dim, growth):
    sparse = UResNet(dim, 4, 8, backend="sparse", growth=growth)
    dense = UResNet(dim, 4, 8, backend="dense", growth=growth)
    assert _count(sparse) == _count(dense)


def test_study_default_growth_per_backend():
    assert UResNet(3, 3, 8, backend="sparse").growth == "linear"
    assert UResNet(3, 3, 8, backend="dense").growth == "power"
    assert level_planes(4, 16, "linear") == [16, 32, 48, 64]
    assert level_planes(4, 16, "power") == [16, 32, 64, 128]


@pytest.mark.parametrize("backend", ["sparse", "dense"])
@pytest.mark.parametrize("dim", [2, 3])
def test_scores_come_back_at_the_input_voxels_in_order(backend, dim):
    torch.manual_seed(0)
    size = 16
    coords = torch.unique(torch.cat([torch.randint(0, 2, (60, 1)),
                                     torch.randint(0, size, (60, dim))], 1), dim=0)
    coords = coords[torch.randperm(len(coords))]
    feats = torch.rand(len(coords), 1)
    model = UResNet(dim, 3, 4, backend=backend)
    out = model(coords, feats, size)
    assert out.shape == (len(coords), 5)
    # permuting the input permutes the output the same way
    perm = torch.randperm(len(coords))
    model.eval()
    torch.testing.assert_close(model(coords[perm], feats[perm], size), model(coords, feats,
                                                                             size)[perm])


def test_image_size_must_be_divisible():
    model = UResNet(3, 5, 4)
    with pytest.raises(ConfigError, match="not divisible by 2\\*\\*\\(depth-1\\) = 16"):
        model.check_image_size(100)


@pytest.mark.parametrize(("kwargs", "word"), [({"backend": "gpu"}, "backend"),
                                              ({"growth": "cubic"}, "growth"),
                                              ({"depth": 0}, "depth"), ({"dim": 4}, "dim")])
def test_bad_arguments(kwargs, word):
    args = {"dim": 3, "depth": 3, "filters": 4} | kwargs
    with pytest.raises(ConfigError, match=word):
        UResNet(**args)


def _spatial_weights(model) -> list[torch.Tensor]:
    """Weights of the convolutions whose two layouts differ (several input channels, kernel > 1)."""
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)
            and m.weight.shape[1] > 1 and m.weight.shape[2] > 1]


@pytest.mark.parametrize("dim", [2, 3])
def test_dense_channels_last_layout_gives_the_channels_first_scores(dim):
    """The dense backend runs channels-last (oneDNN's fast CPU path); the layout changes the
    speed, not the scores: the same weights channels-first agree."""
    torch.manual_seed(0)
    size = 16
    coords = torch.unique(torch.cat([torch.randint(0, 2, (80, 1)),
                                     torch.randint(0, size, (80, dim))], 1), dim=0)
    feats = torch.rand(len(coords), 1)
    model = UResNet(dim, 3, 4, backend="dense").eval()
    last = torch.channels_last if dim == 2 else torch.channels_last_3d
    first = UResNet(dim, 3, 4, backend="dense").eval()
    first.load_state_dict(model.state_dict())
    first.use_channels_last(False)
    assert _spatial_weights(model)
    assert all(a.is_contiguous(memory_format=last) and not b.is_contiguous(memory_format=last)
               for a, b in zip(_spatial_weights(model), _spatial_weights(first), strict=True))
    with torch.no_grad():
        torch.testing.assert_close(model(coords, feats, size), first(coords, feats, size),
                                   rtol=1e-5, atol=1e-5)
