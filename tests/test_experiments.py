"""The experiment drivers and `moehealth train`: one catalogue of variants, honest tables, a real
centralized run on a small synthetic federation."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from moehealth.cli import main
from server.settings import FederationSettings
from shared_model.config import model_config_from_run_config
from shared_model.errors import MoeHealthInputError
from shared_model.run_config import pyproject_defaults
from simulation.baselines import FEDERATED_ABLATIONS, VARIANTS, variant_model_config
from simulation.experiments import (
    Budget,
    federated_ablations,
    variant_selection,
    variant_selection_markdown,
    write_results,
)


def test_every_federated_ablation_is_a_catalogue_variant_with_valid_run_config() -> None:
    keys = set(pyproject_defaults())
    assert set(FEDERATED_ABLATIONS) <= set(VARIANTS)
    for name in VARIANTS:  # every variant can also run federated (e.g. dense-gate via model.top-k)
        overrides = VARIANTS[name].run_config()
        assert set(overrides) <= keys, (name, set(overrides) - keys)
        config = {**pyproject_defaults(), **overrides}
        assert model_config_from_run_config(config) == variant_model_config(name)
        FederationSettings.from_run_config(config)  # validates
    assert VARIANTS["no-pretrain"].run_config() == {  # the paper's routing, whatever the defaults
        "pretrain-rounds": 0, "model.gate-mask": "none", "model.top-k": 2,
        "model.gate-temperature": "fixed"}
    assert VARIANTS["unimodal-ehr"].run_config()["model.modalities"] == "ehr"


def test_the_default_configuration_is_the_mixture_with_the_best_validation_auroc(
        tmp_path: Path) -> None:
    frame = pd.DataFrame({"variant": ["moe-health-paper", "dense-gate", "mlp-fusion"] * 2,
                          "seed": [0, 0, 0, 1, 1, 1],
                          "val_auroc": [0.80, 0.79, 0.95, 0.78, 0.81, 0.95]})
    selection = variant_selection(frame)  # dense 0.800 > paper 0.790; MLP fusion is no candidate
    assert selection.variant.tolist() == ["dense-gate", "moe-health-paper"]
    assert selection.chosen.tolist() == [True, False]
    assert "| dense-gate | 0.7900 / 0.8100 | 0.8000 | yes |" in variant_selection_markdown(selection)
    with pytest.raises(MoeHealthInputError, match="unknown variant 'dense'"):
        federated_ablations(tmp_path, None, [0], variants=["moe-health", "dense"])  # type: ignore[arg-type]


def test_baselines_get_the_federation_epoch_budget() -> None:
    budget = Budget(rounds=8, pretrain_rounds=2, local_epochs=2)
    config = budget.train_config("los", seed=3)
    assert (config.pretrain_epochs, config.max_epochs, config.seed) == (4, 12, 3)
    assert config.patience > config.max_epochs  # no early stop: the same epochs as the federation
    assert Budget().run_config()["lr"] == FederationSettings().lr


def test_write_results_tables_mean_and_spread_per_setting(tmp_path: Path) -> None:
    frame = pd.DataFrame({"setting": ["a", "a", "b"], "seed": [0, 1, 0],
                          "pooled_test_auroc": [0.70, 0.80, 0.60]})
    write_results(tmp_path, frame, ["setting"], "pooled_test_auroc", "title")
    table = (tmp_path / "results.md").read_text()
    assert "| a | 0.750 ± 0.071 |" in table
    assert len(pd.read_csv(tmp_path / "results.csv")) == 3
    assert (tmp_path / "results.png").stat().st_size > 1000


@pytest.mark.slow
def test_moehealth_train_runs_variants_on_pooled_sites(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["train", "--data-dir", str(tmp_path / "data"), "--patients", "200", "--sites",
                 "2", "--variant", "moe-health", "--variant", "unimodal-ehr", "--epochs", "2",
                 "--pretrain-epochs", "1", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    variants = results["tasks"]["mortality"]["variants"]
    assert set(variants) == {"moe-health", "unimodal-ehr"}
    assert all(0.0 <= v["auroc"] <= 1.0 and v["epochs"] <= 2 for v in variants.values())
    assert 0.5 < results["tasks"]["mortality"]["oracle_auroc"] <= 1.0
    table = (out / "results.md").read_text()
    assert "| mortality | true probability (oracle) |" in table
    assert "| mortality | reachable ceiling |" in table and "fraction of reachable ceiling" in table
    assert results["tasks"]["mortality"]["reachable_auroc"] <= 1.0
    assert (out / "routing-mortality-moe-health.png").is_file()
    assert "test AUROC" in capsys.readouterr().out


def test_one_seed_has_no_spread_rather_than_zero(tmp_path: Path) -> None:
    frame = pd.DataFrame({"setting": ["a"], "seed": [0], "pooled_test_auroc": [0.7]})
    write_results(tmp_path, frame, ["setting"], "pooled_test_auroc", "title")
    assert "| a | 0.700 ± n/a |" in (tmp_path / "results.md").read_text()


def test_bootstrap_auroc_interval_covers_the_estimate_and_narrows_with_n() -> None:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from client.rounds.evaluation import bootstrap_auroc

    rng = np.random.default_rng(1)
    widths = []
    for n in (200, 5000):
        labels = (rng.random(n) < 0.2).astype(float)
        probs = np.clip(0.2 + 0.3 * labels + rng.normal(0, 0.25, n), 0, 1)
        low, high = bootstrap_auroc(labels, probs)
        assert low < roc_auc_score(labels, probs) < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3


def test_each_aggregation_is_a_valid_run_config_and_an_unknown_one_is_refused(tmp_path) -> None:
    import yaml

    from simulation.baselines import AGGREGATIONS, aggregation_run_config
    from simulation.experiments import skew_profile

    for aggregation in AGGREGATIONS:
        config = {**pyproject_defaults(), **aggregation_run_config(aggregation, 0.03)}
        settings = FederationSettings.from_run_config(config)
        assert str(settings.aggregation_rule) == aggregation.partition("+")[0]
        assert settings.server_optimizer == ("fedadam" if "+fedadam" in aggregation else "avg")
    assert aggregation_run_config("modality-aware+fedadam", 0.03)["server-lr"] == 0.03
    with pytest.raises(ValueError, match="unknown aggregation 'fedprox'"):
        aggregation_run_config("fedprox")
    profile = yaml.safe_load(skew_profile(tmp_path, num_sites=5, k=2).read_text())["sites"]
    assert profile == {"site-0": {"drop_modalities": ["cxr"]},
                       "site-1": {"drop_modalities": ["cxr"]},
                       "site-3": {"drop_modalities": ["notes"]},
                       "site-4": {"drop_modalities": ["notes"]}}


@pytest.mark.parametrize("server_lrs", [[], [0.0, 0.01]])
def test_a_fedadam_arm_without_positive_server_lrs_is_refused_before_any_run(
        tmp_path, server_lrs) -> None:
    from shared_model.errors import MoeHealthInputError
    from simulation.experiments import heterogeneity

    with pytest.raises(MoeHealthInputError, match="modality-aware\\+fedadam needs positive"):
        heterogeneity(tmp_path, None, [2], [0], aggregations=["modality-aware+fedadam"],
                      server_lrs=server_lrs)  # no data: refused before it is read
