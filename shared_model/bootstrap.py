"""Bootstrap resamples of a test set and their AUROCs, fast enough to run every round.

A resample is a count per sample (how often it is drawn); the AUROC of a resample is the
Mann-Whitney statistic with those multiplicities (ties count half), computed from scores ranked
once, so each resample costs two ``bincount`` calls instead of a sort. Numpy only: the sites'
evaluation (client/) and the model comparisons (simulation/) share it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

__all__ = ["RankedScores", "bootstrap_auroc_percentiles", "paired_auroc_differences",
           "resample_counts"]


def resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each of ``n`` samples is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield np.bincount(rng.integers(0, n, n), minlength=n)


class RankedScores:
    """Labels and scores, the scores ranked once; :meth:`auroc` of any resample's counts."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:
        _, self.level = np.unique(np.asarray(scores), return_inverse=True)
        self.levels = int(self.level.max()) + 1 if len(self.level) else 0
        self.positive = np.asarray(labels).astype(bool)

    def auroc(self, counts: np.ndarray | None = None) -> float:
        """AUROC with each sample weighted by its count (all ones: the plain AUROC); NaN when
        the resample lacks a class."""
        counts = np.ones(len(self.positive)) if counts is None else counts
        pos = np.bincount(self.level, weights=counts * self.positive, minlength=self.levels)
        neg = np.bincount(self.level, weights=counts * ~self.positive, minlength=self.levels)
        below = np.cumsum(neg) - neg
        pairs = pos.sum() * neg.sum()
        return float((pos * (below + 0.5 * neg)).sum() / pairs) if pairs else math.nan


def bootstrap_auroc_percentiles(labels: np.ndarray, scores: np.ndarray, resamples: int,
                                seed: int = 0) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of the resampled AUROCs (NaN when undefined)."""
    if len(labels) == 0 or len(np.unique(labels)) < 2:
        return math.nan, math.nan
    ranked = RankedScores(labels, scores)
    values = np.array([ranked.auroc(c) for c in resample_counts(len(labels), resamples, seed)])
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def paired_auroc_differences(labels: np.ndarray, first: np.ndarray, second: np.ndarray,
                             resamples: int, seed: int = 0) -> np.ndarray:
    """AUROC(first) - AUROC(second) on each bootstrap resample of the same samples (paired)."""
    a, b = RankedScores(labels, np.asarray(first)), RankedScores(labels, np.asarray(second))
    return np.array([a.auroc(c) - b.auroc(c)
                     for c in resample_counts(len(np.asarray(labels)), resamples, seed)])
