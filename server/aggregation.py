"""Per-group aggregation: each parameter group averaged only over the sites that sent it.

Pure numpy; the strategy feeds it validated site updates. Robust options replace the weighted
mean per group by a coordinate-wise trimmed mean or median over the contributing sites.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from shared_model.params import parameter_group


class Aggregation(StrEnum):
    MEAN = "mean"
    TRIMMED_MEAN = "trimmed-mean"
    MEDIAN = "median"


@dataclass(frozen=True)
class SiteUpdate:
    """One site's reply after validation: its parameters and the sample count behind each group."""

    site: str
    arrays: dict[str, np.ndarray]
    weights: dict[str, int]


def validate_update(update: SiteUpdate, reference: dict[str, np.ndarray]) -> str | None:
    """Return why an update must be rejected, or None if it is usable."""
    for name, value in update.arrays.items():
        if name not in reference:
            return f"unknown parameter '{name}'"
        if value.shape != reference[name].shape:
            return f"{name}: shape {value.shape} != {reference[name].shape}"
        if not np.isfinite(value).all():
            return f"{name}: contains NaN or Inf"
        group = parameter_group(name)
        if update.weights.get(group, 0) <= 0:
            return f"{name}: no positive sample count for group '{group}'"
    return None


def trimmed_count(contributors: int, trim: float) -> int:
    """How many contributions a trimmed mean drops at each end (0 below 3 contributors)."""
    return int(np.floor(trim * contributors)) if contributors >= 3 else 0


def min_trimmed_contributors(trim: float) -> int:
    """The fewest contributors for which ``trim`` drops anything."""
    if trim <= 0:
        return 0
    n = max(3, math.ceil(1 / trim))
    while trimmed_count(n, trim) == 0:  # float rounding of trim x n
        n += 1
    return n


def _combine(stack: np.ndarray, weights: np.ndarray, method: Aggregation, trim: float) -> np.ndarray:
    # The robust rules are coordinate-wise and unweighted (as Flower's FedMedian and
    # FedTrimmedAvg): a weight is the site's own claim, and a site that could inflate its weight
    # could move a weighted median as far as a mean.
    if method is Aggregation.MEDIAN:
        return np.median(stack, axis=0)
    if method is Aggregation.TRIMMED_MEAN:
        cut = trimmed_count(len(stack), trim)
        if cut > 0:
            ordered = np.sort(stack, axis=0)
            return ordered[cut:len(stack) - cut].mean(axis=0)
    # Too few contributors to trim anything: a weighted mean (the strategy warns once per group)
    return np.tensordot(weights / weights.sum(), stack, axes=1)


def aggregate_groups(current: dict[str, np.ndarray], updates: list[SiteUpdate],
                     method: Aggregation = Aggregation.MEAN, trim: float = 0.2
                     ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]]]:
    """New global arrays and, per group, ``{site: weight}`` of its contributors.

    A parameter nobody sent keeps its current value.
    """
    by_name: dict[str, list[tuple[np.ndarray, int]]] = defaultdict(list)
    contributors: dict[str, dict[str, int]] = defaultdict(dict)
    for up in updates:
        for name, value in up.arrays.items():
            # The weight is per group, not per site: the samples behind that group at that site
            # (e.g. an expert's weight is the site's stays of its combination, a released cell),
            # so a site with few X-rays moves the image encoder little however large it is.
            # A DP site sends its public weight instead (client/privacy/settings.py).
            group = parameter_group(name)
            by_name[name].append((value, up.weights[group]))
            contributors[group][up.site] = up.weights[group]
    new = dict(current)  # a parameter nobody trained keeps its value (not averaged with zeros)
    for name, items in by_name.items():
        stack = np.stack([v for v, _ in items]).astype(np.float64)
        weights = np.array([w for _, w in items], dtype=np.float64)
        new[name] = _combine(stack, weights, method, trim).astype(current[name].dtype)
    return new, dict(contributors)


class FedAdamState:
    """Server-side Adam on the aggregated pseudo-gradient (Reddi et al. 2021), per parameter.

    The maths of Flower's ``flwr.serverapp.strategy.FedAdam`` (1.42), bias correction included:
    ``m = b1 m + (1 - b1) d``, ``v = b2 v + (1 - b2) d^2``, ``x += eta_t m / (sqrt(v) + tau)`` with
    ``eta_t = eta sqrt(1 - b2^(t+1)) / (1 - b1^(t+1))``. Flower's ``t`` is the server round; here
    it is the number of steps this parameter has taken, because a modality-aware round updates
    only the groups some site trained (an expert of a rare combination may skip rounds). When every
    parameter is updated every round from round 1 the two are identical (tests/test_strategy.py
    checks it against Flower's FedAdam).
    """

    def __init__(self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3):
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self.steps: dict[str, int] = {}

    def step(self, current: dict[str, np.ndarray], averaged: dict[str, np.ndarray],
             touched: set[str]) -> dict[str, np.ndarray]:
        """Apply one Adam step to the parameters in ``touched``; others are returned unchanged."""
        out = dict(current)
        for name in touched:
            delta = averaged[name] - current[name]
            m = self.beta1 * self.m.get(name, np.zeros_like(delta)) + (1 - self.beta1) * delta
            v = self.beta2 * self.v.get(name, np.zeros_like(delta)) + (1 - self.beta2) * delta**2
            t = self.steps.get(name, 0) + 1
            self.m[name], self.v[name], self.steps[name] = m, v, t
            # Flower's exponent is its server round + 1: t + 1 with t counted from 1
            eta = self.lr * np.sqrt(1 - self.beta2 ** (t + 1)) / (1 - self.beta1 ** (t + 1))
            out[name] = (current[name] + eta * m / (np.sqrt(v) + self.tau)).astype(current[name].dtype)
        return out

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Moments and step counts as flat arrays (saved with each checkpoint, for resume)."""
        return {**{f"m/{k}": v for k, v in self.m.items()}, **{f"v/{k}": v for k, v in self.v.items()},
                **{f"t/{k}": np.array(t, dtype=np.int64) for k, t in self.steps.items()}}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.m = {k[2:]: v for k, v in arrays.items() if k.startswith("m/")}
        self.v = {k[2:]: v for k, v in arrays.items() if k.startswith("v/")}
        self.steps = {k[2:]: int(v) for k, v in arrays.items() if k.startswith("t/")}
