"""Table VI and Figures 14–15: Michel electrons reconstructed from the network's prediction
and from the true labels, and the study's claims 11–12 judged on them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis_lib.core import paper
from analysis_lib.core.labels import VoxelClass
from analysis_lib.data.dataset import Event
from analysis_lib.evaluation import michel as reco
from analysis_lib.evaluation.evidence import Part
from analysis_lib.evaluation.inference import load_model, predict
from analysis_lib.evaluation.michel import MichelSummary
from analysis_lib.study import results
from analysis_lib.study.profiles import Chapter

NAME = "michel"
#: Fewest true Michel electrons for Table VI to be tested, and per spectrum for Figure 15.
MIN_TRUE_MICHELS = 50
MIN_SPECTRUM = 20


@dataclass(frozen=True)
class Reconstruction:
    """Candidates from the network's prediction and from the true labels, and the true
    electrons (frames of :func:`analysis_lib.evaluation.michel.reconstruct`), with the events
    they come from: what the chapter's figures draw."""

    labelled: list[tuple[Event, np.ndarray]]
    predictions: list[tuple[Event, np.ndarray]]
    truths: pd.DataFrame
    truth_candidates: pd.DataFrame
    network_candidates: pd.DataFrame


@dataclass(frozen=True)
class Spectrum:
    """Figure 15: cluster sizes (voxels) of the network's candidates and of the true Michel
    electrons; ``cut`` the size below which the study saw an excess of candidates."""

    cut: int
    candidates: tuple[int, ...]
    true: tuple[int, ...]


@dataclass(frozen=True)
class Michel:
    """Table VI from the network and from the true labels, without and with the cut, the
    spectrum, and how many voxels the network called Michel in how many events."""

    network: MichelSummary
    network_cut: MichelSummary
    true_labels: MichelSummary
    true_labels_cut: MichelSummary
    spectrum: Spectrum
    events: int
    predicted_michel_voxels: int
    true_michel_voxels: int

    def table6(self) -> pd.DataFrame:
        """Table VI beside the study's: columns (source, cut), rows :data:`TABLE6_ROWS`."""
        published = [paper.TABLE6.get(key) for key in reco.TABLE6_ROWS]
        published[-1] = (paper.BOTH_ABOVE_95, None)
        return pd.DataFrame({
            ("network", "no cut"): self.network.column(),
            ("network", "≥ 10 voxels"): self.network_cut.column(),
            ("true labels", "no cut"): self.true_labels.column(),
            ("true labels", "≥ 10 voxels"): self.true_labels_cut.column(),
            ("study", "no cut"): [v[0] if v else None for v in published],
            ("study", "≥ 10 voxels"): [v[1] if v else None for v in published],
        }, index=list(reco.TABLE6_ROWS))


def summarize(rec: Reconstruction) -> Michel:
    """The chapter's results from a reconstruction."""
    cut, cands, truths = reco.ANALYSIS_CUT, rec.network_candidates, rec.truths
    return Michel(
        network=reco.summarize(cands, truths),
        network_cut=reco.summarize(cands, truths, cut),
        true_labels=reco.summarize(rec.truth_candidates, truths),
        true_labels_cut=reco.summarize(rec.truth_candidates, truths, cut),
        spectrum=Spectrum(cut, tuple(map(int, cands["voxels"])),
                          tuple(map(int, truths["true_voxels"]))),
        events=len(rec.predictions),
        predicted_michel_voxels=sum(int((p == VoxelClass.MICHEL).sum())
                                    for _, p in rec.predictions),
        true_michel_voxels=int(truths["true_voxels"].sum()))


def reconstruct(labelled: list[tuple[Event, np.ndarray]],
                predictions: list[tuple[Event, np.ndarray]]) -> Reconstruction:
    """Candidates from the true (relabeled) labels and from the network's prediction."""
    truth_candidates, truths = reco.reconstruct(labelled)
    network_candidates, _ = reco.reconstruct(predictions)
    return Reconstruction(labelled, predictions, truths, truth_candidates, network_candidates)


def compute(ch: Chapter) -> tuple[Michel, Reconstruction]:
    """Predict the chapter's 512 px events with its network, reconstruct, record the results;
    the reconstruction too, for the figures."""
    path = ch.data.path_of(ch.data_set)
    model, _ = load_model(ch.runs[ch.michel_run].run(progress=False))
    rec = reconstruct(list(reco.relabeled_truth(path)),
                      [(p.event, p.pred) for p in predict(model, path, relabeled=True)])
    result = summarize(rec)
    results.record(NAME, result)
    return result, rec


def table6(r: Michel) -> list[Part]:
    """Claim 11: Table VI's four numbers within 5 points of the study's."""
    m = r.network
    if m.true_michels < MIN_TRUE_MICHELS:
        return [Part(None, f"only {m.true_michels} true Michel electrons in the sample")]
    values = {"ID efficiency": m.id_efficiency, "ID purity": m.id_purity,
              "cluster efficiency": m.cluster_efficiency, "cluster purity": m.cluster_purity}
    close = all(abs(v - paper.TABLE6[k][0]) <= 0.05 for k, v in values.items())
    return [Part(close, ", ".join(f"{k} {v:.1%}" for k, v in values.items()))]


def spectrum(r: Michel) -> list[Part]:
    """Claim 12: an excess of small candidates; above the cut, the sizes agree."""
    s = r.spectrum
    cand, true = np.asarray(s.candidates), np.asarray(s.true)
    if len(cand) < MIN_SPECTRUM or len(true) < MIN_SPECTRUM:
        return [Part(None, f"{len(cand)} candidates and {len(true)} true Michel electrons: too "
                           f"few for a spectrum")]
    small_c, small_t = int((cand < s.cut).sum()), int((true < s.cut).sum())
    p = float(stats.ks_2samp(cand[cand >= s.cut], true[true >= s.cut]).pvalue)
    return [Part(small_c > small_t, f"below {s.cut} voxels: {small_c} candidates, {small_t} true"),
            Part(p >= 0.05, f"at or above {s.cut} voxels: KS p = {p:.2f}")]
