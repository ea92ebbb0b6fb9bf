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


def _resample_counts(n: int, resamples: int, seed: int):
    """How often each stay is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield np.bincount(rng.integers(0, n, n), minlength=n)


class _RankedScores:
    """Scores sorted once, so a resample's AUROC (the Mann-Whitney statistic with multiplicities,
    ties counted half) costs two bincounts instead of a sort."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:
        _, self.level = np.unique(scores, return_inverse=True)
        self.levels = int(self.level.max()) + 1
        self.positive = labels.astype(bool)

    def auroc(self, counts: np.ndarray) -> float:
        pos = np.bincount(self.level, weights=counts * self.positive, minlength=self.levels)
        neg = np.bincount(self.level, weights=counts * ~self.positive, minlength=self.levels)
        below = np.cumsum(neg) - neg
        pairs = pos.sum() * neg.sum()
        return float((pos * (below + 0.5 * neg)).sum() / pairs) if pairs else math.nan


def auroc_interval(labels: np.ndarray, scores: np.ndarray, resamples: int = RESAMPLES,
                   seed: int = 0) -> Interval:
    """AUROC with its 95% bootstrap interval (resampling stays)."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return Interval(math.nan, math.nan, math.nan)
    ranked = _RankedScores(labels, np.asarray(scores))
    values = [ranked.auroc(c) for c in _resample_counts(len(labels), resamples, seed)]
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return Interval(float(roc_auc_score(labels, scores)), float(low), float(high))


def paired_difference(labels: np.ndarray, first: np.ndarray, second: np.ndarray,
                      resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """AUROC(first) - AUROC(second) on the same stays, the interval from paired resamples."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return Interval(math.nan, math.nan, math.nan)
    a, b = _RankedScores(labels, np.asarray(first)), _RankedScores(labels, np.asarray(second))
    diffs = [a.auroc(c) - b.auroc(c) for c in _resample_counts(len(labels), resamples, seed)]
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    point = roc_auc_score(labels, first) - roc_auc_score(labels, second)
    return Interval(float(point), float(low), float(high))
