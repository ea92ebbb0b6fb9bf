"""Cohort rules in one frozen dataclass (defaults follow the issue text and the MIMIC-III benchmark)."""

from __future__ import annotations

from dataclasses import dataclass

from client.errors import MoeHealthInputError


@dataclass(frozen=True)
class CohortConfig:
    """How stays are selected and labelled; everything is measured from ICU intime."""

    min_age: int = 18
    window_hours: int = 48
    los_threshold_days: float = 7.0
    readmission_days: float = 30.0
    notes_lookback_hours: float = 24.0
    cxr_views: tuple[str, ...] = ("AP", "PA")
    progress: bool = True

    def __post_init__(self) -> None:
        if self.window_hours <= 0:
            raise MoeHealthInputError(f"window_hours must be positive, got {self.window_hours}")
        if self.los_threshold_days <= 0 or self.readmission_days <= 0:
            raise MoeHealthInputError("los_threshold_days and readmission_days must be positive")
