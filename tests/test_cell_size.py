"""No value derived from fewer than a site's minimum cell size of patients leaves it: built on
real replies of the real local training and evaluation code."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from client.data.dataset import SiteData
from client.rounds.federated import local_evaluate, local_train
from server.settings import FederationSettings
from shared_model import build_model
from shared_model.modalities import COMBINATIONS
from shared_model.moe import combination_index
from shared_model.params import model_to_arrays, parameter_group
from shared_model.protocol import MIN_CELL_SIZE, SiteStatus, combination_key, split_key


@pytest.fixture(scope="module")
def site(synth_features) -> SiteData:
    return SiteData.load(synth_features, "mortality", "site-a")


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return model_to_arrays(build_model())


def _test_counts(site: SiteData) -> tuple[dict[str, int], dict[str, int]]:
    """Per modality combination of the test split: patients and positives."""
    mask = site.split == "test"
    combos = combination_index(site.inputs["available"]).numpy()[mask]
    labels = site.labels.numpy()[mask]
    n = {COMBINATIONS[c]: int((combos == c).sum()) for c in np.unique(combos)}
    pos = {COMBINATIONS[c]: int(labels[combos == c].sum()) for c in np.unique(combos)}
    return n, pos


def _without(site: SiteData, split: str, combo: str) -> SiteData:
    """The same site without the patients of one modality combination in one split."""
    combos = combination_index(site.inputs["available"]).numpy()
    keep = ~((site.split == split) & (combos == COMBINATIONS.index(combo)))
    index = torch.as_tensor(np.flatnonzero(keep))
    return replace(site, split=site.split[keep], stay_id=site.stay_id[keep],
                   subject_id=site.subject_id[keep], labels=site.labels[index],
                   inputs={k: v[index] for k, v in site.inputs.items()})


def test_no_combination_of_training_weights_reveals_a_small_cell(site, arrays) -> None:
    cell = 15  # train cells: ehr 21, ehr+notes 105, ehr+cxr 13 (suppressed), ehr+notes+cxr 52
    assert 0 < site.combination_counts("train")["ehr+cxr"] < cell
    cfg = FederationSettings(local_epochs=1).round_config(1, "")
    reply = local_train(site, build_model().config, arrays, cfg, "site-a", min_cell_size=cell)
    weights = reply.group_weights
    experts = sum(n for g, n in weights.items() if g.startswith("experts."))
    # the attacks that worked before: training samples minus the experts' weights, and the CXR
    # encoder's weight minus the one CXR expert it shares a released cell with
    assert reply.train_examples - experts == 0
    assert weights["encoders.cxr"] - weights["experts.ehr+notes+cxr"] == 0
    assert "experts.ehr+cxr" not in weights
    # every released count is a sum of released cells: they do not depend on the suppressed
    # cell at all, so no sum, difference or other combination of them can isolate it
    smaller = local_train(_without(site, "train", "ehr+cxr"), build_model().config, arrays, cfg,
                          "site-a", min_cell_size=cell)
    assert smaller.group_weights == weights and smaller.train_examples == reply.train_examples


def test_evaluation_release_does_not_depend_on_suppressed_cells(site, arrays) -> None:
    cell = 5  # test cells (patients, positives): ehr (6, 0), ehr+notes (31, 5), ehr+cxr (3, 0),
    reply = local_evaluate(site, build_model().config, arrays, "site-a", min_cell_size=cell)
    metrics = reply.metrics()  # ehr+notes+cxr (22, 2): ehr+cxr suppressed, 7 positives in the rest
    assert not any("threshold" in key for key in metrics)  # one patient's probability: stays
    n, pos = _test_counts(site)
    assert combination_key("ehr+cxr", "n") not in metrics and "ehr+cxr" not in reply.routing
    released = [c for c in n if n[c] >= cell]
    assert reply.num_examples == sum(n[c] for c in released)  # minus the combinations: 0
    assert metrics[split_key("test", "positives")] == sum(pos[c] for c in released)
    low, high = metrics[split_key("test", "auroc_low")], metrics[split_key("test", "auroc_high")]
    assert low <= metrics[split_key("test", "auroc")] <= high
    # "ehr" has no positive: no per-combination metric for any cell (all or none)
    assert not [key for key in metrics if key.startswith("test.") and key.endswith(".auroc")
                and key != split_key("test", "auroc")]
    same = local_evaluate(_without(site, "test", "ehr+cxr"), build_model().config, arrays,
                          "site-a", min_cell_size=cell)
    assert same.metrics() == metrics


def test_metrics_are_withheld_together_where_a_class_is_small(site, arrays) -> None:
    cell = 10  # released test cells hold 7 positives, released validation cells 6
    metrics = local_evaluate(site, build_model().config, arrays, "site-a",
                             min_cell_size=cell).metrics()
    assert not [k for k in metrics if k.split(".")[0] in ("val", "test") and k.count(".") == 1]
    n, _ = _test_counts(site)
    assert {k for k in metrics if k.endswith(".n")} == {
        combination_key(c, "n") for c in n if n[c] >= cell}
    # per-combination AUROC only where every released cell has enough of both classes
    both = _without(_without(site, "test", "ehr"), "test", "ehr+cxr")  # (31, 5) and (22, 2)
    per_cell = local_evaluate(both, build_model().config, arrays, "site-a",
                              min_cell_size=2).metrics()
    assert combination_key("ehr+notes", "auroc") in per_cell
    assert combination_key("ehr+notes+cxr", "auroc") in per_cell
    withheld = local_evaluate(both, build_model().config, arrays, "site-a",
                              min_cell_size=3).metrics()  # ehr+notes+cxr has 2 positives
    assert split_key("test", "auroc") in withheld
    assert not [k for k in withheld if k.endswith(".auroc") and k.count(".") == 2]


def test_a_site_smaller_than_the_cell_size_sends_no_metric(site, arrays) -> None:
    reply = local_evaluate(site, build_model().config, arrays, "site-a",
                           min_cell_size=site.size("test") + 1)
    assert set(reply.metrics()) <= {"num-examples", split_key("val", "loss"),
                                    split_key("val", "auroc"), split_key("val", "auprc"),
                                    split_key("val", "f1")}
    assert reply.num_examples == 0 and "test" not in reply.splits


def test_training_sends_no_group_driven_by_a_small_cell(site, arrays) -> None:
    cfg = FederationSettings(local_epochs=1).round_config(1, "")
    reply = local_train(site, build_model().config, arrays, cfg, "site-a")
    assert reply.group_weights and min(reply.group_weights.values()) >= MIN_CELL_SIZE
    assert {parameter_group(name) for name in reply.arrays} == set(reply.group_weights)
    declined = local_train(site, build_model().config, arrays, cfg, "site-a",
                           min_cell_size=site.size("train") + 1)
    assert declined.status is SiteStatus.DECLINED and not declined.arrays
    assert "min-cell-size" in declined.reason
