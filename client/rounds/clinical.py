"""What a clinical reviewer asks of a risk model beyond AUROC: calibration slope and intercept
(Van Calster et al., J Clin Epidemiol 2016) and net benefit (decision curve analysis, Vickers &
Elkin, Med Decis Making 2006), with sensitivity, specificity and PPV at stated thresholds."""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import TensorDataset

from client.data.dataset import INPUT_NAMES, age_in_years
from client.rounds.disclosure import classes_large_enough
from client.rounds.evaluation import binary_metrics, bootstrap_auroc
from shared_model.modalities import COMBINATIONS
from shared_model.protocol import (
    DECISION_THRESHOLDS,
    STATED_THRESHOLDS,
    SUBGROUP_METRICS,
    SUBGROUP_SUPPRESSED,
    subgroup_key,
)


def _logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _logistic_fit(labels: np.ndarray, columns: np.ndarray, offset: np.ndarray,
                  iterations: int = 50) -> np.ndarray:
    """Maximum-likelihood coefficients of ``logit P(y) = offset + columns @ beta`` (Newton)."""
    beta = np.zeros(columns.shape[1])
    for _ in range(iterations):
        mu = 1 / (1 + np.exp(-(offset + columns @ beta)))
        gradient = columns.T @ (labels - mu)
        hessian = (columns * (mu * (1 - mu))[:, None]).T @ columns
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(beta)), gradient)
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def calibration_slope_intercept(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """Slope: ``b`` of ``logit P(y) = a + b logit(p)`` (1 = ideal; < 1: predictions too extreme).
    Intercept (calibration-in-the-large): ``a`` of ``logit P(y) = a + logit(p)`` (0 = ideal;
    > 0: risk underestimated on average). NaN where one class is absent."""
    labels = np.asarray(labels, dtype=float)
    if len(labels) == 0 or labels.min() == labels.max():
        return math.nan, math.nan
    lp = _logit(np.asarray(probs, dtype=float))
    ones = np.ones((len(lp), 1))
    slope = _logistic_fit(labels, np.column_stack([ones, lp]), np.zeros(len(lp)))[1]
    intercept = _logistic_fit(labels, ones, lp)[0]
    return float(slope), float(intercept)


def calibration_intervals(labels: np.ndarray, probs: np.ndarray, *, resamples: int = 200,
                          seed: int = 0) -> dict[str, float]:
    """Slope and intercept with 95% percentile-bootstrap intervals (resampling stays)."""
    slope, intercept = calibration_slope_intercept(labels, probs)
    rng = np.random.default_rng(seed)
    draws = [calibration_slope_intercept(labels[i], probs[i])
             for i in (rng.integers(0, len(labels), len(labels)) for _ in range(resamples))]
    draws = np.array([d for d in draws if not math.isnan(d[0])] or [(math.nan, math.nan)])
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    return {"calibration_slope": slope, "calibration_slope_low": float(low[0]),
            "calibration_slope_high": float(high[0]), "calibration_intercept": intercept,
            "calibration_intercept_low": float(low[1]),
            "calibration_intercept_high": float(high[1])}


def net_benefit(labels: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    """``TP/n - FP/n * t/(1-t)``: treating those with risk >= t, in true positives per patient,
    counting each false positive as t/(1-t) of a true positive."""
    treated = probs >= threshold
    n = len(labels)
    true_pos = float(np.sum(treated & (labels > 0.5)))
    false_pos = float(np.sum(treated & (labels < 0.5)))
    return true_pos / n - false_pos / n * threshold / (1 - threshold)


def treat_all_benefit(prevalence: float, threshold: float) -> float:
    """Net benefit of treating everyone (treating no one is 0)."""
    return prevalence - (1 - prevalence) * threshold / (1 - threshold)


def threshold_table(labels: np.ndarray, probs: np.ndarray,
                    thresholds: tuple[float, ...] = STATED_THRESHOLDS) -> dict[str, float]:
    """Sensitivity, specificity, PPV and net benefit at each stated threshold (NaN if undefined)."""
    out: dict[str, float] = {}
    positive, negative = labels > 0.5, labels < 0.5
    for t in thresholds:
        treated = probs >= t
        tp, fp = np.sum(treated & positive), np.sum(treated & negative)
        out[f"sensitivity@{t:g}"] = float(tp / positive.sum()) if positive.any() else math.nan
        out[f"specificity@{t:g}"] = (float(np.sum(~treated & negative) / negative.sum())
                                     if negative.any() else math.nan)
        out[f"ppv@{t:g}"] = float(tp / (tp + fp)) if tp + fp else math.nan
    return out


def decision_curve(labels: np.ndarray, probs: np.ndarray,
                   thresholds: tuple[float, ...] = DECISION_THRESHOLDS) -> dict[str, list[float]]:
    """Net benefit of the model and of treating all over ``thresholds`` (treat none: 0)."""
    prevalence = float(np.mean(labels)) if len(labels) else math.nan
    return {"threshold": list(thresholds),
            "model": [net_benefit(labels, probs, t) for t in thresholds],
            "treat_all": [treat_all_benefit(prevalence, t) for t in thresholds]}


AGE_BANDS = ((18, 50, "18-49"), (50, 65, "50-64"), (65, 80, "65-79"), (80, 200, "80+"))


def subgroups(age: np.ndarray, female: np.ndarray, combination: list[str]
              ) -> dict[str, np.ndarray]:
    """Each stay's subgroup per dimension: sex, age band and modality combination."""
    bands = np.full(len(age), "", dtype=object)
    for low, high, name in AGE_BANDS:
        bands[(age >= low) & (age < high)] = name
    return {"sex": np.where(female > 0.5, "female", "male"), "age": bands,
            "modalities": np.asarray(combination, dtype=object)}


def stay_subgroups(stays: TensorDataset, combo: np.ndarray) -> dict[str, np.ndarray]:
    """``subgroups`` of the stays of a split (their demographics input) given each stay's
    modality-combination index (``Predictions.combo``; -1 for none)."""
    demographics = stays.tensors[INPUT_NAMES.index("demographics")].numpy()
    return subgroups(age_in_years(demographics), demographics[:, 1],
                     [COMBINATIONS[c] if c >= 0 else "" for c in combo])


def subgroup_metrics(labels: np.ndarray, probs: np.ndarray, groups: dict[str, np.ndarray],
                     min_cell_size: int, *, resamples: int = 200) -> dict[str, float]:
    """Per subgroup: n, positives, AUROC with a 95% bootstrap interval, calibration-in-the-large
    and Brier score. A dimension is released whole or not at all (rule 3 of
    client/rounds/disclosure.py): when any of its subgroups has fewer than ``min_cell_size``
    positives or negatives, the dimension carries only ``<dimension>.suppressed = 1``, because
    the released total minus the other subgroups would give the small one's counts. For the
    same reason the stays in no subgroup of the dimension (group "") must be none or a large
    cell too."""
    out: dict[str, float] = {}
    for dimension, values in groups.items():
        names = np.asarray(values).astype(str)
        present = sorted({v for v in names if v})
        unassigned = labels[names == ""]
        if not present or not all(
                classes_large_enough(labels[names == v], min_cell_size) for v in present) or (
                len(unassigned) and not classes_large_enough(unassigned, min_cell_size)):
            out[subgroup_key(dimension, "", SUBGROUP_SUPPRESSED)] = 1.0
            continue
        for value in present:
            rows = names == value
            y, p = labels[rows], probs[rows]
            metrics = binary_metrics(y, p)
            low, high = bootstrap_auroc(y, p, resamples=resamples)
            values = {"n": float(len(y)), "positives": float(y.sum()), "auroc": metrics["auroc"],
                      "auroc_low": low, "auroc_high": high,
                      "calibration_intercept": calibration_slope_intercept(y, p)[1],
                      "brier": metrics["brier"]}
            out |= {subgroup_key(dimension, value, m): values[m] for m in SUBGROUP_METRICS}
    return out


def platt_recalibrated(val_labels: np.ndarray, val_probs: np.ndarray, test_labels: np.ndarray,
                       test_probs: np.ndarray) -> dict[str, float]:
    """Platt scaling fitted on validation (``logit p' = a + b logit p``), applied to test: Brier,
    slope and intercept after it. Reported beside the model's own numbers, never applied to
    what the model outputs. Empty where validation holds one class."""
    if len(val_labels) == 0 or val_labels.min() == val_labels.max():
        return {}
    lp = _logit(np.asarray(val_probs, dtype=float))
    a, b = _logistic_fit(np.asarray(val_labels, float), np.column_stack([np.ones(len(lp)), lp]),
                         np.zeros(len(lp)))
    recalibrated = 1 / (1 + np.exp(-(a + b * _logit(np.asarray(test_probs, dtype=float)))))
    slope, intercept = calibration_slope_intercept(test_labels, recalibrated)
    return {"platt_brier": float(np.mean((recalibrated - test_labels) ** 2)),
            "platt_calibration_slope": slope, "platt_calibration_intercept": intercept}
