"""DP-SGD at a site: budget across restarts, declines, all sent parameters private, per-patient
gradient independence, and an auditable ledger."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from opacus import GradSampleModule

from client.data.dataset import SiteData
from client.privacy.dp_round import dp_local_train
from client.privacy.settings import DPSettings, dp_model_config
from client.privacy.site_ledger import SiteLedger
from moehealth.cli import main
from server.settings import FederationSettings
from shared_model import ModelConfig, build_model
from shared_model.ledger import read_ledger, verify_ledger
from shared_model.losses import moe_loss
from shared_model.params import model_to_arrays, parameter_group
from shared_model.protocol import SiteStatus


@pytest.fixture(scope="module")
def site(synth_features) -> SiteData:
    return SiteData.load(synth_features, "mortality", "site-a")


def _round(site, store, settings, rnd, phase="joint", num_rounds=8):
    g = model_to_arrays(build_model())
    cfg = FederationSettings(num_rounds=num_rounds,
                             pretrain_rounds=rnd if phase == "pretrain" else 0).round_config(rnd)
    return dp_local_train(site, ModelConfig(), g, cfg, settings, store, "site-a")


def test_budget_is_planned_for_the_run_survives_a_restart_and_declines_beyond(site,
                                                                           tmp_path: Path) -> None:
    settings = DPSettings(enabled=True, target_epsilon=2.0)  # plan for the run's rounds
    first = _round(site, SiteLedger(tmp_path), settings, 1, num_rounds=2)
    restarted = SiteLedger(tmp_path)  # a new site process reads the same files
    second = _round(site, restarted, settings, 2, num_rounds=2)
    assert second.reply.ledger_row["epsilon"] > first.reply.ledger_row["epsilon"] > 0
    assert second.reply.ledger_row["steps_total"] == 2 * first.reply.ledger_row["steps_round"]
    assert second.reply.ledger_row["noise_multiplier"] == first.reply.ledger_row["noise_multiplier"]
    assert 1.95 <= second.reply.ledger_row["epsilon"] <= 2.0  # the 2-round run spends the budget
    third = _round(site, SiteLedger(tmp_path), settings, 3, num_rounds=3)  # run extended
    assert third.reply.status is SiteStatus.DECLINED and not third.reply.arrays
    assert "privacy budget" in third.reply.ledger_row["reason"]
    assert third.reply.ledger_row["epsilon"] == second.reply.ledger_row["epsilon"]
    rows = read_ledger(tmp_path / "ledger.jsonl")
    assert [r["declined"] for r in rows] == [False, False, True]


def test_every_sent_parameter_is_trained_under_dp(site, tmp_path: Path) -> None:
    result = _round(site, SiteLedger(tmp_path), DPSettings(enabled=True), 1)
    assert result.reply.arrays and set(result.reply.arrays) == set(result.dp_parameters)
    groups = {parameter_group(n) for n in result.reply.arrays}
    assert groups == set(result.reply.group_weights)
    pre = _round(site, SiteLedger(tmp_path / "p"), DPSettings(enabled=True), 1, "pretrain")
    assert "gate" not in {parameter_group(n) for n in pre.reply.arrays}
    assert set(pre.reply.arrays) == set(pre.dp_parameters)


def _clipped_sum_without(model, inputs, labels, drop: int | None, keep: list[int], clip: float,
                         balance: str) -> torch.Tensor:
    rows = [i for i in range(len(labels)) if i != drop]
    gsm = GradSampleModule(model)
    gsm.zero_grad()
    out = gsm(*[x[rows] for x in inputs])
    moe_loss(out, labels[rows], alpha=0.5, balance=balance).backward()
    per_sample = torch.cat([p.grad_sample.reshape(len(rows), -1) for p in gsm.parameters()
                            if p.requires_grad and p.grad_sample is not None], dim=1)
    factor = (clip / (per_sample.norm(dim=1) + 1e-6)).clamp(max=1.0)
    clipped = per_sample * factor[:, None]
    gsm._close()
    return clipped[[rows.index(i) for i in keep]].sum(0)


@pytest.mark.parametrize("balance", ["kl", "switch"])
def test_removing_one_patient_and_the_others_clipped_gradients(site, balance: str) -> None:
    torch.manual_seed(0)
    model = build_model(replace(dp_model_config(ModelConfig(dropout=0.0)), balance=balance)).double()
    model.train()
    train = site.subset("train")
    inputs, labels = [t[:16].double() for t in train.tensors[:-1]], train.tensors[-1][:16].double()
    others = list(range(1, 16))
    with_patient = _clipped_sum_without(model, inputs, labels, None, others, 1.0, balance)
    without = _clipped_sum_without(model, inputs, labels, 0, others, 1.0, balance)
    moved = float((with_patient - without).norm())
    if balance == "kl":  # what DP sites use: per-sample terms only
        assert moved < 1e-12, moved  # zero up to float64 rounding of batched kernels
    else:  # the paper's batch statistic couples patients: why DP sites must not use it
        assert moved > 1e-3, moved


def test_a_run_longer_than_a_fixed_noise_allows_is_refused_before_training(site,
                                                                           tmp_path: Path) -> None:
    settings = DPSettings(enabled=True, target_epsilon=2.0, noise_multiplier=0.8)
    result = _round(site, SiteLedger(tmp_path), settings, 1, num_rounds=8)
    assert result.reply.status is SiteStatus.DECLINED and not result.reply.arrays
    assert "the 8 rounds left in this run would bring epsilon to" in result.reply.reason
    assert result.reply.ledger_row["steps_total"] == 0  # nothing was spent
    # nothing spent, nothing fixed: the hospital corrects its noise and trains the next round
    fixed = _round(site, SiteLedger(tmp_path), replace(settings, noise_multiplier=None), 2,
                   num_rounds=8)
    assert fixed.reply.status is SiteStatus.TRAINED


def test_simulation_refuses_an_unfittable_dp_configuration_before_round_1(tmp_path: Path,
                                                                          synth_samples) -> None:
    from shared_model.errors import MoeHealthInputError
    from shared_model.run_config import pyproject_defaults
    from simulation.environment import check_dp_budgets

    config = {**pyproject_defaults(), "dp.enabled": True, "dp.target-epsilon": 1.0,
              "dp.noise-multiplier": 0.5, "dp.sites": "site-x"}
    with pytest.raises(MoeHealthInputError, match="site site-x: privacy budget: the 8 rounds"):
        check_dp_budgets(config, {"site-x": synth_samples}, tmp_path, server_round=1)
    check_dp_budgets({**config, "dp.noise-multiplier": 0.0}, {"site-x": synth_samples}, tmp_path,
                     server_round=1)  # calibrated for the run: fits


def test_audit_verify_passes_honest_and_fails_edited_ledger(site, tmp_path: Path, capsys) -> None:
    settings = DPSettings(enabled=True, target_epsilon=3.0)
    for rnd in (1, 2):
        _round(site, SiteLedger(tmp_path), settings, rnd, num_rounds=3)
    ledger = tmp_path / "ledger.jsonl"
    assert all(f.problem is None for f in verify_ledger(read_ledger(ledger)))
    assert main(["audit", str(ledger), "--verify", "--plot", str(tmp_path / "eps.png")]) == 0
    assert (tmp_path / "eps.png").stat().st_size > 1000
    rows = [json.loads(x) for x in ledger.read_text().splitlines()]
    rows[-1]["epsilon"] *= 0.8  # under-report the last round
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["audit", str(edited), "--verify"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_the_recipe_without_noise_is_recorded_as_no_guarantee(site, tmp_path: Path) -> None:
    """``target-epsilon = inf`` (simulation's "no-noise" row): clipping and Poisson sampling with
    noise 0; the ledger says epsilon inf and the audit agrees, nothing claims a guarantee."""
    result = _round(site, SiteLedger(tmp_path), DPSettings(enabled=True,
                                                                target_epsilon=math.inf), 1)
    row = result.reply.ledger_row
    assert result.reply.arrays and row["noise_multiplier"] == 0.0 and row["epsilon"] == math.inf
    ledger = read_ledger(tmp_path / "ledger.jsonl")
    assert [f.recomputed["pld"] for f in verify_ledger(ledger)] == [math.inf]
    assert all(f.problem is None for f in verify_ledger(ledger))
    # the server's run directory writes JSON without inf (null); read back, it is inf again
    from server.run_dir import RunDirectory
    from shared_model.ledger import ledger_table

    RunDirectory(tmp_path / "run").append("privacy_ledger.jsonl", row)
    (from_run,) = read_ledger(tmp_path / "run" / "privacy_ledger.jsonl")
    assert from_run["epsilon"] == math.inf and "| inf |" in ledger_table([from_run])


def test_bad_dp_settings_are_refused() -> None:
    from client.errors import MoeHealthInputError

    with pytest.raises(MoeHealthInputError, match="delta"):
        DPSettings(enabled=True, delta=2.0)
    with pytest.raises(MoeHealthInputError, match="positive"):
        DPSettings(enabled=True, target_epsilon=0)
    with pytest.raises(MoeHealthInputError, match="contradict"):
        DPSettings(enabled=True, target_epsilon=math.inf, noise_multiplier=1.0)


@pytest.mark.parametrize("actual_sigma, caught", [(2.0, False), (0.2, True)])
def test_canary_audit_catches_silently_smaller_noise(site, actual_sigma: float, caught: bool) -> None:
    from client.privacy.canary_audit import run_canary_audit
    from client.privacy.dp_round import units_of_training_rows
    from client.privacy.mechanism import Mechanism, epsilon_of

    claimed_sigma, epochs = 2.0, 4
    units = len(set(units_of_training_rows(site, "patient")))
    claimed = Mechanism("patient", units, 32, epochs, 1.0, 1e-5, claimed_sigma)
    ledger_eps = epsilon_of([[claimed_sigma, claimed.sample_rate, claimed.steps_per_round]], 1e-5)
    ran = Mechanism("patient", units, 32, epochs, 1.0, 1e-5, actual_sigma)
    result = run_canary_audit(site, ModelConfig(), mechanism=ran, steps=ran.steps_per_round,
                              ledger_epsilon=ledger_eps, canaries=2000, seed=1)
    assert result.consistent is not caught, result


def test_noise_calibration_is_pinned_against_dp_accounting() -> None:
    """Plan: epsilon 3 at delta 1e-5 over 5 rounds of 63 Poisson steps (q = 1/63). The calibrated
    sigma is pinned, and Google's dp-accounting (PLD, independent of Opacus) agrees it spends the
    budget: at most 3, and within 0.02 of it."""
    from client.privacy.mechanism import Mechanism
    from shared_model.ledger import recompute

    settings = DPSettings(enabled=True, target_epsilon=3.0, delta=1e-5, planned_rounds=5)
    plan = Mechanism.propose(settings, units=2000, run_batch_size=32, local_epochs=1
                             ).calibrated(settings, rounds=5)
    assert plan.sample_rate == pytest.approx(1 / 63) and plan.steps_per_round == 63
    assert plan.noise_multiplier == pytest.approx(0.8124, abs=1e-3)
    pld = recompute({"noise_multiplier": plan.noise_multiplier, "sample_rate": plan.sample_rate,
                     "steps_total": 5 * 63, "delta": 1e-5})["pld"]
    assert 2.98 <= pld <= 3.0


def test_audit_verify_fails_what_the_coordinator_audit_found(site, tmp_path: Path) -> None:
    """A row whose sample rate disagrees with its history (the audit's q = 1 attack once passed as
    consistent), a released round above its target, and a round answered twice each fail."""
    settings = DPSettings(enabled=True, target_epsilon=2.0)
    _round(site, SiteLedger(tmp_path), settings, 1, num_rounds=2)
    (row,) = read_ledger(tmp_path / "ledger.jsonl")
    assert verify_ledger([row])[0].problem is None
    attacked = row | {"history": [[row["noise_multiplier"], 1.0, row["steps_total"]]]}
    assert "sample rate" in verify_ledger([attacked])[0].problem
    over = row | {"target_epsilon": row["epsilon"] / 2}
    assert "above the target" in verify_ledger([over])[0].problem
    twice = verify_ledger([row, dict(row)])
    assert twice[0].problem is None and "appears twice" in twice[1].problem


def test_a_torn_ledger_line_is_an_unsent_round_and_is_cut_before_the_next(site,
                                                                         tmp_path: Path) -> None:
    settings = DPSettings(enabled=True, target_epsilon=3.0)
    _round(site, SiteLedger(tmp_path), settings, 1, num_rounds=3)
    with open(tmp_path / "ledger.jsonl", "a") as fh:
        fh.write('{"round": 2, "site": "site-a", "eps')  # the process died mid-append
    assert [r["round"] for r in SiteLedger(tmp_path).rows()] == [1]
    _round(site, SiteLedger(tmp_path), settings, 2, num_rounds=3)
    assert [r["round"] for r in read_ledger(tmp_path / "ledger.jsonl")] == [1, 2]


def test_privacy_utility_pairs_each_epsilon_across_units() -> None:
    from simulation.experiments import _unit_pairs

    scores = {"epsilon 8 (patient)": None, "epsilon 8 (stay)": None, "epsilon 3 (patient)": None,
              "no-noise": None}
    assert _unit_pairs(scores, ["patient", "stay"]) == [("epsilon 8 (patient)", "epsilon 8 (stay)")]
    assert _unit_pairs(scores, ["patient"]) == []


@pytest.mark.parametrize("bad, named", [
    ({"dp-target-epsilon": float("nan")}, "dp-target-epsilon"),
    ({"dp-target-epsilon": True}, "dp-target-epsilon"),
    ({"dp-target-epsilon": "eight"}, "dp-target-epsilon"), ({"dp-enabled": "yes"}, "dp-enabled"),
    ({"dp-unit": "visit"}, "dp-unit")])
def test_a_dp_setting_of_the_wrong_kind_is_refused_naming_it(bad: dict, named: str) -> None:
    from client.errors import MoeHealthInputError
    from client.privacy.settings import NODE_CONFIG

    with pytest.raises(MoeHealthInputError, match=f"DP setting '{named}'"):
        DPSettings.from_mapping({"dp-enabled": True} | bad, NODE_CONFIG)


def test_dp_sites_are_stripped_and_checked() -> None:
    from shared_model.errors import MoeHealthInputError
    from simulation.environment import dp_site_names, simulated_dp

    config = {"dp.enabled": True, "dp.sites": "site-0, site-2"}
    assert dp_site_names(config, known=["site-0", "site-1", "site-2"]) == {"site-0", "site-2"}
    assert simulated_dp(config, "site-2").enabled and not simulated_dp(config, "site-1").enabled
    with pytest.raises(MoeHealthInputError, match="'site-9' is not a site"):
        dp_site_names({"dp.sites": "site-0,site-9"}, known=["site-0", "site-1"])


def test_privacy_utility_pairs_each_run_with_its_references() -> None:
    from simulation.experiments import FEDERATED_SETTING, NO_NOISE, PUBLIC_MODEL, _reference_pairs

    scores = dict.fromkeys(["epsilon 8", "epsilon 1", NO_NOISE, FEDERATED_SETTING, PUBLIC_MODEL])
    pairs = _reference_pairs(scores)
    assert ("epsilon 8", FEDERATED_SETTING) in pairs and ("epsilon 1", PUBLIC_MODEL) in pairs
    assert ("epsilon 8", NO_NOISE) in pairs and (NO_NOISE, PUBLIC_MODEL) in pairs
    assert not any(first == second or first == PUBLIC_MODEL for first, second in pairs)
    assert _reference_pairs({"epsilon 8": None}) == []


def test_no_noise_travels_to_the_run_config_as_toml_infinity() -> None:
    """The no-noise reference run sets dp.target-epsilon to infinity: JSON cannot write it, the
    run-config check must accept what Flower parses."""
    import math

    from flwr.common.config import parse_config_args

    from server.run_config_check import check_keys_and_types
    from simulation.local_superlink import toml_value

    parsed = parse_config_args([f"dp.target-epsilon={toml_value(math.inf)} lr={toml_value(0.5)}"])
    assert parsed == {"dp.target-epsilon": math.inf, "lr": 0.5}
    check_keys_and_types(parsed)


@pytest.mark.parametrize("bad", ["8,eight", "0", "-1", "nan", "8,,3"])
def test_experiment_epsilons_are_checked_before_any_data_work(bad: str) -> None:
    import argparse

    from moehealth.cli_experiments import epsilon_list

    assert epsilon_list("8,1,no-noise,federated,inf")[:2] == [8.0, 1.0]
    with pytest.raises(argparse.ArgumentTypeError, match="not a positive epsilon"):
        epsilon_list(bad)


@pytest.mark.parametrize("bad", ["fusion", "fusion:3e-3", "every:1e-3:1", "fusion:0:1",
                                 "all:1e-3:0", "all:x:1"])
def test_a_malformed_dp_recipe_candidate_is_one_line(bad: str) -> None:
    import argparse

    from moehealth.cli_experiments import recipe_candidate
    from simulation.dp_recipe import RecipeCandidate

    assert recipe_candidate("fusion:3e-3:4") == RecipeCandidate("fusion", 3e-3, 4)
    with pytest.raises(argparse.ArgumentTypeError, match=f"candidate '{bad}': expected public"):
        recipe_candidate(bad)


@pytest.mark.parametrize("epsilon, recipe, message", [
    ("no-noise", {"init-from": "m"}, "one finite positive epsilon"),
    (float("inf"), {"init-from": "m"}, "one finite positive epsilon"),
    (8.0, {}, "'public' needs --init-from")])
def test_dp_recipe_refuses_what_it_cannot_choose_at_before_any_data_work(
        tmp_path: Path, epsilon, recipe: dict, message: str) -> None:
    from shared_model.errors import MoeHealthInputError
    from simulation.dp_recipe import RecipeCandidate, dp_recipe
    from simulation.experiments import Budget

    candidates = [RecipeCandidate.parse("public"), RecipeCandidate.parse("fusion:1e-3:1")]
    with pytest.raises(MoeHealthInputError, match=message):
        dp_recipe(tmp_path, None, candidates, epsilon, 0, "mortality", Budget(), recipe)


def test_dp_recipe_table_bolds_the_candidate_chosen_on_validation() -> None:
    import pandas as pd

    from simulation.dp_recipe import RecipeCandidate, dp_recipe_markdown

    names = [RecipeCandidate.parse(c).name for c in ("public", "fusion:3e-3:4")]
    frame = pd.DataFrame({"candidate": names, "val_auroc": [0.75, 0.77], "chosen": [False, True],
                          "target_epsilon": 8.0, "seed": 0, "max_site_epsilon_spent": [None, 7.99],
                          "val_set": "pooled validation (n 10, positives 2)"})
    table = dp_recipe_markdown(frame)
    assert "| the public model alone (no federated training) | 0.750 | - |" in table
    assert "| **fusion layers, AdamW lr 0.003, 4 local epochs** (chosen) | **0.770** | 7.990 |" \
        in table
    assert "The test set is not scored" in table
