"""Poisson sampling of privacy units for DP-SGD: each step takes every unit with probability q.

The privacy unit is a patient by default: a sampled patient contributes exactly one of its stays,
drawn at random, so a patient's whole record moves the sum of clipped gradients by at most the
clipping norm C in any step, and the accountant's (sigma, q, steps) hold per patient. With
``unit = stay`` every ICU stay is its own unit (a patient with k stays is then protected only by
group privacy: k epsilon and a delta that grows as k e^{(k-1) epsilon} delta).

All draws come from the round's :class:`SecureRandom` stream, never from torch's generator.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from client.privacy.secure_random import SecureRandom


class UnitPoissonSampler:
    """A ``batch_sampler``: ``steps`` batches of row indices, each unit in a batch independently
    with probability ``sample_rate``, one row (stay) of each sampled unit."""

    def __init__(self, unit_of_row: np.ndarray, sample_rate: float, steps: int,
                 rng: SecureRandom) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample rate must be in (0, 1], got {sample_rate}")
        order = np.argsort(unit_of_row, kind="stable")
        _, starts, counts = np.unique(unit_of_row[order], return_index=True, return_counts=True)
        self._rows_by_unit = order  # rows of unit i: order[starts[i]: starts[i] + counts[i]]
        self._starts, self._counts = starts, counts
        self.sample_rate, self.steps, self._rng = sample_rate, steps, rng

    @property
    def units(self) -> int:
        return len(self._counts)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            taken = np.flatnonzero(self._rng.uniform(self.units) < self.sample_rate)
            pick = self._rng.choice_index(self._counts[taken])
            yield self._rows_by_unit[self._starts[taken] + pick].tolist()
