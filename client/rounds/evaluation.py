"""Aggregate metrics (AUROC, AUPRC, F1, loss), per modality combination, and routing tables."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from client.rounds.training import Predictions, bce_loss
from shared_model.bootstrap import bootstrap_auroc_percentiles
from shared_model.modalities import COMBINATIONS


def _safe(fn, y: np.ndarray, p: np.ndarray) -> float:
    return float(fn(y, p)) if len(np.unique(y)) == 2 else math.nan


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5
                   ) -> dict[str, float]:
    """AUROC, AUPRC, F1 at ``threshold``, BCE loss and count (NaN where undefined)."""
    if len(labels) == 0:
        return {"auroc": math.nan, "auprc": math.nan, "f1": math.nan, "loss": math.nan,
                "brier": math.nan, "n": 0}
    loss = bce_loss(labels, probs)
    return {"auroc": _safe(roc_auc_score, labels, probs),
            "auprc": _safe(average_precision_score, labels, probs),
            "f1": float(f1_score(labels, probs >= threshold, zero_division=0)),
            "loss": loss, "brier": float(np.mean((probs - labels) ** 2)), "n": int(len(labels))}


def bootstrap_auroc(labels: np.ndarray, probs: np.ndarray, *, resamples: int = 200,
                    seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the AUROC, resampling samples (NaN if undefined)."""
    return bootstrap_auroc_percentiles(labels, probs, resamples, seed)


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 10
                     ) -> dict[str, list[float]]:
    """Reliability diagram: equal-count bins of the predicted probability (risk is skewed, so
    equal-width bins would leave most empty), with mean predicted and observed rate per bin."""
    order = np.argsort(probs, kind="stable")
    chunks = [c for c in np.array_split(order, min(bins, len(order))) if len(c)]
    return {"predicted": [float(probs[c].mean()) for c in chunks],
            "observed": [float(labels[c].mean()) for c in chunks],
            "count": [float(len(c)) for c in chunks]}


def best_f1_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """Threshold maximizing F1 (chosen on validation data, applied to test)."""
    candidates = np.unique(np.round(probs, 4))
    positives = np.sort(probs[labels > 0.5])
    if len(candidates) == 0 or len(positives) == 0:
        return 0.5
    # F1 = 2 TP / (predicted positive + positive), for every candidate at once
    predicted = len(probs) - np.searchsorted(np.sort(probs), candidates, side="left")
    true_positive = len(positives) - np.searchsorted(positives, candidates, side="left")
    scores = 2 * true_positive / (predicted + len(positives))
    return float(candidates[int(np.argmax(scores))])


def evaluate_predictions(pred: Predictions, threshold: float = 0.5) -> dict:
    """Overall metrics plus the same per modality combination present in the data."""
    result = binary_metrics(pred.labels, pred.probs, threshold)
    result["by_combination"] = {
        COMBINATIONS[c]: binary_metrics(pred.labels[pred.combo == c], pred.probs[pred.combo == c],
                                        threshold)
        for c in np.unique(pred.combo) if c >= 0
    }
    return result


def routing_table(pred: Predictions) -> dict[str, dict[str, float]]:
    """Mean routing weight of each expert, per modality combination of the samples."""
    if pred.weights is None:
        return {}
    return {COMBINATIONS[c]: dict(zip(COMBINATIONS, pred.weights[pred.combo == c].mean(0).round(4)
                                      .tolist(), strict=True))
            for c in np.unique(pred.combo) if c >= 0}
