"""No value derived from fewer than a site's minimum cell size of patients leaves it: built on
real replies of the real local training and evaluation code."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_evaluation_reply_leaves_out_small_cells_and_the_threshold(site, arrays) -> None:
    reply = local_evaluate(site, build_model().config, arrays, "site-a")
    metrics = reply.metrics()
    assert not any("threshold" in key for key in metrics)  # one patient's probability: stays
    n, pos = _test_counts(site)
    small = [c for c in n if n[c] < MIN_CELL_SIZE]
    assert small, "the fixture should have a small cell to suppress"
    for combo in small:
        assert combination_key(combo, "auroc") not in metrics
        assert combination_key(combo, "n") not in metrics
    for values in reply.by_combination.values():
        assert values["n"] >= MIN_CELL_SIZE
    for combo in reply.routing:
        assert n[combo] >= MIN_CELL_SIZE
    positives = sum(pos.values())
    if positives >= MIN_CELL_SIZE:
        assert metrics[split_key("test", "positives")] == positives
    else:
        assert split_key("test", "positives") not in metrics
    exact = local_evaluate(site, build_model().config, arrays, "site-a", min_cell_size=positives)
    assert exact.metrics()[split_key("test", "positives")] == positives  # a cell at the size: sent
    few = local_evaluate(site, build_model().config, arrays, "site-a",
                         min_cell_size=positives + 1)
    assert split_key("test", "positives") not in few.metrics()  # a small count is left out
    assert split_key("test", "auroc") in few.metrics()  # over all test patients: kept
    low, high = metrics[split_key("test", "auroc_low")], metrics[split_key("test", "auroc_high")]
    assert low <= metrics[split_key("test", "auroc")] <= high


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
