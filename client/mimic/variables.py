"""The 17 clinical variables of the MIMIC-III benchmark as MIMIC-IV itemids, with units and ranges.

Values are converted to one unit per variable, then values outside a physiological range are
dropped. ``normal`` and ``scale`` are fixed clinical reference values (not fitted on any site's
data) used to impute and standardize the hourly series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ClinicalVariable", "VARIABLES", "VARIABLE_NAMES", "CHART_ITEMIDS", "LAB_ITEMIDS",
           "harmonize_events"]


@dataclass(frozen=True)
class ClinicalVariable:
    """One input channel of the EHR series."""

    name: str
    chart_itemids: tuple[int, ...]
    lab_itemids: tuple[int, ...]
    low: float
    high: float
    normal: float
    scale: float
    # itemid -> (multiply, add) applied before the range check, e.g. Fahrenheit to Celsius.
    conversions: dict[int, tuple[float, float]] = field(default_factory=dict)


_F_TO_C = (5.0 / 9.0, -32.0 * 5.0 / 9.0)

VARIABLES: tuple[ClinicalVariable, ...] = (
    ClinicalVariable("capillary_refill", (223951, 224308), (), 0, 1, 0, 1),
    ClinicalVariable("diastolic_bp", (220051, 220180, 224643, 225310), (), 5, 250, 70, 15),
    ClinicalVariable("fio2", (223835,), (), 0.21, 1.0, 0.21, 0.2),
    ClinicalVariable("gcs_eye", (220739,), (), 1, 4, 4, 1),
    ClinicalVariable("gcs_motor", (223901,), (), 1, 6, 6, 1.5),
    ClinicalVariable("gcs_total", (), (), 3, 15, 15, 3),
    ClinicalVariable("gcs_verbal", (223900,), (), 1, 5, 5, 1.5),
    ClinicalVariable("glucose", (220621, 225664, 226537), (50809, 50931), 10, 2000, 120, 50),
    ClinicalVariable("heart_rate", (220045,), (), 20, 300, 85, 20),
    ClinicalVariable("height", (226707, 226730), (), 100, 250, 170, 10,
                     conversions={226707: (2.54, 0.0)}),
    ClinicalVariable("mean_bp", (220052, 220181, 224322, 225312), (), 14, 330, 80, 15),
    ClinicalVariable("o2_saturation", (220227, 220277), (50817,), 50, 100, 97, 4),
    ClinicalVariable("respiratory_rate", (220210, 224422, 224689, 224690), (), 1, 80, 18, 6),
    ClinicalVariable("systolic_bp", (220050, 220179, 224167, 225309, 227243), (), 30, 300, 120,
                     20),
    ClinicalVariable("temperature", (223761, 223762), (), 25, 45, 37, 1,
                     conversions={223761: _F_TO_C}),
    ClinicalVariable("weight", (224639, 226512, 226531), (), 20, 350, 80, 20,
                     conversions={226531: (0.453592, 0.0)}),
    ClinicalVariable("ph", (220274, 223830), (50820,), 6.5, 8.0, 7.4, 0.08),
)

VARIABLE_NAMES: tuple[str, ...] = tuple(v.name for v in VARIABLES)
CHART_ITEMIDS: frozenset[int] = frozenset(i for v in VARIABLES for i in v.chart_itemids)
LAB_ITEMIDS: frozenset[int] = frozenset(i for v in VARIABLES for i in v.lab_itemids)

_ITEM_TO_INDEX = {i: k for k, v in enumerate(VARIABLES) for i in v.chart_itemids + v.lab_itemids}
_CAPILLARY_TEXT = {"normal <3 secs": 0.0, "normal <3 seconds": 0.0, "abnormal >3 secs": 1.0,
                   "abnormal >3 seconds": 1.0}
_GCS = tuple(VARIABLE_NAMES.index(n) for n in ("gcs_eye", "gcs_motor", "gcs_verbal"))
GCS_TOTAL_INDEX = VARIABLE_NAMES.index("gcs_total")
FIO2_INDEX = VARIABLE_NAMES.index("fio2")


def harmonize_events(itemid: pd.Series, valuenum: pd.Series, value: pd.Series | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Map raw events to (variable index, value in the variable's unit); invalid rows get index -1.

    Applies unit conversions (F to C, lbs to kg, inches to cm, FiO2 in percent to a fraction),
    reads capillary refill from its text value and drops values outside the plausible range.
    """
    import pandas as pd  # here, not at import: a site's training message never needs pandas

    index = itemid.map(_ITEM_TO_INDEX).fillna(-1).to_numpy(dtype=np.int64)
    values = pd.to_numeric(valuenum, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan,
                                                              copy=True)
    if value is not None:  # only rows without a number are read as text (capillary refill)
        blank = np.flatnonzero(np.isnan(values))
        text = value.iloc[blank].astype("string").str.strip().str.lower().map(_CAPILLARY_TEXT)
        values[blank] = text.to_numpy(dtype=np.float64, na_value=np.nan)
    ids = itemid.to_numpy(dtype=np.int64)
    for var in VARIABLES:
        for item, (mul, add) in var.conversions.items():
            hit = ids == item
            values[hit] = values[hit] * mul + add
    fio2 = (index == FIO2_INDEX) & (values > 1.0)
    values[fio2] = values[fio2] / 100.0
    low = np.array([v.low for v in VARIABLES] + [np.nan])[index]
    high = np.array([v.high for v in VARIABLES] + [np.nan])[index]
    ok = (index >= 0) & (values >= low) & (values <= high)
    return np.where(ok, index, -1), values


def add_gcs_total(series: np.ndarray) -> np.ndarray:
    """Fill the GCS total channel of ``series`` [n, hours, vars] where all three parts are seen."""
    parts = series[..., list(_GCS)]
    total = parts.sum(axis=-1)
    series[..., GCS_TOTAL_INDEX] = np.where(np.isnan(total), series[..., GCS_TOTAL_INDEX], total)
    return series
