"""Training: the study's loss by hand, exact resume, data-parallel gradients, CLI."""

import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

from analysis_lib.cli import main
from analysis_lib.core.errors import ConfigError
from analysis_lib.data import open_dataset
from analysis_lib.data.relabel import relabel
from analysis_lib.sparse import native
from analysis_lib.training import batching
from analysis_lib.training.batching import (
    BatchSchedule,
    EventDataset,
    apply_symmetry,
    collate,
    grid_symmetries,
)
from analysis_lib.training.config import TrainConfig
from analysis_lib.training.loop import bf16_autocast, event_loss, read_log, train


def test_event_loss_is_the_mean_over_events_of_the_mean_over_voxels():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    batch = torch.tensor([0, 0, 0, 1])
    ce = -torch.log_softmax(logits, 1)[torch.arange(4), labels]
    expected = ((ce[0] + ce[1] + ce[2]) / 3 + ce[3]) / 2
    assert event_loss(logits, labels, batch, 2).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("native_kernels", [False, True])
@pytest.mark.parametrize("avx512_bf16, amx", [(False, False), (True, False), (False, True)])
def test_bf16_autocast_on_the_cpu_only_where_it_multiplies_bf16_natively(monkeypatch, avx512_bf16,
                                                                         amx, native_kernels):
    """A CPU with native bf16 trains the dense network in bf16, and the sparse one only where
    the engine's (faster) fp32 C kernels are not there."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(native, "planned", lambda: native_kernels)
    cpu = torch.device("cpu")
    assert bf16_autocast(True, cpu, "dense") is (avx512_bf16 or amx)
    assert bf16_autocast(True, cpu, "sparse") is ((avx512_bf16 or amx) and not native_kernels)
    assert bf16_autocast(False, cpu, "dense") is False
    assert bf16_autocast(True, torch.device("cuda", 0)) is True
    assert bf16_autocast(False, torch.device("cuda", 0)) is False


def test_class_weights_give_each_present_class_equal_weight():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    batch = torch.tensor([0, 0, 0])
    ce = -torch.log_softmax(logits, 1)[torch.arange(3), labels]
    # N = 3, two classes present: w_0 = 3 / (2 * 2), w_1 = 3 / (2 * 1)
    expected = (0.75 * ce[0] + 0.75 * ce[1] + 1.5 * ce[2]) / 3
    got = event_loss(logits, labels, batch, 1, class_weights=True)
    assert got.item() == pytest.approx(expected.item())


def test_schedule_slices_the_global_batch_between_ranks():
    single = BatchSchedule(20, 4, seed=3, start=0, stop=6)
    ranks = [BatchSchedule(20, 2, seed=3, start=0, stop=6, rank=r, world_size=2)
             for r in range(2)]
    for iteration in range(6):
        union = ranks[0].indices(iteration) + ranks[1].indices(iteration)
        assert union == single.indices(iteration)


def test_schedule_refuses_a_batch_larger_than_the_data():
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        BatchSchedule(3, 4, seed=0, start=0, stop=1)


@pytest.mark.parametrize("augment", [False, True])
def test_resumed_run_equals_uninterrupted_run(tiny_sample, tmp_path, augment):
    common = dict(data=str(tiny_sample), depth=3, filters=4, batch_size=2, seed=1,
                  augment=augment)
    straight = TrainConfig(iterations=6, checkpoint_every=6, **common)
    train(straight, tmp_path / "straight", progress=False)
    first = TrainConfig(iterations=6, checkpoint_every=3, **common)
    train(TrainConfig(iterations=3, checkpoint_every=3, **common), tmp_path / "cut",
          progress=False)
    train(first, tmp_path / "cut", resume=True, progress=False)
    a, b = read_log(tmp_path / "straight"), read_log(tmp_path / "cut")
    assert b["iteration"].tolist() == list(range(1, 7))
    np.testing.assert_array_equal(a["loss"], b["loss"])


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def _rank_gradients(rank: int, world: int, init: str, data: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    cfg = TrainConfig(data=data, depth=3, filters=4, batch_size=2)
    model = cfg.model().eval()  # frozen BN statistics: per-process batches would differ
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    dataset = EventDataset(data)
    schedule = BatchSchedule(len(dataset), 2, seed=5, start=0, stop=1, rank=rank,
                             world_size=world)
    batch = collate([dataset[i] for i in schedule.indices(0)], dataset.spatial_size)
    logits = ddp(batch.coords, batch.feats, batch.spatial_size)
    event_loss(logits, batch.labels, batch.coords[:, 0], batch.n_events).backward()
    if rank == 0:
        torch.save(_grads(model), out)
    dist.destroy_process_group()


def _spawned(rank: int, *args) -> None:
    _rank_gradients(rank, *args)


@pytest.mark.slow
def test_two_gloo_processes_average_to_the_union_batch_gradient(tiny_sample, tmp_path):
    out = str(tmp_path / "ddp_grads.pt")
    init = f"file://{tmp_path / 'rendezvous'}"
    tmp.spawn(_spawned, args=(2, init, str(tiny_sample), out), nprocs=2, join=True)
    torch.manual_seed(0)
    model = TrainConfig(data=str(tiny_sample), depth=3, filters=4).model().eval()
    dataset = EventDataset(str(tiny_sample))
    union = BatchSchedule(len(dataset), 4, seed=5, start=0, stop=1).indices(0)
    batch = collate([dataset[i] for i in union], dataset.spatial_size)
    logits = model(batch.coords, batch.feats, batch.spatial_size)
    event_loss(logits, batch.labels, batch.coords[:, 0], batch.n_events).backward()
    for ddp_grad, grad in zip(torch.load(out), _grads(model), strict=True):
        torch.testing.assert_close(ddp_grad, grad, rtol=1e-5, atol=1e-7)


def test_train_and_evaluate_from_the_command_line(tiny_sample, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_sample), "--out", str(out), "--depth", "3",
                 "--filters", "4", "--batch-size", "2", "--iterations", "2"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint_2.pt"), "--data",
                 str(tiny_sample), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    nonempty = sum(len(e.energy) > 0 for e in open_dataset(tiny_sample))
    assert result["n_events"] == nonempty  # events without voxels have no accuracy
    assert 0.0 <= result["nonzero_accuracy"] <= 1.0
    assert len(result["classwise_accuracy"]) == 5
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert set(json.loads(lines[0])) == {"iteration", "loss", "nonzero_accuracy",
                                         "wall_time_s", "peak_memory_bytes", "shower_softmax_std"}


def test_image_size_not_divisible_is_a_clear_error(tiny_sample, tmp_path):
    cfg = TrainConfig(data=str(tiny_sample), depth=7, filters=4, iterations=1)
    with pytest.raises(ConfigError, match="not divisible by 2\\*\\*\\(depth-1\\) = 64"):
        train(cfg, tmp_path / "bad", progress=False)


@pytest.mark.skipif(os.environ.get("WORLD_SIZE") is not None, reason="already distributed")
def test_config_rejects_nonpositive_settings():
    with pytest.raises(ConfigError, match="batch_size=0"):
        TrainConfig(data="x.h5", batch_size=0)


def test_probing_saves_snapshots_and_leaves_training_unchanged(tiny_sample, tmp_path):
    common = dict(data=str(tiny_sample), depth=3, filters=4, batch_size=2, seed=1,
                  iterations=4, checkpoint_every=4)
    train(TrainConfig(**common), tmp_path / "plain", progress=False)
    probed = TrainConfig(probe_event=3, probe_iterations=(1, 3), **common)
    train(probed, tmp_path / "probed", progress=False)
    assert read_log(tmp_path / "plain")["loss"].tolist() == \
        read_log(tmp_path / "probed")["loss"].tolist()
    assert sorted(p.name for p in (tmp_path / "probed").glob("probe_*")) == \
        ["probe_1.npz", "probe_3.npz"]
    with open_dataset(tiny_sample) as events, np.load(tmp_path / "probed/probe_3.npz") as snap:
        assert np.array_equal(snap["coords"], events[3].coords)
        assert snap["probs"].shape == (len(events[3].coords), 5)
        np.testing.assert_allclose(snap["probs"].sum(1), 1.0, rtol=1e-5)


def test_fine_tuning_starts_from_the_checkpoint_weights(tiny_sample, tmp_path):
    common = dict(data=str(tiny_sample), depth=3, filters=4, batch_size=2, seed=1)
    base = train(TrainConfig(iterations=2, checkpoint_every=2, **common), tmp_path / "base",
                 progress=False)
    tuned = TrainConfig(iterations=1, learning_rate=1e-12, init=str(base), **common)
    last = train(tuned, tmp_path / "tuned", progress=False)
    before = torch.load(base)["model"]
    after = torch.load(last)["model"]
    for name, weight in before.items():
        if weight.is_floating_point() and "running" not in name:
            torch.testing.assert_close(after[name], weight, rtol=0, atol=1e-9)


def test_learning_rate_drops_tenfold_after_decay_from():
    cfg = TrainConfig(data="x", iterations=10, learning_rate=1e-3, decay_from=0.8)
    assert [cfg.learning_rate_at(i) for i in (1, 8, 9, 10)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4])
    with pytest.raises(ConfigError, match="decay_from"):
        TrainConfig(data="x", decay_from=1.5)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    cfg = TrainConfig(data="x", iterations=10, learning_rate=1e-2, schedule="cosine",
                      warmup=0.2)
    rates = [cfg.learning_rate_at(i) for i in range(1, 11)]
    # linear ramp over 2 iterations, then a half cosine over the remaining 8
    assert rates[:2] == pytest.approx([5e-3, 1e-2])
    assert rates[5] == pytest.approx(1e-2 * 0.5 * (1 + np.cos(np.pi * 4 / 8)))
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)
    for bad in ({"schedule": "linear"}, {"optimizer": "sgd"}, {"warmup": 2.0},
                {"weight_decay": -1.0}):
        with pytest.raises(ConfigError):
            TrainConfig(data="x", **bad)


def test_adamw_applies_decoupled_weight_decay():
    cfg = TrainConfig(data="x", optimizer="adamw", weight_decay=0.1)
    opt = cfg.make_optimizer([torch.nn.Parameter(torch.ones(2))])
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.1


def test_weighted_schedule_draws_in_proportion_and_resumes_alike():
    weights = np.array([1.0] * 9 + [0.0])  # event 9 is never drawn
    weights[0] = 10.0  # event 0 about ten times as often as each other
    schedule = BatchSchedule(10, 2, seed=1, start=0, stop=2000, weights=weights)
    drawn = np.bincount(np.concatenate([schedule.indices(i) for i in range(2000)]),
                        minlength=10)
    assert drawn[9] == 0
    assert 8 < drawn[0] / drawn[1:9].mean() < 12
    resumed = BatchSchedule(10, 2, seed=1, start=7, stop=9, weights=weights)
    assert list(resumed) == [schedule.indices(7), schedule.indices(8)]
    with pytest.raises(ConfigError, match="weights"):
        BatchSchedule(10, 2, seed=1, start=0, stop=1, weights=np.zeros(10))


def test_rare_class_events_are_found_after_relabeling(tiny_sample):
    dataset = EventDataset(str(tiny_sample), transform=relabel)
    rare = dataset.holds_rare_class()
    expected = [bool(np.isin(dataset[i].label, (3, 4)).any()) for i in range(len(dataset))]
    assert rare.tolist() == expected


@pytest.mark.parametrize("cache_bytes", [0, 2**30])
def test_dataset_events_are_the_files_relabeled_once_whether_kept_in_memory_or_not(
        tiny_sample, monkeypatch, cache_bytes):
    monkeypatch.setattr(batching, "EVENT_CACHE_BYTES", cache_bytes)
    dataset = EventDataset(str(tiny_sample), transform=relabel)
    with open_dataset(str(tiny_sample)) as events:
        for _ in range(2):  # the second pass reads from memory where the cache holds them
            for i in range(len(dataset)):
                event, truth = dataset[i], events[i]
                np.testing.assert_array_equal(event.coords, truth.coords)
                np.testing.assert_array_equal(event.energy, truth.energy)
                np.testing.assert_array_equal(event.label, relabel(truth.label, truth.prim_ion))
                event.label = None  # a caller changing its copy leaves the dataset's alone
                if cache_bytes:  # and one writing into a shared array is stopped
                    with pytest.raises(ValueError, match="read-only"):
                        dataset[i].energy[0] = 0.0
                turned = dataset[(i, 5)]
                np.testing.assert_array_equal(
                    turned.coords, apply_symmetry(truth.coords, 5, dataset.spatial_size))
    assert (dataset._cached_bytes > 0) == (cache_bytes > 0)


@pytest.mark.parametrize("dim", [2, 3])
def test_grid_symmetries_are_distinct_distance_keeping_maps_of_the_grid(dim):
    size = 7
    coords = np.random.default_rng(0).integers(0, size, (30, dim))
    images = [apply_symmetry(coords, code, size) for code in range(grid_symmetries(dim))]
    assert len(images) == {2: 8, 3: 48}[dim]
    np.testing.assert_array_equal(images[0], coords)
    assert len({im.tobytes() for im in images}) == len(images)
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    for im in images:
        assert im.min() >= 0 and im.max() < size
        np.testing.assert_allclose(np.linalg.norm(im[:, None] - im[None], axis=-1), distances)
    with pytest.raises(ConfigError, match="symmetry code 48"):
        apply_symmetry(coords, 48, size)


def test_augmenting_schedule_draws_codes_per_place_and_splits_like_the_plain_one():
    plain = BatchSchedule(20, 4, seed=3, start=0, stop=12)
    single = BatchSchedule(20, 4, seed=3, start=0, stop=12, symmetries=48)
    ranks = [BatchSchedule(20, 2, seed=3, start=0, stop=12, rank=r, world_size=2,
                           symmetries=48) for r in range(2)]
    codes = []
    for iteration in range(12):
        drawn = single.indices(iteration)
        assert [index for index, _ in drawn] == plain.indices(iteration)
        assert ranks[0].indices(iteration) + ranks[1].indices(iteration) == drawn
        codes += [code for _, code in drawn]
    assert min(codes) >= 0 and max(codes) < 48 and len(set(codes)) > 20
    resumed = BatchSchedule(20, 4, seed=3, start=7, stop=9, symmetries=48)
    assert list(resumed) == [single.indices(7), single.indices(8)]


def test_dataset_turns_an_event_by_the_drawn_symmetry(tiny_sample):
    dataset = EventDataset(str(tiny_sample))
    event, turned = dataset[0], dataset[(0, 13)]
    np.testing.assert_array_equal(turned.coords,
                                  apply_symmetry(event.coords, 13, dataset.spatial_size))
    np.testing.assert_array_equal(turned.label, event.label)
    np.testing.assert_array_equal(turned.energy, event.energy)
