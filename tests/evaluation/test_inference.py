"""Predictions of a trained network: one per event, in the event's voxel order."""

import numpy as np

from analysis_lib.data import open_dataset
from analysis_lib.data.relabel import relabel
from analysis_lib.evaluation.inference import load_model, predict
from analysis_lib.training.config import TrainConfig
from analysis_lib.training.loop import train


def test_predict_gives_each_events_scores_and_relabels_a_copy(tiny_sample, tmp_path):
    cfg = TrainConfig(data=str(tiny_sample), depth=3, filters=4, batch_size=2, iterations=1)
    model, _ = load_model(train(cfg, tmp_path / "run", progress=False))
    with open_dataset(tiny_sample) as events:
        regular = [(e.index, e.coords.copy(), e.label.copy(), e.prim_ion) for e in events]
    found = list(predict(model, tiny_sample, batch_size=5, relabeled=True))  # 12 = 5 + 5 + 2
    assert [p.event.index for p in found] == [index for index, *_ in regular]
    for p, (_, coords, label, prim_ion) in zip(found, regular, strict=True):
        assert np.array_equal(p.event.coords, coords)
        assert p.probs.shape == (len(coords), 5)
        np.testing.assert_allclose(p.probs.sum(1), 1.0, rtol=1e-5)
        assert np.array_equal(p.pred, p.probs.argmax(1))
        assert np.array_equal(p.event.label, relabel(label, prim_ion))
    with open_dataset(tiny_sample) as events:
        assert all(np.array_equal(e.label, label) for e, (_, _, label, _) in zip(
            events, regular, strict=True))
