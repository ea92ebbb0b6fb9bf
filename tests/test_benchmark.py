"""The benchmark preset: independent test population, pre-trained image backbone, yardstick."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moehealth.cli import main
from shared_model.run_config import pyproject_defaults
from simulation.prepare import PRESETS, FederationData


def test_benchmark_preset_sets_the_federation_through_the_run_config() -> None:
    config = {**pyproject_defaults(), "data.preset": "benchmark"}
    data = FederationData.from_run_config(config)
    assert data.test_patients == PRESETS["benchmark"]["test_patients"] >= 12000
    assert data.image_encoder == "synthetic-pacs" and data.num_sites == 5
    assert FederationData.from_run_config(pyproject_defaults()).test_patients == 0  # quick start
    with pytest.raises(ValueError, match="data.preset must be one of benchmark"):
        FederationData.from_run_config({**pyproject_defaults(), "data.preset": "huge"})
    with pytest.raises(ValueError, match="data.image-encoder"):
        FederationData(image_encoder="/nonexistent/weights.pt")
    from moehealth.cli_options import PRESET_NAMES

    assert PRESET_NAMES == tuple(PRESETS)  # the CLI offers every preset
    hospitals = FederationData.from_run_config({**pyproject_defaults(),
                                                "data.preset": "benchmark-hospitals"})
    assert hospitals.arm == "hospitals-v1" and hospitals.key() != data.key()
    assert hospitals.test_population_dir() != data.test_population_dir()


def test_cohort_and_partition_do_not_depend_on_encoders_or_test_population() -> None:
    base = FederationData(patients=100)
    assert base.key() == FederationData(patients=100, test_patients=50, image_size=64).key()
    assert base.test_population_dir() is None
    assert FederationData(patients=100, test_patients=50).test_population_dir() is not None


@pytest.fixture(scope="module")
def pacs_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pacs") / "densenet121.pt"
    assert main(["pretrain-image", "--patients", "30", "--image-size", "64", "--epochs", "1",
                 "--out", str(out)]) == 0
    return out


def test_image_backbone_is_pretrained_on_an_archive_disjoint_from_every_site(
        pacs_weights: Path, synth_cohort) -> None:
    from client.features.image import ImageEncoder

    card = json.loads(pacs_weights.with_suffix(".json").read_text())
    assert card["films"] > 0 and set(card["held_out_r2"]) == {"cardio", "effusion", "opacity",
                                                                "device"}
    assert not set(card["subjects"]) & set(synth_cohort.subject_id.astype(int))
    encoder = ImageEncoder(pacs_weights, image_size=64)
    assert "random-init" not in encoder.identity


@pytest.mark.slow
def test_yardstick_scores_an_independent_test_population(tmp_path: Path, pacs_weights: Path,
                                                         monkeypatch, capsys, caplog) -> None:
    from simulation import tabular_baselines

    monkeypatch.setattr(tabular_baselines, "LR_C", (0.01, 0.1))  # real fits, smaller grids
    monkeypatch.setattr(tabular_baselines, "HGB_GRID", tabular_baselines.HGB_GRID[:1])
    out = tmp_path / "yardstick"
    args = ["--data-dir", str(tmp_path / "data"), "--patients", "240", "--sites", "2",
            "--test-patients", "120", "--image-encoder", str(pacs_weights), "--image-size", "64"]
    assert main(["experiment", "yardstick", "--out", str(out), *args]) == 0
    rows = pd.read_csv(out / "results.csv")
    assert set(rows.test_set) == {"independent test population"}
    assert {"reachable ceiling, all modalities", "reachable ceiling, EHR",
            "true probability (oracle)", "logistic regression, EHR",
            "gradient boosting, all modalities"} <= set(rows.model)
    assert ((rows.auroc_low <= rows.auroc) & (rows.auroc <= rows.auroc_high)).all()
    ceiling = rows.set_index("model").loc["reachable ceiling, all modalities"]
    assert ceiling.fraction_of_reachable == pytest.approx(1.0)
    assert not rows.chosen_on_validation[rows.model.str.startswith("logistic")].isna().any()
    diffs = pd.read_csv(out / "differences.csv")
    assert (diffs.low <= diffs.high).all() and len(diffs) == 6
    assert "n = " in (out / "results.md").read_text()

    data = FederationData(data_dir=tmp_path / "data", patients=240, num_sites=2, test_patients=120,
                          image_encoder=str(pacs_weights), image_size=64)
    sites = data.sites_dir()
    site_stays = np.concatenate([pd.read_parquet(p / "samples.parquet", columns=["stay_id"])
                                 .stay_id.to_numpy() for p in sites.iterdir() if p.is_dir()])
    test_stays = pd.read_csv(data.test_oracle_csv()).stay_id.to_numpy()
    assert rows.n.iloc[0] <= len(test_stays) and not set(site_stays) & set(test_stays)

    models = tmp_path / "models"
    caplog.set_level("INFO", logger="simulation.tabular_baselines")
    assert main(["experiment", "models", "--out", str(models), "--variant", "moe-health",
                 "--variant", "unimodal-notes", "--epochs", "1", "--pretrain-epochs", "1",
                 "--lrs", "1e-4", "1e-3",
                 *args]) == 0
    yardstick = pd.read_csv(out / "results.csv").set_index("model")
    rows = pd.read_csv(models / "results.csv").set_index("model")
    # the deterministic tabular fits of the yardstick are reused, not refitted
    assert "tabular baselines reused" in caplog.text and "fitted in" not in caplog.text
    for name in ("logistic regression, all modalities", "logistic regression, pattern submodels"):
        assert rows.loc[name, "auroc"] == yardstick.loc[name, "auroc"]
    assert rows.loc["moe-health", "chosen_on_validation"] in ("lr 0.0001", "lr 0.001")
    assert 0 <= rows.loc["unimodal-notes", "auroc_with_its_modality"] <= 1
    assert rows.loc["moe-health", "n"] == rows.loc["reachable ceiling, all modalities", "n"]
    diffs = pd.read_csv(models / "differences.csv")
    assert "moe-health (seed 0) - unimodal-notes (seed 0)" in set(diffs.comparison)
    assert "moe-health (seed 0) - gradient boosting, all modalities" in set(diffs.comparison)
    card = json.loads((models / "model_card.json").read_text())  # TRIPOD+AI items, per experiment
    auroc = card["20 performance"]["mortality: moe-health (seed 0)"]
    assert auroc == pytest.approx(list(rows.loc["moe-health", ["auroc", "auroc_low", "auroc_high"]]))
    assert card["8 outcome"].startswith("in-hospital death") and "ethics approval" in card
    robust = tmp_path / "robustness"
    assert main(["experiment", "robustness", "--out", str(robust), "--variant", "moe-health",
                 "--epochs", "1", "--pretrain-epochs", "1", "--fractions", "0", "0.5", "1",
                 *args]) == 0
    curve = pd.read_csv(robust / "results.csv")
    assert {"moe-health (seed 0)", "logistic regression, pattern submodels",
            "gradient boosting, all modalities"} <= set(curve.model)
    assert set(curve.modality) == {"notes", "cxr"} and set(curve.fraction_removed) == {0, 0.5, 1}
    assert (curve[curve.fraction_removed == 0].change == 0).all()
    ehr_only = curve[curve.model == "logistic regression, EHR"]
    assert ehr_only.auroc.nunique() == 1  # a model that never reads the modality cannot change
    assert (robust / "robustness-cxr.png").stat().st_size > 1000
    paired = pd.read_csv(robust / "differences.csv")
    assert "moe-health (seed 0) - logistic regression, all modalities" in set(paired.comparison)
    assert (paired.low <= paired.high).all() and "paired difference" in (
        robust / "results.md").read_text()

    external = tmp_path / "external"  # leave one hospital out, on the same small federation
    assert main(["experiment", "external", "--out", str(external), "--variant", "moe-health",
                 "--epochs", "1", "--pretrain-epochs", "1", *args]) == 0
    rows = pd.read_csv(external / "results.csv")
    assert set(rows.held_out) == {"site-0", "site-1"}
    assert {"moe-health (seed 0)", "logistic regression, all modalities"} <= set(rows.model)
    first = rows.groupby("held_out").first()
    # every test stay is internal or external, and the two sets swap with the held-out site
    assert (first.internal_n + first.external_n).nunique() == 1
    assert first.loc["site-0", "external_n"] == first.loc["site-1", "internal_n"]
    good = rows.dropna(subset=["change"])
    assert ((good.change_low <= good.change) & (good.change <= good.change_high)).all()
    assert "site-0 held out" in (external / "results.md").read_text()
    performance = json.loads((external / "model_card.json").read_text())["20 performance"]
    assert "moe-health (seed 0), site-1 held out" in performance
    assert main(["experiment", "external", "--out", str(external), *args, "--scheme", "iid"]) == 2
    assert "external validation needs hospitals (data.scheme careunit)" in capsys.readouterr().err


def test_a_modality_removed_at_test_time_looks_like_one_never_recorded(synth_features) -> None:
    from client.data.dataset import SiteData
    from simulation.robustness import without_modality

    site = SiteData.load(synth_features, "mortality", "site-a")
    test = site.split == "test"
    had = site.inputs["available"].numpy()[:, 1] > 0.5
    half = without_modality(site, "notes", 0.5)
    gone = had & (half.inputs["available"].numpy()[:, 1] < 0.5)
    assert gone.sum() == round(0.5 * (had & test).sum()) and not (gone & ~test).any()
    assert (half.inputs["notes"].numpy()[gone] == 0).all()
    every = without_modality(site, "notes", 1.0)
    assert not (every.inputs["available"].numpy()[test, 1] > 0.5).any()
    assert (every.inputs["available"].numpy()[gone, 1] < 0.5).all()  # a superset of the half
    assert (site.inputs["available"].numpy()[:, 1] > 0.5).sum() == had.sum()  # input untouched
    assert np.array_equal(without_modality(site, "notes", 0.0).inputs["notes"].numpy(),
                          site.inputs["notes"].numpy())


def test_image_pretraining_writes_weights_with_a_card_and_reuses_them(tmp_path: Path, caplog
                                                                      ) -> None:
    """The synthetic-PACS pre-training at a toy size: weights and card written, a second call
    reuses the file without training, and the encoder loads the weights."""
    from client.features.image import ImageEncoder
    from simulation.image_pretraining import PacsPretraining, pretrain_image_encoder

    config = PacsPretraining(patients=40, epochs=1, image_size=32, batch_size=8)
    with caplog.at_level("INFO"):
        out = pretrain_image_encoder(config, tmp_path / "w.pt")
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["films"] > 8 and set(card["held_out_r2"]) == {"cardio", "effusion", "opacity",
                                                              "device"}
    assert "image pre-training" in caplog.text
    stamp = out.stat().st_mtime_ns
    assert pretrain_image_encoder(config, out) == out and out.stat().st_mtime_ns == stamp
    assert "random-init" not in ImageEncoder(out, image_size=32).identity
