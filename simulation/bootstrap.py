"""Bootstrap intervals for model comparisons on one test set: AUROC and paired AUROC differences."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

RESAMPLES = 1000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% percentile-bootstrap interval."""

    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def signed(self) -> str:
        """``+0.041 [+0.020, +0.063]`` (differences)."""
        return f"{self.value:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def _resamples(labels: np.ndarray, resamples: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        if 0 < labels[idx].sum() < len(idx):
            yield idx


def auroc_interval(labels: np.ndarray, scores: np.ndarray, resamples: int = RESAMPLES,
                   seed: int = 0) -> Interval:
    """AUROC with its 95% bootstrap interval (resampling stays)."""
    labels = np.asarray(labels)
    values = [roc_auc_score(labels[i], scores[i]) for i in _resamples(labels, resamples, seed)]
    if len(np.unique(labels)) < 2 or not values:
        return Interval(math.nan, math.nan, math.nan)
    low, high = np.percentile(values, [2.5, 97.5])
    return Interval(float(roc_auc_score(labels, scores)), float(low), float(high))


def paired_difference(labels: np.ndarray, first: np.ndarray, second: np.ndarray,
                      resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """AUROC(first) - AUROC(second) on the same stays, the interval from paired resamples."""
    labels = np.asarray(labels)
    diffs = [roc_auc_score(labels[i], first[i]) - roc_auc_score(labels[i], second[i])
             for i in _resamples(labels, resamples, seed)]
    if len(np.unique(labels)) < 2 or not diffs:
        return Interval(math.nan, math.nan, math.nan)
    low, high = np.percentile(diffs, [2.5, 97.5])
    point = roc_auc_score(labels, first) - roc_auc_score(labels, second)
    return Interval(float(point), float(low), float(high))
