"""The coordinator as a DP site's adversary, with real DP-SGD rounds: every value it sends, changed
mid-run and across a restart, leaves the site at or under its target with ledger rows that
re-account exactly; the noise and the sampling come from a secret no torch seed reaches; no group
that no patient informs leaves the site; the privacy unit is the patient."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from client.data.dataset import SiteData
from client.privacy.dp_round import MISMATCH, dp_local_train, units_of_training_rows
from client.privacy.settings import DPSettings
from client.privacy.site_ledger import SiteLedger
from server.settings import FederationSettings
from shared_model import ModelConfig, build_model
from shared_model.ledger import verify_ledger
from shared_model.params import model_to_arrays, parameter_group
from shared_model.protocol import AggregationRule, Phase, RoundConfig, SiteStatus

TARGET = 2.0
MODEL = ModelConfig(hidden=16, lstm_hidden=16, gate_hidden=16, expert_hidden=16)
SETTINGS = DPSettings(enabled=True, target_epsilon=TARGET)


@pytest.fixture(scope="module")
def site(synth_features) -> SiteData:
    """A small site: its first 120 training patients (real cached features)."""
    data = SiteData.load(synth_features, "mortality", "hospital-dp")
    patients = np.unique(data.subject_id[data.split == "train"])[:120]
    split = np.where(np.isin(data.subject_id, patients) | (data.split != "train"), data.split,
                     "unused")
    return replace(data, split=split)


def _cfg(rnd: int, num_rounds: int = 4) -> RoundConfig:
    return FederationSettings(num_rounds=num_rounds, pretrain_rounds=0).round_config(rnd)


def _train(site, ledger_dir: Path, cfg: RoundConfig, model=MODEL, settings=SETTINGS,
           modalities=("ehr", "notes", "cxr")):
    arrays = model_to_arrays(build_model(model))
    return dp_local_train(site, model, arrays, cfg, settings, SiteLedger(ledger_dir),
                          "hospital-dp", modalities)


@pytest.fixture(scope="module")
def after_round_1(site, tmp_path_factory) -> Path:
    ledger_dir = tmp_path_factory.mktemp("round1")
    assert _train(site, ledger_dir, _cfg(1)).reply.status is SiteStatus.TRAINED
    return ledger_dir


# Every value of the train message, changed in round 2 by a coordinator after the site restarted
# (a new process reading the same ledger): the mechanism is the site's, so a value that would
# change it is declined; the others shape the update only.
ATTACKS = {
    "batch_size": (100_000, "expected_batch"),  # the audit's attack: q = 1 pushed epsilon to 2.99
    "local_epochs": (50, "local_epochs"),
    "num_rounds": (1, None), "phase": (Phase.PRETRAIN, None), "lr": (10.0, None),
    "seed": (123456789, None), "alpha": (100.0, None), "proximal_mu": (5.0, None),
    "aggregation_rule": (AggregationRule.FEDAVG_ALL, None),
}


@pytest.mark.parametrize("field", sorted(ATTACKS))
def test_no_value_the_coordinator_sends_raises_epsilon(site, after_round_1: Path, tmp_path: Path,
                                                       field: str) -> None:
    value, mechanism_field = ATTACKS[field]
    ledger_dir = tmp_path / "privacy"
    shutil.copytree(after_round_1, ledger_dir)
    attacked = _train(site, ledger_dir, replace(_cfg(2), **{field: value})).reply
    if mechanism_field:
        assert attacked.status is SiteStatus.DECLINED and not attacked.arrays
        assert "would change the DP mechanism fixed at round 1" in attacked.reason
        assert mechanism_field in attacked.reason
    else:
        assert attacked.status is SiteStatus.TRAINED, attacked.reason
    _train(site, ledger_dir, _cfg(3))  # the coordinator goes back to the run's values
    rows = SiteLedger(ledger_dir).rows()
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert all(r["epsilon"] <= TARGET + 1e-9 for r in rows)
    assert all(f.problem is None for f in verify_ledger(rows)), verify_ledger(rows)
    trained = [r for r in rows if not r["declined"]]
    assert len({(r["sample_rate"], r["steps_round"]) for r in trained}) == 1  # one mechanism


def test_dropout_and_model_values_change_no_mechanism(site, after_round_1: Path,
                                                      tmp_path: Path) -> None:
    """Dropout 0 (which made a round a function of the seed) and other run-config model values:
    trained, within the target, the same sample rate and steps."""
    ledger_dir = tmp_path / "privacy"
    shutil.copytree(after_round_1, ledger_dir)
    reply = _train(site, ledger_dir, _cfg(2), model=replace(MODEL, dropout=0.0, top_k=7)).reply
    assert reply.status is SiteStatus.TRAINED
    first, second = SiteLedger(ledger_dir).rows()
    assert (first["sample_rate"], first["steps_round"]) == (second["sample_rate"],
                                                            second["steps_round"])
    assert second["epsilon"] <= TARGET


def test_a_round_is_answered_once(site, after_round_1: Path, tmp_path: Path) -> None:
    """A coordinator that replays round 1 (or a resumed run that asks for it again) gets a decline
    and no second ledger row; the budget is not spent twice."""
    ledger_dir = tmp_path / "privacy"
    shutil.copytree(after_round_1, ledger_dir)
    again = _train(site, ledger_dir, _cfg(1)).reply
    assert again.status is SiteStatus.DECLINED and "already answered" in again.reason
    assert [r["round"] for r in SiteLedger(ledger_dir).rows()] == [1]


def test_a_resumed_simulation_with_another_batch_size_is_refused(site, after_round_1: Path,
                                                                 tmp_path: Path,
                                                                 synth_samples) -> None:
    """The ServerApp's check before a (resumed) run plans with the same code as the site."""
    from shared_model.errors import MoeHealthInputError
    from shared_model.run_config import pyproject_defaults
    from simulation.environment import check_dp_budgets

    run_dir = tmp_path / "run"
    shutil.copytree(after_round_1, run_dir / "sites" / "site-x")
    config = {**pyproject_defaults(), "dp.enabled": True, "dp.target-epsilon": TARGET,
              "num-server-rounds": 4, "pretrain-rounds": 0, "dp.sites": "site-x"}
    small = tmp_path / "small"
    small.mkdir()
    _write_samples_of(site, synth_samples, small)
    check_dp_budgets(config, {"site-x": small}, run_dir, server_round=2)  # same values: fits
    with pytest.raises(MoeHealthInputError, match="site site-x: .*expected_batch 32 -> 100000"):
        check_dp_budgets({**config, "batch-size": 100_000}, {"site-x": small}, run_dir,
                         server_round=2)


def _write_samples_of(site: SiteData, source: Path, target: Path) -> None:
    """The samples of ``site`` (source rows outside it marked as unused)."""
    from client.data.sites import read_site_samples, write_site_samples

    samples = read_site_samples(source)
    keep = {int(s) for s in site.stay_id[site.split != "unused"]}
    samples.loc[~samples["stay_id"].isin(keep), "split"] = "unused"
    write_site_samples(samples, target)


def test_noise_and_sampling_do_not_use_torch_generators(site) -> None:
    """With dropout off, a DP round draws nothing from torch's generator (its state is unchanged:
    the noise is no function of a torch seed), and it is a function of the round's 256-bit key:
    the same key replays it exactly whatever torch's seed, another key does not."""
    from client.privacy.dp_sgd import make_dp_training
    from client.rounds.training import TrainConfig, make_optimizer, train_epoch
    from shared_model.params import load_arrays

    start = model_to_arrays(build_model(MODEL))
    units = units_of_training_rows(site, "patient")
    mechanism = _mechanism(site)

    def run(key: bytes, torch_seed: int) -> np.ndarray:
        from client.privacy.settings import dp_model_config

        model = build_model(dp_model_config(replace(MODEL, dropout=0.0)))
        load_arrays(model, start)
        optimizer = make_optimizer(model.parameters(), TrainConfig(lr=1e-2))
        torch.manual_seed(torch_seed)
        before = torch.get_rng_state()
        training = make_dp_training(model, optimizer, site.subset("train"), units, mechanism,
                                    key=key)
        train_epoch(training.model, training.loader, training.optimizer, TrainConfig(),
                    torch.device("cpu"))
        assert torch.equal(before, torch.get_rng_state())  # torch's generator never drawn from
        return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])

    key = bytes(range(32))
    first = run(key, torch_seed=0)
    assert np.array_equal(first, run(key, torch_seed=987654321))
    assert not np.allclose(first, run(bytes(32), torch_seed=0))


def _mechanism(site: SiteData):
    from client.privacy.mechanism import Mechanism

    units = len(np.unique(units_of_training_rows(site, "patient")))
    return Mechanism.propose(SETTINGS, units=units, run_batch_size=32, local_epochs=1
                             ).calibrated(SETTINGS, rounds=4)


def test_no_group_that_no_patient_informs_leaves_the_site(site, tmp_path: Path) -> None:
    """Pre-training: every sent group is informed by training samples (EHR's missing indicator,
    which nearly no stay uses, is never sent). A site that declares a modality its data lacks
    would send that encoder on noise alone: it declines, with a reason that names no count."""
    from client.rounds.federated import trainable_groups

    pre = _train(site, tmp_path / "a", replace(_cfg(1), phase=Phase.PRETRAIN)).reply
    informed = trainable_groups(site, build_model(MODEL), Phase.PRETRAIN)
    sent = {parameter_group(n) for n in pre.arrays}
    assert sent and sent <= set(informed) and "missing.ehr" not in sent
    without_films = site.inputs["available"] * torch.tensor([1.0, 1.0, 0.0])
    no_films = replace(site, inputs=site.inputs | {"available": without_films})
    refused = _train(no_films, tmp_path / "b", _cfg(1)).reply
    assert refused.status is SiteStatus.DECLINED and refused.reason == MISMATCH


def test_the_privacy_unit_is_the_patient(site, tmp_path: Path) -> None:
    """Patients with several stays: each step samples patients at the ledger's rate and takes one
    stay of each; the ledger's epsilon re-accounts with dp-accounting at the patient rate."""
    from client.privacy.sampling import UnitPoissonSampler
    from client.privacy.secure_random import SecureRandom
    from shared_model.ledger import recompute

    patients = units_of_training_rows(site, "patient")
    assert len(np.unique(patients)) < len(patients)  # some patients have several stays
    sampler = UnitPoissonSampler(patients, 0.25, 400, SecureRandom())
    counts = np.zeros(len(np.unique(patients)))
    for batch in sampler:
        taken = patients[batch]
        assert len(set(taken)) == len(taken)  # at most one stay per patient per step
        counts[np.searchsorted(np.unique(patients), taken)] += 1
    assert abs(counts.mean() / 400 - 0.25) < 0.01  # Poisson rate per patient
    row = _train(site, tmp_path, _cfg(1)).reply.ledger_row
    assert row["unit"] == "patient" and "units" not in row["mechanism"]  # n stays at the site
    assert row["sample_rate"] == pytest.approx(1 / np.ceil(len(np.unique(patients)) / 32))
    pld = recompute(row)["pld"]
    assert pld <= row["epsilon"] <= pld + 0.011


def test_the_private_noise_is_gaussian_at_the_stated_scale() -> None:
    """Too little noise would be a silent privacy failure: the ChaCha20 Gaussians have the
    requested standard deviation, mean 0 and Gaussian tails; one key's streams are distinct."""
    from client.privacy.secure_random import SecureRandom

    noise = SecureRandom().gaussian_noise(400_000, std=1.5)
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1.5) < 0.01
    z = noise / 1.5
    assert abs(np.mean(z ** 4) - 3.0) < 0.05  # kurtosis of a Gaussian
    assert abs(np.mean(np.abs(z) > 1.96) - 0.05) < 0.002
    key = bytes(range(32))
    assert np.array_equal(SecureRandom(key, 1).uniform(8), SecureRandom(key, 1).uniform(8))
    assert not np.array_equal(SecureRandom(key, 0).uniform(8), SecureRandom(key, 1).uniform(8))
    with pytest.raises(ValueError, match="32 bytes"):
        SecureRandom(bytes(16))
