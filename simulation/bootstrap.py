"""Bootstrap intervals for model comparisons on one test set: AUROC and paired AUROC differences."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from shared_model.bootstrap import RankedScores, paired_auroc_differences, resample_counts

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


def auroc_interval(labels: np.ndarray, scores: np.ndarray, resamples: int = RESAMPLES,
                   seed: int = 0) -> Interval:
    """AUROC with its 95% bootstrap interval (resampling stays)."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return Interval(math.nan, math.nan, math.nan)
    ranked = RankedScores(labels, np.asarray(scores))
    values = [ranked.auroc(c) for c in resample_counts(len(labels), resamples, seed)]
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return Interval(float(roc_auc_score(labels, scores)), float(low), float(high))


def paired_difference(labels: np.ndarray, first: np.ndarray, second: np.ndarray,
                      resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """AUROC(first) - AUROC(second) on the same stays, the interval from paired resamples."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return Interval(math.nan, math.nan, math.nan)
    diffs = paired_auroc_differences(labels, first, second, resamples, seed)
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    point = roc_auc_score(labels, first) - roc_auc_score(labels, second)
    return Interval(float(point), float(low), float(high))


def unpaired_difference(labels_a: np.ndarray, scores_a: np.ndarray, labels_b: np.ndarray,
                        scores_b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
                        ) -> Interval:
    """AUROC on set a minus AUROC on set b (different stays, e.g. internal vs external test
    stays), the interval from independent resamples of each set."""
    if len(np.unique(labels_a)) < 2 or len(np.unique(labels_b)) < 2:
        return Interval(math.nan, math.nan, math.nan)
    a, b = RankedScores(labels_a, np.asarray(scores_a)), RankedScores(labels_b, np.asarray(scores_b))
    diffs = [a.auroc(x) - b.auroc(y) for x, y in zip(
        resample_counts(len(labels_a), resamples, seed),
        resample_counts(len(labels_b), resamples, seed + 1), strict=True)]
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    point = roc_auc_score(labels_a, scores_a) - roc_auc_score(labels_b, scores_b)
    return Interval(float(point), float(low), float(high))
