"""Calibration slope/intercept, net benefit and threshold metrics against direct computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression

from client.rounds.clinical import (
    calibration_intervals,
    calibration_slope_intercept,
    decision_curve,
    net_benefit,
    threshold_table,
)


def _population(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = 1 / (1 + np.exp(-rng.normal(-2.0, 1.2, n)))
    return (rng.random(n) < probs).astype(float), probs


def test_slope_and_intercept_equal_a_direct_logistic_fit() -> None:
    labels, probs = _population()
    shown = np.clip(probs * 0.7, 1e-6, 1)  # risk underestimated
    slope, intercept = calibration_slope_intercept(labels, shown)
    lp = np.log(shown / (1 - shown))
    fit = LogisticRegression(penalty=None, tol=1e-10, max_iter=1000).fit(lp[:, None], labels)
    assert slope == pytest.approx(fit.coef_[0, 0], abs=1e-4)

    def nll(a: float) -> float:
        eta = a + lp
        return float(np.sum(np.logaddexp(0, eta) - labels * eta))
    assert intercept == pytest.approx(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x,
                                      abs=1e-4)
    assert intercept > 0  # underestimated risk reads as a positive intercept


def test_calibrated_and_overconfident_models_read_as_such() -> None:
    labels, probs = _population()
    ideal = calibration_intervals(labels, probs, resamples=100)
    assert ideal["calibration_slope_low"] < 1 < ideal["calibration_slope_high"]
    assert ideal["calibration_intercept_low"] < 0 < ideal["calibration_intercept_high"]
    lp = np.log(probs / (1 - probs))
    extreme = 1 / (1 + np.exp(-2 * lp))  # twice the log-odds: too extreme
    assert calibration_slope_intercept(labels, extreme)[0] == pytest.approx(0.5, abs=0.08)
    assert np.isnan(calibration_slope_intercept(np.zeros(5), np.full(5, 0.2))[0])


def test_net_benefit_and_threshold_table_by_hand() -> None:
    labels = np.array([1, 1, 0, 0, 0], dtype=float)
    probs = np.array([0.9, 0.2, 0.3, 0.1, 0.05])
    # treated at 0.25: the 0.9 (true positive) and the 0.3 (false positive)
    assert net_benefit(labels, probs, 0.25) == pytest.approx(1 / 5 - 1 / 5 * (0.25 / 0.75))
    table = threshold_table(labels, probs, (0.25,))
    assert table == {"sensitivity@0.25": 0.5, "specificity@0.25": pytest.approx(2 / 3),
                     "ppv@0.25": 0.5}
    curve = decision_curve(labels, probs, (0.1, 0.5))
    assert curve["treat_all"] == pytest.approx([0.4 - 0.6 * (0.1 / 0.9), 0.4 - 0.6])
    assert curve["model"][1] == pytest.approx(net_benefit(labels, probs, 0.5))


def test_subgroup_metrics_match_a_direct_computation_and_suppress_small_classes() -> None:
    from sklearn.metrics import roc_auc_score

    from client.rounds.clinical import subgroup_metrics, subgroups

    labels, probs = _population(3000, seed=1)
    rng = np.random.default_rng(2)
    age = rng.uniform(18, 95, len(labels))
    female = (rng.random(len(labels)) < 0.45).astype(float)
    combination = np.where(rng.random(len(labels)) < 0.01, "ehr+cxr", "ehr+notes").tolist()
    groups = subgroups(age, female, combination)
    out = subgroup_metrics(labels, probs, groups, min_cell_size=10, resamples=50)
    old = (age >= 80)
    assert out["subgroup.age.80+.n"] == old.sum()
    assert out["subgroup.age.80+.auroc"] == pytest.approx(roc_auc_score(labels[old], probs[old]))
    assert out["subgroup.sex.female.brier"] == pytest.approx(
        np.mean((probs[female > 0.5] - labels[female > 0.5]) ** 2))
    # ~30 EHR+X-ray stays: too few positives, so no modality subgroup is released at all (the
    # total minus ehr+notes would give ehr+cxr's counts)
    assert out["subgroup.modalities.suppressed"] == 1.0
    assert [k for k in out if k.startswith("subgroup.modalities.")] == ["subgroup.modalities.suppressed"]
    # a few stays in no group of a dimension (unit unknown): the released groups' total would
    # leave theirs as the difference, so the dimension is suppressed too
    unit = np.where(rng.random(len(labels)) < 0.5, "MICU", "SICU").astype(object)
    unit[:12] = ""
    assert subgroup_metrics(labels, probs, {"unit": unit}, 10, resamples=5) == {
        "subgroup.unit.suppressed": 1.0}
    unit[:12] = "MICU"
    assert "subgroup.unit.MICU.auroc" in subgroup_metrics(labels, probs, {"unit": unit}, 10,
                                                          resamples=5)


def test_platt_recalibration_fixes_a_shifted_model_and_is_reported_separately() -> None:
    from client.rounds.clinical import platt_recalibrated

    labels, probs = _population(6000, seed=3)
    shifted = np.clip(probs * 0.5, 1e-6, 1)  # risk halved: intercept well above 0
    half = len(labels) // 2
    before = calibration_slope_intercept(labels[half:], shifted[half:])[1]
    after = platt_recalibrated(labels[:half], shifted[:half], labels[half:], shifted[half:])
    assert before > 0.4 and abs(after["platt_calibration_intercept"]) < 0.15
    assert after["platt_brier"] < np.mean((shifted[half:] - labels[half:]) ** 2)
    assert platt_recalibrated(np.zeros(4), np.full(4, 0.1), labels, probs) == {}


def test_a_report_shows_no_count_under_the_cell_size(tmp_path: Path) -> None:
    """A run whose site-a holds 7 test deaths (cell size 10) and whose pooled and site subgroup
    releases withheld a dimension: the page shows none of the withheld numbers."""
    import json
    import re

    from server.report import build_report
    from shared_model.protocol import pooled_key, subgroup_key

    def split(samples: int, positives: int) -> dict:
        return {"samples": samples, "positives": positives, "with_ehr": samples,
                "with_notes": samples // 2, "with_cxr": samples // 3}
    summary = {"task": "mortality", "source": "synthetic MIMIC-format, test",
               "sites": {"site-a": {"train": split(400, 60), "val": split(80, 12),
                                    "test": split(80, 7)},
                         "site-b": {"train": split(500, 70), "val": split(90, 15),
                                    "test": split(90, 13)}}}
    pooled = {"round": 1, "kind": "centralized-eval", pooled_key("auroc"): 0.8,
              pooled_key("n"): 170.0, pooled_key("positives"): 20.0, pooled_key("brier"): 0.1,
              pooled_key(subgroup_key("sex", "", "suppressed")): 1.0}
    site = {"round": 1, "site": "site-b", "kind": "evaluate", "num-examples": 90,
            subgroup_key("age", "", "suppressed"): 1.0, subgroup_key("sex", "", "suppressed"): 1.0}
    (tmp_path / "config.json").write_text(json.dumps({"task": "mortality",
                                                      "data.min-cell-size": 10}))
    (tmp_path / "data_summary.json").write_text(json.dumps(summary))
    train = {"round": 1, "kind": "train", "accepted": ["site-a", "site-b"],
             "contributors": {"gate": {"site-a": 400, "site-b": 500}}}
    (tmp_path / "rounds.jsonl").write_text("\n".join(json.dumps(r) for r in (train, pooled)))
    (tmp_path / "site_metrics.jsonl").write_text(json.dumps(site))
    build_report(tmp_path)
    page = (tmp_path / "report" / "report.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| site-a | 400"))
    assert "| 79 (14%) |" in row  # deaths over all splits: large enough to show
    card = json.loads((tmp_path / "report" / "model_card.json").read_text())
    assert str(card["10 sample size"]["site-a"]).startswith("suppressed")  # 7 test deaths
    assert not re.search(r"events: 7\b", page)
    assert card["10 sample size"]["site-b"]["test"]["events"] == 13
    assert "sex: every subgroup | suppressed" in page and "age: every subgroup | suppressed" in page
    assert page.count("every subgroup | suppressed") == 3  # pooled sex; site-b's age and sex
